"""`mmalign eval` and `mmalign report` through the real CLI on the tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mmalign.cli import app

runner = CliRunner()


def test_eval_then_report(tiny_model, tiny_world, tmp_path):
    out = tmp_path / "eval"
    res = runner.invoke(app, ["eval", str(tiny_model), "--world", str(tiny_world), "--out",
                              str(out), "--limit", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["benches"]) == {"pope", "vqa", "mc", "chair"}
    for bench in ("pope", "vqa", "mc", "chair"):
        rows = [json.loads(x) for x in (out / f"{bench}.jsonl").open()]
        assert rows and all("output" in r and "prompt" in r for r in rows)
    assert "pope" in res.output.lower()
    html = tmp_path / "report.html"
    res = runner.invoke(app, ["report", f"tiny={out}", "--out", str(html), "--world",
                              str(tiny_world)])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "tiny" in page and "<svg" in page and "data:image/png;base64" in page


def test_eval_refuses_unknown_bench_before_loading(tiny_world, tmp_path):
    res = runner.invoke(app, ["eval", str(tmp_path / "no-such-model"), "--world",
                              str(tiny_world), "--out", str(tmp_path / "e"), "--bench", "popee"])
    assert res.exit_code == 2
    assert "did you mean" in res.output

"""`mmalign world make` through the real CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mmalign.cli import app

runner = CliRunner()
SMALL = ["--images", "40", "--pretrain-images", "20", "--annotation-images", "12",
         "--bench-images", "10"]


def test_world_make_prints_what_it_wrote(tmp_path):
    out = tmp_path / "w"
    res = runner.invoke(app, ["world", "make", "--out", str(out), *SMALL, "--seed", "3",
                              "--defect-rate", "truncation=0.5", "--defect-rate",
                              "near_duplicate=0"])
    assert res.exit_code == 0, res.output
    for name in ["corpus.json", "corpus_clean.json", "truth/corpus_defects.jsonl",
                 "bench/pope.jsonl", "annotations/answers.jsonl"]:
        assert name in res.output
        assert (out / name).exists()
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["seed"] == 3
    assert m["config"]["defect_rates"]["truncation"] == 0.5
    assert m["realised_defect_rates"]["near_duplicate"] == 0
    assert m["realised_defect_rates"]["truncation"] > 0.25


def test_world_make_refuses_unknown_defect(tmp_path):
    res = runner.invoke(app, ["world", "make", "--out", str(tmp_path / "w"), *SMALL,
                              "--defect-rate", "halucination=0.2"])
    assert res.exit_code != 0
    assert "unknown defect type" in res.output
    assert not (tmp_path / "w").exists()

"""`mmalign run RECIPE` end to end through the real CLI, on a tiny world and a tiny random
model: every stage runs and leaves a done manifest, a second run skips everything, and a
changed SFT learning rate re-runs sft, eval and report only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmalign.cli import app
from mmalign.pipeline import read_manifest

runner = CliRunner()
STAGES = ["world", "base", "sft", "eval", "report"]

RECIPE = """
name: tiny
stages: [world, base, sft, eval, report]
world: {{seed: 11, pretrain_images: 40, corpus_images: 40, annotation_images: 10,
        bench_images: 8}}
base: {{checkpoint: {ckpt}}}
sft: {{max_steps: 2, batch_size: 4, lr: 1.0e-3, data: [corpus.json, clean.json:6]}}
eval: {{benches: [pope, vqa], limit: 2, batch_size: 32, device: cpu}}
"""


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from mmalign.models.tiny import TinyConfig, build_tiny

    # Random weights: this test checks the wiring, not what the model learns.
    return build_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", TinyConfig(
        text_hidden=64, text_layers=1, text_intermediate=128, vision_hidden=64,
        vision_layers=1, vision_intermediate=128, vocab_size=600))


def _run(*args: str):
    res = runner.invoke(app, ["run", *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_run_skips_what_is_done_and_reruns_what_changed(tmp_path, tiny_checkpoint):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(ckpt=tiny_checkpoint))
    run = tmp_path / "run"

    out = _run(str(recipe), "--run-dir", str(run))
    assert (run / "report" / "index.html").is_file()
    results = json.loads((run / "report" / "results.json").read_text())
    assert list(results) == ["base", "sft"]
    assert set(results["sft"]["benches"]) == {"pope", "vqa"}
    for name in STAGES:
        assert read_manifest(run / name)["status"] == "done", name
        assert f"done {name} in" in out
    mix = json.loads((run / "sft" / "mix" / "clean-6.json").read_text())  # the FILE:N subset
    assert len(mix) == 6 and all(r["image"].startswith("images/") for r in mix)
    assert "pope F1 random" in out and "\nsft " in out  # the results table
    assert read_manifest(run / "base")["outputs"]["model"] == str(tiny_checkpoint.resolve())
    final = run / "sft" / "final" / "model.safetensors"
    mtime = final.stat().st_mtime_ns
    hashes = {n: read_manifest(run / n)["run_id"] for n in STAGES}

    out = _run(str(recipe), "--run-dir", str(run))
    assert [line for line in out.splitlines() if line.startswith("skip ")] == \
        [f"skip {n} (done)" for n in STAGES]
    assert final.stat().st_mtime_ns == mtime  # not retrained
    assert "pope F1 random" in out  # the table is printed even when nothing ran

    out = _run(str(recipe), "--run-dir", str(run), "sft.lr=5e-4")
    assert "skip world (done)" in out and "skip base (done)" in out
    for name in ("sft", "eval", "report"):
        assert f"done {name} in" in out
        assert read_manifest(run / name)["run_id"] != hashes[name]
    assert read_manifest(run / "sft")["config"]["lr"] == 5e-4
    assert read_manifest(run / "sft")["overrides"] == ["sft.lr=5e-4"]
    assert final.stat().st_mtime_ns != mtime
    assert {n: read_manifest(run / n)["run_id"] for n in ("world", "base")} == \
        {n: hashes[n] for n in ("world", "base")}

    # A run killed after SFT's last checkpoint, before `final/`: re-entered, not restarted.
    manifest = read_manifest(run / "sft") | {"status": "running"}
    (run / "sft" / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(run / "sft" / "final")
    checkpoint = run / "sft" / "checkpoint-2" / "model.safetensors"
    saved = checkpoint.stat().st_mtime_ns
    out = _run(str(recipe), "--run-dir", str(run), "sft.lr=5e-4", "--only", "sft")
    assert "sft: resuming (running before)" in out and "done sft in" in out
    assert final.is_file() and read_manifest(run / "sft")["counts"]["steps"] == 2
    assert sorted(p.name for p in (run / "sft").glob("checkpoint-*")) == ["checkpoint-2"]
    assert checkpoint.stat().st_mtime_ns == saved  # resumed at step 2: nothing retrained


@pytest.mark.parametrize("extra, message", [
    (["sft.lrr=1"], "sft.lrr (from a command-line override): unknown key; did you mean sft.lr?"),
    (["--only", "sfft"], "--only sfft: not a stage of"),
    (["sft.data=[/no/such/corpus.json]"], "tiny.yaml: sft.data: /no/such/corpus.json: file "
                                           "not found"),
    (["sft.data=[/abs/corpus.json,clean.json:5]"], "a FILE:N subset trains with the world as "
                                                    "image root"),
])
def test_errors_exit_2_with_one_line(tmp_path, tiny_checkpoint, extra, message):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(ckpt=tiny_checkpoint))
    res = runner.invoke(app, ["run", str(recipe), "--run-dir", str(tmp_path / "run"), *extra])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert not (tmp_path / "run").exists()  # refused before any stage ran


def test_bad_recipe_file_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("sft:\n  learning_rate: 0.1\n")
    res = runner.invoke(app, ["run", str(recipe)])
    assert res.exit_code == 2
    assert f"error: {recipe}: sft.learning_rate: unknown key" in res.output

"""bench/povid.py: the miniature POVID experiment end to end on the tiny world and tiny model
(four variants in the table, finite numbers, a rerun trains nothing) and its recipe loading."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mmalign.config import RecipeError
from mmalign.experiments import bench_module

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "povid.yaml"


povid = bench_module("povid")


def test_shipped_recipe_loads():
    exp = povid.load_experiment(RECIPE)
    assert exp.variants == ["sft", "stage1", "noise", "both"] and exp.seeds == [0, 1, 2]
    assert exp.benches == ["pope", "chair", "vqa"] and exp.eval_limit == 100
    assert (exp.noise_step, exp.text_weight, exp.noise_weight, exp.beta) == (500, 0.5, 0.5, 0.1)
    assert exp.pairs == exp.steps * exp.batch_size  # one pass over the pairs per run


@pytest.mark.parametrize("where", ["file", "override"])
def test_unknown_recipe_key_is_an_error_naming_it(tmp_path, where):
    path = tmp_path / "r.yaml"
    path.write_text("steps: 2\nnoise_stepz: 3\n" if where == "file" else "steps: 2\n")
    overrides = ["noise_stepz=3"] if where == "override" else []
    with pytest.raises(RecipeError, match=r"noise_stepz.*did you mean noise_step"):
        povid.load_experiment(path, overrides)
    assert povid.main([str(path), *overrides]) == 2


def test_overrides_are_typed(tmp_path):
    exp = povid.load_experiment(RECIPE, ["seeds=[3]", "lr=1e-3", "variants=sft,both"])
    assert (exp.seeds, exp.lr, exp.variants) == ([3], 1e-3, ["sft", "both"])
    with pytest.raises(RecipeError, match="steps.*integer"):
        povid.load_experiment(RECIPE, ["steps=many"])
    with pytest.raises(RecipeError, match="variants.*dpo"):
        povid.load_experiment(RECIPE, ["variants=sft,dpo"])


def test_povid_bench_end_to_end_then_resumes(tiny_world, tiny_model, tmp_path, capsys):
    out = tmp_path / "povid"
    args = [str(RECIPE), f"world={tiny_world}", f"base={tiny_model}", f"out={out}",
            "seeds=[0]", "steps=2", "pairs=8", "batch_size=4", "lr=1e-3", "lora_r=4",
            "eval_limit=2", "eval_batch_size=8", "device=cpu"]
    assert povid.main(args) == 0

    runs = json.loads((out / "povid.json").read_text())["runs"]
    assert list(runs) == ["sft", "stage1", "noise", "both"]
    columns = {f"{b} {k}" for b, k in povid.HALLUCINATION_COLUMNS}
    for variant, rows in runs.items():
        assert len(rows) == 1, variant
        assert set(rows[0]) == columns, variant
        assert all(math.isfinite(v) for v in rows[0].values()), (variant, rows[0])
    table = (out / "povid.md").read_text()
    for variant in ("sft", "stage1", "noise", "both", "both - sft"):
        assert f"| {variant} |" in table
    assert table.strip() in capsys.readouterr().out

    # What each variant trained: stage1 text only, noise the noise term only, both two stages.
    def log_of(folder):
        return json.loads((folder / "final" / "train_log.json").read_text())

    stage1 = log_of(out / "stage1-s0")
    assert not any("loss/noise" in e for e in stage1)
    noise = [e for e in log_of(out / "noise-s0") if "loss/noise" in e]
    assert len(noise) == 2 and all(math.isclose(e["loss"], e["loss/noise"], rel_tol=1e-4)
                                   for e in noise)  # text weight 0, noise weight 1
    assert (out / "both-s0" / "stage1" / "final" / "model.safetensors").is_file()
    assert any("loss/noise" in e for e in log_of(out / "both-s0" / "stage2"))

    finals = [out / "stage1-s0" / "final", out / "noise-s0" / "final",
              out / "both-s0" / "stage1" / "final", out / "both-s0" / "stage2" / "final"]
    stamps = [(f / "model.safetensors").stat().st_mtime_ns for f in finals]
    assert povid.main(args) == 0  # a rerun: nothing trained again, the same table
    assert [(f / "model.safetensors").stat().st_mtime_ns for f in finals] == stamps
    assert json.loads((out / "povid.json").read_text())["runs"] == runs

    # Other training settings in the same out folder are refused, not mixed in.
    assert povid.main([*args, "lr=5e-4"]) == 2
    assert re.search(r"stage1-s0 was run with other settings \(learning_rate: 0\.001 -> "
                     r"0\.0005\)", capsys.readouterr().err)

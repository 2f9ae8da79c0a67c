"""bench/mmdpo.py: the miniature MM-DPO comparison end to end on the tiny world and tiny model
(base + four algorithms in the table, finite numbers, a rerun neither samples nor trains),
its recipe, and SteerLM's question rewriting at inference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mmalign.backends.base import GenRequest
from mmalign.config import RecipeError
from mmalign.experiments import bench_module
from mmalign.records import Turn

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "mmdpo.yaml"


mmdpo = bench_module("mmdpo")


def test_shipped_recipe_loads_and_overrides_are_typed(tmp_path):
    cfg = mmdpo.load_config(RECIPE)
    assert cfg.algorithms == ["sft", "rejection", "dpo", "steerlm"] and cfg.seeds == [0, 1, 2]
    assert cfg.eval.benches == ["pope", "vqa", "mc", "open"] and cfg.eval.limit == 100
    assert (cfg.sample.k, cfg.dpo.beta, cfg.pairs.min_gap) == (4, 0.1, 2.0)
    cfg = mmdpo.load_config(RECIPE, ["dpo.lr=1e-3", "seeds=[3]", "steer_target.verbosity=2"])
    assert (cfg.dpo.lr, cfg.seeds) == (1e-3, [3])
    assert cfg.steer_target == {"helpfulness": 4, "correctness": 4, "coherence": 4,
                                "complexity": 4, "verbosity": 2}
    with pytest.raises(RecipeError, match=r"dpo\.betta.*did you mean dpo\.beta"):
        mmdpo.load_config(RECIPE, ["dpo.betta=0.2"])
    with pytest.raises(RecipeError, match="algorithms.*ppo"):
        mmdpo.load_config(RECIPE, ["algorithms=sft,ppo"])
    assert mmdpo.main([str(RECIPE), "sft.stepz=3"]) == 2


def test_steered_generator_appends_the_target_to_every_question():
    seen = []

    class Echo:
        name = "m"

        def generate(self, requests):
            seen.extend(requests)
            return [r.messages[-1].content for r in requests]

    gen = mmdpo.SteeredGenerator(Echo(), {"helpfulness": 4, "correctness": 4, "coherence": 4,
                                          "complexity": 1, "verbosity": 1})
    req = GenRequest(images=[Path("a.png")], messages=[Turn("user", "<image>\nWhat is red?")])
    (text,) = gen.generate([req])
    assert text.startswith("<image>\nWhat is red?\nPlease answer the question such that")
    assert text.endswith("Helpfulness:4,Correctness:4,Coherence:4,Complexity:1,Verbosity:1")
    assert req.messages[-1].content == "<image>\nWhat is red?"  # the caller's request unchanged
    assert gen.name == "m+steer(4,4,4,1,1)"  # predictions resume by this name, not the model's


def test_mmdpo_bench_end_to_end_then_resumes(tiny_world, tiny_model, tmp_path, monkeypatch,
                                             capsys):
    out = tmp_path / "mmdpo"
    args = [str(RECIPE), f"world={tiny_world}", f"base={tiny_model}", f"out={out}",
            "seeds=[0]", "prompts=6", "sample.k=3", "sample.max_new_tokens=12",
            "sample.batch_size=12", "pairs.min_gap=0", "pairs.reject_margin=0",
            "sft.steps=2", "sft.batch_size=4", "sft.lr=1e-3", "dpo.steps=2", "dpo.batch_size=2",
            "dpo.lr=1e-3", "eval.limit=2", "eval.batch_size=16", "logging_steps=1"]
    assert mmdpo.main(args) == 0
    table = (out / "mmdpo.md").read_text()
    runs = json.loads((out / "mmdpo.json").read_text())["runs"]
    assert list(runs) == ["base", "sft", "rejection", "dpo", "steerlm"]
    for name, rs in runs.items():
        assert len(rs) == 1 and f"| {name} | 1 |" in table
        assert {"pope F1 random", "vqa accuracy", "mc circular accuracy", "open quality",
                "open verbosity"} <= set(rs[0])
        assert all(math.isfinite(v) for v in rs[0].values()), (name, rs[0])
    data = out / "data"
    summary = json.loads((data / "summary.json").read_text())
    assert summary["prompts"] == 6 and summary["per_category"] == {
        "conversation": 2, "detail": 2, "reasoning": 2}
    assert summary["answers"] == 18 and summary["steerlm_samples"] == 18
    assert summary["best_of_k"] == 6 and summary["pair_rule"]["pairs"] >= 1
    steer = [json.loads(line) for line in (data / "steerlm.jsonl").open()]
    assert all("Helpfulness:" in r["turns"][0]["content"] for r in steer)
    steered = json.loads((out / "steerlm-s0" / "eval" / "open.jsonl").open().readline())
    assert steered["model"].endswith("+steer(4,4,4,4,4)")
    assert (out / "ref_logps").is_dir()

    # A rerun: nothing sampled, rated, trained or evaluated again.
    def refuse(*_, **__):
        raise AssertionError("retrained")

    import mmalign.train.preference
    import mmalign.train.sft

    monkeypatch.setattr(mmalign.train.sft, "train_sft", refuse)
    monkeypatch.setattr(mmalign.train.preference, "train_preference", refuse)
    samples = (data / "samples.jsonl").read_bytes()
    capsys.readouterr()
    assert mmdpo.main(args) == 0
    assert "sampled 0 prompts" in capsys.readouterr().out
    assert (data / "samples.jsonl").read_bytes() == samples
    assert json.loads((out / "mmdpo.json").read_text())["runs"] == runs
    # other training settings on the same out folder: refused, not mixed in
    assert mmdpo.main(args + ["sft.lr=5e-4"]) == 2

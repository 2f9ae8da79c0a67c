"""`mmalign train dpo` end to end on the tiny model: it learns, saves, reloads and resumes."""

from __future__ import annotations

import json
import math

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from typer.testing import CliRunner

from mmalign.cli import app


def dpo_args(model, data, root, out, cache, *extra):
    return ["train", "dpo", "--model", str(model), "--data", str(data), "--image-root",
            str(root), "--out", str(out), "--ref-cache", str(cache), "--full", "--lr", "1e-3",
            "--batch-size", "2", "--logging-steps", "1", "--save-steps", "2", *extra]


def losses(final):
    log = json.loads((final / "train_log.json").read_text())
    return {e["step"]: e["loss"] for e in log if "loss" in e}


def test_train_dpo_learns_saves_reloads_and_resumes(tiny_model, tiny_world, pref_file,
                                                    tmp_path):
    runner = CliRunner()
    out, cache = tmp_path / "run", tmp_path / "cache"
    res = runner.invoke(app, dpo_args(tiny_model, pref_file, tiny_world, out, cache,
                                      "--max-steps", "2"))
    assert res.exit_code == 0, res.output
    final = out / "final"
    first = losses(final)
    assert sorted(first) == [1, 2] and all(math.isfinite(v) for v in first.values())
    log = json.loads((final / "train_log.json").read_text())
    assert {"rewards/margins", "rewards/accuracies", "logps/chosen"} <= set(log[0])

    # Full fine-tuning with the default frozen vision tower: every other tensor moved.
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    vision = {k for k in before if "vision_tower" in k}
    assert vision and not (changed & vision)
    assert changed == set(before) - vision

    # The checkpoint and the final folder are ordinary HF folders with the same weights.
    ckpt = AutoModelForImageTextToText.from_pretrained(out / "checkpoint-2").state_dict()
    assert all(torch.equal(ckpt[k], after[k]) for k in after)
    processor = AutoProcessor.from_pretrained(final)
    assert processor.tokenizer.backend_tokenizer.truncation is None

    # Resume to step 4: steps 1-2 come back from the saved state, 3-4 are new; the reference
    # log-probs come from the cache (no reference pass).
    res = runner.invoke(app, dpo_args(tiny_model, pref_file, tiny_world, out, cache,
                                      "--max-steps", "4"))
    assert res.exit_code == 0, res.output
    second = losses(final)
    assert {k: second[k] for k in (1, 2)} == first
    assert sorted(second) == [1, 2, 3, 4]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    reference = json.loads((out / "reference.json").read_text())
    assert reference["precomputed_forward_passes"] == 0 and reference["reused_rows"] > 0


def test_train_dpo_bad_input_names_file_record_and_field(tiny_model, tiny_world, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{
        "id": "p1", "image": "images/corpus/c000000.png",
        "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt",
                                                                     "value": "A."}],
        "rejected_conversations": [{"from": "human", "value": "<image>\nQ?"},
                                   {"from": "gpt", "value": "  "}]}]))
    res = runner.invoke(app, dpo_args(tiny_model, bad, tiny_world, tmp_path / "o",
                                      tmp_path / "c"))
    assert res.exit_code == 2
    assert "bad.json" in res.output and "p1" in res.output
    assert "rejected_conversations[1].value" in res.output

    res = runner.invoke(app, dpo_args(tiny_model, tiny_world / "corpus.json", tiny_world,
                                      tmp_path / "o2", tmp_path / "c"))
    assert res.exit_code == 2 and "needs pairs" in res.output

"""SFT through TRL on the tiny model: it learns, saves, reloads and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from mmalign.train.sft import SFTRunConfig, train_sft


def _cfg(tiny_model, tiny_world, out, **kw):
    base = dict(model=str(tiny_model), data=[str(tiny_world / "clean.json")],
                output_dir=str(out), max_steps=4, per_device_train_batch_size=4,
                learning_rate=1e-3, logging_steps=1, save_steps=2, limit=24)
    return SFTRunConfig(**(base | kw))


def _losses(final):
    log = json.loads((final / "train_log.json").read_text())
    return {e["step"]: e["loss"] for e in log if "loss" in e}


def test_full_sft_learns_saves_and_reloads(tiny_model, tiny_world, tmp_path):
    final = train_sft(_cfg(tiny_model, tiny_world, tmp_path / "run"))
    losses = _losses(final)
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # Every tensor moved (full fine-tuning, vision tower included) except CLIP's
    # post_layernorm: LLaVA reads hidden_states[-1], taken before it, so it gets no gradient.
    unchanged = sorted(set(before) - set(changed))
    # the collator's truncation/padding state must not be saved with the tokenizer
    saved = json.loads((final / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    assert unchanged == ["model.vision_tower.post_layernorm.bias",
                         "model.vision_tower.post_layernorm.weight"]


def test_resume_continues_rather_than_restarts(tiny_model, tiny_world, tmp_path):
    out = tmp_path / "run"
    first = _losses(train_sft(_cfg(tiny_model, tiny_world, out, max_steps=2)))
    assert (out / "checkpoint-2").is_dir()
    second = _losses(train_sft(_cfg(tiny_model, tiny_world, out, max_steps=4)))
    # steps 1-2 come back from the restored state (same values), 3-4 are new
    assert {k: second[k] for k in (1, 2)} == first
    assert sorted(second) == [1, 2, 3, 4]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_model, tiny_world,
                                                                  tmp_path):
    """Resuming restores the weights, not only the step and optimiser: HF Trainer alone loads
    none of a LLaVA checkpoint's keys (train/resume.py), and the run went on from the start
    weights. Cut a 4-step run after step 2 (only checkpoint-2 left) and resume it."""
    import shutil

    full = train_sft(_cfg(tiny_model, tiny_world, tmp_path / "full"))
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", cut / "checkpoint-2")
    resumed = train_sft(_cfg(tiny_model, tiny_world, cut))
    assert _losses(resumed) == pytest.approx(_losses(full), abs=1e-5)
    a = AutoModelForImageTextToText.from_pretrained(full).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(resumed).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # a finished run asked again with the same settings is returned as it is, not retrained
    stamp = (resumed / "model.safetensors").stat().st_mtime_ns
    assert train_sft(_cfg(tiny_model, tiny_world, cut)) == resumed
    assert (resumed / "model.safetensors").stat().st_mtime_ns == stamp
    assert not (cut / "checkpoint-5").exists()


def test_lora_trains_language_model_only_and_merges(tiny_model, tiny_world, tmp_path):
    final = train_sft(_cfg(tiny_model, tiny_world, tmp_path / "lora", lora=True, lora_r=4,
                           max_steps=3, learning_rate=5e-3))
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    assert before.keys() == after.keys()  # merged: a plain model, no lora_ tensors
    vision = [k for k in before if "vision_tower" in k]
    text_linear = [k for k in before if "language_model" in k and "proj.weight" in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in text_linear)


def test_preflight_refuses_max_length_that_cuts_image_tokens(tiny_model, tiny_world, tmp_path):
    with pytest.raises(ValueError, match=r"record '.*': its image tokens end at position"):
        train_sft(_cfg(tiny_model, tiny_world, tmp_path / "short", max_length=40))


def test_cli_builds_tiny_and_trains_it(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from mmalign.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["model", "tiny", "--out", str(tmp_path / "m"), "--text-layers", "1",
                              "--text-hidden", "64", "--vision-layers", "1", "--vision-hidden",
                              "64", "--vocab-size", "600"])
    assert res.exit_code == 0, res.output
    assert "tiny VLM written to" in res.output
    res = runner.invoke(app, ["train", "sft", "--model", str(tmp_path / "m"), "--data",
                              str(tiny_world / "corpus.json"), "--out", str(tmp_path / "run"),
                              "--max-steps", "2", "--batch-size", "2", "--limit", "8"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    res = runner.invoke(app, ["train", "sft", "--model", str(tmp_path / "m"), "--data",
                              str(tiny_world / "corpus.json"), "--out", str(tmp_path / "bad"),
                              "--max-length", "30", "--limit", "4"])
    assert res.exit_code == 2 and "would cut them" in res.output

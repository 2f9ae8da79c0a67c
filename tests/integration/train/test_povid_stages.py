"""`mmalign train povid`: stage 1 DPO with LoRA, merged into a full model folder, stage 2 the
text + noised-image loss from the merged model; and the two reference modes of the noise term."""

from __future__ import annotations

import json
import math

import torch
from transformers import AutoModelForImageTextToText
from typer.testing import CliRunner

from mmalign.cli import app
from mmalign.train.preference import PreferenceRunConfig, build_trainer


def test_train_povid_two_stages_with_merge(tiny_model, tiny_world, pref_file, tmp_path):
    out = tmp_path / "povid"
    args = ["train", "povid", "--model", str(tiny_model), "--data", str(pref_file),
            "--image-root", str(tiny_world), "--out", str(out), "--ref-cache",
            str(tmp_path / "cache"), "--max-steps", "2", "--batch-size", "2", "--lr", "1e-2",
            "--lora-r", "4", "--logging-steps", "1", "--save-steps", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    stage1, stage2 = out / "stage1" / "final", out / "stage2" / "final"

    base = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    merged = AutoModelForImageTextToText.from_pretrained(stage1).state_dict()
    final = AutoModelForImageTextToText.from_pretrained(stage2).state_dict()
    # merged: a plain model (no lora_ tensors), language-model linears moved, vision untouched
    assert merged.keys() == base.keys() == final.keys()
    vision = [k for k in base if "vision_tower" in k]
    lm_linear = [k for k in base if "language_model" in k and "proj.weight" in k]
    assert all(torch.equal(base[k], merged[k]) for k in vision)
    assert all(not torch.equal(base[k], merged[k]) for k in lm_linear)
    assert all(not torch.equal(merged[k], final[k]) for k in lm_linear)  # stage 2 trained on

    log1 = json.loads((stage1 / "train_log.json").read_text())
    log2 = json.loads((stage2 / "train_log.json").read_text())
    assert not any("loss/noise" in e for e in log1)
    noise = [e["loss/noise"] for e in log2 if "loss/noise" in e]
    assert len(noise) == 2 and all(math.isfinite(v) for v in noise)
    for e in log2:
        if "loss/noise" in e:  # loss = 0.5 * text + 0.5 * noise
            assert math.isclose(e["loss"], 0.5 * e["loss/text"] + 0.5 * e["loss/noise"],
                                rel_tol=1e-4)
    ref1 = json.loads((out / "stage1" / "reference.json").read_text())
    ref2 = json.loads((out / "stage2" / "reference.json").read_text())
    assert ref1["cache_file"] != ref2["cache_file"]  # stage 2's reference is the merged model
    assert ref1["online_forward_passes"] == 0
    assert ref2["online_forward_passes"] == 2 * 2  # faithful: clean + noisy reference per step
    assert json.loads((out / "povid.json").read_text())["stage1"] == str(stage1)

    # A rerun keeps the finished stage 1 (and stage 2 is already at its last step).
    stamp = (stage1 / "model.safetensors").stat().st_mtime_ns
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (stage1 / "model.safetensors").stat().st_mtime_ns == stamp


def test_noise_reference_modes(tiny_model, perturbed_model, tiny_world, pref_file, tmp_path):
    """shared: the reference scores the policy's argmax tokens (one reference pass);
    faithful: it scores its own argmax under the noisy image (two passes)."""
    results = {}
    for mode in ("shared", "faithful"):
        cfg = PreferenceRunConfig(model=str(tiny_model), ref_model=str(perturbed_model),
                                  data=[str(pref_file)], image_root=str(tiny_world),
                                  output_dir=str(tmp_path / mode), lora=False, noise_term=True,
                                  noise_ref_mode=mode, per_device_train_batch_size=4,
                                  ref_cache_dir=str(tmp_path / "cache"))
        trainer = build_trainer(cfg)
        batch = trainer.data_collator(trainer.train_dataset.rows[:4])
        k = int(batch["response_mask"].shape[1])
        with torch.no_grad():
            clean = trainer._logits(trainer.model, trainer._inputs(batch, "both"), k)[:4]
            trainer._noise_generator = torch.Generator().manual_seed(0)
            results[mode] = trainer.noise_negative_logps(trainer.model, batch, clean, k)
        assert trainer.reference_stats["online_forward_passes"] == (1 if mode == "shared"
                                                                    else 2)
        noisy = trainer._noisy_vision(batch["vision_chosen"])["pixel_values"]
        assert not torch.allclose(noisy, batch["vision_chosen"]["pixel_values"])
    # same noise draw: the policy's negative is the same, the reference's is not
    torch.testing.assert_close(results["shared"][0], results["faithful"][0])
    assert not torch.allclose(results["shared"][1], results["faithful"][1])


def test_noise_term_on_the_second_family(idefics3_models, tiny_world, pref_file, tmp_path):
    """Idefics3 batches images as [B, N, C, H, W] with a pixel mask; the noise term and LoRA
    (adapters disabled = reference) work there too, and the loss back-propagates."""
    policy, _ = idefics3_models
    cfg = PreferenceRunConfig(model=str(policy), data=[str(pref_file)],
                              image_root=str(tiny_world), output_dir=str(tmp_path / "run"),
                              noise_term=True, lora_r=4, per_device_train_batch_size=2,
                              ref_cache_dir=str(tmp_path / "cache"))
    trainer = build_trainer(cfg)
    batch = trainer.data_collator(trainer.train_dataset.rows[:2])
    assert batch["vision_chosen"]["pixel_values"].dim() == 5
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert math.isfinite(loss.item())
    # policy == reference before training (LoRA B = 0): both terms sit at log 2
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-5)
    grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_noise_only_loss_skips_the_text_graph_but_not_the_gradient(tiny_model, tiny_world,
                                                                   pref_file, tmp_path):
    """text_weight 0 scores the text-rejected side without grad (a cheaper path); its loss and
    gradients equal the full path's with a text weight too small to matter."""
    grads, losses = {}, {}
    for weight in (0.0, 1e-30):
        cfg = PreferenceRunConfig(model=str(tiny_model), data=[str(pref_file)],
                                  image_root=str(tiny_world), output_dir=str(tmp_path / "r"),
                                  lora=False, noise_term=True, text_weight=weight,
                                  noise_weight=1.0, per_device_train_batch_size=4,
                                  ref_cache_dir=str(tmp_path / "cache"))
        trainer = build_trainer(cfg)
        batch = trainer.data_collator(trainer.train_dataset.rows[:4])
        trainer._noise_generator = torch.Generator().manual_seed(0)
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses[weight] = loss.item()
        grads[weight] = {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                         if p.grad is not None}
    assert math.isclose(losses[0.0], losses[1e-30], rel_tol=1e-6)
    assert grads[0.0].keys() == grads[1e-30].keys() and grads[0.0]
    for n in grads[0.0]:
        torch.testing.assert_close(grads[0.0][n], grads[1e-30][n], rtol=1e-4, atol=1e-7)

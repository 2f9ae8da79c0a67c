"""Paths that must agree: cached vs online reference, one batch of 4 vs four batches of 1
(padding must not move a log-prob), and the SFT term adds exactly weight * NLL(chosen)."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.train.logps import response_logps
from mmalign.train.losses import sft_nll
from mmalign.train.preference import PreferenceRunConfig, build_trainer


@pytest.fixture
def trainers(tiny_model, perturbed_model, tiny_world, pref_file, tmp_path):
    def make(precompute: bool):
        return build_trainer(PreferenceRunConfig(
            model=str(tiny_model), ref_model=str(perturbed_model), data=[str(pref_file)],
            image_root=str(tiny_world), output_dir=str(tmp_path / f"run{precompute}"),
            lora=False, precompute_reference=precompute, per_device_train_batch_size=4,
            ref_cache_dir=str(tmp_path / "cache")))
    return make(True), make(False)


def test_cached_and_online_reference_agree(trainers):
    cached, online = trainers
    rows = cached.train_dataset.rows[:4]
    with torch.no_grad():
        a = cached.compute_loss(cached.model, cached.data_collator(rows))
        b = online.compute_loss(online.model, online.data_collator(online.train_dataset.rows[:4]))
    assert online.reference_stats["online_forward_passes"] == 1
    assert cached.reference_stats["online_forward_passes"] == 0
    assert abs(a.item() - b.item()) < 1e-5
    assert abs(a.item() - math.log(2)) > 1e-4  # policy != reference: a real comparison


def test_batch_of_four_equals_four_batches_of_one(trainers):
    trainer, _ = trainers
    rows = trainer.train_dataset.rows[:4]
    with torch.no_grad():
        whole = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
        singles = [trainer.compute_loss(trainer.model, trainer.data_collator([r])) for r in rows]
    lengths = {len(r["chosen"]) for r in rows} | {len(r["rejected"]) for r in rows}
    assert len(lengths) > 1  # the batch really is padded
    assert abs(whole.item() - sum(s.item() for s in singles) / 4) < 1e-5


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sft_term_adds_weight_times_chosen_nll(trainers, reduction):
    trainer, _ = trainers
    trainer.config.logp_reduction = reduction
    batch = trainer.data_collator(trainer.train_dataset.rows[:4])
    with torch.no_grad():
        plain = trainer.compute_loss(trainer.model, batch)
        trainer.config.sft_weight = 0.5
        with_sft = trainer.compute_loss(trainer.model, batch)
        logits = trainer._logits(trainer.model, trainer._inputs(batch, "both"),
                                 batch["input_ids"].shape[1])
        _, per_token, mask = response_logps(logits, batch["input_ids"], batch["response_mask"])
    nll = sft_nll(per_token[:4], mask[:4]).item()
    assert nll > 0
    assert abs(with_sft.item() - plain.item() - 0.5 * nll) < 1e-5

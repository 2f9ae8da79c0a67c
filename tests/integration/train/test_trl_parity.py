"""Our DPO equals TRL's DPOTrainer on the same tiny LLaVA, reference model and batch.

TRL 1.16 is run as a user would run it: a real `DPOTrainer` on a vision dataset (its own
collator, its fused log-prob head, a reference model that runs online), and its public
`compute_loss` / `compute_ref_log_probs` on one batch. Our side goes through our own collator,
log-prob gathering and on-disk reference cache. The reference is a perturbed copy of the policy,
so every margin is non-zero and the loss depends on both models' log-probs.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.io.images import load_image
from mmalign.io.messages import to_parts
from mmalign.train.preference import PreferenceRunConfig, build_trainer

BATCH = 4


def trl_trainer(policy, reference, pairs, world, out, loss_type):
    from datasets import Dataset, Image, Sequence
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for p in pairs:
        rows["images"].append([load_image(world / rel) for rel in p.images])
        rows["prompt"].append([{"role": t.role, "content": to_parts(t.content)}
                               for t in p.prompt])
        for side in ("chosen", "rejected"):
            rows[side].append([{"role": "assistant",
                                "content": [{"type": "text", "text": getattr(p, side)}]}])
    dataset = Dataset.from_dict(rows).cast_column("images", Sequence(Image()))
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=BATCH, beta=0.1,
                     loss_type=[loss_type], max_length=None, report_to="none", use_cpu=True,
                     activation_checkpointing=False, bf16=False)
    return DPOTrainer(model=AutoModelForImageTextToText.from_pretrained(policy),
                      ref_model=AutoModelForImageTextToText.from_pretrained(reference),
                      args=args, train_dataset=dataset,
                      processing_class=AutoProcessor.from_pretrained(policy))


def ours(policy, reference, pref_file, world, out, loss_type, reduction):
    cfg = PreferenceRunConfig(model=str(policy), ref_model=str(reference), data=[str(pref_file)],
                              image_root=str(world), output_dir=str(out / "run"), lora=False,
                              loss_type=loss_type, logp_reduction=reduction, beta=0.1,
                              per_device_train_batch_size=BATCH, ref_cache_dir=str(out / "c"))
    return build_trainer(cfg)


@pytest.fixture(params=["llava", "idefics3"])
def models(request, tiny_model, perturbed_model):
    """(policy, reference) of each architecture family."""
    if request.param == "llava":
        return tiny_model, perturbed_model
    return request.getfixturevalue("idefics3_models")


# TRL's ipo divides each side's log-ratio by its response length: our `mean` reduction.
@pytest.mark.parametrize(("loss_type", "reduction"),
                         [("sigmoid", "sum"), ("hinge", "sum"), ("ipo", "mean")])
def test_dpo_loss_equals_trl(models, tiny_world, pref_pairs, pref_file, tmp_path, loss_type,
                             reduction):
    policy, reference = models
    trl = trl_trainer(policy, reference, pref_pairs[:BATCH], tiny_world, tmp_path / "trl",
                      loss_type)
    trl_batch = trl.data_collator([trl.train_dataset[i] for i in range(BATCH)])
    mine = ours(policy, reference, pref_file, tiny_world, tmp_path, loss_type, reduction)
    batch = mine.data_collator(mine.train_dataset.rows[:BATCH])

    # Same tokens scored: sequences and response masks agree row by row (TRL flushes left).
    for i in range(2 * BATCH):
        theirs = trl_batch["attention_mask"][i].bool()
        here = batch["attention_mask"][i].bool()
        assert torch.equal(trl_batch["input_ids"][i][theirs], batch["input_ids"][i][here])
        assert torch.equal(trl_batch["completion_mask"][i][theirs],
                           batch["response_mask"][i][here])

    with torch.no_grad():
        trl_loss = trl.compute_loss(trl.model, trl_batch)
        our_loss = mine.compute_loss(mine.model, batch)
    assert trl_loss.item() > 0
    assert abs(trl_loss.item() - our_loss.item()) < 1e-4, (trl_loss.item(), our_loss.item())


def test_logps_equal_trl_gathering(tiny_model, perturbed_model, tiny_world, pref_pairs,
                                   pref_file, tmp_path):
    """Our cached reference log-probs and our policy log-probs equal TRL's fused-head ones."""
    from mmalign.train.logps import response_logps, response_window

    trl = trl_trainer(tiny_model, perturbed_model, pref_pairs[:BATCH], tiny_world,
                      tmp_path / "trl", "sigmoid")
    trl_batch = trl.data_collator([trl.train_dataset[i] for i in range(BATCH)])
    mine = ours(tiny_model, perturbed_model, pref_file, tiny_world, tmp_path, "sigmoid", "sum")
    batch = mine.data_collator(mine.train_dataset.rows[:BATCH])

    trl_ref = torch.cat(trl.compute_ref_log_probs(trl.ref_model, trl_batch))
    our_ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(our_ref, trl_ref, rtol=1e-5, atol=1e-3)

    trl_policy = torch.cat(trl.compute_ref_log_probs(trl.model, trl_batch))
    with torch.no_grad():
        logits = mine._logits(mine.model, mine._inputs(batch, "both"),
                              response_window(batch["response_mask"]))
    our_policy, _, _ = response_logps(logits, batch["input_ids"], batch["response_mask"])
    torch.testing.assert_close(our_policy, trl_policy, rtol=1e-5, atol=1e-3)
    # the two models really differ, so the comparison above is not of identical numbers
    assert (our_policy - our_ref).abs().min() > 1e-2

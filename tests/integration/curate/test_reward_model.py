"""The VLM reward model on real tiny models: save/reload, training steps, LoRA, two families."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForImageTextToText

from mmalign.curate.reward_train import RewardTrainConfig, train_reward
from mmalign.models.reward import RewardInput, VLMRewardModel
from mmalign.models.tiny import TinyConfig, build_tiny


def _items(world):
    images = sorted((world / "images" / "corpus").glob("*.png"))
    return [RewardInput([images[0]], "Question: How many circles?\nAnswer: Two."),
            RewardInput([images[1]], "Question: Where is the star?\nAnswer: In the upper left "
                                     "corner of the image, next to a large red circle."),
            RewardInput([images[2]], "What color is the ring?\nIs there a cross?")]


def test_save_and_reload_give_identical_scores(tiny_model, tiny_world, tmp_path):
    rm = VLMRewardModel.from_backbone(tiny_model, seed=3)
    items = _items(tiny_world)
    before = rm.score(items, batch_size=2)
    assert len(set(before)) == 3  # different inputs, different scores
    rm.save_pretrained(tmp_path / "rm")
    again = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert again.score(items, batch_size=2) == before
    assert torch.equal(again.head.weight, rm.head.weight)
    # right padding does not reach the last real token: batch size does not change scores
    assert again.score(items, batch_size=3) == pytest.approx(before, abs=1e-5)
    assert again.score(items[1:2], batch_size=1) == pytest.approx(before[1:2], abs=1e-5)


def _train(tiny_model, tiny_world, out, kind, **kw):
    base = dict(model=str(tiny_model), annotations=[str(tiny_world / "annotations" /
                                                        f"{kind}s.jsonl")],
                output_dir=str(out), image_root=str(tiny_world), max_steps=3,
                per_device_train_batch_size=4, learning_rate=2e-3, logging_steps=1,
                eval_fraction=0.2, seed=1)
    return train_reward(RewardTrainConfig(**(base | kw)))


@pytest.mark.parametrize("kind", ["answer", "question"])
def test_a_few_training_steps_learn_something(tiny_model, tiny_world, tmp_path, kind):
    report = _train(tiny_model, tiny_world, tmp_path / kind, kind)
    assert report["kind"] == kind and report["steps"] == 3
    assert math.isfinite(report["train_loss"]) and math.isfinite(report["last_logged_loss"])
    assert 0.0 <= report["eval_pairwise_accuracy"] <= 1.0
    assert report["pairs"]["eval"]["annotation"] > 0 and report["groups"]["eval"] == 1
    # the held-out scores are kept per pair, in eval_pairs.jsonl's order, and give the accuracy
    out = tmp_path / kind
    scores = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (out / "eval_pairs.jsonl").read_text().splitlines()]
    assert len(scores) == len(pairs) == report["pairs"]["eval"]["annotation"]
    right = sum(s["better_score"] > s["worse_score"] for s in scores) / len(scores)
    assert right == pytest.approx(report["eval_pairwise_accuracy"], abs=1e-4)
    start = VLMRewardModel.from_backbone(tiny_model, seed=1)
    final = VLMRewardModel.from_pretrained(report["final"])
    assert final.info["kind"] == kind
    first = pairs[0]
    again = final.score([RewardInput([tiny_world / first["image"]], first["better"])])
    assert again[0] == pytest.approx(scores[0]["better_score"], abs=1e-4)
    assert not torch.equal(start.head.weight, final.head.weight)
    before, after = start.backbone.state_dict(), final.backbone.state_dict()
    text = [k for k in before if "language_model" in k]
    assert text and all(not torch.equal(before[k], after[k]) for k in text)


def test_lora_trains_adapters_and_head_and_saves_merged(tiny_model, tiny_world, tmp_path):
    report = _train(tiny_model, tiny_world, tmp_path / "lora", "answer", lora=True, lora_r=4)
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(report["final"]).state_dict()
    assert before.keys() == after.keys()  # merged: no lora_ tensors left
    vision = [k for k in before if "vision_tower" in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    proj = [k for k in before if "language_model" in k and "proj.weight" in k]
    assert proj and all(not torch.equal(before[k], after[k]) for k in proj)
    norms = [k for k in before if "language_model" in k and "norm" in k]
    assert norms and all(torch.equal(before[k], after[k]) for k in norms)  # frozen by LoRA


def test_a_second_family_scores_saves_and_reloads(tiny_world, small_tiny_config, tmp_path):
    path = build_tiny(tmp_path / "id3", TinyConfig(arch="idefics3", **small_tiny_config))
    rm = VLMRewardModel.from_backbone(path, seed=0)
    assert type(rm.backbone).__name__ == "Idefics3ForConditionalGeneration"
    items = _items(tiny_world)
    scores = rm.score(items, batch_size=3)
    rm.save_pretrained(tmp_path / "rm")
    assert VLMRewardModel.from_pretrained(tmp_path / "rm").score(items, batch_size=3) == scores


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_model, tiny_world, tmp_path):
    """A run cut after step 2 (only checkpoint-2 on disk) continues there, and ends with the
    model an uninterrupted run makes: resuming restores weights, optimiser, scheduler, data
    order and RNG, not only the weights."""
    import shutil

    full = _train(tiny_model, tiny_world, tmp_path / "full", "answer", max_steps=4,
                  save_steps=2, save_total_limit=None)
    assert full["resumed_from"] is None
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", cut / "checkpoint-2")
    resumed = _train(tiny_model, tiny_world, cut, "answer", max_steps=4, save_steps=2,
                     save_total_limit=None)
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["steps"] == 4
    def losses(folder):
        return {e["step"]: e["loss"] for e in
                json.loads((folder / "final" / "train_log.json").read_text()) if "loss" in e}

    assert losses(cut) == pytest.approx(losses(tmp_path / "full"), abs=1e-6)
    a = VLMRewardModel.from_pretrained(full["final"])
    b = VLMRewardModel.from_pretrained(resumed["final"])
    assert torch.allclose(a.head.weight, b.head.weight, atol=1e-6)
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    # and a run without resume starts over from step 1
    again = _train(tiny_model, tiny_world, cut, "answer", max_steps=4, resume=False)
    assert again["resumed_from"] is None and again["steps"] == 4


def test_grouped_batches_encode_each_text_once_and_weigh_groups_equally(tiny_model,
                                                                         tiny_world):
    """InstructGPT-style batches: one row per distinct text of a group, every pair's indices
    point at its own texts' rows, and each group weighs 1/n in the loss whatever its size."""
    from mmalign.curate.annotations import build_pairs, read_annotations
    from mmalign.curate.reward_train import GroupCollator, RewardGroupDataset
    from mmalign.models.reward import pairwise_loss

    groups = read_annotations(tiny_world / "annotations" / "answers.jsonl",
                              image_root=tiny_world)[:3]
    pairs, _ = build_pairs(groups, augment_rate=0.5, seed=0)
    roots = {g.id: tiny_world for g in groups}
    data = RewardGroupDataset(pairs, roots)
    assert len(data) == 3 and sum(len(data[i]["pairs"]) for i in range(3)) == len(pairs)
    rm = VLMRewardModel.from_backbone(tiny_model, seed=0)
    rows = [data[i] for i in range(3)]
    batch = GroupCollator(rm.processor, None)(rows)
    distinct = sum(len({t for p in r["pairs"] for t in p}) for r in rows)
    assert batch["input_ids"].shape[0] == distinct < 2 * len(pairs)
    b, w, weight = batch.pop("better_index"), batch.pop("worse_index"), batch.pop("pair_weight")
    assert float(weight.sum()) == pytest.approx(1.0)
    start = 0
    for r in rows:  # pairs come in group order; each group's weights add up to 1/3
        n = len(r["pairs"])
        assert float(weight[start:start + n].sum()) == pytest.approx(1 / 3)
        start += n
    with torch.no_grad():
        scores = rm(**batch)
    flat = [(r["image"], p) for r in rows for p in r["pairs"]]
    for k in (0, len(flat) // 2, len(flat) - 1):  # a row's score is its own text's score
        image, (better, worse) = flat[k]
        alone = rm.score([RewardInput([image], better), RewardInput([image], worse)])
        assert [float(scores[b[k]]), float(scores[w[k]])] == pytest.approx(alone, abs=1e-4)
    per_group, start = [], 0
    for r in rows:
        n = len(r["pairs"])
        per_group.append(pairwise_loss(scores[b[start:start + n]], scores[w[start:start + n]]))
        start += n
    assert float(pairwise_loss(scores[b], scores[w], weight)) == pytest.approx(
        float(torch.stack(per_group).mean()), abs=1e-6)


def test_grouped_training_trains_and_reports_like_pair_training(tiny_model, tiny_world,
                                                                tmp_path):
    report = _train(tiny_model, tiny_world, tmp_path / "grouped", "answer", group_pairs=True,
                    max_steps=2, per_device_train_batch_size=2)
    assert report["steps"] == 2 and math.isfinite(report["train_loss"])
    assert 0.0 <= report["eval_pairwise_accuracy"] <= 1.0
    start = VLMRewardModel.from_backbone(tiny_model, seed=1)
    final = VLMRewardModel.from_pretrained(report["final"])
    assert not torch.equal(start.head.weight, final.head.weight)


def test_turns_layout_puts_the_scored_text_after_the_image_and_is_saved(tiny_model, tiny_world,
                                                                        tmp_path):
    from mmalign.models.reward import reward_prompt

    rm = VLMRewardModel.from_backbone(tiny_model, seed=3)
    tok = rm.processor.tokenizer
    answer = "Question: Where is the star?\nAnswer: At the top left."
    questions = "What color is the ring?\nIs there a cross?"
    for text, prompt, scored in ((answer, "Where is the star?", "At the top left."),
                                 (questions, None, questions)):
        user = reward_prompt(rm.processor, 1, text, "user")
        turns = reward_prompt(rm.processor, 1, text, "turns")
        assert text.replace("\n", "") in user.replace("\n", "")  # all of it, one user turn
        assert "ASSISTANT" not in user
        # the scored text comes after the image placeholder, as the assistant's turn
        assert turns.index("<image>") < turns.index(scored)
        assert "ASSISTANT" in turns[turns.index("<image>"):turns.index(scored)]
        if prompt:  # the question stays in the user turn, before the image (this template)
            assert turns.index(prompt) < turns.index("ASSISTANT")
        assert len(tok(turns).input_ids) > 0
    with pytest.raises(ValueError, match="layout 'assistant'"):
        reward_prompt(rm.processor, 1, answer, "assistant")

    items = _items(tiny_world)
    user_scores = rm.score(items, batch_size=3)
    rm.layout = "turns"
    turns_scores = rm.score(items, batch_size=3)
    assert turns_scores != user_scores  # another input, another score
    rm.save_pretrained(tmp_path / "rm")
    again = VLMRewardModel.from_pretrained(tmp_path / "rm")
    assert again.layout == "turns"
    assert again.score(items, batch_size=3) == pytest.approx(turns_scores, abs=1e-5)


def test_training_with_the_turns_layout_keeps_it_with_the_model(tiny_model, tiny_world,
                                                                tmp_path):
    report = _train(tiny_model, tiny_world, tmp_path / "turns", "answer", layout="turns")
    assert report["layout"] == "turns"
    assert VLMRewardModel.from_pretrained(report["final"]).layout == "turns"
    with pytest.raises(ValueError, match="RewardTrainConfig.layout"):
        _train(tiny_model, tiny_world, tmp_path / "bad", "answer", layout="chat")

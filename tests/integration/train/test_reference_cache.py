"""Reference log-probs: computed once, read back on the next run, recomputed exactly for what
changed (reference model, image bytes, response); `rejected_images` really changes them."""

from __future__ import annotations

import dataclasses

import torch
from PIL import Image

from mmalign.io.formats import write_records
from mmalign.train.preference import PreferenceRunConfig, build_trainer

BATCH = 4


def cfg_for(model, data, root, out, cache, **kw) -> PreferenceRunConfig:
    return PreferenceRunConfig(model=str(model), data=[str(data)], image_root=str(root),
                               output_dir=str(out), ref_cache_dir=str(cache), lora=False,
                               per_device_train_batch_size=BATCH, **kw)


def ref_values(trainer) -> list[tuple[float, float]]:
    return [(r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in trainer.train_dataset.rows]


def test_second_run_makes_no_reference_pass_and_values_are_right(
        tiny_model, tiny_world, pref_pairs, pref_file, tmp_path):
    n = len(pref_pairs)
    first = build_trainer(cfg_for(tiny_model, pref_file, tiny_world, tmp_path / "a",
                                  tmp_path / "cache"))
    assert first.reference_stats["computed_rows"] == n
    assert first.reference_stats["precomputed_forward_passes"] == -(-n // BATCH)
    second = build_trainer(cfg_for(tiny_model, pref_file, tiny_world, tmp_path / "b",
                                   tmp_path / "cache"))
    assert second.reference_stats["precomputed_forward_passes"] == 0
    assert second.reference_stats["reused_rows"] == n
    assert ref_values(second) == ref_values(first)

    # The cached numbers are what the reference gives when run on the batch (online path).
    batch = first.data_collator(first.train_dataset.rows[:BATCH])
    cached = torch.stack([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    for f in ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_tokens",
              "ref_rejected_tokens"):
        del batch[f]
    k = int(batch["response_mask"].shape[1])
    online = torch.stack(first.reference_logps(batch, k))
    torch.testing.assert_close(cached, online, rtol=1e-5, atol=1e-4)
    assert first.reference_stats["online_forward_passes"] == 1


def test_cache_invalidation_by_model_image_and_response(
        tiny_model, perturbed_model, tiny_world, pref_pairs, pref_file, image_root_copy,
        tmp_path):
    cache = tmp_path / "cache"
    n = len(pref_pairs)

    def computed(model, data, root, name):
        t = build_trainer(cfg_for(model, data, root, tmp_path / name, cache))
        return t.reference_stats["computed_rows"]

    assert computed(tiny_model, pref_file, image_root_copy, "warm") == n
    assert computed(tiny_model, pref_file, image_root_copy, "again") == 0
    # another reference model: a new fingerprint, everything recomputed, in a second file
    assert computed(perturbed_model, pref_file, image_root_copy, "other-model") == n
    assert len(list(cache.glob("*.jsonl"))) == 2

    # edit one image's bytes (one pixel): only the pairs showing that image are recomputed
    rel = pref_pairs[0].images[0]
    img = Image.open(image_root_copy / rel).convert("RGB")
    img.putpixel((0, 0), tuple(255 - v for v in img.getpixel((0, 0))))
    img.save(image_root_copy / rel)
    showing = sum(rel in p.images for p in pref_pairs)
    assert 1 <= showing < n
    assert computed(tiny_model, pref_file, image_root_copy, "edited-image") == showing

    # change one rejected response (written as TRL-format data this time)
    changed = [dataclasses.replace(p) for p in pref_pairs]
    changed[-1] = dataclasses.replace(changed[-1], rejected=changed[-1].rejected + " Maybe.")
    trl_file = tmp_path / "pairs_trl.jsonl"
    write_records(trl_file, changed, "trl")
    assert computed(tiny_model, trl_file, image_root_copy, "edited-response") == 1


def test_rejected_images_change_the_rejected_logps(tiny_model, tiny_world, pref_pairs,
                                                   tmp_path):
    """Each pair's rejected side shown another pair's image (an image it does not describe)."""
    with_images = [dataclasses.replace(p, rejected_images=next(
        q.images for q in pref_pairs if q.images != p.images)) for p in pref_pairs]
    plain_file, swapped_file = tmp_path / "plain.jsonl", tmp_path / "swapped.jsonl"
    write_records(plain_file, pref_pairs, "jsonl")
    write_records(swapped_file, with_images, "jsonl")
    plain = build_trainer(cfg_for(tiny_model, plain_file, tiny_world, tmp_path / "p",
                                  tmp_path / "cache"))
    swapped = build_trainer(cfg_for(tiny_model, swapped_file, tiny_world, tmp_path / "s",
                                    tmp_path / "cache"))
    assert swapped.reference_stats["computed_rows"] == len(pref_pairs)  # rejected keys differ
    for (c0, r0), (c1, r1) in zip(ref_values(plain), ref_values(swapped), strict=True):
        assert c0 == c1  # the chosen side still sees its own image
        assert abs(r0 - r1) > 1e-4
    batch = swapped.data_collator(swapped.train_dataset.rows[:BATCH])
    assert not torch.equal(batch["vision_chosen"]["pixel_values"],
                           batch["vision_rejected"]["pixel_values"])
    batch = plain.data_collator(plain.train_dataset.rows[:BATCH])
    assert batch["vision_chosen"] is batch["vision_rejected"]  # processed once, reused


def test_fingerprint_covers_weights_config_and_processor(tiny_model):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmalign.train.ref_cache import model_fingerprint

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    base = model_fingerprint(model, processor)
    again = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert model_fingerprint(again, AutoProcessor.from_pretrained(tiny_model)) == base
    # a collator leaving padding/truncation state on the tokenizer changes nothing
    processor(text=["USER: a", "USER: a b c"], padding=True, truncation=True, max_length=8)
    assert model_fingerprint(model, processor) == base
    with torch.no_grad():
        next(again.parameters()).view(-1)[0] += 1e-3  # one weight, slightly
    assert model_fingerprint(again, processor) != base
    processor.chat_template = processor.chat_template.replace("USER:", "User:")
    assert model_fingerprint(model, processor) != base
    model.config.text_config.rms_norm_eps *= 2
    assert model_fingerprint(model) != model_fingerprint(
        AutoModelForImageTextToText.from_pretrained(tiny_model))

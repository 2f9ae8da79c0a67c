"""The same code paths on a second architecture (Idefics3 / SmolVLM-style), built tiny."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmalign.backends.base import GenRequest
from mmalign.backends.hf import HFGenerator
from mmalign.models.tiny import TinyConfig, build_tiny
from mmalign.train.sft import SFTRunConfig, preflight_lengths, train_sft

SMALL = dict(text_hidden=64, text_layers=2, text_intermediate=128, vision_hidden=64,
             vision_layers=2, vision_intermediate=128, vocab_size=600)


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    out = tmp_path_factory.mktemp("id3") / "model"
    build_tiny(out, TinyConfig(arch="idefics3", **SMALL))
    return out


def test_idefics3_loads_trains_and_generates(idefics3, tiny_world, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(idefics3)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    final = train_sft(SFTRunConfig(model=str(idefics3), data=[str(tiny_world / "clean.json")],
                                   output_dir=str(tmp_path / "run"), max_steps=3,
                                   per_device_train_batch_size=4, logging_steps=1, limit=12))
    after = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    before = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    gen = HFGenerator.from_pretrained(final, batch_size=2, device="cpu")
    images = sorted((tiny_world / "images" / "bench").glob("*.png"))[:3]
    reqs = [GenRequest.single(p, "Is there a star in the image?", max_new_tokens=4)
            for p in images]
    out = gen.generate(reqs)
    assert len(out) == 3 and out == [gen.generate([r])[0] for r in reqs]


def test_preflight_counts_idefics3_image_wrappers(idefics3, tiny_world):
    from mmalign.io.formats import read_records

    proc = AutoProcessor.from_pretrained(idefics3)
    samples = read_records(tiny_world / "clean.json")[:3]
    stats = preflight_lengths(samples, proc, 512, [tiny_world] * 3)
    # 16 image tokens (64 patches / 2**2) + <fake_token_around_image> x2 + <global-img>
    assert stats["image_tokens"] == 19
    with pytest.raises(ValueError, match="would cut them"):
        preflight_lengths(samples, proc, 12, [tiny_world] * 3)

"""The embedded tiny VLM: standard HF format, real tokenizer/processor, batched generation."""

from __future__ import annotations

import pytest
import torch

from mmalign.backends.base import GenRequest
from mmalign.backends.hf import HFGenerator
from mmalign.models.load import load_vlm


def test_loads_with_auto_classes(tiny_model):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    proc = AutoProcessor.from_pretrained(tiny_model)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(proc).__name__ == "LlavaProcessor"
    assert model.config.image_seq_length == 64
    assert (tiny_model / "mmalign_tiny.json").exists()


@pytest.mark.parametrize("text", [
    "The large red circle is at the top left.",
    "Arbitrary English: supercalifragilistic, naïve café, 3.14 and 😀 emoji!",
    "  leading spaces\tand tabs\nnewlines  ",
])
def test_tokenizer_round_trips_any_text(tiny_model, text):
    _, proc = load_vlm(tiny_model, device="cpu")
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert proc.tokenizer.decode(ids) == text
    assert proc.tokenizer.unk_token_id not in ids


def test_chat_template_masks_only_assistant_text(tiny_model, tiny_world):
    from PIL import Image

    _, proc = load_vlm(tiny_model, device="cpu")
    img = Image.open(next((tiny_world / "images" / "bench").glob("*.png")))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A red star."}]}]
    out = proc.apply_chat_template([msgs], tokenize=True, return_dict=True, return_tensors="pt",
                                   return_assistant_tokens_mask=True, images=[[img]])
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assert (ids == proc.tokenizer.convert_tokens_to_ids("<image>")).sum() == 64
    assert proc.tokenizer.decode(ids[mask.bool()]).strip() == "A red star.</s>"


def test_batched_generation_equals_one_by_one(tiny_model, tiny_world):
    gen = HFGenerator.from_pretrained(tiny_model, batch_size=4, device="cpu")
    images = sorted((tiny_world / "images" / "bench").glob("*.png"))[:5]
    reqs = [GenRequest.single(p, q, max_new_tokens=6) for p, q in zip(
        images, ["Is there a star?", "Describe the image.", "What color is the circle?",
                 "How many shapes are there in the image in total?", "Hi"], strict=True)]
    reqs.append(GenRequest.single(images[0], "Is there a star?", max_new_tokens=3))
    batched = gen.generate(reqs)
    single = [gen.generate([r])[0] for r in reqs]
    assert batched == single
    assert len(batched[-1]) <= len(batched[0])  # its own max_new_tokens group


def test_next_token_logprobs_are_the_greedy_first_token_in_request_order(tiny_model,
                                                                           tiny_world):
    gen = HFGenerator.from_pretrained(tiny_model, batch_size=2, device="cpu")
    images = sorted((tiny_world / "images" / "bench").glob("*.png"))[:3]
    reqs = [GenRequest.single(p, q, max_new_tokens=1) for p, q in zip(
        images, ["Is there a star?", "Describe the image.", "What color is the circle?"],
        strict=True)]
    logp = gen.next_token_logprobs(reqs)  # three requests over two batches
    assert logp.shape == (3, gen.model.config.text_config.vocab_size)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3), atol=1e-4)
    tok = gen.processor.tokenizer
    firsts = [tok.decode([int(i)], skip_special_tokens=True).strip() for i in logp.argmax(-1)]
    assert firsts == gen.generate(reqs)  # greedy, one new token each


def test_sampling_is_seeded(tiny_model, tiny_world):
    gen = HFGenerator.from_pretrained(tiny_model, device="cpu")
    img = next((tiny_world / "images" / "bench").glob("*.png"))
    req = [GenRequest.single(img, "Describe the image.", max_new_tokens=12, temperature=1.0,
                             seed=5)]
    torch.manual_seed(0)
    assert gen.generate(req) == gen.generate(req)


@pytest.mark.parametrize("answer", ["Yes.", "No.", "A large red circle at the top left.",
                                    "Two.", "Top left."])
def test_inference_prompt_is_a_prefix_and_every_answer_token_is_trained(tiny_model, answer):
    """What the model sees at inference ("...ASSISTANT:") must tokenise as a prefix of the
    training string, and every token after it (the answer, with its leading space, and the
    end token) must be inside the assistant mask: otherwise the first answer token is never
    trained and generation drifts (seen: 'A largeNo.')."""
    _, proc = load_vlm(tiny_model, device="cpu")
    tok = proc.tokenizer
    user = {"role": "user", "content": [{"type": "text", "text": "Is there a star?"}]}
    prompt = proc.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    full = proc.apply_chat_template(
        [[user, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = full["input_ids"][0], full["assistant_masks"][0]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[: len(p_ids)] == p_ids
    answer_part = [m for i, m in enumerate(mask) if i >= len(p_ids)]
    assert answer_part[:-1] == [1] * (len(answer_part) - 1)  # all but the closing newline
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == f" {answer}</s>"

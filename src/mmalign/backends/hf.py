"""`hf` backend: batched generation with a local HF vision-language model."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mmalign.backends.base import GenRequest
from mmalign.io.images import load_image
from mmalign.io.messages import typed_messages


def chat_messages(req: GenRequest) -> list[dict]:
    """Our `<image>`-placeholder turns as the typed-content messages chat templates expect."""
    return typed_messages(req.messages)


class HFGenerator:
    """Generate with any model `load_vlm` can load. Requests with the same sampling parameters
    are batched together (left padding); outputs come back in request order."""

    def __init__(self, model, processor, *, batch_size: int = 16, name: str | None = None):
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__

    @classmethod
    def from_pretrained(cls, path: str | Path, *, batch_size: int = 16, device: str | None = None,
                        dtype: str | None = "auto") -> HFGenerator:
        from mmalign.models.load import load_vlm

        model, processor = load_vlm(path, device=device, dtype=dtype)
        return cls(model, processor, batch_size=batch_size, name=str(path))

    def generate(self, requests: list[GenRequest]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.max_new_tokens, r.temperature, r.top_p, r.seed)].append(i)
        for (max_new, temperature, top_p, seed), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                texts = self._generate_batch([requests[i] for i in chunk], max_new,
                                             temperature, top_p, seed)
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = text
        return [t or "" for t in out]

    def next_token_logprobs(self, requests: list[GenRequest]):
        """log p(first answer token | prompt) over the vocabulary, (len(requests), vocab), in
        request order: what a model would answer, read without generating (probes)."""
        import torch

        rows = []
        for start in range(0, len(requests), self.batch_size):
            enc = self._encode(requests[start:start + self.batch_size])
            with torch.inference_mode():
                rows.append(self.model(**enc).logits[:, -1].float().log_softmax(-1).cpu())
        return torch.cat(rows) if rows else torch.empty(0)

    def _encode(self, reqs: list[GenRequest]):
        """The requests' prompts (chat template, generation prompt) and images, left-padded."""
        prompts = [self.processor.apply_chat_template(chat_messages(r), add_generation_prompt=True,
                                                      tokenize=False) for r in reqs]
        images = [load_image(p) for r in reqs for p in r.images]
        return self.processor(images=images or None, text=prompts, padding=True,
                              padding_side="left", return_tensors="pt").to(self.model.device)

    def _generate_batch(self, reqs: list[GenRequest], max_new_tokens: int, temperature: float,
                        top_p: float, seed: int | None) -> list[str]:
        import torch

        enc = self._encode(reqs)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                      pad_token_id=self.processor.tokenizer.pad_token_id)
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
            if seed is not None:
                torch.manual_seed(seed)
        with torch.inference_mode():
            ids = self.model.generate(**enc, **kwargs)
        new = ids[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

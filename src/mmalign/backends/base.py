"""The protocols every backend speaks.

A `Generator` turns requests (images + a chat conversation + sampling parameters) into texts.
Evaluation, sampling, rewriting and judging only ever see this protocol, so a local HF model,
an OpenAI-compatible endpoint or the world's oracle are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from mmalign.records import Turn


@dataclass
class GenRequest:
    """One generation: `messages` end with a user turn; each `<image>` placeholder in them
    stands for one entry of `images` (absolute or image-root-relative paths), in order."""

    images: list[Path]
    messages: list[Turn]
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def single(cls, image: Path | str, prompt: str, **kw) -> GenRequest:
        """The common case: one image, one user question (placeholder first, LLaVA-style)."""
        return cls(images=[Path(image)], messages=[Turn("user", f"<image>\n{prompt}")], **kw)


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, requests: list[GenRequest]) -> list[str]:
        """Return one text per request, in order. Implementations batch internally."""
        ...


class RequestRejected(RuntimeError):
    """The backend refused one request for a reason tied to that request (a 400: too long,
    unreadable image). Judges record it on that response's Rating and go on; errors that
    concern every request (bad key, unreachable server) are other exception types and stop
    the run."""


def generate_or_reject(generator: Generator, requests: list[GenRequest]
                       ) -> list[str | RequestRejected]:
    """`generator.generate`, except that a request the backend refuses comes back as its
    `RequestRejected` in place of a text. One refused request spoils a batch call, so the batch
    is then asked one request at a time (with a caching backend the answered ones cost
    nothing)."""
    try:
        return list(generator.generate(requests))
    except RequestRejected:
        out: list[str | RequestRejected] = []
        for r in requests:
            try:
                out.append(generator.generate([r])[0])
            except RequestRejected as e:
                out.append(e)
        return out

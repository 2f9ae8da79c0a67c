"""Reference log-probabilities, computed once and kept on disk.

DPO needs log ref(y|x) for every chosen and rejected response; the reference never changes
during training, so computing it every step (what TRL does for vision data, where it refuses
`precompute_ref_log_probs`) wastes a forward pass per step. We compute it once and store it in
`CACHE_DIR/<fingerprint>.jsonl`, one line per response:

    {"key": sha256(images' content hashes, prompt, response, max_length), "logp": sum, "tokens": n}

The fingerprint hashes the reference model's weights and config and the processor (tokenizer,
chat template, image settings), so any change to the model or how text/images are encoded
starts a new file; a changed image (its bytes), prompt or response changes the entry key.
Sums and token counts are stored, so `sum` and `mean` reductions share one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mmalign.io.atomic import atomic_open


def model_fingerprint(model, processor=None) -> str:
    """Hash of a model's config and every weight (name, dtype, shape, bytes), plus the processor.

    blake2b over the raw bytes: a 7B model in bf16 takes about 15 s, once per run.
    """
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if processor is not None:
        h.update(processor_signature(processor).encode())
    return h.hexdigest()


def processor_signature(processor) -> str:
    """Everything in a processor that decides which tokens and pixels the model sees."""
    parts: list[str] = []
    tok = getattr(processor, "tokenizer", processor)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Padding/truncation state is left behind by whoever called the tokenizer last
        # (collators do); it does not change which tokens a text becomes.
        spec.pop("padding", None)
        spec.pop("truncation", None)
        parts.append(json.dumps(spec, sort_keys=True))
    else:
        parts.append(json.dumps(tok.get_vocab(), sort_keys=True))
    parts.append(str(getattr(processor, "chat_template", None) or getattr(tok, "chat_template",
                                                                          None)))
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        parts.append(image_processor.to_json_string())
    return "\n".join(parts)


def entry_key(image_hashes: list[str], prompt: list[dict[str, Any]], response: str,
              max_length: int | None) -> str:
    """Key of one scored response: what the reference saw (images by content, prompt turns,
    response text) and how it was cut (max_length)."""
    blob = json.dumps({"images": image_hashes, "prompt": prompt, "response": response,
                       "max_length": max_length}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class RefLogpCache:
    """The entries of one reference fingerprint: key -> (summed log-prob, token count)."""

    def __init__(self, cache_dir: str | os.PathLike, fingerprint: str):
        self.path = Path(cache_dir) / f"{fingerprint}.jsonl"
        self.entries: dict[str, tuple[float, int]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    self.entries[d["key"]] = (float(d["logp"]), int(d["tokens"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{self.path}: line {n + 1} is not a cache entry ({e}); "
                                     f"delete the file to recompute") from None

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> tuple[float, int]:
        return self.entries[key]

    def update(self, new: dict[str, tuple[float, int]]) -> None:
        """Add entries and rewrite the file atomically (a crash never leaves half a cache)."""
        if not new:
            return
        self.entries.update(new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path) as f:
            for key, (logp, tokens) in self.entries.items():
                f.write(json.dumps({"key": key, "logp": logp, "tokens": tokens}) + "\n")

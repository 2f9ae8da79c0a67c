"""Load any HF image-text-to-text model with its processor, by local path or hub id.

Nothing here is tied to one family: `AutoModelForImageTextToText` and `AutoProcessor` pick
LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics, ... from the folder's config. Only a hub id downloads,
and only when the user names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_dtype(dtype: str | None):
    import torch

    if dtype in (None, "auto"):
        return "auto"
    try:
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16") from None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_vlm(name_or_path: str | Path, *, dtype: str | None = "auto", device: str | None = None,
             trust_remote_code: bool = False, **model_kwargs: Any):
    """Return (model, processor) in eval mode on `device` (default: cuda if present)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = str(name_or_path)
    if Path(path).exists() and not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a saved HF model folder")
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, **model_kwargs)
    model.to(device or default_device())
    model.eval()
    return model, processor

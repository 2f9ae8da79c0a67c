"""A reward model: any HF vision-language model plus a scalar head at the last real token.

    rm = VLMRewardModel.from_backbone("path/or/hub-id")       # a fresh, randomly set head
    rm.enable_lora(r=16)                                     # optional: LoRA on the LM
    scores = rm.score([RewardInput(["img.png"], "Question: q\\nAnswer: a")])
    rm.save_pretrained("rm/")                                # merged backbone + head
    rm = VLMRewardModel.from_pretrained("rm/")

The text is run through the model's own chat template and processor, so each family puts its
image tokens where it expects them, in one of two layouts:
- `user` (the paper's): the whole text in one user turn with the image(s);
- `turns`: the scored text as the assistant's turn, after a user turn holding the image(s) and,
  for an answer RM's "Question: q\nAnswer: a", the question. The text is then where the model
  learnt to read answers against the image. A template that puts the image after the user's
  text (the tiny model's, question first) leaves no text of the `user` layout able to attend
  to the image: only the tokens after it can, and the head has to do all the checking there.

The backbone's language model gives hidden states (B, T, H); the head reads the state of the
last non-padding token, found from the attention mask (so left and right padding
both work): s = w . h_last + b. This is the released Align2LLaVA reward model's design (a
LLaVA with a bias-free `score` layer read at the sequence end); we keep a bias, which the
pairwise loss ignores.

A saved reward model is a plain HF model folder (LoRA merged in) with the processor, plus
`reward_head.safetensors` and `reward_config.json`; any tool can still load the backbone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"
FORMAT_VERSION = 1


@dataclass
class RewardInput:
    """One thing to score: images (absolute paths, or PIL images) and the text about them."""

    images: list[Any]
    text: str


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row. (B, T) -> (B,)

    Works for right padding (the usual case) and left padding alike; a row with no real
    token gets index T-1 (it cannot happen with a chat template, which always adds text).
    """
    t = attention_mask.shape[1]
    return t - 1 - attention_mask.flip(-1).to(torch.long).argmax(-1)


def pairwise_loss(better: torch.Tensor, worse: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry loss of the paper: mean of -log sigmoid(s_better - s_worse); with
    `weight` (summing to 1), the weighted sum instead."""
    losses = -nn.functional.logsigmoid(better - worse)
    return losses.mean() if weight is None else (losses * weight.to(losses.dtype)).sum()


def pairwise_accuracy(better: Sequence[float], worse: Sequence[float]) -> float:
    """Share of pairs ranked right (a tie counts as wrong)."""
    if len(better) != len(worse):
        raise ValueError(f"{len(better)} better scores for {len(worse)} worse ones")
    if not better:
        return float("nan")
    return sum(b > w for b, w in zip(better, worse, strict=True)) / len(better)


def language_model_of(backbone: nn.Module) -> nn.Module | None:
    """The module giving hidden states without the LM head (`XForConditionalGeneration.model`
    in transformers 5: LlavaModel, Idefics3Model, Qwen2VLModel, ...), or None."""
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else None


class VLMRewardModel(nn.Module):
    """Backbone VLM + linear head (`num_outputs` scores; 1 for a scalar reward)."""

    # Read by HF Trainer: forward's **vision are pixel inputs, not loss kwargs such as
    # num_items_in_batch (the pairwise loss is computed outside, in compute_loss).
    accepts_loss_kwargs = False

    def __init__(self, backbone: nn.Module, processor: Any, *, num_outputs: int = 1,
                 base_model: str = "", info: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.processor = processor
        hidden = backbone.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, num_outputs)
        self.num_outputs = num_outputs
        self.base_model = base_model
        self.info = dict(info or {})  # saved with the head: kind (question/answer), training
        self.max_length: int | None = None
        self.layout = "user"  # or "turns" (see the module docstring)
        # The PEFT wrapper while LoRA is on; kept out of the module tree so parameters are
        # not registered twice (LoRA layers live inside `backbone` itself).
        object.__setattr__(self, "_peft", None)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike, *, num_outputs: int = 1,
                      dtype: str | None = "fp32", device: str | None = None, seed: int = 0,
                      trust_remote_code: bool = False) -> VLMRewardModel:
        """A reward model on a pretrained VLM, with a freshly initialised head (seeded)."""
        from mmalign.models.load import load_vlm

        backbone, processor = load_vlm(name_or_path, dtype=dtype, device=device,
                                       trust_remote_code=trust_remote_code)
        rm = cls(backbone, processor, num_outputs=num_outputs, base_model=str(name_or_path))
        gen = torch.Generator().manual_seed(seed)
        std = getattr(backbone.config.get_text_config(), "initializer_range", 0.02)
        with torch.no_grad():
            rm.head.weight.copy_(torch.randn(rm.head.weight.shape, generator=gen) * std)
            rm.head.bias.zero_()
        return rm.to(backbone.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: str | None = "fp32",
                        device: str | None = None) -> VLMRewardModel:
        from safetensors.torch import load_file

        from mmalign.models.load import load_vlm

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a saved reward model (needs {CONFIG_FILE} and "
                                    f"{HEAD_FILE}; train one with `mmalign curate reward`)")
        cfg = json.loads((path / CONFIG_FILE).read_text())
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: reward model format {cfg.get('format_version')!r}, this "
                             f"version reads {FORMAT_VERSION}")
        backbone, processor = load_vlm(path, dtype=dtype, device=device)
        rm = cls(backbone, processor, num_outputs=cfg["num_outputs"],
                 base_model=cfg.get("base_model", ""), info=cfg.get("info", {}))
        rm.max_length = cfg.get("max_length")
        rm.layout = check_layout(cfg.get("layout", "user"), path / CONFIG_FILE)
        rm.head.load_state_dict(load_file(path / HEAD_FILE))
        return rm.to(backbone.device).eval()

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write backbone (LoRA merged in), processor, head and config to `path`.

        With LoRA on, saving merges the adapters into the backbone for good (the model stays
        usable for scoring; training after it continues in full, not LoRA).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._peft is not None:
            self.backbone = self._peft.merge_and_unload()
            object.__setattr__(self, "_peft", None)
        self.backbone.save_pretrained(path)
        self.processor.save_pretrained(path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  path / HEAD_FILE)
        (path / CONFIG_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "num_outputs": self.num_outputs,
            "hidden_size": self.head.in_features, "base_model": self.base_model,
            "max_length": self.max_length, "layout": self.layout, "info": self.info},
            indent=2) + "\n")
        return path

    # ------------------------------------------------------------------ training set-up

    def enable_lora(self, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                    target_modules: str | list[str] = "all-linear") -> None:
        """LoRA on the language model and projector (vision tower frozen); the head trains in
        full. `all-linear` is resolved as in SFT (`mmalign.train.sft`)."""
        from peft import LoraConfig, get_peft_model

        from mmalign.train.sft import _lora_targets

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=_lora_targets(self.backbone, target_modules))
        # get_peft_model swaps LoRA layers into `backbone` in place and freezes the rest.
        object.__setattr__(self, "_peft", get_peft_model(self.backbone, config))

    def freeze_vision_tower(self) -> None:
        from mmalign.train.sft import _vision_tower

        for p in _vision_tower(self.backbone).parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **vision: Any) -> torch.Tensor:
        """Scores (B,) for a scalar head, else (B, num_outputs)."""
        inner = language_model_of(self.backbone)
        if inner is not None:
            hidden = inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                           **vision).last_hidden_state
        else:  # a family without `.model`: ask the full model for its hidden states
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False, output_hidden_states=True,
                                   **vision).hidden_states[-1]
        idx = last_token_index(attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (B, H)
        scores = self.head(last.to(self.head.weight.dtype))  # (B, num_outputs)
        return scores.squeeze(-1) if self.num_outputs == 1 else scores

    def encode(self, items: Sequence[RewardInput]) -> dict[str, torch.Tensor]:
        return encode_inputs(self.processor, items, self.max_length, self.layout)

    @torch.no_grad()
    def score(self, items: Sequence[RewardInput], batch_size: int = 16) -> list[float]:
        """Scores of `items`, in order (scalar head)."""
        was_training = self.training
        self.eval()
        out: list[float] = []
        try:
            for start in range(0, len(items), batch_size):
                batch = self.encode(items[start:start + batch_size])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out.extend(float(s) for s in self(**batch).float().cpu())
        finally:
            self.train(was_training)
        return out


LAYOUTS = ("user", "turns")


def check_layout(layout: str, where: Any = "layout") -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"{where}: reward input layout {layout!r}, expected one of {LAYOUTS}")
    return layout


def reward_prompt(processor: Any, n_images: int, text: str, layout: str = "user") -> str:
    """The chat-templated text of one reward input (layouts: the module docstring)."""
    from mmalign.curate.annotations import split_answer_text

    check_layout(layout)
    prompt, scored = text, None  # "user": all of it in the user turn
    if layout == "turns":  # the question (if any) asks, the scored text answers
        prompt, scored = split_answer_text(text) or ("", text)
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    if prompt or scored is None:
        content.append({"type": "text", "text": ("\n" if n_images else "") + prompt})
    messages = [{"role": "user", "content": content}]
    if scored is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": scored}]})
    return processor.apply_chat_template(messages, tokenize=False)


def encode_inputs(processor: Any, items: Sequence[RewardInput],
                  max_length: int | None = None, layout: str = "user"
                  ) -> dict[str, torch.Tensor]:
    """Tokenise a batch (right padding). All items must have the same number of images (the
    scorer groups them). With `max_length`, text past it is cut; cutting into image tokens
    is refused with a message, since it breaks every VLM forward."""
    from mmalign.io.images import load_image

    counts = {len(it.images) for it in items}
    if len(counts) != 1:
        raise ValueError(f"a batch mixes items with {sorted(counts)} images; group them first")
    n_images = counts.pop()
    texts = [reward_prompt(processor, n_images, it.text, layout) for it in items]
    images = None
    if n_images:
        images = [[im if not isinstance(im, str | Path) else load_image(im) for im in it.images]
                  for it in items]
    enc = processor(images=images, text=texts, padding=True, padding_side="right",
                    return_tensors="pt")
    if max_length is not None and enc["input_ids"].shape[1] > max_length:
        image_id = _image_token_id(processor)
        if image_id is not None:
            last_image = (enc["input_ids"] == image_id).long().cumsum(-1).argmax(-1).max()
            if n_images and int(last_image) >= max_length:
                raise ValueError(f"max_length={max_length} would cut image tokens (they run to "
                                 f"position {int(last_image) + 1}); raise max_length")
        enc["input_ids"] = enc["input_ids"][:, :max_length]
        enc["attention_mask"] = enc["attention_mask"][:, :max_length]
    return dict(enc)


def _image_token_id(processor: Any) -> int | None:
    tok = processor.tokenizer
    token = getattr(processor, "image_token", None) or "<image>"
    tid = tok.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tok.unk_token_id else None

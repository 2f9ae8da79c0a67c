"""Supervised fine-tuning of any HF VLM through TRL's SFTTrainer (full or LoRA).

Used for both pretraining the tiny base model on the world's clean set (all weights) and SFT
on an instruction corpus. Reads any format `mmalign.io` reads; trains on assistant tokens only
(the chat template's generation markers); checkpoints, resumes from the last checkpoint in
`output_dir`, logs through `report_to` (tensorboard, wandb, ...). Before training starts, a
pre-flight check refuses a `max_length` that would cut image tokens, with the offending record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmalign.io.formats import read_records
from mmalign.io.messages import typed_messages
from mmalign.records import Sample

log = logging.getLogger(__name__)


@dataclass
class SFTRunConfig:
    """One SFT run. Field names follow TRL/HF where a field maps onto theirs."""

    model: str  # path or hub id of the starting model
    data: list[str]  # corpus files, any format mmalign.io reads
    output_dir: str
    image_root: str | None = None  # default: each data file's folder
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: int = 512
    assistant_only_loss: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    freeze_vision_tower: bool = False  # with LoRA the vision tower is always left frozen
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    report_to: list[str] = field(default_factory=lambda: ["none"])
    seed: int = 0
    limit: int | None = None  # train on the first N records only
    resume: bool = True  # continue from the newest checkpoint in output_dir, if any
    dataloader_num_workers: int = 0
    # TRL turns it on by default (as gradient_checkpointing); it trades ~30% more compute for
    # activation memory, which tiny models do not need. Turn it on for real models on small GPUs.
    activation_checkpointing: bool = False


# SFTRunConfig fields passed to TRL's SFTConfig under the same name.
_SHARED_WITH_SFTCONFIG = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "weight_decay",
    "max_length", "assistant_only_loss", "logging_steps", "save_steps", "save_total_limit",
    "report_to", "seed", "dataloader_num_workers", "activation_checkpointing",
)


def samples_to_dataset(samples: list[Sample], image_root: Path):
    """TRL's conversational vision format: `messages` with typed content + `images`."""
    from datasets import Dataset, Image, Sequence

    rows: dict[str, list[Any]] = {"id": [], "images": [], "messages": []}
    for s in samples:
        rows["id"].append(s.id)
        rows["images"].append([str(image_root / p) for p in s.images])
        rows["messages"].append(typed_messages(s.turns))
    ds = Dataset.from_dict(rows)
    return ds.cast_column("images", Sequence(Image()))


def load_samples(paths: list[str], image_root: str | None, limit: int | None
                 ) -> list[tuple[Sample, Path]]:
    out = []
    for p in paths:
        root = Path(image_root) if image_root else Path(p).parent
        for r in read_records(p, image_root=root):
            if not isinstance(r, Sample):
                raise ValueError(f"{p}: SFT needs samples (conversations), found a preference "
                                 f"pair ({r.id}); convert or use `mmalign train dpo`")
            out.append((r, root))
            if limit is not None and len(out) >= limit:
                return out
    return out


def preflight_lengths(samples: list[Sample], processor, max_length: int,
                      image_roots: list[Path] | None = None) -> dict[str, int]:
    """Fail fast if `max_length` would cut into image tokens; report text truncation.

    The most common crash in VLM fine-tuning ("image features and image tokens do not
    match") is a truncation inside the run of image tokens. We measure, with the real
    processor on one record, how many tokens an image placeholder becomes (LLaVA: 64 image
    tokens; Idefics3 adds wrapper tokens), then estimate every record's expanded length and
    where its last image run ends. (For dynamic-resolution models the per-image count varies;
    the first image's count is used.) Records merely losing answer text are counted.
    """
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    per_image = None
    longest, cut_text = 0, 0
    for k, s in enumerate(samples):
        msgs = typed_messages(s.turns)
        text = processor.apply_chat_template(msgs, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        positions = [i for i, t in enumerate(ids) if t == image_id]
        if positions and per_image is None:
            root = image_roots[k] if image_roots else Path(".")
            per_image = _tokens_per_image(processor, text, s, root, len(ids))
        grow = len(positions) * ((per_image or 1) - 1)
        expanded_len = len(ids) + grow
        if positions:
            last_image_end = positions[-1] + grow + 1
            if last_image_end > max_length:
                raise ValueError(
                    f"record {s.id!r}: its image tokens end at position {last_image_end} but "
                    f"max_length={max_length} would cut them (each image is {per_image} "
                    f"tokens). Raise max_length to at least {expanded_len} or shorten the "
                    f"record.")
        longest = max(longest, expanded_len)
        cut_text += expanded_len > max_length
    return {"longest": longest, "truncated_records": cut_text, "image_tokens": per_image or 0}


def _tokens_per_image(processor, text: str, sample: Sample, image_root: Path,
                      text_len: int) -> int:
    """Tokens one `<image>` placeholder becomes, measured with the processor itself."""
    from mmalign.io.images import load_image

    images = [load_image(image_root / p) for p in sample.images]
    enc = processor(images=[images], text=[text], add_special_tokens=False)
    return (len(enc["input_ids"][0]) - text_len) // len(images) + 1


def train_sft(cfg: SFTRunConfig) -> Path:
    """Run SFT and save the final model + processor to `cfg.output_dir/final`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from mmalign.train.resume import load_checkpoint_weights, resume_point, train_or_finish

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.dumps(asdict(cfg), indent=2) + "\n"
    record, final = out / "sft_config.json", out / "final"
    if (cfg.resume and (final / "train_log.json").is_file() and record.is_file()
            and record.read_text() == settings):
        log.info("%s: finished already with these settings", final)
        return final
    record.write_text(settings)

    pairs = load_samples(cfg.data, cfg.image_root, cfg.limit)
    samples = [s for s, _ in pairs]
    if not samples:
        raise ValueError(f"no training records in {cfg.data}")
    processor = AutoProcessor.from_pretrained(cfg.model)
    stats = preflight_lengths(samples, processor, cfg.max_length, [r for _, r in pairs])
    log.info("pre-flight: %d records, longest %d tokens, %d would lose answer text",
             len(samples), stats["longest"], stats["truncated_records"])

    # One dataset per image root keeps paths right when files come from different folders.
    from datasets import concatenate_datasets

    by_root: dict[Path, list[Sample]] = {}
    for s, root in pairs:
        by_root.setdefault(root, []).append(s)
    dataset = concatenate_datasets([samples_to_dataset(v, k) for k, v in by_root.items()])

    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.float32)
    last = resume_point(out, cfg.resume)
    # Trainer's own resume loads none of a full checkpoint's weights (resume.py)
    restored = not cfg.lora and load_checkpoint_weights(model, last)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                 lora_dropout=cfg.lora_dropout,
                                 target_modules=_lora_targets(model, cfg.lora_target_modules),
                                 task_type="CAUSAL_LM")
    elif cfg.freeze_vision_tower:
        for p in _vision_tower(model).parameters():
            p.requires_grad_(False)

    args = SFTConfig(
        output_dir=str(out),
        **{name: getattr(cfg, name) for name in _SHARED_WITH_SFTCONFIG},
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        remove_unused_columns=False,  # the collator needs `images`; HF would drop it
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,  # progress bars whatever the log level
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=processor, peft_config=peft_config)
    if last:
        log.info("resuming from %s", last)
    train_or_finish(trainer, last, cfg.max_steps, restored)

    final = out / "final"
    model = trainer.model
    if cfg.lora:
        model = model.merge_and_unload()  # a plain HF model every tool can load
    model.save_pretrained(final)
    # TRL's collator tokenises with truncation=True/max_length and padding; a fast tokenizer
    # keeps that state and would write it into tokenizer.json, silently truncating prompts
    # (and warning on every padded batch) wherever the model is used next.
    backend = processor.tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    processor.save_pretrained(final)
    (final / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return final


def _vision_tower(model):
    for name in ("vision_tower", "visual", "vision_model"):
        for owner in (model, getattr(model, "model", None)):
            if owner is not None and hasattr(owner, name):
                return getattr(owner, name)
    raise AttributeError(f"cannot find the vision tower of {type(model).__name__}")


def _lora_targets(model, targets: str | list[str]):
    """`all-linear` on the language model and projector only: the vision tower stays frozen
    (DESIGN section 4), which PEFT's own `all-linear` would not do."""
    if targets != "all-linear":
        return targets
    import torch

    vision = {id(m) for m in _vision_tower(model).modules()}
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and id(module) not in vision \
                and not name.endswith("lm_head"):
            names.add(name)
    return sorted(names)

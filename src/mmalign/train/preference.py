"""Our VLM preference trainer: DPO (sigmoid / IPO / hinge) and POVID's two-stage schedule.

Built on HF `Trainer` through its public hooks only (`compute_loss`, `log`, callbacks), with
our own collator and column contract (`mmalign.train.preference_data`), so `accelerate launch`
with DDP / DeepSpeed / FSDP works as it does for any Trainer. What it adds over TRL's
DPOTrainer for vision data:

- reference log-probs computed once before training and cached on disk (`ref_cache.py`),
  keyed by the reference's fingerprint and each response's images, prompt and text, so a rerun
  or a resume makes no reference forward pass (TRL refuses `precompute_ref_log_probs` for
  vision data and runs the reference on every step);
- `rejected_images`: the rejected side can be scored with a different image;
- POVID's stage-2 term: the policy's argmax answer under a diffusion-noised image, scored under
  the clean image as an extra negative, with "shared" and "faithful" reference modes;
- logits only over the response window (`logits_to_keep`), not over image and prompt tokens.

Loss (per pair, averaged over the batch):

    plain DPO:    L = DPO(chosen, rejected) [+ sft_weight * NLL(chosen)]
    noise term:   L = text_weight * DPO(chosen, rejected) + noise_weight * DPO(chosen, noise)
                      [+ sft_weight * NLL(chosen)]
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from mmalign.pairs.noise import DEFAULT_STEP, NUM_STEPS, add_noise_to_normalized
from mmalign.train.logps import argmax_logps, response_logps, response_window
from mmalign.train.losses import LOSS_TYPES, implicit_rewards, preference_loss, sft_nll
from mmalign.train.preference_data import (
    REF_FIELDS,
    PreferenceCollator,
    PreferenceDataset,
    load_pairs,
    preflight_samples,
)
from mmalign.train.ref_cache import RefLogpCache, model_fingerprint
from mmalign.train.resume import load_checkpoint_weights, resume_point, train_or_finish

log = logging.getLogger(__name__)

NOISE_REF_MODES = ("shared", "faithful")
REDUCTIONS = ("sum", "mean")


def default_ref_cache_dir() -> str:
    """`$MMALIGN_CACHE/ref_logps`, else `~/.cache/mmalign/ref_logps`: shared by every run, so
    a second run on the same reference and data reads instead of recomputing."""
    root = os.environ.get("MMALIGN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "mmalign")
    return os.path.join(root, "ref_logps")


@dataclass
class PreferenceRunConfig:
    """One preference-training run. Defaults follow the papers: DPO (Rafailov et al. 2023) for
    the loss, POVID's `scripts/run_povid.sh` for the optimisation and LoRA; field names follow
    TRL/HF where a field maps onto theirs."""

    model: str  # path or hub id of the starting model; also the reference unless ref_model
    data: list[str]  # preference files, any format mmalign.io reads (povid, trl, jsonl, ...)
    output_dir: str  # checkpoints, logs, final/ (the trained model, LoRA merged, + processor)
    image_root: str | None = None  # default: each data file's folder
    data_format: str | None = None  # default: detected from each file

    # --- loss
    loss_type: str = "sigmoid"  # sigmoid (DPO eq. 7) | ipo (Azar et al. eq. 17) | hinge (SLiC)
    beta: float = 0.1  # DPO's beta (IPO's tau); POVID and MM-DPO use 0.1
    logp_reduction: str = "sum"  # sum (DPO's log pi(y|x)) | mean (per-token average)
    sft_weight: float = 0.0  # weight of the mean NLL of chosen tokens added to the loss

    # --- POVID stage-2 noise term (off for plain DPO)
    noise_term: bool = False  # add the noised-image negative (DESIGN 6.2)
    text_weight: float = 0.5  # weight of DPO(chosen, text rejected) when noise_term is on
    noise_weight: float = 0.5  # weight of DPO(chosen, noise rejected) when noise_term is on
    noise_step: int = DEFAULT_STEP  # diffusion step t of the 1000-step schedule (POVID: 500)
    # "faithful": the reference takes its own argmax under the noisy image (POVID's code);
    # "shared": the policy's argmax tokens are the rejected answer for both models.
    noise_ref_mode: str = "faithful"

    # --- reference
    ref_model: str | None = None  # a different reference model (default: the starting model)
    precompute_reference: bool = True  # cache reference log-probs once; False: every step
    ref_cache_dir: str | None = None  # default: default_ref_cache_dir()

    # --- optimisation (POVID's run: 3 epochs, lr 1e-7, cosine, warmup 0.03, 8 GPUs x 1 pair)
    num_train_epochs: float = 3.0  # passes over the pairs (per stage for train_povid)
    max_steps: int = -1  # > 0: optimiser steps to run, overriding num_train_epochs
    per_device_train_batch_size: int = 8  # pairs per process per micro-batch (8 = POVID's 8x1)
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step
    learning_rate: float = 1e-7  # POVID's; raise it for tiny models (the tests use 1e-3)
    lr_scheduler_type: str = "cosine"  # any HF scheduler name
    warmup_ratio: float = 0.03  # fraction of the steps spent warming the learning rate up
    weight_decay: float = 0.0  # AdamW weight decay
    max_length: int = 512  # prompt (with image tokens) + response; pre-flight checked
    bf16: bool = False  # bf16 autocast (GPUs); weights stay fp32
    activation_checkpointing: bool = False  # recompute activations: less memory, ~30% slower

    # --- model (POVID: LoRA r 128, alpha 256 on the language model; vision tower frozen)
    lora: bool = True  # train LoRA adapters (merged into the weights in final/); False: full
    lora_r: int = 128  # LoRA rank
    lora_alpha: int = 256  # LoRA scale numerator (update scaled by alpha / r)
    lora_dropout: float = 0.05  # used only with disable_dropout=False
    lora_target_modules: str | list[str] = "all-linear"  # all-linear: LM + projector only
    freeze_vision_tower: bool = True  # full fine-tuning: keep the vision tower frozen
    disable_dropout: bool = True  # deterministic log-probs (policy == reference at step 0)

    # --- bookkeeping
    logging_steps: int = 10  # log loss, rewards, margins, accuracies every N steps
    save_steps: int = 200  # write a checkpoint (resumable) every N steps
    save_total_limit: int = 2  # checkpoints kept in output_dir
    report_to: list[str] = field(default_factory=lambda: ["none"])  # tensorboard, wandb, ...
    seed: int = 0  # data order, LoRA initialisation, image noise
    limit: int | None = None  # train on the first N pairs only
    resume: bool = True  # continue from the newest checkpoint in output_dir, if any
    dataloader_num_workers: int = 0  # processes decoding images for the collator

    def validate(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r}: expected one of {LOSS_TYPES}")
        if self.logp_reduction not in REDUCTIONS:
            raise ValueError(f"logp_reduction {self.logp_reduction!r}: expected one of "
                             f"{REDUCTIONS}")
        if self.noise_ref_mode not in NOISE_REF_MODES:
            raise ValueError(f"noise_ref_mode {self.noise_ref_mode!r}: expected one of "
                             f"{NOISE_REF_MODES}")
        if not 0 <= self.noise_step < NUM_STEPS:
            raise ValueError(f"noise_step {self.noise_step} is outside [0, {NUM_STEPS})")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if min(self.text_weight, self.noise_weight, self.sft_weight) < 0:
            raise ValueError("loss weights must be >= 0")

    @property
    def average_logps(self) -> bool:
        return self.logp_reduction == "mean"


# TrainingArguments fields taken from PreferenceRunConfig under the same name.
_SHARED_WITH_TRAINING_ARGS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "weight_decay",
    "logging_steps", "save_steps", "save_total_limit", "report_to", "seed",
    "dataloader_num_workers", "bf16",
)
# Batch keys that are not model inputs.
_NON_MODEL_KEYS = {"response_mask", "vision_chosen", "vision_rejected", *REF_FIELDS}


class PreferenceTrainer(Trainer):
    """HF Trainer with a preference loss. Only public hooks are overridden: `compute_loss` and
    `log`. The reference is, in order: `ref_model` if given; the PEFT model with its adapters
    disabled (LoRA); the policy itself before its first step (full fine-tuning, precompute)."""

    # The loss is a per-pair mean; Trainer divides it by the accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(self, *, model, args, config: PreferenceRunConfig, train_dataset:
                 PreferenceDataset, processor, ref_model=None,
                 ref_cache: RefLogpCache | None = None, callbacks=None):
        super().__init__(model=model, args=args, train_dataset=train_dataset,
                         data_collator=PreferenceCollator(processor, config.max_length),
                         processing_class=processor, callbacks=callbacks)
        self.config = config
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.to(self.args.device).eval().requires_grad_(False)
        image_processor = getattr(processor, "image_processor", None)
        normalize = image_processor is not None and getattr(image_processor, "do_normalize",
                                                            True)
        self.image_mean = list(image_processor.image_mean) if normalize else [0.0, 0.0, 0.0]
        self.image_std = list(image_processor.image_std) if normalize else [1.0, 1.0, 1.0]
        self._noise_generator: torch.Generator | None = None
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.reference_stats: dict[str, Any] = {"precomputed_forward_passes": 0,
                                                "online_forward_passes": 0}
        self._reference_released = False
        if config.precompute_reference:
            if ref_cache is None:
                raise ValueError("precompute_reference needs a RefLogpCache")
            self.precompute_reference(ref_cache)
            if self.ref_model is not None and not config.noise_term:
                # Every reference value now sits in the rows: free the reference's memory.
                self.ref_model = None
                self._reference_released = True

    # ------------------------------------------------------------------ reference

    @contextlib.contextmanager
    def reference_model(self):
        """Yield the model that plays the reference, in no-grad mode."""
        with torch.no_grad():
            if self.ref_model is not None:
                yield self.ref_model
                return
            if self._reference_released:
                raise RuntimeError("the reference model was released after precomputing")
            model = self.accelerator.unwrap_model(self.model)
            if hasattr(model, "disable_adapter"):  # PEFT: the base model is the reference
                with model.disable_adapter():
                    yield model
                return
            if self.state.global_step > 0:
                raise RuntimeError("full fine-tuning without a reference copy: after the first "
                                   "step the policy is no longer the reference")
            yield model

    def precompute_reference(self, cache: RefLogpCache) -> None:
        """Fill every row's reference log-probs from the cache, computing the missing ones
        (sharded over processes, gathered, written once by the main process).

        It runs before Trainer wraps the model, on whatever device the weights sit (under FSDP
        they are still whole on each process then); DeepSpeed ZeRO-3, which shards weights at
        load time, is not supported here.
        """
        from accelerate.utils import gather_object

        rows = self.train_dataset.rows
        missing = [i for i, r in enumerate(rows)
                   if r["chosen_key"] not in cache or r["rejected_key"] not in cache]
        acc = self.accelerator
        mine = missing[acc.process_index::acc.num_processes]
        found: dict[str, tuple[float, int]] = {}
        size = self.args.per_device_train_batch_size
        for start in range(0, len(mine), size):
            chunk = [rows[i] for i in mine[start:start + size]]
            b = len(chunk)
            with self.reference_model() as ref:
                batch = _to_device(self.data_collator(chunk), next(ref.parameters()).device)
                k = response_window(batch["response_mask"])
                logits = self._logits(ref, self._inputs(batch, "both"), k)
            self.reference_stats["precomputed_forward_passes"] += 1
            # Sums are stored; `mean` divides by the token count at training time.
            logps, _, mask = response_logps(logits, batch["input_ids"], batch["response_mask"])
            counts = mask.sum(-1)
            for j, row in enumerate(chunk):
                found[row["chosen_key"]] = (logps[j].item(), int(counts[j]))
                found[row["rejected_key"]] = (logps[b + j].item(), int(counts[b + j]))
        if acc.num_processes > 1:
            merged: dict[str, tuple[float, int]] = {}
            for part in gather_object([found]):
                merged.update(part)
            found = merged
        if acc.is_main_process:
            cache.update(found)
        acc.wait_for_everyone()
        self.train_dataset.attach_reference({**cache.entries, **found})
        self.reference_stats.update(processes=acc.num_processes, rows=len(rows),
                                    computed_rows=len(missing),
                                    reused_rows=len(rows) - len(missing),
                                    cache_file=str(cache.path))
        log.info("reference log-probs: %d pairs from the cache, %d computed (%s)",
                 len(rows) - len(missing), len(missing), cache.path)

    # ------------------------------------------------------------------ forward helpers

    def _inputs(self, batch: dict[str, Any], rows: str, vision: dict[str, torch.Tensor]
                | None = None) -> dict[str, Any]:
        """Model inputs for "both" sides ([2B, T], chosen rows first), "chosen" or "rejected"
        ([B, T])."""
        b = batch["input_ids"].shape[0] // 2
        sl = {"both": slice(None), "chosen": slice(0, b), "rejected": slice(b, None)}[rows]
        inputs = {k: v[sl] for k, v in batch.items() if k not in _NON_MODEL_KEYS}
        if vision is None:
            vc, vr = batch["vision_chosen"], batch["vision_rejected"]
            vision = ({k: torch.cat([vc[k], vr[k]]) for k in vc} if rows == "both"
                      else vc if rows == "chosen" else vr)
        inputs.update(vision)
        return inputs

    @staticmethod
    def _logits(model, inputs: dict[str, Any], k: int) -> torch.Tensor:
        """Logits of the last k positions, [N, k, V] (the response window, see logps.py)."""
        return model(**inputs, logits_to_keep=k, use_cache=False).logits

    def _noisy_vision(self, vision: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fresh diffusion noise on the chosen images. The processor's normalised pixel_values
        are mapped back to raw [0, 1] pixels with its image_mean/std, noised there, and
        normalised again (pairs/noise.py), so the noise is at the model's input resolution."""
        if "pixel_values" not in vision:
            raise ValueError("the noise term needs images, but this batch has no pixel_values")
        if self._noise_generator is None:
            self._noise_generator = torch.Generator(device=self.args.device)
            self._noise_generator.manual_seed(self.config.seed * 1000 + 1
                                              + self.accelerator.process_index)
        noisy = dict(vision)
        noisy["pixel_values"] = add_noise_to_normalized(
            vision["pixel_values"], self.image_mean, self.image_std, self.config.noise_step,
            generator=self._noise_generator)
        return noisy

    def noise_negative_logps(self, model, batch: dict[str, Any], policy_chosen_logits:
                             torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """POVID's image-side negative, for the policy (with grad) and the reference.

        The model runs teacher-forced on (noisy image, chosen answer); its argmax at each
        response position is the rejected token, scored by the clean-image logits of the same
        chosen prefix (POVID's `_get_noisy_batch_logps`). The noisy pass needs no grad: argmax
        is flat. The policy's clean chosen logits are reused from the main forward.
        """
        cfg = self.config
        b = batch["input_ids"].shape[0] // 2
        ids, mask = batch["input_ids"][:b], batch["response_mask"][:b]
        noisy = self._inputs(batch, "chosen", self._noisy_vision(batch["vision_chosen"]))
        with torch.no_grad():
            policy_noisy = self._logits(model, noisy, k)  # [B, k, V]
        policy = argmax_logps(policy_chosen_logits, policy_noisy, ids, mask, cfg.average_logps)
        with self.reference_model() as ref:
            ref_clean = self._logits(ref, self._inputs(batch, "chosen"), k)
            self.reference_stats["online_forward_passes"] += 1
            ref_noisy = policy_noisy
            if cfg.noise_ref_mode == "faithful":  # the reference takes its own argmax
                ref_noisy = self._logits(ref, noisy, k)
                self.reference_stats["online_forward_passes"] += 1
            ref_logps = argmax_logps(ref_clean, ref_noisy, ids, mask, cfg.average_logps)
        return policy, ref_logps

    def reference_logps(self, batch: dict[str, Any], k: int) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
        """(ref chosen [B], ref rejected [B]): from the batch when precomputed, else online."""
        if "ref_chosen_logps" in batch:
            chosen, rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
            if self.config.average_logps:
                chosen = chosen / batch["ref_chosen_tokens"].clamp(min=1)
                rejected = rejected / batch["ref_rejected_tokens"].clamp(min=1)
            return chosen, rejected
        with self.reference_model() as ref:
            logits = self._logits(ref, self._inputs(batch, "both"), k)
            self.reference_stats["online_forward_passes"] += 1
        logps, _, _ = response_logps(logits, batch["input_ids"], batch["response_mask"],
                                     self.config.average_logps)
        b = logps.shape[0] // 2
        return logps[:b], logps[b:]

    # ------------------------------------------------------------------ the loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg = self.config
        b = inputs["input_ids"].shape[0] // 2
        k = response_window(inputs["response_mask"])
        if cfg.noise_term and cfg.text_weight == 0:
            # The text term does not count: its rejected side is scored for the logged
            # rewards only, without the graph (a third less work per step than "both").
            chosen_logits = self._logits(model, self._inputs(inputs, "chosen"), k)
            with torch.no_grad():
                rejected_logits = self._logits(model, self._inputs(inputs, "rejected"), k)
            logits = torch.cat([chosen_logits, rejected_logits])  # [2B, k, V]
        else:
            logits = self._logits(model, self._inputs(inputs, "both"), k)  # [2B, k, V]
        logps, per_token, mask = response_logps(logits, inputs["input_ids"],
                                                inputs["response_mask"], cfg.average_logps)
        policy_chosen, policy_rejected = logps[:b], logps[b:]
        ref_chosen, ref_rejected = self.reference_logps(inputs, k)
        text = preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                               beta=cfg.beta, loss_type=cfg.loss_type).mean()
        metrics = {"loss/text": text.detach()}
        loss = text
        if cfg.noise_term:
            policy_noise, ref_noise = self.noise_negative_logps(model, inputs, logits[:b], k)
            noise = preference_loss(policy_chosen, policy_noise, ref_chosen, ref_noise,
                                    beta=cfg.beta, loss_type=cfg.loss_type).mean()
            loss = cfg.text_weight * text + cfg.noise_weight * noise
            metrics["loss/noise"] = noise.detach()
            metrics["rewards/noise"] = implicit_rewards(policy_noise, ref_noise, cfg.beta).mean()
        if cfg.sft_weight > 0:
            nll = sft_nll(per_token[:b], mask[:b])
            loss = loss + cfg.sft_weight * nll
            metrics["loss/sft"] = nll.detach()
        self._record(metrics, policy_chosen, policy_rejected, ref_chosen, ref_rejected)
        return (loss, {"logps": logps.detach()}) if return_outputs else loss

    def _record(self, metrics: dict[str, torch.Tensor], policy_chosen, policy_rejected,
                ref_chosen, ref_rejected) -> None:
        """DPO's usual diagnostics, averaged over processes (one collective per step)."""
        beta = self.config.beta
        chosen = implicit_rewards(policy_chosen, ref_chosen, beta)
        rejected = implicit_rewards(policy_rejected, ref_rejected, beta)
        metrics.update({
            "rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
            "rewards/margins": (chosen - rejected).mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
            "logps/chosen": policy_chosen.detach().mean(),
            "logps/rejected": policy_rejected.detach().mean(),
        })
        names = sorted(metrics)
        values = torch.stack([metrics[n].float().reshape(()) for n in names])
        values = self.accelerator.gather(values[None]).mean(0)
        for n, v in zip(names, values.tolist(), strict=True):
            self._metrics[n].append(v)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs.update({k: sum(v) / len(v) for k, v in self._metrics.items() if v})
        self._metrics.clear()
        super().log(logs, start_time)


def _to_device(obj: Any, device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------- the runs


def build_trainer(cfg: PreferenceRunConfig) -> PreferenceTrainer:
    """Everything up to training: data (checked), pre-flight, model (+ LoRA), reference
    log-probs (from the cache or computed now), the Trainer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainingArguments

    from mmalign.train.sft import _lora_targets, _vision_tower, preflight_lengths

    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "preference_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    pairs = load_pairs(cfg.data, cfg.image_root, cfg.data_format, cfg.limit)
    if not pairs:
        raise ValueError(f"no preference pairs in {cfg.data}")
    processor = AutoProcessor.from_pretrained(cfg.model)
    stats = preflight_lengths(preflight_samples(pairs), processor, cfg.max_length,
                              [root for _, root in pairs])
    log.info("pre-flight: %d pairs, longest %d tokens, %d would lose response text",
             len(pairs), stats["longest"], stats["truncated_records"])
    dataset = PreferenceDataset.from_pairs(pairs, cfg.max_length)

    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.float32)
    ref_model = None
    if cfg.ref_model:
        ref_model = AutoModelForImageTextToText.from_pretrained(cfg.ref_model,
                                                                dtype=torch.float32)
    elif not cfg.lora and (cfg.noise_term or not cfg.precompute_reference):
        # Full fine-tuning: a frozen copy whenever the reference runs during training.
        ref_model = copy.deepcopy(model)
    for m in (model, ref_model):
        if m is not None and cfg.disable_dropout:
            _disable_dropout(m)
    cache = None
    if cfg.precompute_reference:
        fingerprint = model_fingerprint(ref_model if ref_model is not None else model, processor)
        cache = RefLogpCache(cfg.ref_cache_dir or default_ref_cache_dir(), fingerprint)
    if not cfg.lora:
        # after the reference copy and fingerprint, which are of the starting model
        load_checkpoint_weights(model, resume_point(out, cfg.resume))  # resume.py: why
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        # disable_dropout covers LoRA's dropout too (as TRL does): with p = 0 PEFT puts an
        # identity in its place, which also saves a copy of every adapted layer's input.
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0 if cfg.disable_dropout else cfg.lora_dropout,
            target_modules=_lora_targets(model, cfg.lora_target_modules),
            task_type="CAUSAL_LM"))
        if cfg.activation_checkpointing:
            model.enable_input_require_grads()
    elif cfg.freeze_vision_tower:
        _vision_tower(model).requires_grad_(False)

    args = TrainingArguments(
        output_dir=str(out),
        **{name: getattr(cfg, name) for name in _SHARED_WITH_TRAINING_ARGS},
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        activation_checkpointing=cfg.activation_checkpointing,
        remove_unused_columns=False,  # our collator reads images/prompt/... columns
        # Under DDP every trainable parameter gets a gradient unless the vision tower is
        # trained in full (CLIP's post_layernorm is then unused: LLaVA reads an earlier layer).
        ddp_find_unused_parameters=not cfg.lora and not cfg.freeze_vision_tower,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
    return PreferenceTrainer(model=model, args=args, config=cfg, train_dataset=dataset,
                             processor=processor, ref_model=ref_model, ref_cache=cache)


def train_preference(cfg: PreferenceRunConfig) -> Path:
    """Run DPO (with the optional noise and SFT terms); save the final model + processor to
    `cfg.output_dir/final` (LoRA merged into the weights) and return that folder. Resumes
    from the newest checkpoint in `output_dir` when `cfg.resume`."""
    trainer = build_trainer(cfg)
    out = Path(cfg.output_dir)
    last = resume_point(out, cfg.resume)
    if last:
        log.info("resuming from %s", last)
    # build_trainer restored a full checkpoint's weights already; LoRA's go through Trainer
    train_or_finish(trainer, last, cfg.max_steps, weights_loaded=not cfg.lora)

    final = out / "final"
    if trainer.is_world_process_zero():
        save_merged(trainer.model, trainer.processing_class, final)
        (final / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        (out / "reference.json").write_text(json.dumps(trainer.reference_stats, indent=1))
    trainer.accelerator.wait_for_everyone()
    return final


def save_merged(model, processor, folder: Path) -> Path:
    """Save a plain HF model folder: LoRA merged into the weights (PEFT `merge_and_unload`)
    and the processor beside it, so every HF/TRL/PEFT tool loads it unchanged."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    # A fast tokenizer keeps truncation/padding state set while collating; saved, it would
    # silently truncate wherever the model is used next (as in sft.py).
    backend = getattr(getattr(processor, "tokenizer", processor), "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    processor.save_pretrained(folder)
    return folder


def train_povid(cfg: PreferenceRunConfig) -> Path:
    """POVID's two stages as one run (Zhou et al. 2024, section 3):

    1. `OUT/stage1`: plain DPO on the text negatives (hallucination-injected answers), then the
       LoRA is merged into the weights (`OUT/stage1/final`, a full model folder + processor);
    2. `OUT/stage2`: from the merged model, text_weight * DPO(text negative) + noise_weight *
       DPO(noise negative). Its reference is the merged stage-1 model.

    Each stage resumes from its own checkpoints; a finished stage 1 is not rerun.
    """
    out = Path(cfg.output_dir)
    stage1_final = out / "stage1" / "final"
    if (stage1_final / "train_log.json").exists():
        log.info("stage 1 already done: %s", stage1_final)
    else:
        stage1_final = train_preference(replace(cfg, output_dir=str(out / "stage1"),
                                                noise_term=False))
    final = train_preference(replace(cfg, model=str(stage1_final),
                                     output_dir=str(out / "stage2"), noise_term=True))
    from accelerate import PartialState

    if PartialState().is_main_process:
        (out / "povid.json").write_text(json.dumps(
            {"stage1": str(stage1_final), "stage2": str(final), "config": asdict(cfg)},
            indent=2) + "\n")
    return final


def _disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0

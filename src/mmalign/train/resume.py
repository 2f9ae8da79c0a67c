"""Resuming full fine-tuning from an HF Trainer checkpoint: the weights, which Trainer drops.

transformers 5 saves a LLaVA checkpoint with `save_pretrained`, which writes the on-disk key
layout (`language_model.model.layers...`), but `Trainer._load_from_checkpoint` reads it back
with `model.load_state_dict(..., strict=False)` against the in-memory layout
(`model.language_model.layers...`): no key matches, nothing is loaded, and a resumed run
silently continues from the starting weights with the restored optimiser and step count
(seen here: a finished 250-step SFT run, rerun, saved the base model as its final). We load
the checkpoint's weights ourselves through `from_pretrained`, which converts the keys, before
Trainer resumes; its own load then matches nothing and changes nothing. LoRA checkpoints
(adapter files only) are left to Trainer/PEFT, which load them by their own keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def resume_point(output_dir: str | Path, resume: bool = True) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (HF's own finder) when `resume`,
    else None: where every trainer of ours picks up an interrupted run."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if resume and Path(output_dir).is_dir() else None


def load_checkpoint_weights(model, checkpoint: str | Path | None) -> bool:
    """Copy the full weights saved in `checkpoint` into `model` (strictly: every key must
    match); return False, changing nothing, when there is no checkpoint or it holds only an
    adapter."""
    if checkpoint is None:
        return False
    folder = Path(checkpoint)
    if not any(folder.glob("model*.safetensors")) and not any(folder.glob("pytorch_model*")):
        return False
    saved = type(model).from_pretrained(folder, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict(), strict=True)
    log.info("weights restored from %s", folder)
    return True


def train_or_finish(trainer, checkpoint: str | None, max_steps: int, weights_loaded: bool
                    ) -> None:
    """`trainer.train(resume_from_checkpoint=checkpoint)`, except for a run cut after its last
    checkpoint but before its final save: Trainer resumed at global_step == max_steps in the
    middle of an epoch trains one more step (seen with transformers 5: a 2-step run ended at
    step 3), so when the weights are already restored the saved state is taken as it is."""
    if checkpoint is not None and max_steps > 0 and weights_loaded:
        from transformers import TrainerState

        state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        if state.global_step >= max_steps:
            log.info("%s is the last step (%d); nothing left to train", checkpoint, max_steps)
            state.log_history.append({"step": state.global_step, "epoch": state.epoch,
                                      "resumed_at_the_end_from": str(checkpoint)})
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=checkpoint)

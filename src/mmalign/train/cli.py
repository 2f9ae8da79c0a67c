"""`mmalign train ...`: training stages."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

train_app = typer.Typer(no_args_is_help=True)


@train_app.command("sft")
def sft(
    model: str = typer.Option(..., "--model", help="Starting model: folder or hub id."),
    data: list[Path] = typer.Option(..., "--data", help="Corpus file(s), any supported format."),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, logs, final/)."),
    image_root: Path = typer.Option(None, help="Image root (default: each data file's folder)."),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int = typer.Option(-1, help="> 0 overrides --epochs."),
    batch_size: int = typer.Option(32, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(1e-3, "--lr"),
    max_length: int = typer.Option(512),
    lora: bool = typer.Option(False, "--lora", help="LoRA on the language model + projector."),
    lora_r: int = typer.Option(16),
    freeze_vision: bool = typer.Option(False, help="Full fine-tuning with a frozen vision tower."),
    save_steps: int = typer.Option(200),
    report_to: str = typer.Option("none", help="none, tensorboard, wandb (comma-separated)."),
    limit: int = typer.Option(None, help="Train on the first N records only."),
    resume: bool = typer.Option(True, help="Continue from the newest checkpoint in --out."),
    seed: int = typer.Option(0),
) -> None:
    """Supervised fine-tuning through TRL's SFTTrainer (full or LoRA); resumable."""
    from mmalign.train.sft import SFTRunConfig, train_sft

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = SFTRunConfig(
        model=model, data=[str(p) for p in data], output_dir=str(out),
        image_root=str(image_root) if image_root else None, num_train_epochs=epochs,
        max_steps=max_steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, max_length=max_length,
        lora=lora, lora_r=lora_r, lora_alpha=2 * lora_r, freeze_vision_tower=freeze_vision,
        save_steps=save_steps, report_to=[r.strip() for r in report_to.split(",")],
        limit=limit, resume=resume, seed=seed)
    try:
        final = train_sft(cfg)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"final model: {final}")


# Options shared by `train dpo` and `train povid` (defaults: PreferenceRunConfig's).
_MODEL = typer.Option(..., "--model", help="Starting model (also the reference).")
_DATA = typer.Option(..., "--data", help="Preference file(s): povid, trl, jsonl, parquet, hf.")
_OUT = typer.Option(..., "--out", help="Run folder (checkpoints, logs, final/).")
_IMAGE_ROOT = typer.Option(None, help="Image root (default: each data file's folder).")
_FORMAT = typer.Option(None, "--format", help="Data format (default: detected per file).")


def _run_preference(command: str, **options) -> None:
    """Build the config from a command's options and run it. Every option is the
    PreferenceRunConfig field of the same name, except the few renamed below."""
    from mmalign.train.preference import PreferenceRunConfig, train_povid, train_preference

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data, out, image_root = options.pop("data"), options.pop("out"), options.pop("image_root")
    report_to = options.pop("report_to")
    lr, epochs, batch_size = options.pop("lr"), options.pop("epochs"), options.pop("batch_size")
    grad_accum, ref_cache = options.pop("grad_accum"), options.pop("ref_cache")
    try:
        cfg = PreferenceRunConfig(
            data=[str(p) for p in data], output_dir=str(out),
            image_root=str(image_root) if image_root else None, learning_rate=lr,
            num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum,
            ref_cache_dir=str(ref_cache) if ref_cache else None,
            report_to=[r.strip() for r in report_to.split(",")],
            lora_alpha=2 * options["lora_r"], **options)
        final = (train_povid if command == "povid" else train_preference)(cfg)
    except ValueError as e:  # bad records (RecordError), bad files, bad settings
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"final model: {final}")


@train_app.command("dpo")
def dpo(
    model: str = _MODEL,
    data: list[Path] = _DATA,
    out: Path = _OUT,
    image_root: Path = _IMAGE_ROOT,
    data_format: str = _FORMAT,
    loss_type: str = typer.Option("sigmoid", help="sigmoid (DPO) | ipo | hinge."),
    beta: float = typer.Option(0.1),
    logp_reduction: str = typer.Option("sum", help="Response log-probs: sum | mean."),
    sft_weight: float = typer.Option(0.0, help="Weight of an SFT (NLL on chosen) term."),
    epochs: float = typer.Option(3.0, "--epochs"),
    max_steps: int = typer.Option(-1, help="> 0 overrides --epochs."),
    batch_size: int = typer.Option(8, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(1e-7, "--lr"),
    max_length: int = typer.Option(512),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA (LM + projector) or full."),
    lora_r: int = typer.Option(128, help="LoRA rank (alpha = 2 * rank)."),
    freeze_vision_tower: bool = typer.Option(True, help="Full fine-tuning: freeze the vision "
                                                        "tower."),
    precompute_reference: bool = typer.Option(True, help="Cache reference log-probs once."),
    ref_cache: Path = typer.Option(None, help="Reference cache folder (default: "
                                              "$MMALIGN_CACHE/ref_logps or ~/.cache/...)."),
    save_steps: int = typer.Option(200),
    logging_steps: int = typer.Option(10),
    report_to: str = typer.Option("none", help="none, tensorboard, wandb (comma-separated)."),
    limit: int = typer.Option(None, help="Train on the first N pairs only."),
    resume: bool = typer.Option(True, help="Continue from the newest checkpoint in --out."),
    seed: int = typer.Option(0),
) -> None:
    """DPO on preference pairs with our trainer (cached reference log-probs); resumable."""
    _run_preference("dpo", **locals())  # the options above, by name


@train_app.command("povid")
def povid(
    model: str = _MODEL,
    data: list[Path] = _DATA,
    out: Path = _OUT,
    image_root: Path = _IMAGE_ROOT,
    data_format: str = _FORMAT,
    text_weight: float = typer.Option(0.5, help="Stage 2: weight of DPO on text negatives."),
    noise_weight: float = typer.Option(0.5, help="Stage 2: weight of DPO on noise negatives."),
    noise_step: int = typer.Option(500, help="Diffusion step of the image noise (of 1000)."),
    noise_ref_mode: str = typer.Option("faithful", help="faithful (reference's own argmax, "
                                                        "as POVID's code) | shared."),
    loss_type: str = typer.Option("sigmoid", help="sigmoid (DPO) | ipo | hinge."),
    beta: float = typer.Option(0.1),
    logp_reduction: str = typer.Option("sum", help="Response log-probs: sum | mean."),
    epochs: float = typer.Option(3.0, "--epochs", help="Per stage."),
    max_steps: int = typer.Option(-1, help="Per stage; > 0 overrides --epochs."),
    batch_size: int = typer.Option(8, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(1e-7, "--lr"),
    max_length: int = typer.Option(512),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA (merged after each stage)."),
    lora_r: int = typer.Option(128, help="LoRA rank (alpha = 2 * rank)."),
    ref_cache: Path = typer.Option(None, help="Reference cache folder."),
    save_steps: int = typer.Option(200),
    logging_steps: int = typer.Option(10),
    report_to: str = typer.Option("none", help="none, tensorboard, wandb (comma-separated)."),
    limit: int = typer.Option(None, help="Train on the first N pairs only."),
    resume: bool = typer.Option(True, help="Resume each stage; a finished stage 1 is kept."),
    seed: int = typer.Option(0),
) -> None:
    """POVID: stage 1 DPO on text negatives, LoRA merged, stage 2 text + noised-image
    negatives from the merged model (OUT/stage1/final, OUT/stage2/final)."""
    _run_preference("povid", **locals())  # the options above, by name

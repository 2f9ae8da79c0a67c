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

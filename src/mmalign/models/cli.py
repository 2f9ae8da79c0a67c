"""`mmalign model ...`: build the embedded default model."""

from __future__ import annotations

from pathlib import Path

import typer

model_app = typer.Typer(no_args_is_help=True)


@model_app.command("tiny")
def tiny(
    out: Path = typer.Option(..., "--out", help="Folder for model, tokenizer and processor."),
    image_size: int = typer.Option(64, help="Image side the vision tower expects."),
    text_layers: int = typer.Option(4), text_hidden: int = typer.Option(192),
    vision_layers: int = typer.Option(3), vision_hidden: int = typer.Option(128),
    vocab_size: int = typer.Option(1024), seed: int = typer.Option(0),
    arch: str = typer.Option("llava", help="llava (default) or idefics3 (SmolVLM-style)."),
) -> None:
    """Build the tiny LLaVA (random weights) in standard HF format, offline."""
    from mmalign.models.tiny import TinyConfig, build_tiny

    cfg = TinyConfig(image_size=image_size, text_layers=text_layers, text_hidden=text_hidden,
                     vision_layers=vision_layers, vision_hidden=vision_hidden,
                     vocab_size=vocab_size, seed=seed, arch=arch)
    build_tiny(out, cfg)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    typer.echo(f"tiny VLM written to {out} ({size / 1e6:.1f} MB; {cfg.image_tokens} image "
               f"tokens per image)")


@model_app.command("base")
def base(
    world: Path = typer.Option(..., "--world", help="World folder (uses its clean.json)."),
    out: Path = typer.Option(..., "--out", help="Build folder; the model lands in OUT/model."),
    vision_steps: int = typer.Option(1000, help="Stage 1: vision tower on scene graphs."),
    caption_steps: int = typer.Option(500, help="Stage 2: captions only (0 skips it)."),
    grounding_steps: int = typer.Option(
        1000, help="Stage 3: the grounding set (existence + helper tasks; 0 skips it)."),
    attribute_steps: int = typer.Option(
        0, help="Stage 4: the attribute set (colour and count, decorrelated; 0 skips it and "
                "leaves it out of stage 5; session 12 built with 1200)."),
    sets_in_mix: bool = typer.Option(
        True, "--sets-in-mix/--clean-only-mix",
        help="Stage 5 trains on the grounding and attribute sets as well as the clean set."),
    sft_steps: int = typer.Option(1500, help="Stage 5: the whole clean set."),
    freeze_vision: bool = typer.Option(
        True, "--freeze-vision/--train-vision",
        help="Keep the pretrained vision tower frozen in stages 2-5 (LLaVA-1.5 does)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    limit: int = typer.Option(None, help="Stage 5 on the first N clean records only."),
    seed: int = typer.Option(0),
) -> None:
    """Train the tiny base model from scratch on a world (resumable; skips finished stages)."""
    import logging

    from mmalign.models.base import BaseConfig, build_base

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = BaseConfig(seed=seed, vision_steps=vision_steps, caption_steps=caption_steps,
                     grounding_steps=grounding_steps, attribute_steps=attribute_steps,
                     sets_in_mix=sets_in_mix, sft_steps=sft_steps,
                     freeze_vision_tower=freeze_vision, batch_size=batch_size, lr=lr,
                     limit=limit)
    try:
        final = build_base(world, out, cfg)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"base model: {final}")


@model_app.command("vision")
def vision(
    model: str = typer.Option(..., "--model", help="LLaVA-style model folder (e.g. the tiny)."),
    world: Path = typer.Option(..., "--world", help="World whose bench scenes are excluded."),
    out: Path = typer.Option(..., "--out", help="Folder for the model with the trained tower."),
    steps: int = typer.Option(1000), batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"), seed: int = typer.Option(0),
) -> None:
    """Pretrain a vision tower on scene graphs of freshly rendered world scenes."""
    import logging

    from mmalign.models.vision_pretrain import VisionPretrainConfig, pretrain_vision

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        pretrain_vision(VisionPretrainConfig(model=model, world=str(world), output_dir=str(out),
                                             steps=steps, batch_size=batch_size, lr=lr,
                                             seed=seed))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"model with pretrained vision tower: {out}")

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

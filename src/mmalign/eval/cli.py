"""`mmalign eval MODEL ...` and `mmalign report ...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def eval_command(
    model: str = typer.Argument(..., help="Model folder or hub id."),
    world: Path = typer.Option(..., "--world", help="World folder with bench/ files."),
    out: Path = typer.Option(..., "--out", help="Folder for predictions and metrics.json."),
    bench: str = typer.Option("pope,vqa,mc,chair", "--bench", help="Comma-separated tasks."),
    limit: int = typer.Option(None, help="Evaluate on the first N benchmark images only."),
    batch_size: int = typer.Option(16, "--batch-size"),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
) -> None:
    """Evaluate a model on the world's benchmarks; resumes an interrupted run."""
    from mmalign.backends.hf import HFGenerator
    from mmalign.eval.run import evaluate
    from mmalign.eval.tasks import UnknownTaskError, get_task
    from mmalign.report.html import format_table

    names = [b.strip() for b in bench.split(",") if b.strip()]
    try:
        for n in names:
            get_task(n)  # refuse a misspelt task before loading anything
    except UnknownTaskError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    gen = HFGenerator.from_pretrained(model, batch_size=batch_size, device=device)
    result = evaluate(gen, world, out, names, limit=limit, batch_size=batch_size)
    typer.echo(format_table({model: result}))
    typer.echo(f"metrics: {out / 'metrics.json'}")


def report_command(
    runs: list[str] = typer.Argument(..., help="NAME=EVAL_DIR pairs (eval output folders)."),
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
    world: Path = typer.Option(None, "--world", help="World folder, for the image gallery."),
) -> None:
    """One HTML page comparing evaluated runs: tables, bar charts, a gallery."""
    from mmalign.report.html import format_table, gallery_from_predictions, write_report

    dirs = {}
    for item in runs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        dirs[name] = Path(path)
    results = {n: json.loads((d / "metrics.json").read_text()) for n, d in dirs.items()}
    gallery = gallery_from_predictions(world, dirs) if world else None
    write_report(results, out, gallery)
    typer.echo(format_table(results))
    typer.echo(f"report: {out}")

"""`mmalign run RECIPE`: run a recipe's stages into a run folder, skipping what is done."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer


def run_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (see recipes/)."),
    overrides: list[str] = typer.Argument(
        None, help="key.sub=value overrides (values read as YAML); they win over the file."),
    run_dir: Path = typer.Option(
        None, "--run-dir", help="Run folder (default: the recipe's run_dir, else runs/NAME)."),
    only: list[str] = typer.Option(
        None, "--only", help="Run only this stage (repeatable); the stages it reads must be done."),
    force: list[str] = typer.Option(
        None, "--force", help="Re-run this stage from a clean folder (repeatable); the stages "
                              "after it follow."),
) -> None:
    """Run a recipe (world, base, sft, eval, report, ...); done stages are skipped, an
    interrupted one resumes."""
    from mmalign.config import RecipeError, load_recipe
    from mmalign.pipeline import StageError, run_pipeline
    from mmalign.report.html import format_table

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        r = load_recipe(recipe, overrides or [])
        out = Path(run_dir or r.run_dir or Path("runs") / r.name)
        typer.echo(f"recipe {r.name} ({recipe}) -> {out}")
        t0 = time.monotonic()
        runs = run_pipeline(r, out, only=_names(only), force=_names(force), log=typer.echo)
    except (RecipeError, StageError, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(2) from None

    ran = [s for s in runs if s.action == "ran"]
    typer.echo(f"\n{len(ran)} stage(s) ran, {sum(s.action == 'skipped' for s in runs)} "
               f"skipped, in {time.monotonic() - t0:.1f}s")
    for s in runs:
        seconds = f"{s.seconds:.1f}s" if s.action == "ran" else ""
        typer.echo(f"  {s.name:<10} {s.action:<12} {seconds}".rstrip())
    results = out / "report" / "results.json"
    if "report" in r.stages and results.is_file():
        typer.echo("\n" + format_table(json.loads(results.read_text())))
        typer.echo(f"\nreport: {out / 'report' / 'index.html'}")


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]

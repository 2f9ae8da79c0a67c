"""The `mmalign` command line: one Typer app, one sub-app per stage."""

from __future__ import annotations

import typer

from mmalign import __version__

app = typer.Typer(
    name="mmalign",
    help="Align vision-language models with curated and preference data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


def _register_subapps() -> None:
    # Sub-apps live beside the stage they drive, so each stage's options sit with its code.
    from mmalign.backends.cli import judge_command, serve_command
    from mmalign.curate.cli import curate_app
    from mmalign.eval.cli import eval_command, report_command
    from mmalign.io.cli import data_app
    from mmalign.models.cli import model_app
    from mmalign.pairs.cli import pairs_app
    from mmalign.pairs.rated_cli import rated_command, sample_command
    from mmalign.run_cli import run_command
    from mmalign.train.cli import train_app
    from mmalign.world.cli import world_app

    app.add_typer(data_app, name="data", help="Convert and inspect corpora and preference data.")
    app.add_typer(world_app, name="world", help="The synthetic visual world (embedded default).")
    app.add_typer(model_app, name="model", help="Build the embedded tiny model.")
    pairs_app.command("sample")(sample_command)
    pairs_app.command("rated")(rated_command)
    app.add_typer(pairs_app, name="pairs",
                  help="Preference pairs: hallucination injection, sampling, rated pairs.")
    app.add_typer(curate_app, name="curate",
                  help="Align2LLaVA curation: reward models, scoring, selection, rewriting.")
    app.add_typer(train_app, name="train", help="Training stages (SFT; preference trainers).")
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    app.command("run")(run_command)
    app.command("judge")(judge_command)
    app.command("serve")(serve_command)


_register_subapps()

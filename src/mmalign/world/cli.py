"""`mmalign world ...`: build the synthetic visual world."""

from __future__ import annotations

from pathlib import Path

import typer

from mmalign.world.corpus import DEFAULT_DEFECT_RATES

world_app = typer.Typer(no_args_is_help=True)


def _parse_rates(items: list[str]) -> dict[str, float]:
    rates = dict(DEFAULT_DEFECT_RATES)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected TYPE=RATE, got {item!r}")
        if name == "all":
            rates = {k: float(value) * v / sum(DEFAULT_DEFECT_RATES.values())
                     for k, v in DEFAULT_DEFECT_RATES.items()}
            continue
        try:
            rates[name] = float(value)
        except ValueError as e:
            raise typer.BadParameter(f"rate for {name!r} is not a number: {value!r}") from e
    return rates


@world_app.command("make")
def make(
    out: Path = typer.Option(..., "--out", help="Folder to write the world into."),
    images: int = typer.Option(4000, "--images", help="Images behind the instruction corpus."),
    pretrain_images: int = typer.Option(8000, help="Images of the clean pretraining set."),
    annotation_images: int = typer.Option(1000, help="Images with oracle annotations."),
    bench_images: int = typer.Option(300, help="Held-out benchmark images."),
    seed: int = typer.Option(0, "--seed"),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    defect_rate: list[str] = typer.Option(
        [], "--defect-rate",
        help="TYPE=RATE, repeatable; 'all=R' scales every default rate to a total of R. "
             f"Types: {', '.join(DEFAULT_DEFECT_RATES)}."),
    annotation_k: int = typer.Option(4, help="Candidates per annotated image/question."),
    annotator_noise: float = typer.Option(0.1, help="Std of the oracle annotator's noise."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if OUT matches."),
) -> None:
    """Render scenes and write the clean set, corpus (+ truth), annotations and benchmarks."""
    from mmalign.world.make import WorldConfig, make_world

    try:
        cfg = WorldConfig(seed=seed, image_size=image_size, pretrain_images=pretrain_images,
                          corpus_images=images, annotation_images=annotation_images,
                          bench_images=bench_images, defect_rates=_parse_rates(defect_rate),
                          annotation_k=annotation_k, annotator_noise=annotator_noise)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    m = make_world(out, cfg, force=force, log=typer.echo)
    c = m["counts"]
    typer.echo(f"\nWrote {out}/")
    rows = [
        ("images/", ", ".join(f"{k} {v}" for k, v in c["images"].items())),
        ("clean.json", f"{c['clean_records']} house-style records (pretraining)"),
        ("corpus.json", f"{c['corpus_records']} records "
                        + ", ".join(f"{k} {v}" for k, v in c["corpus_by_category"].items())
                        + f"; {m['defective_fraction']:.1%} defective"),
        ("corpus_clean.json", f"{c['corpus_records']} records, defect-free counterpart"),
        ("truth/corpus_defects.jsonl", "defect labels (experiments only; curation never reads)"),
        ("annotations/questions.jsonl", f"{c['annotation_question_sets']} images x K scored "
                                        "candidate question sets"),
        ("annotations/answers.jsonl", f"{c['annotation_answer_groups']} questions x K scored "
                                      "candidate answers"),
        *[(f"bench/{k}.jsonl", f"{v} items") for k, v in c["bench"].items()],
        ("scenes.jsonl, stats.json, manifest.json", "scene graphs, shape statistics, manifest"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, what in rows:
        typer.echo(f"  {name:<{width}}  {what}")
    typer.echo("  realised defect rates: " + ", ".join(
        f"{k} {v:.3f}" for k, v in m["realised_defect_rates"].items()))

"""`mmalign pairs sample ...` and `mmalign pairs rated ...` (plain functions, mounted by the
`pairs` sub-app): MM-DPO's sample -> judge (`mmalign judge`) -> pairs chain."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def sample_command(
    source: Path = typer.Argument(..., help="Samples (any supported format) or a JSONL of "
                                            "prompt rows {id, image, question, reference}."),
    out: Path = typer.Option(..., "--out", help="Sampled groups, JSONL (appended; resumable)."),
    model: str = typer.Option(..., "--model", help="Model folder/hub id (hf) or endpoint "
                                                   "model name (openai)."),
    backend: str = typer.Option("hf", "--backend", help="hf or openai."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env"),
    cache: Path = typer.Option(None, "--cache", help="Completion cache (openai; default "
                                                     "OUT.cache.sqlite)."),
    fmt: str = typer.Option(None, "--from", help="Input format (default: detected)."),
    image_root: Path = typer.Option(None, help="Image root (default: the input's folder)."),
    k: int = typer.Option(4, "--k", help="Answers per (image, question)."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(0.9, "--top-p"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size", help="Requests per generate call."),
    concurrency: int = typer.Option(4, help="Parallel requests (openai)."),
    limit: int = typer.Option(None, help="Sample for the first N items only."),
    strict: bool = typer.Option(False, help="Stop at the first malformed record instead of "
                                            "writing it to OUT.rejects.jsonl."),
    device: str = typer.Option(None, help="cpu, cuda, ... (hf)."),
) -> None:
    """Draw K answers per (image, question) from a model; resumable."""
    from mmalign.backends.cli import make_generator
    from mmalign.backends.judge import ResumeMismatchError
    from mmalign.pairs.sample import SampleConfig, sample_answers
    from mmalign.records import RecordError

    try:
        cfg = SampleConfig(k=k, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if backend == "openai" and cache is None:
        cache = out.with_name(out.name + ".cache.sqlite")
    gen = make_generator(backend, model, base_url=base_url, api_key_env=api_key_env,
                         cache=cache, device=device, batch_size=batch_size,
                         concurrency=concurrency)
    try:
        counts = sample_answers(gen, source, out, cfg, fmt=fmt, image_root=image_root,
                                limit=limit, strict=strict)
    except (ResumeMismatchError, RecordError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(counts, indent=2))


def rated_command(
    ratings: Path = typer.Argument(..., help="Judged groups (`mmalign judge` output)."),
    out: Path = typer.Option(..., "--out", help="Preference pairs file."),
    fmt: str = typer.Option("jsonl", "--to", help="Pair format: jsonl, trl, povid, parquet, "
                                                  "hf."),
    quality: str = typer.Option("helpfulness,correctness,coherence", "--quality",
                                help="Attributes summed into quality."),
    min_gap: float = typer.Option(2.0, "--min-gap", help="Skip groups whose best and worst "
                                                         "quality differ by less."),
    reject_margin: float = typer.Option(2.0, "--reject-margin", help="Rejected answers "
                                        "score at most best - margin."),
    seed: int = typer.Option(0, "--seed"),
    best_of_k_out: Path = typer.Option(None, "--best-of-k", help="Also write each group's "
                                       "best answer as SFT samples (rejection sampling)."),
) -> None:
    """Preference pairs from rated answers (MM-DPO's rule); prints the counts."""
    from mmalign.io.formats import PAIR_FORMATS, write_records
    from mmalign.io.journal import read_journal
    from mmalign.pairs.rated import PairRule, best_of_k, rated_pairs
    from mmalign.records import RecordError

    if fmt not in PAIR_FORMATS:
        raise typer.BadParameter(f"{fmt!r} cannot hold pairs; use one of "
                                 f"{', '.join(PAIR_FORMATS)}", param_hint="--to")
    try:
        rule = PairRule(quality_attributes=tuple(a.strip() for a in quality.split(",")
                                                 if a.strip()),
                        min_gap=min_gap, reject_margin=reject_margin)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    rows = read_journal(ratings)
    try:
        pairs, stats = rated_pairs(rows, rule, seed=seed, where=str(ratings))
        write_records(out, pairs, fmt)
        report = stats.to_dict()
        if best_of_k_out is not None:
            best = best_of_k(rows, rule, seed=seed, where=str(ratings))
            write_records(best_of_k_out, best, "jsonl")
            report["best_of_k"] = len(best)
    except RecordError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report, indent=2))

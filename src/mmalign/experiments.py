"""Shared pieces of the miniature experiments in bench/ (defect gap, Align2LLaVA, POVID,
MM-DPO): evaluate a model into its run folder, read headline metrics, and summarise several
seeds per variant as one markdown table.

Each experiment is a grid of (variant, seed) runs; a run's folder holds its training output
and `eval/metrics.json`, so a rerun after an interruption only does what is missing.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmalign.backends.base import Generator

Column = tuple[str, str]  # (bench, headline metric name), e.g. ("pope", "F1 random")

HALLUCINATION_COLUMNS: list[Column] = [
    ("pope", "F1 random"), ("pope", "F1 popular"), ("pope", "F1 adversarial"),
    ("chair", "CHAIR_i"), ("chair", "CHAIR_s"), ("chair", "recall"), ("vqa", "accuracy")]
# Lower is better for these; every other column is higher-is-better.
LOWER_IS_BETTER = {("chair", "CHAIR_i"), ("chair", "CHAIR_s")}


def headline(metrics: Mapping[str, Any]) -> dict[Column, float]:
    """metrics.json (as `mmalign.eval.run.evaluate` returns it) -> {(bench, name): value}."""
    from mmalign.report.html import headline_metrics

    out: dict[Column, float] = {}
    for bench, m in metrics["benches"].items():
        out |= {(bench, k): v for k, v in headline_metrics(bench, m).items()}
    return out


def evaluate_model(model: str | Path, world: str | Path, out: str | Path,
                   benches: Sequence[str], limit: int | None = None,
                   batch_size: int = 32, device: str = "cpu",
                   wrap: Callable[[Generator], Generator] | None = None,
                   log: Callable[[str], Any] | None = None) -> dict[Column, float]:
    """Evaluate a saved model on the world's benchmarks into `out` and return its headlines.

    Resumable: when out/metrics.json already holds every benchmark at the same image limit,
    nothing is rerun; otherwise `mmalign.eval.run.evaluate` reuses the predictions it has and
    makes the missing ones (a changed limit recomputes the metrics over the new image set).
    `log` gets one line with the time taken.

    `wrap` turns the model's generator into the one evaluated (SteerLM's attribute string
    appended to every question, say); give the wrapper its own `name`, since predictions are
    resumed by generator name."""
    import gc
    import time

    from mmalign.backends.hf import HFGenerator
    from mmalign.eval.run import evaluate

    done = Path(out) / "metrics.json"
    if done.is_file():
        metrics = json.loads(done.read_text())
        tasks = metrics.get("tasks", {})
        if all(b in metrics.get("benches", {}) and tasks.get(b, {}).get("limit") == limit
               for b in benches):
            return headline(metrics)
    t0 = time.time()
    gen = HFGenerator.from_pretrained(str(model), batch_size=batch_size, device=device)
    metrics = evaluate(wrap(gen) if wrap is not None else gen, world, out, list(benches),
                       limit=limit, batch_size=batch_size, progress=False)
    del gen
    gc.collect()
    if log is not None:
        log(f"evaluated {model} in {time.time() - t0:.0f} s")
    return headline(metrics)


def show_row(name: str, seed: int | None, row: Mapping[Column, float]) -> None:
    """Print one run's headline numbers as they come in."""
    where = name if seed is None else f"{name} seed {seed}"
    print(f"{where}: " + ", ".join(f"{b} {k} {v:.3f}" for (b, k), v in row.items()), flush=True)


def summarise(results: Mapping[str, Sequence[Mapping[Column, float]]],
              columns: Sequence[Column], *, reference: str | None = None) -> str:
    """A markdown table: one row per variant, each cell the mean over seeds with the spread
    (min-max) when there is more than one seed. With `reference`, one more row per other
    variant gives its mean difference to the reference (variant - reference)."""
    head = "| variant | seeds | " + " | ".join(f"{b} {k}" for b, k in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    means: dict[tuple[str, Column], float] = {}
    for name, runs in results.items():
        cells = []
        for col in columns:
            vals = [r[col] for r in runs if col in r]
            means[(name, col)] = statistics.mean(vals) if vals else float("nan")
            spread = f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else ""
            cells.append(f"{means[(name, col)]:.3f}{spread}" if vals else "n/a")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    if reference is not None and reference in results:
        for name in results:
            if name == reference:
                continue
            diff = [means[(name, c)] - means[(reference, c)] for c in columns]
            lines.append(f"| {name} - {reference} | | "
                         + " | ".join(f"{d:+.3f}" for d in diff) + " |")
    return "\n".join(lines)


def seeds_arg(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2], with a clear error for anything else."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seeds: no seeds given")
    return seeds


def write_results(out: Path, name: str, args: Mapping[str, Any],
                  results: Mapping[str, Sequence[Mapping[Column, float]]], table: str) -> None:
    """out/NAME.json (every run's headline numbers and the arguments) and out/NAME.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in args.items()},
         "runs": {n: [{f"{b} {k}": v for (b, k), v in r.items()} for r in rs]
                  for n, rs in results.items()}}, indent=1) + "\n")
    (out / f"{name}.md").write_text(table + "\n")


def load_settings(cls: type, path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """An experiment's recipe file (bench/*.py) typed into dataclass `cls`, with `key=value`
    overrides applied first; strict like pipeline recipes (an unknown key or a wrong type is a
    RecipeError naming the file and the key)."""
    import yaml

    from mmalign.config import RecipeError, apply_overrides, to_dataclass

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return to_dataclass(cls, apply_overrides(raw, list(overrides), str(path)), source=str(path))


def field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's fields that have defaults, with them (as `check_settings` compares)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out))


def check_settings(record: Path, settings: Mapping[str, Any],
                   defaults: Mapping[str, Any] | None = None) -> None:
    """Write `record` with the settings of the run in its folder, or, when it is there
    already, refuse settings that differ: a rerun must not mix two experiments' runs.

    A setting the record lacks is no change when it has its value in `defaults`: a field
    added to the code after the run was made, left at the default, changes nothing it did.
    The record then gains it, so that a later change of it is refused."""
    from mmalign.config import RecipeError

    settings = json.loads(json.dumps(settings))  # as it reads back from the file
    if record.is_file():
        old = json.loads(record.read_text())
        defaults = defaults or {}
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k)
                         and not (k not in old and k in defaults
                                  and settings.get(k) == defaults[k]))
        if changed:
            raise RecipeError(f"{record.parent} was run with other settings ("
                              + "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                                          for k in changed)
                              + "); give another out= or delete that folder")
        if set(settings) - set(old):
            _write_record(record, {**old, **settings})
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_record(record, settings)


def _write_record(record: Path, settings: Mapping[str, Any]) -> None:
    """Whole or not at all (a partial file, then os.replace): the record guards finished work."""
    partial = record.with_suffix(".json.partial")
    partial.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(partial, record)


def repo_path(p: str | Path) -> Path:
    """A recipe's path: as given when it exists (or is absolute), else inside the repository
    checkout (where checkpoints/ lives), else as given."""
    from mmalign.pipeline import repo_root

    here = Path(p)
    root = repo_root()
    if here.is_absolute() or here.exists() or root is None or not (root / here).exists():
        return here
    return root / here


def bench_module(name: str):
    """bench/NAME.py of the source checkout, imported as module `bench_NAME` (the benches are
    scripts, not package modules; tests and notebooks reach their functions through this)."""
    import importlib.util
    import sys

    from mmalign.pipeline import repo_root

    module_name = f"bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    root = repo_root()
    if root is None:
        raise FileNotFoundError(f"bench/{name}.py: the benches live in the source checkout, "
                                "and this mmalign is not running from one")
    spec = importlib.util.spec_from_file_location(module_name, root / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def ensure_world(path: str | Path, seed: int = 0, needed: str = "corpus.json",
                 log: Any = print) -> Path:
    """The experiment's world folder (see `repo_path`), made with the default WorldConfig and
    `seed` when `needed` is missing in it (seed 0 is the world the tiny base was built on)."""
    world = repo_path(path)
    if not (world / needed).is_file():
        from mmalign.world.make import WorldConfig, make_world

        log(f"making the world in {world} (seed {seed})")
        make_world(world, WorldConfig(seed=seed), log=log)
    return world


def mix_files(world: str | Path, specs: Sequence[str], out: str | Path) -> list[str]:
    """The files an SFT set is mixed with, from specs `FILE` (a world file, all of it) or
    `FILE:N` (N of its records drawn at random with seed 0, as LLaVA-1.5 mixes subsets).

    A subset is written once to out/mix/FILE-N.json with its image paths as they were, so the
    run must train with image_root = the world folder; the same spec gives the same records
    in every run.
    """
    import random

    from mmalign.io.formats import read_records, write_records

    world = Path(world)
    files = []
    for spec in specs:
        name, sep, n = spec.rpartition(":")
        if not sep:
            files.append(str(world / spec))
            continue
        if not n.isdigit() or int(n) <= 0:
            raise ValueError(f"mix spec {spec!r}: the part after ':' must be a record count")
        subset = Path(out) / "mix" / f"{Path(name).stem}-{n}.json"
        if not subset.is_file():
            records = list(read_records(world / name, image_root=world))
            if int(n) > len(records):
                raise ValueError(f"mix spec {spec!r}: {world / name} has only {len(records)} "
                                 "records")
            chosen = random.Random(0).sample(records, int(n))
            subset.parent.mkdir(parents=True, exist_ok=True)
            write_records(subset, chosen, "llava")  # atomic: a cut run leaves no half file
        files.append(str(subset))
    return files


def recipe_main(argv: Sequence[str], doc: str, run: Callable[[str, list[str]], str]) -> int:
    """The command line every experiment bench shares: `bench/X.py RECIPE [key=value ...]`.

    `run(recipe, overrides)` runs the experiment and returns its table. Bad settings (or an
    out folder holding another settings' runs) are a RecipeError: printed, exit status 2.
    """
    import logging
    import sys

    from mmalign.config import RecipeError

    if not argv or argv[0] in ("-h", "--help"):
        print(doc)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        table = run(argv[0], list(argv[1:]))
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    return 0

"""`evaluate`: run a Generator over a world's benchmarks, write predictions and metrics.

For each benchmark (an eval task, see `mmalign.eval.tasks`):
  1. read `WORLD/bench/<name>.jsonl`, build one item per model call, keep the first `limit`
     images' items (by image, so POPE stays balanced and MC keeps every rotation);
  2. read the items already answered in `OUT/<name>.jsonl` (resume), check they were made by
     the same model with the same prompts, and generate only the rest, in batches, appending
     each batch to the file and fsyncing it, so a crash loses at most one batch;
  3. rewrite the file atomically in benchmark order (exactly the selected items), and compute
     the metrics from those rows alone, the same way `metrics_from_predictions` does.
Then `OUT/metrics.json` is written atomically.

Prediction row: {id, image, <gold fields of the task>, prompt, output, parse, correct, model}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mmalign import __version__
from mmalign.backends.base import Generator, GenRequest
from mmalign.eval.tasks import EvalTask, Item, get_task
from mmalign.io.atomic import write_json, write_jsonl
from mmalign.io.images import resolve_image
from mmalign.io.journal import append_rows, read_journal
from mmalign.progress import Progress

DEFAULT_BENCHES = ("pope", "vqa", "mc", "chair")


class ResumeMismatchError(ValueError):
    """Existing predictions in the output folder do not belong to this run."""


def evaluate(generator: Generator, world_dir: str | os.PathLike, out_dir: str | os.PathLike,
             benches: Sequence[str] = DEFAULT_BENCHES, *, limit: int | None = None,
             batch_size: int = 16, progress: bool = True) -> dict[str, Any]:
    """Evaluate `generator` on `benches` of the world at `world_dir`; return metrics.json's dict.

    Metrics of benchmarks evaluated earlier into the same `out_dir` (same model and world) are
    kept in metrics.json, so benchmarks can be run one at a time.
    """
    if isinstance(benches, str):
        benches = [benches]
    tasks = [get_task(b) for b in benches]  # unknown names fail before any generation
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    world_dir, out_dir = Path(world_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(generator, "name", type(generator).__name__)

    metrics = _previous_metrics(out_dir / "metrics.json", model, world_dir)
    for task in tasks:
        items = select_images(task.build_items(read_bench(world_dir, task)), limit)
        rows = _predict(generator, model, task, items, world_dir,
                        out_dir / f"{task.name}.jsonl", batch_size, progress)
        metrics["benches"][task.name] = task.metrics(rows)
        metrics["tasks"][task.name] = {"version": task.version, "items": len(rows),
                                       "images": len({r["image"] for r in rows}),
                                       "limit": limit, "predictions": f"{task.name}.jsonl"}
    metrics["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def metrics_from_predictions(bench: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Recompute a benchmark's metrics from its prediction rows alone (outputs are re-parsed)."""
    return get_task(bench).metrics(list(rows))


def load_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a prediction file (an unfinished last line, left by a crash, is ignored)."""
    rows = read_journal(path)
    return rows


def read_bench(world_dir: Path, task: EvalTask) -> list[dict[str, Any]]:
    path = world_dir / task.bench_file
    if not path.exists():
        raise FileNotFoundError(f"{path}: benchmark file of {task.name!r} not found; is "
                                f"{world_dir} a world folder (mmalign world make --out DIR)?")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def select_images(items: list[Item], limit: int | None) -> list[Item]:
    """The items of the first `limit` distinct images, in file order (all when None)."""
    if limit is None:
        return items
    keep: set[str] = set()
    for it in items:
        if len(keep) == limit:
            break
        keep.add(it["image"])
    return [it for it in items if it["image"] in keep]


# ---- generation with resume ---------------------------------------------------------------

def _predict(generator: Generator, model: str, task: EvalTask, items: list[Item],
             world_dir: Path, path: Path, batch_size: int, progress: bool
             ) -> list[dict[str, Any]]:
    done = {r["id"]: r for r in read_journal(path, repair=True)}
    for it in items:
        if it["id"] in done:
            _check_same(done[it["id"]], it, model, path)
    todo = [it for it in items if it["id"] not in done]
    images = {it["image"]: resolve_image(world_dir, it["image"], field="image") for it in todo}

    bar = Progress(f"eval {task.name}", total=len(items), done=len(items) - len(todo),
                   enabled=progress)
    try:
        with open(path, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                requests = [GenRequest.single(images[it["image"]], it["prompt"],
                                              max_new_tokens=it["max_new_tokens"],
                                              meta={"bench": task.name, "id": it["id"]})
                            for it in batch]
                outputs = generator.generate(requests)
                if len(outputs) != len(batch):
                    raise RuntimeError(f"generator {model!r} returned {len(outputs)} texts for "
                                       f"{len(batch)} requests")
                rows = []
                for it, out in zip(batch, outputs, strict=True):
                    if not isinstance(out, str):
                        raise TypeError(f"generator {model!r} returned {type(out).__name__} for "
                                        f"{it['id']!r}; a Generator returns one str per request")
                    rows.append(_row(task, it, out, model))
                    done[it["id"]] = rows[-1]
                append_rows(f, rows)
                bar.update(len(batch))
    finally:
        bar.close()

    # The file ends as exactly the selected items in benchmark order, whatever order a resumed
    # run appended them in, so an interrupted run leaves the same bytes as an uninterrupted one.
    rows = [done[it["id"]] for it in items]
    dropped = len(done) - len(rows)
    if dropped:  # said even without progress: it is work thrown away
        print(f"[eval {task.name}] dropped {dropped} earlier predictions of items outside this "
              f"selection from {path.name}", file=sys.stderr)
    write_jsonl(path, rows)
    return rows


def _row(task: EvalTask, item: Item, output: str, model: str) -> dict[str, Any]:
    gold = {k: v for k, v in item.items() if k not in ("id", "image", "prompt", "max_new_tokens")}
    return {"id": item["id"], "image": item["image"], **gold, "prompt": item["prompt"],
            "output": output, **task.score_output(item, output), "model": model}


def _check_same(row: dict[str, Any], item: Item, model: str, path: Path) -> None:
    if row.get("model") != model:
        raise ResumeMismatchError(
            f"{path} holds predictions of model {row.get('model')!r}, not {model!r}; "
            f"use another output folder (or delete the file) to evaluate this model")
    for key, value in item.items():
        if key != "max_new_tokens" and row.get(key) != value:
            raise ResumeMismatchError(
                f"{path}: prediction {item['id']!r} was made with a different {key} "
                f"({row.get(key)!r}, now {value!r}): a different world or task version; "
                f"use another output folder (or delete the file)")


def _previous_metrics(path: Path, model: str, world_dir: Path) -> dict[str, Any]:
    fresh = {"model": model, "world": str(world_dir), "mmalign_version": __version__,
             "tasks": {}, "benches": {}}
    if not path.exists():
        return fresh
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fresh
    if old.get("model") != model or old.get("world") != str(world_dir):
        return fresh
    return fresh | {"tasks": dict(old.get("tasks", {})), "benches": dict(old.get("benches", {}))}



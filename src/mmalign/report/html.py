"""One self-contained HTML page comparing runs: tables, bar charts and a sample gallery.

Everything is inline (CSS in a <style> block, charts as SVG, images as base64 data URLs), so
the page opens offline, can be mailed as one file, and loads nothing from the network.

`results` maps a model/run name to the metrics dict `mmalign.eval.run.evaluate` returns (or
writes to metrics.json); a bare {bench: metrics} dict is accepted too.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from mmalign.eval.tasks import UnknownTaskError, get_task, task_names
from mmalign.io.atomic import atomic_open
from mmalign.io.images import load_image
from mmalign.report.plots import bar_chart, model_color

THUMB_SIDE = 256  # gallery images larger than this are shrunk before embedding

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; } .desc { color: #666; font-size: 0.9em; }
.scroll { overflow-x: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ddd; padding: 0.6em; width: 300px; font-size: 0.85em; }
.card img { width: 128px; height: auto; image-rendering: pixelated; display: block; }
.q { font-weight: bold; margin: 0.4em 0; white-space: pre-wrap; }
.ans { margin: 0.2em 0; white-space: pre-wrap; } .ref { color: #060; }
.swatch { display: inline-block; width: 9px; height: 9px; margin-right: 4px; }
"""


def benches_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The per-benchmark part of a metrics dict (evaluate's {"benches": ...} or bare)."""
    return dict(metrics["benches"]) if "benches" in metrics else dict(metrics)


def bench_order(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    present: list[str] = []
    for m in results.values():
        present += [b for b in benches_of(m) if b not in present]
    known = [b for b in task_names() if b in present]
    return known + [b for b in present if b not in known]


def table_columns(bench: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    try:
        return get_task(bench).columns(dict(metrics))
    except UnknownTaskError:
        return _numbers(metrics)


def headline_metrics(bench: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    try:
        return get_task(bench).headline(dict(metrics))
    except UnknownTaskError:
        return _numbers(metrics)


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table: one row per run, one column per headline metric of each benchmark."""
    benches = bench_order(results)
    cols: list[tuple[str, str]] = []
    for b in benches:
        for m in results.values():
            if b in benches_of(m):
                cols += [(b, k) for k in headline_metrics(b, benches_of(m)[b])
                         if (b, k) not in cols]
    header = ["run", *[f"{b} {k}" for b, k in cols]]
    lines = [header]
    for name, m in results.items():
        per = {b: headline_metrics(b, v) for b, v in benches_of(m).items()}
        lines.append([name, *[_cell(per.get(b, {}).get(k)) for b, k in cols]])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def write_report(results: Mapping[str, Mapping[str, Any]], out_html: str | os.PathLike,
                 gallery: list[dict[str, Any]] | None = None, *,
                 title: str = "mmalign evaluation") -> Path:
    """Write the page atomically and return its path.

    gallery: [{"image": path, "question": str, "answers": {run: text}, "reference": str?}].
    """
    runs = list(results)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>", _legend(runs)]
    for bench in bench_order(results):
        parts.append(_bench_section(bench, results))
    if gallery:
        parts.append(_gallery(gallery, runs))
    parts.append("<h2>Raw metrics</h2><details><summary>metrics JSON per run</summary><pre>"
                 + escape(json.dumps(dict(results), indent=1, default=str)) + "</pre></details>")
    parts.append("</body></html>\n")
    out = Path(out_html)
    with atomic_open(out) as f:
        f.write("\n".join(parts))
    return out


def gallery_from_predictions(world_dir: str | os.PathLike,
                             runs: Mapping[str, str | os.PathLike], bench: str = "chair",
                             n: int = 8) -> list[dict[str, Any]]:
    """Gallery entries from prediction files: the first `n` items of `bench` in the first run,
    with every run's output for them. `runs` maps run name -> its eval output folder."""
    from mmalign.eval.run import load_predictions

    per_run = {name: {r["id"]: r for r in load_predictions(Path(d) / f"{bench}.jsonl")}
               for name, d in runs.items()}
    first = next(iter(per_run.values()), {})
    entries = []
    for rid, row in list(first.items())[:n]:
        entries.append({"image": str(Path(world_dir) / row["image"]), "question": row["prompt"],
                        "answers": {name: rows[rid]["output"] for name, rows in per_run.items()
                                    if rid in rows},
                        "reference": _reference(row)})
    return entries


# ---- pieces ---------------------------------------------------------------------------------

def _bench_section(bench: str, results: Mapping[str, Mapping[str, Any]]) -> str:
    per_run = {name: benches_of(m)[bench] for name, m in results.items()
               if bench in benches_of(m)}
    try:
        task = get_task(bench)
        desc, lower = task.description, task.lower_is_better
    except UnknownTaskError:
        desc, lower = "", frozenset()
    # Table: rows = runs, columns = the union of the task's columns, in first-seen order.
    rows = {name: table_columns(bench, m) for name, m in per_run.items()}
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{escape(c)}</th>" for c in ["run", *cols])
    body = "".join(
        "<tr>" + f"<td>{_swatch(list(results).index(name))}{escape(name)}</td>"
        + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>"
        for name, r in rows.items())
    # Chart: the headline metrics, one bar per run per metric.
    heads = {name: headline_metrics(bench, m) for name, m in per_run.items()}
    metrics: list[str] = []
    for h in heads.values():
        metrics += [k for k in h if k not in metrics]
    series = {name: [heads[name].get(k) if name in heads else None for k in metrics]
              for name in results}
    chart = bar_chart(bench.upper() if len(bench) <= 5 else bench, metrics, series,
                      lower_is_better=sorted(lower)) if metrics else ""
    return (f'<section id="bench-{escape(bench)}"><h2>{escape(bench)}</h2>'
            f'<p class="desc">{escape(desc)}</p>'
            f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>{chart}</section>')


def _gallery(entries: Iterable[dict[str, Any]], runs: list[str]) -> str:
    cards = []
    for e in entries:
        answers = e.get("answers", {})
        lines = [f'<div class="ans">{_swatch(runs.index(r)) if r in runs else ""}'
                 f'<b>{escape(r)}</b>: {escape(str(a))}</div>' for r, a in answers.items()]
        if e.get("reference"):
            lines.append(f'<div class="ans ref"><b>reference</b>: '
                         f'{escape(str(e["reference"]))}</div>')
        cards.append(f'<div class="card">{_img_tag(e["image"])}'
                     f'<div class="q">{escape(str(e.get("question", "")))}</div>'
                     + "".join(lines) + "</div>")
    return '<h2>Gallery</h2><div class="gallery">' + "".join(cards) + "</div>"


def _img_tag(path: str | os.PathLike) -> str:
    try:
        img = load_image(path)
    except Exception as e:  # a report should still be written when one image is missing
        return f'<div class="desc">[image unavailable: {escape(str(e))}]</div>'
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _legend(runs: list[str]) -> str:
    return "<p>" + " &nbsp; ".join(f"{_swatch(i)}{escape(r)}" for i, r in enumerate(runs)) \
        + "</p>"


def _swatch(i: int) -> str:
    return f'<span class="swatch" style="background:{model_color(i)}"></span>'


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return escape(str(v))


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Top-level numbers of an unregistered benchmark's metrics."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _reference(row: Mapping[str, Any]) -> str:
    if "objects" in row:
        return ", ".join(row["objects"])
    if "options" in row and isinstance(row.get("answer"), int):
        return row["options"][row["answer"]]
    return str(row.get("answer", ""))

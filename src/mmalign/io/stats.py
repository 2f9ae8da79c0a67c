"""What `mmalign data inspect` reports: counts, shapes and length statistics of a corpus.

Lengths are in whitespace-separated words with `<image>` placeholders removed, so they do not
depend on a tokenizer. Percentiles use the nearest-rank method (always an observed value).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from mmalign.io.containers import Raw
from mmalign.records import IMAGE_TOKEN, PreferencePair, RecordError, Sample

MAX_LISTED_REJECTS = 50
MAX_LISTED_IDS = 5
# The contract's own wording for a placeholder/image count mismatch (records._validate_...).
_PLACEHOLDER_MISMATCH = re.compile(r"placeholder\(s\) for \d+ image\(s\)")


def word_count(text: str) -> int:
    return len(text.replace(IMAGE_TOKEN, " ").split())


def length_stats(values: list[int]) -> dict[str, float] | None:
    """mean, median, p95 (nearest rank) and max; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"mean": statistics.fmean(ordered), "median": statistics.median(ordered),
            "p95": p95, "max": ordered[-1]}


def range_stats(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def summarize(items: Iterable[tuple[int, Sample | PreferencePair | RecordError, Raw]]
              ) -> dict[str, Any]:
    """Fold a stream from `iter_records` into the inspect report (a JSON-ready dict)."""
    kinds: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    turns, images = [], []
    questions, answers, chosen, rejected = [], [], [], []
    mismatched: list[str] = []
    n_mismatched = 0
    rejects: list[dict[str, Any]] = []
    n_rejected = 0
    for index, item, _raw in items:
        if isinstance(item, RecordError):
            n_rejected += 1
            if len(rejects) < MAX_LISTED_REJECTS:
                rejects.append(item.to_dict())
            if _PLACEHOLDER_MISMATCH.search(item.reason):
                n_mismatched += 1
                if len(mismatched) < MAX_LISTED_IDS:
                    mismatched.append(item.record_id or f"#{index}")
            continue
        images.append(len(item.images))
        if isinstance(item, Sample):
            kinds["sample"] += 1
            categories[item.category] += 1
            conversation = item.turns
            turns.append(len(item.turns))
        else:
            kinds["pair"] += 1
            origins[item.origin or "(none)"] += 1
            conversation = item.prompt
            turns.append(len(item.prompt) + 1)  # the prompt plus the answer being compared
            chosen.append(word_count(item.chosen))
            rejected.append(word_count(item.rejected))
        questions += [word_count(t.content) for t in conversation if t.role == "user"]
        answers += [word_count(t.content) for t in conversation if t.role == "assistant"]

    report: dict[str, Any] = {
        "records": sum(kinds.values()),
        "samples": kinds["sample"],
        "pairs": kinds["pair"],
        "rejected": n_rejected,
        "categories": dict(sorted(categories.items())),
        "turns_per_record": range_stats(turns),
        "images_per_record": range_stats(images),
        "images_total": sum(images),
        "placeholder_mismatches": {"count": n_mismatched, "ids": mismatched},
        "lengths": {"question": length_stats(questions), "answer": length_stats(answers)},
        "rejects": rejects,
    }
    if kinds["pair"]:
        report["preference"] = {
            "origins": dict(sorted(origins.items())),
            "chosen": length_stats(chosen),
            "rejected": length_stats(rejected),
        }
    return report


def render_table(report: dict[str, Any]) -> str:
    """The human-readable form of `summarize`'s report."""
    lines = []
    if "file" in report:
        lines.append(f"file: {report['file']}  (format: {report.get('format', '?')})")
    lines.append(f"records: {report['records']} valid ({report['samples']} samples, "
                 f"{report['pairs']} pairs), {report['rejected']} rejected")
    if report["categories"]:
        lines.append("categories: " + ", ".join(f"{k} {v}"
                                                for k, v in report["categories"].items()))
    for key, label in (("turns_per_record", "turns per record"),
                       ("images_per_record", "images per record")):
        s = report[key]
        if s:
            lines.append(f"{label}: min {s['min']}, mean {s['mean']:.2f}, max {s['max']}")
    lines.append(f"images total: {report['images_total']}")
    pm = report["placeholder_mismatches"]
    lines.append(f"{IMAGE_TOKEN} placeholders != images: {pm['count']} record(s)"
                 + (f" (e.g. {', '.join(pm['ids'])})" if pm["ids"] else ""))
    rows = [("questions", report["lengths"]["question"]), ("answers", report["lengths"]["answer"])]
    if "preference" in report:
        pref = report["preference"]
        lines.append("origins: " + ", ".join(f"{k} {v}" for k, v in pref["origins"].items()))
        rows += [("chosen", pref["chosen"]), ("rejected", pref["rejected"])]
    lines.append(f"{'lengths (words)':<16}{'mean':>9}{'median':>9}{'p95':>7}{'max':>7}")
    for name, s in rows:
        if s is None:
            lines.append(f"  {name:<14}{'-':>9}{'-':>9}{'-':>7}{'-':>7}")
        else:
            lines.append(f"  {name:<14}{s['mean']:>9.2f}{s['median']:>9g}{s['p95']:>7}"
                         f"{s['max']:>7}")
    if report["rejects"]:
        more = report["rejected"] - len(report["rejects"])
        lines.append("rejected records:")
        lines += [f"  {_located(r)}" for r in report["rejects"]]
        if more > 0:
            lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def _located(reject: dict[str, Any]) -> str:
    """A listed reject in the same words as the error messages (file left out: it is above)."""
    return str(RecordError(reject["reason"], field=reject["field"], index=reject["index"],
                           record_id=reject["id"]))

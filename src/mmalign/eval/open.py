"""Open-ended answers rated by the oracle judge (DESIGN 6.3 and 8): MM-DPO's instruction
following, measured the way its training data was rated.

The world's `bench/openended.jsonl` holds one machine-style question per image (conversation,
detail or reasoning, in turn), a correct reference answer and the image's scene graph. The
model answers the bare question (no format instruction: how long to answer is part of the
skill); `mmalign.backends.oracle.rate_answer` rates the answer 0-4 on the five attributes
against the scene graph and the reference, without noise. Per benchmark:

  <attribute> = mean over items of the attribute's rating, for each of helpfulness,
                correctness, coherence, complexity, verbosity
  quality     = mean over items of helpfulness + correctness + coherence (0-12; the pair
                rule's quality, `mmalign.pairs.rated.QUALITY_ATTRIBUTES`)
  correct_rate = share of answers with no false claim (correctness 4)
and `quality` per category. Prediction rows carry the scene and reference, so the metrics are
recomputed from the rows alone (each output rated again), as every task's are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mmalign.backends.oracle import RULES_HASH, rate_answer
from mmalign.pairs.rated import QUALITY_ATTRIBUTES
from mmalign.records import RATING_ATTRIBUTES
from mmalign.world.scene import Scene

VERSION = 1
MAX_NEW_TOKENS = 96  # the world's longest reference (a detail description) is 85 tokens


def rate_output(item: dict[str, Any], output: str) -> dict[str, int]:
    """The oracle's five ratings of one answer to one open-ended item."""
    scene = Scene.from_dict(item["scene"])
    return rate_answer(output, scene, question=item["question"],
                       reference=item["reference"]).scores


def quality(scores: dict[str, float]) -> float:
    return float(sum(scores[a] for a in QUALITY_ATTRIBUTES))


def open_metrics(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Metrics from prediction rows ({scene, question, reference, category, output})."""
    rows = list(rows)
    rated = [rate_output(r, r["output"]) for r in rows]
    n = len(rows)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    out: dict[str, Any] = {"n": n}
    out |= {a: mean([s[a] for s in rated]) for a in RATING_ATTRIBUTES}
    out["quality"] = mean([quality(s) for s in rated])
    out["correct_rate"] = mean([float(s["correctness"] == 4) for s in rated])
    by_category: dict[str, dict[str, float | int]] = {}
    for c in sorted({r.get("category", "other") for r in rows}):
        sel = [quality(s) for r, s in zip(rows, rated, strict=True)
               if r.get("category", "other") == c]
        by_category[c] = {"n": len(sel), "quality": mean(sel)}
    out["by_category"] = by_category
    out["judge"] = f"oracle+ref (rules {RULES_HASH[:12]})"
    return out


# ---- task hooks (see mmalign.eval.tasks) --------------------------------------------------

def build_items(bench_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    for r in bench_rows:
        if "scene" not in r:
            raise ValueError(
                f"open-ended row {r.get('id')!r} carries no scene graph for the oracle judge: "
                f"the world was made by an older mmalign; make it again (mmalign world make)")
        items.append({"id": r["id"], "image": r["image"], "category": r.get("category", "other"),
                      "question": r["question"], "reference": r["reference"],
                      "scene": r["scene"], "prompt": r["question"],
                      "max_new_tokens": MAX_NEW_TOKENS})
    return items


def score_output(item: dict[str, Any], output: str) -> dict[str, Any]:
    scores = rate_output(item, output)
    return {"parse": scores, "correct": scores["correctness"] == 4}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {"quality": metrics["quality"]} | {a: metrics[a] for a in RATING_ATTRIBUTES}


def columns(metrics: dict[str, Any]) -> dict[str, float]:
    return headline(metrics) | {"no false claim": metrics["correct_rate"]} | {
        f"quality {c}": m["quality"] for c, m in metrics["by_category"].items()}

"""CHAIR (Rohrbach et al., 2018) on free descriptions, against the scene graph's shape list.

Shapes are read from the text with `mmalign.world.facts.mentioned_shapes` (the world's own
independent noun-phrase parser; plural forms count). Per caption c with ground-truth shapes
G_c and mentioned shapes M_c (a *set*: a shape named twice in one caption counts once, as in
the blind baseline of bench/world_baselines.py):

  CHAIR_i = sum_c |M_c - G_c| / sum_c |M_c|     (0 when nothing is mentioned at all)
  CHAIR_s = #{c : |M_c - G_c| >= 1} / #captions
  recall  = sum_c |M_c & G_c| / sum_c |G_c|      (object coverage, micro-averaged)
  mean_words = mean over captions of len(output.split())

Negation: by default a negated mention ("there is no star") is NOT a mention, so it cannot be
a hallucination; `skip_negated=False` counts it like any other mention. The choice is written
into the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mmalign.world.facts import mentioned_shapes

VERSION = 1
MAX_NEW_TOKENS = 96


def caption_stats(text: str, objects: Iterable[str], *, skip_negated: bool = True
                  ) -> dict[str, list[str]]:
    """Mentioned, hallucinated and covered shapes of one caption (sorted lists)."""
    said = mentioned_shapes(text, skip_negated=skip_negated)
    truth = set(objects)
    return {"mentioned": sorted(said), "hallucinated": sorted(said - truth),
            "covered": sorted(said & truth)}


def chair_metrics(rows: Iterable[dict[str, Any]], *, skip_negated: bool = True
                  ) -> dict[str, Any]:
    """Metrics from prediction rows ({objects: true shapes, output: raw text})."""
    rows = list(rows)
    mentioned = hallucinated = covered = truth = bad_captions = words = 0
    for r in rows:
        s = caption_stats(r["output"], r["objects"], skip_negated=skip_negated)
        mentioned += len(s["mentioned"])
        hallucinated += len(s["hallucinated"])
        covered += len(s["covered"])
        truth += len(set(r["objects"]))
        bad_captions += bool(s["hallucinated"])
        words += len(r["output"].split())
    n = len(rows)
    return {
        "n": n,
        "chair_i": hallucinated / mentioned if mentioned else 0.0,
        "chair_s": bad_captions / n if n else 0.0,
        "recall": covered / truth if truth else 0.0,
        "mean_words": words / n if n else 0.0,
        "mentions": mentioned,
        "hallucinated_mentions": hallucinated,
        "captions_with_hallucination": bad_captions,
        "skip_negated": skip_negated,
        "negation": ("negated mentions ('no star') are not counted as mentions"
                     if skip_negated else "negated mentions count as mentions"),
        "mention_rule": "distinct shapes per caption (mmalign.world.facts.mentioned_shapes)",
    }


# ---- task hooks (see mmalign.eval.tasks) --------------------------------------------------

def build_items(bench_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "image": r["image"], "objects": list(r["objects"]),
             "prompt": r["prompt"], "max_new_tokens": MAX_NEW_TOKENS} for r in bench_rows]


def score_output(item: dict[str, Any], output: str) -> dict[str, Any]:
    """parse = the shapes the caption mentions; correct = it mentions no absent shape."""
    s = caption_stats(output, item["objects"])
    return {"parse": s["mentioned"], "hallucinated": s["hallucinated"],
            "correct": not s["hallucinated"]}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    # Recall (the share of present objects mentioned) goes beside CHAIR everywhere: a model
    # that names nothing scores CHAIR 0, and only recall tells that from one that sees well.
    return {"CHAIR_i": metrics["chair_i"], "CHAIR_s": metrics["chair_s"],
            "recall": metrics["recall"]}


def columns(metrics: dict[str, Any]) -> dict[str, float]:
    return {"CHAIR_i": metrics["chair_i"], "CHAIR_s": metrics["chair_s"],
            "recall": metrics["recall"], "mean words": metrics["mean_words"]}

"""POPE (Li et al., 2023): yes/no object-existence questions, three negative-sampling splits.

Two answer parses are reported side by side, because published numbers differ in which one
they use and a model that rambles is scored very differently by each:

- strict: the first word of the output (case and surrounding punctuation ignored) must be
  "yes" or "no"; anything else is *unknown* and counts as wrong.
- lenient: LLaVA's `eval_pope.py`: keep the text before the first '.', drop commas, split on
  spaces; if 'no' or 'not' is among the words the answer is "no", otherwise "yes" (so nothing
  is ever unknown, and an empty output is "yes"). One deviation: words are compared
  lower-cased, so "Not" and "NO" count too (LLaVA checks only 'No', 'no' and 'not').

Metrics per split and overall, with "yes" as the positive class:
  accuracy  = correct / n                       (unknown = wrong)
  precision = TP / (TP + FP)                    (0 when nothing is predicted "yes")
  recall    = TP / (TP + FN), FN = gold "yes" not predicted "yes" (an unknown is a miss)
  F1        = 2 P R / (P + R)                   (0 when P + R = 0)
  yes_ratio = predicted "yes" / n;  unknown_rate = unknown / n
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mmalign.world.vocab import SHORT_ANSWER

VERSION = 1
SPLITS = ("random", "popular", "adversarial")
PARSES = ("strict", "lenient")
HEADLINE_PARSE = "lenient"  # LLaVA's convention, so numbers compare with published ones
MAX_NEW_TOKENS = 8
_STRIP = " \t\r\n.,;:!?\"'()[]{}*`"


def parse_strict(text: str) -> str | None:
    """'yes' / 'no' if the first word is yes/no (any case, punctuation ignored), else None."""
    words = text.split()
    if not words:
        return None
    first = words[0].strip(_STRIP).lower()
    return first if first in ("yes", "no") else None


def parse_lenient(text: str) -> str:
    """LLaVA's POPE parse: first sentence; 'no' or 'not' among its words -> 'no', else 'yes'."""
    first_sentence = text.split(".")[0].replace(",", "")
    words = {w.lower() for w in first_sentence.split(" ")}
    return "no" if words & {"no", "not"} else "yes"


def parse(text: str) -> dict[str, str | None]:
    parsers = {"strict": parse_strict, "lenient": parse_lenient}
    return {name: parsers[name](text) for name in PARSES}


def binary_metrics(gold: list[str], pred: list[str | None]) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1, yes ratio and unknown rate for one group of answers."""
    n = len(gold)
    tp = sum(g == "yes" and p == "yes" for g, p in zip(gold, pred, strict=True))
    fp = sum(g == "no" and p == "yes" for g, p in zip(gold, pred, strict=True))
    fn = sum(g == "yes" and p != "yes" for g, p in zip(gold, pred, strict=True))
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    said_yes = sum(p == "yes" for p in pred)
    unknown = sum(p is None for p in pred)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "accuracy": correct / n if n else 0.0, "precision": precision,
            "recall": recall, "f1": f1, "yes_ratio": said_yes / n if n else 0.0,
            "unknown_rate": unknown / n if n else 0.0}


def pope_metrics(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Metrics from prediction rows ({split, answer: gold yes/no, output: raw text}).

    Returns {"strict": {split: metrics, ..., "overall": metrics}, "lenient": {...}, ...};
    the outputs are re-parsed here, so a stored parse never goes stale.
    """
    rows = list(rows)
    groups = [s for s in SPLITS if any(r["split"] == s for r in rows)]
    groups += sorted({r["split"] for r in rows} - set(SPLITS))  # a user's own split names
    out: dict[str, Any] = {}
    for mode, fn in (("strict", parse_strict), ("lenient", parse_lenient)):
        table = {}
        for split in [*groups, "overall"]:
            sel = [r for r in rows if split == "overall" or r["split"] == split]
            table[split] = binary_metrics([r["answer"] for r in sel],
                                          [fn(r["output"]) for r in sel])
        out[mode] = table
    out["n"] = len(rows)
    out["headline_parse"] = HEADLINE_PARSE
    out["parse_rules"] = {
        "strict": "first word (case, punctuation ignored) is yes/no; otherwise unknown (wrong)",
        "lenient": "LLaVA eval_pope: first sentence (text before the first '.'), commas "
                   "dropped, split on spaces; 'no' or 'not' among the lower-cased words -> no, "
                   "otherwise yes",
    }
    return out


# ---- task hooks (see mmalign.eval.tasks) --------------------------------------------------

def build_items(bench_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One item per POPE row: the question plus LLaVA's short-answer instruction."""
    return [{"id": r["id"], "image": r["image"], "split": r["split"], "object": r["object"],
             "answer": r["answer"], "prompt": f"{r['question']}\n{SHORT_ANSWER}",
             "max_new_tokens": MAX_NEW_TOKENS} for r in bench_rows]


def score_output(item: dict[str, Any], output: str) -> dict[str, Any]:
    p = parse(output)
    return {"parse": p, "correct": {k: v == item["answer"] for k, v in p.items()}}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The chart's bars: F1 per split under the headline parse."""
    table = metrics[HEADLINE_PARSE]
    return {f"F1 {s}": table[s]["f1"] for s in SPLITS if s in table}


def columns(metrics: dict[str, Any]) -> dict[str, float]:
    """Every number for the report's table, in display order."""
    cols: dict[str, float] = {}
    lenient, strict = metrics["lenient"], metrics["strict"]
    for split in [*(s for s in SPLITS if s in lenient), "overall"]:
        m = lenient[split]
        cols |= {f"{split} acc": m["accuracy"], f"{split} P": m["precision"],
                 f"{split} R": m["recall"], f"{split} F1": m["f1"],
                 f"{split} yes": m["yes_ratio"]}
    for split in [*(s for s in SPLITS if s in strict), "overall"]:
        cols[f"{split} F1 (strict)"] = strict[split]["f1"]
    cols["unknown (strict)"] = strict["overall"]["unknown_rate"]
    return cols

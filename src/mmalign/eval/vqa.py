"""VQA with exact answers: normalised exact match, overall and per question type.

normalize_answer, in order:
  1. lower-case; 2. every character that is not a letter, digit or space becomes a space
  ("top-left" == "top left", "Two." == "two"); 3. drop the articles a / an / the;
  4. a whole-word number written in digits becomes its word ("2" -> "two", 0-20), so "2" and
  "two" are equal; 5. collapse whitespace.
accuracy = sum(normalize(output) == normalize(gold)) / n. No partial credit, no containment:
the harness asks for a single word or phrase, and following that is part of the score.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mmalign.world.vocab import SHORT_ANSWER

VERSION = 1
MAX_NEW_TOKENS = 8
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                 "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_ARTICLES = frozenset({"a", "an", "the"})
_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def normalize_answer(text: str) -> str:
    words = _NON_WORD.sub(" ", text.lower()).split()
    out = []
    for w in words:
        if w in _ARTICLES:
            continue
        if w.isdigit() and int(w) < len(_NUMBER_WORDS):
            w = _NUMBER_WORDS[int(w)]
        out.append(w)
    return " ".join(out)


def exact_match(output: str, gold: str) -> bool:
    return normalize_answer(output) == normalize_answer(gold)


def vqa_metrics(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Metrics from prediction rows ({type, answer: gold, output: raw text})."""
    rows = list(rows)
    hits = [exact_match(r["output"], r["answer"]) for r in rows]
    by_type: dict[str, dict[str, float | int]] = {}
    for t in sorted({r["type"] for r in rows}):
        sel = [h for r, h in zip(rows, hits, strict=True) if r["type"] == t]
        by_type[t] = {"n": len(sel), "accuracy": sum(sel) / len(sel)}
    return {"n": len(rows), "accuracy": sum(hits) / len(rows) if rows else 0.0,
            "by_type": by_type,
            "match_rule": "exact match after normalize_answer: lower-case, punctuation -> "
                          "space, drop a/an/the, digits 0-20 -> number words"}


# ---- task hooks (see mmalign.eval.tasks) --------------------------------------------------

def build_items(bench_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "image": r["image"], "type": r["type"], "answer": r["answer"],
             "prompt": f"{r['question']}\n{SHORT_ANSWER}", "max_new_tokens": MAX_NEW_TOKENS}
            for r in bench_rows]


def score_output(item: dict[str, Any], output: str) -> dict[str, Any]:
    return {"parse": normalize_answer(output), "correct": exact_match(output, item["answer"])}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": metrics["accuracy"]}


def columns(metrics: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": metrics["accuracy"]} | {
        t: m["accuracy"] for t, m in metrics["by_type"].items()}

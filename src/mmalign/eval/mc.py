"""Multiple choice with CircularEval (MMBench, Liu et al., 2023).

A question with n options is asked n times, its options rotated by k = 0..n-1 (rotation k
shows options[k:] + options[:k]); it counts as right only if every rotation is answered right,
which removes the gain from a position bias ("always A" scores 0 instead of 1/n).
Single-pass accuracy (rotation 0 only, the options in the benchmark's order) is reported too.

Prompt (LLaVA's MMBench format):
    {question}
    A. {option 0}
    B. {option 1}
    ...
    Answer with the option's letter from the given choices directly.

parse_choice, first rule that applies:
  1. the first standalone capital letter among the offered ones (A-D for four options), i.e.
     not touching another letter or digit: "B", "(B)", "B. blue", "The answer is B." -> B.
     (An output starting with the article "A" therefore reads as option A.)
  2. otherwise, the option whose text appears in the output as whole words, compared after
     VQA normalisation ("2" == "two"), if exactly one does: "Blue." -> the "blue" option.
  3. otherwise unknown (None), which is wrong.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from mmalign.eval.vqa import normalize_answer

VERSION = 1
MAX_NEW_TOKENS = 8
INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = string.ascii_uppercase


def rotations(options: list[str], answer: int) -> list[tuple[list[str], int]]:
    """All n rotations as (options shown, index of the right answer among them)."""
    n = len(options)
    return [(options[k:] + options[:k], (answer - k) % n) for k in range(n)]


def mc_prompt(question: str, options: list[str]) -> str:
    lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join([question, *lines, INSTRUCTION])


def parse_choice(text: str, options: list[str]) -> int | None:
    """Index of the chosen option, or None (see the module docstring for the rules)."""
    offered = LETTERS[:len(options)]
    m = re.search(rf"(?<![A-Za-z0-9])([{offered}])(?![A-Za-z0-9])", text)
    if m:
        return offered.index(m.group(1))
    said = f" {normalize_answer(text)} "
    hits = [i for i, o in enumerate(options)
            if normalize_answer(o) and f" {normalize_answer(o)} " in said]
    return hits[0] if len(hits) == 1 else None


def circular_eval(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Metrics from prediction rows, one per (question, rotation):
    {question_id, rotation, n_rotations, type, options (as shown), answer (index as shown),
    output}. A question missing some rotation (an interrupted run read mid-way) is left out of
    the circular score and counted in `incomplete`; single-pass accuracy covers every question
    whose rotation 0 is there."""
    choices = [(r, parse_choice(r["output"], r["options"])) for r in rows]
    by_q: dict[str, list[tuple[dict[str, Any], bool]]] = defaultdict(list)
    for r, choice in choices:
        by_q[r["question_id"]].append((r, choice == r["answer"]))

    complete, circular, first, types = [], {}, {}, {}
    for q, qrows in by_q.items():
        types[q] = qrows[0][0].get("type", "")
        first_pass = [ok for r, ok in qrows if r["rotation"] == 0]
        if first_pass:
            first[q] = first_pass[0]
        if {r["rotation"] for r, _ in qrows} == set(range(qrows[0][0]["n_rotations"])):
            complete.append(q)
            circular[q] = all(ok for _, ok in qrows)

    def frac(values: list[bool]) -> float:
        return sum(values) / len(values) if values else 0.0

    by_type = {}
    for t in sorted(set(types.values())):
        qs = [q for q in complete if types[q] == t]
        by_type[t] = {"n": len(qs), "circular_accuracy": frac([circular[q] for q in qs]),
                      "single_pass_accuracy": frac([first[q] for q in qs])}
    return {
        "n_questions": len(complete),
        "n_rows": len(choices),
        "incomplete": len(by_q) - len(complete),
        "circular_accuracy": frac([circular[q] for q in complete]),
        "single_pass_accuracy": frac(list(first.values())),
        "per_rotation_accuracy": frac([c == r["answer"] for r, c in choices]),
        "unknown_rate": frac([c is None for _, c in choices]),
        "by_type": by_type,
        "parse_rule": "first standalone offered capital letter; else the one option whose "
                      "normalised text appears as whole words; else unknown (wrong)",
    }


# ---- task hooks (see mmalign.eval.tasks) --------------------------------------------------

def build_items(bench_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One item per (question, rotation); ids are '<question id>/r<k>'."""
    items = []
    for r in bench_rows:
        rots = rotations(list(r["options"]), int(r["answer"]))
        for k, (options, answer) in enumerate(rots):
            items.append({"id": f"{r['id']}/r{k}", "image": r["image"], "question_id": r["id"],
                          "type": r["type"], "rotation": k, "n_rotations": len(rots),
                          "options": options, "answer": answer,
                          "prompt": mc_prompt(r["question"], options),
                          "max_new_tokens": MAX_NEW_TOKENS})
    return items


def score_output(item: dict[str, Any], output: str) -> dict[str, Any]:
    choice = parse_choice(output, item["options"])
    return {"parse": None if choice is None else LETTERS[choice],
            "correct": choice == item["answer"]}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {"circular accuracy": metrics["circular_accuracy"]}


def columns(metrics: dict[str, Any]) -> dict[str, float]:
    return {"circular": metrics["circular_accuracy"],
            "single pass": metrics["single_pass_accuracy"],
            "per rotation": metrics["per_rotation_accuracy"],
            "unknown": metrics["unknown_rate"]}

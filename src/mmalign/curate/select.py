"""Choose records from stored scores (never rescoring): the paper's cascade, or plain top-k.

Cascade (`select_cascade`), run per category (conversation, detail, reasoning, other):
  1. rank the category's images by question-RM score (an image with several question sets
     in the category takes its best) and keep the top `alpha` of images;
  2. among the kept images' records, records with the same image and the same questions are
     K candidate answerings of one instruction: for each turn take the best-scored answer of
     the K (K = 1 for most corpora), average the chosen answers' scores over the turns, and
     keep the top `beta` of these instructions.
  Defaults alpha = beta = 0.3, as in the paper (158k -> ~14k, 9%).

Plain mode (`select_top`): rank records (per category or overall) by one stored score,
`question` or `answer` (the best-of-K mean over turns, as above), and keep the top k, the top
fraction, or everything at or above a threshold.

How many to keep of n: floor(n * ratio), as the released code does, but at least one while
n > 0 and ratio > 0, so a small category is never emptied by rounding. Ties are broken by
input order, so results are deterministic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign import __version__
from mmalign.curate.annotations import strip_image_tokens
from mmalign.curate.score import check_scores
from mmalign.records import CATEGORIES, Sample

DEFAULT_ALPHA = 0.3
DEFAULT_BETA = 0.3


def n_keep(n: int, ratio: float) -> int:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a keep ratio must be in [0, 1], got {ratio}")
    if n == 0 or ratio == 0:
        return 0
    return max(1, math.floor(n * ratio + 1e-9))  # 1e-9: 10 * 0.3 must give 3, not 2


def top_indices(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k best scores, best first; ties keep input order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:k]


@dataclass
class Instruction:
    """Records sharing (category, images, questions): the K candidate answerings of one
    instruction. `records` keep input order."""

    key: tuple
    records: list[Sample]
    question_score: float = 0.0
    answer_score: float = 0.0
    picks: list[int] = field(default_factory=list)  # per turn: index into `records`

    def best(self) -> Sample:
        """The instruction with each turn's best answer (best-of-K per turn)."""
        first = self.records[0]
        turns, a_turn = [], 0
        for t in first.turns:
            if t.role == "assistant":
                src = self.records[self.picks[a_turn]]
                turns.append(_assistant_turns(src)[a_turn])
                a_turn += 1
            else:
                turns.append(t)
        meta = dict(first.meta)
        meta["curate"] = {
            "question_score": round(self.question_score, 6),
            "answer_score": round(self.answer_score, 6),
            "candidates": len(self.records),
            "picked": [self.records[p].id for p in self.picks],
        }
        return Sample(first.id, first.images, turns, first.category, first.source, meta)


def _assistant_turns(s: Sample):
    return [t for t in s.turns if t.role == "assistant"]


def group_instructions(records: Sequence[Sample]) -> list[Instruction]:
    """Group records into instructions and pick each turn's best answer."""
    groups: dict[tuple, Instruction] = {}
    for s in records:
        check_scores(s, n_answers=len(s.answers))
        # Placeholder position differs between copies of one instruction ("<image>\nQ" vs
        # "Q\n<image>"); the question text is what identifies it.
        key = (s.category, tuple(s.images), tuple(strip_image_tokens(q) for q in s.questions))
        groups.setdefault(key, Instruction(key, [])).records.append(s)
    for g in groups.values():
        n_turns = len(g.records[0].answers)
        for s in g.records[1:]:
            if len(s.answers) != n_turns:
                raise ValueError(f"records {g.records[0].id!r} and {s.id!r} ask the same "
                                 f"questions but answer {n_turns} vs {len(s.answers)} turns")
        g.question_score = max(s.meta["scores"]["question"] for s in g.records)
        g.picks = [top_indices([s.meta["scores"]["answers"][t] for s in g.records], 1)[0]
                   for t in range(n_turns)]
        g.answer_score = (sum(g.records[p].meta["scores"]["answers"][t]
                              for t, p in enumerate(g.picks)) / n_turns)
    return list(groups.values())


def _by_category(records: Sequence[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in records:
        out.setdefault(s.category, []).append(s)
    # A stable, documented category order for outputs and reports.
    return {c: out[c] for c in sorted(out, key=lambda c: (CATEGORIES.index(c)
                                                          if c in CATEGORIES else 99, c))}


def select_cascade(records: Sequence[Sample], alpha: float = DEFAULT_ALPHA,
                   beta: float = DEFAULT_BETA) -> tuple[list[Sample], dict[str, Any]]:
    """The two-stage cascade per category; returns (kept records, report with counts)."""
    kept: list[Sample] = []
    report: dict[str, Any] = {"mode": "cascade", "alpha": alpha, "beta": beta,
                              "categories": {}}
    for cat, recs in _by_category(records).items():
        instructions = group_instructions(recs)
        # Stage 1: images ranked by their best question-set score in this category.
        image_score: dict[tuple, float] = {}
        for g in instructions:
            img = g.key[1]
            image_score[img] = max(image_score.get(img, -math.inf), g.question_score)
        images = list(image_score)
        top_images = {images[i] for i in top_indices([image_score[i] for i in images],
                                                     n_keep(len(images), alpha))}
        stage1 = [g for g in instructions if g.key[1] in top_images]
        # Stage 2: instructions ranked by the mean over turns of their best answers.
        stage2 = [stage1[i] for i in top_indices([g.answer_score for g in stage1],
                                                 n_keep(len(stage1), beta))]
        kept.extend(g.best() for g in stage2)
        report["categories"][cat] = {
            "records_in": len(recs), "instructions": len(instructions),
            "images": len(images), "images_kept": len(top_images),
            "instructions_after_stage1": len(stage1), "out": len(stage2)}
    report["counts"] = {"in": len(records), "out": len(kept)}
    return kept, report


def select_top(records: Sequence[Sample], *, key: str = "answer", k: int | None = None,
               fraction: float | None = None, threshold: float | None = None,
               per_category: bool = True) -> tuple[list[Sample], dict[str, Any]]:
    """Keep the best instructions by one stored score: exactly one of `k` (count),
    `fraction` (share) or `threshold` (score >= threshold); per category or overall."""
    if key not in ("question", "answer"):
        raise ValueError(f"key must be 'question' or 'answer', got {key!r}")
    if sum(x is not None for x in (k, fraction, threshold)) != 1:
        raise ValueError("give exactly one of k, fraction or threshold")
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    pools = _by_category(records) if per_category else {"all": list(records)}
    kept: list[Sample] = []
    report: dict[str, Any] = {"mode": "top", "key": key, "k": k, "fraction": fraction,
                              "threshold": threshold, "per_category": per_category,
                              "categories": {}}
    for cat, recs in pools.items():
        instructions = group_instructions(recs)
        scores = [g.question_score if key == "question" else g.answer_score
                  for g in instructions]
        if threshold is not None:
            chosen = [i for i in top_indices(scores, len(scores)) if scores[i] >= threshold]
        else:
            count = k if k is not None else n_keep(len(scores), fraction)  # type: ignore[arg-type]
            chosen = top_indices(scores, count)
        kept.extend(instructions[i].best() for i in chosen)
        report["categories"][cat] = {"records_in": len(recs),
                                     "instructions": len(instructions), "out": len(chosen)}
    report["counts"] = {"in": len(records), "out": len(kept)}
    return kept, report


def run_select(scored: str | os.PathLike, out_dir: str | os.PathLike, *,
               alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, key: str = "answer",
               k: int | None = None, fraction: float | None = None,
               threshold: float | None = None, per_category: bool = True) -> dict[str, Any]:
    """Select from a scored.jsonl (or the folder holding one) into OUT/selected.jsonl.

    The cascade runs unless one of `k`, `fraction`, `threshold` is given (plain top mode).
    Returns the manifest (also written to OUT/manifest.json).
    """
    from mmalign.curate.score import SCORED, read_scored
    from mmalign.io.atomic import write_json
    from mmalign.io.formats import write_records

    path = Path(scored)
    if path.is_dir():
        path = path / SCORED
    records = read_scored(path)
    if k is None and fraction is None and threshold is None:
        kept, report = select_cascade(records, alpha, beta)
    else:
        kept, report = select_top(records, key=key, k=k, fraction=fraction,
                                  threshold=threshold, per_category=per_category)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "selected.jsonl", kept, "jsonl")
    manifest = {"stage": "curate.select", "version": __version__, "input": str(path),
                "outputs": {"selected": "selected.jsonl"}, **report}
    write_json(out / "manifest.json", manifest)
    return manifest

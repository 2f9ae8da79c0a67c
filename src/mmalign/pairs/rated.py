"""Preference pairs (and best-of-K samples) from judged answers: MM-DPO's pair rule.

DESIGN 6.3, per (image, question) group of K rated answers:
  quality = helpfulness + correctness + coherence
  skip the group if max(quality) - min(quality) < 2
  chosen   = the best answer
  rejected = a random answer among those with quality <= max - 2
All three numbers and the attribute list are configurable (`PairRule`). Details the paper
leaves open, decided here:
  - answers whose rating failed (judge error) are left out; a group needs 2 rated answers;
  - several answers tied for best: one is drawn at random;
  - a rejected candidate with the same text as the chosen answer is never drawn (a noisy judge
    can rate the same text twice differently; such a pair teaches nothing);
  - randomness is seeded per group by (seed, group id), so a group's pair does not depend on
    which other groups are in the file or in what order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmalign.records import RATING_ATTRIBUTES, PreferencePair, Rating, RecordError, Sample, Turn

QUALITY_ATTRIBUTES = ("helpfulness", "correctness", "coherence")


@dataclass(frozen=True)
class PairRule:
    """Which answers of a group make a pair (defaults: MM-DPO's)."""

    quality_attributes: tuple[str, ...] = QUALITY_ATTRIBUTES
    min_gap: float = 2.0  # skip a group whose best and worst quality differ by less
    reject_margin: float = 2.0  # rejected candidates score at most best - reject_margin

    def __post_init__(self) -> None:
        unknown = [a for a in self.quality_attributes if a not in RATING_ATTRIBUTES]
        if unknown or not self.quality_attributes:
            raise ValueError(f"quality attributes must be among {RATING_ATTRIBUTES}, got "
                             f"{list(self.quality_attributes)}")
        if self.min_gap < 0 or self.reject_margin < 0:
            raise ValueError("min_gap and reject_margin must be >= 0")

    def quality(self, scores: dict[str, float]) -> float:
        return float(sum(scores[a] for a in self.quality_attributes))


def group_rng(seed: int, group_id: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(group_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def select_pair(qualities: Sequence[float], rule: PairRule, rng: np.random.Generator,
                texts: Sequence[str] | None = None) -> tuple[int, int] | None:
    """(chosen, rejected) indices into `qualities`, or None when the group is skipped."""
    if len(qualities) < 2:
        return None
    best, worst = max(qualities), min(qualities)
    if best - worst < rule.min_gap:
        return None
    tops = [i for i, q in enumerate(qualities) if q == best]
    chosen = tops[int(rng.integers(len(tops)))]
    pool = [i for i, q in enumerate(qualities) if q <= best - rule.reject_margin
            and (texts is None or texts[i] != texts[chosen])]
    if not pool:
        return None
    return chosen, pool[int(rng.integers(len(pool)))]


@dataclass
class RatedPairStats:
    groups: int = 0
    pairs: int = 0
    skipped_small_gap: int = 0
    skipped_too_few_ratings: int = 0
    skipped_no_rejected: int = 0
    failed_ratings: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _ratings_of(row: dict[str, Any], where: str) -> list[Rating]:
    raw = row.get("ratings")
    if not isinstance(raw, list):
        raise RecordError("missing or not a list", field="ratings", file=where,
                          record_id=row.get("id"))
    out = []
    for i, d in enumerate(raw):
        try:
            out.append(Rating.from_dict(d))
        except RecordError as e:
            raise RecordError(e.reason, field=f"ratings[{i}].{e.field}", file=where,
                              record_id=row.get("id")) from None
    return out


def _prompt_of(row: dict[str, Any], where: str) -> list[Turn]:
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise RecordError("missing or empty", field="prompt", file=where,
                          record_id=row.get("id"))
    turns = []
    for i, t in enumerate(prompt):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) \
                or t.get("role") not in ("system", "user", "assistant"):
            raise RecordError("expected {role: system|user|assistant, content: str}",
                              field=f"prompt[{i}]", file=where, record_id=row.get("id"))
        turns.append(Turn(t["role"], t["content"]))
    return turns


def _usable(ratings: list[Rating], rule: PairRule) -> list[Rating]:
    return [r for r in ratings
            if not r.error and all(a in r.scores for a in rule.quality_attributes)]


def rated_pairs(rows: Iterable[dict[str, Any]], rule: PairRule | None = None, *, seed: int = 0,
                where: str = "") -> tuple[list[PreferencePair], RatedPairStats]:
    """Pairs from judged groups (rows of `mmalign judge`'s output), with counts."""
    rule = rule or PairRule()
    pairs, stats = [], RatedPairStats()
    for row in rows:
        stats.groups += 1
        ratings = _ratings_of(row, where)
        usable = _usable(ratings, rule)
        stats.failed_ratings += len(ratings) - len(usable)
        if len(usable) < 2:
            stats.skipped_too_few_ratings += 1
            continue
        qualities = [rule.quality(r.scores) for r in usable]
        if max(qualities) - min(qualities) < rule.min_gap:
            stats.skipped_small_gap += 1
            continue
        picked = select_pair(qualities, rule, group_rng(seed, str(row["id"])),
                             [r.response for r in usable])
        if picked is None:
            stats.skipped_no_rejected += 1
            continue
        c, r = usable[picked[0]], usable[picked[1]]
        pairs.append(PreferencePair(
            id=f"{row['id']}-rated", images=list(row.get("images") or []),
            prompt=_prompt_of(row, where), chosen=c.response, rejected=r.response,
            origin="rated",
            scores={"chosen": c.scores | {"quality": rule.quality(c.scores)},
                    "rejected": r.scores | {"quality": rule.quality(r.scores)}},
            meta={"group": row["id"], "judge": c.judge, "prompt_hash": c.prompt_hash,
                  "chosen_index": c.response_index, "rejected_index": r.response_index,
                  "quality_attributes": list(rule.quality_attributes),
                  "category": row.get("category")}))
        stats.pairs += 1
    return pairs, stats


def best_of_k(rows: Iterable[dict[str, Any]], rule: PairRule | None = None, *, seed: int = 0,
              min_quality: float | None = None, where: str = "") -> list[Sample]:
    """Rejection sampling's data: per group, the best-rated answer as an SFT sample (ties drawn
    at random with the same per-group seed as `rated_pairs`); groups whose best quality is
    below `min_quality` are left out."""
    rule = rule or PairRule()
    out = []
    for row in rows:
        usable = _usable(_ratings_of(row, where), rule)
        if not usable:
            continue
        qualities = [rule.quality(r.scores) for r in usable]
        best = max(qualities)
        if min_quality is not None and best < min_quality:
            continue
        tops = [i for i, q in enumerate(qualities) if q == best]
        r = usable[tops[int(group_rng(seed, str(row["id"])).integers(len(tops)))]]
        out.append(Sample(id=f"{row['id']}-best", images=list(row.get("images") or []),
                          turns=_prompt_of(row, where) + [Turn("assistant", r.response)],
                          category=row.get("category") or "other", source="rated-best",
                          meta={"group": row["id"], "scores": r.scores, "quality": best,
                                "judge": r.judge, "prompt_hash": r.prompt_hash}))
    return out

"""MM-DPO's pair rule on hand-written groups, and pairs / best-of-K from judged rows."""

from __future__ import annotations

import numpy as np
import pytest

from mmalign.pairs.rated import PairRule, best_of_k, group_rng, rated_pairs, select_pair
from mmalign.records import RATING_ATTRIBUTES, RecordError, validate_pair, validate_sample

RULE = PairRule()


def draws(qualities, rule=RULE, n=200, texts=None):
    """Every (chosen, rejected) the rule can produce, over many seeds."""
    return {select_pair(qualities, rule, np.random.default_rng(s), texts) for s in range(n)}


def test_rule_by_hand():
    # best 12 at 0; rejected among quality <= 10: answers 2 (9) and 3 (8)
    assert draws([12, 11, 9, 8]) == {(0, 2), (0, 3)}
    # max - min = 1 < 2: skipped
    assert draws([10, 9, 9, 9]) == {None}
    # two tied best answers; only answer 2 is at least 2 below the best
    assert draws([10, 10, 8, 9]) == {(0, 2), (1, 2)}
    assert draws([6, 4]) == {(0, 1)}
    assert draws([6, 5]) == {None}
    assert draws([7]) == {None}
    # exactly at the margin counts (<= max - 2)
    assert draws([3, 1, 2]) == {(0, 1)}


def test_rule_is_configurable():
    assert draws([6, 4], PairRule(min_gap=3)) == {None}
    assert draws([9, 7, 6], PairRule(reject_margin=3)) == {(0, 2)}
    assert draws([9, 7, 6], PairRule(reject_margin=1)) == {(0, 1), (0, 2)}
    with pytest.raises(ValueError, match="quality attributes"):
        PairRule(quality_attributes=("helpfulness", "wit"))


def test_identical_texts_never_pair():
    assert draws([9, 5], texts=["same", "same"]) == {None}
    assert draws([9, 5, 4], texts=["a", "a", "b"]) == {(0, 2)}


def rating(i, h, c, co, cx=1, v=1, error=None, text=None):
    scores = {} if error else dict(zip(RATING_ATTRIBUTES, (h, c, co, cx, v), strict=True))
    return {"sample_id": "g", "response": text or f"answer {i}", "scores": scores,
            "reasoning": "", "judge": "oracle", "prompt_hash": "abc", "response_index": i,
            "error": error}


def row(gid, ratings):
    return {"id": gid, "images": ["images/x.png"],
            "prompt": [{"role": "user", "content": "<image>\nHow many stars?"}],
            "reference": "Two.", "category": "conversation",
            "responses": [r["response"] for r in ratings], "ratings": ratings}


ROWS = [
    row("a", [rating(0, 4, 4, 4), rating(1, 2, 1, 3), rating(2, 1, 0, 2, error="bad reply"),
              rating(3, 4, 4, 3)]),
    row("b", [rating(0, 3, 3, 3), rating(1, 3, 2, 3)]),        # gap 1: skipped
    row("c", [rating(0, 4, 4, 4), rating(1, 0, 0, 0, error="x")]),  # one usable rating
    row("d", [rating(0, 1, 1, 1), rating(1, 4, 4, 4, cx=3, v=2), rating(2, 2, 2, 2)]),
]


def test_pairs_from_rows_with_counts():
    pairs, stats = rated_pairs(ROWS, seed=0)
    assert stats.to_dict() == {"groups": 4, "pairs": 2, "skipped_small_gap": 1,
                               "skipped_too_few_ratings": 1, "skipped_no_rejected": 0,
                               "failed_ratings": 2}
    a, d = pairs
    assert a.id == "a-rated" and a.origin == "rated" and a.chosen == "answer 0"
    assert a.rejected == "answer 1"  # quality 6 <= 12 - 2; answer 3 (11) is too close
    assert a.scores["chosen"]["quality"] == 12 and a.scores["rejected"]["quality"] == 6
    assert a.meta["chosen_index"] == 0 and a.meta["rejected_index"] == 1
    assert a.meta["judge"] == "oracle" and a.meta["prompt_hash"] == "abc"
    assert d.chosen == "answer 1" and d.rejected in {"answer 0", "answer 2"}
    assert d.scores["chosen"]["complexity"] == 3
    for p in pairs:
        validate_pair(p)
        assert p.images == ["images/x.png"] and p.prompt[-1].content.endswith("stars?")


def test_pairs_are_seeded_per_group():
    first, _ = rated_pairs(ROWS, seed=1)
    again, _ = rated_pairs(list(reversed(ROWS)), seed=1)
    assert {p.id: p.rejected for p in first} == {p.id: p.rejected for p in again}
    # over seeds, group d's rejected answer varies between its two candidates
    picked = {rated_pairs([ROWS[3]], seed=s)[0][0].rejected for s in range(30)}
    assert picked == {"answer 0", "answer 2"}


def test_quality_attributes_configurable():
    # by correctness alone group b has no gap (3 vs 2) and group a: 4, 1, 4
    pairs, stats = rated_pairs(ROWS, PairRule(quality_attributes=("correctness",)), seed=0)
    assert [p.id for p in pairs] == ["a-rated", "d-rated"]
    assert pairs[0].rejected == "answer 1"


def test_best_of_k_matches_chosen():
    best = best_of_k(ROWS, seed=4)
    assert [s.id for s in best] == ["a-best", "b-best", "c-best", "d-best"]
    pairs, _ = rated_pairs(ROWS, seed=4)
    assert best[0].answers == [pairs[0].chosen]
    assert best[1].meta["quality"] == 9 and best[0].source == "rated-best"
    for s in best:
        validate_sample(s)
    assert [s.id for s in best_of_k(ROWS, min_quality=10)] == ["a-best", "c-best", "d-best"]


def test_malformed_rating_names_the_field():
    bad = row("z", [rating(0, 4, 4, 4) | {"scores": {"helpfulness": "high"}}])
    with pytest.raises(RecordError) as e:
        rated_pairs([bad], where="ratings.jsonl")
    assert e.value.field == "ratings[0].scores.helpfulness" and e.value.record_id == "z"
    assert "ratings.jsonl" in str(e.value)


def test_group_rng_depends_on_seed_and_id():
    x = group_rng(0, "a").integers(1 << 30)
    assert x == group_rng(0, "a").integers(1 << 30)
    assert x != group_rng(1, "a").integers(1 << 30)
    assert x != group_rng(0, "b").integers(1 << 30)

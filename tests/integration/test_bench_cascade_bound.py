"""bench/cascade_bound.py: the simulated RMs rank exactly by the defects they see."""

from __future__ import annotations

from mmalign.experiments import bench_module

bound = bench_module("cascade_bound")


def _flag_every_fourth(records, kind):
    """Fake truth: every fourth record of each category carries `kind` in its last turn."""
    turns, seen = {}, {}
    for s in records:
        i = seen[s.category] = seen.get(s.category, -1) + 1
        turns[s.id] = [{"type": kind, "turn": len(s.answers) - 1}] if i % 4 == 0 else []
    return turns


def test_a_seen_defect_is_never_kept_and_an_unseen_one_is(tiny_world):
    from mmalign.io.formats import read_records

    records = list(read_records(tiny_world / "corpus.json"))
    turns = _flag_every_fourth(records, "truncation")
    flagged = {i for i, d in turns.items() if d}
    kept = bound.simulated_cascade(records, turns, {"truncation"}, set(), 1.0, 0.5, seed=0)
    assert kept and not flagged & set(kept)  # a quarter flagged, half kept: none of them
    # not seen: ranked at random, so some are kept (a fixed seed: deterministic)
    kept_blind = bound.simulated_cascade(records, turns, set(), set(), 1.0, 0.5, seed=0)
    assert flagged & set(kept_blind)
    # the question RM acts in stage 1, by image
    kept_q = bound.simulated_cascade(records, turns, set(), {"truncation"}, 0.5, 1.0, seed=0)
    assert kept_q and not flagged & set(kept_q)


def test_the_truth_files_defects_match_the_corpus(tiny_world):
    from mmalign.io.formats import read_records

    turns = bound.read_corpus_defects(tiny_world)
    records = list(read_records(tiny_world / "corpus.json"))
    assert set(turns) == {s.id for s in records}
    for s in records:
        assert all(0 <= d["turn"] < len(s.answers) for d in turns[s.id])

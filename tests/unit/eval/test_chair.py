"""CHAIR_i / CHAIR_s, recall, mean words; negation on and off."""

from __future__ import annotations

import pytest

from mmalign.eval.chair import caption_stats, chair_metrics

ROWS = [
    # mentions {circle, square}; square is absent -> 1 hallucinated; 7 words
    {"objects": ["circle"], "output": "A red circle and a blue square."},
    # mentions {star}; "no ring" is negated -> not a mention by default; 7 words
    {"objects": ["star"], "output": "There is a star but no ring."},
    # mentions {triangle, hexagon}; both present; star not named; 5 words
    {"objects": ["hexagon", "star", "triangle"], "output": "Two triangles and a hexagon."},
]


def test_caption_stats_reads_plurals_and_negation():
    s = caption_stats("Two triangles and a hexagon, but no star.", ["triangle"])
    assert s == {"mentioned": ["hexagon", "triangle"], "hallucinated": ["hexagon"],
                 "covered": ["triangle"]}
    s = caption_stats("No star here.", ["circle"], skip_negated=False)
    assert s["hallucinated"] == ["star"]
    # a shape named twice in one caption counts once
    assert caption_stats("A circle and another circle.", [])["hallucinated"] == ["circle"]


def test_chair_metrics_hand_computed_default_skips_negated():
    m = chair_metrics(ROWS)
    # mentions 2 + 1 + 2 = 5; hallucinated 1 (square)
    assert (m["mentions"], m["hallucinated_mentions"]) == (5, 1)
    assert m["chair_i"] == pytest.approx(1 / 5)
    assert m["chair_s"] == pytest.approx(1 / 3)     # only caption 1 hallucinates
    assert m["recall"] == pytest.approx(4 / 5)      # covered 1 + 1 + 2 of 1 + 1 + 3 true shapes
    assert m["mean_words"] == pytest.approx(19 / 3)  # (7 + 7 + 5) / 3
    assert m["skip_negated"] is True and "not counted" in m["negation"]


def test_chair_metrics_counting_negated_mentions():
    m = chair_metrics(ROWS, skip_negated=False)
    # caption 2 now mentions {star, ring}: mentions 6, hallucinated 2 (square, ring)
    assert m["chair_i"] == pytest.approx(2 / 6)
    assert m["chair_s"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["skip_negated"] is False


def test_chair_metrics_without_mentions_is_zero_not_a_crash():
    m = chair_metrics([{"objects": ["star"], "output": "Nothing to see."}])
    assert (m["chair_i"], m["chair_s"], m["recall"], m["mean_words"]) == (0.0, 0.0, 0.0, 3.0)
    assert chair_metrics([])["n"] == 0

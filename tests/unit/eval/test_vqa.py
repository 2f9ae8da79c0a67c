"""VQA normalisation and exact match."""

from __future__ import annotations

import pytest

from mmalign.eval.vqa import exact_match, normalize_answer, vqa_metrics


@pytest.mark.parametrize("text, expected", [
    ("Two.", "two"), ("2", "two"), ("12", "twelve"), ("21", "21"), ("0", "zero"),
    ("The red one", "red one"), ("an apple", "apple"), ("top-left", "top left"),
    ("  Top   Left. ", "top left"), ("Yes!", "yes"), ("", ""), ("a", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_equates_digits_and_words_but_not_partial_answers():
    assert exact_match("2", "two") and exact_match("Two.", "2") and exact_match("Red", "red")
    assert not exact_match("top", "top left")
    assert not exact_match("There are two.", "two")


def test_vqa_metrics_hand_computed():
    rows = [
        {"type": "color", "answer": "red", "output": "Red."},             # right
        {"type": "color", "answer": "red", "output": "blue"},             # wrong
        {"type": "count", "answer": "two", "output": "2"},                # right
        {"type": "position", "answer": "top left", "output": "The top left"},  # right
        {"type": "position", "answer": "top left", "output": "top"},      # wrong
    ]
    m = vqa_metrics(rows)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["by_type"] == {"color": {"n": 2, "accuracy": 0.5},          # 1 of 2
                            "count": {"n": 1, "accuracy": 1.0},
                            "position": {"n": 2, "accuracy": 0.5}}       # 1 of 2
    assert vqa_metrics([])["accuracy"] == 0.0

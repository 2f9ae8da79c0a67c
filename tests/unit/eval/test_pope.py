"""POPE parses and metrics, checked against hand-computed numbers."""

from __future__ import annotations

import pytest

from mmalign.eval.pope import binary_metrics, headline, parse_lenient, parse_strict, pope_metrics


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("yes.", "yes"), ("  YES!", "yes"), ("**No**", "no"),
    ("No, there is not.", "no"), ("Yesterday", None), ("There is a star.", None),
    ("", None), ("Nope", None),
])
def test_parse_strict_reads_only_the_first_word(text, expected):
    assert parse_strict(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes, there is a star.", "yes"),
    ("There is no star.", "no"),
    ("I do not see one. Yes", "no"),      # 'not' in the first sentence
    ("Yes. There is no star.", "yes"),    # only the first sentence counts
    ("No", "no"), ("no, it is not", "no"),
    ("Not really", "no"),                 # lower-cased: our one deviation from LLaVA
    ("", "yes"),                          # LLaVA: nothing says no, so yes
    ("Nope", "yes"),                      # LLaVA's quirk, kept
])
def test_parse_lenient_is_llavas_rule(text, expected):
    assert parse_lenient(text) == expected


def test_binary_metrics_hand_computed():
    gold = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    pred = ["yes", "no", None, "yes", "no", "no", None, "yes"]
    m = binary_metrics(gold, pred)
    # TP = {0, 7} = 2; FP = {3} = 1; FN = gold yes not said yes = {1, 2} = 2
    # correct = {0, 4, 5, 7} = 4 of 8
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(2 / 3)           # 2 / (2 + 1)
    assert m["recall"] == pytest.approx(2 / 4)              # 2 / (2 + 2)
    assert m["f1"] == pytest.approx(4 / 7)                  # 2 * 2/3 * 1/2 / (2/3 + 1/2)
    assert m["yes_ratio"] == pytest.approx(3 / 8)           # said yes at 0, 3, 7
    assert m["unknown_rate"] == pytest.approx(2 / 8)        # None at 2, 6


def test_binary_metrics_empty_and_no_yes():
    assert binary_metrics([], [])["accuracy"] == 0.0
    m = binary_metrics(["yes", "no"], [None, None])
    assert (m["precision"], m["recall"], m["f1"], m["unknown_rate"]) == (0.0, 0.0, 0.0, 1.0)


def test_pope_metrics_per_split_and_both_parses():
    rows = [
        {"split": "random", "answer": "yes", "output": "Yes."},
        {"split": "random", "answer": "no", "output": "No."},
        {"split": "random", "answer": "yes", "output": "There is a star."},
        {"split": "random", "answer": "no", "output": "There is no star."},
        {"split": "popular", "answer": "yes", "output": "Yes"},
        {"split": "popular", "answer": "no", "output": "Yes"},
    ]
    m = pope_metrics(rows)
    assert m["n"] == 6
    assert set(m["strict"]) == {"random", "popular", "overall"}  # no adversarial rows
    # random, strict: preds yes, no, None, None -> TP 1, FP 0, FN 1; correct 2/4
    r = m["strict"]["random"]
    assert (r["accuracy"], r["precision"], r["recall"]) == (0.5, 1.0, 0.5)
    assert r["f1"] == pytest.approx(2 / 3)                  # 2 * 1 * .5 / 1.5
    assert (r["yes_ratio"], r["unknown_rate"]) == (0.25, 0.5)
    # random, lenient: yes, no, yes, no -> all right
    r = m["lenient"]["random"]
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0, 1.0)
    assert (r["yes_ratio"], r["unknown_rate"]) == (0.5, 0.0)
    # popular, both parses: yes, yes -> TP 1, FP 1, FN 0
    for mode in ("strict", "lenient"):
        p = m[mode]["popular"]
        assert (p["accuracy"], p["precision"], p["recall"]) == (0.5, 0.5, 1.0)
        assert p["f1"] == pytest.approx(2 / 3)              # 2 * .5 * 1 / 1.5
        assert p["yes_ratio"] == 1.0
    # overall strict: gold y n y n y n, pred y n None None y y -> TP 2, FP 1, FN 1; correct 3
    o = m["strict"]["overall"]
    assert o["accuracy"] == pytest.approx(3 / 6)
    assert o["precision"] == pytest.approx(2 / 3) and o["recall"] == pytest.approx(2 / 3)
    assert o["f1"] == pytest.approx(2 / 3)
    assert o["unknown_rate"] == pytest.approx(2 / 6)
    # overall lenient: pred y n y n y y -> TP 3, FP 1, FN 0; correct 5
    o = m["lenient"]["overall"]
    assert o["accuracy"] == pytest.approx(5 / 6)
    assert o["precision"] == pytest.approx(3 / 4) and o["recall"] == 1.0
    assert o["f1"] == pytest.approx(6 / 7)                  # 2 * .75 / 1.75
    assert o["yes_ratio"] == pytest.approx(4 / 6)
    assert headline(m) == {"F1 random": 1.0, "F1 popular": pytest.approx(2 / 3)}

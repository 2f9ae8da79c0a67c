"""Multiple choice: rotations, prompt, letter parse, CircularEval."""

from __future__ import annotations

import pytest

from mmalign.eval.mc import (
    INSTRUCTION,
    LETTERS,
    build_items,
    circular_eval,
    mc_prompt,
    parse_choice,
    rotations,
)

COLORS = ["red", "blue", "green", "yellow"]


def test_rotations_move_the_answer_with_its_option():
    assert rotations(["a", "b", "c", "d"], 2) == [
        (["a", "b", "c", "d"], 2), (["b", "c", "d", "a"], 1),
        (["c", "d", "a", "b"], 0), (["d", "a", "b", "c"], 3)]
    assert rotations(["small", "large"], 0) == [(["small", "large"], 0),
                                                (["large", "small"], 1)]


def test_prompt_is_llavas_mmbench_format():
    assert mc_prompt("What color is the star?", ["red", "blue"]) == (
        "What color is the star?\nA. red\nB. blue\n"
        "Answer with the option's letter from the given choices directly.")
    assert INSTRUCTION.startswith("Answer with the option's letter")


@pytest.mark.parametrize("text, options, expected", [
    ("B", COLORS, 1), ("(C)", COLORS, 2), ("B. blue", COLORS, 1), ("D.", COLORS, 3),
    ("The answer is D.", COLORS, 3),
    ("Blue.", COLORS, 1),              # no letter: the option text
    ("E", COLORS, None),               # not an offered letter
    ("C", ["small", "large"], None),   # only A and B are offered
    ("large", ["small", "large"], 1),
    ("It is large, not small", ["small", "large"], None),  # two options named: ambiguous
    ("2", ["one", "two", "three"], 1),  # normalised like VQA
    ("A red circle", COLORS, 0),       # a leading article reads as the letter A (documented)
    ("I do not know", COLORS, None),
    ("", COLORS, None),
])
def test_parse_choice(text, options, expected):
    assert parse_choice(text, options) == expected


def _rows(bench_row, outputs):
    items = build_items([bench_row])
    return [it | {"output": out} for it, out in zip(items, outputs, strict=True)]


def test_circular_eval_hand_computed():
    q1 = {"id": "q1", "image": "i.png", "type": "color", "question": "?", "options": COLORS,
          "answer": 1}
    q2 = q1 | {"id": "q2", "answer": 3}
    q3 = q1 | {"id": "q3", "type": "size", "options": ["small", "large"], "answer": 0}
    right = lambda q: [LETTERS[it["answer"]] for it in build_items([q])]  # noqa: E731
    rows = (_rows(q1, right(q1))                                      # 4 of 4 right
            + _rows(q2, [*right(q2)[:2], "I don't know", right(q2)[3]])  # rotation 2 unknown
            + _rows(q3, right(q3))[:1])                               # only rotation 0 of 2
    m = circular_eval(rows)
    assert m["n_rows"] == 9 and m["n_questions"] == 2 and m["incomplete"] == 1
    assert m["circular_accuracy"] == pytest.approx(1 / 2)       # q1 yes, q2 no; q3 left out
    assert m["single_pass_accuracy"] == pytest.approx(3 / 3)    # rotation 0 right in q1..q3
    assert m["per_rotation_accuracy"] == pytest.approx(8 / 9)   # 4 + 3 + 1 right of 9
    assert m["unknown_rate"] == pytest.approx(1 / 9)
    assert m["by_type"]["color"] == {"n": 2, "circular_accuracy": 0.5,
                                     "single_pass_accuracy": 1.0}
    assert m["by_type"]["size"]["n"] == 0


def test_always_a_scores_zero_under_circular_eval():
    qs = [{"id": f"q{k}", "image": "i.png", "type": "color", "question": "?",
           "options": COLORS, "answer": k} for k in range(4)]
    rows = [r for q in qs for r in _rows(q, ["A"] * 4)]
    m = circular_eval(rows)
    # "A" is right in exactly one rotation of each question -> never right in all four
    assert m["circular_accuracy"] == 0.0
    assert m["single_pass_accuracy"] == pytest.approx(1 / 4)   # only q0 has its answer at A
    assert m["per_rotation_accuracy"] == pytest.approx(4 / 16)

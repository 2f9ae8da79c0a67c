"""SteerLM's attribute string (DESIGN 6.3), written out by hand."""

from __future__ import annotations

import pytest

from mmalign.records import Turn
from mmalign.train.steerlm import (
    attribute_string,
    inference_prompt,
    parse_attribute_string,
    steer_question,
    training_prompt,
)

RATINGS = {"helpfulness": 3.0, "correctness": 4.0, "coherence": 2.0, "complexity": 1.0,
           "verbosity": 0.0}
EXPECTED = ("Please answer the question such that your response is in the following attributes "
            "in 5-point Likert scale:\nHelpfulness:3,Correctness:4,Coherence:2,Complexity:1,"
            "Verbosity:0")


def test_exact_string():
    assert attribute_string(RATINGS) == EXPECTED
    assert steer_question("How many stars?", RATINGS) == "How many stars?\n" + EXPECTED
    # the order is fixed by the format, not by the dict
    assert attribute_string(dict(reversed(list(RATINGS.items())))) == EXPECTED


def test_training_prompt_uses_actual_ratings_on_the_last_user_turn():
    prompt = [Turn("system", "Be exact."), Turn("user", "<image>\nIs there a star?"),
              Turn("assistant", "Yes."), Turn("user", "What color is it?")]
    out = training_prompt(prompt, RATINGS)
    assert out[:3] == prompt[:3]
    assert out[3] == Turn("user", "What color is it?\n" + EXPECTED)
    assert prompt[3].content == "What color is it?"  # the input is not modified


def test_inference_prompt_asks_for_chosen_values():
    [t] = inference_prompt([Turn("user", "<image>\nDescribe.")])
    assert t.content.endswith("Helpfulness:4,Correctness:4,Coherence:4,Complexity:4,"
                              "Verbosity:4")
    [t] = inference_prompt([Turn("user", "Describe.")], {"verbosity": 1, "complexity": 2})
    assert t.content.endswith("Coherence:4,Complexity:2,Verbosity:1")
    assert parse_attribute_string(t.content) == {
        "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 1}


@pytest.mark.parametrize("bad, match", [
    ({**RATINGS, "verbosity": 5}, "whole number 0-4"),
    ({**RATINGS, "coherence": 2.5}, "whole number 0-4"),
    ({k: v for k, v in RATINGS.items() if k != "complexity"}, "'complexity'"),
])
def test_bad_values_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        attribute_string(bad)


def test_needs_a_user_turn_and_parses_strictly():
    with pytest.raises(ValueError, match="user turn"):
        training_prompt([Turn("system", "x")], RATINGS)
    with pytest.raises(ValueError, match="no SteerLM"):
        parse_attribute_string("plain question")
    with pytest.raises(ValueError, match="malformed"):
        parse_attribute_string(EXPECTED.replace("Coherence:2", "Coherence:two"))

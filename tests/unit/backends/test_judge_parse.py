"""The rating parser, judge prompts, the LLM judge's re-ask logic and the agreement report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmalign.backends.base import GenRequest
from mmalign.backends.judge import (
    JudgeItem,
    LLMJudge,
    RatingParseError,
    RequestRejected,
    agreement,
    load_prompt,
    parse_rating,
    render_question,
)
from mmalign.records import RATING_ATTRIBUTES, Rating, Turn

FULL = {"helpfulness": 3, "correctness": 4, "coherence": 2, "complexity": 1, "verbosity": 0}


def reply(scores=FULL, reasoning="The answer names the right colour.") -> str:
    return json.dumps({"reasoning": reasoning, "scores": scores})


# --------------------------------------------------------------------------- parser


def test_parses_the_asked_form():
    p = parse_rating(reply())
    assert p.scores == FULL
    assert p.reasoning == "The answer names the right colour."


def test_prose_then_fenced_json_takes_reasoning_from_the_prose():
    text = ("The answer says two circles, and there are two.\n```json\n"
            + json.dumps({"scores": FULL}) + "\n```")
    p = parse_rating(text)
    assert p.scores == FULL
    assert p.reasoning == "The answer says two circles, and there are two."


def test_last_object_wins_and_keys_are_case_insensitive():
    first = json.dumps({"scores": dict.fromkeys(FULL, 0)})
    second = json.dumps({"Scores": {k.capitalize(): v for k, v in FULL.items()}})
    assert parse_rating(f"draft: {first}\nfinal: {second}").scores == FULL


def test_flat_scores_and_whole_floats_are_accepted():
    flat = {k: float(v) for k, v in FULL.items()}
    p = parse_rating(json.dumps(flat))
    assert p.scores == FULL and all(isinstance(v, int) for v in p.scores.values())


@pytest.mark.parametrize("text, reason", [
    ("The answer is good. I would give it a 4 overall.", "no JSON object"),
    ("", "empty"),
    ('{"reasoning": "fine"}', "no 'scores'"),
    (json.dumps({"scores": {"helpfulness": 3, "coherence": 2}}),
     "missing scores for correctness, complexity, verbosity"),
    (json.dumps({"scores": FULL | {"correctness": 7}}), "correctness=7 is out of range"),
    (json.dumps({"scores": FULL | {"verbosity": -1}}), "verbosity=-1 is out of range"),
    (json.dumps({"scores": FULL | {"coherence": 2.5}}), "coherence=2.5 is not a whole number"),
    (json.dumps({"scores": FULL | {"coherence": "3"}}), 'coherence="3" is not a whole number'),
    (json.dumps({"scores": FULL | {"helpfulness": True}}), "helpfulness=true is not a whole"),
    ("{not json at all", "no JSON object"),
])
def test_malformed_replies_are_refused_with_the_reason(text, reason):
    with pytest.raises(RatingParseError) as e:
        parse_rating(text)
    assert reason in e.value.reason


def test_every_problem_is_named_at_once():
    bad = {"helpfulness": 9, "coherence": "x"}
    with pytest.raises(RatingParseError) as e:
        parse_rating(json.dumps({"scores": bad}))
    msg = e.value.reason
    assert "missing scores for correctness, complexity, verbosity" in msg
    assert "helpfulness=9 is out of range" in msg and 'coherence="x"' in msg


# --------------------------------------------------------------------------- prompts


def test_packaged_prompt_hash_is_the_file_sha256():
    p = load_prompt("judge_v1")
    path = Path(__import__("mmalign").__file__).parent / "prompts" / "judge_v1.txt"
    assert p.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    text = p.render("How many circles?", "Two.", "There are two circles.")
    assert "How many circles?" in text and "Two." in text and "There are two circles." in text
    assert "{" + "question}" not in text and "=== " not in text
    assert "reference" not in p.render("Q?", "A.", None).lower()
    assert "could not be used: missing scores" in p.reask("missing scores")


def test_custom_prompt_file_and_clear_errors(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("Q: {question}\nA: {response}\nJSON please.\n=== re-ask ===\nBad: {error}")
    p = load_prompt(f)
    assert p.name == "mine" and p.reask("oops") == "Bad: oops"
    g = tmp_path / "broken.txt"
    g.write_text("no placeholders here")
    with pytest.raises(ValueError, match=r"\{question\}"):
        load_prompt(g)
    with pytest.raises(FileNotFoundError, match="judge_v1"):
        load_prompt("judge_v99")


def test_render_question_drops_placeholders_and_keeps_dialogue():
    assert render_question([Turn("user", "<image>\nWhat color?")]) == "What color?"
    two = render_question([Turn("user", "<image>\nIs there a star?"), Turn("assistant", "Yes."),
                           Turn("user", "What color is it?")])
    assert two == "User: Is there a star?\nAssistant: Yes.\nUser: What color is it?"


# --------------------------------------------------------------------------- LLM judge


class ScriptedJudgeModel:
    """A Generator whose replies depend on the answer being rated and on whether the request
    is a re-ask; it records every conversation it was sent."""

    name = "scripted"

    def __init__(self):
        self.seen: list[GenRequest] = []

    def generate(self, requests):
        self.seen += requests
        out = []
        for r in requests:
            first = r.messages[0].content
            answer = first.split("Answer to rate:\n", 1)[1].split("\n\n", 1)[0]
            reask = len(r.messages) > 1
            if "REJECT" in answer:
                raise RequestRejected("HTTP 400: too long")
            if "HOPELESS" in answer:
                out.append("I think it is quite good, maybe a four.")
            elif "FIXABLE" in answer and not reask:
                out.append(json.dumps({"scores": {"helpfulness": 3}}))
            else:
                n = min(4, len(answer.split()))
                out.append(reply({a: n for a in RATING_ATTRIBUTES}, f"{n} words"))
        return out


def _item(responses, id="g1"):
    return JudgeItem(id=id, images=[Path("x.png")], question="How many stars?",
                     responses=responses, reference="There are two stars.")


def test_reask_then_record_failure_without_stopping():
    model = ScriptedJudgeModel()
    judge = LLMJudge(model, max_reasks=1)
    [ratings] = judge.rate([_item(["Two stars.", "FIXABLE answer here", "HOPELESS", "One"])])
    assert [r.response_index for r in ratings] == [0, 1, 2, 3]
    assert ratings[0].scores == {a: 2.0 for a in RATING_ATTRIBUTES}
    assert ratings[1].error is None and ratings[1].scores["helpfulness"] == 3.0
    assert ratings[2].error and "no JSON object" in ratings[2].error and not ratings[2].scores
    assert "after 2 tries" in ratings[2].error
    assert ratings[3].scores["verbosity"] == 1.0
    for r in ratings:
        assert r.judge == "scripted/judge_v1+ref" and r.prompt_hash == load_prompt().sha256
        assert r.sample_id == "g1"
    # 4 first asks + 2 re-asks (FIXABLE and HOPELESS), each re-ask in the same conversation
    assert len(model.seen) == 6
    reasks = [r for r in model.seen if len(r.messages) == 3]
    assert len(reasks) == 2
    fixable = next(r for r in reasks if "FIXABLE" in r.messages[0].content)
    assert fixable.messages[1].role == "assistant"
    assert "missing scores for correctness" in fixable.messages[2].content
    assert judge.stats == {"requests": 6, "reasks": 2, "failed": 1}
    assert all(r.meta["prompt_hash"] == judge.prompt_hash for r in model.seen)


def test_no_reask_when_max_reasks_is_zero():
    model = ScriptedJudgeModel()
    [ratings] = LLMJudge(model, max_reasks=0).rate([_item(["FIXABLE one"])])
    assert ratings[0].error and "after 1 tries" in ratings[0].error
    assert len(model.seen) == 1


def test_rejected_request_is_recorded_and_the_rest_rated():
    model = ScriptedJudgeModel()
    out = LLMJudge(model).rate([_item(["REJECT me", "Fine answer."], "a"),
                                _item(["Also fine."], "b")])
    assert out[0][0].error and "request rejected" in out[0][0].error
    assert out[0][1].error is None and out[1][0].error is None


def test_reference_shown_only_when_asked():
    model = ScriptedJudgeModel()
    LLMJudge(model, use_reference=False).rate([_item(["Two."])])
    assert "There are two stars." not in model.seen[0].messages[0].content
    assert model.seen[0].messages[0].content.startswith("<image>\n")


# --------------------------------------------------------------------------- agreement


def _r(scores, error=None):
    return Rating("g", "a", scores if not error else {}, error=error)


def test_agreement_by_hand():
    a = [_r(dict.fromkeys(RATING_ATTRIBUTES, 2)), _r(dict.fromkeys(RATING_ATTRIBUTES, 4)),
         _r({}, error="bad")]
    b = [_r(dict.fromkeys(RATING_ATTRIBUTES, 2)),
         _r(dict.fromkeys(RATING_ATTRIBUTES, 4) | {"correctness": 3, "verbosity": 1}),
         _r(dict.fromkeys(RATING_ATTRIBUTES, 1))]
    rep = agreement(a, b)
    assert rep["n"] == 2 and rep["failed"] == 1
    assert rep["attributes"]["helpfulness"] == {"exact": 1.0, "within_1": 1.0,
                                                "mean_abs_diff": 0.0}
    assert rep["attributes"]["correctness"] == {"exact": 0.5, "within_1": 1.0,
                                                "mean_abs_diff": 0.5}
    assert rep["attributes"]["verbosity"] == {"exact": 0.5, "within_1": 0.5,
                                              "mean_abs_diff": 1.5}
    assert rep["exact_all"] == 0.5
    assert rep["exact_mean"] == pytest.approx((1 + 0.5 + 1 + 1 + 0.5) / 5)


def test_image_placeholders_in_quoted_text_are_made_inert():
    model = ScriptedJudgeModel()
    LLMJudge(model).rate([_item(["It shows <image> twice <image>."])])
    content = model.seen[0].messages[0].content
    assert content.count("<image>") == 1  # only the judge's own image
    assert "It shows [image] twice [image]." in content

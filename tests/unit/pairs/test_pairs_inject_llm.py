"""The LLM injector: prompt file, strict reply parsing, diff spans, failures recorded.

`ScriptedGenerator` is a test double of our own `Generator` protocol (it replies from a
script); the real local-model path runs in tests/integration/pairs on the tiny HF model.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest

from mmalign.backends.base import Generator, GenRequest, RequestRejected
from mmalign.pairs.inject import Injected, Skipped, Target, inject_hallucinations
from mmalign.pairs.inject_llm import (
    InjectionParseError,
    LLMInjector,
    diff_edits,
    load_inject_prompt,
    parse_injection,
)
from mmalign.records import Sample, Turn

ANSWER = "A man rides a red bicycle past two parked cars."


class ScriptedGenerator:
    """Replies with `script(request)`; records every request it was given."""

    name = "scripted"

    def __init__(self, script):
        self.script = script
        self.requests: list[GenRequest] = []

    def generate(self, requests: list[GenRequest]) -> list[str]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            reply = self.script(r)
            if isinstance(reply, Exception):
                raise reply
            out.append(reply)
        return out


def reply(rejected: str, *claims: tuple[str, str, str]) -> str:
    return json.dumps({"rejected": rejected, "hallucinations": [
        {"type": t, "original": o, "hallucinated": h} for t, o, h in claims]})


def spans_hold(chosen: str, rejected: str, edits) -> bool:
    pc = pr = 0
    for e in sorted(edits, key=lambda x: x.start):
        if chosen[pc:e.start] != rejected[pr:e.rejected_start]:
            return False
        if chosen[e.start:e.end] != e.original or \
                rejected[e.rejected_start:e.rejected_end] != e.replacement:
            return False
        pc, pr = e.end, e.rejected_end
    return chosen[pc:] == rejected[pr:]


def test_packaged_prompt_is_versioned_and_renders():
    p = load_inject_prompt()
    data = resources.files("mmalign").joinpath("prompts", "inject_v1.txt").read_bytes()
    assert p.sha256 == hashlib.sha256(data).hexdigest()
    assert set(p.type_descriptions()) == {"object", "color", "count", "size", "position",
                                          "relation", "reasoning"}
    text = p.render("What is here?", ANSWER, ["color", "count"], 2, reasoning=False)
    assert ANSWER in text and "What is here?" in text and "- color:" in text
    assert "- object:" not in text and "{" + "answer}" not in text
    assert "reasoning" not in text.split("Rules:")[0].lower().split("use only")[1]
    assert "conclusion" in p.render("Why?", ANSWER, ["reasoning"], 1, reasoning=True)


def test_custom_prompt_file_and_missing_placeholders(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("Q {question} A {answer} T {types}")
    assert load_inject_prompt(good).name == "mine"
    bad = tmp_path / "bad.txt"
    bad.write_text("Q {question} only")
    with pytest.raises(ValueError, match=r"\{answer\}"):
        load_inject_prompt(bad)
    with pytest.raises(FileNotFoundError, match="inject_v1"):
        load_inject_prompt("inject_v9")


def test_parse_a_good_reply_gives_diff_spans():
    rejected = "A man rides a blue bicycle past three parked cars and a dog."
    text = "```json\n" + reply(rejected, ("color", "red", "blue"), ("count", "two", "three"),
                                ("object", "", "and a dog")) + "\n```"
    out, edits = parse_injection(text, ANSWER, ["color", "count", "object"])
    assert out == rejected
    assert [(e.original, e.replacement, e.type) for e in edits] == [
        ("red", "blue", "color"), ("two", "three", "count"), ("", " and a dog", "object")]
    assert spans_hold(ANSWER, rejected, edits)


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("Sure! Here is the answer: A man rides a blue bicycle.", "not one JSON object"),
    ("[1, 2]", "not an object"),
    (json.dumps({"rejected": "x"}), "'hallucinations'"),
    (reply("A man rides a blue bicycle past two parked cars.", ("colour", "red", "blue")),
     "not one of"),
    (reply("A man rides a blue bicycle past two parked cars.", ("color", "red", "green")),
     "not in 'rejected'"),
    (reply("A man rides a blue bicycle past two parked cars.", ("color", "pink", "blue")),
     "not in the answer"),
    (reply(ANSWER, ("color", "red", "red")), "unchanged"),
    (reply("Three women walk a green dog through an empty park at night.",
           ("object", "", "dog")), "words changed"),
])
def test_parse_rejects_unusable_replies(text, why):
    with pytest.raises(InjectionParseError, match=why):
        parse_injection(text, ANSWER, ["color", "count", "object"])


def test_diff_keeps_whitespace_outside_spans():
    a = "Two  cats sit.\nA red  sofa."
    b = "Two  dogs sit.\nA blue  sofa."
    edits, changed = diff_edits(a, b)
    assert changed == 2 and spans_hold(a, b, edits)
    assert [(e.original, e.replacement) for e in edits] == [("cats", "dogs"), ("red", "blue")]


def targets(n: int = 3) -> list[Target]:
    return [Target(id=f"t{k}", source_id=f"t{k}", turn=0, images=["img/a.png"],
                   prompt=[Turn("user", "<image>\nDescribe the picture.")], answer=ANSWER,
                   category="detail") for k in range(n)]


def good_script(req: GenRequest) -> str:
    return reply("A man rides a blue bicycle past two parked cars.", ("color", "red", "blue"))


def test_success_path_records_prompt_hash_and_spans():
    gen = ScriptedGenerator(good_script)
    assert isinstance(gen, Generator)
    inj = LLMInjector(gen, types=["color", "count"], max_new_tokens=64)
    out = inj.inject(targets())
    assert all(isinstance(r, Injected) for r in out)
    r = out[0]
    assert r.types == ["color"] and r.edits[0].original == "red"
    # Text only by default: no image placeholder, no image; our question and answer sent.
    req = gen.requests[0]
    assert req.images == [] and "<image>" not in req.messages[0].content
    assert ANSWER in req.messages[0].content and "Describe the picture." in \
        req.messages[0].content and req.max_new_tokens == 64
    samples = [Sample("s", ["img/a.png"], [Turn("user", "<image>\nDescribe the picture."),
                                           Turn("assistant", ANSWER)], category="detail")]
    res = inject_hallucinations(samples, LLMInjector(ScriptedGenerator(good_script)))
    pair = res.pairs[0]
    meta = pair.meta["injection"]
    assert meta["prompt_sha256"] == load_inject_prompt().sha256
    assert meta["generator"] == "scripted" and meta["edits"][0]["type"] == "color"
    assert pair.chosen == ANSWER and pair.origin == "injection"


def test_with_image_sends_the_image():
    gen = ScriptedGenerator(good_script)
    LLMInjector(gen, with_image=True, image_root="/data").inject(targets(1))
    req = gen.requests[0]
    assert [str(p) for p in req.images] == ["/data/img/a.png"]
    assert req.messages[0].content.startswith("<image>\n")


def test_bad_reply_is_reasked_then_recorded_not_raised():
    calls = {"n": 0}

    def script(req):
        calls["n"] += 1
        # First answers are junk; a re-ask (3 turns: ask, junk, re-ask) gets a good reply
        # for t0 only.
        if len(req.messages) == 3 and "t0-marker" in req.messages[0].content:
            return good_script(req)
        return "I cannot help with that."

    tg = targets(2)
    tg[0].prompt = [Turn("user", "<image>\nDescribe the picture. t0-marker")]
    out = LLMInjector(ScriptedGenerator(script), retries=1).inject(tg)
    assert isinstance(out[0], Injected) and out[0].info["attempts"] == 2
    assert isinstance(out[1], Skipped) and out[1].failed and out[1].code == "llm-unusable"
    assert out[1].raw == "I cannot help with that." and "JSON" in out[1].reason
    assert calls["n"] == 4  # 2 first asks + 2 re-asks


def test_a_refused_request_fails_only_itself():
    def script(req):
        if "t1-marker" in req.messages[0].content:
            return RequestRejected("400: prompt too long")
        return good_script(req)

    tg = targets(3)
    tg[1].prompt = [Turn("user", "<image>\nDescribe the picture. t1-marker")]
    out = LLMInjector(ScriptedGenerator(script), retries=0).inject(tg)
    assert [type(r).__name__ for r in out] == ["Injected", "Skipped", "Injected"]
    assert out[1].code == "llm-request" and "too long" in out[1].reason


def test_reasoning_type_only_offered_for_reasoning_answers():
    gen = ScriptedGenerator(good_script)
    inj = LLMInjector(gen, types=["color", "reasoning"])
    t = targets(2)
    t[1].category = "reasoning"
    inj.inject(t)
    first, second = (r.messages[0].content for r in gen.requests)
    assert "- reasoning:" not in first and "- reasoning:" in second

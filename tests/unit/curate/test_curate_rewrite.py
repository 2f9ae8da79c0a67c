"""The rewrite guard (scene-exact and lexical) and the rewrite/review flow."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest

from mmalign.backends.base import Generator
from mmalign.curate.rewrite import (
    LexicalGuard,
    RewriteConfig,
    SceneGuard,
    clean_rewrite,
    load_prompt,
    parse_choice,
    rewrite_samples,
)
from mmalign.records import Sample, Turn
from mmalign.world.scene import Obj, Scene

IMAGE = "images/corpus/c000001.png"


@pytest.fixture
def scene():
    return Scene("c000001", "sand", [
        Obj("circle", "red", "large", (0, 0), 0.15, 0.15),
        Obj("square", "blue", "small", (2, 2), 0.85, 0.85),
        Obj("square", "green", "small", (2, 0), 0.85, 0.15),
    ], image=IMAGE)


@pytest.fixture
def guard(scene):
    return SceneGuard({IMAGE: scene})


def sample(*qa):
    turns = []
    for k, (q, a) in enumerate(qa):
        turns += [Turn("user", ("<image>\n" if k == 0 else "") + q), Turn("assistant", a)]
    return Sample("s", [IMAGE], turns, "conversation")


EXIST_Q = "Is there a circle in the image?"
EXIST_A = "Yes, there is a large red circle in the upper left corner of the image."


@pytest.mark.parametrize("question, original, rewrite", [
    (EXIST_Q, EXIST_A, "Yes. A large red circle sits at the top left."),
    ("How many squares are there in the image?", "There are two squares in the image.",
     "Two squares."),
    ("What color is the circle?", "The circle in the image is red.", "Red."),
    ("Is the circle to the left of the blue square?",
     "Yes, the circle is to the left of the blue square.", "Yes."),
])
def test_scene_guard_accepts_faithful_rewrites(guard, question, original, rewrite):
    assert guard.check(question, original, rewrite, sample((question, original))) is None


@pytest.mark.parametrize("question, original, rewrite, reason", [
    (EXIST_Q, EXIST_A, "Yes. A large blue circle sits at the top left.", "false"),
    (EXIST_Q, EXIST_A, "Yes. A large red circle and a yellow star sit at the top left.",
     "false: mentions a yellow star"),
    (EXIST_Q, EXIST_A, "Yes. A large red circle sits at the bottom left.", "position"),
    (EXIST_Q, EXIST_A, "Yes, there is a circle.", "object dropped: large red circle"),
    (EXIST_Q, EXIST_A, "No. A large red circle sits at the top left.", "yes/no changed"),
    (EXIST_Q, EXIST_A, "Yes, there is a large red", "incomplete"),
    ("How many squares are there in the image?", "There are two squares in the image.",
     "There are three squares.", "false: says 3 square"),
    ("Is the circle large or small?", "The circle in the image is large.",
     "The circle is small.", "false: calls the circle small"),
    ("Is the circle above the blue square?", "Yes, the circle is above the blue square.",
     "Yes, the circle is below the blue square.", "relation"),
])
def test_scene_guard_rejects_fact_changes(guard, question, original, rewrite, reason):
    got = guard.check(question, original, rewrite, sample((question, original)))
    assert got is not None and got.startswith(reason), got


def test_scene_guard_falls_back_to_lexical_without_a_scene(guard):
    other = Sample("o", ["elsewhere.png"], [Turn("user", "<image>\nQ?"),
                                            Turn("assistant", "Two red dogs.")])
    assert guard.check("Q?", "Two red dogs.", "Yes, two red dogs.", other) == \
        "yes/no changed: None -> yes"
    assert guard.check("Q?", "Two red dogs.", "A pair of red dogs.", other) is None
    assert guard.fallbacks == 2


@pytest.mark.parametrize("rewrite, ok", [
    ("A red couch has two dogs sitting on it.", True),
    ("A red couch has 2 dogs sitting on it.", True),
    ("Three dogs sit on a red couch.", False),
    ("Two dogs sit on a blue couch.", False),
    ("Two cats sit on a red couch.", False),
    ("Two dogs and a cat sit on a red couch.", False),
    ("Two dogs do not sit on a red couch.", False),
])
def test_lexical_guard(rewrite, ok):
    s = Sample("x", [], [Turn("user", "What is there?"), Turn("assistant", "x")])
    got = LexicalGuard().check("What is there?", "Two dogs sit on a red couch.", rewrite, s)
    assert (got is None) == ok, got


def test_prompt_files_are_versioned_and_hashed():
    p = load_prompt("rewrite_v1", ("question", "answer"))
    data = resources.files("mmalign").joinpath("prompts", "rewrite_v1.txt").read_bytes()
    assert p.sha256 == hashlib.sha256(data).hexdigest()
    text = p.render(question="Q {x}?", answer="A {answer}.")
    assert "Q {x}?" in text and "{question}" not in text
    with pytest.raises(ValueError, match=r"lacks the placeholder\(s\) \{a\}, \{b\}"):
        load_prompt("rewrite_v1", ("a", "b"))
    with pytest.raises(FileNotFoundError):
        load_prompt("no_such_prompt")


def test_parsing_helpers():
    assert clean_rewrite(' Answer: "Two squares." ') == "Two squares."
    assert parse_choice("B") == "B" and parse_choice("Answer A is better.") == "A"
    assert parse_choice("Neither.") is None


class ScriptedModel:
    """A Generator that rewrites from a table and reviews by preferring the shorter answer,
    whichever letter it is shown under (so the A/B shuffle must be undone correctly)."""

    name = "scripted"

    def __init__(self, rewrites: dict[str, str]):
        self.rewrites = rewrites
        self.requests = []
        self.letters = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.requests.append(r)
            text = r.messages[-1].content
            if "Answer A:" in text:
                a = re.search(r"Answer A: (.*)\n", text).group(1)
                b = re.search(r"Answer B: (.*)\n", text).group(1)
                self.letters.append("A" if len(a) <= len(b) else "B")
                out.append(self.letters[-1])
            else:
                answer = re.search(r"Answer: (.*)", text).group(1)
                out.append(self.rewrites[answer])
        return out


def test_rewrite_review_and_guard_counts(guard):
    samples = [
        sample((EXIST_Q, EXIST_A), ("What color is the circle?", "The circle is red.")),
        sample(("How many squares?", "There are two squares in the image.")),
        sample(("What is at the top left?", "A large red circle."),
               ("Is there a star?", "No, there is no star in the image.")),
    ]
    rewrites = {
        EXIST_A: "Yes. A large red circle at the top left.",  # faithful, shorter: chosen
        "The circle is red.": "The circle is blue.",  # changes a fact: rejected
        "There are two squares in the image.": "In the picture there are two squares, as "
                                               "far as one can see.",  # longer: not chosen
        "A large red circle.": "A large red circle.",  # identical: kept, not reviewed
        "No, there is no star in the image.": "   ",  # empty: rejected
    }
    runs, letters = [], set()
    for seed in range(6):
        gen = ScriptedModel(rewrites)
        assert isinstance(gen, Generator)
        out, report = rewrite_samples(samples, gen, guard, RewriteConfig(seed=seed))
        runs.append([[t.to_dict() for t in s.turns] for s in out])
        letters |= set(gen.letters)
        assert report["counts"] == {"records": 3, "answers": 5, "rewritten": 1, "kept": 2,
                                    "rejected": 2}
        assert out[0].answers == ["Yes. A large red circle at the top left.",
                                  "The circle is red."]
        assert out[1].turns == samples[1].turns and out[2].turns == samples[2].turns
        assert report["records_changed"] == 1
        decisions = [d["decision"] for s in out for d in s.meta["rewrite"]["turns"]]
        assert decisions == ["rewritten", "rejected", "kept", "kept", "rejected"]
        assert out[0].meta["rewrite"]["rewrite_prompt_sha256"] == \
            load_prompt("rewrite_v1").sha256
        assert all(r.images == [] for r in gen.requests)  # text only: the inner LLM
        assert sum("Answer A:" in r.messages[-1].content for r in gen.requests) == 2
    # the reviewer saw the rewrite under both letters across seeds; outcomes never changed
    assert letters == {"A", "B"} and all(r == runs[0] for r in runs)

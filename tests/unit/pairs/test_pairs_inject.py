"""The lexical injector on hand-written COCO-like English, and the pieces around it."""

from __future__ import annotations

import difflib
import re

import pytest

from mmalign.pairs.inject import (
    HALLUCINATION_TYPES,
    Edit,
    Injected,
    InjectionError,
    LexicalInjector,
    Skipped,
    Target,
    answer_targets,
    apply_edits,
    inject_hallucinations,
    parse_types,
)
from mmalign.pairs.lexicon import Lexicon
from mmalign.records import Sample, Turn

EN = Lexicon.default()
COLOURS = set(EN.colors)


def target(answer: str, *, context: list[str] | None = None, category: str = "detail",
           question: str = "Describe the image.", tid: str = "t") -> Target:
    return Target(id=tid, source_id=tid, turn=0, images=["coco/1.jpg"],
                  prompt=[Turn("user", f"<image>\n{question}")], answer=answer,
                  category=category, context=context or [answer])


def inject(answer: str, types: str, **kw) -> Injected | Skipped:
    evidence = kw.pop("object_evidence", "absent")
    seed = kw.pop("seed", 0)
    inj = LexicalInjector(EN, types=parse_types(types), object_evidence=evidence, seed=seed)
    return inj.inject_one(target(answer, **kw))


def unchanged_outside(chosen: str, r: Injected) -> bool:
    """Character-exact agreement outside the spans, and a word diff that only touches them."""
    pc = pr = 0
    for e in r.edits:
        if chosen[pc:e.start] != r.rejected[pr:e.rejected_start]:
            return False
        if chosen[e.start:e.end] != e.original or \
                r.rejected[e.rejected_start:e.rejected_end] != e.replacement:
            return False
        pc, pr = e.end, e.rejected_end
    if chosen[pc:] != r.rejected[pr:]:
        return False
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", chosen)]
    sm = difflib.SequenceMatcher(None, [w for _, w in words], r.rejected.split())
    for op, i1, i2, _, _ in sm.get_opcodes():
        for pos, w in words[i1:i2] if op != "equal" else []:
            if not any(e.start <= pos + len(w) and pos <= e.end for e in r.edits):
                return False
    return True


def only_edit(r: Injected | Skipped) -> Edit:
    assert isinstance(r, Injected), getattr(r, "reason", r)
    assert len(r.edits) == 1
    return r.edits[0]


def test_colour_change_fixes_the_article():
    chosen = "An orange cat is lying under a wooden table."
    r = inject(chosen, "color")
    e = only_edit(r)
    new = e.replacement.split()[-1]
    assert e.kind == "color" and e.target == "cat"
    assert new in COLOURS and new != "orange"
    article = "An" if new[0] in "aeiou" else "A"
    assert r.rejected == f"{article} {new} cat is lying under a wooden table."
    assert unchanged_outside(chosen, r)


def test_predicative_colour_and_background_colour():
    r = inject("The umbrella is blue.", "color")
    e = only_edit(r)
    assert e.original == "blue" and e.replacement in COLOURS - {"blue"}
    assert e.target == "umbrella"
    # A colour that describes no object (a wall is not in the lexicon), or sits in a negated
    # clause, is no hallucination to make: skipped, with the reason.
    for text in ("The wall is painted white.", "There is no red car in the street."):
        s = inject(text, "color")
        assert isinstance(s, Skipped) and "colour" in s.reason


def test_count_change_keeps_grammar():
    chosen = "Two cars are parked on the left side of the road."
    e = only_edit(r := inject(chosen, "count"))
    assert e.kind == "count" and e.target == "car"
    if r.rejected.startswith("One"):
        assert r.rejected == "One car is parked on the left side of the road."
    else:
        assert r.rejected == "Three cars are parked on the left side of the road."
    assert unchanged_outside(chosen, r)
    r = inject("There are three people standing near the bus.", "count")
    assert r.rejected in ("There are two people standing near the bus.",
                          "There are four people standing near the bus.")
    r = inject("There is one dog in the yard.", "count")
    assert r.rejected == "There are two dogs in the yard."
    # "one of them" is no count of objects.
    assert isinstance(inject("One of them is smiling.", "count"), Skipped)


def test_size_position_and_relation():
    r = inject("A small table with two chairs stands by the window.", "size")
    assert r.rejected == "A large table with two chairs stands by the window."
    r = inject("Two cars are parked on the left side of the road.", "position")
    assert r.rejected == "Two cars are parked on the right side of the road."
    r = inject("The cat is sleeping on top of the couch.", "relation")
    assert r.rejected == "The cat is sleeping underneath the couch."
    r = inject("Three people are standing in front of the bus.", "relation")
    assert r.rejected == "Three people are standing behind the bus."
    assert only_edit(r).target == "bus"
    # "left" that places nothing is left alone.
    assert isinstance(inject("The man left the room with a dog.", "position"), Skipped)
    # A denied relation is asserted instead (false, since the denial was true) ...
    r = inject("No, the cat is not under the table.", "relation")
    assert r.rejected == "Yes, the cat is under the table."
    assert unchanged_outside("No, the cat is not under the table.", r)
    # ... but not under any other negation, where the result need not be false.
    assert isinstance(inject("No cat is under the table.", "relation"), Skipped)
    assert isinstance(inject("The cat is never under the table.", "relation"), Skipped)


def test_object_added_only_when_the_corpus_denies_it():
    chosen = "A man is riding a bicycle down the street."
    context = [chosen, "There is no dog in this picture.", "The man wears a helmet."]
    r = inject(chosen, "object", context=context)
    e = only_edit(r)
    assert e.kind == "object" and e.target == "dog" and e.evidence == "absent"
    assert e.start == e.end == len(chosen)  # a sentence appended, nothing else touched
    assert re.search(r"\bdog\b", e.replacement)
    assert unchanged_outside(chosen, r)
    # The answer's own denial turned round is the other way to add an absent object.
    flip = "No, there is no dog in the picture."
    e = only_edit(r := inject(flip, "object"))
    assert r.rejected == "Yes, there is a dog in the picture." and e.evidence == "absent"
    r = inject("There are no elephants here.", "object")
    assert r.rejected == "There are some elephants here."
    # Without an answer denying something, "absent" evidence cannot add an object ...
    s = inject(chosen, "object")
    assert isinstance(s, Skipped) and "absent" in s.reason
    # ... "unmentioned" adds a plausible one (same COCO super-category here: the answers
    # mention a man and a bicycle), never one the image's answers already name.
    for seed in range(10):
        e = only_edit(inject(chosen, "object", object_evidence="unmentioned", context=context,
                             seed=seed))
        assert e.evidence in ("unmentioned", "absent")
        assert e.target not in ("man", "bicycle", "helmet")
        assert EN.objects[e.target].group in ("person", "vehicle", "accessory") or \
            e.target == "dog"


def test_reasoning_changes_rationale_and_conclusion():
    chosen = ("There are two dogs and one cat on the sofa. Since two is more than one, "
              "the answer is yes.")
    r = inject(chosen, "reasoning", category="reasoning")
    assert isinstance(r, Injected) and r.types == ["reasoning"]
    roles = {e.role: e for e in r.edits}
    assert set(roles) == {"rationale", "conclusion"}
    assert roles["conclusion"].original == "yes" and roles["conclusion"].replacement == "no"
    assert roles["rationale"].kind == "count"
    assert roles["rationale"].end <= chosen.index("Since")
    assert unchanged_outside(chosen, r)
    # A negated conclusion is lifted; a conclusion's number follows the rationale's.
    r = inject("The cup is red, while the plate is white. Therefore, they do not match.",
               "reasoning", category="reasoning")
    conclusion = next(e for e in r.edits if e.role == "conclusion")
    assert (conclusion.original, conclusion.replacement) == ("do not", "do")
    r = inject("There are four apples and one is eaten, which would leave three apples. "
               "So, three apples would remain.", "reasoning", category="reasoning")
    by_role = {e.role: e for e in r.edits}
    assert by_role["rationale"].original == by_role["conclusion"].original
    assert by_role["rationale"].original.startswith("three")
    assert by_role["rationale"].replacement == by_role["conclusion"].replacement
    assert by_role["rationale"].replacement.split()[0] in ("two", "four")
    # Only for reasoning answers.
    s = inject(chosen, "reasoning", category="conversation")
    assert isinstance(s, Skipped) and "not a reasoning answer" in s.reason


def test_fallback_to_another_declared_type_and_skip_reasons():
    chosen = "Two cars are parked near the bench."
    # No colour word: count is used whichever type is tried first; when colour came first,
    # the pair records that it did not apply.
    trails = []
    for seed in range(8):
        r = inject(chosen, "color,count", seed=seed)
        assert isinstance(r, Injected) and r.types == ["count"]
        trails.append(set(r.info.get("not_applicable", {})))
    assert {"color"} in trails and all(t <= {"color"} for t in trails)
    s = inject("It is a sunny day.", "color,size,count")
    assert isinstance(s, Skipped) and s.code == "not-applicable"
    for kind in ("color", "size", "count"):
        assert f"{kind}:" in s.reason


def test_several_edits_of_distinct_types():
    chosen = "A small red car is parked to the left of two white buses."
    inj = LexicalInjector(EN, types=["color", "size", "relation", "count"], edits=3)
    r = inj.inject_one(target(chosen))
    assert isinstance(r, Injected) and len(r.edits) == 3 and len(set(r.types)) == 3
    assert unchanged_outside(chosen, r)


def test_seeded_and_deterministic():
    answers = [f"The {c} car is next to a {d} bus." for c in ("red", "blue", "white", "black")
               for d in ("green", "yellow", "pink")]
    def run(seed):
        inj = LexicalInjector(EN, types=["color"], seed=seed)
        return [inj.inject_one(target(a, tid=str(k))).rejected for k, a in enumerate(answers)]
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_apply_edits_checks_its_input():
    text = "A red car."
    out, done = apply_edits(text, [Edit("color", "color", 2, 5, "red", "blue")])
    assert out == "A blue car." and (done[0].rejected_start, done[0].rejected_end) == (2, 6)
    with pytest.raises(InjectionError, match="overlap"):
        apply_edits(text, [Edit("color", "color", 2, 5, "red", "blue"),
                           Edit("count", "count", 4, 6, "d ", "x")])
    with pytest.raises(InjectionError, match="text has"):
        apply_edits(text, [Edit("color", "color", 2, 5, "big", "blue")])


def test_parse_types():
    assert parse_types("all") == HALLUCINATION_TYPES
    assert parse_types("count, color,count") == ("count", "color")
    with pytest.raises(InjectionError, match="did you mean 'color'"):
        parse_types("colour")


def test_targets_and_pairs_from_samples():
    s = Sample("s1", ["a.png"], [
        Turn("user", "<image>\nWhat is on the table?"), Turn("assistant", "A red cup."),
        Turn("user", "And beside it?"), Turn("assistant", "Two blue plates.")],
        category="conversation", source="coco")
    other = Sample("s2", ["a.png"], [Turn("user", "<image>\nAny dogs?"),
                                     Turn("assistant", "No, there is no dog.")])
    last = answer_targets([s, other], "last")
    assert [t.id for t in last] == ["s1:a1", "s2:a0"]
    assert last[0].prompt[-1].content == "And beside it?" and last[0].answer == "Two blue plates."
    # Both records show a.png: each target sees every answer about the image.
    assert list(last[0].context) == ["A red cup.", "Two blue plates.", "No, there is no dog."]
    every = answer_targets([s], "all")
    assert [(t.id, len(t.prompt)) for t in every] == [("s1:a0", 1), ("s1:a1", 3)]

    result = inject_hallucinations([s, other], LexicalInjector(EN, types=["color", "object"]))
    assert result.counts == {"answers": 2, "pairs": 2, "skipped": 0, "failed": 0,
                             "by_type": result.counts["by_type"],
                             "by_kind": result.counts["by_kind"], "skip_codes": {}}
    pair = next(p for p in result.pairs if p.id == "s1:a1")
    assert pair.origin == "injection" and pair.chosen == "Two blue plates."
    assert pair.meta["source_id"] == "s1" and pair.meta["category"] == "conversation"
    inj = pair.meta["injection"]
    assert inj["injector"] == "lexical" and inj["lexicon_sha256"] == EN.sha256()
    assert inj["types"] and all(e["type"] in inj["types"] for e in inj["edits"])
    assert pair.scores == {"hallucinations": len(inj["edits"])}
    # s2's answer has no colour; its own denial of a dog is turned round.
    flipped = next(p for p in result.pairs if p.id == "s2:a0")
    assert flipped.rejected == "Yes, there is a dog." and flipped.images == ["a.png"]
    # Skipped answers are reported with their reason.
    lone = Sample("s3", [], [Turn("user", "Anything?"), Turn("assistant", "It is sunny.")])
    result = inject_hallucinations([lone], LexicalInjector(EN, types=["color"]))
    assert result.counts["skipped"] == 1 and result.skipped[0]["id"] == "s3:a0"
    assert "colour" in result.skipped[0]["reason"]

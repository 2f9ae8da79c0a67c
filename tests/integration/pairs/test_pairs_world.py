"""The lexical injector on the tiny world, checked against the scene graphs.

Issue 5's bar: every negative holds at least one hallucination of its declared type that the
scene graph confirms, and nothing outside the recorded spans changed. The injector itself never
sees a scene graph; `world_check` reads its output with the world's own parser.
"""

from __future__ import annotations

import difflib
import re

import pytest

from mmalign.io.formats import read_records
from mmalign.pairs.inject import HALLUCINATION_TYPES, LexicalInjector, inject_hallucinations
from mmalign.pairs.lexicon import fit_lexicon

from .world_check import outside_spans_equal, verify_pair

# On the tiny world (40 corpus images, every answer) each type alone applies to at least
# this many answers, so the 100% below is over a real sample, not a handful.
MIN_PAIRS = 15


@pytest.fixture(scope="module")
def corpus(tiny_world):
    return read_records(tiny_world / "corpus_clean.json")


@pytest.fixture(scope="module")
def lexicon(corpus):
    return fit_lexicon(corpus)


def words_changed_outside(chosen: str, rejected: str, edits: list[dict]) -> list[str]:
    """Words of `chosen` that a word-level diff marks as changed but no span covers."""
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", chosen)]
    sm = difflib.SequenceMatcher(None, [w for _, w in words], rejected.split(), autojunk=False)
    stray = []
    for op, i1, i2, _, _ in sm.get_opcodes():
        if op == "equal":
            continue
        for pos, w in words[i1:i2]:
            if not any(e["start"] <= pos + len(w) and pos <= e["end"] for e in edits):
                stray.append(w)
    return stray


@pytest.mark.parametrize("types", [(t,) for t in HALLUCINATION_TYPES] + [HALLUCINATION_TYPES],
                         ids=[*HALLUCINATION_TYPES, "all"])
def test_every_negative_has_a_confirmed_hallucination_of_its_type(types, corpus, lexicon,
                                                                   world_scenes):
    result = inject_hallucinations(corpus, LexicalInjector(lexicon, types=types), turns="all")
    assert len(result.pairs) >= MIN_PAIRS, result.counts
    assert result.counts["pairs"] + result.counts["skipped"] == result.counts["answers"]
    wrong = []
    for pair in result.pairs:
        d = pair.to_dict()
        assert d["chosen"] != d["rejected"]
        edits = d["meta"]["injection"]["edits"]
        declared = d["meta"]["injection"]["types"]
        assert declared and set(declared) <= set(types)
        checked = verify_pair(d, world_scenes[pair.images[0]])
        if not any(ok for e, ok, _ in checked if e["type"] in declared):
            wrong.append((d["chosen"], d["rejected"], [why for _, _, why in checked]))
        # Every single edit is a confirmed hallucination too, not just one per pair.
        wrong += [(d["chosen"], d["rejected"], why) for _, ok, why in checked if not ok]
        assert outside_spans_equal(d["chosen"], d["rejected"], edits), d
        assert words_changed_outside(d["chosen"], d["rejected"], edits) == [], d
    assert wrong == []


def test_all_types_cover_most_answers(corpus, lexicon):
    # Fallback between types is what makes the default useful: with every type declared,
    # only answers with nothing to change (an unknown noun, a bare denial) are skipped, and
    # every skip says why.
    result = inject_hallucinations(corpus, LexicalInjector(lexicon), turns="all")
    assert result.counts["pairs"] >= 0.9 * result.counts["answers"]
    assert all(r["reason"] and r["code"] == "not-applicable" for r in result.skipped)
    # Several types are in use, and reasoning answers get the reasoning type.
    assert len(result.counts["by_type"]) >= 5
    reasoning = [p for p in result.pairs if p.meta["category"] == "reasoning"]
    assert reasoning and all(p.meta["injection"]["types"] == ["reasoning"] for p in reasoning)


def test_unmentioned_objects_are_mostly_absent(corpus, lexicon, world_scenes):
    # object_evidence="unmentioned" trades certainty for coverage: an object no answer about
    # the image mentions may still be in it. Measured here, not promised to be 100%.
    result = inject_hallucinations(
        corpus, LexicalInjector(lexicon, types=["object"], object_evidence="unmentioned"),
        turns="all")
    checked = [ok for p in result.pairs
               for _, ok, _ in verify_pair(p.to_dict(), world_scenes[p.images[0]])]
    assert len(result.pairs) >= 0.9 * result.counts["answers"]
    assert sum(checked) / len(checked) >= 0.9

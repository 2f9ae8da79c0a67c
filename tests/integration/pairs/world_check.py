"""Check injected hallucinations against the world's scene graphs.

Independent of the injector: it reads the chosen and rejected texts with the world's own mention
parser (`mmalign.world.facts`) and the world's position vocabulary, and asks the scene whether
what the rejected text now claims is false. The injector's edit records are used only to know
where to look (the spans) and which noun a predicative attribute ("the circle is red") is about.

`verify_edit` returns (ok, why). For every kind it checks two things: the chosen text's fact at
that place is TRUE of the scene (so the injector edited a real fact, not a background colour or
a negated clause), and the rejected text's fact is FALSE.
"""

from __future__ import annotations

import re
from typing import Any

from mmalign.world import vocab
from mmalign.world.facts import _PHRASE, mentions
from mmalign.world.scene import Obj, Scene

POSITION_CELL = {phrase: cell for cell, phrase in vocab.MACHINE_POSITION.items()}
NUMBER = {w: i for i, w in enumerate(vocab.NUMBER_WORDS)}
RELATION_OF = {"to the left of": "left of", "to the right of": "right of", "left of": "left of",
               "right of": "right of", "above": "above", "below": "below"}
EXTREME = {"top": (1, min), "bottom": (1, max), "left": (0, min), "right": (0, max)}


def _phrase_at(text: str, pos: int):
    """The world noun phrase ('a large red circle' -> size, colour, shape) covering `pos`."""
    for m in _PHRASE.finditer(text):
        if m.start() <= pos < m.end():
            return m
    return None


def _sentence(text: str, pos: int) -> tuple[int, int]:
    start = max(text.rfind(c, 0, pos) for c in ".!?") + 1
    ends = [i for i in (text.find(c, pos) for c in ".!?") if i >= 0]
    return start, (min(ends) + 1 if ends else len(text))


def _referent(text: str, pos: int, target: str | None):
    """The phrase an attribute at `pos` describes: the phrase around it ('large red circle'),
    else the nearest phrase of the target noun before it (predicative: 'the circle is red')."""
    m = _phrase_at(text, pos)
    if m is not None and m.group("shape"):
        return m
    before = [p for p in _PHRASE.finditer(text, 0, pos)
              if target is None or _shape(p) == target]
    return before[-1] if before else None


def _shape(m) -> str:
    w = m.group("shape").lower()
    return next(s for s in vocab.SHAPES if w in (s, vocab.PLURALS[s]))


def _objects(scene: Scene, m, skip: str) -> list[Obj]:
    """Scene objects the phrase names, ignoring the attribute being changed (`skip`)."""
    shape = _shape(m)
    color = m.group("color").lower() if m.group("color") and skip != "color" else None
    size = m.group("size").lower() if m.group("size") and skip != "size" else None
    return [o for o in scene.objects if o.shape == shape
            and (color is None or o.color == color) and (size is None or o.size == size)]


def _claim(text: str, pos: int, target: str | None):
    """What the sentence around `pos` claims about the object the text there is about:
    (phrase, [constraint, ...]) where each constraint is a test on a scene object. Taken from
    the sentence: the phrase's own attributes, a predicate colour/size ("... is blue"), a
    position phrase (when the sentence names one object) and "closest to the <edge>". "Its
    color is X." continues the previous sentence's claim."""
    a, b = _sentence(text, pos)
    sentence = text[a:b]
    tests = []
    if re.match(r"\s*Its color is (\w+)", sentence):
        tests.append(lambda o, c=re.match(r"\s*Its color is (\w+)", sentence).group(1):
                     o.color == c)
        a, b = _sentence(text, a - 2)
        sentence = text[a:b]
        pos = a
    m = _referent(text, pos, target) if a <= pos else None
    phrases = list(_PHRASE.finditer(text, a, b))
    if m is None or not a <= m.start() < b:
        m = next((p for p in phrases if target is None or _shape(p) == target), None)
    if m is None:
        return None, []
    shape = _shape(m)
    color = m.group("color").lower() if m.group("color") else None
    size = m.group("size").lower() if m.group("size") else None
    tests.append(lambda o: o.shape == shape and color in (None, o.color)
                 and size in (None, o.size))
    pred = re.search(r"\bis (" + "|".join(vocab.COLOR_NAMES + vocab.SIZES) + r")\b",
                     text[m.end():b])
    if pred:
        word = pred.group(1)
        tests.append(lambda o: word in (o.color, o.size))
    if len(phrases) == 1:
        for phrase, cell in POSITION_CELL.items():
            if re.search(rf"\b{phrase}\b", sentence):
                longer = [p for p in POSITION_CELL if phrase in p and p != phrase
                          and re.search(rf"\b{p}\b", sentence)]
                if not longer:  # "left part" inside "lower left part" is not a claim
                    tests.append(lambda o, cell=cell: o.cell == cell)
    tests += _relation_tests(text, a, b, m)
    edge = re.search(r"closest to the (top|bottom|left|right)", sentence)
    if edge:
        axis, fn = EXTREME[edge.group(1)]
        tests.append(lambda o, axis=axis, fn=fn, sc=None: _unique_extreme(o, axis, fn))
    return m, tests


def _relation_tests(text: str, a: int, b: int, m) -> list:
    """A relation the sentence states about the phrase `m` ("Below the triangle, there is
    a hexagon", "the cup is left of the plate"), as a test on the object `m` names. Negated
    relations add no test (fewer tests can only make a claim easier to satisfy)."""
    sentence = text[a:b].lower()
    hits = [(h.start() + a, p) for p in RELATION_OF
            for h in re.finditer(rf"\b{p}\b", sentence)]
    if not hits or re.search(r"\bnot\b", sentence):
        return []
    lo, phrase = min(hits, key=lambda h: (h[0], -len(h[1])))
    rel = RELATION_OF[phrase]
    phrases = list(_PHRASE.finditer(text, a, b))
    after = [p for p in phrases if p.start() >= lo + len(phrase)]
    if not after:
        return []
    if text[a:lo].strip() == "":  # "To the left of the B, there is A."
        subjects, obj = after[1:], after[0]
    else:
        subjects, obj = [p for p in phrases if p.end() <= lo][-1:], after[0]

    def objs(p):
        return [o for o in _SCENE[0].objects if _objects(_SCENE[0], p, "").count(o)]
    if any(p.start() == m.start() for p in subjects):
        return [lambda o: any(_SCENE[0].holds(o, rel, y) for y in objs(obj) if y != o)]
    if obj.start() == m.start():
        return [lambda o: any(_SCENE[0].holds(x, rel, o) for s in subjects for x in objs(s)
                              if x != o)]
    return []


_SCENE: list[Scene] = []  # the scene `_unique_extreme` looks at (set by verify_edit)


def _unique_extreme(o: Obj, axis: int, fn) -> bool:
    objs = _SCENE[0].objects
    best = fn(x.cell[axis] for x in objs)
    winners = [x for x in objs if x.cell[axis] == best]
    return winners == [o]


def _true_somewhere(scene: Scene, tests) -> bool:
    return any(all(t(o) for t in tests) for o in scene.objects)


def _sentence_claim(e: dict[str, Any], chosen: str, rejected: str, scene: Scene
                    ) -> tuple[bool, str]:
    """Colour, size and position edits: the chosen sentence's claim about its object holds
    in the scene, the rejected sentence's claim holds for no object."""
    m, tests = _claim(chosen, e["start"], e.get("target"))
    if m is None:
        return False, f"no object phrase near {e['original']!r}"
    if not _true_somewhere(scene, tests):
        return False, f"the chosen sentence about {m.group()!r} is not true of the scene"
    m2, tests2 = _claim(rejected, e["rejected_start"], e.get("target"))
    if m2 is None:
        return False, "no object phrase in the rejected sentence"
    if _true_somewhere(scene, tests2):
        return False, f"the rejected sentence about {m2.group()!r} is true of some object"
    return True, f"{e['original']!r} -> {e['replacement']!r} about {m2.group()!r} is false"


def _count_value(s: str) -> int | None:
    w = s.lower().split()
    for x in w:
        if x in NUMBER:
            return NUMBER[x]
        if x.isdigit():
            return int(x)
    return None


def _count(e: dict[str, Any], chosen: str, scene: Scene) -> tuple[bool, str]:
    old, new = _count_value(e["original"]), _count_value(e["replacement"])
    if old is None or new is None or old == new:
        return False, f"not a count change: {e['original']!r} -> {e['replacement']!r}"
    target = e.get("target")
    if target in vocab.SHAPES:
        m = _referent(chosen, e["end"] - 1, target)
        color = m.group("color").lower() if m is not None and m.group("color") else None
        true = scene.count(shape=target, color=color)
        if true != old:
            return False, f"chosen count {old} of {target} is not the scene's {true}"
        return True, f"{true} {target}(s), rejected says {new}"
    a, b = _sentence(chosen, e["start"])
    if re.search(r"\b(total|shows)\b", chosen[a:b]):
        if old != len(scene.objects):
            return False, f"chosen total {old} is not the scene's {len(scene.objects)}"
        return True, f"{len(scene.objects)} shapes in total, rejected says {new}"
    # Counts derived in a rationale ("would leave three shapes"): the chosen answer is the
    # ground truth, so a different number is wrong.
    return True, f"derived count {old}, rejected says {new}"


def _relation(e: dict[str, Any], chosen: str, rejected: str, scene: Scene) -> tuple[bool, str]:
    def parse(text: str, lo: int, hi: int) -> tuple[list, list]:
        a, b = _sentence(text, lo)
        phrases = list(_PHRASE.finditer(text, a, b))
        after = [p for p in phrases if p.start() >= hi]
        if text[a:lo].strip() == "":  # "To the left of the B, there is A."
            return after[1:], after[:1]
        before = [p for p in phrases if p.end() <= lo]
        return before[-1:], after[:1]

    def holds(text: str, lo: int, hi: int, rel: str) -> bool:
        subj, obj = parse(text, lo, hi)
        return any(scene.holds(x, rel, y) for s in subj for o in obj
                   for x in _objects(scene, s, "") for y in _objects(scene, o, "") if x != y)

    if re.search(r"\bnot\b", e["original"].lower()):
        # A denied relation asserted ("is not above" -> "is above"): true before means the
        # relation does not hold, so the assertion is false; both read the same scene fact.
        a, b = _sentence(rejected, e["rejected_start"])
        rest = rejected[e["rejected_start"]:b].lower()
        hits = [(m.start(), p) for p in RELATION_OF for m in re.finditer(rf"\b{p}\b", rest)]
        if not hits or re.search(r"\bnot\b", rejected[a:b].lower()):
            return False, f"not a lifted relation: {rejected[a:b]!r}"
        start, phrase = min(hits, key=lambda h: (h[0], -len(h[1])))
        lo = e["rejected_start"] + start
        if holds(rejected, lo, lo + len(phrase), RELATION_OF[phrase]):
            return False, f"the denied relation {phrase!r} holds in the scene"
        return True, f"{phrase!r} does not hold, rejected asserts it"
    old = RELATION_OF.get(e["original"].lower())
    new = RELATION_OF.get(e["replacement"].lower())
    if old is None or new is None:
        return False, f"not a world relation: {e['original']!r} -> {e['replacement']!r}"
    if not holds(chosen, e["start"], e["end"], old):
        return False, f"chosen relation {old!r} does not hold in the scene"
    if holds(rejected, e["rejected_start"], e["rejected_end"], new):
        return False, f"rejected relation {new!r} holds in the scene"
    return True, f"{old} became {new}"


def verify_edit(e: dict[str, Any], chosen: str, rejected: str, scene: Scene
                ) -> tuple[bool, str]:
    kind = e["kind"]
    if kind == "object":
        # The sentence(s) the edit touches now claim the object ("There is also a star ...",
        # "Yes, there is a star ..."): a positive mention of it there, and none in the scene.
        a = _sentence(rejected, e["rejected_start"] + 1)[0]
        b = _sentence(rejected, max(e["rejected_end"] - 1, e["rejected_start"]))[1]
        added = {mm.shape for mm in mentions(rejected[a:b]) if not mm.negated}
        if e.get("target") not in added:
            return False, f"{rejected[a:b]!r} claims no {e.get('target')}"
        if e["target"] in scene.shapes():
            return False, f"a {e['target']} is in the scene"
        return True, f"no {e['target']} in the scene"
    _SCENE[:] = [scene]
    if kind in ("color", "size", "position"):
        return _sentence_claim(e, chosen, rejected, scene)
    if kind == "count":
        return _count(e, chosen, scene)
    if kind == "relation":
        return _relation(e, chosen, rejected, scene)
    if kind == "answer":
        old, new = e["original"].lower(), e["replacement"].lower()
        ok = {old, new} == {"yes", "no"}
        return ok, f"conclusion {old} -> {new}"
    if kind == "negation":
        ok = ("not" in e["original"].lower().split()) != ("not" in e["replacement"].lower().split())
        return ok, f"conclusion negation {e['original']!r} -> {e['replacement']!r}"
    return False, f"unknown kind {kind!r}"


def verify_pair(pair: dict[str, Any], scene: Scene) -> list[tuple[dict[str, Any], bool, str]]:
    chosen, rejected = pair["chosen"], pair["rejected"]
    return [(e, *verify_edit(e, chosen, rejected, scene))
            for e in pair["meta"]["injection"]["edits"]]


def outside_spans_equal(chosen: str, rejected: str, edits: list[dict[str, Any]]) -> bool:
    """The texts agree character for character outside the recorded spans, and each span holds
    exactly the recorded original / replacement."""
    pc = pr = 0
    for e in sorted(edits, key=lambda x: x["start"]):
        if chosen[pc:e["start"]] != rejected[pr:e["rejected_start"]]:
            return False
        if chosen[e["start"]:e["end"]] != e["original"]:
            return False
        if rejected[e["rejected_start"]:e["rejected_end"]] != e["replacement"]:
            return False
        pc, pr = e["end"], e["rejected_end"]
    return chosen[pc:] == rejected[pr:]

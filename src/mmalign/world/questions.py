"""Question kinds: how a scene becomes questions and answers, in two voices.

Every kind has `ask(scene, rng, focus)` returning params (or None when the scene does not allow
the question), and renders a question and an answer from (scene, params) in one of two styles:
- "house": terse, the clean pretraining voice (the tiny model's "own" style);
- "machine": verbose GPT-4-like sentences, the voice of the instruction corpus.
Answers are always realised from a scene, so a defect is simply an answer realised from a
perturbed copy of the scene (or with a claimed count that differs from the truth): the text
stays fluent and the truth file can say exactly what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmalign.world import vocab
from mmalign.world.scene import Obj, Scene

HOUSE, MACHINE = "house", "machine"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _is_are(n: int) -> str:
    return "is" if n == 1 else "are"


def _pos(o: Obj, style: str) -> str:
    return (vocab.CLEAN_POSITION if style == HOUSE else vocab.MACHINE_POSITION)[o.cell]


def _a(o: Obj) -> str:
    return f"a {o.phrase()}"


def join_and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class Kind:
    name: str
    category: str  # the corpus category it belongs to: conversation | reasoning | detail
    ask: Callable[[Scene, np.random.Generator, int | None], dict[str, Any] | None]
    question: Callable[[Scene, dict[str, Any], str, int], str]
    answer: Callable[[Scene, dict[str, Any], str], str]
    n_variants: int = 1  # machine-style question templates (near-duplicates use another one)
    references_objects: bool = True  # whether `focus` can point the question at an object


# ---------------------------------------------------------------------- helpers for ask()


def _object_choice(scene: Scene, rng, focus: int | None, ok: Callable[[int], bool]) -> int | None:
    if focus is not None:
        return focus if ok(focus) else None
    idx = [i for i in range(len(scene.objects)) if ok(i)]
    return None if not idx else int(_pick(rng, idx))


def _ref_without(scene: Scene, i: int, attr: str) -> str | None:
    """A phrase naming object i uniquely that does not give away `attr` (color or size)."""
    o = scene.objects[i]
    if scene.count(shape=o.shape) == 1:
        return o.shape
    if attr != "color" and scene.count(shape=o.shape, color=o.color) == 1:
        return f"{o.color} {o.shape}"
    same_size = sum(1 for p in scene.objects if p.shape == o.shape and p.size == o.size)
    if attr != "size" and same_size == 1:
        return f"{o.size} {o.shape}"
    return None


def absent_shapes(scene: Scene) -> list[str]:
    return [s for s in vocab.SHAPES if s not in scene.shapes()]


# ---------------------------------------------------------------------- conversation kinds

EXIST_QUESTIONS = ("Is there a {s} in the image?", "Can you see a {s} in this picture?",
            "Does the image contain a {s}?")


def _ask_exist(scene, rng, focus):
    if focus is not None:
        return {"shape": scene.objects[focus].shape}
    if rng.random() < 0.5:
        return {"shape": _pick(rng, sorted(scene.shapes()))}
    return {"shape": _pick(rng, absent_shapes(scene))}


def _q_exist(scene, p, style, variant):
    return EXIST_QUESTIONS[0 if style == HOUSE else variant].format(s=p["shape"])


def _a_exist(scene, p, style):
    n = scene.count(shape=p["shape"])
    if style == HOUSE:
        return "Yes." if n else "No."
    if n == 0:
        return f"No, there is no {p['shape']} in the image."
    if n == 1:
        o = next(o for o in scene.objects if o.shape == p["shape"])
        return f"Yes, there is {_a(o)} in the {_pos(o, style)} of the image."
    return f"Yes, there are {vocab.number_word(n)} {vocab.plural(p['shape'], n)} in the image."


def _ask_attribute(attr: str):
    """ask() for "what <attr> is the X?": X must be named without giving <attr> away."""
    def ask(scene, rng, focus):
        i = _object_choice(scene, rng, focus, lambda i: _ref_without(scene, i, attr) is not None)
        return None if i is None else {"obj": i, "ref": _ref_without(scene, i, attr)}
    return ask


def _q_color(scene, p, style, variant):
    if style == HOUSE:
        return f"What color is the {p['ref']}?"
    t = ("What color is the {r} in the image?", "Which color does the {r} have?")
    return t[variant].format(r=p["ref"])


def _a_color(scene, p, style):
    c = scene.objects[p["obj"]].color
    return _cap(c) + "." if style == HOUSE else f"The {p['ref']} in the image is {c}."


def _ask_count(scene, rng, focus):
    if focus is not None:
        return {"shape": scene.objects[focus].shape}
    pool = sorted(scene.shapes()) if rng.random() < 0.85 else absent_shapes(scene)
    return {"shape": _pick(rng, pool)}


def _q_count(scene, p, style, variant):
    pl = vocab.PLURALS[p["shape"]]
    if style == HOUSE:
        return f"How many {pl} are there?"
    return ("How many {p} are there in the image?", "How many {p} can be seen in the picture?")[
        variant].format(p=pl)


def _a_count(scene, p, style):
    n = p.get("claimed_count", scene.count(shape=p["shape"]))
    if style == HOUSE:
        return _cap(vocab.number_word(n)) + "."
    if n == 0:
        return f"There are no {vocab.PLURALS[p['shape']]} in the image."
    return (f"There {_is_are(n)} {vocab.number_word(n)} {vocab.plural(p['shape'], n)} "
            f"in the image.")


def _ask_position(scene, rng, focus):
    i = _object_choice(scene, rng, focus, lambda i: scene.identifying_phrase(scene.objects[i]))
    return None if i is None else {"obj": i, "ref": scene.identifying_phrase(scene.objects[i])}


def _q_position(scene, p, style, variant):
    if style == HOUSE:
        return f"Where is the {p['ref']}?"
    return ("Where is the {r} located in the image?", "In which part of the image is the {r}?")[
        variant].format(r=p["ref"])


def _a_position(scene, p, style):
    o = scene.objects[p["obj"]]
    if style == HOUSE:
        return _cap(_pos(o, style)) + "."
    return f"The {p['ref']} is located in the {_pos(o, style)} of the image."


def _ask_shape_at(scene, rng, focus):
    if focus is not None:
        return {"cell": list(scene.objects[focus].cell)}
    return {"cell": list(_pick(rng, scene.objects).cell)}


def _q_shape_at(scene, p, style, variant):
    cell = tuple(p["cell"])
    if style == HOUSE:
        return f"What shape is at the {vocab.CLEAN_POSITION[cell]}?"
    return ("What shape can be seen in the {m} of the image?",
            "What object is in the {m} of the picture?")[variant].format(
        m=vocab.MACHINE_POSITION[cell])


def _a_shape_at(scene, p, style):
    o = scene.at(tuple(p["cell"]))
    if style == HOUSE:
        return _cap(o.shape) + "." if o else "Nothing."
    m = vocab.MACHINE_POSITION[tuple(p["cell"])]
    if o is None:
        return f"There is nothing in the {m} of the image."
    return f"In the {m} of the image, there is {_a(o)}."


def _q_size(scene, p, style, variant):
    if style == HOUSE:
        return f"Is the {p['ref']} large or small?"
    return ("Is the {r} in the image large or small?", "How big is the {r}?")[variant].format(
        r=p["ref"])


def _a_size(scene, p, style):
    s = scene.objects[p["obj"]].size
    return _cap(s) + "." if style == HOUSE else f"The {p['ref']} in the image is {s}."


def _ask_relation_yn(scene, rng, focus):
    refs = [scene.identifying_phrase(o) for o in scene.objects]
    idx = [i for i, r in enumerate(refs) if r]
    if len(idx) < 2:
        return None
    a = focus if focus is not None and refs[focus] else int(_pick(rng, idx))
    b = int(_pick(rng, [i for i in idx if i != a]))
    return {"a": a, "b": b, "rel": _pick(rng, vocab.RELATIONS), "ra": refs[a], "rb": refs[b]}


def _q_relation_yn(scene, p, style, variant):
    t = ("Is the {a} {rel} the {b}?", "Would you say the {a} is {rel} the {b}?")
    return t[0 if style == HOUSE else variant].format(a=p["ra"], rel=_REL_WHAT[p["rel"]],
                                                      b=p["rb"])


def _a_relation_yn(scene, p, style):
    yes = scene.holds(scene.objects[p["a"]], p["rel"], scene.objects[p["b"]])
    if style == HOUSE:
        return "Yes." if yes else "No."
    if yes:
        return f"Yes, the {p['ra']} is {_REL_WHAT[p['rel']]} the {p['rb']}."
    return f"No, the {p['ra']} is not {_REL_WHAT[p['rel']]} the {p['rb']}."


def _relation_targets(scene: Scene, b: int, rel: str) -> list[int]:
    ob = scene.objects[b]
    return [i for i, o in enumerate(scene.objects) if i != b and scene.holds(o, rel, ob)]


def _ask_relation_what(scene, rng, focus):
    options = []
    for b, ob in enumerate(scene.objects):
        rb = scene.identifying_phrase(ob)
        if not rb:
            continue
        for rel in vocab.RELATIONS:
            t = _relation_targets(scene, b, rel)
            if len(t) == 1 and (focus is None or t[0] == focus):
                options.append({"b": b, "rel": rel, "rb": rb})
    return None if not options else _pick(rng, options)


_REL_LEAD = {"left of": "To the left of", "right of": "To the right of", "above": "Above",
             "below": "Below"}
_REL_WHAT = {"left of": "to the left of", "right of": "to the right of", "above": "above",
             "below": "below"}


def _q_relation_what(scene, p, style, variant):
    t = ("What is {rel} the {b}?", "What shape is placed {rel} the {b}?")
    return t[0 if style == HOUSE else variant].format(rel=_REL_WHAT[p["rel"]], b=p["rb"])


def _a_relation_what(scene, p, style):
    t = _relation_targets(scene, p["b"], p["rel"])
    if not t:
        if style == HOUSE:
            return "Nothing."
        return f"There is nothing {_REL_WHAT[p['rel']]} the {p['rb']}."
    objs = [scene.objects[i] for i in t]
    if style == HOUSE:
        return _cap(join_and([_a(o) for o in objs])) + "."
    return f"{_REL_LEAD[p['rel']]} the {p['rb']}, there {_is_are(len(objs))} " \
           f"{join_and([_a(o) for o in objs])}."


def _ask_total(scene, rng, focus):
    return {}


def _q_total(scene, p, style, variant):
    if style == HOUSE:
        return "How many shapes are there?"
    return ("How many shapes are there in the image in total?",
            "What is the total number of shapes in the picture?")[variant]


def _a_total(scene, p, style):
    n = p.get("claimed_total", len(scene.objects))
    if style == HOUSE:
        return _cap(vocab.number_word(n)) + "."
    return (f"There {_is_are(n)} {vocab.number_word(n)} {vocab.plural('shape', n)} "
            f"in the image in total.")


# ---------------------------------------------------------------------- detail

DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "What do you see in this image? Please describe it in detail.",
    "Can you elaborate on the elements of the picture provided?",
    "Explain the visual content of the image in great detail.",
)
HOUSE_DESCRIBE = "Describe the image."


def _ask_detail(scene, rng, focus):
    p: dict[str, Any] = {"prompt": int(rng.integers(len(DETAIL_PROMPTS)))}
    rels = [(i, r, j) for i, r, j in scene.relations() if i < j and r in ("left of", "above")]
    if rels:
        p["relation"] = list(_pick(rng, rels))
    return p


def _q_detail(scene, p, style, variant):
    return HOUSE_DESCRIBE if style == HOUSE else DETAIL_PROMPTS[(p["prompt"] + variant) % 4]


_LEADS = ("In the {m}, there is {a}.", "The {m} holds {a}.", "{A} can be seen in the {m}.")


def _reading_order(scene: Scene) -> list[Obj]:
    # Describe top-to-bottom, left-to-right whatever the list order, so an invented object
    # appended to a perturbed scene is not given away by always coming last.
    return sorted(scene.objects, key=lambda o: (o.cell[1], o.cell[0]))


def _a_detail(scene, p, style):
    objs = _reading_order(scene)
    if style == HOUSE:
        return _cap(join_and([f"{_a(o)} at the {_pos(o, HOUSE)}" for o in objs])) + "."
    n = p.get("claimed_total", len(objs))
    out = [f"The image shows {vocab.number_word(n)} geometric {vocab.plural('shape', n)} on a "
           f"{vocab.BACKGROUND_NAME[scene.theme]} background."]
    for k, o in enumerate(objs):
        out.append(_LEADS[k % len(_LEADS)].format(m=_pos(o, MACHINE), a=_a(o), A=_cap(_a(o))))
    if "relation" in p:
        i, _, j = p["relation"]
        if i < len(scene.objects) and j < len(scene.objects):
            a, b = scene.objects[i], scene.objects[j]
            rel = next((r for r in ("left of", "right of", "above", "below")
                        if scene.holds(a, r, b)), None)
            if rel:
                out.append(f"The {a.color} {a.shape} is positioned {_REL_WHAT[rel]} the "
                           f"{b.color} {b.shape}.")
    out.append("Overall, the shapes are neatly spread across the image.")
    return " ".join(out)


# ---------------------------------------------------------------------- reasoning kinds


def _ask_remove_color(scene, rng, focus):
    if focus is not None:
        return {"color": scene.objects[focus].color}
    return {"color": _pick(rng, sorted(scene.colors()))}


def _q_remove_color(scene, p, style, variant):
    return ("If all the {c} shapes were removed from the image, how many shapes would remain?",
            "Suppose every {c} shape disappeared from the picture. How many shapes would be left?",
            )[variant if style == MACHINE else 0].format(c=p["color"])


def _a_remove_color(scene, p, style):
    c = p["color"]
    total = p.get("claimed_total", len(scene.objects))
    hit = [o for o in scene.objects if o.color == c]
    left = max(total - len(hit), 0)
    if style == HOUSE:
        return _cap(vocab.number_word(left)) + "."
    first = (f"The image contains {vocab.number_word(total)} {vocab.plural('shape', total)} in "
             f"total, and {vocab.number_word(len(hit))} of them {_is_are(len(hit))} {c}: "
             f"{join_and([_a(o) for o in hit])}.")
    return (f"{first} Removing {'it' if len(hit) == 1 else 'them'} would leave "
            f"{vocab.number_word(left)} {vocab.plural('shape', left)}. So, "
            f"{vocab.number_word(left)} {vocab.plural('shape', left)} would remain.")


def _ask_compare_counts(scene, rng, focus):
    shapes = sorted(scene.shapes())
    a = scene.objects[focus].shape if focus is not None else _pick(rng, shapes)
    b = _pick(rng, [s for s in vocab.SHAPES if s != a])
    return {"sa": a, "sb": b}


def _q_compare_counts(scene, p, style, variant):
    return ("Are there more {a} than {b} in the image? Explain your answer.",
            "Does the picture contain more {a} than {b}? Please explain.",
            )[variant if style == MACHINE else 0].format(
        a=vocab.PLURALS[p["sa"]], b=vocab.PLURALS[p["sb"]])


def _a_compare_counts(scene, p, style):
    na = p.get("claimed_count", scene.count(shape=p["sa"]))
    nb = scene.count(shape=p["sb"])
    yes = na > nb
    if style == HOUSE:
        return "Yes." if yes else "No."
    return (f"There {_is_are(na)} {vocab.number_word(na)} {vocab.plural(p['sa'], na)} and "
            f"{vocab.number_word(nb)} {vocab.plural(p['sb'], nb)} in the image. Since "
            f"{vocab.number_word(na)} is {'greater' if yes else 'not greater'} than "
            f"{vocab.number_word(nb)}, the answer is {'yes' if yes else 'no'}.")


_EXTREME = {"top": (1, min), "bottom": (1, max), "left": (0, min), "right": (0, max)}


def _extreme_objects(scene: Scene, direction: str) -> list[int]:
    axis, fn = _EXTREME[direction]
    best = fn(o.cell[axis] for o in scene.objects)
    return [i for i, o in enumerate(scene.objects) if o.cell[axis] == best]


def _ask_extreme(scene, rng, focus):
    dirs = [d for d in _EXTREME if len(_extreme_objects(scene, d)) == 1
            and (focus is None or _extreme_objects(scene, d) == [focus])]
    return None if len(scene.objects) < 2 or not dirs else {"dir": _pick(rng, dirs)}


def _q_extreme(scene, p, style, variant):
    return ("Which shape is closest to the {d} of the image, and what color is it?",
            "Looking at the picture, which object is nearest the {d} edge, and what is its color?",
            )[variant if style == MACHINE else 0].format(d=p["dir"])


def _a_extreme(scene, p, style):
    idx = _extreme_objects(scene, p["dir"])
    o = scene.objects[idx[0]]
    if style == HOUSE:
        return f"The {o.shape}, {o.color}."
    return (f"The {o.size} {o.shape} in the {_pos(o, MACHINE)} is the closest to the {p['dir']} "
            f"of the image, since no other shape lies further toward that edge. Its color is "
            f"{o.color}.")


def _ask_same_color(scene, rng, focus):
    refs = [scene.identifying_phrase(o) if scene.count(shape=o.shape) == 1 else None
            for o in scene.objects]
    idx = [i for i, r in enumerate(refs) if r]
    if len(idx) < 2:
        return None
    a = focus if focus is not None and refs[focus] else int(_pick(rng, idx))
    b = int(_pick(rng, [i for i in idx if i != a]))
    return {"a": a, "b": b, "ra": refs[a], "rb": refs[b]}


def _q_same_color(scene, p, style, variant):
    return ("Do the {a} and the {b} share the same color? Explain.",
            "Are the {a} and the {b} the same color? Why or why not?",
            )[variant if style == MACHINE else 0].format(a=p["ra"], b=p["rb"])


def _a_same_color(scene, p, style):
    ca, cb = scene.objects[p["a"]].color, scene.objects[p["b"]].color
    if style == HOUSE:
        return "Yes." if ca == cb else "No."
    verdict = "they share the same color" if ca == cb else "they do not share the same color"
    return f"The {p['ra']} is {ca}, while the {p['rb']} is {cb}. Therefore, {verdict}."


# ---------------------------------------------------------------------- the registry

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("exist", "conversation", _ask_exist, _q_exist, _a_exist, 3),
    Kind("color", "conversation", _ask_attribute("color"), _q_color, _a_color, 2),
    Kind("count", "conversation", _ask_count, _q_count, _a_count, 2),
    Kind("position", "conversation", _ask_position, _q_position, _a_position, 2),
    Kind("shape_at", "conversation", _ask_shape_at, _q_shape_at, _a_shape_at, 2),
    Kind("size", "conversation", _ask_attribute("size"), _q_size, _a_size, 2),
    Kind("relation_yn", "conversation", _ask_relation_yn, _q_relation_yn, _a_relation_yn, 2),
    Kind("relation_what", "conversation", _ask_relation_what, _q_relation_what,
         _a_relation_what, 2),
    Kind("total", "conversation", _ask_total, _q_total, _a_total, 2, references_objects=False),
    Kind("detail", "detail", _ask_detail, _q_detail, _a_detail, 4, references_objects=False),
    Kind("remove_color", "reasoning", _ask_remove_color, _q_remove_color, _a_remove_color, 2),
    Kind("compare_counts", "reasoning", _ask_compare_counts, _q_compare_counts,
         _a_compare_counts, 2),
    Kind("extreme", "reasoning", _ask_extreme, _q_extreme, _a_extreme, 2),
    Kind("same_color", "reasoning", _ask_same_color, _q_same_color, _a_same_color, 2),
)}


def kinds_of(category: str) -> list[Kind]:
    return [k for k in KINDS.values() if k.category == category]

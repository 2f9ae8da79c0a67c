"""Defects of machine-generated instruction data, as a registry users can extend.

A defect takes a record's clean QA items and returns (clean_items, defective_items, detail), or
None when it cannot apply to this record. `clean_items` may differ from the input only when the
defect needs a particular question to exist (a hallucination needs an "is there a ...?" turn);
its answers stay true, so the clean counterpart corpus remains defect-free and the same size.

Facts are never edited as strings: a defective answer is the same question kind realised from a
perturbed copy of the scene (an extra object, a changed colour, swapped cells) or with a claimed
count that differs from the truth. The answer therefore stays fluent, and `detail` states
exactly what is wrong. Labels go to the truth file only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmalign.world import vocab
from mmalign.world.questions import KINDS, MACHINE, absent_shapes
from mmalign.world.scene import Obj, Scene, color_prior, shape_prior


@dataclass
class QAItem:
    kind: str
    params: dict[str, Any]
    question: str
    answer: str
    variant: int = 0


Result = tuple[list[QAItem], list[QAItem], str]
DefectFn = Callable[[list[QAItem], Scene, np.random.Generator, str], Result | None]

DEFECTS: dict[str, DefectFn] = {}
APPLIES_TO: dict[str, tuple[str, ...]] = {}
# How a careful human annotator would score an answer carrying each defect (None = clean),
# before annotator noise. Used by the oracle annotation sets; kept beside the defects so a new
# defect type declares its severity in one place.
QUALITY: dict[str | None, float] = {None: 0.9}

ALL_CATEGORIES = ("conversation", "detail", "reasoning")


def register(name: str, categories: tuple[str, ...], quality: float):
    def deco(fn: DefectFn) -> DefectFn:
        DEFECTS[name] = fn
        APPLIES_TO[name] = categories
        QUALITY[name] = quality
        return fn
    return deco


def answer(item: QAItem, scene: Scene, params: dict[str, Any] | None = None) -> str:
    return KINDS[item.kind].answer(scene, item.params if params is None else params, MACHINE)


def _replace(items: list[QAItem], t: int, new: QAItem) -> list[QAItem]:
    out = list(items)
    out[t] = new
    return out


def _with_answer(item: QAItem, text: str, params: dict[str, Any] | None = None) -> QAItem:
    return dataclasses.replace(item, answer=text, params=item.params if params is None else params)


def _empty_cells(scene: Scene) -> list[tuple[int, int]]:
    used = {o.cell for o in scene.objects}
    return [(c, r) for r in range(vocab.GRID) for c in range(vocab.GRID) if (c, r) not in used]


def _place(o: Obj, cell: tuple[int, int]) -> Obj:
    return dataclasses.replace(o, cell=cell, x=round((cell[0] + 0.5) / vocab.GRID, 4),
                               y=round((cell[1] + 0.5) / vocab.GRID, 4))


def co_occurring_absent_shape(scene: Scene, rng: np.random.Generator) -> str | None:
    """An absent shape drawn from the scene theme's prior: the plausible hallucination."""
    absent = absent_shapes(scene)
    if not absent:
        return None
    prior = shape_prior(scene.theme)
    w = np.array([prior[vocab.SHAPES.index(s)] for s in absent])
    return absent[int(rng.choice(len(absent), p=w / w.sum()))]


def invented_object(scene: Scene, rng: np.random.Generator, shape: str | None = None) -> Obj | None:
    shape = shape or co_occurring_absent_shape(scene, rng)
    cells = _empty_cells(scene)
    if shape is None or not cells:
        return None
    color = vocab.COLOR_NAMES[int(rng.choice(len(vocab.COLOR_NAMES), p=color_prior(shape)))]
    size = vocab.SIZES[int(rng.integers(2))]
    return _place(Obj(shape, color, size, (0, 0), 0, 0), cells[int(rng.integers(len(cells)))])


def _describe(o: Obj) -> str:
    return f"{o.size} {o.color} {o.shape} in the {vocab.MACHINE_POSITION[o.cell]}"


# ---------------------------------------------------------------------- factual defects


@register("hallucinated_object", ALL_CATEGORIES, 0.1)
def hallucinated_object(items, scene, rng, category):
    """Mention an object that is not there, chosen from the theme's co-occurrence prior."""
    if category == "conversation":
        new = invented_object(scene, rng)
        if new is None:
            return None
        t = int(rng.integers(len(items)))
        params = {"shape": new.shape}
        variant = int(rng.integers(KINDS["exist"].n_variants))
        q = KINDS["exist"].question(scene, params, MACHINE, variant)
        clean_item = QAItem("exist", params, q, KINDS["exist"].answer(scene, params, MACHINE),
                            variant)
        fake = Scene(scene.image_id, scene.theme, scene.objects + [new])
        bad_item = _with_answer(clean_item, KINDS["exist"].answer(fake, params, MACHINE))
        return (_replace(items, t, clean_item), _replace(items, t, bad_item),
                f"claims a {_describe(new)}")
    # detail / reasoning: realise the answer on a scene with an invented object, keep the
    # first attempt whose answer actually mentions it.
    item = items[0]
    for _ in range(30):
        new = invented_object(scene, rng)
        if new is None:
            return None
        fake = Scene(scene.image_id, scene.theme, scene.objects + [new])
        text = answer(item, fake)
        if text != item.answer and new.shape in text:
            return items, [_with_answer(item, text)], f"claims a {_describe(new)}"
    return None


_ATTR_KINDS = {"exist", "color", "position", "shape_at", "size", "relation_what", "detail",
               "extreme", "same_color", "remove_color"}


@register("wrong_attribute", ALL_CATEGORIES, 0.2)
def wrong_attribute(items, scene, rng, category):
    """Change one real object's colour, size or position (colour leans on the shape's usual one)."""
    targets = [t for t, it in enumerate(items) if it.kind in _ATTR_KINDS]
    if not targets:
        return None
    for _ in range(30):
        t = int(rng.choice(targets))
        item = items[t]
        i = item.params.get("obj", int(rng.integers(len(scene.objects))))
        if item.kind == "same_color":
            i = item.params[("a", "b")[int(rng.integers(2))]]
        o = scene.objects[i]
        attr = ("color", "size", "position")[int(rng.integers(3))]
        if attr == "color":
            usual = vocab.USUAL_COLOR[o.shape]
            others = [c for c in vocab.COLOR_NAMES if c != o.color]
            new = dataclasses.replace(o, color=usual if usual != o.color and rng.random() < 0.6
                                      else others[int(rng.integers(len(others)))])
            what = f"{o.shape} called {new.color}, is {o.color}"
        elif attr == "size":
            new = dataclasses.replace(o, size="small" if o.size == "large" else "large")
            what = f"{o.shape} called {new.size}, is {o.size}"
        else:
            cells = _empty_cells(scene)
            if not cells or item.kind == "shape_at":
                continue
            new = _place(o, cells[int(rng.integers(len(cells)))])
            what = (f"{o.shape} placed in the {vocab.MACHINE_POSITION[new.cell]}, is in the "
                    f"{vocab.MACHINE_POSITION[o.cell]}")
        objs = list(scene.objects)
        objs[i] = new
        text = answer(item, Scene(scene.image_id, scene.theme, objs))
        if text != item.answer:
            return items, _replace(items, t, _with_answer(item, text)), what
    return None


_COUNT_PARAM = {
    "count": "claimed_count", "compare_counts": "claimed_count",
    "total": "claimed_total", "detail": "claimed_total", "remove_color": "claimed_total",
}


@register("wrong_count", ALL_CATEGORIES, 0.2)
def wrong_count(items, scene, rng, category):
    """State a count one off from the truth."""
    targets = [t for t, it in enumerate(items) if it.kind in _COUNT_PARAM]
    if not targets:
        return None
    t = int(rng.choice(targets))
    item = items[t]
    key = _COUNT_PARAM[item.kind]
    shape = item.params.get("shape", item.params.get("sa"))
    true_n = scene.count(shape=shape) if key == "claimed_count" else len(scene.objects)
    options = [n for n in (true_n - 1, true_n + 1) if n >= (1 if key == "claimed_total" else 0)]
    claimed = int(rng.choice(options))
    params = dict(item.params, **{key: claimed})
    text = answer(item, scene, params)
    if text == item.answer:
        return None
    what = f"says {claimed} {'shapes' if key == 'claimed_total' else vocab.PLURALS[shape]}, " \
           f"true {true_n}"
    return items, _replace(items, t, _with_answer(item, text, params)), what


_REL_KINDS = {"relation_yn", "relation_what", "detail", "extreme"}


@register("wrong_relation", ALL_CATEGORIES, 0.25)
def wrong_relation(items, scene, rng, category):
    """Get a spatial relation wrong by swapping the cells of two real objects."""
    targets = [t for t, it in enumerate(items) if it.kind in _REL_KINDS]
    if not targets or len(scene.objects) < 2:
        return None
    for _ in range(30):
        t = int(rng.choice(targets))
        item = items[t]
        if item.kind == "detail":
            if "relation" not in item.params:
                continue
            i, _, j = item.params["relation"]
        elif item.kind == "relation_yn":
            i, j = item.params["a"], item.params["b"]
        else:
            i, j = (int(x) for x in rng.choice(len(scene.objects), size=2, replace=False))
        objs = list(scene.objects)
        a, b = objs[i], objs[j]
        if item.kind == "detail":
            # Only the relation sentence may change: flip it, keep every position right.
            text = _flip_detail_relation(item, scene)
        else:
            objs[i], objs[j] = _place(a, b.cell), _place(b, a.cell)
            text = answer(item, Scene(scene.image_id, scene.theme, objs))
        if text and text != item.answer:
            return (items, _replace(items, t, _with_answer(item, text)),
                    f"relation between the {a.shape} and the {b.shape} reversed")
    return None


def _flip_detail_relation(item: QAItem, scene: Scene) -> str | None:
    i, _, j = item.params["relation"]
    a, b = scene.objects[i], scene.objects[j]
    for rel, opposite in vocab.RELATION_OPPOSITE.items():
        if scene.holds(a, rel, b):
            true_s = f"positioned {_rel_words(rel)} the {b.color} {b.shape}"
            return item.answer.replace(true_s, f"positioned {_rel_words(opposite)} the "
                                                f"{b.color} {b.shape}")
    return None


def _rel_words(rel: str) -> str:
    return {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)


@register("ungrounded", ("conversation", "reasoning"), 0.1)
def ungrounded(items, scene, rng, category):
    """Ask about an object that is not in the image, and answer as if it were."""
    new = invented_object(scene, rng)
    if new is None:
        return None
    fake = Scene(scene.image_id, scene.theme, scene.objects + [new])
    focus = len(fake.objects) - 1
    names = ("color", "position", "size") if category == "conversation" else ("same_color",)
    for name in rng.permutation(names):
        kind = KINDS[str(name)]
        params = kind.ask(fake, rng, focus)
        if params is None:
            continue
        variant = int(rng.integers(kind.n_variants))
        bad = QAItem(kind.name, params, kind.question(fake, params, MACHINE, variant),
                     kind.answer(fake, params, MACHINE), variant)
        t = int(rng.integers(len(items)))
        return items, _replace(items, t, bad), f"asks about a {new.shape} that is not there"
    return None


# ---------------------------------------------------------------------- form defects

FILLER = (
    "It is worth noting that the overall composition creates a visually engaging scene.",
    "Such simple geometric figures are often used in design to convey clarity and order.",
    "The arrangement gives the picture a calm and balanced atmosphere.",
    "Each element contributes to the harmony of the whole image in its own way.",
    "Viewers may find the interplay of forms and colors quite interesting to explore.",
    "This kind of minimalist imagery can evoke a wide range of interpretations.",
    "In many ways, the image invites the viewer to reflect on simplicity itself.",
    "The careful placement of the elements suggests a deliberate artistic choice.",
)


@register("verbosity", ALL_CATEGORIES, 0.55)
def verbosity(items, scene, rng, category):
    """Pad an answer with on-topic-sounding filler: nothing false, just off-style and long."""
    t = int(rng.integers(len(items)))
    k = int(rng.integers(2, 5))
    pad = " ".join(FILLER[i] for i in rng.choice(len(FILLER), size=k, replace=False))
    lead = "That's a great question! " if rng.random() < 0.5 else ""
    text = f"{lead}{items[t].answer} {pad}"
    return items, _replace(items, t, _with_answer(items[t], text)), f"{k} filler sentences"


@register("truncation", ALL_CATEGORIES, 0.35)
def truncation(items, scene, rng, category):
    """Cut the longest answer mid-sentence, as a generation that hit its token limit."""
    t = max(range(len(items)), key=lambda k: len(items[k].answer))
    words = items[t].answer.split()
    if len(words) < 6:
        return None
    keep = int(len(words) * rng.uniform(0.3, 0.7))
    keep = min(max(keep, 3), len(words) - 2)
    text = " ".join(words[:keep]).rstrip(",;:.")
    return (items, _replace(items, t, _with_answer(items[t], text)),
            f"cut after {keep} of {len(words)} words")


@register("near_duplicate", ("conversation",), 0.5)
def near_duplicate(items, scene, rng, category):
    """Repeat an earlier question, reworded, with the same answer."""
    t = int(rng.integers(len(items)))
    it = items[t]
    kind = KINDS[it.kind]
    variant = (it.variant + 1) % kind.n_variants
    dup = dataclasses.replace(it, question=kind.question(scene, it.params, MACHINE, variant),
                              variant=variant)
    return items, items + [dup], f"turn {len(items)} repeats turn {t}"

"""The oracle annotator: K scored candidate questions and answers per image.

It plays Align2LLaVA's human experts. Candidates are produced by the same machinery as the
corpus (clean items, and items spoiled by the defect registry), so reward models trained on
these annotations learn what the corpus defects look like. A candidate's score is its true
quality (`defects.QUALITY`) plus Gaussian annotator noise, clipped to [0, 1]. The true
quality and defect of each candidate go to the truth file, never to the annotation file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmalign.world import defects as defect_registry
from mmalign.world.corpus import category_items
from mmalign.world.defects import QUALITY, QAItem, invented_object
from mmalign.world.questions import KINDS, MACHINE
from mmalign.world.scene import Scene

ANSWER_DEFECTS = ("hallucinated_object", "wrong_attribute", "wrong_count", "wrong_relation",
                  "verbosity", "truncation")
# Question-set defects and the quality of a question carrying them.
QUESTION_QUALITY = {None: 0.9, "ungrounded": 0.15, "truncated": 0.3, "vague": 0.35}
DUPLICATE_FACTOR = 0.5  # a set that repeats a question is worth half as much
CATEGORIES = ("conversation", "detail", "reasoning")


@dataclass
class Annotated:
    row: dict  # what the annotation file holds (candidates with noisy scores)
    truth: dict  # per candidate: defect label(s) and noiseless quality


def _noisy(q: float, noise: float, rng: np.random.Generator) -> float:
    return round(float(np.clip(q + rng.normal(0, noise), 0.0, 1.0)), 4)


def answer_annotation(scene: Scene, image: str, category: str, rng: np.random.Generator,
                      k: int, noise: float, clean_p: float = 0.35) -> Annotated | None:
    """One question of `category` with K candidate answers, deduplicated by text."""
    item = category_items(scene, category, rng)[0]
    cands: dict[str, tuple[str | None, float]] = {item.answer: (None, QUALITY[None])}
    for _ in range(6 * k):
        if len(cands) >= k:
            break
        if rng.random() < clean_p:
            continue  # the clean answer is already a candidate; draw again
        name = str(rng.choice(ANSWER_DEFECTS))
        res = defect_registry.DEFECTS[name]([item], scene, rng, category)
        if res is None or res[1][0].question != item.question:
            continue
        cands.setdefault(res[1][0].answer, (name, QUALITY[name]))
    if len(cands) < 2:
        return None
    order = rng.permutation(len(cands))
    texts = list(cands)
    rows, truth = [], []
    for j in order:
        defect, q = cands[texts[j]]
        rows.append({"answer": texts[j], "score": _noisy(q, noise, rng)})
        truth.append({"defect": defect, "quality": q})
    rid = f"{scene.image_id}-{category[:4]}"
    return Annotated(
        row={"id": rid, "image": image, "category": category, "question": item.question,
             "candidates": rows},
        truth={"id": rid, "candidates": truth},
    )


def _spoil_question(item: QAItem, scene: Scene, rng: np.random.Generator
                    ) -> tuple[str, str | None]:
    kind = str(rng.choice(["ungrounded", "truncated", "vague"]))
    if kind == "ungrounded":
        new = invented_object(scene, rng)
        if new is not None:
            fake = Scene(scene.image_id, scene.theme, scene.objects + [new])
            # Questions that presuppose the absent object ("what color is the hexagon?").
            for name in rng.permutation(["color", "position", "size"]):
                k = KINDS[str(name)]
                p = k.ask(fake, rng, len(fake.objects) - 1)
                if p is not None:
                    return k.question(fake, p, MACHINE, 0), "ungrounded"
        kind = "truncated"
    if kind == "truncated":
        words = item.question.split()
        if len(words) >= 4:
            return " ".join(words[: max(2, len(words) // 2)]), "truncated"
    return str(rng.choice(["What is it?", "Can you tell me about this?", "What about that one?",
                           "Is it?"])), "vague"


def question_set_quality(labels: list[str | None]) -> float:
    """True quality of a question set from its questions' labels (None: clean; "duplicate":
    the repeated question): the mean of the others' QUESTION_QUALITY, halved by a repeat.
    Also what bench/align2llava.py's truth judges recompute with a defect taken for clean."""
    quality = float(np.mean([QUESTION_QUALITY[lab] for lab in labels if lab != "duplicate"]))
    return quality * DUPLICATE_FACTOR if "duplicate" in labels else quality


def asked_twin(labels: list[str | None], drawn: int) -> int | None:
    """The question a repeat rewords: the drawn one if the set asks it clean, else the next
    clean one (cyclically); None when every question was spoiled. Before world revision 2
    the drawn question was reworded even when it had been spoiled away, so 354 of the 4000
    default sets were scored as halved for a repeat they did not contain (docs/LOG.md,
    session 24). Moving on instead of drawing again keeps the image's random stream, and
    so every other candidate and annotation, unchanged."""
    n = len(labels)
    return next((j % n for j in range(drawn, drawn + n) if labels[j % n] is None), None)


def question_annotation(scene: Scene, image: str, rng: np.random.Generator, k: int,
                        noise: float) -> Annotated:
    """K candidate question sets (conversation style) for one image."""
    rows, truth = [], []
    seen = set()
    for _ in range(4 * k):
        if len(rows) >= k:
            break
        items = category_items(scene, "conversation", rng)
        questions, labels = [], []
        clean_set = rng.random() < 0.35
        for it in items:
            if not clean_set and rng.random() < 0.45:
                q, label = _spoil_question(it, scene, rng)
            else:
                q, label = it.question, None
            questions.append(q)
            labels.append(label)
        twin = None
        if not clean_set and rng.random() < 0.3:
            twin = asked_twin(labels, int(rng.integers(len(items))))
        if twin is not None:
            kind = KINDS[items[twin].kind]
            questions.append(kind.question(scene, items[twin].params, MACHINE,
                                           (items[twin].variant + 1) % kind.n_variants))
            labels.append("duplicate")
        key = tuple(questions)
        if key in seen:
            continue
        seen.add(key)
        quality = question_set_quality(labels)
        rows.append({"questions": questions, "score": _noisy(quality, noise, rng)})
        truth.append({"defects": [lab for lab in labels if lab], "quality": round(quality, 4),
                      "labels": labels} | ({} if twin is None else {"repeats": twin}))
    rid = f"{scene.image_id}-q"
    return Annotated(row={"id": rid, "image": image, "category": "conversation",
                          "candidates": rows},
                     truth={"id": rid, "candidates": truth})

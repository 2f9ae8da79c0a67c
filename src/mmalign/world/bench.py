"""Benchmarks with exact answers, on images that no training set contains.

- POPE: for each image, its present shapes (up to 3) as "yes" questions and as many absent
  shapes as "no" questions, under the three negative-sampling splits of Li et al. (2023):
  random, popular (the most frequent shapes in the training scenes), adversarial (the shapes
  that co-occur most with the present ones). Balanced yes/no by construction.
- VQA: short exact answers (colour, count, position, shape, size, total, relation yes/no).
- MC: four options for CircularEval (a question counts only if right under every rotation).
- CHAIR: free description prompts; the scene's shape list is the ground truth.
- Open-ended: machine-style questions of the three categories with a correct reference
  answer, for judges.
Questions are stored bare; the evaluation harness adds any answer-format instruction.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np

from mmalign.world import vocab
from mmalign.world.corpus import ask, category_items
from mmalign.world.questions import HOUSE, MACHINE
from mmalign.world.scene import Scene

POPE_SPLITS = ("random", "popular", "adversarial")
POPE_QUESTION = "Is there a {shape} in the image?"
# The corpus's (LLaVA's) detailed-description instruction: CHAIR scores the descriptions that
# instruction data teaches. "Describe this image in detail." drew the tiny model's short
# clean-set captions ("Describe the image.") instead, which no instruction corpus changes: the
# defective and clean corpora gave the same CHAIR (docs/results.md, "Defect gap").
CHAIR_PROMPT = "Describe the following image in detail."
VQA_KINDS = ("color", "count", "position", "shape_at", "size", "total", "relation_yn")
MC_KINDS = ("color", "count", "shape_at", "total", "size")


class ShapeStats:
    """Shape frequency and pairwise co-occurrence over the training scenes."""

    def __init__(self, scenes: list[Scene]):
        self.freq: Counter = Counter()
        self.co: Counter = Counter()
        for s in scenes:
            shapes = sorted(s.shapes())
            self.freq.update(shapes)
            self.co.update(combinations(shapes, 2))

    def cooccurrence(self, a: str, b: str) -> int:
        return self.co[tuple(sorted((a, b)))]

    def to_dict(self) -> dict:
        return {"frequency": dict(self.freq),
                "cooccurrence": {f"{a}|{b}": n for (a, b), n in sorted(self.co.items())}}


def _answer_text(ans: str) -> str:
    """House answers are 'Red.' / 'Top left.': the exact answer is the bare lower-case phrase."""
    return ans.rstrip(".").strip().lower()


def pope_rows(scene: Scene, image: str, rng: np.random.Generator, stats: ShapeStats,
              max_positive: int = 3) -> list[dict]:
    present = sorted(scene.shapes())
    absent = [s for s in vocab.SHAPES if s not in present]
    pos = [present[i] for i in rng.permutation(len(present))[:max_positive]]
    n_neg = min(len(pos), len(absent))
    negatives = {
        "random": [absent[i] for i in rng.permutation(len(absent))[:n_neg]],
        "popular": sorted(absent, key=lambda s: (-stats.freq[s], s))[:n_neg],
        "adversarial": sorted(absent, key=lambda s: (
            -sum(stats.cooccurrence(s, p) for p in present), s))[:n_neg],
    }
    rows = []
    for split in POPE_SPLITS:
        for k, shape in enumerate(pos[:n_neg]):
            rows.append(_pope(scene, image, split, shape, "yes", f"p{k}"))
        for k, shape in enumerate(negatives[split]):
            rows.append(_pope(scene, image, split, shape, "no", f"n{k}"))
    return rows


def _pope(scene, image, split, shape, answer, tag):
    return {"id": f"pope-{split}-{scene.image_id}-{tag}", "image": image, "split": split,
            "question": POPE_QUESTION.format(shape=shape), "answer": answer, "object": shape}


def vqa_rows(scene: Scene, image: str, rng: np.random.Generator, per_image: int = 3) -> list[dict]:
    rows, seen = [], set()
    for name in [VQA_KINDS[i] for i in rng.permutation(len(VQA_KINDS))]:
        item = ask(scene, name, rng, HOUSE)
        if item is None or item.question in seen:
            continue
        seen.add(item.question)
        rows.append({"id": f"vqa-{scene.image_id}-{len(rows)}", "image": image, "type": name,
                     "question": item.question, "answer": _answer_text(item.answer)})
        if len(rows) == per_image:
            break
    return rows


def _mc_options(kind: str) -> list[str]:
    if kind == "color":
        return list(vocab.COLOR_NAMES)
    if kind == "shape_at":
        return list(vocab.SHAPES)
    if kind == "size":
        return list(vocab.SIZES)
    return [vocab.number_word(n) for n in range(1, 6)]  # count, total


def mc_rows(scene: Scene, image: str, rng: np.random.Generator, per_image: int = 2,
            n_options: int = 4) -> list[dict]:
    rows, seen = [], set()
    for name in [MC_KINDS[i] for i in rng.permutation(len(MC_KINDS))]:
        item = ask(scene, name, rng, HOUSE)
        if item is None or item.question in seen:
            continue
        answer = _answer_text(item.answer)
        options = _mc_options(name)
        pool = [o for o in options if o != answer]
        if answer not in options or not pool:
            continue
        k = min(n_options - 1, len(pool))
        options = [pool[i] for i in rng.permutation(len(pool))[:k]] + [answer]
        options = [options[i] for i in rng.permutation(len(options))]
        seen.add(item.question)
        rows.append({"id": f"mc-{scene.image_id}-{len(rows)}", "image": image, "type": name,
                     "question": item.question, "options": options,
                     "answer": options.index(answer)})
        if len(rows) == per_image:
            break
    return rows


def chair_row(scene: Scene, image: str) -> dict:
    return {"id": f"chair-{scene.image_id}", "image": image, "prompt": CHAIR_PROMPT,
            "objects": sorted(scene.shapes())}


def openended_row(scene: Scene, image: str, rng: np.random.Generator, category: str) -> dict:
    item = category_items(scene, category, rng)[0]
    return {"id": f"open-{scene.image_id}", "image": image, "category": category,
            "kind": item.kind, "question": item.question, "reference": item.answer,
            "style": MACHINE, "scene": scene.to_dict()}  # the oracle judge rates against it

"""Scene graphs: sampling, relations and the queries every generator and checker asks.

A scene is a theme plus 1..4 objects, each with shape, colour, size and a grid cell. The scene
graph is the ground truth for everything downstream (benchmarks, oracle judge, defect checks).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmalign.world import vocab


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    cell: tuple[int, int]  # (col, row) in the 3x3 grid
    x: float  # centre, as a fraction of the image side (includes jitter)
    y: float

    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass
class Scene:
    image_id: str
    theme: str
    objects: list[Obj]
    split: str = ""
    image: str = ""  # path relative to the world root
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "image": self.image,
            "split": self.split,
            "theme": self.theme,
            "objects": [asdict(o) | {"cell": list(o.cell)} for o in self.objects],
            "relations": [list(r) for r in self.relations()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        objs = [Obj(o["shape"], o["color"], o["size"], tuple(o["cell"]), o["x"], o["y"])
                for o in d["objects"]]
        return cls(image_id=d["image_id"], theme=d["theme"], objects=objs,
                   split=d.get("split", ""), image=d.get("image", ""))

    def signature(self) -> str:
        """The scene's content without jitter: two scenes with equal signatures look alike."""
        objs = sorted((o.shape, o.color, o.size, o.cell) for o in self.objects)
        return f"{self.theme}|{objs}"

    # ------------------------------------------------------------------ queries
    def shapes(self) -> set[str]:
        return {o.shape for o in self.objects}

    def colors(self) -> set[str]:
        return {o.color for o in self.objects}

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(1 for o in self.objects
                   if (shape is None or o.shape == shape) and (color is None or o.color == color))

    def shape_counts(self) -> Counter:
        return Counter(o.shape for o in self.objects)

    def unique(self, shape: str) -> Obj | None:
        """The object of this shape if there is exactly one, else None."""
        found = [o for o in self.objects if o.shape == shape]
        return found[0] if len(found) == 1 else None

    def at(self, cell: tuple[int, int]) -> Obj | None:
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def relations(self) -> list[tuple[int, str, int]]:
        """(i, relation, j) for every ordered pair where the relation holds, by grid cell."""
        out = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i == j:
                    continue
                if a.cell[0] < b.cell[0]:
                    out.append((i, "left of", j))
                if a.cell[0] > b.cell[0]:
                    out.append((i, "right of", j))
                if a.cell[1] < b.cell[1]:
                    out.append((i, "above", j))
                if a.cell[1] > b.cell[1]:
                    out.append((i, "below", j))
        return out

    def holds(self, a: Obj, relation: str, b: Obj) -> bool:
        dx, dy = a.cell[0] - b.cell[0], a.cell[1] - b.cell[1]
        return {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation]

    def identifying_phrase(self, o: Obj) -> str | None:
        """The shortest noun phrase naming `o` uniquely: 'circle', 'red circle', or None."""
        if self.count(shape=o.shape) == 1:
            return o.shape
        if self.count(shape=o.shape, color=o.color) == 1:
            return f"{o.color} {o.shape}"
        same = [p for p in self.objects if p.shape == o.shape and p.color == o.color]
        if sum(1 for p in same if p.size == o.size) == 1:
            return f"{o.size} {o.color} {o.shape}"
        return None


# ---------------------------------------------------------------------- sampling


@dataclass
class SceneConfig:
    min_objects: int = 1
    max_objects: int = 4
    # Probability of each object count from min..max (renormalised if the range changes).
    count_weights: tuple[float, ...] = (0.2, 0.35, 0.3, 0.15)
    jitter: float = 0.025  # max centre offset inside a cell, fraction of the image side


def shape_prior(theme: str) -> np.ndarray:
    """P(shape | theme): favoured shapes get THEME_BOOST times the weight of the others."""
    favours = vocab.THEMES[theme]["favours"]
    w = np.array([vocab.THEME_BOOST if s in favours else 1.0 for s in vocab.SHAPES])
    return w / w.sum()


def color_prior(shape: str) -> np.ndarray:
    usual = vocab.USUAL_COLOR[shape]
    n = len(vocab.COLOR_NAMES)
    other = (1 - vocab.USUAL_COLOR_P) / (n - 1)
    return np.array([vocab.USUAL_COLOR_P if c == usual else other for c in vocab.COLOR_NAMES])


def sample_scene(rng: np.random.Generator, image_id: str, cfg: SceneConfig | None = None) -> Scene:
    cfg = cfg or SceneConfig()
    theme = tuple(vocab.THEMES)[rng.integers(len(vocab.THEMES))]
    counts = np.arange(cfg.min_objects, cfg.max_objects + 1)
    w = np.array(cfg.count_weights[: len(counts)], dtype=float)
    if len(w) < len(counts):
        w = np.ones(len(counts))
    n = int(rng.choice(counts, p=w / w.sum()))
    cells = rng.choice(vocab.GRID * vocab.GRID, size=n, replace=False)
    sp = shape_prior(theme)
    objs = []
    for c in cells:
        col, row = int(c % vocab.GRID), int(c // vocab.GRID)
        shape = vocab.SHAPES[rng.choice(len(vocab.SHAPES), p=sp)]
        color = vocab.COLOR_NAMES[rng.choice(len(vocab.COLOR_NAMES), p=color_prior(shape))]
        size = vocab.SIZES[rng.integers(2)]
        jx, jy = rng.uniform(-cfg.jitter, cfg.jitter, size=2)
        x = (col + 0.5) / vocab.GRID + float(jx)
        y = (row + 0.5) / vocab.GRID + float(jy)
        objs.append(Obj(shape, color, size, (col, row), round(x, 4), round(y, 4)))
    # Reading order (top-to-bottom, left-to-right) so descriptions list objects naturally.
    objs.sort(key=lambda o: (o.cell[1], o.cell[0]))
    return Scene(image_id=image_id, theme=theme, objects=objs)


def read_scene_file(path: str | os.PathLike) -> list[Scene]:
    """Every scene graph of a `scenes.jsonl` (as `mmalign world make` writes it), in order."""
    with open(path, encoding="utf-8") as f:
        return [Scene.from_dict(json.loads(line)) for line in f if line.strip()]


def pretraining_scenes(world: str | os.PathLike, purpose: str) -> list[Scene]:
    """The world's pretraining scenes (the only images the base and the sets built on top of
    it may train on); a ValueError naming the file and `purpose` when there are none."""
    path = Path(world) / "scenes.jsonl"
    scenes = [s for s in read_scene_file(path) if s.split == "pretrain"]
    if not scenes:
        raise ValueError(f"{path}: no pretraining scenes for {purpose}")
    return scenes


def scenes_by_image(scenes: list[Scene]) -> dict[str, Scene]:
    """Scenes keyed by world-relative image path and by image id (records may use either)."""
    out: dict[str, Scene] = {}
    for s in scenes:
        out[s.image] = s
        out[s.image_id] = s
    return out

"""The world's vocabulary: shapes, colours, sizes, positions and scene themes.

The choices (documented in docs/world.md) aim at three things at once:
- a tiny VLM can see every distinction at 64x64 pixels (shapes are drawn large and distinct);
- the language has priors a model can wrongly lean on, like real data: each theme favours some
  shapes (co-occurrence, which makes POPE's popular/adversarial splits meaningful) and each
  shape has a usual colour (which makes attribute hallucination tempting);
- two voices exist for the same facts: a terse "house" style (clean pretraining set) and a
  verbose machine-generated style (the instruction corpus), so style alignment is measurable.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
PLURALS = {s: s + "es" if s.endswith("x") or s.endswith("s") else s + "s" for s in SHAPES}
PLURALS["shape"] = "shapes"

COLORS = {
    "red": (214, 40, 40),
    "green": (34, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (236, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
COLOR_NAMES = tuple(COLORS)

SIZES = ("small", "large")
# Radius as a fraction of the image side: large shapes are ~1.8x the small ones.
SIZE_RADIUS = {"small": 0.10, "large": 0.15}

# A 3x3 grid of cells, (col, row). Each object sits in its own cell (with jitter), so
# positions and left/right/above/below relations are exact and never ambiguous.
GRID = 3
CLEAN_POSITION = {
    (0, 0): "top left", (1, 0): "top", (2, 0): "top right",
    (0, 1): "left", (1, 1): "center", (2, 1): "right",
    (0, 2): "bottom left", (1, 2): "bottom", (2, 2): "bottom right",
}
MACHINE_POSITION = {
    (0, 0): "upper left corner", (1, 0): "upper middle part", (2, 0): "upper right corner",
    (0, 1): "left part", (1, 1): "middle", (2, 1): "right part",
    (0, 2): "lower left corner", (1, 2): "lower middle part", (2, 2): "lower right corner",
}

# Themes play the role of scene types (kitchen, street, ...): a faint background tint and
# a preference for a few shapes. Preferred shapes are drawn `THEME_BOOST` times as often.
THEMES = {
    "sand": {"background": (236, 226, 204), "favours": ("circle", "ring", "star")},
    "stone": {"background": (214, 214, 214), "favours": ("square", "diamond", "cross")},
    "mint": {"background": (212, 236, 220), "favours": ("triangle", "star", "hexagon")},
    "sky": {"background": (210, 224, 242), "favours": ("circle", "hexagon", "diamond")},
}
THEME_BOOST = 5.0
# Each shape's usual colour, chosen with probability USUAL_COLOR_P (else uniform over the rest).
USUAL_COLOR = {
    "circle": "red", "square": "blue", "triangle": "green", "diamond": "purple",
    "star": "yellow", "cross": "red", "ring": "orange", "hexagon": "green",
}
USUAL_COLOR_P = 0.45

# How backgrounds are named in machine-style descriptions (no colour word from COLORS, so
# colour checks never confuse a background with an object).
BACKGROUND_NAME = {"sand": "beige", "stone": "gray", "mint": "mint", "sky": "pale azure"}

# LLaVA-1.5's short-answer instruction: the clean set uses it for terse answers, and the
# evaluation harness appends it to POPE/VQA questions, so both speak the same convention.
SHORT_ANSWER = "Answer the question using a single word or phrase."

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

RELATIONS = ("left of", "right of", "above", "below")
RELATION_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below",
                     "below": "above"}


def plural(shape: str, n: int) -> str:
    return shape if n == 1 else PLURALS[shape]


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)

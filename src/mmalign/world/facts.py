"""Read object mentions back out of free text, independently of how the text was generated.

Used to check text against scene graphs: CHAIR (which shapes a description mentions), the
rewrite guard (did a rewrite drop or change an object?) and tests of the generators. It
parses noun phrases like "two small red circles" or "a large ring"; it does not reuse any
generator template, so a test built on it is a real check of the generated text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmalign.world import vocab

_SHAPE_FORMS = {vocab.PLURALS[s]: s for s in vocab.SHAPES} | {s: s for s in vocab.SHAPES}
_PHRASE = re.compile(
    r"\b(?:(?P<size>small|large)\s+)?(?:(?P<color>" + "|".join(vocab.COLOR_NAMES) + r")\s+)?"
    r"(?P<shape>" + "|".join(sorted(_SHAPE_FORMS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
# "no star", "not a star", "nothing ... star" within the clause before the noun.
_NEGATION = re.compile(r"\b(no|not|without|none|nothing|zero)\b[^.,;:!?]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    shape: str
    color: str | None
    size: str | None
    negated: bool
    start: int


def mentions(text: str) -> list[Mention]:
    out = []
    for m in _PHRASE.finditer(text):
        clause_start = max(text.rfind(c, 0, m.start()) for c in ".;:!?") + 1
        negated = bool(_NEGATION.search(text[clause_start:m.start()]))
        out.append(Mention(
            shape=_SHAPE_FORMS[m.group("shape").lower()],
            color=m.group("color").lower() if m.group("color") else None,
            size=m.group("size").lower() if m.group("size") else None,
            negated=negated,
            start=m.start(),
        ))
    return out


def mentioned_shapes(text: str, *, skip_negated: bool = True) -> set[str]:
    """Shapes the text says are there ("there is no star" does not count by default)."""
    return {m.shape for m in mentions(text) if not (skip_negated and m.negated)}

"""SteerLM's attribute-conditioned prompt (DESIGN 6.3; Dong et al. 2023, as used by MM-DPO).

The question gets the attribute string appended (after a newline):

  Please answer the question such that your response is in the following attributes in
  5-point Likert scale:
  Helpfulness:h,Correctness:c,Coherence:co,Complexity:x,Verbosity:v

(the first two lines above are one line; the line break after "scale:" is part of the
string). In training, h, c, co, x, v are the answer's actual ratings (0-4, written as whole
numbers); at inference they are the values one asks for, by default the best on every
attribute. Only the format lives here; building datasets and training come with the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmalign.records import RATING_ATTRIBUTES, Turn

STEER_PREFIX = ("Please answer the question such that your response is in the following "
                "attributes in 5-point Likert scale:\n")
# Attribute order and spelling of the string, as in the design; keys are RATING_ATTRIBUTES.
STEER_NAMES = {"helpfulness": "Helpfulness", "correctness": "Correctness",
               "coherence": "Coherence", "complexity": "Complexity", "verbosity": "Verbosity"}
DEFAULT_TARGET = {a: 4 for a in RATING_ATTRIBUTES}


def _value(scores: Mapping[str, float], attr: str) -> int:
    if attr not in scores:
        raise ValueError(f"SteerLM attributes need a {attr!r} value (got {sorted(scores)})")
    v = scores[attr]
    if isinstance(v, bool) or not isinstance(v, int | float) or float(v) != int(v) \
            or not 0 <= v <= 4:
        raise ValueError(f"SteerLM {attr} must be a whole number 0-4, got {v!r}")
    return int(v)


def attribute_string(scores: Mapping[str, float]) -> str:
    """The full steering text for `scores` (all five attributes required)."""
    values = ",".join(f"{STEER_NAMES[a]}:{_value(scores, a)}" for a in STEER_NAMES)
    return STEER_PREFIX + values


def steer_question(question: str, scores: Mapping[str, float]) -> str:
    """`question` with the steering text appended on a new line."""
    return f"{question.rstrip()}\n{attribute_string(scores)}"


def training_prompt(prompt: Sequence[Turn], ratings: Mapping[str, float]) -> list[Turn]:
    """A prompt's turns with the answer's actual ratings appended to its last user turn."""
    return _steer_last(prompt, ratings)


def inference_prompt(prompt: Sequence[Turn],
                     target: Mapping[str, float] | None = None) -> list[Turn]:
    """A prompt's turns asking for `target` values (default: 4 on every attribute); a partial
    `target` overrides only the attributes it names."""
    values = dict(DEFAULT_TARGET)
    values.update(target or {})
    return _steer_last(prompt, values)


def _steer_last(prompt: Sequence[Turn], scores: Mapping[str, float]) -> list[Turn]:
    turns = list(prompt)
    last = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last is None:
        raise ValueError("a SteerLM prompt needs a user turn to append the attributes to")
    turns[last] = Turn("user", steer_question(turns[last].content, scores))
    return turns


def parse_attribute_string(text: str) -> dict[str, int]:
    """The values of a steering text at the end of `text` (inverse of `steer_question`)."""
    at = text.rfind(STEER_PREFIX)
    if at < 0:
        raise ValueError("no SteerLM attribute string in the text")
    out = {}
    for part in text[at + len(STEER_PREFIX):].strip().split(","):
        name, sep, value = part.partition(":")
        attr = next((a for a, n in STEER_NAMES.items() if n == name.strip()), None)
        if not sep or attr is None or not value.strip().isdigit():
            raise ValueError(f"malformed SteerLM attribute {part!r}")
        out[attr] = int(value)
    if set(out) != set(STEER_NAMES):
        raise ValueError(f"SteerLM attribute string lacks {sorted(set(STEER_NAMES) - set(out))}")
    return out

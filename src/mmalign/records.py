"""The data contracts every stage speaks: Sample, Turn, PreferencePair, Rating.

Records are plain dataclasses with `to_dict` / `from_dict`, so the native JSONL form is
exactly `json.dumps(record.to_dict())`. Validation lives in `validate_*` functions that raise
`RecordError` naming the field; the readers in `mmalign.io` add the file and record index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")
CATEGORIES = ("conversation", "detail", "reasoning", "other")
RATING_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


class RecordError(ValueError):
    """A record that breaks the contract. Carries where it happened so messages name it.

    `file` and `index` are filled in by the reader that found the record; `field` is a
    dotted/indexed path inside the record such as `turns[2].content`.
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        file: str | None = None,
        index: int | None = None,
        record_id: str | None = None,
    ):
        self.reason = reason
        self.field = field
        self.file = file
        self.index = index
        self.record_id = record_id
        super().__init__(self.message())

    def located(self, *, file: str | None = None, index: int | None = None,
                record_id: str | None = None) -> RecordError:
        """Return a copy with the location filled in (keeps what is already known)."""
        return RecordError(
            self.reason,
            field=self.field,
            file=self.file or file,
            index=self.index if self.index is not None else index,
            record_id=self.record_id or record_id,
        )

    def message(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.index is not None:
            where.append(f"record {self.index}")
        if self.record_id:
            where.append(f"id {self.record_id!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return (": ".join([", ".join(where), self.reason]) if where else self.reason)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index, "id": self.record_id,
                "field": self.field, "reason": self.reason}


@dataclass
class Turn:
    role: str  # system | user | assistant
    content: str

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


@dataclass
class Sample:
    """One training/eval example: images plus a conversation.

    `images` are paths relative to an image root (or content-hash keys); each `<image>`
    placeholder in the user turns stands for one entry, in order.
    """

    id: str
    images: list[str]
    turns: list[Turn]
    category: str = "other"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "images": list(self.images),
            "turns": [t.to_dict() for t in self.turns],
            "category": self.category,
            "source": self.source,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        s = cls(
            id=_str(d, "id"),
            images=_str_list(d.get("images", []), "images"),
            turns=_turns(d.get("turns"), "turns"),
            category=d.get("category", "other"),
            source=d.get("source", "") or "",
            meta=_dict(d.get("meta", {}), "meta"),
        )
        validate_sample(s)
        return s

    @property
    def questions(self) -> list[str]:
        return [t.content for t in self.turns if t.role == "user"]

    @property
    def answers(self) -> list[str]:
        return [t.content for t in self.turns if t.role == "assistant"]


@dataclass
class PreferencePair:
    """A prompt with a preferred and a dispreferred response.

    `chosen` / `rejected` are the assistant's texts for the final turn; `prompt` holds every
    turn before it (with the `<image>` placeholders). `rejected_images`, when set, are the
    images the rejected side was produced from (POVID's noised image, say).
    """

    id: str
    images: list[str]
    prompt: list[Turn]
    chosen: str
    rejected: str
    rejected_images: list[str] | None = None
    origin: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "images": list(self.images),
            "prompt": [t.to_dict() for t in self.prompt],
            "chosen": self.chosen,
            "rejected": self.rejected,
            "rejected_images": None if self.rejected_images is None else list(self.rejected_images),
            "origin": self.origin,
            "scores": self.scores,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreferencePair:
        ri = d.get("rejected_images")
        p = cls(
            id=_str(d, "id"),
            images=_str_list(d.get("images", []), "images"),
            prompt=_turns(d.get("prompt"), "prompt"),
            chosen=_str(d, "chosen", allow_empty=True),
            rejected=_str(d, "rejected", allow_empty=True),
            rejected_images=None if ri is None else _str_list(ri, "rejected_images"),
            origin=d.get("origin", "") or "",
            scores=_dict(d.get("scores", {}), "scores"),
            meta=_dict(d.get("meta", {}), "meta"),
        )
        validate_pair(p)
        return p


@dataclass
class Rating:
    """A judge's ratings of one response: attribute -> value, with its reasoning.

    `judge` identifies the judge (backend + model), `prompt_hash` the judge prompt file
    version; `error` is set (and `scores` empty) when the judge failed on this response.
    """

    sample_id: str
    response: str
    scores: dict[str, float]
    reasoning: str = ""
    judge: str = ""
    prompt_hash: str = ""
    response_index: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rating:
        scores = _dict(d.get("scores", {}), "scores")
        for k, v in scores.items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise RecordError(f"score must be a number, got {v!r}", field=f"scores.{k}")
        return cls(
            sample_id=_str(d, "sample_id"),
            response=_str(d, "response", allow_empty=True),
            scores={k: float(v) for k, v in scores.items()},
            reasoning=d.get("reasoning", "") or "",
            judge=d.get("judge", "") or "",
            prompt_hash=d.get("prompt_hash", "") or "",
            response_index=int(d.get("response_index", 0)),
            error=d.get("error"),
        )


# --------------------------------------------------------------------------- validation


def count_image_tokens(turns: list[Turn]) -> int:
    return sum(t.content.count(IMAGE_TOKEN) for t in turns)


def validate_sample(s: Sample) -> None:
    """Raise RecordError if the sample breaks the contract."""
    if not s.turns:
        raise RecordError("empty conversation", field="turns")
    if s.category not in CATEGORIES:
        raise RecordError(f"unknown category {s.category!r}; expected one of {CATEGORIES}",
                          field="category")
    _validate_turns(s.turns, "turns")
    if not any(t.role == "assistant" for t in s.turns):
        raise RecordError("conversation has no assistant turn", field="turns")
    _validate_placeholders(s.turns, s.images, "turns")


def validate_pair(p: PreferencePair) -> None:
    if not p.prompt:
        raise RecordError("empty prompt", field="prompt")
    _validate_turns(p.prompt, "prompt")
    if p.prompt[-1].role != "user":
        raise RecordError("prompt must end with a user turn",
                          field=f"prompt[{len(p.prompt) - 1}].role")
    if not p.chosen.strip():
        raise RecordError("empty chosen response", field="chosen")
    if not p.rejected.strip():
        raise RecordError("empty rejected response", field="rejected")
    _validate_placeholders(p.prompt, p.images, "prompt")
    if p.rejected_images is not None and len(p.rejected_images) != len(p.images):
        raise RecordError(
            f"{len(p.rejected_images)} rejected images for {len(p.images)} images",
            field="rejected_images")


def _validate_turns(turns: list[Turn], name: str) -> None:
    for i, t in enumerate(turns):
        if t.role not in ROLES:
            raise RecordError(f"unknown role {t.role!r}", field=f"{name}[{i}].role")
        if not isinstance(t.content, str):
            raise RecordError("content must be a string", field=f"{name}[{i}].content")
        if not t.content.strip():
            raise RecordError("empty message", field=f"{name}[{i}].content")
        if t.role == "assistant" and IMAGE_TOKEN in t.content:
            raise RecordError(f"{IMAGE_TOKEN} placeholder in an assistant turn",
                              field=f"{name}[{i}].content")


def _validate_placeholders(turns: list[Turn], images: list[str], name: str) -> None:
    n = count_image_tokens(turns)
    if n != len(images):
        raise RecordError(f"{n} {IMAGE_TOKEN} placeholder(s) for {len(images)} image(s)",
                          field=name)


# --------------------------------------------------------------------------- field parsing


def _str(d: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    if key not in d or d[key] is None:
        raise RecordError("missing", field=key)
    v = d[key]
    if isinstance(v, int) and not isinstance(v, bool) and key == "id":
        v = str(v)
    if not isinstance(v, str):
        raise RecordError(f"expected a string, got {type(v).__name__}", field=key)
    if not allow_empty and not v:
        raise RecordError("empty", field=key)
    return v


def _str_list(v: Any, name: str) -> list[str]:
    if not isinstance(v, list):
        raise RecordError(f"expected a list, got {type(v).__name__}", field=name)
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x:
            raise RecordError(f"expected a non-empty string, got {x!r}", field=f"{name}[{i}]")
    return list(v)


def _dict(v: Any, name: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RecordError(f"expected an object, got {type(v).__name__}", field=name)
    return v


def _turns(v: Any, name: str) -> list[Turn]:
    if v is None:
        raise RecordError("missing", field=name)
    if not isinstance(v, list):
        raise RecordError(f"expected a list of turns, got {type(v).__name__}", field=name)
    out = []
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            raise RecordError(f"expected an object, got {type(t).__name__}", field=f"{name}[{i}]")
        if "role" not in t:
            raise RecordError("missing", field=f"{name}[{i}].role")
        if "content" not in t:
            raise RecordError("missing", field=f"{name}[{i}].content")
        out.append(Turn(role=t["role"], content=t["content"]))
    return out

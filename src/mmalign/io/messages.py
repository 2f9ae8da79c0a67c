"""Conversions shared by the chat formats: roles, typed content parts, error field names.

Typed content (TRL / OpenAI) and our `<image>` placeholder strings must convert both ways
exactly: a string is split on `<image>`; each placeholder becomes an image part and each
non-empty text segment a text part, verbatim (newlines included). Joining the parts back
gives the original string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mmalign.records import IMAGE_TOKEN, RecordError, Sample, Turn

# Our extra keys on sample records, and the values they take when a file leaves them out.
SAMPLE_DEFAULTS = {"category": "other", "source": "", "meta": {}}

LLAVA_TO_ROLE = {"human": "user", "gpt": "assistant", "system": "system",
                 # Some LLaVA-style dumps already use chat roles; accept them on read.
                 "user": "user", "assistant": "assistant"}
ROLE_TO_LLAVA = {"user": "human", "assistant": "gpt", "system": "system"}
IMAGE_PART_TYPES = ("image", "image_url")


def to_parts(text: str) -> list[dict[str, Any]]:
    """'<image>\\nWhat?' -> [{'type': 'image'}, {'type': 'text', 'text': '\\nWhat?'}]"""
    parts: list[dict[str, Any]] = []
    for i, segment in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            parts.append({"type": "image"})
        if segment:
            parts.append({"type": "text", "text": segment})
    return parts


def typed_messages(turns: list[Turn] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns (ours or {role, content} dicts) -> the typed-content messages chat templates
    and TRL expect, each `<image>` becoming an image part."""
    out = []
    for t in turns:
        role, content = (t.role, t.content) if isinstance(t, Turn) else (t["role"], t["content"])
        out.append({"role": role, "content": to_parts(content)})
    return out


def from_parts(parts: Any, field: str) -> tuple[str, list[str]]:
    """Join typed parts back into a placeholder string.

    Returns the text and any image references the parts carry themselves (OpenAI
    `image_url.url`, or a path in an `image` part); most files keep those in `images` instead.
    """
    if isinstance(parts, str):
        return parts, []
    if not isinstance(parts, list):
        raise RecordError(f"content must be a string or a list of parts, got "
                          f"{type(parts).__name__}", field=field)
    out: list[str] = []
    refs: list[str] = []
    for i, part in enumerate(parts):
        where = f"{field}[{i}]"
        if not isinstance(part, dict) or "type" not in part:
            raise RecordError("content part must be an object with a 'type'", field=where)
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RecordError("text part without a string 'text'", field=f"{where}.text")
            out.append(text)
        elif kind in IMAGE_PART_TYPES:
            out.append(IMAGE_TOKEN)
            ref = _image_ref(part)
            if ref:
                refs.append(ref)
        else:
            raise RecordError(f"unsupported content part type {kind!r}", field=f"{where}.type")
    return "".join(out), refs


def _image_ref(part: dict[str, Any]) -> str | None:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    for ref in (url, part.get("image"), part.get("path"), part.get("url")):
        if isinstance(ref, str) and ref:
            return ref
    return None


def image_list(value: Any, field: str) -> list[str]:
    """LLaVA's `image`: absent/None -> [], a string -> [it], a list -> the list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value  # element types are checked by the record contract
    raise RecordError(f"expected a string or a list of strings, got {type(value).__name__}",
                      field=field)


def image_value(images: list[str]) -> str | list[str] | None:
    """The inverse of `image_list`: None means 'leave the key out'."""
    if not images:
        return None
    return images[0] if len(images) == 1 else list(images)


def require_list(d: dict[str, Any], key: str) -> list[Any]:
    v = d.get(key)
    if v is None:
        raise RecordError("missing", field=key)
    if not isinstance(v, list):
        raise RecordError(f"expected a list, got {type(v).__name__}", field=key)
    return v


def from_value_turns(items: list[Any], field: str) -> list[dict[str, Any]]:
    """LLaVA/ShareGPT `[{'from': 'human', 'value': ...}]` -> native turn dicts."""
    turns = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise RecordError(f"expected an object, got {type(m).__name__}", field=f"{field}[{i}]")
        who = m.get("from")
        if who not in LLAVA_TO_ROLE:
            raise RecordError(f"unknown speaker {who!r}; expected human, gpt or system",
                              field=f"{field}[{i}].from")
        value = m.get("value")
        if not isinstance(value, str):
            raise RecordError("missing or not a string", field=f"{field}[{i}].value")
        turns.append({"role": LLAVA_TO_ROLE[who], "content": value})
    return turns


def to_value_turns(turns: list[Any]) -> list[dict[str, str]]:
    return [{"from": ROLE_TO_LLAVA[t.role], "value": t.content} for t in turns]


def from_role_messages(items: list[Any], field: str) -> tuple[list[dict[str, Any]], list[str]]:
    """`[{'role', 'content': str | parts}]` -> native turn dicts and inline image refs."""
    turns, refs = [], []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise RecordError(f"expected an object, got {type(m).__name__}", field=f"{field}[{i}]")
        if "role" not in m:
            raise RecordError("missing", field=f"{field}[{i}].role")
        text, found = from_parts(m.get("content"), f"{field}[{i}].content")
        turns.append({"role": m["role"], "content": text})
        refs.extend(found)
    return turns, refs


def extras(record_dict: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Our fields a foreign format has no slot for, written only when not at their default
    (readers fill the default back in, so leaving them out is still lossless)."""
    return {k: record_dict[k] for k, default in defaults.items() if record_dict[k] != default}


def renamed(err: RecordError, rename: Callable[[str], str]) -> RecordError:
    """Re-express a native field path (`turns[2].content`) in the input format's own keys."""
    if not err.field:
        return err
    return RecordError(err.reason, field=rename(err.field), file=err.file, index=err.index,
                       record_id=err.record_id)


def field_renamer(pairs: list[tuple[str, str]]) -> Callable[[str], str]:
    """Build a renamer from (native regex, format replacement) pairs; first match wins."""
    compiled = [(re.compile(a), b) for a, b in pairs]

    def rename(f: str) -> str:
        for pattern, repl in compiled:
            if pattern.match(f):
                return pattern.sub(repl, f, count=1)
        return f

    return rename


def sample_from_native(obj: dict[str, Any], images: list[str], turns: list[dict[str, Any]],
                       rename: Callable[[str], str]) -> Sample:
    """Build a Sample from a format's decoded turns and images plus our extra keys, with
    error fields translated back into the format's own names."""
    native = {"id": obj.get("id"), "images": images, "turns": turns,
              **{k: obj[k] for k in SAMPLE_DEFAULTS if k in obj}}
    try:
        return Sample.from_dict(native)
    except RecordError as e:
        raise renamed(e, rename) from None

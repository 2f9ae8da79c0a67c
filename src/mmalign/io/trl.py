"""TRL's conversational vision format (TRL docs, "Dataset formats" > "Vision datasets").

SFT: `{"id", "images": [...], "messages": [{"role", "content": [{"type": "image"},
{"type": "text", "text": ...}]}]}`. Preference (DPOTrainer): `{"id", "images", "prompt":
[typed user/system messages], "chosen": [{"role": "assistant", "content": [text part]}],
"rejected": [...]}`. Our extras: `rejected_images` when set, `origin`, `scores`, `meta`
(and `category`, `source`, `meta` for samples), written only when not at their defaults.

Read leniently: content may be a plain string, `prompt`/`chosen`/`rejected` may be plain
strings (TRL's standard format), and an implicit prompt (chosen = prompt + answer) is split.
"""

from __future__ import annotations

from typing import Any

from mmalign.io.messages import (
    SAMPLE_DEFAULTS,
    extras,
    field_renamer,
    from_parts,
    from_role_messages,
    require_list,
    sample_from_native,
    to_parts,
    typed_messages,
)
from mmalign.records import PreferencePair, RecordError, Sample

PAIR_DEFAULTS = {"origin": "", "scores": {}, "meta": {}}

_rename_sample = field_renamer([(r"^turns", "messages")])


def decode(obj: dict[str, Any]) -> Sample | PreferencePair:
    if "messages" in obj:
        return decode_sample(obj)
    if "chosen" in obj or "rejected" in obj:
        return decode_pair(obj)
    raise RecordError("neither 'messages' (SFT) nor 'chosen'/'rejected' (preference) present",
                      field="messages")


def encode(record: Sample | PreferencePair) -> dict[str, Any]:
    return encode_sample(record) if isinstance(record, Sample) else encode_pair(record)


def decode_sample(obj: dict[str, Any]) -> Sample:
    turns, refs = from_role_messages(require_list(obj, "messages"), "messages")
    images = obj["images"] if obj.get("images") is not None else refs
    return sample_from_native(obj, images, turns, _rename_sample)


def encode_sample(s: Sample) -> dict[str, Any]:
    return {
        "id": s.id,
        "images": list(s.images),
        "messages": typed_messages(s.turns),
        **extras(s.to_dict(), SAMPLE_DEFAULTS),
    }


def decode_pair(obj: dict[str, Any]) -> PreferencePair:
    chosen_prefix, chosen = _completion(obj, "chosen")
    rejected_prefix, rejected = _completion(obj, "rejected")
    refs: list[str] = []
    if obj.get("prompt") is not None:
        prompt_value = obj["prompt"]
        if isinstance(prompt_value, str):
            prompt = [{"role": "user", "content": prompt_value}]
        else:
            prompt, refs = from_role_messages(require_list(obj, "prompt"), "prompt")
    else:
        # Implicit prompt: both sides repeat the conversation before their last message.
        if chosen_prefix != rejected_prefix:
            raise RecordError("implicit prompt differs between chosen and rejected",
                              field="rejected")
        prompt = chosen_prefix
    images = obj["images"] if obj.get("images") is not None else refs
    native = {"id": obj.get("id"), "images": images, "prompt": prompt, "chosen": chosen,
              "rejected": rejected, "rejected_images": obj.get("rejected_images"),
              **{k: obj[k] for k in PAIR_DEFAULTS if k in obj}}
    return PreferencePair.from_dict(native)


def encode_pair(p: PreferencePair) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": p.id,
        "images": list(p.images),
        "prompt": typed_messages(p.prompt),
        "chosen": [{"role": "assistant", "content": to_parts(p.chosen)}],
        "rejected": [{"role": "assistant", "content": to_parts(p.rejected)}],
    }
    if p.rejected_images is not None:
        out["rejected_images"] = list(p.rejected_images)
    out.update(extras(p.to_dict(), PAIR_DEFAULTS))
    return out


def _completion(obj: dict[str, Any], key: str) -> tuple[list[dict[str, Any]], str]:
    """`chosen`/`rejected` -> (messages before the answer, the answer's text)."""
    value = obj.get(key)
    if value is None:
        raise RecordError("missing", field=key)
    if isinstance(value, str):
        return [], value
    messages = require_list(obj, key)
    if not messages:
        raise RecordError("empty completion", field=key)
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise RecordError("last message must be the assistant's",
                          field=f"{key}[{len(messages) - 1}].role")
    text, _ = from_parts(last.get("content"), f"{key}[{len(messages) - 1}].content")
    prefix, _ = from_role_messages(messages[:-1], key)
    return prefix, text

"""ShareGPT / OpenAI-messages data as LLaMA-Factory reads it.

Written as `{"id", "messages": [{"role", "content": str}], "images": [...]}` plus our extra
keys. Read leniently: `content` may also be OpenAI typed parts (text / image / image_url), and
the older ShareGPT shape `conversations: [{"from", "value"}]` is accepted too.
"""

from __future__ import annotations

from typing import Any

from mmalign.io.messages import (
    SAMPLE_DEFAULTS,
    extras,
    field_renamer,
    from_role_messages,
    from_value_turns,
    require_list,
    sample_from_native,
)
from mmalign.records import Sample

_rename_messages = field_renamer([(r"^turns", "messages")])
_rename_conversations = field_renamer([
    (r"^turns\[(\d+)\]\.content", r"conversations[\1].value"),
    (r"^turns\[(\d+)\]\.role", r"conversations[\1].from"),
    (r"^turns", "conversations"),
])


def decode_sample(obj: dict[str, Any]) -> Sample:
    if "messages" not in obj and "conversations" in obj:
        turns = from_value_turns(require_list(obj, "conversations"), "conversations")
        refs: list[str] = []
        rename = _rename_conversations
    else:
        turns, refs = from_role_messages(require_list(obj, "messages"), "messages")
        rename = _rename_messages
    # Files that put the image path inside the parts (image_url) have no `images` key.
    images = obj["images"] if obj.get("images") is not None else refs
    return sample_from_native(obj, images, turns, rename)


def encode_sample(s: Sample) -> dict[str, Any]:
    return {
        "id": s.id,
        "messages": [{"role": t.role, "content": t.content} for t in s.turns],
        "images": list(s.images),
        **extras(s.to_dict(), SAMPLE_DEFAULTS),
    }

"""LLaVA instruction data: `{"id", "image", "conversations": [{"from", "value"}]}`.

`image` is a string for one image, a list for several (LLaVA-OneVision style) and absent for
none. Our `category`, `source`, `meta` ride along as extra top-level keys (LLaVA's loader
ignores keys it does not know), written only when not at their defaults.
"""

from __future__ import annotations

from typing import Any

from mmalign.io.messages import (
    SAMPLE_DEFAULTS,
    extras,
    field_renamer,
    from_value_turns,
    image_list,
    image_value,
    require_list,
    sample_from_native,
    to_value_turns,
)
from mmalign.records import Sample

_rename = field_renamer([
    (r"^turns\[(\d+)\]\.content", r"conversations[\1].value"),
    (r"^turns\[(\d+)\]\.role", r"conversations[\1].from"),
    (r"^turns", "conversations"),
])


def decode_sample(obj: dict[str, Any]) -> Sample:
    images = image_list(obj["image"] if "image" in obj else obj.get("images"), "image")
    turns = from_value_turns(require_list(obj, "conversations"), "conversations")
    return sample_from_native(obj, images, turns, _rename)


def encode_sample(s: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {"id": s.id}
    image = image_value(s.images)
    if image is not None:
        out["image"] = image
    out["conversations"] = to_value_turns(s.turns)
    out.update(extras(s.to_dict(), SAMPLE_DEFAULTS))
    return out

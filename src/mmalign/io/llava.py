"""LLaVA instruction data: `{"id", "image", "conversations": [{"from", "value"}]}`.

`image` is a string for one image, a list for several (LLaVA-OneVision style) and absent for
none. Our `category`, `source`, `meta` ride along as extra top-level keys (LLaVA's loader
ignores keys it does not know), written only when not at their defaults.
"""

from __future__ import annotations

from typing import Any

from mmalign.io.messages import (
    extras,
    field_renamer,
    from_value_turns,
    image_list,
    image_value,
    renamed,
    require_list,
    to_value_turns,
)
from mmalign.records import RecordError, Sample

SAMPLE_DEFAULTS = {"category": "other", "source": "", "meta": {}}

_rename = field_renamer([
    (r"^turns\[(\d+)\]\.content", r"conversations[\1].value"),
    (r"^turns\[(\d+)\]\.role", r"conversations[\1].from"),
    (r"^turns", "conversations"),
])


def decode_sample(obj: dict[str, Any]) -> Sample:
    images = image_list(obj["image"] if "image" in obj else obj.get("images"), "image")
    turns = from_value_turns(require_list(obj, "conversations"), "conversations")
    native = {"id": obj.get("id"), "images": images, "turns": turns,
              **{k: obj[k] for k in SAMPLE_DEFAULTS if k in obj}}
    try:
        return Sample.from_dict(native)
    except RecordError as e:
        raise renamed(e, _rename) from None


def encode_sample(s: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {"id": s.id}
    image = image_value(s.images)
    if image is not None:
        out["image"] = image
    out["conversations"] = to_value_turns(s.turns)
    out.update(extras(s.to_dict(), SAMPLE_DEFAULTS))
    return out

"""POVID preference data (github.com/YiyangZhou/POVID, `llava/train/train_dpo.py`).

POVID's `LazySupervisedDataset` does `json.load` on a JSON array whose elements are LLaVA
records with two conversations over the same prompt:
`{"id", "image", "conversations": [...prompt..., {"from": "gpt", "value": chosen}],
"rejected_conversations": [...same prompt..., {"from": "gpt", "value": rejected}]}`.
Its noised "rejected image" is made on the fly during training, so the format has no slot
for it: ours rides along as the extra key `rejected_images`, with `origin`, `scores` and
`meta`, each written only when not at its default.
"""

from __future__ import annotations

from typing import Any

from mmalign.io.messages import (
    extras,
    from_value_turns,
    image_list,
    image_value,
    require_list,
    to_value_turns,
)
from mmalign.io.trl import PAIR_DEFAULTS
from mmalign.records import PreferencePair, RecordError, Turn


def decode_pair(obj: dict[str, Any]) -> PreferencePair:
    images = image_list(obj["image"] if "image" in obj else obj.get("images"), "image")
    chosen_side = from_value_turns(require_list(obj, "conversations"), "conversations")
    rejected_side = from_value_turns(require_list(obj, "rejected_conversations"),
                                     "rejected_conversations")
    prompt, chosen = _split(chosen_side, "conversations")
    rejected_prompt, rejected = _split(rejected_side, "rejected_conversations")
    if rejected_prompt != prompt:
        raise RecordError("the rejected conversation's prompt differs from the chosen one's",
                          field="rejected_conversations")
    native = {"id": obj.get("id"), "images": images, "prompt": prompt, "chosen": chosen,
              "rejected": rejected, "rejected_images": obj.get("rejected_images"),
              **{k: obj[k] for k in PAIR_DEFAULTS if k in obj}}
    try:
        return PreferencePair.from_dict(native)
    except RecordError as e:
        raise _rename(e, len(prompt)) from None


def encode_pair(p: PreferencePair) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id}
    image = image_value(p.images)
    if image is not None:
        out["image"] = image
    prompt = to_value_turns(p.prompt)
    out["conversations"] = prompt + to_value_turns([Turn("assistant", p.chosen)])
    out["rejected_conversations"] = prompt + to_value_turns([Turn("assistant", p.rejected)])
    if p.rejected_images is not None:
        out["rejected_images"] = list(p.rejected_images)
    out.update(extras(p.to_dict(), PAIR_DEFAULTS))
    return out


def _split(turns: list[dict[str, Any]], field: str) -> tuple[list[dict[str, Any]], str]:
    if not turns:
        raise RecordError("empty conversation", field=field)
    if turns[-1]["role"] != "assistant":
        raise RecordError("conversation must end with a gpt turn",
                          field=f"{field}[{len(turns) - 1}].from")
    return turns[:-1], turns[-1]["content"]


def _rename(err: RecordError, n_prompt: int) -> RecordError:
    """Name the field as it appears in a POVID record (the native names are prompt/chosen)."""
    f = err.field
    if f and f.startswith("prompt"):
        f = "conversations" + f[len("prompt"):].replace(".content", ".value").replace(
            ".role", ".from")
    elif f == "chosen":
        f = f"conversations[{n_prompt}].value"
    elif f == "rejected":
        f = f"rejected_conversations[{n_prompt}].value"
    return RecordError(err.reason, field=f, file=err.file, index=err.index,
                       record_id=err.record_id)

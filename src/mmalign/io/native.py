"""Our own form: exactly `record.to_dict()`, one JSON object per line (Samples or pairs)."""

from __future__ import annotations

from typing import Any

from mmalign.records import PreferencePair, RecordError, Sample


def decode(obj: dict[str, Any]) -> Sample | PreferencePair:
    if "turns" in obj:
        return Sample.from_dict(obj)
    if "chosen" in obj or "rejected" in obj or "prompt" in obj:
        return PreferencePair.from_dict(obj)
    raise RecordError("neither 'turns' (sample) nor 'prompt'/'chosen'/'rejected' (pair) present",
                      field="turns")


def encode(record: Sample | PreferencePair) -> dict[str, Any]:
    return record.to_dict()

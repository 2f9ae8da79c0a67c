"""The front door: name a format (or let it be detected), read records, write records.

    for index, item, raw in iter_records("data.jsonl"):
        if isinstance(item, RecordError): ...   # located: file, index, id, field, reason
    write_records("out.parquet", samples, "parquet")

Reading never raises on a bad record; it yields a located `RecordError` instead, with the
record's original text (`raw`) so nothing is lost. Only whole-file problems raise
`DataFileError`. Writing is atomic: a failure leaves no output and no temporary file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign.io import llava, native, povid, sharegpt, trl
from mmalign.io.atomic import write_jsonl
from mmalign.io.containers import (
    DataFileError,
    Item,
    Raw,
    read_json_records,
    sniff_container,
    write_json_array,
)
from mmalign.io.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, RecordImageChecker
from mmalign.records import PreferencePair, RecordError, Sample

Record = Sample | PreferencePair
SAMPLE, PAIR = "sample", "pair"
# Marker files of a `save_to_disk` folder (kept here so detection does not import pyarrow).
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class Format:
    name: str
    holds: frozenset[str]
    # How records sit in the file: "array", "lines", "by-suffix" (.json -> array, else
    # lines) or "table". On read, JSON containers are told apart by the first character.
    container: str
    decode: Callable[[dict[str, Any]], Record] | None = None
    encode: Callable[[Any], dict[str, Any]] | None = None


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("llava", frozenset({SAMPLE}), "array", llava.decode_sample, llava.encode_sample),
    Format("llava-jsonl", frozenset({SAMPLE}), "lines", llava.decode_sample, llava.encode_sample),
    Format("sharegpt", frozenset({SAMPLE}), "by-suffix", sharegpt.decode_sample,
           sharegpt.encode_sample),
    Format("trl", frozenset({SAMPLE, PAIR}), "by-suffix", trl.decode, trl.encode),
    Format("povid", frozenset({PAIR}), "by-suffix", povid.decode_pair, povid.encode_pair),
    Format("jsonl", frozenset({SAMPLE, PAIR}), "lines", native.decode, native.encode),
    Format("hf", frozenset({SAMPLE, PAIR}), "table"),
    Format("parquet", frozenset({SAMPLE, PAIR}), "table"),
)}
SAMPLE_FORMATS = tuple(n for n, f in FORMATS.items() if SAMPLE in f.holds)
PAIR_FORMATS = tuple(n for n, f in FORMATS.items() if PAIR in f.holds)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataFileError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def kind_of(record: Record) -> str:
    return SAMPLE if isinstance(record, Sample) else PAIR


# --------------------------------------------------------------------------- detection


def detect_format(path: str | os.PathLike) -> str:
    """Tell a file's format from its shape and its first record's keys."""
    p = Path(path)
    if p.is_dir():
        if any((p / m).exists() for m in HF_MARKERS):
            return "hf"
        raise DataFileError(f"{path}: a folder, but not a dataset saved with save_to_disk")
    if not p.exists():
        raise DataFileError(f"{path}: no such file")
    if p.suffix.lower() == ".parquet":
        return "parquet"
    container = sniff_container(p)
    first = next((obj for _, obj, _ in read_json_records(p) if isinstance(obj, dict)), None)
    if first is None:  # empty: any reader yields nothing, pick the container's plain format
        return "llava" if container == "array" else "jsonl"
    fmt = _guess(first, container)
    if fmt is None:
        raise DataFileError(f"{path}: cannot tell the format from the first record's keys "
                            f"{sorted(first)}; pass --from")
    return fmt


def _guess(obj: dict[str, Any], container: str) -> str | None:
    if "conversations" in obj and "rejected_conversations" in obj:
        return "povid"
    if "conversations" in obj:
        return "llava" if container == "array" else "llava-jsonl"
    if "messages" in obj:
        messages = obj["messages"] if isinstance(obj["messages"], list) else []
        typed = any(isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages)
        return "trl" if typed else "sharegpt"
    if "turns" in obj:
        return "jsonl"
    if "chosen" in obj:
        prompt = obj.get("prompt")
        native_prompt = isinstance(prompt, list) and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)
        return "jsonl" if isinstance(obj["chosen"], str) and native_prompt else "trl"
    return None


# --------------------------------------------------------------------------- reading


def iter_records(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[tuple[int, Record | RecordError, Raw]]:
    """Yield `(index, record_or_error, raw)` for every record of `path`.

    `index` is the 0-based line index in JSONL (blank lines count), the 0-based element or
    row index otherwise. Image paths are always checked to stay inside `image_root` (default:
    the input's folder); with `check_images` the files are also opened and size-checked.
    Raises `DataFileError` (eagerly where it can) for problems with the whole file.
    """
    fmt = fmt or detect_format(path)
    spec = get_format(fmt)
    file = str(path)
    if spec.container == "table":
        from mmalign.io import tables  # pyarrow/datasets load only when a table is read

        decode, items = (tables.read_hf if fmt == "hf" else tables.read_parquet)(path)
        unit = None
    else:
        assert spec.decode is not None
        decode = spec.decode
        items = read_json_records(path)
        unit = "JSONL line" if sniff_container(path) == "lines" else None
    root = Path(image_root) if image_root is not None else Path(path).parent
    checker = RecordImageChecker(root, check_files=check_images, max_pixels=max_pixels,
                                 max_bytes=max_bytes)
    return _decode_all(items, decode, checker, file, unit)


def _decode_all(items: Iterator[Item], decode: Callable[[dict[str, Any]], Record],
                checker: RecordImageChecker, file: str, unit: str | None
                ) -> Iterator[tuple[int, Record | RecordError, Raw]]:
    for index, obj, raw in items:
        if isinstance(obj, RecordError):
            yield index, _locate(obj, file, index, None, unit), raw
            continue
        try:
            _require_encodable(obj, raw)
            record = decode(obj)
            checker.check(record)
        except RecordError as e:
            yield index, _locate(e, file, index, _id_of(obj), unit), raw
            continue
        yield index, record, raw


# A JSON escape for a UTF-16 surrogate: legal JSON, but alone it is no character UTF-8 can
# write (scraped text truncated mid-emoji has these); left in, it would fail the writer late.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _require_encodable(obj: dict[str, Any], raw: Raw) -> None:
    if not (isinstance(raw, str) and _SURROGATE_ESCAPE.search(raw)):
        return  # the common case costs one regex search
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("text holds a lone UTF-16 surrogate escape (\\udXXX) that is no "
                          "character", field=_surrogate_field(obj)) from None


def _surrogate_field(value: Any, path: str = "") -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or None
        return None
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
        found = _surrogate_field(child, sub)
        if found:
            return found
    return None


def _id_of(obj: dict[str, Any]) -> str | None:
    rid = obj.get("id")
    return str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else None


def _locate(err: RecordError, file: str, index: int, record_id: str | None,
            unit: str | None) -> RecordError:
    err = err.located(file=file, index=index, record_id=record_id)
    if unit:  # say that the index counts lines, and give the editor's 1-based line number
        err = RecordError(f"{err.reason} ({unit} {index + 1})", field=err.field, file=err.file,
                          index=err.index, record_id=err.record_id)
    return err


def read_records(path: str | os.PathLike, fmt: str | None = None, **kwargs: Any
                 ) -> list[Record]:
    """Every record of a file, raising the first bad one (for callers that want all or
    nothing; streaming callers use `iter_records`)."""
    out = []
    for _, item, _ in iter_records(path, fmt, **kwargs):
        if isinstance(item, RecordError):
            raise item
        out.append(item)
    return out


# --------------------------------------------------------------------------- writing


def write_records(path: str | os.PathLike, records: Iterable[Record], fmt: str) -> int:
    """Write records in format `fmt` atomically; return how many were written.

    Raises RecordError for a record the format cannot hold (a pair to `llava`, say); the
    output is then not created.
    """
    spec = get_format(fmt)
    checked = _fitting(records, spec)
    if spec.container == "table":
        from mmalign.io import tables

        return (tables.write_hf if fmt == "hf" else tables.write_parquet)(path, checked)
    assert spec.encode is not None
    encoded = (spec.encode(r) for r in checked)
    if spec.container == "array" or (
            spec.container == "by-suffix" and Path(path).suffix.lower() == ".json"):
        return write_json_array(path, encoded)
    return write_jsonl(path, encoded)


def fits(record: Record, fmt: str) -> bool:
    return kind_of(record) in get_format(fmt).holds


def _fitting(records: Iterable[Record], spec: Format) -> Iterator[Record]:
    for r in records:
        if kind_of(r) not in spec.holds:
            raise RecordError(f"format {spec.name!r} cannot hold a {kind_of(r)} "
                              f"(it holds: {', '.join(sorted(spec.holds))})", record_id=r.id)
        yield r

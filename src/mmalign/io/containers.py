"""The two JSON containers datasets come in: JSON Lines and one JSON array.

Readers yield `(index, obj_or_error, raw)` and never raise on a bad record; only problems with
the whole file (missing, not UTF-8, not a JSON array) raise `DataFileError`, which names the
file and the position. JSONL is streamed line by line so a huge corpus never sits in memory.

Index conventions (also in every message): in JSONL the index is the 0-based *line* index
(blank lines count, so index + 1 is the editor's line number); in a JSON array it is the
0-based element index.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mmalign.io.atomic import atomic_open
from mmalign.records import RecordError

Raw = str | bytes  # bytes only for a JSONL line that is not valid UTF-8
Item = tuple[int, dict[str, Any] | RecordError, Raw]


class DataFileError(ValueError):
    """A problem with a whole input file (as opposed to one record in it)."""


def sniff_container(path: str | os.PathLike) -> str:
    """'array' if the file's first non-blank character is '[', else 'lines'."""
    with open(path, "rb") as f:
        head = f.read(4096)
        while head and not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
            more = f.read(4096)
            if not more:
                break
            head += more
    return "array" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[") else "lines"


def read_json_lines(path: str | os.PathLike) -> Iterator[Item]:
    """Yield one item per non-blank line; a bad line becomes a located RecordError."""
    file = str(path)
    _require_file(path)
    with open(path, "rb") as f:
        for index, line in enumerate(f):
            if index == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")
            body = line.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                err = RecordError(f"line is not valid UTF-8 (byte {e.start} of the line: "
                                  f"{body[e.start:e.start + 4]!r})", file=file, index=index,
                                  record_id=guess_id(body.decode("utf-8", errors="replace")))
                yield index, err, body
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                err = RecordError(f"malformed JSON: {e.msg} at column {e.colno}",
                                  file=file, index=index, record_id=guess_id(text))
                yield index, err, text
                continue
            yield index, _require_object(obj, file, index), text


def read_json_array(path: str | os.PathLike) -> Iterator[Item]:
    """Yield one item per element of a JSON array file.

    The file is parsed element by element with `raw_decode`, so each record's original text
    is kept verbatim for the rejects file; a syntax error anywhere is a whole-file error.
    """
    file = str(path)
    _require_file(path)
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFileError(f"{file}: not valid UTF-8 at byte offset {e.start} (line {line}): "
                            f"{data[e.start:e.start + 4]!r}") from None
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise DataFileError(f"{file}: expected a JSON array ('[') at {_where(text, pos)}")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        _expect_end(text, pos + 1, file)
        return
    index = 0
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{file}: invalid JSON in array element {index}: {e.msg} at "
                                f"{_where(text, e.pos)}") from None
        yield index, _require_object(obj, file, index), text[pos:end]
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
            index += 1
        elif text.startswith("]", pos):
            _expect_end(text, pos + 1, file)
            return
        else:
            raise DataFileError(f"{file}: expected ',' or ']' after array element {index} at "
                                f"{_where(text, pos)}")


def read_json_records(path: str | os.PathLike) -> Iterator[Item]:
    """Read either container, chosen by the file's first character."""
    _require_file(path)
    if sniff_container(path) == "array":
        return read_json_array(path)
    return read_json_lines(path)


def write_json_array(path: str | os.PathLike, objs: Iterable[dict[str, Any]]) -> int:
    """Stream a JSON array, one element per line (no whole list in memory; compact, because
    corpora run to millions of records, and still line-diffable)."""
    n = 0
    with atomic_open(path) as f:
        f.write("[")
        for obj in objs:
            f.write(",\n" if n else "\n")
            f.write(json.dumps(obj, ensure_ascii=False))
            n += 1
        f.write("\n]\n" if n else "]\n")
    return n


def guess_id(text: str) -> str | None:
    """Best-effort `id` of a record we could not parse, so the message can still name it."""
    m = _ID_PATTERN.search(text)
    if not m:
        return None
    try:
        value = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    return str(value)


_ID_PATTERN = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')


def _require_file(path: str | os.PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise DataFileError(f"{path}: no such file")
    if not p.is_file():
        raise DataFileError(f"{path}: not a file")


def _require_object(obj: Any, file: str, index: int) -> dict[str, Any] | RecordError:
    if isinstance(obj, dict):
        return obj
    return RecordError(f"expected a JSON object, got {type(obj).__name__}", file=file, index=index)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {col} (char {pos})"


def _expect_end(text: str, pos: int, file: str) -> None:
    pos = _skip_ws(text, pos)
    if pos != len(text):
        raise DataFileError(f"{file}: extra data after the JSON array at {_where(text, pos)}")

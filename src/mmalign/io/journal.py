"""Append-only JSONL output files that survive a kill: the resume mechanism of every stage that
writes one row per finished item (eval predictions, sampled answers, judge ratings, scores).

Rows are appended and fsynced after each batch, so a killed run loses at most the batch in
flight; on a rerun the rows already there are read back and skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any


def read_journal(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file ([] when it does not exist yet).

    A last line without its newline (or not valid JSON) is what a kill mid-write leaves: it is
    ignored, and with `repair` cut off so appending can go on. A bad line anywhere else is an
    error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, good_end, pos = [], 0, 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        try:
            if nl < 0:
                raise ValueError("unfinished last line")
            line = data[pos:end]
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                rows.append(row)
        except ValueError as e:
            if end < len(data):
                line_no = data.count(b"\n", 0, pos) + 1
                raise ValueError(f"{path}: line {line_no}: {e}; the file is damaged") from None
            break  # the unfinished tail of a killed write
        good_end = pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


def append_rows(f: IO, rows: list[dict[str, Any]]) -> None:
    """Append rows as JSON lines to an open file (text or binary mode), then flush and fsync:
    once this returns, a kill cannot lose them."""
    for row in rows:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        f.write(line.encode("utf-8") if "b" in f.mode else line)
    f.flush()
    os.fsync(f.fileno())

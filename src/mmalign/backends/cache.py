"""A disk cache of completions: a rerun costs nothing, a killed run loses nothing.

One SQLite file (stdlib, one file, safe against a kill mid-write: every `put` is its own
committed transaction, so an entry is either fully there or absent). Keys are sha256 digests
of a canonical JSON of everything that determines a completion (see `cache_key`); values are
the completion texts. Only successful completions are stored: errors are retried on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `parts` (sorted keys, no whitespace)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class DiskCache:
    """`get(key) -> str | None`, `put(key, value)`; usable from many threads at once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # check_same_thread=False: the openai backend sends requests from a thread pool; the
        # lock serialises access, which SQLite's own locking would do anyway.
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS completions ("
                             "key TEXT PRIMARY KEY, value TEXT NOT NULL, model TEXT, "
                             "created REAL)")
            self._db.commit()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM completions WHERE key = ?",
                                   (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, value: str, model: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?)",
                             (key, value, model, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

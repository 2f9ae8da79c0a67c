"""One progress display for every batched, resumable loop (eval, sampling, judging)."""

from __future__ import annotations

import sys
import time


class Progress:
    """tqdm when installed, else one line per batch to stderr (at most every 2 seconds);
    nothing when not `enabled`. `done` items (resumed from an earlier run) count as done."""

    def __init__(self, desc: str, total: int, done: int = 0, enabled: bool = True,
                 unit: str = "item"):
        self.desc, self.total, self.done, self.enabled, self.unit = desc, total, done, enabled, unit
        self.t0 = self.last = time.monotonic()
        self.start = done
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            print(f"[{desc}] {total} {unit}s, {done} already done", file=sys.stderr)
        else:
            self.bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr,
                            dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= 2.0 or self.done == self.total:
            rate = (self.done - self.start) / max(now - self.t0, 1e-9)
            print(f"[{self.desc}] {self.done}/{self.total} ({rate:.1f} {self.unit}s/s)",
                  file=sys.stderr)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

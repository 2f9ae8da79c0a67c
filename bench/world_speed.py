"""How fast the world renders on one core, against the target of 5 000 images per minute.

    .venv/bin/python bench/world_speed.py [--images 3000] [--size 64]

Prints images/minute for scene sampling + rendering + PNG encoding (the per-image work of
`mmalign world make`), the target, and their ratio; then times a default `make_world` end to end.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from mmalign.world.make import WorldConfig, make_world
from mmalign.world.render import render_png
from mmalign.world.scene import sample_scene

TARGET_PER_MIN = 5000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--skip-full", action="store_true", help="skip the full make_world timing")
    args = ap.parse_args()

    times = []
    for rep in range(3):
        t = time.perf_counter()
        for i in range(args.images):
            render_png(sample_scene(np.random.default_rng([rep, i]), str(i)), args.size)
        times.append(time.perf_counter() - t)
    per_min = args.images / float(np.median(times)) * 60
    print(f"render ({args.size}px, median of 3 x {args.images}): {per_min:,.0f} images/min; "
          f"target {TARGET_PER_MIN:,}/min; ratio {per_min / TARGET_PER_MIN:.1f}x")

    if not args.skip_full:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            m = make_world(f"{d}/w", WorldConfig(), log=lambda _: None)
            dt = time.perf_counter() - t
        n = sum(m["counts"]["images"].values())
        print(f"make_world defaults: {n:,} images, {m['counts']['corpus_records']:,} corpus "
              f"records in {dt:.1f}s (limit 60s; ratio {60 / dt:.1f}x under); "
              f"phases {m['timings']}")


if __name__ == "__main__":
    main()

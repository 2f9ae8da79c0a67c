"""A small world built once per test session by the project's own generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.world.make import WorldConfig, make_world
from mmalign.world.scene import Scene

SMALL = dict(pretrain_images=150, corpus_images=400, annotation_images=120, bench_images=80)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    make_world(out, WorldConfig(seed=7, **SMALL), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def scenes(small_world) -> dict[str, Scene]:
    rows = [json.loads(line) for line in (small_world / "scenes.jsonl").open()]
    return {r["image"]: Scene.from_dict(r) for r in rows}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]

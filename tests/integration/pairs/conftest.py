"""The world's scene graphs keyed by image path (the tiny world itself comes from
tests/integration/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.world.scene import Scene


@pytest.fixture(scope="session")
def world_scenes(tiny_world) -> dict[str, Scene]:
    rows = [json.loads(line) for line in (Path(tiny_world) / "scenes.jsonl").open()]
    return {r["image"]: Scene.from_dict(r) for r in rows}

"""The world's scene graphs keyed by image path (the tiny world itself comes from
tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.world.scene import Scene, read_scene_file


@pytest.fixture(scope="session")
def world_scenes(tiny_world) -> dict[str, Scene]:
    return {s.image: s for s in read_scene_file(Path(tiny_world) / "scenes.jsonl")}

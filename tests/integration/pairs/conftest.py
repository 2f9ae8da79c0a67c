"""The tiny world and tiny model of tests/integration/models (built by the project's own
code, once per session), plus the world's scene graphs keyed by image path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from models.conftest import tiny_model, tiny_world  # noqa: F401  (re-exported fixtures)

from mmalign.world.scene import Scene


@pytest.fixture(scope="session")
def world_scenes(tiny_world) -> dict[str, Scene]:  # noqa: F811
    rows = [json.loads(line) for line in (Path(tiny_world) / "scenes.jsonl").open()]
    return {r["image"]: Scene.from_dict(r) for r in rows}

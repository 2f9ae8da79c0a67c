"""Fixtures: the session's tiny model and tiny world, exactly as tests/integration/models builds
them (that conftest is loaded from its file, so both folders share one definition)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_models_conftest", Path(__file__).resolve().parents[1] / "models" / "conftest.py")
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)

tiny_model = _models.tiny_model
tiny_world = _models.tiny_world

"""A tiny world and the tiny model, built once per session by the project's own commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.models.tiny import TinyConfig, build_tiny
from mmalign.world.make import WorldConfig, make_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mworld") / "w"
    make_world(out, WorldConfig(seed=11, pretrain_images=40, corpus_images=40,
                                annotation_images=5, bench_images=12), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    # Smaller than the default so the suite stays quick; same architecture.
    build_tiny(out, TinyConfig(text_hidden=64, text_layers=2, text_intermediate=128,
                               vision_hidden=64, vision_layers=2, vision_intermediate=128,
                               vocab_size=600))
    return out

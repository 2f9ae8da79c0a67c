"""The tiny world and the tiny model every integration folder uses, built once per session by
the project's own code (a parent conftest, so each subfolder sees the same session fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.models.tiny import TinyConfig, build_tiny
from mmalign.world.make import WorldConfig, make_world

# Smaller than the default tiny model so the suite stays quick; same architecture.
SMALL_TINY = dict(text_hidden=64, text_layers=2, text_intermediate=128, vision_hidden=64,
                  vision_layers=2, vision_intermediate=128, vocab_size=600)


@pytest.fixture(scope="session")
def small_tiny_config() -> dict:
    """Keyword arguments of `TinyConfig` for the suite's small tiny models (any family)."""
    return dict(SMALL_TINY)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mworld") / "w"
    make_world(out, WorldConfig(seed=11, pretrain_images=40, corpus_images=40,
                                annotation_images=5, bench_images=12), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny(out, TinyConfig(**SMALL_TINY))
    return out

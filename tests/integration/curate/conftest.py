"""A tiny world and the tiny model for the curation tests, built by the project's own code.

(The same recipe as tests/integration/models/conftest.py; fixtures of a sibling folder are not
visible here.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.models.tiny import TinyConfig, build_tiny
from mmalign.world.make import WorldConfig, make_world

SMALL = dict(text_hidden=64, text_layers=2, text_intermediate=128, vision_hidden=64,
             vision_layers=2, vision_intermediate=128, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cworld") / "w"
    make_world(out, WorldConfig(seed=11, pretrain_images=40, corpus_images=40,
                                annotation_images=5, bench_images=12), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ctiny") / "model"
    build_tiny(out, TinyConfig(**SMALL))
    return out

"""Preference data and a second (reference) model on top of the tiny world and tiny model.

`tiny_world` and `tiny_model` are the session fixtures of tests/integration/conftest.py.

This folder has no `__init__.py` on purpose: under pytest's default (prepend) import mode it
would be a top-level package named `train`, as tests/unit/train would be with one, and the
second such package is hidden by the first (ModuleNotFoundError at collection). Test file
names here are therefore unique in the whole suite.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from mmalign.io.formats import read_records, write_records
from mmalign.records import PreferencePair

COLOURS = ("red", "green", "blue", "orange", "purple", "yellow")
N_PAIRS = 8


def colour_swapped_pairs(world: Path, n: int = N_PAIRS) -> list[PreferencePair]:
    """(first question, its clean answer, the answer with its first colour swapped)."""
    pairs = []
    for s in read_records(world / "corpus_clean.json"):
        question, answer = s.turns[0], s.turns[1].content
        found = next((c for c in COLOURS if re.search(rf"\b{c}\b", answer)), None)
        if found is None:
            continue
        swapped = COLOURS[(COLOURS.index(found) + 1) % len(COLOURS)]
        rejected = re.sub(rf"\b{found}\b", swapped, answer, count=1)
        pairs.append(PreferencePair(s.id, s.images, [question], answer, rejected,
                                    origin="injection"))
        if len(pairs) == n:
            break
    assert len(pairs) == n, "the tiny world has too few colour answers"
    return pairs


@pytest.fixture(scope="session")
def pref_pairs(tiny_world) -> list[PreferencePair]:
    return colour_swapped_pairs(tiny_world)


@pytest.fixture(scope="session")
def pref_file(tiny_world, pref_pairs, tmp_path_factory) -> Path:
    """POVID-format pairs in a folder of their own; images resolve under `--image-root
    tiny_world`."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.json"
    write_records(path, pref_pairs, "povid")
    return path


def perturbed_copy(src: Path, out: Path) -> Path:
    """`src` with every weight nudged: a reference that differs from the policy, so a DPO
    loss depends on both (with policy == reference every margin is 0)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(src)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(src).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def perturbed_model(tiny_model, tmp_path_factory) -> Path:
    return perturbed_copy(tiny_model, tmp_path_factory.mktemp("perturbed") / "model")


@pytest.fixture(scope="session")
def idefics3_models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Idefics3 (SmolVLM-style) policy and a perturbed reference: the second family."""
    from mmalign.models.tiny import TinyConfig, build_tiny

    root = tmp_path_factory.mktemp("idefics3")
    policy = build_tiny(root / "model", TinyConfig(
        arch="idefics3", text_hidden=64, text_layers=2, text_intermediate=128,
        vision_hidden=64, vision_layers=2, vision_intermediate=128, vocab_size=600))
    return policy, perturbed_copy(policy, root / "reference")


@pytest.fixture
def image_root_copy(tiny_world, pref_pairs, tmp_path) -> Path:
    """A private image root holding copies of the pairs' images (tests may edit them)."""
    root = tmp_path / "images_root"
    for p in pref_pairs:
        for rel in p.images:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_world / rel, root / rel)
    return root

"""The base-model build: vision pretraining on scene graphs, then SFT on the clean set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mmalign.cli import app
from mmalign.models.vision_pretrain import (
    HEADS,
    VisionPretrainConfig,
    _FreshScenes,
    patch_cells,
    pretrain_vision,
    read_scenes,
    scene_targets,
)
from mmalign.world import vocab
from mmalign.world.scene import Obj, Scene


def test_scene_targets_by_hand():
    scene = Scene("x", "mint", [Obj("ring", "orange", "small", (2, 0), 0.8, 0.2),
                               Obj("circle", "red", "large", (0, 2), 0.2, 0.8)])
    t = scene_targets(scene)
    # cell index = row * 3 + col; class 0 = empty
    assert t["shape"].tolist() == [0, 0, vocab.SHAPES.index("ring") + 1, 0, 0, 0,
                                   vocab.SHAPES.index("circle") + 1, 0, 0]
    assert t["color"][2] == vocab.COLOR_NAMES.index("orange") + 1
    assert t["size"][6] == vocab.SIZES.index("large") + 1
    assert int(t["theme"]) == tuple(vocab.THEMES).index("mint")
    assert set(HEADS) == {"shape", "color", "size"}


def test_patch_cells_by_hand():
    # 64 px, patch 8: patch centres at 4, 12, ..., 60 px; cell borders at 21.3 and 42.7 px
    cells = patch_cells(64, 8).reshape(8, 8)
    assert cells[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert cells[:, 0].tolist() == [0, 0, 0, 3, 3, 6, 6, 6]
    assert cells[7, 7] == 8 and cells[4, 4] == 4
    assert np.bincount(patch_cells(48, 8)).tolist() == [4] * 9  # 6 x 6 patches, 2 x 2 per cell


def test_fresh_scenes_never_repeat_a_benchmark_scene(tiny_world):
    bench = {s.signature() for s in read_scenes(tiny_world)["bench"]}
    stream = _FreshScenes(bench, seed=0)
    assert stream.banned  # the tiny world has bench scenes
    # force collisions: ban the signatures of the first scenes the stream would draw
    probe = _FreshScenes(bench, seed=0)
    first = probe.take(5)
    stream.banned |= {s.signature() for s in first[:3]}
    got = stream.take(5)
    assert stream.skipped == 3
    assert not {s.signature() for s in got} & stream.banned


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_vision_pretraining_changes_only_the_tower(tiny_model, tiny_world, tmp_path):
    out = pretrain_vision(VisionPretrainConfig(model=str(tiny_model), world=str(tiny_world),
                                               output_dir=str(tmp_path / "v"), steps=3,
                                               batch_size=8, eval_images=8, log_every=1))
    before, after = _weights(tiny_model), _weights(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    tower = {k for k in before if "vision_tower" in k}
    # everything LLaVA reads from the tower may change; nothing outside it does
    assert changed and changed <= tower
    assert any("encoder.layers.0" in k for k in changed)
    summary = json.loads((out / "vision_pretrain.json").read_text())
    assert summary["scenes_seen"] == 24
    assert all(0.0 <= v <= 1.0 for v in summary["held_out"].values())
    assert np.isfinite(summary["history"][-1]["loss"])
    assert (out / "tokenizer.json").is_file() and (out / "mmalign_tiny.json").is_file()


def test_vision_pretraining_rejects_a_folder_that_is_not_a_world(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="no scenes.jsonl"):
        pretrain_vision(VisionPretrainConfig(model=str(tiny_model), world=str(tmp_path),
                                             output_dir=str(tmp_path / "v"), steps=1))


def test_model_base_cli_builds_then_skips(tiny_world, tmp_path):
    # The CLI builds the default tiny size; keep it to a few steps on 8 records.
    out = tmp_path / "b"
    args = ["model", "base", "--world", str(tiny_world), "--out", str(out), "--vision-steps",
            "2", "--caption-steps", "1", "--grounding-steps", "1", "--attribute-steps", "1",
            "--sft-steps", "2",
            "--batch-size", "4", "--limit", "8"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    model = out / "model"
    record = json.loads((model / "base_build.json").read_text())
    assert record["config"]["vision_steps"] == 2 and record["config"]["sft_steps"] == 2
    captions = json.loads((out / "captions.json").read_text())
    assert captions and all(r["conversations"][1]["value"].startswith("A ") for r in captions)
    assert (out / "captions" / "final").is_dir() and (out / "grounding" / "final").is_dir()
    grounding = json.loads((out / "grounding.json").read_text())
    assert {r["id"].rsplit("-", 1)[1][0] for r in grounding} == {"g", "l", "e"}
    assert (out / "attributes" / "final").is_dir()
    attributes = json.loads((out / "attributes.json").read_text())
    # colour, count, size, position and conjunction questions (world.corpus.attribute_samples)
    assert {r["id"].rsplit("-", 1)[1][0] for r in attributes} <= {"c", "n", "s", "p", "j"}
    assert any("What color" in r["conversations"][0]["value"] for r in attributes)
    stage5 = json.loads((out / "sft" / "sft_config.json").read_text())
    assert stage5["data"] == [str(tiny_world / "clean.json"), str(out / "grounding.json"),
                              str(out / "attributes.json")]
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    stamp = (model / "model.safetensors").stat().st_mtime_ns
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and (model / "model.safetensors").stat().st_mtime_ns == stamp


def test_model_base_needs_a_world(tmp_path):
    r = CliRunner().invoke(app, ["model", "base", "--world", str(tmp_path), "--out",
                                 str(tmp_path / "b")])
    assert r.exit_code == 2 and "clean.json" in r.output

"""bench/corpus_style_backbone.py: defect-free corpus-style records over pretraining images only,
and the fine-tune on them."""

from __future__ import annotations

import torch

from mmalign.experiments import bench_module
from mmalign.io.formats import read_records
from mmalign.world.scene import read_scene_file

backbone = bench_module("corpus_style_backbone")


def test_the_set_holds_clean_corpus_style_records_over_pretraining_images_only(tiny_world):
    records = backbone.instruction_set(tiny_world, reps=2, seed=5)
    split = {s.image: s.split for s in read_scene_file(tiny_world / "scenes.jsonl")}
    assert records and {split[r.images[0]] for r in records} == {"pretrain"}
    assert len({r.id for r in records}) == len(records)  # the two draws keep apart ids
    # the corpus generator's clean side: the same categories as the corpus, no defects
    corpus = read_records(tiny_world / "corpus.json")
    assert {r.category for r in records} <= {r.category for r in corpus}
    assert not {r.id for r in records} & {r.id for r in corpus}
    again = backbone.instruction_set(tiny_world, reps=2, seed=5)
    assert [r.turns for r in again] == [r.turns for r in records]  # seeded


def _tower(folder):
    from safetensors.torch import load_file

    weights = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(f))
    tower = {k: v for k, v in weights.items() if "vision_tower" in k}
    assert tower, f"no vision tower weights in {folder}"
    return tower


def test_main_writes_the_set_and_fine_tunes(tiny_model, tiny_world, tmp_path, capsys):
    backbone.main([str(tiny_world), str(tiny_model), str(tmp_path / "cs"), "--steps", "2",
                   "--reps", "1"])
    out = capsys.readouterr().out
    assert "corpus-style records" in out and (tmp_path / "cs.json").is_file()
    assert (tmp_path / "cs" / "final" / "config.json").is_file()
    base = _tower(tiny_model)
    frozen = _tower(tmp_path / "cs" / "final")
    assert all(torch.equal(base[k], frozen[k]) for k in base)  # the default keeps it frozen
    backbone.main([str(tiny_world), str(tiny_model), str(tmp_path / "cv"), "--steps", "2",
                   "--reps", "1", "--train-vision", "--lr", "1e-2"])
    trained = _tower(tmp_path / "cv" / "final")
    assert any(not torch.equal(base[k], trained[k]) for k in base)

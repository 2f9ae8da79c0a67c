"""The world as a whole: layout, determinism, disjoint benchmarks, where labels live."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from mmalign.world.make import WorldConfig, make_world
from mmalign.world.scene import Scene

from .conftest import SMALL, read_jsonl

EXPECTED = ["clean.json", "corpus.json", "corpus_clean.json", "scenes.jsonl", "stats.json",
            "manifest.json", "truth/corpus_defects.jsonl", "truth/annotations.jsonl",
            "annotations/questions.jsonl", "annotations/answers.jsonl", "bench/pope.jsonl",
            "bench/vqa.jsonl", "bench/mc.jsonl", "bench/chair.jsonl", "bench/openended.jsonl"]


def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_layout_and_counts(small_world):
    for rel in EXPECTED:
        assert (small_world / rel).is_file(), rel
    m = json.loads((small_world / "manifest.json").read_text())
    for split, n in [("pretrain", 150), ("corpus", 400), ("annotation", 120), ("bench", 80)]:
        assert m["counts"]["images"][split] == n
        assert len(list((small_world / "images" / split).glob("*.png"))) == n
    corpus = json.loads((small_world / "corpus.json").read_text())
    assert len(corpus) == m["counts"]["corpus_records"]
    img = Image.open(small_world / corpus[0]["image"])
    assert img.size == (64, 64) and img.mode == "RGB"


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small_world):
    again = tmp_path / "again"
    make_world(again, WorldConfig(seed=7, **SMALL), log=lambda _: None)
    assert _digest_tree(again) == _digest_tree(small_world)
    other = tmp_path / "other"
    make_world(other, WorldConfig(seed=8, **SMALL), log=lambda _: None)
    a, b = _digest_tree(other), _digest_tree(small_world)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) > 0.9 * len(a)


def test_image_i_does_not_depend_on_how_many_are_made(tmp_path, small_world):
    fewer = tmp_path / "fewer"
    make_world(fewer, WorldConfig(seed=7, pretrain_images=20, corpus_images=30,
                                  annotation_images=10, bench_images=10), log=lambda _: None)
    for rel in ["images/corpus/c000029.png", "images/pretrain/p000003.png"]:
        assert (fewer / rel).read_bytes() == (small_world / rel).read_bytes()


def test_existing_world_is_reused_and_force_rebuilds(tmp_path):
    out = tmp_path / "w"
    cfg = WorldConfig(seed=1, pretrain_images=5, corpus_images=5, annotation_images=5,
                      bench_images=5)
    make_world(out, cfg, log=lambda _: None)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    logs = []
    make_world(out, cfg, log=logs.append)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    assert any("reusing" in line for line in logs)
    make_world(out, cfg, force=True, log=lambda _: None)
    assert (out / "manifest.json").stat().st_mtime_ns != stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_world_of_an_earlier_revision_is_rebuilt_not_reused(tmp_path):
    import json

    from mmalign.world.make import WORLD_REVISION

    out = tmp_path / "w"
    cfg = WorldConfig(seed=1, pretrain_images=5, corpus_images=5, annotation_images=5,
                      bench_images=5)
    make_world(out, cfg, log=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["revision"] == WORLD_REVISION
    del manifest["revision"]  # as a world built before revisions were recorded
    (out / "manifest.json").write_text(json.dumps(manifest))
    logs = []
    make_world(out, cfg, log=logs.append)
    assert not any("reusing" in line for line in logs)
    assert json.loads((out / "manifest.json").read_text())["revision"] == WORLD_REVISION


def test_bench_images_never_appear_in_training(small_world, scenes):
    train = [s for s in scenes.values() if s.split != "bench"]
    bench = [s for s in scenes.values() if s.split == "bench"]
    digests = {hashlib.sha256((small_world / s.image).read_bytes()).hexdigest() for s in train}
    signatures = {s.signature() for s in train}
    for s in bench:
        assert hashlib.sha256((small_world / s.image).read_bytes()).hexdigest() not in digests
        assert s.signature() not in signatures
    training_images = set()
    for name in ["clean.json", "corpus.json", "corpus_clean.json"]:
        training_images |= {r["image"] for r in json.loads((small_world / name).read_text())}
    for name in ["questions.jsonl", "answers.jsonl"]:
        training_images |= {r["image"] for r in read_jsonl(small_world / "annotations" / name)}
    for name in ["pope", "vqa", "mc", "chair", "openended"]:
        for r in read_jsonl(small_world / "bench" / f"{name}.jsonl"):
            assert r["image"].startswith("images/bench/") and r["image"] not in training_images


def test_defect_labels_live_only_in_the_truth_folder(small_world):
    from mmalign.world.defects import DEFECTS

    truth_ids = {r["id"] for r in read_jsonl(small_world / "truth" / "corpus_defects.jsonl")}
    corpus = json.loads((small_world / "corpus.json").read_text())
    assert truth_ids == {r["id"] for r in corpus}
    for r in corpus:
        assert set(r) <= {"id", "image", "conversations", "category", "source"}, r.keys()
    for p in small_world.rglob("*"):
        if p.is_file() and p.suffix in {".json", ".jsonl"} and "truth" not in p.parts \
                and p.name != "manifest.json":
            text = p.read_text()
            for name in DEFECTS:
                assert f'"{name}"' not in text, (p, name)


def test_scene_roundtrip(scenes):
    s = next(iter(scenes.values()))
    assert Scene.from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown defect type"):
        WorldConfig(defect_rates={"halucinated": 0.1})
    with pytest.raises(ValueError, match="outside"):
        WorldConfig(defect_rates={"truncation": 1.5})

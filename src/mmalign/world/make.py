"""`make_world`: build the whole synthetic world into one folder.

Layout of OUT (image paths in every file are relative to OUT, so OUT is the image root):

  images/{pretrain,corpus,annotation,bench}/<image_id>.png
  scenes.jsonl                      scene graph of every image (with its split)
  clean.json                        house-style caption/QA set for pretraining (LLaVA JSON)
  corpus.json                       machine-style instruction corpus, with defects (LLaVA JSON)
  corpus_clean.json                 the same records without defects (the clean counterpart)
  truth/corpus_defects.jsonl        defect labels: the only place they live
  truth/annotations.jsonl           true quality/defect of every annotation candidate
  annotations/questions.jsonl       K scored candidate question sets per image
  annotations/answers.jsonl         K scored candidate answers per (image, question)
  bench/{pope,vqa,mc,chair,openended}.jsonl
  stats.json                        shape frequency and co-occurrence in the training scenes
  manifest.json                     config, counts, realised defect rates, timings, version

The world is built in a temporary folder and renamed onto OUT at the end, so an interrupted
run never leaves half a world; a folder whose manifest has the same config is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmalign import __version__
from mmalign.io.atomic import atomic_path, write_json, write_jsonl
from mmalign.io.formats import write_records
from mmalign.world import bench, oracle
from mmalign.world.corpus import DEFAULT_DEFECT_RATES, clean_samples, corpus_records
from mmalign.world.defects import DEFECTS
from mmalign.world.render import render_png
from mmalign.world.scene import Scene, SceneConfig, sample_scene

SPLITS = ("pretrain", "corpus", "annotation", "bench")
TRAINING_SPLITS = ("pretrain", "corpus", "annotation")


# Bumped when the same config starts to give other bytes, so a world built before is rebuilt,
# not reused. 2: an annotation set's repeated question rewords a question the set still asks
# (oracle.asked_twin).
WORLD_REVISION = 2


@dataclass
class WorldConfig:
    """Everything that determines a world. Same config + same package version + same
    WORLD_REVISION = same bytes."""

    seed: int = 0
    image_size: int = 64
    pretrain_images: int = 8000
    corpus_images: int = 4000
    annotation_images: int = 1000
    bench_images: int = 300
    defect_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEFECT_RATES))
    annotation_k: int = 4
    annotator_noise: float = 0.1
    pope_max_positive: int = 3
    vqa_per_image: int = 3
    mc_per_image: int = 2
    scene: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.defect_rates) - set(DEFECTS))
        if unknown:
            raise ValueError(f"unknown defect type(s) {unknown}; known: {sorted(DEFECTS)}")
        for k, v in self.defect_rates.items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"defect rate {k}={v} is outside [0, 1]")
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size} is too small to draw shapes")

    def count(self, split: str) -> int:
        return getattr(self, f"{split}_images")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rng(seed: int, split: str, i: int, attempt: int = 0) -> np.random.Generator:
    # One generator per image, keyed by (seed, split, index): image i is the same whatever N is.
    return np.random.default_rng([seed, SPLITS.index(split), i, attempt])


def make_world(out: str | Path, cfg: WorldConfig | None = None, *, force: bool = False,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the world into `out` and return its manifest."""
    cfg = cfg or WorldConfig()
    out = Path(out)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not force:
        old = json.loads(manifest_path.read_text())
        if old.get("config") == json.loads(json.dumps(cfg.to_dict())) and \
                old.get("version") == __version__ and \
                old.get("revision", 1) == WORLD_REVISION:
            log(f"world at {out} already matches this config; reusing it (--force to rebuild)")
            return old
    t0 = time.time()
    with atomic_path(out, is_dir=True) as tmp:
        manifest = _build(tmp, cfg, log)
        manifest["seconds"] = round(time.time() - t0, 2)
        write_json(tmp / "manifest.json", manifest)
    log(f"world written to {out} in {manifest['seconds']:.1f}s")
    return manifest


def _build(root: Path, cfg: WorldConfig, log: Callable[[str], None]) -> dict[str, Any]:
    timings: dict[str, float] = {}
    scenes: dict[str, list[Scene]] = {}

    t = time.time()
    seen_hashes: set[str] = set()
    for split in SPLITS:
        scenes[split] = _render_split(root, split, cfg, seen_hashes)
        log(f"  rendered {len(scenes[split]):>6} {split} images")
    timings["render"] = time.time() - t
    write_jsonl(root / "scenes.jsonl", (s.to_dict() for split in SPLITS for s in scenes[split]))

    stats = bench.ShapeStats([s for sp in TRAINING_SPLITS for s in scenes[sp]])
    write_json(root / "stats.json", stats.to_dict())

    t = time.time()
    clean = [r for i, s in enumerate(scenes["pretrain"])
             for r in clean_samples(s, s.image, _rng(cfg.seed + 1, "pretrain", i))]
    write_records(root / "clean.json", clean, "llava")
    timings["clean"] = time.time() - t

    t = time.time()
    records = [r for i, s in enumerate(scenes["corpus"])
               for r in corpus_records(s, s.image, _rng(cfg.seed + 1, "corpus", i),
                                       cfg.defect_rates)]
    write_records(root / "corpus.json", (r.defective for r in records), "llava")
    write_records(root / "corpus_clean.json", (r.clean for r in records), "llava")
    (root / "truth").mkdir()
    write_jsonl(root / "truth" / "corpus_defects.jsonl",
                ({"id": r.defective.id, "category": r.defective.category, "defects": r.defects}
                 for r in records))
    timings["corpus"] = time.time() - t

    t = time.time()
    q_ann, a_ann = [], []
    for i, s in enumerate(scenes["annotation"]):
        rng = _rng(cfg.seed + 1, "annotation", i)
        q_ann.append(oracle.question_annotation(s, s.image, rng, cfg.annotation_k,
                                                cfg.annotator_noise))
        a = oracle.answer_annotation(s, s.image, oracle.CATEGORIES[i % 3], rng,
                                     cfg.annotation_k, cfg.annotator_noise)
        if a is not None:
            a_ann.append(a)
    (root / "annotations").mkdir()
    write_jsonl(root / "annotations" / "questions.jsonl", (a.row for a in q_ann))
    write_jsonl(root / "annotations" / "answers.jsonl", (a.row for a in a_ann))
    write_jsonl(root / "truth" / "annotations.jsonl",
                [{"file": "questions.jsonl"} | a.truth for a in q_ann]
                + [{"file": "answers.jsonl"} | a.truth for a in a_ann])
    timings["annotations"] = time.time() - t

    t = time.time()
    rows: dict[str, list[dict]] = {"pope": [], "vqa": [], "mc": [], "chair": [], "openended": []}
    for i, s in enumerate(scenes["bench"]):
        rng = _rng(cfg.seed + 1, "bench", i)
        rows["pope"] += bench.pope_rows(s, s.image, rng, stats, cfg.pope_max_positive)
        rows["vqa"] += bench.vqa_rows(s, s.image, rng, cfg.vqa_per_image)
        rows["mc"] += bench.mc_rows(s, s.image, rng, cfg.mc_per_image)
        rows["chair"].append(bench.chair_row(s, s.image))
        rows["openended"].append(bench.openended_row(s, s.image, rng, oracle.CATEGORIES[i % 3]))
    (root / "bench").mkdir()
    for name, r in rows.items():
        write_jsonl(root / "bench" / f"{name}.jsonl", r)
    timings["bench"] = time.time() - t

    n_corpus = len(records)
    defect_counts = Counter(d["type"] for r in records for d in r.defects)
    manifest = {
        "kind": "world",
        "version": __version__,
        "revision": WORLD_REVISION,
        "config": json.loads(json.dumps(cfg.to_dict())),
        "counts": {
            "images": {sp: len(scenes[sp]) for sp in SPLITS},
            "clean_records": len(clean),
            "corpus_records": n_corpus,
            "corpus_by_category": dict(Counter(r.defective.category for r in records)),
            "annotation_question_sets": len(q_ann),
            "annotation_answer_groups": len(a_ann),
            "bench": {k: len(v) for k, v in rows.items()},
        },
        # Realised rates can fall short of the configured ones where scenes rule a defect out
        # (a relation needs two objects); the truth file has the exact labels.
        "realised_defect_rates": {k: round(defect_counts[k] / max(n_corpus, 1), 4)
                                  for k in cfg.defect_rates},
        "defective_fraction": round(sum(1 for r in records if r.defects) / max(n_corpus, 1), 4),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    return manifest


def _render_split(root: Path, split: str, cfg: WorldConfig, seen: set[str]) -> list[Scene]:
    """Render one split. A bench scene is redrawn if any training scene has the same content
    (theme and objects in the same cells, jitter aside) or its PNG has the same bytes, so no
    benchmark image, nor a near twin of one, ever appears in a training set."""
    folder = root / "images" / split
    folder.mkdir(parents=True)
    prefix = split[0]
    out = []
    for i in range(cfg.count(split)):
        image_id = f"{prefix}{i:06d}"
        for attempt in range(100):
            scene = sample_scene(_rng(cfg.seed, split, i, attempt), image_id, cfg.scene)
            png = render_png(scene, cfg.image_size)
            keys = {hashlib.sha256(png).hexdigest(), scene.signature()}
            if split != "bench" or not keys & seen:
                break
        else:  # pragma: no cover - would need a world with almost no distinct scenes
            raise RuntimeError(f"could not draw a bench image unlike every training image ({i})")
        if split in TRAINING_SPLITS:
            seen.update(keys)
        scene.split = split
        scene.image = f"images/{split}/{image_id}.png"
        (folder / f"{image_id}.png").write_bytes(png)
        out.append(scene)
    return out

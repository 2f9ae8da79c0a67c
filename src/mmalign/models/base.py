"""The tiny base model, built from nothing by three resumable stages:

0. `tiny/`   a randomly initialised tiny LLaVA (`models/tiny.py`);
1. `vision/` its vision tower trained to read scene graphs off freshly rendered scenes
             (`models/vision_pretrain.py`), the way real VLMs start from a pretrained encoder;
2. `captions/` all weights trained on the clean set's captions only: a caption names every
             object, so each one is a strong signal to read the image, and the model learns to
             look before it learns the one-word answers (without it, the model stayed blind
             to the image for 500+ steps of the full mix; docs/LOG.md);
3. `grounding/` binding a word of the question to the image: balanced existence questions
             on every clean image with two helper tasks (name every shape; answer with the
             asked shape echoed), `world.corpus.grounding_samples`. Existence is the product
             of "which shape was asked" and "which shapes are here"; on the clean set's
             yes/no questions alone the model sat at chance for 1000+ steps, and in the full
             mix it never left it (docs/LOG.md, probes 9-11);
4. `attributes/` (opt-in, `attribute_steps`; the shipped checkpoint has none) reading an
             object's colour, count, size and position ("What color is the <shape>?", "How
             many <shapes> are there?", "Is the <shape> large or small?", "Where is the
             <shape>?") and binding a colour to a shape ("Is there a red star in the
             image?"), drawn so the question does not predict the answer
             (`world.corpus.attribute_samples`). The world gives each shape a usual colour
             45% of the time; with that shortcut in every earlier set the model answers the
             usual colour and never reads colour off the image (docs/LOG.md, session 12);
5. `sft/`    the whole clean set plus the grounding (and attribute) sets through `mmalign
             train sft` (without them the full mix unlearns what stages 3-4 taught).

Stages 2-5 train the projector and the language model with the vision tower frozen, as
LLaVA-1.5 does: training all weights let the language model's early, image-blind gradients
wash the object information out of the tower (a linear probe of "which shapes are present"
fell from 0.94 to 0.81 in 300 steps; docs/LOG.md, probe 10).

`model/` is the finished base model. Each stage writes its folder atomically, so a folder that
exists is complete and is skipped on a rerun; stages 2-5 resume from their newest checkpoint.
`mmalign model base --world W --out DIR` is the command that made the shipped checkpoint
(`checkpoints/tiny-base`, see docs/results.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class BaseConfig:
    seed: int = 0
    vision_steps: int = 1000  # stage 1: vision tower on scene graphs
    vision_batch_size: int = 128
    vision_lr: float = 2e-3
    caption_steps: int = 500  # stage 2: captions only (0 skips the stage)
    grounding_steps: int = 1000  # stage 3: the grounding set (0 skips the stage)
    # stage 4: the attribute set (0 skips the stage and leaves the set out of stage 5). Off by
    # default: it makes the base read colour but breaks its captions on foreign prompts, and
    # the shipped checkpoint was built without it (docs/LOG.md, session 12).
    attribute_steps: int = 0
    sets_in_mix: bool = True  # stage 5 trains on the grounding (and attribute) sets too
    sft_steps: int = 1500  # stage 5: the world's whole clean set
    freeze_vision_tower: bool = True  # in stages 2-5
    batch_size: int = 32
    lr: float = 1e-3
    save_steps: int = 250
    limit: int | None = None  # stage 5 on the first N clean records only (quick checks)


def build_base(world: str | Path, out: str | Path, cfg: BaseConfig | None = None) -> Path:
    """Run the missing stages; return the finished model folder (`out/model`)."""
    from mmalign.io.formats import read_records, write_records
    from mmalign.models.tiny import TinyConfig, build_tiny
    from mmalign.models.vision_pretrain import VisionPretrainConfig, pretrain_vision
    from mmalign.train.sft import SFTRunConfig, train_sft

    cfg = cfg or BaseConfig()
    world, out = Path(world), Path(out)
    clean = world / "clean.json"
    if not clean.is_file():
        raise ValueError(f"{world}: no clean.json; make the world first (`mmalign world make`)")
    out.mkdir(parents=True, exist_ok=True)
    final = out / "model"
    if final.is_dir():
        log.info("base model already built: %s", final)
        return final
    timings = {}
    t0 = time.time()
    if not (out / "tiny").is_dir():
        build_tiny(out / "tiny", TinyConfig(seed=cfg.seed))
    timings["tiny_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    if not (out / "vision").is_dir():
        pretrain_vision(VisionPretrainConfig(
            model=str(out / "tiny"), world=str(world), output_dir=str(out / "vision"),
            steps=cfg.vision_steps, batch_size=cfg.vision_batch_size, lr=cfg.vision_lr,
            seed=cfg.seed))
    timings["vision_s"] = round(time.time() - t0, 1)
    start = out / "vision"
    stage_data = {"captions": lambda: (r for r in read_records(clean) if r.category == "detail"),
                  "grounding": lambda: scene_records(world, cfg.seed, "grounding"),
                  "attributes": lambda: scene_records(world, cfg.seed, "attributes")}
    stage_steps = {"captions": cfg.caption_steps, "grounding": cfg.grounding_steps,
                   "attributes": cfg.attribute_steps}
    in_mix = ("grounding",) + (("attributes",) if cfg.attribute_steps > 0 else ())
    in_mix = in_mix if cfg.sets_in_mix else ()
    for name, steps in stage_steps.items():
        t0 = time.time()
        data = out / f"{name}.json"
        needed = steps > 0 or name in in_mix
        if needed and not data.is_file():
            write_records(data, stage_data[name](), "llava")
        if steps > 0:
            start = train_sft(SFTRunConfig(
                model=str(start), data=[str(data)], image_root=str(world),
                output_dir=str(out / name), max_steps=steps,
                per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
                freeze_vision_tower=cfg.freeze_vision_tower, save_steps=cfg.save_steps,
                seed=cfg.seed))
        timings[f"{name}_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    mix = [str(clean)] + [str(out / f"{name}.json") for name in in_mix]
    trained = train_sft(SFTRunConfig(
        model=str(start), data=mix, image_root=str(world), output_dir=str(out / "sft"),
        max_steps=cfg.sft_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, freeze_vision_tower=cfg.freeze_vision_tower,
        save_steps=cfg.save_steps, seed=cfg.seed, limit=cfg.limit))
    timings["sft_s"] = round(time.time() - t0, 1)
    vision = json.loads((out / "vision" / "vision_pretrain.json").read_text())
    record = {"config": asdict(cfg), "world": _world_fingerprint(world),
              "vision_held_out": vision["held_out"], "timings_this_call": timings}
    from mmalign.io.atomic import atomic_path

    with atomic_path(final, is_dir=True) as tmp:
        shutil.copytree(trained, tmp, dirs_exist_ok=True)
        (tmp / "base_build.json").write_text(json.dumps(record, indent=2) + "\n")
    return final


# the rng stream of each set in scene_records, so each set's draw is independent of the others'
SCENE_SET_STREAMS = {"grounding": 11, "attributes": 12}


def scene_records(world: Path, seed: int, name: str, scenes: list | None = None):
    """The grounding or attribute set over the world's pretraining images (the clean set's);
    `scenes`: those pretraining scenes when the caller has read them already."""
    import numpy as np

    from mmalign.world.scene import pretraining_scenes

    if scenes is None:
        scenes = pretraining_scenes(world, f"the {name} set")
    yield from scene_samples(scenes, name, np.random.default_rng([seed, SCENE_SET_STREAMS[name]]))


def scene_samples(scenes: list, name: str, rng):
    """The grounding or attribute records of each of `scenes`, in order, drawn with `rng`."""
    from mmalign.world.corpus import attribute_samples, grounding_samples

    make = {"grounding": grounding_samples, "attributes": attribute_samples}[name]
    for scene in scenes:
        yield from make(scene, scene.image, rng)


def _world_fingerprint(world: Path) -> dict:
    """Seed and config of the world the base was trained on (its manifest), so a user who
    evaluates the base on another world can be told the benchmarks may not be unseen."""
    manifest = world / "manifest.json"
    if not manifest.is_file():
        return {}
    m = json.loads(manifest.read_text())
    return {k: m[k] for k in ("config", "content_hash") if k in m}

"""Stage 0 of the tiny base model: teach its vision tower to see the world's scenes.

Real VLMs start from a vision encoder that was pretrained on its own (CLIP, SigLIP) and then
learn to talk about its features. The tiny default does the same in miniature: its CLIP tower is
trained to predict the scene graph (per grid cell: which shape, colour and size, or empty; plus
the theme) from the very features LLaVA's projector reads, on freshly rendered scenes. A
throwaway linear head, shared by every patch token, does the predicting; only the tower is
kept. Language-model training (`mmalign train sft` on the clean set) then starts from a
tower that already tells a ring from a circle, which captioning loss alone learns slowly
(docs/LOG.md, probe 3).

Training scenes are drawn from the world's own generator and any scene whose content equals a
benchmark scene of the given world is skipped, so the benchmarks stay unseen.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmalign.world import vocab

log = logging.getLogger(__name__)

CELLS = vocab.GRID * vocab.GRID
# Class 0 is "empty cell" in every per-cell head.
HEADS = {"shape": len(vocab.SHAPES) + 1, "color": len(vocab.COLOR_NAMES) + 1,
         "size": len(vocab.SIZES) + 1}


@dataclass
class VisionPretrainConfig:
    model: str  # folder of a LLaVA-style model (the tiny default)
    world: str  # world root: its benchmark scenes are excluded, its pretrain split is held out
    output_dir: str
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    eval_images: int = 512
    log_every: int = 50
    seed: int = 0


def scene_targets(scene) -> dict[str, np.ndarray]:
    """Per-cell class indices (0 = empty) and the theme index of one scene."""
    out = {name: np.zeros(CELLS, dtype=np.int64) for name in HEADS}
    for o in scene.objects:
        cell = o.cell[1] * vocab.GRID + o.cell[0]
        out["shape"][cell] = vocab.SHAPES.index(o.shape) + 1
        out["color"][cell] = vocab.COLOR_NAMES.index(o.color) + 1
        out["size"][cell] = vocab.SIZES.index(o.size) + 1
    out["theme"] = np.array(tuple(vocab.THEMES).index(scene.theme), dtype=np.int64)
    present = np.zeros(len(vocab.SHAPES), dtype=np.float32)
    for o in scene.objects:
        present[vocab.SHAPES.index(o.shape)] = 1.0
    out["present"] = present
    return out


def patch_cells(image_size: int, patch_size: int) -> np.ndarray:
    """Grid cell (row * GRID + col) under the centre of each patch, patches in CLIP's row-major
    order."""
    side = image_size // patch_size
    centre = (np.arange(side) + 0.5) * patch_size
    cell = np.minimum((centre * vocab.GRID / image_size).astype(np.int64), vocab.GRID - 1)
    return (cell[:, None] * vocab.GRID + cell[None, :]).reshape(-1)


def patch_scene_head(image_size: int, patch_size: int, hidden: int):
    """Read-out of the scene graph that every patch token must answer for itself.

    One linear map, shared by all patches, predicts the shape, colour and size of the object in
    the patch's grid cell (or "empty"); the theme is read from the mean token. Shared weights
    make "diamond" one direction in feature space wherever the diamond is, so the language
    model can find an object by matching a question word against image tokens. The first tower
    was trained with one linear map over all patches flattened: it read the scene perfectly
    but spread each object over many tokens, and the language model trained on it never
    learned existence questions (docs/LOG.md, probe 8).
    """
    import torch
    import torch.nn as nn

    class PatchSceneHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.cells = nn.Linear(hidden, sum(HEADS.values()))
            self.theme = nn.Linear(hidden, len(vocab.THEMES))
            self.present = nn.Linear(hidden, len(vocab.SHAPES))
            cells = torch.from_numpy(patch_cells(image_size, patch_size))
            self.register_buffer("patch_cell", cells, persistent=False)
            # (CELLS, n_patches) averaging matrix: a cell's logits are its patches' mean
            avg = nn.functional.one_hot(cells, CELLS).T.float()
            self.register_buffer("cell_mean", avg / avg.sum(1, keepdim=True), persistent=False)

        def forward(self, feats):
            return self.cells(feats), self.theme(feats.mean(1)), self.present(feats)

    return PatchSceneHead()


def _losses(head, feats, targets):
    """Per-patch cross-entropy on every head, plus the theme; predictions are per cell (the
    mean of its patches' logits)."""
    import torch.nn.functional as F

    patch_logits, theme_logits, present_logits = head(feats)
    present = targets["present"][:, None].expand_as(present_logits)
    loss = F.cross_entropy(theme_logits, targets["theme"])
    loss = loss + F.binary_cross_entropy_with_logits(present_logits, present)
    preds, start = {"theme": theme_logits.argmax(-1),
                    # the scene's shape set as read by the worst patch: every token must know it
                    "present": ((present_logits > 0) == (present > 0.5)).all(-1).all(-1)}, 0
    for name, n in HEADS.items():
        part = patch_logits[..., start:start + n]
        per_patch = targets[name][:, head.patch_cell]
        loss = loss + F.cross_entropy(part.reshape(-1, n), per_patch.reshape(-1))
        preds[name] = (head.cell_mean @ part).argmax(-1)
        start += n
    return loss, preds


def _features(tower, pixel_values, layer: int):
    out = tower(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]  # drop CLS, as LLaVA's "default" strategy does


def _batch(scenes, processor, image_size: int):
    import torch

    from mmalign.world.render import render

    pixels = processor.image_processor([render(s, image_size) for s in scenes],
                                       return_tensors="pt")["pixel_values"]
    t = [scene_targets(s) for s in scenes]
    targets = {k: torch.from_numpy(np.stack([x[k] for x in t])) for k in t[0]}
    return pixels, targets


def read_scenes(world: Path) -> dict[str, list]:
    """The world's scene graphs by split, in one pass over scenes.jsonl."""
    from mmalign.world.scene import read_scene_file

    by_split: dict[str, list] = {}
    for scene in read_scene_file(world / "scenes.jsonl"):
        by_split.setdefault(scene.split, []).append(scene)
    return by_split


class _FreshScenes:
    """An endless stream of new scenes, none equal in content to a `banned` signature (the
    benchmark scenes')."""

    def __init__(self, banned: set[str], seed: int, scene_cfg=None):
        self.rng = np.random.default_rng([seed, 7919])
        self.scene_cfg = scene_cfg
        self.banned = set(banned)
        self.skipped = 0
        self.n = 0

    def take(self, k: int):
        from mmalign.world.scene import sample_scene

        out = []
        while len(out) < k:
            s = sample_scene(self.rng, f"v{self.n}", self.scene_cfg)
            self.n += 1
            if s.signature() in self.banned:
                self.skipped += 1
                continue
            out.append(s)
        return out


def evaluate_tower(tower, head, processor, scenes, image_size: int, layer: int) -> dict:
    """Per-cell accuracy of each head, object-level shape accuracy and whole-scene accuracy."""
    import torch

    tower.eval()
    correct = {k: 0 for k in (*HEADS, "theme", "present")}
    obj_ok = obj_n = scene_ok = 0
    with torch.no_grad():
        for i in range(0, len(scenes), 128):
            chunk = scenes[i:i + 128]
            pixels, targets = _batch(chunk, processor, image_size)
            _, preds = _losses(head, _features(tower, pixels, layer), targets)
            for k in correct:
                hit = preds[k] if k == "present" else preds[k] == targets[k]
                correct[k] += int(hit.sum())
            occupied = targets["shape"] > 0
            obj_ok += int(((preds["shape"] == targets["shape"]) & occupied).sum())
            obj_n += int(occupied.sum())
            whole = torch.ones(len(chunk), dtype=torch.bool)
            for k in HEADS:
                whole &= (preds[k] == targets[k]).all(-1)
            scene_ok += int(whole.sum())
    tower.train()
    n = len(scenes)
    out = {f"{k}_cell_acc": correct[k] / (n * CELLS) for k in HEADS}
    out["theme_acc"] = correct["theme"] / n
    out["present_every_patch_acc"] = correct["present"] / n
    out["object_shape_acc"] = obj_ok / max(obj_n, 1)
    out["scene_exact_acc"] = scene_ok / n
    return out


def pretrain_vision(cfg: VisionPretrainConfig) -> Path:
    """Train the vision tower of `cfg.model` on scene graphs; write the whole model to
    `output_dir` (tokenizer and processor copied) with `vision_pretrain.json` beside it."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        get_cosine_schedule_with_warmup,
    )

    from mmalign.io.atomic import atomic_path

    torch.manual_seed(cfg.seed)
    world, out = Path(cfg.world), Path(cfg.output_dir)
    if not (world / "scenes.jsonl").is_file():
        raise ValueError(f"{world}: no scenes.jsonl; is this a world made by `mmalign world make`?")
    model = AutoModelForImageTextToText.from_pretrained(cfg.model)
    processor = AutoProcessor.from_pretrained(cfg.model)
    vcfg = model.config.vision_config
    layer = model.config.vision_feature_layer
    if not isinstance(layer, int) or model.config.vision_feature_select_strategy != "default":
        raise ValueError(f"{cfg.model}: vision pretraining expects a LLaVA-style model reading one "
                         "layer with the CLS token dropped")
    tower = model.model.vision_tower
    head = patch_scene_head(vcfg.image_size, vcfg.patch_size, vcfg.hidden_size)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)

    scenes = read_scenes(world)
    held = scenes.get("pretrain", [])[:cfg.eval_images]
    stream = _FreshScenes({s.signature() for s in scenes.get("bench", [])}, cfg.seed)
    t0, running = time.time(), []
    history = []
    tower.train()
    for step in range(1, cfg.steps + 1):
        pixels, targets = _batch(stream.take(cfg.batch_size), processor, vcfg.image_size)
        loss, _ = _losses(head, _features(tower, pixels, layer), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = step / (time.time() - t0)
            log.info("vision step %d/%d  loss %.4f  lr %.2e  %.2f steps/s  eta %.0f s", step,
                     cfg.steps, float(np.mean(running)), sched.get_last_lr()[0], rate,
                     (cfg.steps - step) / rate)
            history.append({"step": step, "loss": float(np.mean(running))})
            running = []
    metrics = evaluate_tower(tower, head, processor, held, vcfg.image_size, layer)
    log.info("held-out (world pretrain images): %s",
             ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    summary = {"config": asdict(cfg), "seconds": round(time.time() - t0, 1),
               "scenes_seen": cfg.steps * cfg.batch_size, "bench_lookalikes_skipped":
               stream.skipped, "held_out": metrics, "history": history}
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        src = Path(cfg.model) / "mmalign_tiny.json"
        if src.is_file():
            (tmp / "mmalign_tiny.json").write_text(src.read_text())
        (tmp / "vision_pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


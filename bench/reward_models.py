"""Quick measurement (not a test): train the question and answer reward models on a tiny world.

    .venv/bin/python bench/reward_models.py [--steps 20]
        [--annotation-images 5] [--lora] [--model DIR] [--out DIR]

Builds the test fixtures' tiny world (seed 11; 5 annotation images unless told otherwise) and
the tiny model (random weights unless --model names a trained one), trains each reward model
for --steps steps and prints one line per model: pairs, logged loss first -> last, held-out
pairwise accuracy before -> after, seconds. It proves the path end to end; with a random
backbone and a handful of held-out pairs the accuracy says little (the issue's >= 0.80 target
is for the full world on a trained base model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--annotation-images", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--model", type=Path, default=None, help="backbone (default: tiny, random)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp one)")
    args = ap.parse_args()

    from mmalign.curate.reward_train import RewardTrainConfig, train_reward
    from mmalign.models.tiny import TinyConfig, build_tiny
    from mmalign.world.make import WorldConfig, make_world

    out = args.out or Path(tempfile.mkdtemp(prefix="measure_rm_"))
    world = out / "world"
    t0 = time.time()
    make_world(world, WorldConfig(seed=11, pretrain_images=40, corpus_images=40,
                                  annotation_images=args.annotation_images, bench_images=12),
               log=lambda _: None)
    model = args.model
    if model is None:
        model = build_tiny(out / "tiny", TinyConfig(
            text_hidden=64, text_layers=2, text_intermediate=128, vision_hidden=64,
            vision_layers=2, vision_intermediate=128, vocab_size=600))
    print(f"world + model ready in {time.time() - t0:.1f}s ({out})")
    for kind in ("answer", "question"):
        r = train_reward(RewardTrainConfig(
            model=str(model), annotations=[str(world / "annotations" / f"{kind}s.jsonl")],
            output_dir=str(out / f"rm_{kind}"), image_root=str(world), max_steps=args.steps,
            per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
            logging_steps=1, eval_fraction=0.2, lora=args.lora, seed=0))
        p = r["pairs"]
        print(f"{kind:>8} RM: {p['train']['annotation']} + {p['train']['augmented']} augmented "
              f"train pairs, {p['eval']['annotation']} held-out | loss "
              f"{r['first_logged_loss']:.4f} -> {r['last_logged_loss']:.4f} | held-out "
              f"accuracy {r['eval_pairwise_accuracy_before']} -> {r['eval_pairwise_accuracy']}"
              f" | {r['steps']} steps, {r['seconds']}s")
        (out / f"rm_{kind}" / "measure.json").write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()

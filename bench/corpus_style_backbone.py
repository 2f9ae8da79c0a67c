"""The answer reward model's backbone: a base fine-tuned on corpus-style, defect-free instructions.

    .venv/bin/python bench/corpus_style_backbone.py runs/base/world runs/b13/sizepos2/final \\
        runs/s14/cstyle [--steps 600 --reps 2 --seed 99 --lr 1e-3 --train-vision]

The set is the world's own corpus generator (`world.corpus.corpus_records`, defect rates all
zero) drawn `reps` times over the *pretraining* images: no corpus, annotation or bench image,
and no truth file. It teaches the base the corpus's phrasings ("The small ring in the lower
right corner is ..."), which the attribute stages do not: judged by its own log-likelihood,
a clean answer beats the same answer with one wrong attribute 0.50 of the time before and 0.80
after (docs/LOG.md, session 14). The likelihood readout of the answer RM reads exactly that
(docs/results.md, session 15), as the paper's RM backbone (LLaVA-1.5) was itself tuned on
LLaVA-Instruct-style data.

Writes OUT.json (the set, LLaVA format) and trains OUT/final with `mmalign train sft`'s code
(batch 32; by default lr 1e-3 and the vision tower frozen). Session 16 continued
runs/s14/cstyle for 1200 steps with `--reps 4 --seed 100`: the answer RM rose from 0.732 to 0.787.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def instruction_set(world: Path, reps: int = 2, seed: int = 99) -> list:
    """Defect-free corpus-style records over the world's pretraining images."""
    from mmalign.world.corpus import corpus_style_samples
    from mmalign.world.scene import pretraining_scenes

    return corpus_style_samples(pretraining_scenes(world, "the corpus-style set"), reps, seed)


def main(argv: list[str] | None = None) -> None:
    from mmalign.io.formats import write_records
    from mmalign.train.sft import SFTRunConfig, train_sft

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world", type=Path)
    ap.add_argument("base", help="the model to fine-tune (e.g. the attribute stages' output)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--reps", type=int, default=2, help="draws of the set per scene")
    ap.add_argument("--seed", type=int, default=99, help="the set's draw")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-vision", action="store_true",
                    help="train the vision tower too (default: frozen)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.out.with_suffix(".json")
    records = instruction_set(args.world, args.reps, args.seed)
    write_records(data, records, "llava")
    print(f"{len(records)} corpus-style records -> {data}")
    final = train_sft(SFTRunConfig(model=args.base, data=[str(data)], output_dir=str(args.out),
                                   image_root=str(args.world), max_steps=args.steps,
                                   per_device_train_batch_size=32, learning_rate=args.lr,
                                   freeze_vision_tower=not args.train_vision))
    print(f"backbone: {final}")


if __name__ == "__main__":
    main()

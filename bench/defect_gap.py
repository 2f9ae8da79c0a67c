"""Do the corpus defects matter? The same SFT budget on the world's defective corpus and on its
clean counterpart (same records, same size, defects undone), from the same base model.

    .venv/bin/python bench/defect_gap.py --world runs/quickstart/world/data \
        --base checkpoints/tiny-base --out runs/defect_gap --steps 250 --seeds 0,1,2

Prints POPE F1 per split, CHAIR_i / CHAIR_s / recall, VQA and the oracle judge's correctness
and quality of open-ended answers for the base model and for each corpus (mean and spread
over seeds), and the clean - defective gap. Every training and evaluation run
resumes: rerunning the command after an interruption only does what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmalign.experiments import (
    HALLUCINATION_COLUMNS,
    evaluate_model,
    mix_files,
    seeds_arg,
    show_row,
    summarise,
    write_results,
)

CORPORA = {"defective": "corpus.json", "clean": "corpus_clean.json"}
BENCHES = ["pope", "chair", "vqa", "open"]
# open: the oracle judge's ratings of open-ended answers; correctness is where a corpus that
# teaches wrong colours and counts should show, beside CHAIR's object hallucination.
COLUMNS = [*HALLUCINATION_COLUMNS, ("open", "correctness"), ("open", "quality")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(CORPORA),
                    help="which corpora to train on this time (two processes can split them; "
                         "a rerun with both prints the whole table)")
    ap.add_argument("--limit", type=int, default=None, help="benchmark images (default: all)")
    ap.add_argument("--mix", action="append", default=[], metavar="FILE[:N]",
                    help="world file added to both arms' SFT data, e.g. clean.json: the "
                         "short-answer part of a LLaVA-1.5-style mix; FILE:N adds N of its "
                         "records drawn at random (repeatable)")
    ap.add_argument("--freeze-vision-tower", action="store_true",
                    help="train the projector and language model only, as LLaVA-1.5's SFT does")
    args = ap.parse_args()
    from mmalign.train.sft import SFTRunConfig, train_sft

    seeds = seeds_arg(args.seeds)
    mix = mix_files(args.world, args.mix, args.out)
    results: dict[str, list[dict]] = {"base": [evaluate_model(
        args.base, args.world, args.out / "eval-base", BENCHES, args.limit)]}
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(CORPORA))
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; known: {list(CORPORA)}")
    for name, corpus in CORPORA.items():
        if name not in arms:
            continue
        results[name] = []
        for seed in seeds:
            run = args.out / f"{name}-s{seed}"
            final = train_sft(SFTRunConfig(
                model=str(args.base), data=[str(args.world / corpus), *mix],
                image_root=str(args.world), output_dir=str(run),
                max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                learning_rate=args.lr, seed=seed, save_steps=max(50, args.steps // 4),
                freeze_vision_tower=args.freeze_vision_tower))
            results[name].append(evaluate_model(final, args.world, run / "eval", BENCHES,
                                                args.limit))
            show_row(name, seed, results[name][-1])

    table = summarise(results, COLUMNS, reference="defective")
    print(table)
    write_results(args.out, "defect_gap", vars(args), results, table)


if __name__ == "__main__":
    main()

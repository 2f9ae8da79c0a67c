"""Do the corpus defects matter? The same SFT budget on the world's defective corpus and on its
clean counterpart (same records, same size, defects undone), from the same base model.

    .venv/bin/python bench/defect_gap.py --world runs/quickstart/world/data \
        --base checkpoints/tiny-base --out runs/defect_gap --steps 250 --seeds 0,1,2

Prints POPE F1 per split, CHAIR_i / CHAIR_s and VQA for the base model and for each corpus
(mean and spread over seeds), and the clean - defective gap. Every training and evaluation run
resumes: rerunning the command after an interruption only does what is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CORPORA = {"defective": "corpus.json", "clean": "corpus_clean.json"}
COLUMNS = [("pope", "F1 random"), ("pope", "F1 popular"), ("pope", "F1 adversarial"),
           ("chair", "CHAIR_i"), ("chair", "CHAIR_s"), ("vqa", "accuracy")]
BENCHES = ["pope", "chair", "vqa"]


def headline(metrics: dict) -> dict[str, float]:
    from mmalign.report.html import headline_metrics

    out = {}
    for bench, m in metrics["benches"].items():
        out |= {(bench, k): v for k, v in headline_metrics(bench, m).items()}
    return out


def evaluate_model(model: Path, world: Path, out: Path, limit: int | None) -> dict:
    from mmalign.backends.hf import HFGenerator
    from mmalign.eval.run import evaluate

    gen = HFGenerator.from_pretrained(str(model), batch_size=32, device="cpu")
    return headline(evaluate(gen, world, out, BENCHES, limit=limit, batch_size=32,
                             progress=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--limit", type=int, default=None, help="benchmark images (default: all)")
    args = ap.parse_args()
    from mmalign.train.sft import SFTRunConfig, train_sft

    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {"base": [evaluate_model(args.base, args.world,
                                                              args.out / "eval-base", args.limit)]}
    for name, corpus in CORPORA.items():
        results[name] = []
        for seed in seeds:
            run = args.out / f"{name}-s{seed}"
            final = train_sft(SFTRunConfig(
                model=str(args.base), data=[str(args.world / corpus)], output_dir=str(run),
                max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                learning_rate=args.lr, seed=seed, save_steps=max(50, args.steps // 4)))
            results[name].append(evaluate_model(final, args.world, run / "eval", args.limit))
            print(f"{name} seed {seed}: " + ", ".join(
                f"{k[1]} {v:.3f}" for k, v in results[name][-1].items()), flush=True)

    table = summarise(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "defect_gap.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()},
         "runs": {n: [{f"{b} {k}": v for (b, k), v in r.items()} for r in rs]
                  for n, rs in results.items()}}, indent=1) + "\n")
    (args.out / "defect_gap.md").write_text(table + "\n")


def summarise(results: dict[str, list[dict]]) -> str:
    """A markdown table: mean (min-max over seeds) per column, and the clean - defective gap."""
    head = "| model | seeds | " + " | ".join(f"{b} {k}" for b, k in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    means = {}
    for name, runs in results.items():
        cells = []
        for col in COLUMNS:
            vals = [r[col] for r in runs if col in r]
            means[(name, col)] = statistics.mean(vals) if vals else float("nan")
            spread = f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else ""
            cells.append(f"{means[(name, col)]:.3f}{spread}" if vals else "n/a")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    if "clean" in results and "defective" in results:
        gap = [means[("clean", c)] - means[("defective", c)] for c in COLUMNS]
        lines.append("| clean - defective | | " + " | ".join(f"{g:+.3f}" for g in gap) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

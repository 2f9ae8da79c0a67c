"""Does a model's yes/no answer to existence questions depend on the image at all?

    .venv/bin/python bench/existence_probe.py MODEL WORLD [--n 160] [--split random]

For POPE questions of one split, reads log P("Yes") - log P("No") at the first answer position
(no generation) and prints its spread and the AUC of that score for present vs absent objects.
AUC 0.5 with a near-zero spread means the answer ignores image and question alike; a model can
have AUC > 0.5 long before greedy answers flip, so this sees learning that POPE F1 cannot.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mmalign.world.vocab import SHORT_ANSWER


def auc(pos: list[float], neg: list[float]) -> float:
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def main() -> None:
    from mmalign.backends.base import GenRequest
    from mmalign.backends.hf import HFGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("world", type=Path)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--split", default="random")
    args = ap.parse_args()
    g = HFGenerator.from_pretrained(args.model, batch_size=32, device="cpu", dtype="float32")
    tok = g.processor.tokenizer
    # The chat template puts a space before the answer: the first answer token is " Yes"
    yes = tok.encode(" Yes.", add_special_tokens=False)[0]
    no = tok.encode(" No.", add_special_tokens=False)[0]
    with open(args.world / "bench" / "pope.jsonl", encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["split"] == args.split][:args.n]
    logp = g.next_token_logprobs([GenRequest.single(args.world / r["image"],
                                                    f"{r['question']}\n{SHORT_ANSWER}")
                                  for r in rows])
    scores = (logp[:, yes] - logp[:, no]).tolist()
    pos = [s for s, r in zip(scores, rows, strict=True) if r["answer"] == "yes"]
    neg = [s for s, r in zip(scores, rows, strict=True) if r["answer"] == "no"]
    print(f"{args.model}: n {len(rows)}  AUC {auc(pos, neg):.3f}  yes-no log-odds mean "
          f"present {statistics.mean(pos):+.3f} absent {statistics.mean(neg):+.3f}  "
          f"std {statistics.pstdev(scores):.3f}")


if __name__ == "__main__":
    main()

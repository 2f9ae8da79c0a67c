"""Blind baselines on a world's benchmarks: what a model scores without looking at the image.

    .venv/bin/python bench/world_baselines.py WORLD_DIR

A trained VLM must clear these floors by a wide margin for the benchmarks to mean anything:
- POPE: "always yes", and a prior guesser that says yes for the shapes most frequent in the
  training scenes (the language prior a hallucinating model leans on). Popular/adversarial
  negatives are built to punish exactly that guesser.
- VQA: the majority answer per question type (chosen on the benchmark itself, so an upper
  bound for any blind guesser of this kind).
- CHAIR: a "description" naming the two most frequent training shapes.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path


def f1(rows: list[dict], says_yes) -> dict[str, float]:
    tp = sum(1 for r in rows if says_yes(r) and r["answer"] == "yes")
    fp = sum(1 for r in rows if says_yes(r) and r["answer"] == "no")
    fn = sum(1 for r in rows if not says_yes(r) and r["answer"] == "yes")
    acc = sum(says_yes(r) == (r["answer"] == "yes") for r in rows) / len(rows)
    p = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"acc": acc, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("world", type=Path)
    w = ap.parse_args().world
    load = lambda name: [json.loads(x) for x in (w / "bench" / f"{name}.jsonl").open()]  # noqa: E731
    freq = Counter(json.loads((w / "stats.json").read_text())["frequency"])
    top = {s for s, _ in freq.most_common(4)}

    pope = load("pope")
    print("POPE (F1 / accuracy)        random        popular       adversarial")
    for name, rule in [("always yes", lambda r: True),
                       ("frequent-shape prior", lambda r: r["object"] in top)]:
        cells = []
        for split in ("random", "popular", "adversarial"):
            m = f1([r for r in pope if r["split"] == split], rule)
            cells.append(f"{m['f1']:.3f} / {m['acc']:.3f}")
        print(f"  {name:<24}  " + "   ".join(cells))

    vqa = load("vqa")
    by_type: dict[str, Counter] = defaultdict(Counter)
    for r in vqa:
        by_type[r["type"]][r["answer"]] += 1
    hits = sum(c.most_common(1)[0][1] for c in by_type.values())
    print(f"VQA majority answer per type: {hits / len(vqa):.3f} exact match over {len(vqa)}")
    for t, c in sorted(by_type.items()):
        a, n = c.most_common(1)[0]
        print(f"  {t:<12} {n / sum(c.values()):.3f} ('{a}')")

    chair = load("chair")
    guess = {s for s, _ in freq.most_common(2)}
    halluc = sum(len(guess - set(r["objects"])) for r in chair)
    chair_s = sum(bool(guess - set(r["objects"])) for r in chair) / len(chair)
    print(f"CHAIR of a blind 2-frequent-shape description: "
          f"CHAIR_i {halluc / (2 * len(chair)):.3f}, CHAIR_s {chair_s:.3f}")
    mc = load("mc")
    print(f"MC: {len(mc)} questions; CircularEval chance for a random guesser "
          f"~{(1 / 4) ** 4:.4f}")


if __name__ == "__main__":
    main()

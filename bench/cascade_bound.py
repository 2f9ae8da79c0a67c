"""Which defects must the reward models see for the cascade to meet its target?

The Align2LLaVA cascade (top alpha of images by question score, then top beta of instructions
by answer score, per category) is run on the world's corpus with *simulated* reward models
read from the truth file: an answer RM that scores each turn 0 if it carries one of the defect
types it "sees" and 1 otherwise, and a question RM that does the same per record for its
types; a tiny random term breaks ties, so defects it does not see are ranked at random. The
curated set's defect rate is then compared with the corpus's, as bench/align2llava.py does for
the trained RMs (target: at most a third).

This is a measurement tool (it reads the truth file, which curation code never does): it
says what a perfect detector of some defects would reach, so an RM's per-defect accuracy
(bench/align2llava.py's `by_defect`) can be read against what the target needs.

    .venv/bin/python bench/cascade_bound.py runs/base/world
    .venv/bin/python bench/cascade_bound.py runs/base/world --seeds 0 1 2 --alpha 0.3 --beta 0.3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align2llava import defect_rate, defect_types, read_corpus_defects  # noqa: E402

from mmalign.curate.select import select_cascade  # noqa: E402
from mmalign.io.formats import read_records  # noqa: E402
from mmalign.world.defects import DEFECTS  # noqa: E402

# Defects that spoil the question rather than the answer: the question RM's to see.
QUESTION_DEFECTS = ("ungrounded", "near_duplicate")
# Defects that need the image bound to the text: an attribute, count or relation checked
# against the scene (bench/attribute_probe.py; docs/LOG.md session 14).
BINDING_DEFECTS = ("wrong_attribute", "wrong_count", "wrong_relation")


def simulated_cascade(records: list, turn_defects: dict[str, list[dict]], answer_sees: set[str],
                      question_sees: set[str], alpha: float, beta: float, seed: int) -> list[str]:
    """Ids the cascade keeps when the RMs are perfect on the defect types they see."""
    rng = np.random.default_rng(seed)
    for s in records:
        bad = [0.0] * len(s.answers)
        question_bad = 0.0
        for d in turn_defects[s.id]:
            if d["type"] in answer_sees:
                bad[d["turn"]] = 1.0
            if d["type"] in question_sees:
                question_bad = 1.0
        s.meta["scores"] = {"question": -question_bad + 1e-3 * rng.random(),
                            "answers": [-b + 1e-3 * rng.random() for b in bad]}
    kept, _ = select_cascade(records, alpha, beta)
    return [s.id for s in kept]


def detectors() -> list[tuple[str, set[str], set[str]]]:
    """(name, answer RM sees, question RM sees) for each simulated pair of RMs."""
    answer_side = [d for d in DEFECTS if d not in QUESTION_DEFECTS]
    rows = [("neither RM sees anything", set(), set()),
            ("answer RM sees every defect", set(DEFECTS), set()),
            ("answer RM sees every defect, question RM its two", set(DEFECTS),
             set(QUESTION_DEFECTS)),
            ("answer RM: hallucinated_object + truncation", {"hallucinated_object",
                                                             "truncation"}, set()),
            ("answer RM: all but " + " / ".join(BINDING_DEFECTS),
             set(DEFECTS) - set(BINDING_DEFECTS), set())]
    rows += [(f"answer RM: all but {d}", set(DEFECTS) - {d}, set()) for d in answer_side]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("world", type=Path)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--beta", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="tie-breaking draws (the defects not seen are ranked at random)")
    args = ap.parse_args()
    records = list(read_records(args.world / "corpus.json"))
    turns = read_corpus_defects(args.world)  # one read: the defects with their turns
    truth = defect_types(turns)
    corpus = defect_rate([s.id for s in records], truth)["rate"]
    print(f"corpus defect rate {corpus:.4f} ({len(records)} records); target: curated / corpus "
          f"<= 0.333 (alpha {args.alpha}, beta {args.beta})\n")
    print("| simulated RMs | curated defect rate | curated / corpus |\n|---|---|---|")
    for name, answer_sees, question_sees in detectors():
        rates = [defect_rate(simulated_cascade(records, turns, answer_sees, question_sees,
                                               args.alpha, args.beta, seed), truth)["rate"]
                 for seed in args.seeds]
        lo, hi = min(rates), max(rates)
        span = f"{lo:.3f}" if lo == hi else f"{lo:.3f}-{hi:.3f}"
        ratio = f"{lo / corpus:.3f}" if lo == hi else f"{lo / corpus:.3f}-{hi / corpus:.3f}"
        print(f"| {name} | {span} | {ratio} |")


if __name__ == "__main__":
    main()

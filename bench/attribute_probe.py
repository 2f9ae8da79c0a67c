"""Does a model read an object's colour off the image, or answer the shape's usual colour?

    .venv/bin/python bench/attribute_probe.py MODEL [MODEL ...] [--world W] [--images 150]

On the world's benchmark scenes, asks "What color is the <shape>?" (short-answer form) for
every object whose shape is unique in its scene, and "How many <shapes> are there?" for every
shape present, and reads the argmax over the six colour words / the number words one-four at
the first answer position (no generation). Colour accuracy is split by whether the object has
its shape's usual colour (the world draws it with probability vocab.USUAL_COLOR_P): a model
that ignores the image and answers the usual colour scores high on "usual" and below chance
(1/6) on "unusual"; one that reads the image scores alike on both. Chance for "count" is set by
how often a shape appears once, which is most of the time; "count>1" is the accuracy on the
shapes that appear more than once (0 for a model that always answers "one").

"binding after" and "binding before" score statements rather than answers: for each such
object, the true sentence against the same sentence with another colour (drawn uniformly), by
the model's log-likelihood of the answer (teacher-forced, as a reward model's backbone reads
an answer): after, "Which color does the <shape> have?" / "The <shape> in the image is
<colour>." (the colour after the shape, as the corpus's conversation answers say it); before,
the CHAIR prompt / "There is a <colour> <shape> in the image." (the colour first, as detail
answers and captions say it, so the model has to check it against the shape that follows).
Chance is 0.5; a model that prefers the shape's usual colour scores below it on "unusual"
objects, so the columns are split the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def probe_items(world: Path, images: int) -> list[tuple[str, str, str, str]]:
    """(kind, image, question, answer word): kind is usual / unusual (colour) or count."""
    from mmalign.world import vocab
    from mmalign.world.corpus import COLOR_QUESTION, COUNT_QUESTION
    from mmalign.world.scene import read_scene_file

    scenes = [s for s in read_scene_file(world / "scenes.jsonl") if s.split == "bench"]
    items = []
    for s in scenes[:images]:
        for o in s.objects:
            if s.count(shape=o.shape) == 1:
                kind = "usual" if o.color == vocab.USUAL_COLOR[o.shape] else "unusual"
                items.append((kind, s.image, COLOR_QUESTION.format(shape=o.shape), o.color))
        for shape in sorted(s.shapes()):
            items.append(("count", s.image, COUNT_QUESTION.format(plural=vocab.PLURALS[shape]),
                          vocab.number_word(s.count(shape=shape))))
    return items


def accuracies(model: str, world: Path, items: list[tuple[str, str, str, str]],
               batch_size: int = 32) -> dict[str, tuple[float, int]]:
    from mmalign.backends.base import GenRequest
    from mmalign.backends.hf import HFGenerator
    from mmalign.world import vocab

    g = HFGenerator.from_pretrained(model, batch_size=batch_size, device="cpu", dtype="float32")
    tok = g.processor.tokenizer
    words = {"colour": list(vocab.COLOR_NAMES), "count": ["one", "two", "three", "four"]}
    # The chat template puts a space before the answer: the first answer token is " Red"
    ids = {k: [tok.encode(f" {w.capitalize()}.", add_special_tokens=False)[0] for w in ws]
           for k, ws in words.items()}
    logp = g.next_token_logprobs([GenRequest.single(world / image, f"{q}\n{vocab.SHORT_ANSWER}")
                                  for _, image, q, _ in items])
    right: dict[str, list[bool]] = {"usual": [], "unusual": [], "count": [], "count>1": []}
    for row, (kind, _, _, answer) in zip(logp, items, strict=True):
        group = "count" if kind == "count" else "colour"
        right[kind].append(words[group][int(row[ids[group]].argmax())] == answer)
        if kind == "count" and answer != "one":
            right["count>1"].append(right[kind][-1])
    return {k: (sum(v) / len(v), len(v)) for k, v in right.items() if v}


def binding_items(world: Path, images: int, seed: int = 0
                  ) -> list[tuple[str, str, str, str, str]]:
    """(column, image, question, true answer, false answer) for the binding columns."""
    import random

    from mmalign.world import vocab
    from mmalign.world.bench import CHAIR_PROMPT
    from mmalign.world.scene import read_scene_file

    rng = random.Random(f"binding:{seed}")
    scenes = [s for s in read_scene_file(world / "scenes.jsonl") if s.split == "bench"]
    items = []
    for s in scenes[:images]:
        for o in s.objects:
            if s.count(shape=o.shape) != 1:
                continue
            usual = "usual" if o.color == vocab.USUAL_COLOR[o.shape] else "unusual"
            wrong = rng.choice([c for c in vocab.COLOR_NAMES if c != o.color])
            after = "The {s} in the image is {c}."
            items.append((f"after {usual}", s.image, f"Which color does the {o.shape} have?",
                          after.format(s=o.shape, c=o.color), after.format(s=o.shape, c=wrong)))
            before = "There is a {c} {s} in the image."
            items.append((f"before {usual}", s.image, CHAIR_PROMPT,
                          before.format(s=o.shape, c=o.color), before.format(s=o.shape, c=wrong)))
    return items


def binding(model: str, world: Path, items: list[tuple[str, str, str, str, str]]
            ) -> dict[str, tuple[float, int]]:
    """Share of items whose true statement the model finds likelier than the false one."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmalign.curate.rewrite import answer_loglik

    m = AutoModelForImageTextToText.from_pretrained(model).eval()
    processor = AutoProcessor.from_pretrained(model)
    right: dict[str, list[bool]] = {}
    for column, image, question, true, false in items:
        right.setdefault(column, []).append(
            answer_loglik(m, processor, image, question, true, world)
            > answer_loglik(m, processor, image, question, false, world))
    return {f"binding {k}": (sum(v) / len(v), len(v)) for k, v in sorted(right.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--world", type=Path, default=Path("runs/base/world"))
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--no-binding", action="store_true", help="skip the binding columns")
    args = ap.parse_args()
    items = probe_items(args.world, args.images)
    pairs = [] if args.no_binding else binding_items(args.world, args.images)
    counts = [answer for kind, _, _, answer in items if kind == "count"]
    always_one = counts.count("one") / max(len(counts), 1)
    for model in args.models:
        acc = accuracies(model, args.world, items)
        if pairs:
            acc |= binding(model, args.world, pairs)
        print(f"{model}: " + "  ".join(f"{k} {a:.3f} (n {n})" for k, (a, n) in acc.items())
              + f"  | colour chance 0.167, count 'one' always {always_one:.3f}")


if __name__ == "__main__":
    main()

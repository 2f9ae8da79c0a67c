"""The open-ended task: oracle ratings of answers, metrics checked by hand on a fixed
prediction file."""

from __future__ import annotations

import json

import pytest

from mmalign.eval import open as open_task
from mmalign.eval.run import load_predictions, metrics_from_predictions
from mmalign.eval.tasks import get_task
from mmalign.world.scene import Obj, Scene


def obj(shape, color, size, cell):
    return Obj(shape, color, size, cell, (cell[0] + 0.5) / 3, (cell[1] + 0.5) / 3)


# Two red circles in the left column and a small yellow star bottom right.
SCENE = Scene("h1", "sand", [obj("circle", "red", "large", (0, 0)),
                             obj("circle", "red", "small", (0, 2)),
                             obj("star", "yellow", "small", (2, 2))],
              split="bench", image="images/bench/h1.png")
COUNT_Q, COUNT_REF = "How many circles are there?", "There are two circles in the image."


def bench_row(i, category, question, reference):
    return {"id": f"open-{i}", "image": SCENE.image, "category": category, "kind": "k",
            "question": question, "reference": reference, "style": "machine",
            "scene": SCENE.to_dict()}


BENCH = [bench_row(0, "conversation", COUNT_Q, COUNT_REF),
         bench_row(1, "conversation", COUNT_Q, COUNT_REF),
         bench_row(2, "detail", "Describe the image.", COUNT_REF),
         bench_row(3, "detail", "Describe the image.", COUNT_REF)]
OUTPUTS = [
    # 1 true claim, every reference fact: h4 c4 co4, one 7-word sentence: x2 v2 -> quality 12
    "There are two circles in the image.",
    # 3 circles is false: c0, h0 (capped at c), well formed co4, x2 v2 -> quality 4
    "There are three circles in the image.",
    # true and complete but cut off (no final stop): h4 c4 co3, 4 words x2 v2 -> quality 11
    "There are two circles",
    # empty: 0 on every attribute -> quality 0
    "",
]


@pytest.fixture
def predictions(tmp_path):
    """A prediction file as `evaluate` writes it (item + output + score + model)."""
    path = tmp_path / "open.jsonl"
    items = open_task.build_items(BENCH)
    with open(path, "w") as f:
        for it, out in zip(items, OUTPUTS, strict=True):
            gold = {k: v for k, v in it.items() if k not in ("prompt", "max_new_tokens")}
            f.write(json.dumps(gold | {"prompt": it["prompt"], "output": out,
                                       **open_task.score_output(it, out), "model": "m"}) + "\n")
    return path


def test_items_ask_the_bare_question_and_carry_what_the_judge_needs():
    it = open_task.build_items(BENCH)[0]
    assert it["prompt"] == COUNT_Q and it["max_new_tokens"] == open_task.MAX_NEW_TOKENS
    assert Scene.from_dict(it["scene"]).objects == SCENE.objects
    assert it["reference"] == COUNT_REF and it["category"] == "conversation"
    with pytest.raises(ValueError, match="no scene graph.*make it again"):
        open_task.build_items([{k: v for k, v in BENCH[0].items() if k != "scene"}])


def test_score_output_is_the_oracle_rating():
    it = open_task.build_items(BENCH)[1]
    s = open_task.score_output(it, OUTPUTS[1])
    assert s["parse"] == {"helpfulness": 0, "correctness": 0, "coherence": 4, "complexity": 2,
                          "verbosity": 2}
    assert s["correct"] is False
    assert open_task.score_output(it, OUTPUTS[0])["correct"] is True


def test_open_metrics_hand_computed(predictions):
    rows = load_predictions(predictions)
    m = metrics_from_predictions("open", rows)
    assert m["n"] == 4
    assert m["helpfulness"] == pytest.approx((4 + 0 + 4 + 0) / 4)
    assert m["correctness"] == pytest.approx((4 + 0 + 4 + 0) / 4)
    assert m["coherence"] == pytest.approx((4 + 4 + 3 + 0) / 4)
    assert m["complexity"] == pytest.approx((2 + 2 + 2 + 0) / 4)
    assert m["verbosity"] == pytest.approx((2 + 2 + 2 + 0) / 4)
    assert m["quality"] == pytest.approx((12 + 4 + 11 + 0) / 4)
    assert m["correct_rate"] == pytest.approx(2 / 4)
    assert m["by_category"] == {"conversation": {"n": 2, "quality": 8.0},
                                "detail": {"n": 2, "quality": 5.5}}
    # the stored ratings agree with the re-rating from the rows alone
    assert [r["parse"]["correctness"] for r in rows] == [4, 0, 4, 0]
    task = get_task("open")
    assert task.bench_file == "bench/openended.jsonl"
    assert task.headline(m) == {"quality": 6.75, "helpfulness": 2.0, "correctness": 2.0,
                                "coherence": 2.75, "complexity": 1.5, "verbosity": 1.5}
    assert task.columns(m)["quality detail"] == 5.5
    assert open_task.open_metrics([])["quality"] == 0.0

"""The oracle judge, checked by hand on scenes whose graphs are written out here, and on a
generated world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.backends.judge import JudgeItem
from mmalign.backends.oracle import OracleJudge, rate_answer, scene_claims
from mmalign.records import RATING_ATTRIBUTES
from mmalign.world.make import WorldConfig, make_world
from mmalign.world.scene import Obj, Scene


def obj(shape, color, size, cell):
    return Obj(shape, color, size, cell, (cell[0] + 0.5) / 3, (cell[1] + 0.5) / 3)


# Two red circles in the left column (top and bottom) and a small yellow star bottom right.
SCENE = Scene("h1", "sand", [obj("circle", "red", "large", (0, 0)),
                             obj("circle", "red", "small", (0, 2)),
                             obj("star", "yellow", "small", (2, 2))])
# A blue square in the middle and a green triangle to its right.
SCENE2 = Scene("h2", "stone", [obj("square", "blue", "large", (1, 1)),
                               obj("triangle", "green", "small", (2, 1))])


def scores(answer, scene=SCENE, **kw):
    return rate_answer(answer, scene, **kw).scores


def test_correct_count_answer_gets_full_marks():
    s = scores("There are two circles in the image.", question="How many circles are there?",
               reference="There are two circles in the image.")
    # one true claim (2 circles), every reference fact covered, one sentence of 7 words
    assert s == {"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2,
                 "verbosity": 2}


def test_wrong_count_is_wrong_and_unhelpful():
    r = rate_answer("There are three circles in the image.", SCENE,
                    question="How many circles are there?",
                    reference="There are two circles in the image.")
    assert r.false_claims == ["3 circle"]
    assert r.scores["correctness"] == 0 and r.scores["helpfulness"] == 0
    assert r.scores["coherence"] == 4  # well-formed, just wrong


def test_hallucinated_colour_and_position_by_hand():
    r = rate_answer("Yes, there is a blue star in the lower right corner of the image.", SCENE,
                    question="Is there a star in the image?",
                    reference="Yes, there is a small yellow star in the lower right corner of "
                              "the image.")
    # claims: "a blue star" (false), "blue star in the lower right corner" (false), yes (true)
    assert sorted(r.false_claims) == ["a blue star", "blue star in the lower right corner"]
    assert r.true_claims == 1
    assert r.scores["correctness"] == 1  # floor(4 * 1/3)


def test_relations_checked_on_the_grid():
    assert scores("The large red circle is above the small red circle.")["correctness"] == 4
    r = rate_answer("The star is to the left of the large circle.", SCENE)
    # the star is in column 2, the large circle in column 0: false; two presence claims true
    assert r.false_claims == ["star left of large circle"]
    assert r.scores["correctness"] == 2  # floor(4 * 2/3), capped at 2
    ok = rate_answer("The triangle is not to the left of the square.", SCENE2)
    assert not ok.false_claims and ok.true_claims == 3
    assert rate_answer("There is nothing to the left of the square.", SCENE2).false_claims == []
    assert rate_answer("There is nothing to the right of the square.",
                       SCENE2).false_claims == ["nothing right of square"]
    lead = rate_answer("To the right of the square, there is a small green triangle.", SCENE2)
    assert lead.false_claims == [] and lead.true_claims == 3


def test_negation_and_totals():
    assert scene_claims("There is no star in the image.", SCENE)[0].true is False
    assert scene_claims("There is no hexagon in the image.", SCENE)[0].true is True
    assert [c.true for c in scene_claims("The image shows three geometric shapes.", SCENE)] == [
        True]
    assert [c.true for c in scene_claims("The image shows four shapes.", SCENE)] == [False]
    # a hypothetical sentence describes another scene: not checked
    assert scene_claims("Removing them would leave one shape.", SCENE) == []


def test_pronoun_and_extreme_claims():
    r = rate_answer("The small star in the lower right corner is the closest to the right of "
                    "the image. Its color is green.", SCENE)
    assert r.false_claims == ["small star is green"]
    r = rate_answer("The large circle is the closest to the bottom of the image.", SCENE)
    assert r.false_claims == ["large circle closest to the bottom"]


def test_short_answers_are_compared_with_the_reference():
    q, ref = "What color is the star?", "The star in the image is yellow."
    assert scores("Yellow.", question=q, reference=ref) == {
        "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1}
    bad = rate_answer("Blue.", SCENE, question=q, reference=ref)
    assert bad.false_claims == ["color ['blue']"] and bad.scores["correctness"] == 0
    assert scores("No.", question="Is there a star?", reference="Yes.")["correctness"] == 0


def test_form_attributes():
    cut = scores("There are two circles in the")
    assert cut["coherence"] == 3 and cut["correctness"] == 4
    assert scores("red red red circle.")["coherence"] == 3
    assert scores("USER: <image> circle.")["coherence"] == 3
    assert scores("Two.")["complexity"] == 1 and scores("Two.")["verbosity"] == 1
    long = ("There are two circles. Since both circles are red, the answer is yes. So the "
            "circles share a color.")
    assert scores(long)["complexity"] == 4
    assert scores("There are two circles. The star is small.")["complexity"] == 3
    assert scores(" ".join(["circle"] * 41) + ".")["verbosity"] == 4
    assert scores("") == dict.fromkeys(RATING_ATTRIBUTES, 0)


def test_helpfulness_without_reference_and_capped_by_correctness():
    assert scores("Overall, the shapes are neatly spread.")["helpfulness"] == 2
    assert scores("There is a star.")["helpfulness"] == 4
    assert scores("There is a hexagon.")["helpfulness"] == 0  # capped by correctness 0


# --------------------------------------------------------------------------- on a world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oracle") / "w"
    make_world(out, WorldConfig(seed=5, pretrain_images=4, corpus_images=6, annotation_images=2,
                                bench_images=4), log=lambda _: None)
    return out


def _describe(scene: Scene) -> str:
    return " ".join(f"There is a {o.size} {o.color} {o.shape}." for o in scene.objects)


def test_oracle_judge_on_world_scenes(world):
    rows = [json.loads(x) for x in (world / "scenes.jsonl").open()]
    picked = [Scene.from_dict(r) for r in rows if r["split"] == "bench"][:2]
    items = []
    for s in picked:
        absent = next(x for x in ("hexagon", "ring", "cross", "star", "circle")
                      if x not in s.shapes())
        items.append(JudgeItem(id=s.image_id, images=[world / s.image], image_keys=[s.image],
                               question="Describe the image.",
                               responses=[_describe(s), _describe(s) + f" There is a {absent}."]))
    items.append(JudgeItem(id="stray", images=[Path("elsewhere.png")], image_keys=["nope.png"],
                           question="Q?", responses=["A."]))
    judge = OracleJudge(world)
    out = judge.rate(items)
    for s, (good, bad) in zip(picked, out[:2], strict=True):
        assert good.scores["correctness"] == 4 and good.error is None
        n = len(s.objects)  # n true presence claims, one false
        assert bad.scores["correctness"] == min(2, (4 * n) // (n + 1))
        assert bad.judge == "oracle+ref" and len(bad.prompt_hash) == 64
        assert "false: a" in bad.reasoning
    assert out[2][0].error and "not in the world's scenes.jsonl" in out[2][0].error


def test_noise_is_seeded_and_differs_between_passes(world):
    rows = [json.loads(x) for x in (world / "scenes.jsonl").open()]
    s = Scene.from_dict(rows[0])
    item = JudgeItem(id="n1", images=[world / s.image], image_keys=[s.image],
                     question="Describe.", responses=[_describe(s)] * 12)
    exact = OracleJudge(world).rate([item])[0]
    a = OracleJudge(world, noise=1.0, seed=3).rate([item])[0]
    b = OracleJudge(world, noise=1.0, seed=3).rate([item])[0]
    c = OracleJudge(world, noise=1.0, seed=3).rate([item], repeat=1)[0]
    assert [r.scores for r in a] == [r.scores for r in b]  # same seed, same pass: same draw
    assert [r.scores for r in a] != [r.scores for r in c]  # second pass: a fresh draw
    assert [r.scores for r in a] != [r.scores for r in exact]
    assert all(0 <= v <= 4 and v == int(v) for r in a + c for v in r.scores.values())
    assert a[0].judge == "oracle+ref(noise=1,seed=3)"

"""The world's text against its scene graphs, checked with an independent parser."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np

from mmalign.world import vocab
from mmalign.world.corpus import DEFAULT_DEFECT_RATES, corpus_records
from mmalign.world.facts import mentioned_shapes, mentions
from mmalign.world.scene import sample_scene

from .conftest import read_jsonl


def _records(world, name):
    return {r["id"]: r for r in json.loads((world / name).read_text())}


def _answers(rec):
    return [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]


def test_clean_answers_mention_only_objects_that_are_there(small_world, scenes):
    clean = _records(small_world, "corpus_clean.json")
    for rec in clean.values():
        present = scenes[rec["image"]].shapes()
        for a in _answers(rec):
            assert mentioned_shapes(a) <= present, (rec["id"], a)


def test_clean_detail_lists_every_object_exactly(small_world, scenes):
    clean = _records(small_world, "corpus_clean.json")
    details = [r for r in clean.values() if r["category"] == "detail"]
    assert details
    for rec in details:
        s = scenes[rec["image"]]
        said = Counter((m.size, m.color, m.shape) for m in mentions(_answers(rec)[0])
                       if m.size and m.color)
        assert said == Counter((o.size, o.color, o.shape) for o in s.objects), rec["id"]


def test_every_defect_changes_the_record_and_hallucinations_are_visible(small_world, scenes):
    clean = _records(small_world, "corpus_clean.json")
    bad = _records(small_world, "corpus.json")
    truth = read_jsonl(small_world / "truth" / "corpus_defects.jsonl")
    kinds = Counter()
    for t in truth:
        c, b = clean[t["id"]], bad[t["id"]]
        if not t["defects"]:
            assert c == b, t["id"]
            continue
        assert c != b, t
        (d,) = t["defects"]
        kinds[d["type"]] += 1
        if d["type"] == "hallucinated_object":
            present = scenes[b["image"]].shapes()
            invented = set().union(*(mentioned_shapes(a) for a in _answers(b))) - present
            assert invented, (t, _answers(b))
        if d["type"] == "truncation":
            turn = _answers(b)[d["turn"]]
            assert not turn.endswith(".") and len(turn) < len(_answers(c)[d["turn"]])
        if d["type"] == "near_duplicate":
            assert len(b["conversations"]) == len(c["conversations"]) + 2
    assert set(kinds) == set(DEFAULT_DEFECT_RATES), kinds


def test_realised_rates_follow_config_and_zero_rates_give_a_clean_corpus():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, f"x{i}") for i in range(1500)]
    recs = [r for i, s in enumerate(scenes)
            for r in corpus_records(s, "i.png", np.random.default_rng(i), DEFAULT_DEFECT_RATES)]
    got = Counter(d["type"] for r in recs for d in r.defects)
    for name, rate in DEFAULT_DEFECT_RATES.items():
        # Within 4 binomial standard deviations of the configured rate; wrong_relation needs
        # two objects, which 1-object scenes (20%) cannot give, so it may fall further short.
        sd = (rate * (1 - rate) / len(recs)) ** 0.5
        low = 0.5 * rate if name == "wrong_relation" else rate - 4 * sd
        assert low <= got[name] / len(recs) <= rate + 4 * sd, (name, got[name] / len(recs))
    none = [r for i, s in enumerate(scenes[:300])
            for r in corpus_records(s, "i.png", np.random.default_rng(i), {})]
    assert all(r.clean == r.defective and not r.defects for r in none)


def test_hallucinations_follow_the_co_occurrence_prior(small_world, scenes):
    bad = _records(small_world, "corpus.json")
    favoured = uniform = total = 0
    for t in read_jsonl(small_world / "truth" / "corpus_defects.jsonl"):
        for d in t["defects"]:
            if d["type"] == "hallucinated_object":
                shape = d["detail"].split()[4]  # "claims a <size> <color> <shape> in ..."
                assert shape in vocab.SHAPES
                s = scenes[bad[t["id"]]["image"]]
                liked = vocab.THEMES[s.theme]["favours"]
                absent = [x for x in vocab.SHAPES if x not in s.shapes()]
                assert shape in absent
                favoured += shape in liked
                uniform += sum(x in liked for x in absent) / len(absent)
                total += 1
    # A uniform pick among absent shapes would give `uniform`; the theme prior (5x boost)
    # must make theme-typical hallucinations clearly more common than that.
    assert total > 20 and favoured / total > uniform / total + 0.15, (favoured, uniform, total)


def test_pope_is_balanced_and_exact(small_world, scenes):
    rows = read_jsonl(small_world / "bench" / "pope.jsonl")
    for split in ("random", "popular", "adversarial"):
        sub = [r for r in rows if r["split"] == split]
        yes = sum(r["answer"] == "yes" for r in sub)
        assert sub and yes == len(sub) - yes
        for r in sub:
            assert (r["object"] in scenes[r["image"]].shapes()) == (r["answer"] == "yes")
            assert r["object"] in r["question"]
    negs = {sp: Counter(r["object"] for r in rows if r["split"] == sp and r["answer"] == "no")
            for sp in ("random", "popular", "adversarial")}
    assert negs["random"] != negs["popular"] != negs["adversarial"]


def test_vqa_answers_recomputed_from_scenes(small_world, scenes):
    for r in read_jsonl(small_world / "bench" / "vqa.jsonl"):
        s = scenes[r["image"]]
        q = r["question"]
        named = [m for m in mentions(q)]
        if r["type"] == "total":
            assert r["answer"] == vocab.number_word(len(s.objects))
        elif r["type"] == "count":
            assert r["answer"] == vocab.number_word(s.count(shape=named[0].shape))
        elif r["type"] == "color":
            (m,) = named
            cands = [o for o in s.objects if o.shape == m.shape and m.size in (None, o.size)]
            assert len(cands) == 1 and r["answer"] == cands[0].color
        elif r["type"] == "shape_at":
            pos = q.removeprefix("What shape is at the ").removesuffix("?")
            cell = next(c for c, n in vocab.CLEAN_POSITION.items() if n == pos)
            assert r["answer"] == s.at(cell).shape


def test_mc_and_chair_rows(small_world, scenes):
    for r in read_jsonl(small_world / "bench" / "mc.jsonl"):
        assert len(r["options"]) == len(set(r["options"])) >= 2
        assert 0 <= r["answer"] < len(r["options"])
        if r["type"] == "total":
            assert r["options"][r["answer"]] == vocab.number_word(len(scenes[r["image"]].objects))
    for r in read_jsonl(small_world / "bench" / "chair.jsonl"):
        assert r["objects"] == sorted(scenes[r["image"]].shapes())


def test_annotation_scores_rank_clean_above_defective(small_world):
    truth = {(t["file"], t["id"]): t for t in read_jsonl(small_world / "truth" /
                                                          "annotations.jsonl")}
    clean_scores, bad_scores = [], []
    for r in read_jsonl(small_world / "annotations" / "answers.jsonl"):
        assert len(r["candidates"]) >= 2
        assert len({c["answer"] for c in r["candidates"]}) == len(r["candidates"])
        for c, t in zip(r["candidates"], truth[("answers.jsonl", r["id"])]["candidates"],
                        strict=True):
            assert 0.0 <= c["score"] <= 1.0
            (clean_scores if t["defect"] is None else bad_scores).append(c["score"])
    assert np.mean(clean_scores) - np.mean(bad_scores) > 0.4
    q_rows = read_jsonl(small_world / "annotations" / "questions.jsonl")
    assert all(len(r["candidates"]) >= 2 and all(c["questions"] for c in r["candidates"])
               for r in q_rows)


def test_a_repeated_question_rewords_one_the_set_still_asks(small_world):
    """The truth's per-question labels line up with the set; a repeat (the last question)
    rewords a question the set asks clean, so the defect the score halves is in the text."""
    from mmalign.world.oracle import asked_twin, question_set_quality

    truth = {t["id"]: t["candidates"] for t in read_jsonl(small_world / "truth" /
                                                          "annotations.jsonl")
             if t["file"] == "questions.jsonl"}
    repeats = 0
    for r in read_jsonl(small_world / "annotations" / "questions.jsonl"):
        for c, t in zip(r["candidates"], truth[r["id"]], strict=True):
            labels = t["labels"]
            assert len(labels) == len(c["questions"])
            assert t["quality"] == round(question_set_quality(labels), 4)
            assert ("repeats" in t) == ("duplicate" in labels)
            if "repeats" in t:
                repeats += 1
                assert labels[-1] == "duplicate" and labels[t["repeats"]] is None
                assert c["questions"][-1] != c["questions"][t["repeats"]]
    assert repeats > 20
    assert asked_twin(["vague", None, None], 0) == 1
    assert asked_twin([None, "vague", "truncated"], 2) == 0
    assert asked_twin(["vague", "ungrounded"], 1) is None


def test_clean_set_asks_every_question_right_after_the_image(small_world):
    """Evaluation asks one question right after the image; the clean set teaches exactly that,
    one turn per record, so no answer can be read off an earlier turn's text."""
    clean = json.loads((small_world / "clean.json").read_text())
    assert all(len(r["conversations"]) == 2 for r in clean)
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in clean)
    by_image: dict[str, list[dict]] = {}
    for r in clean:
        by_image.setdefault(r["image"], []).append(r)
    for recs in by_image.values():
        kinds = [r["id"].rsplit("-", 1)[1] for r in recs]
        assert kinds.count("caption") == 1 and kinds.count("mc") == 1
        assert 1 <= sum(k.startswith("q") for k in kinds) <= 4
    firsts = [r["conversations"][0]["value"] for r in clean]
    assert sum("Is there a" in f for f in firsts) > 0
    mc = [r for r in clean if r["id"].endswith("-mc")]
    assert all("option's letter" in r["conversations"][0]["value"] for r in mc)
    assert all(r["conversations"][1]["value"] in "ABCD" for r in mc)


def test_grounding_set_is_balanced_and_true_to_the_scene(scenes):
    from mmalign.world.corpus import grounding_samples

    rng = np.random.default_rng(0)
    checked = 0
    for image, scene in scenes.items():
        if scene.split != "pretrain":
            continue
        recs = {r.id.rsplit("-", 1)[1]: r for r in grounding_samples(scene, image, rng)}
        present = scene.shapes()
        short = [r for tag, r in recs.items() if tag.startswith("g")]
        asked = [re.search(r"Is there a (\w+) in", r.turns[0].content).group(1) for r in short]
        answers = [r.turns[1].content for r in short]
        # every present shape once, as many absent ones; each answer agrees with the scene
        assert set(asked) >= present and len(asked) == 2 * len(present) == len(set(asked))
        assert answers == ["Yes." if s in present else "No." for s in asked]
        assert all(vocab.SHORT_ANSWER in r.turns[0].content for r in short)
        listed = recs["list"].turns[1].content.rstrip(".").lower().split(", ")
        assert sorted(listed) == sorted(present)
        echo = recs["echo"].turns
        shape = re.search(r"Is there a (\w+) in", echo[0].content).group(1)
        assert echo[1].content == (f"Yes, there is a {shape}." if shape in present
                                   else f"No, there is no {shape}.")
        checked += 1
    assert checked >= 100


def test_attribute_set_is_true_and_not_predictable_from_the_shape(scenes):
    from mmalign.world.corpus import attribute_samples, grounding_samples

    rng = np.random.default_rng(0)
    usual, colours, ones, counts = 0, 0, 0, 0
    for image, scene in scenes.items():
        for r in attribute_samples(scene, image, rng):
            q, a = r.turns[0].content, r.turns[1].content
            if m := re.search(r"What color is the (\w+)\?", q):
                (obj,) = [o for o in scene.objects if o.shape == m.group(1)]  # unique shape
                expected = (f"{obj.color.capitalize()}." if vocab.SHORT_ANSWER in q
                            else f"The {obj.shape} is {obj.color}.")
                assert a == expected
                colours += 1
                usual += obj.color == vocab.USUAL_COLOR[obj.shape]
            elif m := re.search(r"How many (\w+) are there\?", q):
                shape = next(s for s in vocab.SHAPES if vocab.PLURALS[s] == m.group(1))
                n = scene.count(shape=shape)
                assert n >= 1 and vocab.number_word(n) in a.lower()
                counts += 1
                ones += n == 1
        assert not any("What color" in r.turns[0].content or "How many" in r.turns[0].content
                       for r in grounding_samples(scene, image, rng))
    assert colours >= 100 and counts >= 50
    # in the scenes a shape has its usual colour 45% of the time; here about 1 in 6
    assert usual / colours < 0.3
    # most shapes are there once; here "one" is not the majority by far
    assert ones / counts < 0.7


def test_conjunction_questions_are_true_balanced_and_bind_colour_to_shape(scenes):
    from mmalign.world.corpus import attribute_samples

    rng = np.random.default_rng(1)
    answers = {True: 0, False: 0}
    usual = {True: 0, False: 0}
    colour_elsewhere = 0  # "no" questions whose colour another shape of the image wears
    for image, scene in scenes.items():
        for r in attribute_samples(scene, image, rng):
            q, a = r.turns[0].content, r.turns[1].content
            m = re.search(r"Is there a (\w+) (\w+) in the image\?", q)
            if not m:
                continue
            color, shape = m.groups()
            here = scene.count(shape=shape, color=color) > 0
            assert shape in scene.shapes()  # never plain existence: the shape is there
            if vocab.SHORT_ANSWER in q:
                assert a == ("Yes." if here else "No.")
                answers[here] += 1
                usual[here] += color == vocab.USUAL_COLOR[shape]
                colour_elsewhere += not here and color in scene.colors()
            else:
                assert a == (f"Yes, there is a {color} {shape}." if here
                             else f"No, there is no {color} {shape}.")
    assert answers[True] >= 50 and 0.8 < answers[True] / answers[False] < 1.25
    # the usual colour predicts neither answer (scenes: 45% usual)
    assert usual[True] / answers[True] < 0.3 and usual[False] / answers[False] < 0.3
    # the colour alone does not say "yes": it is often in the image on another shape
    assert colour_elsewhere / answers[False] > 0.2


def test_size_and_position_questions_are_true_to_the_scene(scenes):
    from mmalign.world.corpus import attribute_samples

    rng = np.random.default_rng(2)
    asked = {"size": 0, "position": 0}
    for image, scene in scenes.items():
        for r in attribute_samples(scene, image, rng):
            q, a = r.turns[0].content, r.turns[1].content
            if m := re.search(r"Is the (\w+) large or small\?", q):
                (obj,) = [o for o in scene.objects if o.shape == m.group(1)]  # unique shape
                assert a == (f"{obj.size.capitalize()}." if vocab.SHORT_ANSWER in q
                             else f"The {obj.shape} is {obj.size}.")
                asked["size"] += 1
            elif m := re.search(r"Where is the (\w+)\?", q):
                (obj,) = [o for o in scene.objects if o.shape == m.group(1)]
                where = vocab.CLEAN_POSITION[obj.cell]
                assert a == (f"{where.capitalize()}." if vocab.SHORT_ANSWER in q
                             else f"The {obj.shape} is at the {where}.")
                asked["position"] += 1
    assert asked["size"] == asked["position"] >= 100


def test_question_sets_are_the_question_rms_text_of_clean_conversation_questions(scenes):
    """`question_set_samples`: per scene and rep, the image alone, then that scene's clean
    conversation questions joined as the question RM scores a set (`question_text`)."""
    from mmalign.curate.annotations import question_text
    from mmalign.world.corpus import category_items, question_set_samples

    some = list(scenes.values())[:20]
    sets = question_set_samples(some, 2, 5)
    assert len(sets) == 40 and len({s.id for s in sets}) == 40
    assert [s.images[0] for s in sets] == [s.image for s in some] * 2
    assert sets == question_set_samples(some, 2, 5)  # seeded
    assert [s.turns[1].content for s in sets] != [
        s.turns[1].content for s in question_set_samples(some, 2, 6)]
    rng = np.random.default_rng([0, 5])
    for s in sets:
        assert [t.role for t in s.turns] == ["user", "assistant"]
        assert s.turns[0].content == "<image>"
        questions = [it.question for it in category_items(scenes[s.images[0]],
                                                          "conversation", rng)]
        assert s.turns[1].content == question_text(questions)
        assert all(q.endswith("?") for q in questions)

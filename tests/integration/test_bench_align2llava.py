"""bench/align2llava.py: the miniature Align2LLaVA experiment end to end on the tiny world and
tiny model (five variants + base in the table, finite numbers, curation.json with the defect
rates, a rerun redoes nothing) and its recipe loading."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mmalign.config import RecipeError
from mmalign.experiments import bench_module

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "align2llava.yaml"


a2l = bench_module("align2llava")


def test_shipped_recipe_loads():
    exp = a2l.load_experiment(RECIPE)
    assert (exp.alpha, exp.beta) == (0.3, 0.3) and exp.seeds == [0, 1, 2]
    assert exp.benches == ["pope", "vqa", "mc", "chair"] and exp.eval_limit == 100
    # the RMs start from the tuned backbone, the question RM from its question phase; both
    # read their backbone's log-probs
    assert exp.rm_backbone_steps > 0 and exp.rm_backbone_kinds == ["question", "answer"]
    assert exp.rm_backbone_question_steps > 0 and exp.rm_layout == "turns"
    assert exp.rm_backbone_attribute_steps > 0  # run a2g's order: attributes, then corpus style
    assert {k: o["readout"] for k, o in exp.rm_overrides.items()} == {
        "question": "likelihood", "answer": "likelihood"}
    # the question RM sees repeats: its lines answered alone by the corpus-style backbone
    assert exp.rm_overrides["question"]["likelihood_features"] == ["answer_redundancy"]
    assert exp.rm_overrides["question"]["likelihood_head"] == "lines"  # its questions one by one
    assert exp.rm_line_reader == "rm_backbone"
    # session 9's recipe, as the docs' commands for the tables before session 17 give it
    old = a2l.load_experiment(RECIPE, ["rm_backbone_steps=0", "rm_steps=300", "rm_layout=user",
                                       "rm_overrides={}", "rm_backbone_question_steps=0",
                                       "rm_backbone_attribute_steps=0"])
    assert (old.rm_backbone_steps, old.rm_steps, old.rm_layout, old.rm_overrides) == (
        0, 300, "user", {})
    assert exp.variants() == ["full", "curated", "random", "matched", "curated_rewrite",
                              "oracle"]
    assert a2l.load_experiment(RECIPE, ["rewrite=false"]).variants() == [
        "full", "curated", "random", "matched", "oracle"]
    # `only` picks arms (in the table's order) so they can run in separate processes
    assert a2l.load_experiment(RECIPE, ["only=[oracle,full]"]).variants() == ["full", "oracle"]


@pytest.mark.parametrize("where", ["file", "override"])
def test_unknown_recipe_key_is_an_error_naming_it(tmp_path, where):
    path = tmp_path / "r.yaml"
    path.write_text("steps: 2\nrm_stepz: 3\n" if where == "file" else "steps: 2\n")
    overrides = ["rm_stepz=3"] if where == "override" else []
    with pytest.raises(RecipeError, match=r"rm_stepz.*did you mean rm_steps"):
        a2l.load_experiment(path, overrides)
    assert a2l.main([str(path), *overrides]) == 2


def test_bad_values_are_errors():
    with pytest.raises(RecipeError, match="alpha"):
        a2l.load_experiment(RECIPE, ["alpha=0"])
    with pytest.raises(RecipeError, match="rm_lr.*number"):
        a2l.load_experiment(RECIPE, ["rm_lr=fast"])
    with pytest.raises(RecipeError, match=r"only: unknown variant.*curatd"):
        a2l.load_experiment(RECIPE, ["only=[full,curatd]"])
    with pytest.raises(RecipeError, match="curated_rewrite needs rewrite"):
        a2l.load_experiment(RECIPE, ["rewrite=false", "only=[curated_rewrite]"])


def test_rm_backbone_and_override_settings_are_checked():
    exp = a2l.load_experiment(RECIPE, ["rm_overrides.answer.readout=likelihood",
                                       "rm_overrides.answer.max_steps=3000",
                                       "rm_overrides.answer.learning_rate=3e-3",
                                       "rm_backbone_kinds=[answer]"])
    # typed as RewardTrainConfig's fields: YAML 1.1 reads 3e-3 as a string
    answer = exp.rm_overrides["answer"]
    assert (answer["readout"], answer["max_steps"], answer["learning_rate"]) == (
        "likelihood", 3000, 0.003)
    with pytest.raises(RecipeError, match=r"rm_overrides.answer.max_steps: must be an integer"):
        a2l.load_experiment(RECIPE, ["rm_overrides.answer.max_steps=many"])
    with pytest.raises(RecipeError, match=r"rm_overrides: unknown kind.*caption"):
        a2l.load_experiment(RECIPE, ["rm_overrides.caption.readout=last"])
    with pytest.raises(RecipeError, match=r"rm_overrides.answer: \['readot'\]"):
        a2l.load_experiment(RECIPE, ["rm_overrides.answer.readot=last"])
    # the experiment's own paths are not a reward-model setting to change
    with pytest.raises(RecipeError, match=r"rm_overrides.question: \['model'\]"):
        a2l.load_experiment(RECIPE, ["rm_overrides.question.model=x"])
    with pytest.raises(RecipeError, match=r"rm_backbone_kinds: unknown kind"):
        a2l.load_experiment(RECIPE, ["rm_backbone_kinds=[answers]"])
    with pytest.raises(RecipeError, match="rm_backbone_steps"):
        a2l.load_experiment(RECIPE, ["rm_backbone_steps=-1"])
    with pytest.raises(RecipeError, match="rm_backbone_attribute_share"):
        a2l.load_experiment(RECIPE, ["rm_backbone_attribute_share=1"])


def test_attribute_draw_is_its_share_of_the_set_seeded_and_short_answer_style(a2l_world):
    from mmalign.world.scene import read_scene_file

    scenes = [s for s in read_scene_file(a2l_world / "scenes.jsonl") if s.split == "pretrain"]
    assert a2l.attribute_draw(scenes, 0.0, 30, 0) == []
    drawn = a2l.attribute_draw(scenes, 0.25, 30, 0)  # a quarter of 40: 10 beside 30
    assert len(drawn) == 10 and len({s.id for s in drawn}) == 10
    assert {s.source for s in drawn} == {"world/attributes"}
    assert [s.id for s in a2l.attribute_draw(scenes, 0.25, 30, 0)] == [s.id for s in drawn]
    assert [s.id for s in a2l.attribute_draw(scenes, 0.25, 30, 1)] != [s.id for s in drawn]
    everything = a2l.attribute_draw(scenes, 0.9, 10**6, 0)  # fewer than asked: all, once
    assert len(everything) > len(drawn) and len({s.id for s in everything}) == len(everything)
    assert {s.id for s in drawn} < {s.id for s in everything}


def test_draw_like_matches_category_counts_and_is_seeded():
    from mmalign.records import Sample, Turn

    pool = [Sample(f"r{i}", ["x.png"], [Turn("user", "<image>\nq"), Turn("assistant", "a")],
                   category="detail" if i % 3 else "reasoning") for i in range(30)]
    counts = {"detail": 4, "reasoning": 2}
    a = a2l.draw_like(pool, counts, 0, "random")
    assert [s.category for s in a].count("detail") == 4 and len(a) == 6
    assert [s.id for s in a] == [s.id for s in a2l.draw_like(pool, counts, 0, "random")]
    assert [s.id for s in a] != [s.id for s in a2l.draw_like(pool, counts, 1, "random")]
    with pytest.raises(ValueError, match="11 records of reasoning wanted"):
        a2l.draw_like(pool, {"reasoning": 11}, 0, "oracle")


def test_question_template_masks_the_world_vocabulary_and_matched_draws_follow_it():
    from mmalign.records import Sample, Turn

    def rec(i, question, category="conversation"):
        return Sample(f"r{i}", ["x.png"], [Turn("user", question), Turn("assistant", "a"),
                                           Turn("user", "What color is it?"),
                                           Turn("assistant", "b")], category=category)

    a = rec(0, "<image>\nIs the large red circle to the left of the star?")
    b = rec(1, "Is the small blue hexagon to the right of the ring?\n<image>")
    c = rec(2, "<image>\nHow many circles are there in the image?")
    # only the first question counts; "top left" is masked whole, "left of" as a position
    assert a2l.question_template(a) == a2l.question_template(b) == \
        "Is the _ _ _ to the _ of the _?"
    assert a2l.question_template(c) == "How many _ are there in the image?"
    assert a2l.question_template(rec(3, "Where is the star? Top left.")) == "Where is the _? _."
    pool = [rec(i, q) for i, q in enumerate(
        ["<image>\nHow many stars are there in the image?"] * 6
        + ["<image>\nIs the star above the ring?"] * 6)]
    pool += [rec(20 + i, "Describe the image.", "detail") for i in range(3)]
    wanted = {("conversation", "How many _ are there in the image?"): 2,
              ("detail", "Describe the image."): 1}
    key = a2l.category_template
    drawn = a2l.draw_like(pool, wanted, 0, "matched", key)
    assert sorted(key(s) for s in drawn) == sorted(k for k, n in wanted.items()
                                                    for _ in range(n))
    mix = a2l.template_mix(pool)
    assert mix["conversation"]["templates"] == 2
    assert mix["conversation"]["effective_templates"] == 2.0  # two templates, equal shares
    assert mix["detail"] == {"records": 3, "templates": 1, "effective_templates": 1.0,
                             "top": {"Describe the image.": 1.0}}


def test_defect_rate_counts_records_with_any_label():
    truth = {"a": [], "b": ["truncation"], "c": ["truncation", "wrong_count"], "d": []}
    r = a2l.defect_rate(["a", "b", "c", "d"], truth)
    assert (r["defective"], r["rate"]) == (2, 0.5)
    assert r["by_type"] == {"truncation": 0.5, "wrong_count": 0.25}
    with pytest.raises(ValueError, match="not in the truth file"):
        a2l.defect_rate(["zz"], truth)


@pytest.fixture(scope="module")
def a2l_world(tmp_path_factory) -> Path:
    """The shared tiny world with 80 corpus images: with 70% of records defective, its 40
    leave the oracle set no clean detail record to draw."""
    from mmalign.world.make import WorldConfig, make_world

    out = tmp_path_factory.mktemp("a2lworld") / "w"
    make_world(out, WorldConfig(seed=11, pretrain_images=40, corpus_images=80,
                                annotation_images=5, bench_images=12), log=lambda _: None)
    return out


def test_align2llava_bench_end_to_end_then_resumes(a2l_world, tiny_model, tmp_path, capsys):
    tiny_world = a2l_world
    out = tmp_path / "a2l"
    args = [str(RECIPE), f"world={tiny_world}", f"base={tiny_model}", f"out={out}",
            "seeds=[0]", "rm_steps=2", "rm_batch_size=4", "steps=2", "batch_size=4",
            "rewrite_limit=2", "rewrite_max_new_tokens=8", "eval_limit=2",
            "eval_batch_size=8", "device=cpu", "sft_mix=[clean.json:16]",
            "rm_backbone_steps=1", "rm_backbone_reps=1", "rm_backbone_batch_size=4",
            "rm_backbone_attribute_steps=1", "rm_backbone_question_steps=1",
            "rm_overrides.answer.max_steps=5",
            "rm_line_reader=rm_backbone"]
    assert a2l.main(args) == 0
    # the question RM has its lines answered by the corpus-style backbone, saved beside its
    # head
    reader = out / "rm_question" / "final" / "line_reader"
    assert json.loads((reader.parent / "reward_config.json").read_text())["line_reader"]
    from safetensors.torch import load_file

    theirs = load_file(out / "rm_backbone" / "final" / "model.safetensors")
    assert all(v.equal(theirs[k]) for k, v in load_file(reader / "model.safetensors").items())

    runs = json.loads((out / "align2llava.json").read_text())["runs"]
    assert list(runs) == ["base", "full", "curated", "random", "matched", "curated_rewrite",
                          "oracle"]
    for variant, rows in runs.items():
        assert len(rows) == 1, variant
        assert {"pope F1 random", "vqa accuracy", "mc circular accuracy",
                "chair CHAIR_i"} <= set(rows[0]), variant
        assert all(math.isfinite(v) for v in rows[0].values()), (variant, rows[0])
    table = (out / "align2llava.md").read_text()
    for row in ("base", "full", "curated", "random", "matched", "curated_rewrite", "oracle",
                "curated - full", "curated - random", "curated - matched", "matched - random",
                "curated_rewrite - curated", "oracle - random"):
        assert f"| {row} |" in table, row
    assert table.strip() in capsys.readouterr().out

    cur = json.loads((out / "curation.json").read_text())
    rates = cur["defect_rate"]
    n_corpus = rates["corpus"]["records"]
    assert n_corpus == len(json.loads((tiny_world / "corpus.json").read_text()))
    assert 0 <= rates["curated"]["rate"] <= 1 and 0 < rates["corpus"]["rate"] < 1
    assert rates["oracle"]["s0"]["rate"] == 0.0  # drawn from defect-free records only
    n_sel = cur["selection"]["out"]
    assert rates["curated"]["records"] == rates["random"]["s0"]["records"] == n_sel < n_corpus
    # matched: curated's composition by (category, first-question template), drawn at random
    from mmalign.io.formats import read_records

    def composition(path):
        return sorted((s.category, a2l.question_template(s))
                      for s in read_records(path, image_root=tiny_world))

    assert composition(out / "data" / "matched-s0.jsonl") == \
        composition(out / "select" / "selected.jsonl")
    templates = cur["question_templates"]
    assert sum(c["records"] for c in templates["curated"].values()) == n_sel
    assert sum(c["records"] for c in templates["corpus"].values()) == n_corpus
    assert set(cur["reward_models"]) == {"question", "answer"}
    for rm in cur["reward_models"].values():
        truth = rm["against_truth"]  # measured against the candidates' noiseless quality
        assert truth["pairs"] == rm["held_out_pairs"]
        assert truth["truth_agrees"] <= truth["ceiling"] <= 1
        assert abs(truth["ceiling"] - truth["truth_agrees"] - truth["truth_ties"] / 2) < 1e-3
        ordered = truth["truth_order"]
        assert ordered["pairs"] == round(truth["pairs"] * (1 - truth["truth_ties"]))
        assert sum(d["pairs"] for d in truth["by_defect"].values()) == ordered["pairs"]
        right = sum(d["pairs"] * d["accuracy"] for d in truth["by_defect"].values())
        assert abs(right / ordered["pairs"] - ordered["accuracy"]) < 1e-3
        # a truth judge blind to one defect type, for each type the held-out pairs hold
        seen = {d for key in truth["by_defect"] for d in key.split("+")} - {"None"}
        assert seen <= set(truth["blind_ceiling"])
        assert all(0 <= v <= 1 for v in truth["blind_ceiling"].values())
    # the answer RM's backbone as an untrained judge, on the same truly ordered pairs
    answer = cur["reward_models"]["answer"]
    likelihood = answer["backbone_likelihood"]
    assert likelihood["truth_order"]["pairs"] == answer["against_truth"]["truth_order"]["pairs"]
    assert {k: d["pairs"] for k, d in likelihood["by_defect"].items()} == \
        {k: d["pairs"] for k, d in answer["against_truth"]["by_defect"].items()}
    kept = (out / "rm_answer" / "backbone_scores.jsonl").read_text().splitlines()
    assert len(kept) == answer["held_out_pairs"]
    assert all(json.loads(line)["better_score"] < 0 for line in kept)  # log-likelihoods
    counts = cur["rewrite"]["counts"]
    assert counts["records"] == 2
    assert counts["rewritten"] + counts["kept"] + counts["rejected"] == counts["answers"]
    assert set(cur["rewrite"]["perplexity"]) == {"before", "after"}
    curated_rw = (out / "data" / "curated_rewrite.jsonl").read_text().splitlines()
    assert len(curated_rw) == n_sel

    # A rerun trains, scores and evaluates nothing again and gives the same table.
    finals = [out / "rm_question" / "final" / "reward_head.safetensors",
              out / "rm_answer" / "final" / "reward_head.safetensors",
              out / "score" / "scored.jsonl", out / "rewrite" / "rewritten.jsonl",
              out / "rm_answer" / "backbone_scores.jsonl",
              *(out / f"{v}-s0" / "final" / "model.safetensors"
                for v in ("full", "curated", "random", "matched", "curated_rewrite", "oracle"))]
    stamps = [f.stat().st_mtime_ns for f in finals]
    # an RM folder from before eval_scores.jsonl existed: the measurement scores it again
    (out / "rm_answer" / "eval_scores.jsonl").unlink()
    assert a2l.main(args) == 0
    again = json.loads((out / "curation.json").read_text())
    assert again["reward_models"]["answer"]["against_truth"] == \
        cur["reward_models"]["answer"]["against_truth"]
    assert [f.stat().st_mtime_ns for f in finals] == stamps
    assert json.loads((out / "align2llava.json").read_text())["runs"] == runs

    # Other settings in the same out folder are refused, not mixed in: a clear error, exit 2.
    capsys.readouterr()
    assert a2l.main([*args, "lr=5e-4"]) == 2
    assert re.search(r"full-s0 was run with other settings.*learning", capsys.readouterr().err)
    # A training set that changed under an arm (an arm copied from another out folder, a
    # selection made again) is refused by its content, whatever its path. A record from before
    # the hashes passes and gains them.
    record = out / "full-s0" / "run.json"
    settings = json.loads(record.read_text())
    assert len(settings.pop("data_sha256")) == 2  # the corpus and the clean mix
    record.write_text(json.dumps(settings))
    drawn = out / "data" / "random-s0.jsonl"
    drawn.write_text("".join(drawn.read_text().splitlines(keepends=True)[:-1]))
    assert a2l.main(args) == 2
    assert re.search(r"random-s0 was run with other settings.*data_sha256",
                     capsys.readouterr().err)
    assert json.loads(record.read_text())["data_sha256"][0].startswith("sha256:")


def test_curation_with_an_rm_backbone_stage_and_a_likelihood_answer_rm(
        a2l_world, tiny_model, tmp_path):
    """rm_backbone_steps > 0: `base` is tuned on corpus-style clean records over the
    pretraining images, the kinds in rm_backbone_kinds start from it, rm_overrides change one
    kind's settings, and a rerun trains nothing again."""
    from mmalign.io.formats import read_records
    from mmalign.world.scene import read_scene_file

    out = tmp_path / "a2l"
    exp = a2l.load_experiment(RECIPE, [
        f"world={a2l_world}", f"base={tiny_model}", f"out={out}", "seeds=[0]", "rewrite=false",
        "rm_steps=2", "rm_batch_size=4", "rm_layout=turns", "device=cpu",
        "rm_backbone_steps=2", "rm_backbone_reps=1", "rm_backbone_batch_size=4",
        "rm_backbone_attribute_share=0.2", "rm_backbone_question_steps=1",
        "rm_backbone_attribute_steps=0",  # the corpus-style phase from `base` (tested below)
        "rm_backbone_kinds=[answer]",  # the recipe's overrides replaced: the answer RM's only
        "rm_overrides={answer: {readout: likelihood, max_steps: 5, "
        "per_device_train_batch_size: 16}}"])
    _, cur = a2l.build_sets(exp, a2l_world, out, "cpu")

    backbone = out / "rm_backbone" / "final"
    assert (backbone / "config.json").is_file()
    split = {s.image: s.split for s in read_scene_file(a2l_world / "scenes.jsonl")}
    drawn = read_records(out / "rm_backbone.json")
    assert drawn and {split[r.images[0]] for r in drawn} == {"pretrain"}
    sources = [r.source for r in drawn]  # a fifth of the set is attribute records
    assert round(len(drawn) * 0.2) == sources.count("world/attributes") > 0
    assert set(sources) == {"world/machine", "world/attributes"}
    answer, question = (json.loads((out / f"rm_{k}" / "run.json").read_text())
                        for k in ("answer", "question"))
    # the question RM starts from its own phase, here on `base` (not in rm_backbone_kinds)
    questions = out / "rm_backbone_questions" / "final"
    assert answer["model"] == str(backbone) and question["model"] == str(questions)
    assert json.loads((out / "rm_backbone_questions" / "run.json").read_text())[
        "model"] == str(tiny_model)
    sets = read_records(out / "rm_backbone_questions.json")
    assert sets and {split[r.images[0]] for r in sets} == {"pretrain"}
    assert all(r.turns[0].content == "<image>" and r.turns[1].content.endswith("?")
               for r in sets)
    assert answer["readout"] == "likelihood" and answer["max_steps"] == 5
    assert question["readout"] == "last" and question["max_steps"] == 2
    rms = cur["reward_models"]
    assert rms["answer"]["readout"] == "likelihood" and rms["question"]["readout"] == "last"
    assert rms["answer"]["backbone"] == str(backbone)
    assert rms["answer"]["backbone_likelihood"]["model"] == str(backbone)
    assert 0 <= rms["answer"]["held_out_pairwise_accuracy"] <= 1

    stamp = (backbone / "model.safetensors").stat().st_mtime_ns
    a2l.build_sets(exp, a2l_world, out, "cpu")
    assert (backbone / "model.safetensors").stat().st_mtime_ns == stamp
    # a changed backbone setting in the same out is refused, not mixed in (the attribute
    # phase kept at 0 steps, as above: the recipe's 1600 would train before the refusal)
    with pytest.raises(RecipeError, match="rm_backbone was run with other settings"):
        a2l.build_sets(a2l.load_experiment(RECIPE, [
            f"world={a2l_world}", f"base={tiny_model}", f"out={out}", "rm_backbone_steps=3",
            "rm_backbone_attribute_steps=0"]), a2l_world, out, "cpu")
    assert not (out / "rm_backbone_attributes").exists()


def test_rm_backbone_attribute_phase_comes_first(a2l_world, tiny_model, tmp_path):
    """rm_backbone_attribute_steps > 0: `base` is tuned on the base's attribute set over the
    pretraining images, the corpus-style phase starts from that model, and a phase of 0
    steps is skipped (the backbone is then the attribute phase's model)."""
    from mmalign.io.formats import read_records
    from mmalign.world.scene import read_scene_file

    small = ["rm_backbone_batch_size=4", "rm_backbone_reps=1", "device=cpu",
             "rm_backbone_attribute_steps=2"]
    out = tmp_path / "both"
    exp = a2l.load_experiment(RECIPE, [f"world={a2l_world}", f"base={tiny_model}",
                                       f"out={out}", "rm_backbone_steps=1", *small])
    backbone = a2l.train_rm_backbone(exp, a2l_world, out)
    first = out / "rm_backbone_attributes" / "final"
    assert backbone == out / "rm_backbone" / "final" and (first / "config.json").is_file()
    assert json.loads((out / "rm_backbone" / "run.json").read_text())["model"] == str(first)
    assert json.loads((out / "rm_backbone_attributes" / "run.json").read_text())[
        "model"] == str(tiny_model)
    split = {s.image: s.split for s in read_scene_file(a2l_world / "scenes.jsonl")}
    drawn = read_records(out / "rm_backbone_attributes.json")
    assert drawn and {r.source for r in drawn} == {"world/attributes"}
    assert {split[r.images[0]] for r in drawn} == {"pretrain"}
    assert {r.source for r in read_records(out / "rm_backbone.json")} == {"world/machine"}

    only = tmp_path / "attributes-only"
    exp = a2l.load_experiment(RECIPE, [f"world={a2l_world}", f"base={tiny_model}",
                                       f"out={only}", "rm_backbone_steps=0", *small])
    assert a2l.train_rm_backbone(exp, a2l_world, only) == only / "rm_backbone_attributes" / "final"
    assert not (only / "rm_backbone").exists()
    with pytest.raises(RecipeError, match="rm_backbone_attribute_steps must be >= 0"):
        a2l.load_experiment(RECIPE, ["rm_backbone_attribute_steps=-1"])
    with pytest.raises(RecipeError, match="rm_backbone_question_steps must be >= 0"):
        a2l.load_experiment(RECIPE, ["rm_backbone_question_steps=-1"])
    with pytest.raises(RecipeError, match="rm_backbone_question_reps must be >= 1"):
        a2l.load_experiment(RECIPE, ["rm_backbone_question_reps=0"])


def _held(sides):
    """A HeldOut from (better, worse) truth rows, the annotators agreeing with the truth."""
    pairs = [{"group": f"g{i}"} for i in range(len(sides))]
    return a2l.HeldOut(pairs, [(b["quality"], w["quality"]) for b, w in sides],
                       ["x"] * len(sides), sides)


def test_a_judge_blind_to_a_defect_ties_the_pairs_only_it_orders():
    from mmalign.world.defects import QUALITY
    from mmalign.world.oracle import question_set_quality

    def answer(defect):
        return {"defect": defect, "quality": QUALITY[defect], "questions": 1}

    held = _held([(answer(None), answer("verbosity")),
                            (answer(None), answer("truncation")),
                            (answer("verbosity"), answer("truncation"))])
    blind = a2l.blind_ceilings("answer", held)
    assert set(blind) == {"verbosity", "truncation"}
    # blind to verbosity: the first pair is a tie (half), the third is still ordered
    assert blind["verbosity"] == pytest.approx((0.5 + 1 + 1) / 3, abs=1e-4)
    assert blind["truncation"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-4)

    def qset(defects, n):
        labels = defects + [None] * (n - len(defects))
        return {"defects": defects, "quality": round(question_set_quality(labels), 4),
                "questions": n}

    # three clean questions against the same three with a repeat of one appended
    held = _held([(qset([], 3), qset(["duplicate"], 4))])
    assert a2l.blind_ceilings("question", held) == {"duplicate": 0.5}
    # a truth row the world's rule does not give is refused, naming the record
    bad = qset(["vague"], 3)
    bad["quality"] = 0.9
    with pytest.raises(ValueError, match="g0: true quality 0.9"):
        a2l.blind_ceilings("question", _held([(qset([], 3), bad)]))

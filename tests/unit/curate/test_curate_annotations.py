"""Annotation files -> (better, worse) pairs: the pair rule, augmentation, and clear errors."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from mmalign.curate.annotations import (
    ANSWER,
    QUESTION,
    AnnotationGroup,
    answer_text,
    build_pairs,
    corrupt_questions,
    corrupt_text,
    detect_kind,
    question_text,
    read_annotations,
    split_groups,
)
from mmalign.io.containers import DataFileError
from mmalign.records import RecordError


def _answers(values, by="score", texts=None):
    texts = texts or [f"answer number {i} is here" for i in range(len(values))]
    return AnnotationGroup("g", "img.png", ANSWER, texts, values, by=by, question="<image>\nQ?")


def test_pairs_follow_strict_order_and_drop_ties():
    g = _answers([0.9, 0.5, 0.5, 0.1])
    pairs, counts = build_pairs([g], augment_rate=0.0)
    t = [answer_text("Q?", c) for c in g.candidates]
    # by hand: 0>1, 0>2, 0>3, 1>3, 2>3; the tie 1=2 gives nothing
    assert {(p.better, p.worse) for p in pairs} == {
        (t[0], t[1]), (t[0], t[2]), (t[0], t[3]), (t[1], t[3]), (t[2], t[3])}
    assert len(pairs) == 5 and counts["ties"] == 1 and counts["annotation"] == 5
    assert all(p.origin == "annotation" and p.group == "g" for p in pairs)


def test_rankings_mean_lower_is_better():
    by_score, _ = build_pairs([_answers([0.9, 0.5, 0.1])], augment_rate=0.0)
    by_rank, _ = build_pairs([_answers([1, 2, 3], by="rank")], augment_rate=0.0)
    assert {(p.better, p.worse) for p in by_rank} == {(p.better, p.worse) for p in by_score}


def test_same_text_with_different_scores_gives_no_pair():
    pairs, counts = build_pairs([_answers([0.9, 0.2], texts=["same words", "same words"])],
                                augment_rate=0.0)
    assert pairs == [] and counts["same_text"] == 1


def test_rm_texts():
    assert answer_text("<image>\nHow many?", " Two. ") == "Question: How many?\nAnswer: Two."
    assert question_text(["What is it?\n<image>", "<image>\nWhere?"]) == "What is it?\nWhere?"


def test_augmentation_rate_is_honoured_and_seeded():
    rng = random.Random(5)
    words = ["red", "green", "blue", "small", "large", "circle", "star", "ring", "square", "cross"]
    groups = [_answers([0.8, 0.4], texts=[" ".join(rng.sample(words, 6)),
                                          " ".join(rng.sample(words, 5))])
              for _ in range(1000)]
    n_cand = 2000
    none, c0 = build_pairs(groups, augment_rate=0.0, seed=1)
    assert c0["augmented"] == 0 and all(p.origin == "annotation" for p in none)
    every, c1 = build_pairs(groups, augment_rate=1.0, seed=1)
    assert c1["augmented"] == n_cand  # every candidate is multi-word: always corruptible
    pairs, c = build_pairs(groups, augment_rate=0.25, seed=1)
    aug = [p for p in pairs if p.origin != "annotation"]
    # binomial(2000, 0.25): mean 500, sd ~19.4; 4 sd either side
    assert abs(len(aug) - 500) < 78 and c["augmented"] == len(aug)
    assert set(Counter(p.origin for p in aug)) == {"shuffle", "crop"}
    again, _ = build_pairs(groups, augment_rate=0.25, seed=1)
    other, _ = build_pairs(groups, augment_rate=0.25, seed=2)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in pairs]
    assert [p.to_dict() for p in other] != [p.to_dict() for p in pairs]
    for p in aug:  # the better side is the candidate itself, the worse its corruption
        assert p.better != p.worse
        assert p.better.split("\nAnswer: ")[0] == p.worse.split("\nAnswer: ")[0]


def test_corruptions():
    rng = random.Random(0)
    text = "one two three four five six"
    for _ in range(50):
        crop, _ = corrupt_text(text, rng, "crop")
        kept = crop.split()
        assert 1 <= len(kept) < 6 and kept == [w for w in text.split() if w in kept]
        shuf, _ = corrupt_text(text, rng, "shuffle")
        assert shuf != text and sorted(shuf.split()) == sorted(text.split())
    assert corrupt_text("word", rng) is None  # cannot differ: not augmented
    qs = ["What is red?", "Where is it?"]
    dup, mode = corrupt_questions(qs, rng, "duplicate")
    assert mode == "duplicate" and len(dup) > 2 and set(dup) == set(qs)
    assert [q for q in dup if q in qs] == dup


def test_question_sets_get_duplication_among_corruptions():
    g = AnnotationGroup("q", "img.png", QUESTION,
                        [["What color is the star?", "Where is the ring?"],
                         ["Is there a cross here?"]], [0.9, 0.3])
    pairs, counts = build_pairs([g] * 200, augment_rate=1.0, seed=0)
    origins = Counter(p.origin for p in pairs)
    assert origins["annotation"] == 200 and counts["augmented"] == 400
    assert {"shuffle", "crop", "duplicate"} <= set(origins)


def test_split_is_by_group_and_holds_one_out():
    groups = [_answers([0.9, 0.1]) for _ in range(5)]
    for i, g in enumerate(groups):
        g.id = f"g{i}"
    train, held = split_groups(groups, 0.1, seed=0)
    assert len(held) == 1 and len(train) == 4
    assert {g.id for g in train} | {g.id for g in held} == {g.id for g in groups}


# --------------------------------------------------------------------------- files


@pytest.fixture
def root(tmp_path, make_png):
    make_png(tmp_path / "img" / "a.png")
    make_png(tmp_path / "img" / "b.png")
    return tmp_path


def _write(path, rows, jsonl=True):
    text = "\n".join(json.dumps(r) for r in rows) + "\n" if jsonl else json.dumps(rows)
    path.write_text(text)
    return path


def test_reads_the_released_layouts(root):
    q = _write(root / "q.json", [{"id": "1", "image": "img/a.png",
                                  "questions": [["<image>\nWhat?"], ["Why?", "How?"]],
                                  "score": [0.5, 0.7]}], jsonl=False)
    a = _write(root / "a.json", [{"id": "2", "image": "img/b.png", "conversations": [
        {"from": "human", "value": "<image>\nQ1?"},
        {"from": "gpt", "value": ["x y", "y z", "z w"], "score": [0.1, 0.6, 0.6]},
        {"from": "human", "value": "Q2?"},
        {"from": "gpt", "value": ["p q", "q r"], "rank": [2, 1]}]}], jsonl=False)
    (gq,) = read_annotations(q)
    assert gq.kind == QUESTION and gq.candidates == [["<image>\nWhat?"], ["Why?", "How?"]]
    g1, g2 = read_annotations(a)
    assert (g1.id, g1.question, g1.by, g2.id, g2.by) == ("2#0", "<image>\nQ1?", "score", "2#1",
                                                         "rank")
    pairs, counts = build_pairs([g1, g2], augment_rate=0.0)
    assert counts["annotation"] == 3 and counts["ties"] == 1
    assert answer_text("Q2?", "q r") in {p.better for p in pairs}


def test_reads_the_world_oracle_layout(root):
    q = _write(root / "questions.jsonl", [{"id": "a-q", "image": "img/a.png",
                                           "category": "conversation", "candidates": [
                                               {"questions": ["A?", "B?"], "score": 0.2},
                                               {"questions": ["C?"], "score": 0.9}]}])
    (g,) = read_annotations(q)
    assert g.kind == QUESTION and g.values == [0.2, 0.9] and g.category == "conversation"


@pytest.mark.parametrize("row, field, reason", [
    ({"id": "x", "image": "img/a.png", "question": "Q?",
      "candidates": [{"answer": "a", "score": 0.5}, {"answer": "b", "score": 1.5}]},
     "candidates[1].score", "outside [0, 1]"),
    ({"id": "x", "image": "img/a.png", "question": "Q?",
      "candidates": [{"answer": "a", "score": 0.5}, {"score": 0.1}]},
     "candidates[1].answer", "missing"),
    ({"id": "x", "image": "img/a.png", "candidates": [{"answer": "a", "score": 0.5}]},
     "question", "non-empty question"),
    ({"id": "x", "image": "img/a.png", "questions": [["A?"], ["B?"]], "score": [0.1]},
     "questions", "2 candidates but 1 scores"),
    ({"id": "x", "image": "img/a.png", "questions": [["A?"], [""]], "score": [0.1, 0.2]},
     "questions[1][0]", "non-empty question"),
    ({"id": "x", "image": "img/missing.png", "questions": [["A?"]], "score": [0.1]},
     "image", "image file not found"),
    ({"id": "x", "image": "../a.png", "questions": [["A?"]], "score": [0.1]},
     "image", "escapes the image root"),
    ({"id": "x", "image": "img/a.png", "conversations": [
        {"from": "human", "value": "Q?"}, {"from": "gpt", "value": ["a", "b"],
                                           "rank": [1, 0]}]},
     "conversations[1].rank[1]", "positive integer"),
    ({"id": "x", "image": "img/a.png", "questions": [["A?"]], "score": ["high"]},
     "score[0]", "expected a number"),
])
def test_malformed_rows_name_file_record_and_field(root, row, field, reason):
    good = {"id": "ok", "image": "img/a.png", "questions": [["A?"], ["B?"]], "score": [0.1, 0.2]}
    kind = detect_kind(row)
    path = _write(root / "bad.jsonl", [good if kind == QUESTION else
                                       {"id": "ok", "image": "img/a.png", "question": "Q?",
                                        "candidates": [{"answer": "a", "score": 0.1}]}, row])
    with pytest.raises(RecordError) as e:
        read_annotations(path, kind=kind)
    msg = str(e.value)
    assert str(path) in msg and "record 1" in msg and "id 'x'" in msg
    assert e.value.field == field and reason in msg


def test_broken_json_and_empty_files(root):
    path = root / "broken.jsonl"
    path.write_text('{"id": "a", "image": "img/a.png", "questions": [["A?"]], "score": [0.1]}\n'
                    '{"id": "b", "image": \n')
    with pytest.raises(RecordError, match=r"broken.jsonl, record 1, id 'b': malformed JSON"):
        read_annotations(path)
    (root / "empty.jsonl").write_text("\n")
    with pytest.raises(DataFileError, match="no annotation rows"):
        read_annotations(root / "empty.jsonl")
    mixed = _write(root / "mixed.jsonl", [
        {"id": "a", "image": "img/a.png", "questions": [["A?"]], "score": [0.1]},
        {"id": "b", "image": "img/a.png", "question": "Q?",
         "candidates": [{"answer": "a", "score": 0.1}]}])
    with pytest.raises(RecordError, match="record 1.*answer row in a file of question annotations"):
        read_annotations(mixed)


# --------------------------------------------------------------------------- fixed held-out set


def _answer_rows(ids_images):
    return [{"id": i, "image": im, "question": "Q?",
             "candidates": [{"answer": "good one", "score": 0.9}, {"answer": "bad", "score": 0.1}]}
            for i, im in ids_images]


def test_eval_files_fix_the_held_out_set_and_drop_its_images_from_training(root):
    from mmalign.curate.reward_train import RewardTrainConfig, split_train_eval

    train = _write(root / "train.jsonl", _answer_rows(
        [("t0", "img/a.png"), ("t1", "img/b.png"), ("t2", "img/b.png"), ("t3", "img/a.png")]))
    held = _write(root / "held.jsonl", _answer_rows([("h0", "img/b.png")]))
    cfg = RewardTrainConfig(model="m", annotations=[str(train)], output_dir=str(root / "o"),
                            image_root=str(root), eval_annotations=[str(held)])
    tr, ev, roots = split_train_eval(cfg)
    # the two training groups on the held-out image go, whatever their ids
    assert [g.id for g in tr] == ["t0", "t3"] and [g.id for g in ev] == ["h0"]
    assert set(roots) == {"t0", "t3", "h0"}
    cfg.train_groups = 1
    tr, ev, _ = split_train_eval(cfg)
    assert [g.id for g in tr] == ["t0"] and [g.id for g in ev] == ["h0"]
    cfg.annotations = [str(held)]
    with pytest.raises(ValueError, match="no training groups left"):
        split_train_eval(cfg)


def test_train_groups_limit_keeps_the_random_held_out_set(root):
    from mmalign.curate.reward_train import RewardTrainConfig, split_train_eval

    rows = _answer_rows([(f"g{i}", "img/a.png" if i % 2 else "img/b.png") for i in range(20)])
    f = _write(root / "a.jsonl", rows)
    cfg = RewardTrainConfig(model="m", annotations=[str(f)], output_dir=str(root / "o"),
                            image_root=str(root), eval_fraction=0.2)
    full_tr, full_ev, _ = split_train_eval(cfg)
    cfg.train_groups = 5
    tr, ev, _ = split_train_eval(cfg)
    assert [g.id for g in ev] == [g.id for g in full_ev] and len(ev) == 4
    assert [g.id for g in tr] == [g.id for g in full_tr[:5]]
    cfg.train_groups = 0
    with pytest.raises(ValueError, match="train_groups must be >= 1"):
        split_train_eval(cfg)


def test_a_held_out_id_on_another_training_image_is_refused(root):
    from mmalign.curate.reward_train import RewardTrainConfig, split_train_eval

    train = _write(root / "train.jsonl", _answer_rows([("x", "img/a.png")]))
    held = _write(root / "held.jsonl", _answer_rows([("x", "img/b.png")]))
    cfg = RewardTrainConfig(model="m", annotations=[str(train)], output_dir=str(root / "o"),
                            image_root=str(root), eval_annotations=[str(held)])
    with pytest.raises(ValueError, match="held-out id 'x' is also a training id"):
        split_train_eval(cfg)

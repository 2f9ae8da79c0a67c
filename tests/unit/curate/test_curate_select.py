"""Selection from stored scores: the cascade and plain modes on hand-made scores."""

from __future__ import annotations

import json

import pytest

from mmalign.curate.select import n_keep, run_select, select_cascade, select_top
from mmalign.records import RecordError, Sample, Turn


def rec(rid, image, category, questions, answers, q, a):
    turns = []
    for k, (qq, aa) in enumerate(zip(questions, answers, strict=True)):
        turns += [Turn("user", ("<image>\n" if k == 0 else "") + qq), Turn("assistant", aa)]
    return Sample(rid, [image], turns, category, meta={"scores": {"question": q, "answers": a}})


@pytest.fixture
def records():
    two = ["What color?", "How many?"]
    return [
        # conversation: image i1 has two candidate answerings of the same questions (K=2)
        rec("c1a", "i1.png", "conversation", two, ["A-red", "A-two"], 0.9, [0.1, 0.9]),
        rec("c1b", "i1.png", "conversation", two, ["B-red", "B-two"], 0.9, [0.8, 0.2]),
        rec("c2", "i2.png", "conversation", two, ["red", "two"], 0.8, [0.5, 0.5]),
        rec("c2x", "i2.png", "conversation", ["Where?"], ["left"], 0.3, [0.6]),
        rec("c3", "i3.png", "conversation", two, ["red", "two"], 0.2, [0.99, 0.99]),
        rec("c4", "i4.png", "conversation", two, ["red", "two"], 0.1, [0.0, 0.0]),
        rec("d1", "i1.png", "detail", ["Describe."], ["x"], 0.5, [0.9]),
        rec("d2", "i2.png", "detail", ["Describe."], ["y"], 0.6, [0.1]),
        rec("d3", "i3.png", "detail", ["Describe."], ["z"], 0.7, [0.2]),
    ]


def test_n_keep_floors_but_never_empties():
    assert [n_keep(n, 0.3) for n in (0, 1, 3, 10, 11, 158)] == [0, 1, 1, 3, 3, 47]
    assert n_keep(5, 0.0) == 0 and n_keep(5, 1.0) == 5
    with pytest.raises(ValueError):
        n_keep(5, 1.5)


def test_cascade_keeps_exact_ids(records):
    kept, report = select_cascade(records, alpha=0.5, beta=0.5)
    # conversation: images by best question score i1 .9, i2 .8 | i3, i4 dropped (c3's high
    # answer scores never count). Stage 2 over {i1 group, c2, c2x}: i1's best-of-2 per turn is
    # (0.8 from c1b, 0.9 from c1a) -> 0.85 > c2x 0.6 > c2 0.5; keep floor(3 * .5) = 1.
    # detail: floor(3 * .5) = 1 image (d3, question .7), then 1 of 1.
    assert [s.id for s in kept] == ["c1a", "d3"]
    best = kept[0]
    assert best.answers == ["B-red", "A-two"]
    assert best.meta["curate"] == {"question_score": 0.9, "answer_score": 0.85, "candidates": 2,
                                   "picked": ["c1b", "c1a"]}
    assert report["counts"] == {"in": 9, "out": 2}
    assert report["categories"]["conversation"] == {
        "records_in": 6, "instructions": 5, "images": 4, "images_kept": 2,
        "instructions_after_stage1": 3, "out": 1}
    kept_all, _ = select_cascade(records, alpha=0.5, beta=1.0)
    assert [s.id for s in kept_all] == ["c1a", "c2x", "c2", "d3"]


def test_cascade_defaults_are_the_papers(records):
    kept, report = select_cascade(records)
    assert (report["alpha"], report["beta"]) == (0.3, 0.3)
    assert [s.id for s in kept] == ["c1a", "d3"]


def test_plain_modes_read_stored_scores(records):
    by_answer, _ = select_top(records, key="answer", k=2, per_category=False)
    assert [s.id for s in by_answer] == ["c3", "d1"]  # 0.99, then 0.9 (d1) over 0.85 (i1)
    by_question, _ = select_top(records, key="question", k=1)
    assert [s.id for s in by_question] == ["c1a", "d3"]
    at_least, rep = select_top(records, key="answer", threshold=0.6)
    assert [s.id for s in at_least] == ["c3", "c1a", "c2x", "d1"]
    assert rep["counts"] == {"in": 9, "out": 4}
    share, _ = select_top(records, key="question", fraction=0.5, per_category=False)
    # 8 instructions overall, floor(8 * .5) = 4: question scores .9, .8, .7, .6
    assert [s.id for s in share] == ["c1a", "c2", "d3", "d2"]
    with pytest.raises(ValueError, match="exactly one"):
        select_top(records, k=1, threshold=0.5)


def test_run_select_writes_selection_and_counts(records, tmp_path):
    scored = tmp_path / "scored.jsonl"
    scored.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    manifest = run_select(tmp_path, tmp_path / "sel", alpha=0.5, beta=0.5)
    rows = [json.loads(x) for x in (tmp_path / "sel" / "selected.jsonl").open()]
    assert [r["id"] for r in rows] == ["c1a", "d3"]
    assert manifest["counts"] == {"in": 9, "out": 2}
    saved = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert saved["categories"]["detail"]["out"] == 1 and saved["mode"] == "cascade"


@pytest.mark.parametrize("meta, field", [
    ({}, "meta.scores"),
    ({"scores": {"answers": [0.1]}}, "meta.scores.question"),
    ({"scores": {"question": 0.1, "answers": []}}, "meta.scores.answers"),
    ({"scores": {"question": 0.1, "answers": ["x"]}}, "meta.scores.answers[0]"),
])
def test_records_without_scores_are_named(tmp_path, meta, field):
    good = rec("ok", "i.png", "detail", ["Q?"], ["A."], 0.5, [0.5]).to_dict()
    bad = good | {"id": "bad", "meta": meta}
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordError) as e:
        run_select(path, tmp_path / "sel")
    assert e.value.field == field
    assert f"{path}, record 1, id 'bad'" in str(e.value)


def test_copies_group_whatever_the_placeholder_position():
    a = rec("a", "i.png", "detail", ["Describe."], ["short"], 0.5, [0.2])
    b = rec("b", "i.png", "detail", ["Describe."], ["better"], 0.5, [0.7])
    b.turns[0] = Turn("user", "Describe.\n<image>")
    kept, report = select_cascade([a, b], alpha=1.0, beta=1.0)
    assert [s.id for s in kept] == ["a"] and kept[0].answers == ["better"]
    assert report["categories"]["detail"]["instructions"] == 1

"""Corpus scoring: scores beside the records, resume without rescoring, clear errors.

The scorers here are plain functions of the text (the reward model is exercised in the
integration tests); they count how many inputs they were asked to score.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from mmalign.curate.score import ResumeMismatchError, answer_inputs, question_input, score_corpus
from mmalign.records import RecordError, Sample, Turn


class CountingScorer:
    """A deterministic scorer that can be told to fail on its n-th call (an interruption)."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.items = 0
        self.fail_on_call = fail_on_call

    def __call__(self, items):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.items += len(items)
        return [int(hashlib.sha256(t.encode()).hexdigest()[:6], 16) / 2**24 for _, t in items]


@pytest.fixture
def corpus(tmp_path, make_png):
    for k in range(3):
        make_png(tmp_path / "img" / f"{k}.png")
    rows = []
    for i in range(23):
        rows.append({"id": f"r{i}", "image": f"img/{i % 3}.png", "conversations": [
            {"from": "human", "value": f"<image>\nQuestion {i}?"},
            {"from": "gpt", "value": f"Answer {i}."},
            {"from": "human", "value": "And then?"},
            {"from": "gpt", "value": f"Then {i}."}][: 2 if i % 2 else 4],
            "category": "conversation"})
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.open()]


def test_rm_inputs_of_a_record():
    s = Sample("x", ["a.png"], [Turn("user", "<image>\nWhat color?"), Turn("assistant", "Red."),
                                Turn("user", "How many?"), Turn("assistant", "Two.")])
    assert question_input(s) == "What color?\nHow many?"
    assert answer_inputs(s) == ["Question: What color?\nAnswer: Red.",
                                "Question: How many?\nAnswer: Two."]


def test_scores_are_stored_beside_records(corpus, tmp_path):
    q, a = CountingScorer(), CountingScorer()
    manifest = score_corpus(corpus, tmp_path / "out", q, a, batch_size=5)
    rows = _read(tmp_path / "out" / "scored.jsonl")
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(23)]
    assert manifest["counts"] == {"in": 23, "out": 23, "rejected": 0, "batches": 5}
    assert q.items == 23 and a.items == sum(1 if i % 2 else 2 for i in range(23))
    r0 = rows[0]
    assert [len(r["meta"]["scores"]["answers"]) for r in rows[:2]] == [2, 1]
    s0 = Sample.from_dict(r0)
    assert r0["meta"]["scores"]["question"] == round(q([([], question_input(s0))])[0], 6)
    # a rerun with the same inputs does nothing
    q2, a2 = CountingScorer(), CountingScorer()
    score_corpus(corpus, tmp_path / "out", q2, a2, batch_size=5)
    assert q2.calls == a2.calls == 0


def test_interrupted_run_resumes_without_rescoring(corpus, tmp_path):
    ref = tmp_path / "ref"
    score_corpus(corpus, ref, CountingScorer(), CountingScorer(), batch_size=4)
    out = tmp_path / "out"
    q = CountingScorer(fail_on_call=3)  # 2 batches done, the 3rd is interrupted
    with pytest.raises(KeyboardInterrupt):
        score_corpus(corpus, out, q, CountingScorer(), batch_size=4)
    assert not (out / "scored.jsonl").exists()
    assert json.loads((out / "progress.json").read_text())["consumed"] == 8
    q2, a2 = CountingScorer(), CountingScorer()
    manifest = score_corpus(corpus, out, q2, a2, batch_size=4)
    assert q2.items == 23 - 8  # nothing done before is scored again
    assert a2.items == sum(1 if i % 2 else 2 for i in range(8, 23))
    assert (out / "scored.jsonl").read_bytes() == (ref / "scored.jsonl").read_bytes()
    assert manifest["counts"]["out"] == 23 and not (out / "progress.json").exists()


def test_half_written_batch_is_dropped_on_resume(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        score_corpus(corpus, out, CountingScorer(fail_on_call=2), CountingScorer(), batch_size=4)
    # a crash between writing records and recording progress leaves extra lines behind
    with open(out / "scored.jsonl.partial", "a") as f:
        f.write('{"id": "r4", "half": tr')
    q = CountingScorer()
    score_corpus(corpus, out, q, CountingScorer(), batch_size=4)
    ids = [r["id"] for r in _read(out / "scored.jsonl")]
    assert ids == [f"r{i}" for i in range(23)] and q.items == 23 - 4


def test_resume_refuses_other_inputs(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        score_corpus(corpus, out, CountingScorer(fail_on_call=2), CountingScorer(), batch_size=4)
    with pytest.raises(ResumeMismatchError, match="other inputs or models"):
        score_corpus(corpus, out, CountingScorer(), CountingScorer(), batch_size=4,
                     models={"question": "another-rm"})
    q = CountingScorer()
    score_corpus(corpus, out, q, CountingScorer(), batch_size=4, models={"question": "x"},
                 restart=True)
    assert q.items == 23


def test_malformed_records_stop_or_go_to_rejects(corpus, tmp_path):
    rows = json.loads(corpus.read_text())
    rows[5]["conversations"][1]["value"] = ""
    rows[9]["image"] = "img/missing.png"
    corpus.write_text(json.dumps(rows))
    with pytest.raises(RecordError) as e:
        score_corpus(corpus, tmp_path / "stop", CountingScorer(), CountingScorer())
    assert "corpus.json, record 5, id 'r5'" in str(e.value)
    assert e.value.field == "conversations[1].value"
    manifest = score_corpus(corpus, tmp_path / "skip", CountingScorer(), CountingScorer(),
                            on_error="skip")
    assert manifest["counts"] == {"in": 23, "out": 21, "rejected": 2, "batches": 1}
    rejects = _read(tmp_path / "skip" / "rejects.jsonl")
    assert [(r["error"]["id"], r["error"]["field"]) for r in rejects] == [
        ("r5", "conversations[1].value"), ("r9", "images[0]")]
    assert "image file not found" in rejects[1]["error"]["reason"]

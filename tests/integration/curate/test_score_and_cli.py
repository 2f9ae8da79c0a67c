"""Scoring with real reward models (interrupted and resumed), and the whole curate CLI."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
from typer.testing import CliRunner

from mmalign.curate.cli import curate_app
from mmalign.curate.score import rm_scorer, score_corpus
from mmalign.io.formats import read_records, write_records
from mmalign.models.reward import VLMRewardModel


class Counted:
    """Wraps a scorer; counts scored inputs; raises KeyboardInterrupt on call `stop_at`."""

    def __init__(self, scorer, stop_at=None):
        self.scorer, self.stop_at, self.calls, self.items = scorer, stop_at, 0, 0

    def __call__(self, items):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.items += len(items)
        return self.scorer(items)


@pytest.fixture(scope="module")
def small_corpus(tiny_world, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    write_records(path, read_records(tiny_world / "corpus.json")[:20], "jsonl")
    return path


def test_interrupted_scoring_resumes_without_rescoring(tiny_model, tiny_world, small_corpus,
                                                       tmp_path):
    rm = VLMRewardModel.from_backbone(tiny_model, seed=0)
    scorer = rm_scorer(rm, batch_size=8)
    out = tmp_path / "score"
    first = Counted(scorer, stop_at=3)  # batches 1 and 2 (of 5 records each) finish
    with pytest.raises(KeyboardInterrupt):
        score_corpus(small_corpus, out, first, scorer, image_root=tiny_world, batch_size=5)
    assert first.items == 10
    resumed_q, resumed_a = Counted(scorer), Counted(scorer)
    manifest = score_corpus(small_corpus, out, resumed_q, resumed_a, image_root=tiny_world,
                            batch_size=5)
    assert resumed_q.items == 10 and resumed_q.calls == 2  # only the last two batches
    assert manifest["counts"] == {"in": 20, "out": 20, "rejected": 0, "batches": 4}
    fresh = score_corpus(small_corpus, tmp_path / "fresh", scorer, scorer,
                         image_root=tiny_world, batch_size=5)
    assert fresh["counts"]["out"] == 20
    got = [json.loads(x)["meta"]["scores"] for x in (out / "scored.jsonl").open()]
    want = [json.loads(x)["meta"]["scores"] for x in (tmp_path / "fresh" / "scored.jsonl").open()]
    assert got == want


def _ok(res):
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_curate_cli_end_to_end(tiny_model, tiny_world, small_corpus, tmp_path):
    run = CliRunner()
    rms = {}
    # the answer RM on a fixed held-out file (its first two groups) and three training groups,
    # with the implicit readout (scored below like any other reward model)
    held = tmp_path / "held.jsonl"
    held.write_text("".join((tiny_world / "annotations" / "answers.jsonl").open().readlines()[:2]))
    split = {"question": ["--eval-fraction", "0.2"],
             "answer": ["--eval-annotations", str(held), "--train-groups", "3",
                        "--layout", "turns", "--readout", "implicit", "--beta", "0.3"]}
    for kind in ("question", "answer"):
        out = _ok(run.invoke(curate_app, [
            "reward", "--model", str(tiny_model), "--annotations",
            str(tiny_world / "annotations" / f"{kind}s.jsonl"), "--image-root", str(tiny_world),
            "--out", str(tmp_path / f"rm_{kind}"), "--max-steps", "2", "--batch-size", "4",
            "--lr", "1e-3", *split[kind]]))
        assert f"{kind} reward model" in out and "held-out pairwise accuracy" in out
        report = json.loads((tmp_path / f"rm_{kind}" / "report.json").read_text())
        assert 0 <= report["eval_pairwise_accuracy"] <= 1
        if kind == "answer":
            assert report["groups"] == {"train": 3, "eval": 2}
            assert report["readout"] == "implicit"
        rms[kind] = tmp_path / f"rm_{kind}" / "final"

    out = _ok(run.invoke(curate_app, [
        "score", "--data", str(small_corpus), "--image-root", str(tiny_world),
        "--question-rm", str(rms["question"]), "--answer-rm", str(rms["answer"]),
        "--out", str(tmp_path / "score"), "--batch-size", "8"]))
    assert "scored 20 of 20 records" in out
    scored = [json.loads(x) for x in (tmp_path / "score" / "scored.jsonl").open()]
    assert all(len(r["meta"]["scores"]["answers"]) == sum(t["role"] == "assistant"
                                                          for t in r["turns"]) for r in scored)

    out = _ok(run.invoke(curate_app, ["select", "--scored", str(tmp_path / "score"),
                                      "--out", str(tmp_path / "select"), "--alpha", "0.5",
                                      "--beta", "0.5"]))
    selected = read_records(tmp_path / "select" / "selected.jsonl")
    manifest = json.loads((tmp_path / "select" / "manifest.json").read_text())
    assert f"selected {len(selected)} of 20 records" in out
    assert manifest["counts"] == {"in": 20, "out": len(selected)}
    assert 0 < len(selected) < 20
    assert sum(c["out"] for c in manifest["categories"].values()) == len(selected)
    top = _ok(run.invoke(curate_app, ["select", "--scored", str(tmp_path / "score"), "--out",
                                      str(tmp_path / "top"), "--top-k", "2", "--global"]))
    assert "selected 2 of 20 records" in top

    out = _ok(run.invoke(curate_app, [
        "rewrite", "--data", str(tmp_path / "select" / "selected.jsonl"), "--model",
        str(tiny_model), "--world", str(tiny_world), "--out", str(tmp_path / "rewrite"),
        "--max-new-tokens", "8", "--limit", "2"]))
    rw = json.loads((tmp_path / "rewrite" / "manifest.json").read_text())
    c = rw["counts"]
    assert c["records"] == 2 and c["rewritten"] + c["kept"] + c["rejected"] == c["answers"]
    assert f"{c['answers']} answers: {c['rewritten']} rewritten" in out
    assert rw["guard"] == "scene" and rw["scene_fallbacks"] == 0
    data = resources.files("mmalign").joinpath("prompts", "rewrite_v1.txt").read_bytes()
    assert rw["prompts"]["rewrite_v1"] == hashlib.sha256(data).hexdigest()
    ppl = rw["perplexity"]
    assert ppl["before"]["tokens"] > 0 and ppl["before"]["perplexity"] > 1
    rewritten = read_records(tmp_path / "rewrite" / "rewritten.jsonl")
    assert [r.id for r in rewritten] == [r.id for r in selected[:2]]


def test_cli_errors_name_the_file_and_record(tiny_model, tiny_world, tmp_path):
    bad = tmp_path / "ann.jsonl"
    bad.write_text(json.dumps({"id": "g1", "image": "images/annotation/a000000.png",
                               "question": "Q?", "candidates": [{"answer": "a", "score": 2}]})
                   + "\n")
    res = CliRunner().invoke(curate_app, ["reward", "--model", str(tiny_model), "--annotations",
                                          str(bad), "--image-root", str(tiny_world), "--out",
                                          str(tmp_path / "rm")])
    assert res.exit_code == 2
    assert f"{bad}, record 0, id 'g1', field 'candidates[0].score'" in res.output
    res = CliRunner().invoke(curate_app, ["select", "--scored", str(tiny_world / "corpus.json"),
                                          "--out", str(tmp_path / "sel")])
    assert res.exit_code == 2 and "field 'meta.scores'" in res.output
    res = CliRunner().invoke(curate_app, [
        "reward", "--model", str(tiny_model), "--annotations",
        str(tiny_world / "annotations" / "answers.jsonl"), "--image-root", str(tiny_world),
        "--out", str(tmp_path / "rm0"), "--train-groups", "0"])
    assert res.exit_code == 2 and "train_groups must be >= 1, got 0" in res.output

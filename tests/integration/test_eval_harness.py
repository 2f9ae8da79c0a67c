"""`evaluate` end to end on a small world, with a scripted generator whose scores are known.

The generator reads only what a model sees (the image path and the prompt) and answers from
the scene graph for some items and wrongly for others, so every metric can be worked out from
the world's files with plain counting in the test.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from mmalign.backends.base import Generator, GenRequest
from mmalign.eval.mc import INSTRUCTION
from mmalign.eval.run import (
    ResumeMismatchError,
    evaluate,
    load_predictions,
    metrics_from_predictions,
)
from mmalign.eval.tasks import UnknownTaskError
from mmalign.world.bench import CHAIR_PROMPT
from mmalign.world.make import WorldConfig, make_world
from mmalign.world.vocab import SHORT_ANSWER

BENCHES = ("pope", "vqa", "mc", "chair")
IMAGINED = {"circle", "star"}  # shapes the scripted model "sees" in every image
CAPTION = "A red circle and a small star."  # 7 words, mentions exactly IMAGINED


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalworld") / "w"
    make_world(out, WorldConfig(seed=5, pretrain_images=5, corpus_images=5,
                                annotation_images=5, bench_images=20), log=lambda _: None)
    return out


class Scripted:
    """POPE: "Yes." for shapes in the scene or in IMAGINED, "There is no X." otherwise (strict:
    unknown; lenient: no). VQA: the right colour for colour questions, "zebra" otherwise.
    MC: always "A". CHAIR: CAPTION."""

    def __init__(self, world: Path, name: str = "scripted"):
        self.name = name
        self.world = world.resolve()
        self.shapes = {r["image"]: {o["shape"] for o in r["objects"]}
                       for r in read_jsonl(world / "scenes.jsonl")}
        self.vqa = {(r["image"], r["question"]): r for r in read_jsonl(world / "bench/vqa.jsonl")}
        self.seen: list[GenRequest] = []

    def answer(self, req: GenRequest) -> str:
        assert len(req.images) == 1 and len(req.messages) == 1
        image = req.images[0].resolve().relative_to(self.world).as_posix()
        prompt = req.messages[0].content.removeprefix("<image>\n")
        if prompt == CHAIR_PROMPT:
            assert req.max_new_tokens >= 64
            return CAPTION
        assert req.max_new_tokens <= 16
        if prompt.endswith(INSTRUCTION):
            return "A"
        question, instruction = prompt.split("\n")
        assert instruction == SHORT_ANSWER
        m = re.fullmatch(r"Is there a (\w+) in the image\?", question)
        if m:
            shape = m.group(1)
            return "Yes." if shape in self.shapes[image] | IMAGINED else f"There is no {shape}."
        row = self.vqa[(image, question)]
        return f"{row['answer'].capitalize()}." if row["type"] == "color" else "zebra"

    def generate(self, requests: list[GenRequest]) -> list[str]:
        self.seen += requests
        return [self.answer(r) for r in requests]


class Failing(Scripted):
    """Raises on the call that would take it past `budget` requests (that batch is lost)."""

    def __init__(self, world: Path, budget: int):
        super().__init__(world)
        self.budget = budget

    def generate(self, requests: list[GenRequest]) -> list[str]:
        if len(self.seen) + len(requests) > self.budget:
            raise RuntimeError("GPU fell over")
        return super().generate(requests)


def expected_metrics(world: Path) -> dict:
    """The scripted model's scores, by counting rows of the world's benchmark files."""
    pope = read_jsonl(world / "bench/pope.jsonl")
    out: dict = {"pope": {}}
    for split in ("random", "popular", "adversarial"):
        rows = [r for r in pope if r["split"] == split]
        n = len(rows)
        tp = sum(r["answer"] == "yes" for r in rows)  # every present shape gets "Yes."
        fp = sum(r["answer"] == "no" and r["object"] in IMAGINED for r in rows)
        other_no = sum(r["answer"] == "no" and r["object"] not in IMAGINED for r in rows)
        assert tp + fp + other_no == n and tp == n / 2  # POPE is balanced
        precision = tp / (tp + fp)
        f1 = 2 * precision / (precision + 1)  # recall 1: no gold "yes" is ever missed
        out["pope"][split] = {
            # lenient: "There is no X." -> no (right); strict: unknown (wrong)
            "lenient": {"accuracy": (n - fp) / n, "precision": precision, "recall": 1.0,
                        "f1": f1, "yes_ratio": (tp + fp) / n, "unknown_rate": 0.0},
            "strict": {"accuracy": tp / n, "precision": precision, "recall": 1.0, "f1": f1,
                       "yes_ratio": (tp + fp) / n, "unknown_rate": other_no / n}}
    vqa = read_jsonl(world / "bench/vqa.jsonl")
    out["vqa"] = sum(r["type"] == "color" for r in vqa) / len(vqa)
    mc = read_jsonl(world / "bench/mc.jsonl")
    # "A" is right only in the rotation that brings the answer to the front: never in all.
    out["mc"] = {"circular_accuracy": 0.0,
                 "single_pass_accuracy": sum(r["answer"] == 0 for r in mc) / len(mc),
                 "per_rotation_accuracy": len(mc) / sum(len(r["options"]) for r in mc),
                 "n_questions": len(mc)}
    chair = read_jsonl(world / "bench/chair.jsonl")
    out["chair"] = {
        "chair_i": sum(len(IMAGINED - set(r["objects"])) for r in chair) / (2 * len(chair)),
        "chair_s": sum(bool(IMAGINED - set(r["objects"])) for r in chair) / len(chair),
        "recall": (sum(len(IMAGINED & set(r["objects"])) for r in chair)
                   / sum(len(r["objects"]) for r in chair)),
        "mean_words": 7.0}
    return out


def strip_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "updated"}


def test_evaluate_scores_a_scripted_model_exactly(world, tmp_path):
    gen = Scripted(world)
    assert isinstance(gen, Generator)
    out = tmp_path / "eval"
    metrics = evaluate(gen, world, out, batch_size=7, progress=False)
    want = expected_metrics(world)
    got = metrics["benches"]

    for split, modes in want["pope"].items():
        for mode, values in modes.items():
            for key, value in values.items():
                assert got["pope"][mode][split][key] == pytest.approx(value), (split, mode, key)
    assert got["vqa"]["accuracy"] == pytest.approx(want["vqa"])
    assert got["vqa"]["by_type"]["color"]["accuracy"] == 1.0
    assert all(m["accuracy"] == 0.0 for t, m in got["vqa"]["by_type"].items() if t != "color")
    for key, value in want["mc"].items():
        assert got["mc"][key] == pytest.approx(value), key
    for key, value in want["chair"].items():
        assert got["chair"][key] == pytest.approx(value), key
    assert got["chair"]["skip_negated"] is True

    # files: one row per request, in benchmark order; metrics.json is what evaluate returned
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["model"] == "scripted" and set(metrics["tasks"]) == set(BENCHES)
    n_requests = 0
    for bench in BENCHES:
        rows = read_jsonl(out / f"{bench}.jsonl")
        n_requests += len(rows)
        assert metrics["tasks"][bench]["items"] == len(rows)
        for r in rows:
            assert {"id", "image", "prompt", "output", "parse", "correct", "model"} <= set(r)
        # the file alone gives the same metrics
        assert metrics_from_predictions(bench, rows) == got[bench]
    assert n_requests == len(gen.seen)
    pope = read_jsonl(out / "pope.jsonl")
    assert [r["id"] for r in pope] == [r["id"] for r in read_jsonl(world / "bench/pope.jsonl")]
    row = next(r for r in pope if r["output"].startswith("There is no"))
    assert row["parse"] == {"strict": None, "lenient": "no"}
    assert row["correct"] == {"strict": False, "lenient": True} and row["answer"] == "no"
    mc = read_jsonl(out / "mc.jsonl")
    assert mc[0]["id"].endswith("/r0") and mc[0]["parse"] == "A"
    assert {r["bench"] for r in (q.meta for q in gen.seen)} == set(BENCHES)


def test_limit_takes_whole_images(world, tmp_path):
    gen = Scripted(world)
    metrics = evaluate(gen, world, tmp_path / "e", limit=3, progress=False)
    for bench in BENCHES:
        rows = read_jsonl(tmp_path / "e" / f"{bench}.jsonl")
        images = sorted({r["image"] for r in rows})
        assert images == [f"images/bench/b{i:06d}.png" for i in range(3)]
        every = [r for r in read_jsonl(world / "bench" / f"{bench}.jsonl")
                 if r["image"] in images]
        per_request = (sum(len(r["options"]) for r in every) if bench == "mc" else len(every))
        assert len(rows) == per_request  # every row (and every rotation) of those images
    pope = read_jsonl(tmp_path / "e" / "pope.jsonl")
    for split in ("random", "popular", "adversarial"):
        answers = [r["answer"] for r in pope if r["split"] == split]
        assert answers.count("yes") == answers.count("no") > 0
    assert metrics["benches"]["mc"]["incomplete"] == 0
    assert metrics["tasks"]["pope"]["images"] == 3 and metrics["tasks"]["pope"]["limit"] == 3


def test_resume_generates_only_the_missing_items(world, tmp_path):
    full = tmp_path / "full"
    whole = evaluate(Scripted(world), world, full, batch_size=16, progress=False)
    total = sum(len(read_jsonl(full / f"{b}.jsonl")) for b in BENCHES)

    out = tmp_path / "resumed"
    # Batches of 16: all of POPE, one batch of VQA, then the next VQA batch raises.
    failing = Failing(world, budget=len(read_jsonl(world / "bench/pope.jsonl")) + 20)
    with pytest.raises(RuntimeError, match="GPU fell over"):
        evaluate(failing, world, out, batch_size=16, progress=False)
    assert not (out / "metrics.json").exists()
    first = {r["id"] for b in BENCHES if (out / f"{b}.jsonl").exists()
             for r in read_jsonl(out / f"{b}.jsonl")}
    assert len(first) == len(failing.seen) and 0 < len(first) < total
    assert len(read_jsonl(out / "vqa.jsonl")) == 16 and not (out / "mc.jsonl").exists()

    counting = Scripted(world)
    resumed = evaluate(counting, world, out, batch_size=16, progress=False)
    again = [q.meta["id"] for q in counting.seen]
    assert len(again) == total - len(first)
    assert not set(again) & first  # nothing generated twice
    assert strip_time(resumed) == strip_time(whole)
    for b in BENCHES:  # an interrupted run leaves the same files as an uninterrupted one
        assert (out / f"{b}.jsonl").read_bytes() == (full / f"{b}.jsonl").read_bytes()

    # a third run has nothing left to generate
    idle = Scripted(world)
    assert strip_time(evaluate(idle, world, out, progress=False)) == strip_time(whole)
    assert idle.seen == []


def test_resume_repairs_a_torn_last_line(world, tmp_path):
    out = tmp_path / "e"
    evaluate(Scripted(world), world, out, benches=["chair"], progress=False)
    path = out / "chair.jsonl"
    good = path.read_bytes()
    lines = good.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-5]) + b'{"id": "chair-b0000')  # crash mid-write
    assert len(load_predictions(path)) == len(lines) - 5
    gen = Scripted(world)
    evaluate(gen, world, out, benches=["chair"], progress=False)
    assert len(gen.seen) == 5
    assert path.read_bytes() == good


def test_resume_refuses_another_models_predictions(world, tmp_path):
    out = tmp_path / "e"
    evaluate(Scripted(world), world, out, benches=["chair"], limit=2, progress=False)
    with pytest.raises(ResumeMismatchError, match="model 'scripted', not 'other'"):
        evaluate(Scripted(world, name="other"), world, out, benches=["chair"], progress=False)
    rows = read_jsonl(out / "chair.jsonl")
    rows[0]["prompt"] = "Describe it."  # as if made by an older prompt version
    (out / "chair.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ResumeMismatchError, match="different prompt"):
        evaluate(Scripted(world), world, out, benches=["chair"], progress=False)


def test_metrics_json_keeps_benches_run_separately(world, tmp_path):
    out = tmp_path / "e"
    evaluate(Scripted(world), world, out, benches=["chair"], limit=2, progress=False)
    m = evaluate(Scripted(world), world, out, benches=["vqa"], limit=2, progress=False)
    assert set(m["benches"]) == {"chair", "vqa"}
    assert set(json.loads((out / "metrics.json").read_text())["benches"]) == {"chair", "vqa"}


def test_unknown_bench_fails_before_generating(world, tmp_path):
    gen = Scripted(world)
    with pytest.raises(UnknownTaskError, match="did you mean 'chair'"):
        evaluate(gen, world, tmp_path / "e", benches=("pope", "chiar"), progress=False)
    assert gen.seen == [] and not (tmp_path / "e").exists()


def test_progress_goes_to_stderr_with_or_without_tqdm(world, tmp_path, capsys, monkeypatch):
    evaluate(Scripted(world), world, tmp_path / "e", benches=["chair"], limit=2)
    captured = capsys.readouterr()
    assert captured.out == "" and "eval chair" in captured.err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    evaluate(Scripted(world), world, tmp_path / "f", benches=["chair"], limit=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0] == "[eval chair] 2 items, 0 already done"
    assert lines[1].startswith("[eval chair] 2/2 (") and lines[1].endswith(" items/s)")


# ---- metrics from a fixed, hand-written prediction file ------------------------------------

HAND_POPE = [
    # id, split, gold, output       strict / lenient parse
    ("p1", "random", "yes", "Yes."),            # yes / yes
    ("p2", "random", "no", "No."),              # no / no
    ("p3", "random", "yes", "I think not."),    # None / no
    ("p4", "random", "no", "Yes, a star."),     # yes / yes
    ("p5", "adversarial", "yes", "yes"),        # yes / yes
    ("p6", "adversarial", "no", "There is a star."),  # None / yes
]
HAND_VQA = [("v1", "color", "red", "Red"), ("v2", "count", "two", "2"),
            ("v3", "count", "three", "two"), ("v4", "position", "top left", "top-left")]
HAND_CHAIR = [("c1", ["circle", "star"], "A circle, a star and a ring."),
              ("c2", ["square"], "A large blue square. There is no circle.")]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_metrics_from_a_hand_written_prediction_file(tmp_path):
    pope = _write(tmp_path / "pope.jsonl", [
        {"id": i, "image": "x.png", "split": s, "answer": a, "output": o}
        for i, s, a, o in HAND_POPE])
    m = metrics_from_predictions("pope", load_predictions(pope))
    # random, lenient: preds y n n y vs gold y n y n -> TP 1, FP 1, FN 1, correct 2/4
    r = m["lenient"]["random"]
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"]) == (0.5, 0.5, 0.5, 0.5)
    # random, strict: y n None y -> TP 1, FP 1, FN 1 (None is a miss), correct 2/4
    r = m["strict"]["random"]
    assert (r["accuracy"], r["f1"], r["yes_ratio"], r["unknown_rate"]) == (0.5, 0.5, 0.5, 0.25)
    # adversarial: lenient y y -> TP 1, FP 1: acc .5, P .5, R 1, F1 2/3
    a = m["lenient"]["adversarial"]
    assert (a["accuracy"], a["precision"], a["recall"]) == (0.5, 0.5, 1.0)
    assert a["f1"] == pytest.approx(2 / 3)
    # adversarial strict: y None -> TP 1, FP 0, FN 0: acc .5, P 1, R 1, F1 1, unknown .5
    a = m["strict"]["adversarial"]
    assert (a["accuracy"], a["precision"], a["recall"], a["f1"], a["unknown_rate"]) == (
        0.5, 1.0, 1.0, 1.0, 0.5)
    # overall lenient: y n n y y y vs y n y n y n -> TP 2, FP 2, FN 1; correct 3/6
    o = m["lenient"]["overall"]
    assert o["accuracy"] == 0.5 and o["precision"] == 0.5
    assert o["recall"] == pytest.approx(2 / 3) and o["f1"] == pytest.approx(4 / 7)

    vqa = _write(tmp_path / "vqa.jsonl", [
        {"id": i, "image": "x.png", "type": t, "answer": a, "output": o}
        for i, t, a, o in HAND_VQA])
    m = metrics_from_predictions("vqa", load_predictions(vqa))
    # right: v1 (case), v2 (digit), v4 (hyphen); wrong: v3
    assert m["accuracy"] == 0.75 and m["by_type"]["count"] == {"n": 2, "accuracy": 0.5}

    mc_rows = []
    for k, (options, answer, output) in enumerate([
            (["red", "blue"], 1, "B"), (["blue", "red"], 0, "A"),   # q1: both right
            (["one", "two"], 0, "A"), (["two", "one"], 1, "two")]):  # q2: 2nd wrong
        mc_rows.append({"id": f"q{k // 2 + 1}/r{k % 2}", "question_id": f"q{k // 2 + 1}",
                        "rotation": k % 2, "n_rotations": 2, "type": "t",
                        "options": options, "answer": answer, "output": output})
    m = metrics_from_predictions("mc", load_predictions(_write(tmp_path / "mc.jsonl", mc_rows)))
    # circular: q1 only -> 1/2; single pass (rotation 0): q1, q2 right -> 1; per rotation 3/4
    assert (m["circular_accuracy"], m["single_pass_accuracy"], m["per_rotation_accuracy"]) == (
        0.5, 1.0, 0.75)

    chair = _write(tmp_path / "chair.jsonl", [
        {"id": i, "image": "x.png", "objects": o, "output": t} for i, o, t in HAND_CHAIR])
    with chair.open("a") as f:
        f.write('{"id": "c3", "objects": ["st')  # a torn last line is ignored
    m = metrics_from_predictions("chair", load_predictions(chair))
    # c1 mentions circle, star, ring (ring absent); c2 mentions square (circle negated)
    assert m["n"] == 2 and (m["mentions"], m["hallucinated_mentions"]) == (4, 1)
    assert m["chair_i"] == 0.25 and m["chair_s"] == 0.5   # 1/4; 1 of 2 captions
    assert m["recall"] == 1.0                              # 3 of 3 true shapes named
    assert m["mean_words"] == 7.5                          # (7 + 8) / 2

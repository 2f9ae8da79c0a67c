"""sample -> judge -> pairs through the command functions, mounted the way the root app mounts
them (`mmalign pairs sample`, `mmalign judge`, `mmalign pairs rated`), on the tiny world."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from mmalign.backends.cli import judge_command
from mmalign.backends.hf import HFGenerator
from mmalign.backends.openai import OpenAIGenerator
from mmalign.io.formats import read_records
from mmalign.io.journal import read_journal
from mmalign.pairs.rated_cli import rated_command, sample_command
from mmalign.pairs.sample import SampleConfig, sample_answers
from mmalign.records import PreferencePair
from mmalign.serve import ServerThread, create_app

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    pairs = typer.Typer()
    pairs.command("sample")(sample_command)
    pairs.command("rated")(rated_command)
    root.add_typer(pairs, name="pairs")
    root.command("judge")(judge_command)
    return root


def run(app, args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{"):])


def test_sample_is_batched_and_resumable(app, tiny_model, tiny_world, tmp_path):
    out = tmp_path / "samples.jsonl"
    args = ["pairs", "sample", tiny_world / "corpus_clean.json", "--model", tiny_model,
            "--out", out, "--k", "2", "--limit", "3", "--max-new-tokens", "6",
            "--temperature", "1.0", "--seed", "5", "--device", "cpu", "--batch-size", "4"]
    counts = run(app, args)
    assert counts["items"] == 3 and counts["sampled_now"] == 3 and counts["answers"] == 6
    rows = read_journal(out)
    assert len(rows) == 3 and all(len(r["responses"]) == 2 for r in rows)
    first = rows[0]
    assert first["prompt"][-1]["role"] == "user" and first["reference"]
    assert first["images"][0].startswith("images/corpus/")
    assert first["params"] == {"k": 2, "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 6,
                               "seed": 5}
    assert first["model"] == str(tiny_model)
    # a multi-turn record gives one item per answer, keyed id#n
    assert rows[0]["id"].endswith("#0") and rows[1]["id"].endswith("#1")

    # rerun: nothing to do, file unchanged
    before = out.read_bytes()
    assert run(app, args)["sampled_now"] == 0
    assert out.read_bytes() == before
    # a run killed mid-write leaves half a line: it is cut off and that item sampled again
    lines = before.decode().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:25])
    assert run(app, args)["sampled_now"] == 1
    assert [r["id"] for r in read_journal(out)] == [r["id"] for r in rows]
    # other parameters: refused, not mixed
    res = runner.invoke(app, [str(a) for a in args[:-2]] + ["--batch-size", "4", "--k", "3"])
    assert res.exit_code == 2 and "holds samples from model" in res.output


def test_sample_through_serve_with_distinct_seeds_and_cache(hf_serve, tiny_world, tmp_path):
    url, _ = hf_serve
    cache = tmp_path / "c.sqlite"
    cfg = SampleConfig(k=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1)
    gen = OpenAIGenerator("tiny", url, api_key_env=None, cache=cache)
    src = tiny_world / "bench" / "openended.jsonl"
    # bench rows name images relative to the world folder, not to bench/: without the image
    # root every item is rejected, with a reason, before any request
    counts = sample_answers(gen, src, tmp_path / "none.jsonl", cfg, limit=2, progress=False)
    assert counts["items"] == 0 and counts["rejected"] > 0 and gen.stats["http_requests"] == 0
    reject = read_journal(tmp_path / "none.rejects.jsonl")[0]
    assert "image file not found" in reject["reason"] and reject["field"] == "images[0]"
    counts = sample_answers(gen, src, tmp_path / "s.jsonl", cfg, limit=2, progress=False,
                            image_root=tiny_world)
    assert counts["items"] == 2 and gen.stats["http_requests"] == 6
    rows = read_journal(tmp_path / "s.jsonl")
    assert rows[0]["prompt"][0]["content"].startswith("<image>\n")
    assert rows[0]["reference"] and rows[0]["category"] in ("conversation", "detail",
                                                            "reasoning")
    # three samples of one prompt are three draws (each request had its own seed)
    assert any(len(set(r["responses"])) > 1 for r in rows)
    again = OpenAIGenerator("tiny", url, api_key_env=None, cache=cache)
    sample_answers(again, src, tmp_path / "s2.jsonl", cfg, limit=2, progress=False,
                   image_root=tiny_world)
    assert again.stats["http_requests"] == 0 and again.stats["cache_hits"] == 6
    assert read_journal(tmp_path / "s2.jsonl") == rows


@pytest.fixture(scope="module")
def hf_serve(tiny_model):
    gen = HFGenerator.from_pretrained(tiny_model, device="cpu")
    with ServerThread(create_app(gen, model_name="tiny")) as srv:
        yield srv.url + "/v1", gen


def hand_groups(world, path):
    """Groups from the world's clean corpus: the true answer and answers made wrong by hand."""
    rows = [r for r in json.loads((world / "corpus_clean.json").read_text())
            if r["category"] == "conversation"][:4]
    with open(path, "w") as f:
        for r in rows:
            q, a = r["conversations"][0]["value"], r["conversations"][1]["value"]
            wrong = "There is a large purple hexagon and a small orange ring in the image."
            f.write(json.dumps({"id": r["id"], "images": [r["image"]],
                                "prompt": [{"role": "user", "content": q}], "reference": a,
                                "category": "conversation",
                                "responses": [wrong, a, "Maybe"]}) + "\n")
    return rows


def test_oracle_judge_then_rated_pairs(app, tiny_world, tmp_path):
    samples = tmp_path / "hand.jsonl"
    rows = hand_groups(tiny_world, samples)
    ratings = tmp_path / "ratings.jsonl"
    oracle = ["--backend", "oracle", "--world", tiny_world, "--image-root", tiny_world]
    counts = run(app, ["judge", samples, *oracle, "--out", ratings])
    assert counts["groups"] == 4 and counts["ratings"] == 12 and counts["failed"] == 0
    judged = read_journal(ratings)
    for g in judged:
        wrong, right, _ = g["ratings"]
        assert right["scores"]["correctness"] == 4 and wrong["scores"]["correctness"] < 4
        assert right["judge"] == "oracle+ref" and len(right["prompt_hash"]) == 64
    pairs_path = tmp_path / "pairs.jsonl"
    report = run(app, ["pairs", "rated", ratings, "--out", pairs_path, "--best-of-k",
                       tmp_path / "best.jsonl"])
    pairs = read_records(pairs_path)
    assert report["pairs"] == len(pairs) >= 3 and report["best_of_k"] == 4
    truth = {r["id"]: r["conversations"][1]["value"] for r in rows}
    for p in pairs:
        assert isinstance(p, PreferencePair) and p.origin == "rated"
        assert p.chosen == truth[p.meta["group"]] and p.rejected != p.chosen
        assert p.scores["chosen"]["quality"] - p.scores["rejected"]["quality"] >= 2
    # a rerun of the judge resumes (nothing new) and a changed judge is refused
    assert run(app, ["judge", samples, *oracle, "--out", ratings])["rated_now"] == 0
    res = runner.invoke(app, [str(a) for a in ["judge", samples, *oracle, "--out", ratings,
                                               "--noise", "0.5"]])
    assert res.exit_code == 2 and "holds ratings by judge 'oracle+ref'" in res.output


def test_consistency_mode(app, tiny_world, tmp_path):
    samples = tmp_path / "hand.jsonl"
    hand_groups(tiny_world, samples)
    oracle = ["--backend", "oracle", "--world", tiny_world, "--image-root", tiny_world]
    exact = run(app, ["judge", samples, *oracle, "--out", tmp_path / "c0.json",
                      "--consistency", "4"])
    assert exact["n"] == 12 and exact["exact_all"] == 1.0
    noisy = run(app, ["judge", samples, *oracle, "--out", tmp_path / "c1.json",
                      "--consistency", "4", "--noise", "1.0"])
    assert noisy["n"] == 12 and noisy["exact_mean"] < 1.0
    assert 0.0 <= noisy["exact_mean"] <= noisy["within_1_mean"] <= 1.0
    assert json.loads((tmp_path / "c1.json").read_text()) == noisy


def test_hf_judge_backend_records_unusable_replies(app, tiny_model, tiny_world, tmp_path):
    samples = tmp_path / "hand.jsonl"
    hand_groups(tiny_world, samples)
    short = tmp_path / "short_v1.txt"
    short.write_text("Q: {question}\nA: {response}\nRate it as JSON.\n"
                     "=== re-ask ===\nInvalid ({error}). JSON only.")
    out = tmp_path / "ratings.jsonl"
    counts = run(app, ["judge", samples, "--backend", "hf", "--model", tiny_model,
                       "--device", "cpu", "--prompt", short, "--max-new-tokens", "8",
                       "--limit", "1", "--image-root", tiny_world, "--out", out])
    # the untrained tiny model writes no rating: every answer re-asked once, then recorded
    assert counts["ratings"] == 3 and counts["failed"] == 3
    assert counts["judge_stats"] == {"requests": 6, "reasks": 3, "failed": 3}
    [row] = read_journal(out)
    assert row["judge"] == f"{tiny_model}/short_v1+ref"
    assert all("after 2 tries" in r["error"] for r in row["ratings"])

"""The `openai` backend and the LLM judge against a real local HTTP server (scripted_server):
retries on 429/5xx/timeouts, the disk cache, a killed run resuming, malformed replies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmalign.backends.base import GenRequest
from mmalign.backends.judge import LLMJudge, judge_file
from mmalign.backends.openai import BackendConfigError, BackendUnavailable, OpenAIGenerator
from mmalign.io.journal import read_journal
from mmalign.records import RATING_ATTRIBUTES

from .scripted_server import ScriptedServer, expected_scores, user_texts

SRC = Path(__file__).resolve().parents[3] / "src"


def make_gen(url, cache=None, **kw):
    kw = {"backoff": 0.01, "max_backoff": 0.05, "api_key_env": None} | kw
    return OpenAIGenerator("judge-model", url, cache=cache, **kw)


@pytest.fixture
def image(make_png, tmp_path):
    return make_png(tmp_path / "images" / "a.png", size=(8, 8))


def judge_request(image, answer):
    prompt = f"Question:\nHow many?\n\nAnswer to rate:\n{answer}\n\nRate the answer."
    return GenRequest.single(image, prompt, max_new_tokens=64)


def test_survives_429_and_500_then_recovers(image, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k-123")
    plan = [(429, {"Retry-After": "1"}), (500, {}), (503, {})]
    with ScriptedServer(plan=plan) as srv:
        gen = make_gen(srv.url, api_key_env="JUDGE_KEY")
        text = gen.complete(judge_request(image, "There are two stars."))
    assert json.loads(text)["scores"] == expected_scores("There are two stars.")
    assert [r["status"] for r in srv.log] == [429, 500, 503, 200]
    assert gen.stats["retries"] == 3 and gen.stats["http_requests"] == 4
    # Retry-After: 1 was honoured (not the 0.01 s backoff) before the second request
    assert srv.log[1]["time"] - srv.log[0]["time"] >= 0.95
    assert srv.log[3]["time"] - srv.log[1]["time"] < 0.9  # 5xx used the short backoff
    assert all(r["auth"] == "Bearer k-123" for r in srv.log)
    body = srv.log[-1]["body"]
    assert body["model"] == "judge-model" and body["max_tokens"] == 64
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_gives_up_after_max_retries(image):
    with ScriptedServer(plan=[(500, {})] * 10) as srv:
        gen = make_gen(srv.url, max_retries=2)
        with pytest.raises(BackendUnavailable, match="3 attempts.*HTTP 500: scripted 500"):
            gen.complete(judge_request(image, "Two."))
    assert len(srv.log) == 3


def test_timeout_is_retried(image):
    with ScriptedServer(slow_first=1.5) as srv:
        gen = make_gen(srv.url, timeout=0.3)
        text = gen.complete(judge_request(image, "Two stars."))
    assert json.loads(text)["scores"]["helpfulness"] == 2
    assert gen.stats["retries"] == 1 and len(srv.log) == 2


def test_auth_failure_is_fatal_and_says_which_variable(image, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with ScriptedServer(plan=[(401, {})]) as srv:
        gen = make_gen(srv.url, api_key_env="NO_SUCH_KEY_VAR")
        with pytest.raises(BackendConfigError, match=r"\$NO_SUCH_KEY_VAR is not set"):
            gen.complete(judge_request(image, "Two."))
    assert len(srv.log) == 1  # not retried


def test_concurrent_requests_come_back_in_order(image):
    answers = [f"Answer number {w} here." for w in ("one", "two", "three", "four", "five")]
    with ScriptedServer() as srv:
        gen = make_gen(srv.url, concurrency=4)
        out = gen.generate([judge_request(image, a) for a in answers])
    assert [json.loads(t)["scores"] for t in out] == [expected_scores(a) for a in answers]


# --------------------------------------------------------------------------- judge runs


def write_groups(path: Path, groups: list[tuple[str, list[str]]]) -> Path:
    with open(path, "w") as f:
        for gid, responses in groups:
            f.write(json.dumps({"id": gid, "images": ["images/a.png"],
                                "prompt": [{"role": "user", "content": "<image>\nHow many?"}],
                                "reference": "Two.", "category": "conversation",
                                "responses": responses}) + "\n")
    return path


GROUPS = [("g1", ["Two stars.", "There are two stars here."]),
          ("g2", ["Three stars, wrong.", "Two."]),
          ("g3", ["Two stars in total.", "A star."]),
          ("g4", ["Maybe two", "Two stars are visible here."])]


def test_malformed_replies_are_reasked_then_recorded(image, tmp_path):
    samples = write_groups(tmp_path / "samples.jsonl", [
        ("m1", ["PROSE first, then fine.", "SEVEN for correctness.", "MISSING most scores.",
                "Two stars."])])
    with ScriptedServer() as srv:
        judge = LLMJudge(make_gen(srv.url, cache=tmp_path / "c.sqlite"))
        counts = judge_file(judge, samples, tmp_path / "ratings.jsonl", progress=False)
    [row] = read_journal(tmp_path / "ratings.jsonl")
    r = row["ratings"]
    assert r[0]["error"] is None and r[0]["scores"] == {
        k: float(v) for k, v in expected_scores("PROSE first, then fine.").items()}
    assert "correctness=7 is out of range" in r[1]["error"] and r[1]["scores"] == {}
    assert "missing scores for correctness" in r[2]["error"]
    assert r[3]["error"] is None and set(r[3]["scores"]) == set(RATING_ATTRIBUTES)
    assert counts["failed"] == 2 and counts["ratings"] == 4
    # 4 asks + 3 re-asks (one each for PROSE, SEVEN, MISSING); the re-ask carries the reason
    assert len(srv.log) == 7
    reasks = [user_texts(e["body"])[1] for e in srv.log if len(user_texts(e["body"])) == 2]
    assert any("no JSON object" in t for t in reasks)
    assert any("out of range" in t for t in reasks)
    assert all(x["judge"] == "openai:judge-model/judge_v1+ref" for x in r)
    assert len({x["prompt_hash"] for x in r}) == 1


def test_rerun_costs_nothing(image, tmp_path):
    samples = write_groups(tmp_path / "samples.jsonl", GROUPS)
    cache = tmp_path / "cache.sqlite"
    with ScriptedServer() as srv:
        judge_file(LLMJudge(make_gen(srv.url, cache=cache)), samples, tmp_path / "r1.jsonl",
                   progress=False)
        first = len(srv.log)
        # A fresh output file and a fresh backend: every answer comes from the disk cache.
        gen = make_gen(srv.url, cache=cache)
        judge_file(LLMJudge(gen), samples, tmp_path / "r2.jsonl", progress=False)
    assert first == 8 and len(srv.log) == 8
    assert gen.stats["cache_hits"] == 8 and gen.stats["http_requests"] == 0
    assert read_journal(tmp_path / "r1.jsonl") == read_journal(tmp_path / "r2.jsonl")


def test_killed_run_resumes_without_repeating_done_requests(image, tmp_path):
    samples = write_groups(tmp_path / "samples.jsonl", GROUPS)
    out, cache = tmp_path / "ratings.jsonl", tmp_path / "cache.sqlite"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from mmalign.backends.judge import LLMJudge, judge_file
        from mmalign.backends.openai import OpenAIGenerator
        gen = OpenAIGenerator("judge-model", sys.argv[1], cache={str(cache)!r},
                              concurrency=1, api_key_env=None, max_retries=0)
        judge_file(LLMJudge(gen), {str(samples)!r}, {str(out)!r}, batch_size=1,
                   progress=False)
    """)
    with ScriptedServer(hang_after=3) as srv:
        proc = subprocess.Popen([sys.executable, "-c", script, srv.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert srv.hung.wait(timeout=120), proc.stderr.read().decode()[-2000:]
        finally:
            proc.kill()  # SIGKILL: no cleanup runs in the judge
            proc.wait(timeout=30)
        done_before = srv.ok_hashes()
        assert len(done_before) == 3
        # group g1 (2 answers) was written; g2's first answer is only in the cache
        assert [r["id"] for r in read_journal(out)] == ["g1"]

        srv.reset(hang_after=None)
        gen = make_gen(srv.url, cache=cache, concurrency=1)
        counts = judge_file(LLMJudge(gen), samples, out, batch_size=1, progress=False)
        new = [e["hash"] for e in srv.log]
    assert len(new) == 8 - 3  # only the requests that never completed
    assert not set(new) & done_before
    assert gen.stats["cache_hits"] == 1  # g2's first answer
    assert counts == counts | {"groups": 4, "rated_now": 3, "failed": 0, "ratings": 8}
    rows = read_journal(out)
    assert [r["id"] for r in rows] == ["g1", "g2", "g3", "g4"]
    for row in rows:
        for rating, answer in zip(row["ratings"], row["responses"], strict=True):
            assert rating["scores"] == {k: float(v) for k, v in expected_scores(answer).items()}


def test_judge_command_with_openai_backend(image, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from mmalign.backends.cli import judge_command

    app = typer.Typer()
    app.command("judge")(judge_command)
    app.command("unused")(lambda: None)  # two commands, so "judge" is a subcommand as mounted
    samples = write_groups(tmp_path / "samples.jsonl", GROUPS[:2])
    out = tmp_path / "ratings.jsonl"
    monkeypatch.setenv("MY_JUDGE_KEY", "secret-1")
    with ScriptedServer() as srv:
        args = ["judge", str(samples), "--backend", "openai", "--model", "judge-model",
                "--base-url", srv.url, "--api-key-env", "MY_JUDGE_KEY", "--out", str(out)]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        first = json.loads(res.stdout)
        out.unlink()  # a fresh output: the default cache beside it answers everything
        res = CliRunner().invoke(app, args)
        again = json.loads(res.stdout)
    assert first["ratings"] == 4 and first["backend_stats"]["http_requests"] == 4
    assert again["backend_stats"] == again["backend_stats"] | {"http_requests": 0,
                                                               "cache_hits": 4}
    assert (tmp_path / "ratings.jsonl.cache.sqlite").exists()
    assert {e["auth"] for e in srv.log} == {"Bearer secret-1"}
    assert "secret-1" not in res.output

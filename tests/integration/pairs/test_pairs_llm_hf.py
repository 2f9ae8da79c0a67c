"""The LLM injector on a real local model: the tiny HF VLM through the `hf` backend.

The tiny model is random, so its replies are junk. What is under test is that junk is read
strictly, re-asked, and recorded as failed targets (with the raw reply) instead of crashing
the run or turning into pairs. The success path is covered with a scripted generator in
tests/unit/pairs/test_pairs_inject_llm.py.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mmalign.backends.hf import HFGenerator
from mmalign.io.formats import read_records
from mmalign.pairs.cli import pairs_app
from mmalign.pairs.inject import inject_hallucinations
from mmalign.pairs.inject_llm import LLMInjector, load_inject_prompt


def test_junk_from_a_local_model_is_recorded_as_failed(tiny_model, tiny_world):
    samples = read_records(tiny_world / "corpus_clean.json")[:2]
    gen = HFGenerator.from_pretrained(tiny_model, batch_size=2, device="cpu")
    result = inject_hallucinations(samples, LLMInjector(gen, max_new_tokens=12, retries=1))
    assert result.pairs == []
    assert result.counts["failed"] == result.counts["skipped"] == 2
    for row in result.skipped:
        assert row["code"] == "llm-unusable" and row["failed"] is True
        assert "after 2 attempt(s)" in row["reason"]
        assert isinstance(row["raw"], str)
        json.dumps(row)  # whatever bytes the model produced, the row stays writable


def test_cli_llm_injector_runs_through(tiny_model, tiny_world, tmp_path):
    out = tmp_path / "llm"
    r = CliRunner().invoke(pairs_app, [
        "inject", str(tiny_world / "corpus_clean.json"), "--out", str(out), "--injector", "llm",
        "--model", str(tiny_model), "--device", "cpu", "--limit", "2", "--max-new-tokens", "8",
        "--retries", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["failed"] == manifest["counts"]["answers"] == 2
    assert manifest["injector"]["prompt_sha256"] == load_inject_prompt().sha256
    assert manifest["injector"]["generator"] == str(tiny_model)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [x["code"] for x in rejects] == ["llm-unusable", "llm-unusable"]
    assert (out / "pairs.jsonl").read_text() == ""
    assert not (out / "lexicon.json").exists()

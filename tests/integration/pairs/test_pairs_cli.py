"""`pairs inject` / `pairs fit-lexicon` end to end on the tiny world, through Typer's runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmalign.io.formats import read_records
from mmalign.pairs.cli import pairs_app
from mmalign.pairs.lexicon import Lexicon

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(pairs_app, [str(a) for a in args], catch_exceptions=False)


def flat(text: str) -> str:
    """Output without Rich's box drawing and line wrapping."""
    return re.sub(r"[\s\u2500-\u257f]+", " ", text)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def injected(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inject") / "out"
    r = invoke("inject", tiny_world / "corpus_clean.json", "--out", out, "--turns", "all")
    assert r.exit_code == 0, r.output
    assert "out:" in r.output and "by type:" in r.output
    return out


def test_outputs_in_both_formats_with_counts(injected, tiny_world):
    manifest = json.loads((injected / "manifest.json").read_text())
    counts = manifest["counts"]
    pairs = read_records(injected / "pairs.jsonl")
    povid = read_records(injected / "pairs_povid.json", image_root=tiny_world)
    assert len(pairs) == counts["pairs"] > 0
    # POVID's file holds the same pairs (its `rejected_conversations` read back losslessly).
    assert [p.to_dict() for p in povid] == [p.to_dict() for p in pairs]
    raw = json.loads((injected / "pairs_povid.json").read_text())
    assert raw[0]["conversations"][:-1] == raw[0]["rejected_conversations"][:-1]
    assert raw[0]["conversations"][-1]["value"] != raw[0]["rejected_conversations"][-1]["value"]
    # Counts add up: every answer is a pair or a skipped row with its reason.
    skipped = rows(injected / "rejects.jsonl")
    assert counts["answers"] == counts["pairs"] + counts["skipped"] == len(pairs) + len(skipped)
    assert counts["records"] == len(read_records(tiny_world / "corpus_clean.json"))
    assert all(r["reason"] and r["id"] for r in skipped)
    assert sum(counts["by_type"].values()) >= counts["pairs"]
    # Chosen is the ground truth, and each pair says what it injected and where.
    truth = {s.id: s for s in read_records(tiny_world / "corpus_clean.json")}
    for p in pairs:
        src = truth[p.meta["source_id"]]
        assert p.chosen == src.answers[p.meta["turn"]] and p.origin == "injection"
        inj = p.meta["injection"]
        assert inj["lexicon_sha256"] == manifest["injector"]["lexicon_sha256"]
        for e in inj["edits"]:
            assert p.chosen[e["start"]:e["end"]] == e["original"]
            assert p.rejected[e["rejected_start"]:e["rejected_end"]] == e["replacement"]
    # The fitted lexicon that made them is saved, and hashes to what the pairs record.
    assert Lexicon.load(injected / "lexicon.json").sha256() == \
        manifest["injector"]["lexicon_sha256"]
    assert manifest["inputs"]["sha256"].startswith("sha256:")


def test_saved_lexicon_reproduces_the_run(injected, tiny_world, tmp_path):
    # fit-lexicon then inject --no-fit with it == inject with fitting: same pairs.
    lex = tmp_path / "lex.json"
    r = invoke("fit-lexicon", tiny_world / "corpus_clean.json", lex)
    assert r.exit_code == 0, r.output
    assert "learned objects" in r.output and "hexagon" in r.output
    out = tmp_path / "again"
    r = invoke("inject", tiny_world / "corpus_clean.json", "--out", out, "--turns", "all",
               "--lexicon", lex, "--no-fit")
    assert r.exit_code == 0, r.output
    assert (out / "pairs.jsonl").read_text() == (injected / "pairs.jsonl").read_text()


def test_types_edits_and_object_evidence_options(tiny_world, tmp_path):
    out = tmp_path / "o"
    r = invoke("inject", tiny_world / "corpus_clean.json", "--out", out, "--types",
               "color,size", "--edits", "2", "--object-evidence", "unmentioned")
    assert r.exit_code == 0, r.output
    pairs = read_records(out / "pairs.jsonl")
    assert pairs and all(set(p.meta["injection"]["types"]) <= {"color", "size"} for p in pairs)
    assert any(len(p.meta["injection"]["edits"]) == 2 for p in pairs)
    r = runner.invoke(pairs_app, ["inject", str(tiny_world / "corpus_clean.json"), "--out",
                                  str(out), "--types", "colour"])
    assert r.exit_code == 2 and "did you mean 'color'" in flat(r.output)


def broken_corpus(tiny_world: Path, tmp_path: Path) -> Path:
    data = json.loads((tiny_world / "corpus_clean.json").read_text())[:3]
    data[1]["conversations"][1]["value"] = 42  # not a string
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    return path


def test_malformed_input_names_file_record_and_field(tiny_world, tmp_path):
    src = broken_corpus(tiny_world, tmp_path)
    out = tmp_path / "out"
    r = runner.invoke(pairs_app, ["inject", str(src), "--out", str(out),
                                  "--image-root", str(tiny_world)])
    assert r.exit_code == 1, r.output
    assert "broken.json" in r.output and "record 1" in r.output
    assert "conversations[1]" in r.output
    assert not out.exists()  # stopped before writing anything
    r = invoke("inject", src, "--out", out, "--on-error", "skip", "--image-root", tiny_world)
    assert r.exit_code == 0, r.output
    bad = [x for x in rows(out / "rejects.jsonl") if x.get("field")]
    assert len(bad) == 1 and bad[0]["index"] == 1 and "conversations[1]" in bad[0]["field"]
    assert bad[0]["file"].endswith("broken.json") and bad[0]["raw"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records"] == 3 and manifest["counts"]["rejected"] == 1


def test_preference_pairs_are_not_input(injected, tmp_path):
    r = runner.invoke(pairs_app, ["inject", str(injected / "pairs.jsonl"), "--out",
                                  str(tmp_path / "x")])
    assert r.exit_code == 1 and "expected a ground-truth sample" in r.output
    assert "pairs.jsonl" in r.output and "record 0" in r.output

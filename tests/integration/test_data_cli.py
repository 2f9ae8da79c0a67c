"""`mmalign data convert` / `inspect` through the real command line (Typer's CliRunner)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmalign.io.formats import read_records, write_records

runner = CliRunner()


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _llava(rid: str, image=None, human="<image>\nWhat is it?", gpt="A red square.",
           conversations=None) -> dict:
    rec: dict = {"id": rid}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = conversations if conversations is not None else [
        {"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return rec


@pytest.fixture
def corpus(tmp_path, make_png):
    """A LLaVA corpus seeded with every kind of bad input between valid records.

    Returns (data folder, JSONL path, JSON-array path, expected rejects for each file).
    """
    data = tmp_path / "data"
    make_png(data / "img" / "ok.png")
    make_png(data / "img" / "big.png", size=(100, 100))  # 10 000 px > --max-image-pixels 5000
    (data / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    outside = make_png(tmp_path / "outside.png")  # exists, so refusing it is not "missing"

    good = [
        _llava("ok-1", "img/ok.png"),
        _llava("ok-2", human="No image here.", gpt="Fine."),
        _llava("ok-3", "img/ok.png", conversations=[
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\nColor?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Shape?"}, {"from": "gpt", "value": "Square."}]),
    ]
    # (record or raw bytes, expected (id, field, reason fragment) or None for a good record)
    seeded = [
        (good[0], None),
        (b'{"id": "broken", "conversations": [', ("broken", None, "malformed JSON")),
        (good[1], None),
        (_llava("missing", "img/nope.png"), ("missing", "images[0]", "not found")),
        (_llava("corrupt", "img/corrupt.png"), ("corrupt", "images[0]", "corrupt")),
        (_llava("escape", "../outside.png"), ("escape", "images[0]", "escapes the image root")),
        (_llava("absolute", str(outside)), ("absolute", "images[0]", "is absolute")),
        (_llava("placeholders", "img/ok.png", human="<image><image> two?"),
         ("placeholders", "conversations", "2 <image> placeholder(s) for 1 image(s)")),
        (_llava("empty", "img/ok.png", conversations=[]),
         ("empty", "conversations", "empty conversation")),
        (b'{"id": "latin1", "conversations": [{"from": "human", "value": "caf\xe9"}]}',
         ("latin1", None, "not valid UTF-8")),
        (_llava("oversized", "img/big.png"), ("oversized", "images[0]", "too large")),
        (good[2], None),
    ]
    jsonl = data / "corpus.jsonl"
    jsonl.write_bytes(b"\n".join(r if isinstance(r, bytes) else _line(r) for r, _ in seeded)
                      + b"\n")
    expected_jsonl = [(i, *exp) for i, (_, exp) in enumerate(seeded) if exp]

    # The array variant holds the per-record problems (in an array, bad JSON or bad bytes
    # are whole-file problems, tested separately).
    in_array = [(r, exp) for r, exp in seeded if not isinstance(r, bytes)]
    array = data / "corpus.json"
    array.write_text(json.dumps([r for r, _ in in_array], ensure_ascii=False, indent=1),
                     encoding="utf-8")
    expected_array = [(i, *exp) for i, (_, exp) in enumerate(in_array) if exp]
    return data, jsonl, array, expected_jsonl, expected_array


def _convert(app, *args: str):
    return runner.invoke(app, ["data", "convert", *args])


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_rejects(rows: list[dict], expected: list[tuple], file: Path) -> None:
    assert [(r["index"], r["id"], r["field"]) for r in rows] == [e[:3] for e in expected]
    for row, (_, _, _, fragment) in zip(rows, expected, strict=True):
        assert fragment in row["reason"], row
        assert row["file"] == str(file)
        assert row["raw"]


# --------------------------------------------------------------------------- --on-error skip


def test_skip_sets_bad_records_aside_jsonl(cli_app, corpus, tmp_path):
    data, jsonl, _, expected, _ = corpus
    out = tmp_path / "out" / "clean.jsonl"
    result = _convert(cli_app, str(jsonl), str(out), "--to", "jsonl", "--on-error", "skip",
                      "--max-image-pixels", "5000")
    assert result.exit_code == 0, result.output
    assert "in: 12  out: 3  rejected: 9" in result.stdout
    assert [s.id for s in read_records(out)] == ["ok-1", "ok-2", "ok-3"]

    rows = _rejects(out.parent / "rejects.jsonl")
    _assert_rejects(rows, expected, jsonl)
    lines = jsonl.read_bytes().split(b"\n")
    by_index = {r["index"]: r for r in rows}
    # Nothing is lost: the raw text is the original line, bytes included when not UTF-8.
    assert by_index[1]["raw"].encode("utf-8") == lines[1]
    assert base64.b64decode(by_index[9]["raw_base64"]) == lines[9]
    assert "JSONL line 10" in by_index[9]["reason"]


def test_skip_sets_bad_records_aside_json_array(cli_app, corpus, tmp_path):
    data, _, array, _, expected = corpus
    out = tmp_path / "out" / "clean.json"
    rejects = tmp_path / "elsewhere" / "bad.jsonl"
    result = _convert(cli_app, str(array), str(out), "--to", "llava", "--on-error", "skip",
                      "--max-image-pixels", "5000", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert "in: 10  out: 3  rejected: 7" in result.stdout
    assert [s.id for s in read_records(out)] == ["ok-1", "ok-2", "ok-3"]
    rows = _rejects(rejects)
    _assert_rejects(rows, expected, array)
    assert json.loads(rows[0]["raw"])["id"] == "missing"  # the element's own text
    assert not (out.parent / "rejects.jsonl").exists()


def test_image_checks_can_be_turned_off(cli_app, corpus, tmp_path):
    """Without --check-images only path containment is checked (no file is opened)."""
    _, _, array, _, _ = corpus
    out = tmp_path / "clean.jsonl"
    result = _convert(cli_app, str(array), str(out), "--to", "jsonl", "--on-error", "skip",
                      "--no-check-images")
    assert result.exit_code == 0, result.output
    assert "in: 10  out: 6  rejected: 4" in result.stdout
    reasons = {r["id"]: r["reason"] for r in _rejects(tmp_path / "rejects.jsonl")}
    assert set(reasons) == {"escape", "absolute", "placeholders", "empty"}


def test_image_root_override(cli_app, tmp_path, make_png):
    make_png(tmp_path / "pictures" / "a.png")
    src = tmp_path / "meta" / "d.json"
    src.parent.mkdir()
    src.write_text(json.dumps([_llava("a", "a.png")]), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert _convert(cli_app, str(src), str(out), "--to", "jsonl").exit_code == 1
    result = _convert(cli_app, str(src), str(out), "--to", "jsonl",
                      "--image-root", str(tmp_path / "pictures"))
    assert result.exit_code == 0, result.output
    assert "in: 1  out: 1  rejected: 0" in result.stdout


# --------------------------------------------------------------------------- --on-error stop


@pytest.mark.parametrize("to, name", [("jsonl", "clean.jsonl"), ("hf", "clean_ds"),
                                      ("parquet", "clean.parquet")])
def test_stop_fails_at_first_bad_record_and_writes_nothing(cli_app, corpus, tmp_path, to, name):
    _, jsonl, _, _, _ = corpus
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / name
    result = _convert(cli_app, str(jsonl), str(out), "--to", to)  # stop is the default
    assert result.exit_code == 1
    assert str(jsonl) in result.stderr
    assert "record 1" in result.stderr and "JSONL line 2" in result.stderr
    assert "id 'broken'" in result.stderr and "malformed JSON" in result.stderr
    assert "in: 2  out: 0  rejected: 1" in result.stdout
    assert list(out_dir.iterdir()) == []  # no output, no temp files, no rejects file


def test_stop_names_record_id_and_field(cli_app, corpus, tmp_path):
    _, _, array, _, _ = corpus
    out = tmp_path / "clean.jsonl"
    result = _convert(cli_app, str(array), str(out), "--to", "jsonl", "--on-error", "stop")
    assert result.exit_code == 1
    assert (f"{array}, record 2, id 'missing', field 'images[0]': image file not found"
            in result.stderr)
    assert "in: 3  out: 0  rejected: 1" in result.stdout
    assert not out.exists()


def test_non_utf8_json_array_is_a_whole_file_error(cli_app, tmp_path):
    src = tmp_path / "latin1.json"
    src.write_bytes(b'[{"id": "a", "conversations": [{"from": "human", "value": "caf\xe9"}]}]')
    out = tmp_path / "o.jsonl"
    for mode in ("skip", "stop"):
        result = _convert(cli_app, str(src), str(out), "--to", "jsonl", "--from", "llava",
                          "--on-error", mode)
        assert result.exit_code == 1
        assert f"{src}: not valid UTF-8 at byte offset 62 (line 1)" in result.stderr
        assert "in: 0  out: 0  rejected: 0" in result.stdout
        assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.json"]


def test_invalid_json_array_and_missing_file(cli_app, tmp_path):
    src = tmp_path / "bad.json"
    src.write_text('[\n  {"id": "a"}\n  {"id": "b"}\n]', encoding="utf-8")
    result = _convert(cli_app, str(src), str(tmp_path / "o.jsonl"), "--to", "jsonl",
                      "--from", "llava", "--on-error", "skip")
    assert result.exit_code == 1
    assert "expected ',' or ']' after array element 0 at line 3 column 3" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # no rejects either
    result = _convert(cli_app, str(tmp_path / "nope.jsonl"), str(tmp_path / "o.jsonl"),
                      "--to", "jsonl")
    assert result.exit_code == 1 and "nope.jsonl: no such file" in result.stderr


def test_pairs_cannot_go_to_llava(cli_app, pairs, tmp_path):
    src = tmp_path / "p.jsonl"
    write_records(src, pairs, "jsonl")
    out = tmp_path / "o" / "x.json"
    result = _convert(cli_app, str(src), str(out), "--to", "llava", "--on-error", "skip",
                      "--no-check-images")
    assert result.exit_code == 0
    assert f"in: {len(pairs)}  out: 0  rejected: {len(pairs)}" in result.stdout
    rows = _rejects(out.parent / "rejects.jsonl")
    assert all("cannot hold a pair" in r["reason"] for r in rows)


# --------------------------------------------------------------------------- round trips


def test_cli_round_trip_samples(cli_app, samples, tmp_path):
    src = tmp_path / "a.json"
    write_records(src, samples, "llava")
    for to, out in (("trl", "b.jsonl"), ("hf", "c"), ("sharegpt", "d.json"), ("llava", "e.json")):
        result = _convert(cli_app, str(src), str(tmp_path / out), "--to", to,
                          "--no-check-images")
        assert result.exit_code == 0, result.output
        assert f"in: {len(samples)}  out: {len(samples)}  rejected: 0" in result.stdout
        src = tmp_path / out
    assert (tmp_path / "e.json").read_bytes() == (tmp_path / "a.json").read_bytes()


def test_cli_round_trip_pairs(cli_app, pairs, tmp_path):
    src = tmp_path / "a.json"
    write_records(src, pairs, "povid")
    for to, out in (("parquet", "b.parquet"), ("trl", "c.jsonl"), ("povid", "d.json")):
        result = _convert(cli_app, str(src), str(tmp_path / out), "--to", to,
                          "--no-check-images")
        assert result.exit_code == 0, result.output
        src = tmp_path / out
    assert [p.to_dict() for p in read_records(src)] == [p.to_dict() for p in pairs]


# --------------------------------------------------------------------------- inspect


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    def turns(*pairs):
        return [{"role": r, "content": c} for r, c in pairs]

    rows = [
        {"id": "s1", "images": ["a.png"], "category": "detail", "turns": turns(
            ("user", "<image>\nWhat is in the picture?"),          # 5 words
            ("assistant", "A red cube on a table."))},             # 6
        {"id": "s2", "images": [], "category": "detail", "turns": turns(
            ("system", "Be brief."),
            ("user", "Count to three."),                           # 3
            ("assistant", "One two three."),                       # 3
            ("user", "And four?"),                                 # 2
            ("assistant", "Four."))},                              # 1
        {"id": "s3", "images": ["a.png", "b.png"], "category": "reasoning", "turns": turns(
            ("user", "<image><image> Which is bigger?"),           # 3
            ("assistant", "The left one is bigger because it covers more pixels."))},  # 10
        {"id": "bad1", "images": [], "turns": turns(
            ("user", "<image> what?"), ("assistant", "x"))},       # 1 placeholder, 0 images
    ]
    path = tmp_path / "small.jsonl"
    text = "\n".join(json.dumps(r) for r in rows[:3]) + "\n{not json\n" + json.dumps(rows[3])
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_inspect_json_exact(cli_app, small_corpus):
    result = runner.invoke(cli_app, ["data", "inspect", str(small_corpus), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "jsonl"
    assert (report["records"], report["samples"], report["pairs"], report["rejected"]) == (
        3, 3, 0, 2)
    assert report["categories"] == {"detail": 2, "reasoning": 1}
    assert report["turns_per_record"] == {"min": 2, "mean": 3.0, "max": 5}
    assert report["images_per_record"] == {"min": 0, "mean": 1.0, "max": 2}
    assert report["images_total"] == 3
    assert report["placeholder_mismatches"] == {"count": 1, "ids": ["bad1"]}
    assert report["lengths"]["question"] == {"mean": 3.25, "median": 3.0, "p95": 5, "max": 5}
    assert report["lengths"]["answer"] == {"mean": 5.0, "median": 4.5, "p95": 10, "max": 10}
    assert [(r["index"], r["id"], r["field"]) for r in report["rejects"]] == [
        (3, None, None), (4, "bad1", "turns")]
    assert "preference" not in report


def test_inspect_table(cli_app, small_corpus):
    result = runner.invoke(cli_app, ["data", "inspect", str(small_corpus)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "records: 3 valid (3 samples, 0 pairs), 2 rejected" in out
    assert "categories: detail 2, reasoning 1" in out
    assert "turns per record: min 2, mean 3.00, max 5" in out
    assert "<image> placeholders != images: 1 record(s) (e.g. bad1)" in out
    assert "record 4, id 'bad1', field 'turns': 1 <image> placeholder(s) for 0 image(s)" in out


def test_inspect_preference_file(cli_app, tmp_path):
    from mmalign.records import PreferencePair, Turn

    pairs = [
        PreferencePair("p1", [], [Turn("user", "Q one?")], "a b c", "a", origin="povid"),
        PreferencePair("p2", [], [Turn("user", "Q two?")], "a b", "a b c d", origin="povid"),
        PreferencePair("p3", [], [Turn("user", "Q?")], "a", "a b", origin="mmdpo"),
    ]
    path = tmp_path / "p.json"
    write_records(path, pairs, "povid")
    result = runner.invoke(cli_app, ["data", "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "povid" and report["pairs"] == 3
    assert report["preference"] == {
        "origins": {"mmdpo": 1, "povid": 2},
        "chosen": {"mean": 2.0, "median": 2, "p95": 3, "max": 3},
        "rejected": {"mean": 7 / 3, "median": 2, "p95": 4, "max": 4},
    }
    assert report["turns_per_record"] == {"min": 2, "mean": 2.0, "max": 2}
    table = runner.invoke(cli_app, ["data", "inspect", str(path)]).stdout
    assert "origins: mmdpo 1, povid 2" in table and "chosen" in table


def test_inspect_checks_images_only_when_asked(cli_app, tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_llava("a", "missing.png")]), encoding="utf-8")
    plain = json.loads(runner.invoke(cli_app, ["data", "inspect", str(path), "--json"]).stdout)
    assert plain["rejected"] == 0
    checked = json.loads(runner.invoke(
        cli_app, ["data", "inspect", str(path), "--json", "--check-images"]).stdout)
    assert checked["rejected"] == 1 and checked["rejects"][0]["field"] == "images[0]"


def test_inspect_whole_file_error(cli_app, tmp_path):
    result = runner.invoke(cli_app, ["data", "inspect", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "no such file" in result.stderr

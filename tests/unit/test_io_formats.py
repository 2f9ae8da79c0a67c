"""Reading files as people have them: lenient shapes, located errors, whole-file errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from mmalign.io.containers import DataFileError
from mmalign.io.formats import detect_format, iter_records, read_records
from mmalign.records import PreferencePair, RecordError, Sample


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- lenient reading


def test_stock_llava_record(tmp_path):
    path = _json(tmp_path / "llava.json", [{
        "id": 7, "image": "coco/000.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                          {"from": "gpt", "value": "A bus."}]}])
    assert detect_format(path) == "llava"
    (s,) = read_records(path)
    assert s.to_dict() == {"id": "7", "images": ["coco/000.jpg"], "category": "other",
                           "source": "", "meta": {},
                           "turns": [{"role": "user", "content": "<image>\nWhat is it?"},
                                     {"role": "assistant", "content": "A bus."}]}


def test_llava_image_list_and_no_image(tmp_path):
    path = _jsonl(tmp_path / "l.jsonl", [
        {"id": "a", "image": ["x.png", "y.png"],
         "conversations": [{"from": "human", "value": "<image><image>?"},
                           {"from": "gpt", "value": "ok"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "hi"},
                                      {"from": "gpt", "value": "hello"}]},
    ])
    assert detect_format(path) == "llava-jsonl"
    a, b = read_records(path)
    assert a.images == ["x.png", "y.png"] and b.images == []


def test_sharegpt_openai_typed_content_with_image_urls(tmp_path):
    path = _jsonl(tmp_path / "oai.jsonl", [{
        "id": "o1",
        "messages": [
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "imgs/a.png"}},
                {"type": "text", "text": "\nWhat is shown?"}]},
            {"role": "assistant", "content": "A chart."}]}])
    (s,) = read_records(path, "sharegpt")
    assert s.images == ["imgs/a.png"]
    assert s.turns[0].content == "<image>\nWhat is shown?"


def test_sharegpt_conversations_from_value(tmp_path):
    path = _jsonl(tmp_path / "sg.jsonl", [{
        "id": "g1", "images": ["a.png"],
        "conversations": [{"from": "human", "value": "<image>Hi"},
                          {"from": "gpt", "value": "Hello"}]}])
    (s,) = read_records(path, "sharegpt")
    assert [t.role for t in s.turns] == ["user", "assistant"] and s.images == ["a.png"]


def test_trl_standard_and_implicit_prompt(tmp_path):
    path = _jsonl(tmp_path / "trl.jsonl", [
        {"id": "std", "prompt": "Why?", "chosen": "Because.", "rejected": "No."},
        {"id": "imp", "images": ["a.png"],
         "chosen": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "good"}]}],
         "rejected": [{"role": "user",
                       "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "bad"}]}]},
    ])
    std, imp = read_records(path, "trl")
    assert isinstance(std, PreferencePair) and std.prompt[0].content == "Why?"
    assert imp.prompt[0].content == "<image>Q" and (imp.chosen, imp.rejected) == ("good", "bad")


def test_povid_as_in_the_povid_repo(tmp_path):
    path = _json(tmp_path / "povid.json", [{
        "id": 12, "image": "COCO_train2014_000000000009.jpg",
        "conversations": [{"from": "human", "value": "<image>\nDescribe this image."},
                          {"from": "gpt", "value": "Food in containers."}],
        "rejected_conversations": [{"from": "human", "value": "<image>\nDescribe this image."},
                                   {"from": "gpt", "value": "A dog with a fork."}]}])
    assert detect_format(path) == "povid"
    (p,) = read_records(path)
    assert p.to_dict() == {
        "id": "12", "images": ["COCO_train2014_000000000009.jpg"],
        "prompt": [{"role": "user", "content": "<image>\nDescribe this image."}],
        "chosen": "Food in containers.", "rejected": "A dog with a fork.",
        "rejected_images": None, "origin": "", "scores": {}, "meta": {}}


def test_foreign_trl_shaped_hf_dataset_and_parquet(tmp_path):
    import datasets

    rows = [{"id": "t1", "images": ["a.png"],
             "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                      {"type": "text", "text": "Q?"}]}],
             "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "yes"}]}],
             "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "no"}]}]}]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "ds"))
    ds.to_parquet(str(tmp_path / "ds.parquet"))
    for path in (tmp_path / "ds", tmp_path / "ds.parquet"):
        (p,) = read_records(path)
        assert (p.prompt[0].content, p.chosen, p.rejected) == ("<image>Q?", "yes", "no")


# --------------------------------------------------------------------------- located errors


def test_bad_records_are_yielded_located_never_raised(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"id": "g", "turns": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "a"}]}
    path.write_text("\n".join([
        json.dumps(good),
        "",                                   # blank lines are skipped but still counted
        '{"id": "broken", ',
        json.dumps({**good, "id": "e", "turns": []}),
        "[1, 2]",
    ]) + "\n", encoding="utf-8")
    items = list(iter_records(path))
    assert [i for i, _, _ in items] == [0, 2, 3, 4]
    ok, broken, empty, array = (item for _, item, _ in items)
    assert isinstance(ok, Sample)
    assert broken.index == 2 and "malformed JSON" in broken.reason
    assert "JSONL line 3" in str(broken) and str(path) in str(broken)
    assert (empty.record_id, empty.field, empty.reason) == ("e", "turns",
                                                            "empty conversation (JSONL line 4)")
    assert "expected a JSON object" in array.reason
    assert items[1][2] == '{"id": "broken", '  # raw text kept for the rejects file


def test_array_index_is_element_index(tmp_path):
    path = _json(tmp_path / "a.json", [
        {"id": "a", "conversations": [{"from": "human", "value": "q"},
                                      {"from": "gpt", "value": "a"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "q"},
                                      {"from": "gpt", "value": "   "}]},
    ])
    _, (index, err, raw) = list(iter_records(path))
    assert (index, err.record_id, err.field) == (1, "b", "conversations[1].value")
    assert "JSONL" not in str(err) and json.loads(raw)["id"] == "b"


def test_povid_prompt_mismatch_is_located(tmp_path):
    path = _json(tmp_path / "p.json", [{
        "id": "x", "conversations": [{"from": "human", "value": "A?"},
                                     {"from": "gpt", "value": "a"}],
        "rejected_conversations": [{"from": "human", "value": "B?"},
                                   {"from": "gpt", "value": "b"}]}])
    ((_, err, _),) = list(iter_records(path))
    assert err.field == "rejected_conversations" and "prompt differs" in err.reason


# --------------------------------------------------------------------------- whole-file errors


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        iter_records(tmp_path / "nope.jsonl", "jsonl")
    with pytest.raises(DataFileError, match="no such file"):
        detect_format(tmp_path / "nope.jsonl")


def test_non_utf8_json_array_names_byte_and_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[\n{"id": "a"},\n{"id": "caf\u00e9"}\n]\n'.encode("latin-1"))
    with pytest.raises(DataFileError) as e:
        list(iter_records(path, "llava"))
    assert str(path) in str(e.value)
    assert "not valid UTF-8 at byte offset 26 (line 3)" in str(e.value)


def test_invalid_json_array_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"id": "a"},\n {"id": "b",}\n]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"array element 1: .* at line 3 column 13"):
        list(iter_records(path, "llava"))


def test_unknown_and_undetectable_formats(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataFileError, match="pass --from"):
        detect_format(path)
    with pytest.raises(DataFileError, match="unknown format 'csv'"):
        iter_records(path, "csv")


# --------------------------------------------------------------------------- streaming


def test_jsonl_is_streamed_not_loaded(tmp_path):
    """Reading a ~10 MB JSONL keeps peak Python memory far below the file's size."""
    line = json.dumps({"id": "x", "turns": [{"role": "user", "content": "q " * 450},
                                            {"role": "assistant", "content": "a"}]})
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(10_000):
            f.write(line + "\n")
    size = path.stat().st_size
    assert size > 9_000_000
    tracemalloc.start()
    try:
        n = sum(1 for _, item, _ in iter_records(path, "jsonl") if isinstance(item, Sample))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 10_000
    assert peak < size / 10


def test_record_error_is_not_raised_for_valid_file(tmp_path, samples):
    from mmalign.io.formats import write_records

    write_records(tmp_path / "s.jsonl", samples, "jsonl")
    assert not any(isinstance(i, RecordError) for _, i, _ in iter_records(tmp_path / "s.jsonl"))


def test_lone_surrogate_is_a_bad_record_not_a_crash(tmp_path):
    """`\\ud800` alone is legal JSON but no character; it must not reach the UTF-8 writer."""
    path = tmp_path / "s.jsonl"
    ok = '{"id": "ok", "turns": [{"role": "user", "content": "rocket \\ud83d\\ude80"}, ' \
         '{"role": "assistant", "content": "a"}]}'
    bad = ok.replace('"ok"', '"bad"').replace("\\ude80", " cut")
    path.write_text(ok + "\n" + bad + "\n", encoding="utf-8")
    (_, good, _), (_, err, _) = iter_records(path)
    assert good.turns[0].content == "rocket \U0001F680"  # a proper pair is one character
    assert (err.record_id, err.field) == ("bad", "turns[0].content")
    assert "surrogate" in err.reason

"""Every pair of formats converts A -> B -> A without losing anything (`to_dict()` equal)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mmalign.io.formats import (
    PAIR_FORMATS,
    SAMPLE_FORMATS,
    detect_format,
    read_records,
    write_records,
)

SUFFIX = {"llava": ".json", "llava-jsonl": ".jsonl", "sharegpt": ".json", "trl": ".jsonl",
          "povid": ".json", "hf": "", "parquet": ".parquet", "jsonl": ".jsonl"}
TEXT_FORMATS = {"llava", "llava-jsonl", "sharegpt", "trl", "povid", "jsonl"}


def _path(folder: Path, stem: str, fmt: str) -> Path:
    return folder / f"{stem}-{fmt}{SUFFIX[fmt]}"


def _round_trip(records, a: str, b: str, folder: Path) -> None:
    first = _path(folder, "first", a)
    middle = _path(folder, "middle", b)
    last = _path(folder, "last", a)
    assert write_records(first, records, a) == len(records)
    assert write_records(middle, read_records(first, a), b) == len(records)
    assert write_records(last, read_records(middle, b), a) == len(records)

    expected = [r.to_dict() for r in records]
    assert [r.to_dict() for r in read_records(middle, b)] == expected
    assert [r.to_dict() for r in read_records(last, a)] == expected
    if a in TEXT_FORMATS:  # the text is byte-for-byte what it was, not only equivalent
        assert last.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("a, b", list(itertools.product(SAMPLE_FORMATS, repeat=2)))
def test_sample_formats_round_trip(a, b, samples, tmp_path):
    _round_trip(samples, a, b, tmp_path)


@pytest.mark.parametrize("a, b", list(itertools.product(PAIR_FORMATS, repeat=2)))
def test_pair_formats_round_trip(a, b, pairs, tmp_path):
    _round_trip(pairs, a, b, tmp_path)


def test_format_sets():
    assert set(SAMPLE_FORMATS) == {"llava", "llava-jsonl", "sharegpt", "trl", "hf", "parquet",
                                   "jsonl"}
    assert set(PAIR_FORMATS) == {"trl", "povid", "hf", "parquet", "jsonl"}


@pytest.mark.parametrize("fmt", SAMPLE_FORMATS)
def test_detect_written_sample_files(fmt, samples, tmp_path):
    path = _path(tmp_path, "x", fmt)
    write_records(path, samples, fmt)
    assert detect_format(path) == fmt


@pytest.mark.parametrize("fmt", PAIR_FORMATS)
def test_detect_written_pair_files(fmt, pairs, tmp_path):
    path = _path(tmp_path, "x", fmt)
    write_records(path, pairs, fmt)
    assert detect_format(path) == fmt


@pytest.mark.parametrize("fmt, suffix, first_char", [
    ("sharegpt", ".jsonl", "{"), ("sharegpt", ".json", "["), ("trl", ".json", "["),
    ("povid", ".jsonl", "{"), ("llava", ".jsonl", "["), ("llava-jsonl", ".json", "{"),
])
def test_container_follows_format_and_suffix(fmt, suffix, first_char, samples, pairs,
                                              tmp_path):
    records = pairs if fmt == "povid" else samples
    path = tmp_path / f"x{suffix}"
    write_records(path, records, fmt)
    assert path.read_text(encoding="utf-8")[0] == first_char
    assert [r.to_dict() for r in read_records(path, fmt)] == [r.to_dict() for r in records]

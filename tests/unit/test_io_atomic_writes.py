"""A failure in the middle of writing leaves no output and no temporary file behind."""

from __future__ import annotations

import pytest

from mmalign.io.formats import FORMATS, read_records, write_records
from mmalign.records import RecordError

SUFFIX = {"llava": ".json", "llava-jsonl": ".jsonl", "sharegpt": ".json", "trl": ".jsonl",
          "povid": ".json", "hf": "", "parquet": ".parquet", "jsonl": ".jsonl"}


class Boom(RuntimeError):
    pass


def _exploding(records, after: int):
    for i, r in enumerate(records):
        if i == after:
            raise Boom("disk on fire")
        yield r


def _records_for(fmt, samples, pairs):
    return pairs if fmt == "povid" else samples


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_failure_mid_write_leaves_nothing(fmt, samples, pairs, tmp_path):
    out = tmp_path / f"data{SUFFIX[fmt]}"
    with pytest.raises(Boom):
        write_records(out, _exploding(_records_for(fmt, samples, pairs), after=2), fmt)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file or folder either


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_failure_keeps_the_previous_output(fmt, samples, pairs, tmp_path):
    records = _records_for(fmt, samples, pairs)
    out = tmp_path / f"data{SUFFIX[fmt]}"
    write_records(out, records[:1], fmt)
    with pytest.raises(Boom):
        write_records(out, _exploding(records, after=2), fmt)
    assert [r.id for r in read_records(out, fmt)] == [records[0].id]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_record_kind_the_format_cannot_hold(pairs, tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(RecordError, match="cannot hold a pair"):
        write_records(out, pairs, "llava")
    assert list(tmp_path.iterdir()) == []


def test_tables_hold_one_kind(samples, pairs, tmp_path):
    with pytest.raises(ValueError, match="one record kind"):
        write_records(tmp_path / "x.parquet", [samples[0], pairs[0]], "parquet")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_umask_permissions_not_owner_only(tmp_path):
    import os

    from mmalign.io.atomic import atomic_path, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "f.json", {"a": 1})
        with atomic_path(tmp_path / "d", is_dir=True) as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755

"""Columnar forms: one Parquet file, or a HF `datasets.Dataset` saved with `save_to_disk`.

Columns are the native record fields. Conversations are arrow `list<struct<role, content>>`
(so the HF viewer and `datasets` show them naturally); the free dicts `meta` and `scores` are
JSON strings, because an arrow struct would force one schema on every row and could not keep
arbitrary nesting (or mixed value types) exactly. Whether a table holds Samples or pairs is
told from its columns; a foreign TRL-shaped table (`messages`, typed `prompt/chosen`) is
decoded with the TRL reader.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.io import trl
from mmalign.io.atomic import atomic_path
from mmalign.io.containers import DataFileError, Item
from mmalign.io.formats import HF_MARKERS
from mmalign.records import PreferencePair, RecordError, Sample

_TURNS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("images", pa.list_(pa.string())), ("turns", _TURNS),
    ("category", pa.string()), ("source", pa.string()), ("meta", pa.string()),
])
PAIR_SCHEMA = pa.schema([
    ("id", pa.string()), ("images", pa.list_(pa.string())), ("prompt", _TURNS),
    ("chosen", pa.string()), ("rejected", pa.string()),
    ("rejected_images", pa.list_(pa.string())),  # null (not set) differs from []
    ("origin", pa.string()), ("scores", pa.string()), ("meta", pa.string()),
])
JSON_COLUMNS = ("meta", "scores")
BATCH_ROWS = 1000
Decoder = Callable[[dict[str, Any]], Sample | PreferencePair]


# --------------------------------------------------------------------------- reading


def read_parquet(path: str | os.PathLike) -> tuple[Decoder, Iterator[Item]]:
    """Open a Parquet file: its row decoder (from the columns) and a stream of its rows."""
    if not Path(path).is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"{path}: not a readable Parquet file: {e}") from None
    batches = (b.to_pylist() for b in pf.iter_batches(BATCH_ROWS))
    return _decoder(pf.schema_arrow), _rows(batches)


def read_hf(path: str | os.PathLike) -> tuple[Decoder, Iterator[Item]]:
    """Open a `save_to_disk` folder: its row decoder and a stream of its rows."""
    import datasets  # heavy import, only when a HF dataset is actually read

    p = Path(path)
    if not p.is_dir() or not any((p / m).exists() for m in HF_MARKERS):
        raise DataFileError(f"{path}: not a dataset saved with save_to_disk")
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # datasets raises many kinds here; all mean "cannot load"
        raise DataFileError(f"{path}: cannot load the saved dataset: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataFileError(f"{path}: a DatasetDict with splits {sorted(ds)}; "
                                f"point at one split's folder")
        ds = next(iter(ds.values()))
    batches = (t.to_pylist() for t in ds.with_format("arrow").iter(batch_size=BATCH_ROWS))
    return _decoder(ds.data.schema), _rows(batches)


def _rows(batches: Iterable[list[dict[str, Any]]]) -> Iterator[Item]:
    for index, row in enumerate(r for batch in batches for r in batch):
        yield index, row, _raw(row)


def _decoder(schema: pa.Schema) -> Decoder:
    names = set(schema.names)
    native = "turns" in names or (
        "chosen" in names and pa.types.is_string(schema.field("chosen").type)
        and "prompt" in names and pa.types.is_list(schema.field("prompt").type))
    return decode_native_row if native else trl.decode


def decode_native_row(row: dict[str, Any]) -> Sample | PreferencePair:
    row = dict(row)
    for key in JSON_COLUMNS:
        value = row.get(key)
        if isinstance(value, str):
            try:
                row[key] = json.loads(value) if value else {}
            except json.JSONDecodeError as e:
                raise RecordError(f"not valid JSON: {e}", field=key) from None
    if "turns" in row:
        return Sample.from_dict(row)
    return PreferencePair.from_dict(row)


def _raw(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- writing


def write_parquet(path: str | os.PathLike, records: Iterable[Sample | PreferencePair]) -> int:
    with atomic_path(path) as tmp:
        return _write_parquet_file(tmp, records)


def write_hf(path: str | os.PathLike, records: Iterable[Sample | PreferencePair]) -> int:
    """Stream rows to a scratch Parquet file, then let `datasets` build and save the dataset
    from it; memory stays bounded by one batch, not the corpus."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="mmalign-hf-") as scratch:
        parquet = Path(scratch) / "rows.parquet"
        n = _write_parquet_file(parquet, records)
        ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(scratch) / "cache"))
        with atomic_path(path, is_dir=True) as tmp:
            ds.save_to_disk(str(tmp))
        del ds  # release the memory-mapped cache before the scratch folder goes
    return n


def _write_parquet_file(path: Path, records: Iterable[Sample | PreferencePair]) -> int:
    writer: pq.ParquetWriter | None = None
    kind: type | None = None
    batch: list[dict[str, Any]] = []
    n = 0
    try:
        for record in records:
            if kind is None:
                kind = type(record)
                schema = SAMPLE_SCHEMA if kind is Sample else PAIR_SCHEMA
                writer = pq.ParquetWriter(path, schema)
            elif type(record) is not kind:
                raise ValueError(f"a table holds one record kind; got {type(record).__name__} "
                                 f"{record.id!r} after {kind.__name__} records")
            batch.append(_row(record))
            n += 1
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema))
                batch = []
        if writer is None:  # no records: still a valid (empty) table
            writer = pq.ParquetWriter(path, SAMPLE_SCHEMA)
        elif batch:
            writer.write_table(pa.Table.from_pylist(batch, schema))
    finally:
        if writer is not None:
            writer.close()
    return n


def _row(record: Sample | PreferencePair) -> dict[str, Any]:
    row = record.to_dict()
    for key in JSON_COLUMNS:
        if key in row:
            row[key] = json.dumps(row[key], ensure_ascii=False)
    return row

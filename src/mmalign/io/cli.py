"""`mmalign data convert` and `mmalign data inspect`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TextIO

import typer

from mmalign.io.atomic import atomic_open
from mmalign.io.containers import DataFileError, Raw
from mmalign.io.formats import detect_format, fits, iter_records, kind_of, write_records
from mmalign.io.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from mmalign.io.stats import render_table, summarize
from mmalign.records import PreferencePair, RecordError, Sample

Record = Sample | PreferencePair

data_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Convert and inspect corpora and preference data.")


class FormatName(StrEnum):
    llava = "llava"
    llava_jsonl = "llava-jsonl"
    sharegpt = "sharegpt"
    trl = "trl"
    povid = "povid"
    hf = "hf"
    parquet = "parquet"
    jsonl = "jsonl"


class OnError(StrEnum):
    skip = "skip"
    stop = "stop"


FromOpt = Annotated[FormatName | None, typer.Option(
    "--from", help="Input format; detected from the file when left out.")]
ImageRootOpt = Annotated[Path | None, typer.Option(
    "--image-root", help="Folder image paths are relative to (default: the input's folder).")]
MaxPixelsOpt = Annotated[int, typer.Option(
    "--max-image-pixels", min=1, help="Refuse images with more pixels (read from the header).")]
MaxBytesOpt = Annotated[int, typer.Option(
    "--max-image-bytes", min=1, help="Refuse image files larger than this.")]


@dataclass
class Counts:
    read: int = 0
    written: int = 0
    rejected: int = 0

    def line(self) -> str:
        return f"in: {self.read}  out: {self.written}  rejected: {self.rejected}"


class _Stopped(Exception):
    def __init__(self, error: RecordError):
        self.error = error


@data_app.command()
def convert(
    src: Annotated[Path, typer.Argument(metavar="IN", help="Input file or HF dataset folder.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Output file or folder (hf).")],
    to: Annotated[FormatName, typer.Option("--to", help="Output format.")],
    from_: FromOpt = None,
    image_root: ImageRootOpt = None,
    check_images: Annotated[bool, typer.Option(
        "--check-images/--no-check-images",
        help="Open every image: missing, corrupt and oversized images reject the record.")] = True,
    max_image_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_image_bytes: MaxBytesOpt = DEFAULT_MAX_BYTES,
    on_error: Annotated[OnError, typer.Option(
        "--on-error", help="skip: set bad records aside in the rejects file and go on; "
        "stop: fail at the first one and write nothing.")] = OnError.stop,
    rejects: Annotated[Path | None, typer.Option(
        "--rejects", help="Where skipped records go (default: OUT's folder/rejects.jsonl).")
    ] = None,
) -> None:
    """Convert IN to OUT in another format, checking every record on the way."""
    counts = Counts()
    rejects_path = rejects or out.parent / "rejects.jsonl"
    if rejects_path.resolve() in (out.resolve(), src.resolve()):
        _fail(f"the rejects file {rejects_path} would overwrite the input or the output; "
              f"pass --rejects", counts, code=2)

    def accepted(items: Iterable[tuple[int, Record | RecordError, Raw]],
                 sink: TextIO | None) -> Iterator[Record]:
        for index, item, raw in items:
            counts.read += 1
            if not isinstance(item, RecordError) and not fits(item, to.value):
                item = RecordError(f"format {to.value!r} cannot hold a {kind_of(item)}",
                                   file=str(src), index=index, record_id=item.id)
            if isinstance(item, RecordError):
                counts.rejected += 1
                if sink is None:
                    raise _Stopped(item)
                sink.write(json.dumps(_reject_row(item, raw), ensure_ascii=False) + "\n")
                continue
            yield item

    try:
        items = iter_records(src, from_.value if from_ else None, image_root=image_root,
                             check_images=check_images, max_pixels=max_image_pixels,
                             max_bytes=max_image_bytes)
        if on_error is OnError.skip:
            # Both files commit only if the whole run succeeds (nested atomic writes).
            with atomic_open(rejects_path) as sink:
                counts.written = write_records(out, accepted(items, sink), to.value)
        else:
            counts.written = write_records(out, accepted(items, None), to.value)
    except _Stopped as stop:
        _fail(f"{stop.error}\nstopped at the first bad record (--on-error stop); "
              f"nothing was written", counts)
    except (DataFileError, RecordError, OSError) as e:
        _fail(f"{e}\nnothing was written", counts)
    typer.echo(counts.line())
    if on_error is OnError.skip and counts.rejected:
        typer.echo(f"rejected records: {rejects_path}")


@data_app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Input file or HF dataset folder.")],
    from_: FromOpt = None,
    image_root: ImageRootOpt = None,
    check_images: Annotated[bool, typer.Option(
        "--check-images/--no-check-images", help="Also open every image.")] = False,
    max_image_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_image_bytes: MaxBytesOpt = DEFAULT_MAX_BYTES,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report counts, shapes, placeholder consistency, rejects and lengths of a corpus."""
    try:
        fmt = from_.value if from_ else detect_format(path)
        report = {"file": str(path), "format": fmt, **summarize(iter_records(
            path, fmt, image_root=image_root, check_images=check_images,
            max_pixels=max_image_pixels, max_bytes=max_image_bytes))}
    except (DataFileError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json
               else render_table(report))


def _reject_row(error: RecordError, raw: Raw) -> dict[str, object]:
    row: dict[str, object] = error.to_dict()
    if isinstance(raw, bytes):  # not UTF-8: keep the exact bytes too, so nothing is lost
        row["raw"] = raw.decode("utf-8", errors="replace")
        row["raw_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        row["raw"] = raw
    return row


def _fail(message: str, counts: Counts, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    typer.echo(counts.line())
    raise typer.Exit(code)


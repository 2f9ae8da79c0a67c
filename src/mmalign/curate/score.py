"""Score a whole corpus with the question and answer reward models: batched, streaming,
resumable; scores stored beside the records.

    report = score_corpus("corpus.json", "run/score", question_scorer, answer_scorer)

Each record gets `meta["scores"] = {"question": q, "answers": [a_1, ..., a_T]}`: q is the
question RM's score of (image, the record's questions joined by newlines), a_t the answer RM's
score of (image, "Question: q_t\\nAnswer: a_t") for each assistant turn t, where q_t is the
user turn just before it. Selection (`curate.select`) reads only these stored numbers.

Outputs in OUT: `scored.jsonl` (our native JSONL, every input record with its scores),
`rejects.jsonl` (malformed records, with the reason, when `on_error="skip"`),
`manifest.json` (inputs, models, counts in/out/rejected, timings).

Resume: while running, records are appended to `scored.jsonl.partial` batch by batch, and
after each batch `progress.json` records how many input records are done and the byte length
of the partial files. A rerun with the same inputs and models truncates the partial files to
those lengths (dropping at most one half-written batch) and continues after the last recorded
record, so nothing recorded is scored twice. A finished output with the same inputs is left
alone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign import __version__
from mmalign.curate.annotations import answer_text, question_text
from mmalign.io.atomic import write_json
from mmalign.io.formats import iter_records
from mmalign.io.images import resolve_image
from mmalign.io.journal import append_rows
from mmalign.records import RecordError, Sample

# A scorer maps (image paths, text) items to one float each; `VLMRewardModel.score` is one.
Scorer = Callable[[Sequence[Any]], list[float]]
SCORED, REJECTS, PROGRESS, MANIFEST = "scored.jsonl", "rejects.jsonl", "progress.json", \
    "manifest.json"


class ResumeMismatchError(ValueError):
    """A partial output in OUT was made from other inputs or models."""


def rm_scorer(rm: Any, batch_size: int = 16) -> Scorer:
    """Adapt a `VLMRewardModel` to the Scorer signature."""
    from mmalign.models.reward import RewardInput

    def score(items: Sequence[tuple[list[Path], str]]) -> list[float]:
        # The model batches by image count, so group items that way first.
        out: list[float | None] = [None] * len(items)
        by_n: dict[int, list[int]] = {}
        for i, (images, _) in enumerate(items):
            by_n.setdefault(len(images), []).append(i)
        for idx in by_n.values():
            scores = rm.score([RewardInput(list(items[i][0]), items[i][1]) for i in idx],
                              batch_size)
            for i, s in zip(idx, scores, strict=True):
                out[i] = s
        return [float(s) for s in out]  # type: ignore[arg-type]

    return score


def question_input(s: Sample) -> str:
    return question_text(s.questions)


def answer_inputs(s: Sample) -> list[str]:
    """One "Question: q\\nAnswer: a" per assistant turn, q = the user turn before it."""
    out, last_q = [], ""
    for t in s.turns:
        if t.role == "user":
            last_q = t.content
        elif t.role == "assistant":
            out.append(answer_text(last_q, t.content))
    return out


@dataclass
class _Progress:
    fingerprint: dict[str, Any]
    consumed: int = 0  # input records handled (scored or rejected), in input order
    scored_bytes: int = 0
    rejects_bytes: int = 0
    scored: int = 0
    rejected: int = 0
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fingerprint(data: str | os.PathLike, models: dict[str, str], extra: dict[str, Any]
                ) -> dict[str, Any]:
    """What decides the output: the input file's content hash, the models, the options."""
    from mmalign.pipeline import file_hash

    return {"data": str(Path(data).resolve()), "data_hash": file_hash(data), "models": models,
            **extra}


def score_corpus(data: str | os.PathLike, out_dir: str | os.PathLike, question_scorer: Scorer,
                 answer_scorer: Scorer, *, fmt: str | None = None,
                 image_root: str | os.PathLike | None = None, batch_size: int = 64,
                 on_error: str = "stop", models: dict[str, str] | None = None,
                 restart: bool = False, log: Callable[[str], None] = lambda _: None
                 ) -> dict[str, Any]:
    """Score every record of `data` into `out_dir`; return the manifest.

    `batch_size` counts records per step (each record gives one question input and one
    answer input per assistant turn). `on_error`: "stop" raises the first malformed record
    (a `RecordError` naming file, index, id and field); "skip" writes it to rejects.jsonl.
    `models` names the scorers for the resume check (paths or hashes).
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else Path(data).parent
    fp = fingerprint(data, models or {}, {"image_root": str(root.resolve()), "format": fmt,
                                          "on_error": on_error})
    manifest_path = out / MANIFEST
    if manifest_path.exists() and not restart:
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") == fp and (out / SCORED).exists():
            log(f"{out / SCORED} already holds these scores; nothing to do")
            return old
    progress = _start(out, fp, restart, log)

    with open(out / f"{SCORED}.partial", "ab") as scored_f, \
            open(out / f"{REJECTS}.partial", "ab") as rejects_f:
        for batch in _batches(iter_records(data, fmt, image_root=root), progress.consumed,
                              batch_size):
            good, bad = [], []
            for _, item, raw in batch:
                if isinstance(item, RecordError):
                    if on_error == "stop":
                        raise item
                    bad.append({"error": item.to_dict(), "raw": _text(raw)})
                else:
                    good.append(item)
            rows, more_bad = _score_batch(good, root, question_scorer, answer_scorer, on_error,
                                          str(data))
            bad.extend(more_bad)
            append_rows(scored_f, rows)
            append_rows(rejects_f, bad)
            progress.consumed += len(batch)
            progress.scored += len(rows)
            progress.rejected += len(bad)
            progress.batches += 1
            progress.scored_bytes = scored_f.tell()
            progress.rejects_bytes = rejects_f.tell()
            write_json(out / PROGRESS, progress.to_dict())
            log(f"  scored {progress.scored} records ({progress.rejected} rejected)")

    os.replace(out / f"{SCORED}.partial", out / SCORED)
    os.replace(out / f"{REJECTS}.partial", out / REJECTS)
    manifest = {
        "stage": "curate.score", "version": __version__, "fingerprint": fp,
        "outputs": {"scored": SCORED, "rejects": REJECTS},
        "counts": {"in": progress.consumed, "out": progress.scored,
                   "rejected": progress.rejected, "batches": progress.batches},
        "seconds": round(time.time() - t0, 2),
    }
    write_json(manifest_path, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _start(out: Path, fp: dict[str, Any], restart: bool, log: Callable[[str], None]
           ) -> _Progress:
    """Resume from progress.json if it matches; otherwise start clean."""
    path = out / PROGRESS
    if path.exists() and not restart:
        old = json.loads(path.read_text())
        if old.get("fingerprint") != fp:
            raise ResumeMismatchError(
                f"{out} holds a partial scoring run of other inputs or models; pass "
                f"restart=True (--restart) to discard it, or use another output folder")
        progress = _Progress(**old)
        for name, size in ((SCORED, progress.scored_bytes), (REJECTS, progress.rejects_bytes)):
            part = out / f"{name}.partial"
            if not part.exists() or part.stat().st_size < size:
                raise ResumeMismatchError(f"{part} is shorter than progress.json records; "
                                          f"pass restart=True to start over")
            with open(part, "r+b") as f:  # drop a batch written after the last record
                f.truncate(size)
        log(f"resuming after {progress.consumed} records ({progress.batches} batches done)")
        return progress
    for name in (SCORED, REJECTS):
        (out / f"{name}.partial").write_bytes(b"")
    (out / MANIFEST).unlink(missing_ok=True)
    progress = _Progress(fingerprint=fp)
    write_json(path, progress.to_dict())
    return progress


def _batches(items: Iterator, skip: int, size: int) -> Iterator[list]:
    batch = []
    for n, item in enumerate(items):
        if n < skip:
            continue  # done in an earlier run (decoding is cheap next to scoring)
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _score_batch(samples: list[Sample], root: Path, q_scorer: Scorer, a_scorer: Scorer,
                 on_error: str, file: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score the samples of one batch: one question call and one answer call."""
    ok, bad = [], []
    for s in samples:
        try:
            images = [_image_path(root, rel, f"images[{k}]") for k, rel in enumerate(s.images)]
        except RecordError as e:
            e = e.located(file=file, record_id=s.id)
            if on_error == "stop":
                raise e from None
            bad.append({"error": e.to_dict(), "raw": s.to_dict()})
            continue
        ok.append((s, images))
    q_scores = q_scorer([(images, question_input(s)) for s, images in ok]) if ok else []
    a_items = [(images, text) for s, images in ok for text in answer_inputs(s)]
    a_scores = a_scorer(a_items) if a_items else []
    if len(q_scores) != len(ok) or len(a_scores) != len(a_items):
        raise RuntimeError("a scorer returned the wrong number of scores")
    rows, k = [], 0
    for (s, _), q in zip(ok, q_scores, strict=True):
        n = len(answer_inputs(s))
        meta = dict(s.meta)
        meta["scores"] = {"question": round(q, 6),
                          "answers": [round(a, 6) for a in a_scores[k:k + n]]}
        k += n
        rows.append(Sample(s.id, s.images, s.turns, s.category, s.source, meta).to_dict())
    return rows, bad


def _image_path(root: Path, rel: str, field: str) -> Path:
    path = resolve_image(root, rel, field=field)
    if not path.is_file():
        raise RecordError(f"image file not found: {path}", field=field)
    return path


def _text(raw: Any) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


def read_scored(path: str | os.PathLike) -> list[Sample]:
    """The records of a scored.jsonl (or any file of samples), each checked to carry scores:
    a record without them raises a `RecordError` naming the file, record and field."""
    out = []
    for index, item, _ in iter_records(path):
        if isinstance(item, RecordError):
            raise item
        if not isinstance(item, Sample):
            raise RecordError("expected a sample, found a preference pair", file=str(path),
                              index=index, record_id=item.id)
        check_scores(item, n_answers=len(item.answers), file=str(path), index=index)
        out.append(item)
    return out


def check_scores(s: Sample, *, n_answers: int, file: str | None = None,
                 index: int | None = None) -> None:
    def fail(reason: str, field: str) -> None:
        raise RecordError(reason, field=field, file=file, index=index, record_id=s.id)

    scores = s.meta.get("scores")
    if not isinstance(scores, dict):
        fail("missing: run `mmalign curate score` first", "meta.scores")
    q = scores.get("question")
    if isinstance(q, bool) or not isinstance(q, int | float):
        fail(f"expected a number, got {q!r}", "meta.scores.question")
    a = scores.get("answers")
    if not isinstance(a, list) or len(a) != n_answers:
        fail(f"expected a list of {n_answers} number(s) (one per assistant turn), got {a!r}",
             "meta.scores.answers")
    for i, v in enumerate(a):
        if isinstance(v, bool) or not isinstance(v, int | float):
            fail(f"expected a number, got {v!r}", f"meta.scores.answers[{i}]")

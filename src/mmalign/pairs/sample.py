"""Sample K answers per (image, question) from a model: MM-DPO's first step (DESIGN 6.3).

Input: any sample file `mmalign.io` reads (LLaVA JSON, ShareGPT, TRL, native JSONL, ...),
one item per assistant turn (the turns before it are the prompt, the turn itself the
reference answer); or a JSONL of prompt rows `{id, image | images, question, reference?,
category?}` such as the world's `bench/openended.jsonl`.

Output: an append-only JSONL with one row ("group") per item:
  {id, images, prompt: [{role, content}], reference, category, responses: [K texts],
   model, params: {k, temperature, top_p, max_new_tokens, seed}}
Rows are appended and fsynced after every batch, so a killed run keeps what it finished; a
rerun skips the items already there (and refuses a file made by another model or with other
parameters). Malformed input records go to `<out>.rejects.jsonl` with the reason (or stop the
run with `strict`); counts in, out and rejected are returned.

Seeds: an HF model (`HFGenerator`) seeds torch once per `generate` call, so every request of a
batch carries the same seed, derived from (seed, the batch's first item id): the K answers of
an item differ because they are different rows of one sampled batch, and a rerun of the same
batch reproduces them. Any other backend gets a distinct seed per request, derived from
(seed, item id, k), since an endpoint given the same seed and prompt returns the same answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.backends.base import Generator, GenRequest
from mmalign.backends.judge import ResumeMismatchError
from mmalign.io.atomic import write_jsonl
from mmalign.io.containers import DataFileError
from mmalign.io.formats import iter_records
from mmalign.io.images import resolve_image
from mmalign.io.journal import append_rows, read_journal
from mmalign.progress import Progress
from mmalign.records import IMAGE_TOKEN, RecordError, Sample, Turn


@dataclass
class PromptItem:
    """One (images, prompt) to sample answers for; `images` as the data names them."""

    id: str
    images: list[str]
    prompt: list[Turn]
    reference: str | None = None
    category: str = "other"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SampleConfig:
    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 16  # requests (items x k) per generate call

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1 "
                             f"(got {self.temperature}, {self.top_p})")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}


# --------------------------------------------------------------------------- reading


def items_from_sample(s: Sample) -> list[PromptItem]:
    """One item per assistant turn: the turns before it, and it as the reference."""
    answers = [i for i, t in enumerate(s.turns) if t.role == "assistant"]
    out = []
    for n, a in enumerate(answers):
        prompt = s.turns[:a]
        if not prompt or prompt[-1].role != "user":
            continue  # two assistant turns in a row: no question to answer
        rid = s.id if len(answers) == 1 else f"{s.id}#{n}"
        out.append(PromptItem(id=rid, images=list(s.images), prompt=list(prompt),
                              reference=s.turns[a].content, category=s.category,
                              meta={"source_id": s.id, "turn": a}))
    return out


def item_from_row(row: dict[str, Any]) -> PromptItem:
    """A prompt row `{id, image | images, question, reference?}` (e.g. bench/openended)."""
    if "id" not in row:
        raise RecordError("missing", field="id")
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise RecordError("missing or empty", field="question")
    images = row.get("images", [row["image"]] if "image" in row else [])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
        raise RecordError("expected a list of image paths", field="images")
    text = q if IMAGE_TOKEN in q else IMAGE_TOKEN * len(images) + ("\n" if images else "") + q
    ref = row.get("reference", row.get("answer"))
    return PromptItem(id=str(row["id"]), images=images, prompt=[Turn("user", text)],
                      reference=ref if isinstance(ref, str) else None,
                      category=row.get("category", "other") or "other")


def _is_prompt_rows(path: Path) -> bool:
    if path.is_dir() or path.suffix.lower() not in (".jsonl", ".ndjson"):
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "question" in first and "turns" not in first
    return False


def read_prompt_items(path: str | os.PathLike, fmt: str | None = None, *,
                      image_root: str | os.PathLike | None = None
                      ) -> Iterator[PromptItem | RecordError]:
    """Items of `path` in file order; a bad record is yielded as a located RecordError."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if fmt in (None, "prompts") and _is_prompt_rows(path):
        with open(path, encoding="utf-8") as f:
            for index, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise RecordError("expected a JSON object")
                    item = item_from_row(row)
                    for i, rel in enumerate(item.images):
                        resolve_image(root, rel, field=f"images[{i}]")
                except ValueError as e:  # RecordError is a ValueError, and so is bad JSON
                    err = e if isinstance(e, RecordError) else RecordError(f"invalid JSON: {e}")
                    yield err.located(file=str(path), index=index)
                    continue
                yield item
        return
    if fmt == "prompts":
        raise DataFileError(f"{path}: not a JSONL of prompt rows with a 'question' key")
    for _, rec, _ in iter_records(path, fmt, image_root=root):
        if isinstance(rec, RecordError):
            yield rec
        elif isinstance(rec, Sample):
            yield from items_from_sample(rec)
        else:
            yield RecordError("a preference pair, not a sample; sample from a sample file",
                              file=str(path), record_id=rec.id)


# --------------------------------------------------------------------------- sampling


def _with_images_checked(item: PromptItem, root: Path, source: Path) -> PromptItem | RecordError:
    """The item, or a located error if one of its images is not a file under `root` (found
    now rather than halfway through sampling)."""
    for i, rel in enumerate(item.images):
        try:
            path = resolve_image(root, rel, field=f"images[{i}]")
        except RecordError as e:
            return e.located(file=str(source), record_id=item.id)
        if not path.is_file():
            return RecordError(f"image file not found: {path} (image root {root}; set "
                               f"--image-root)", field=f"images[{i}]", file=str(source),
                               record_id=item.id)
    return item


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def build_requests(items: list[PromptItem], cfg: SampleConfig, root: Path, *,
                   batch_seed: bool) -> list[GenRequest]:
    """K requests per item, in item order; seeds as the module docstring says."""
    reqs = []
    shared = _stable_int(cfg.seed, items[0].id) if items else 0
    for it in items:
        paths = [resolve_image(root, rel, field="images") for rel in it.images]
        for k in range(cfg.k):
            seed = shared if batch_seed else _stable_int(cfg.seed, it.id, k)
            reqs.append(GenRequest(images=paths, messages=list(it.prompt),
                                   max_new_tokens=cfg.max_new_tokens,
                                   temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
                                   meta={"id": it.id, "sample_index": k}))
    return reqs


def sample_answers(generator: Generator, source: str | os.PathLike, out: str | os.PathLike,
                   cfg: SampleConfig | None = None, *, fmt: str | None = None,
                   image_root: str | os.PathLike | None = None, limit: int | None = None,
                   strict: bool = False, progress: bool = True) -> dict[str, Any]:
    """Draw `cfg.k` answers per item of `source` into `out` (resumable); return counts."""
    from mmalign.backends.hf import HFGenerator

    cfg = cfg or SampleConfig()
    source, out = Path(source), Path(out)
    root = Path(image_root) if image_root is not None else source.parent
    model = getattr(generator, "name", type(generator).__name__)

    items, rejects = [], []
    for x in read_prompt_items(source, fmt, image_root=root):
        if not isinstance(x, RecordError):
            x = _with_images_checked(x, root, source)
        if isinstance(x, RecordError):
            if strict:
                raise x
            rejects.append(x.to_dict())
            continue
        items.append(x)
        if limit is not None and len(items) >= limit:
            break
    if len({it.id for it in items}) != len(items):
        dup = next(i for i in items if sum(j.id == i.id for j in items) > 1)
        raise RecordError("duplicate id; sampled groups are keyed by id", file=str(source),
                          record_id=dup.id)
    rejects_path = out.with_name(out.stem + ".rejects.jsonl")
    if rejects:
        write_jsonl(rejects_path, rejects)

    done = {r["id"]: r for r in read_journal(out, repair=True)}
    for r in done.values():
        if r.get("model") != model or r.get("params") != cfg.params():
            raise ResumeMismatchError(
                f"{out} holds samples from model {r.get('model')!r} with {r.get('params')}, "
                f"not {model!r} with {cfg.params()}; use another output file or delete it")
    todo = [it for it in items if it.id not in done]
    per_batch = max(1, cfg.batch_size // cfg.k)
    batch_seed = isinstance(generator, HFGenerator)

    bar = Progress("sample", total=len(items), done=len(items) - len(todo), enabled=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), per_batch):
                batch = todo[start:start + per_batch]
                texts = generator.generate(build_requests(batch, cfg, root,
                                                          batch_seed=batch_seed))
                if len(texts) != len(batch) * cfg.k:
                    raise RuntimeError(f"generator {model!r} returned {len(texts)} texts for "
                                       f"{len(batch) * cfg.k} requests")
                append_rows(f, [{"id": it.id, "images": it.images,
                                 "prompt": [t.to_dict() for t in it.prompt],
                                 "reference": it.reference, "category": it.category,
                                 "responses": list(texts[n * cfg.k:(n + 1) * cfg.k]),
                                 "model": model, "params": cfg.params(), "meta": it.meta}
                                for n, it in enumerate(batch)])
                bar.update(len(batch))
    finally:
        bar.close()
    return {"items": len(items),
            "sampled_now": len(todo), "already_done": len(items) - len(todo),
            "rejected": len(rejects), "rejects_file": str(rejects_path) if rejects else None,
            "answers": len(items) * cfg.k, "out": str(out)}

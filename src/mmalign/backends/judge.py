"""Judges: (images, question, responses) -> one `Rating` per response.

MM-DPO (Li & Lin, DESIGN 6.3) rates every sampled answer 0-4 on five attributes
(`RATING_ATTRIBUTES`), reasoning first, then scores. This module holds what every judge shares:

- `JudgeItem` and the `Judge` protocol (`rate(items, repeat=0)`);
- judge prompts: versioned files in `mmalign/prompts/`, hashed (sha256 of the file's bytes);
  the hash goes into every Rating so ratings made with different prompts never mix silently;
- `parse_rating`: the strict reader of a judge's reply (a JSON object with all five scores,
  each a whole number 0-4); anything else raises `RatingParseError` with the reason;
- `LLMJudge`: a judge over any `Generator` (a local HF model, an OpenAI-compatible endpoint),
  with one re-ask per malformed reply (configurable) and the failure recorded on the Rating
  (`error` set, `scores` empty) instead of stopping the run;
- `consistency`: rate the same responses twice and report agreement per attribute.

The oracle judge (exact ratings from scene graphs) lives in `mmalign.backends.oracle`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmalign.backends.base import Generator, GenRequest, RequestRejected, generate_or_reject
from mmalign.io.journal import append_rows, read_journal
from mmalign.io.prompts import prompt_sections, read_prompt
from mmalign.progress import Progress
from mmalign.records import IMAGE_TOKEN, RATING_ATTRIBUTES, Rating, Turn

SCORE_MIN, SCORE_MAX = 0, 4
DEFAULT_PROMPT = "judge_v1"


class RatingParseError(ValueError):
    """A judge reply that is not a usable rating; `reason` says why (sent back in a re-ask)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class JudgeItem:
    """One (images, question) group with the responses to rate.

    `images` are file paths the backend can open; `image_keys` are the same images as the data
    names them (world-relative paths), which is what the oracle looks scene graphs up by.
    """

    id: str
    images: list[Path]
    question: str
    responses: list[str]
    reference: str | None = None
    image_keys: list[str] = field(default_factory=list)
    category: str = ""


@runtime_checkable
class Judge(Protocol):
    name: str
    prompt_hash: str

    def rate(self, items: Sequence[JudgeItem], *, repeat: int = 0) -> list[list[Rating]]:
        """One list of Ratings per item, one Rating per response, in order. `repeat` > 0 asks
        for an independent second opinion (a fresh draw, not a cached one)."""
        ...


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt file: the main template plus `=== name ===` sections.

    Placeholders (replaced verbatim, so JSON braces in the text need no escaping):
    main: {question} {response} {reference_block}; `reference` section: {reference};
    `re-ask` section: {error}.
    """

    name: str
    text: str
    sha256: str

    @property
    def sections(self) -> dict[str, str]:
        return prompt_sections(self.text)

    def render(self, question: str, response: str, reference: str | None) -> str:
        s = self.sections
        block = ""
        if reference and "reference" in s:
            block = "\n" + s["reference"].replace("{reference}", reference) + "\n"
        return (s["main"].replace("{question}", question).replace("{reference_block}", block)
                .replace("{response}", response))

    def reask(self, error: str) -> str:
        s = self.sections
        if "re-ask" not in s:
            return (f"Your reply could not be used: {error}. Reply again with only the JSON "
                    f"object asked for.")
        return s["re-ask"].replace("{error}", error)


def load_prompt(name_or_path: str | os.PathLike = DEFAULT_PROMPT) -> JudgePrompt:
    """A packaged prompt by name (`judge_v1`) or any prompt file by path."""
    name, text, sha = read_prompt(name_or_path, "judge")
    prompt = JudgePrompt(name=name, text=text, sha256=sha)
    missing = [k for k in ("{question}", "{response}") if k not in prompt.sections["main"]]
    if missing:
        raise ValueError(f"judge prompt {name!r} lacks the placeholder(s) {', '.join(missing)}")
    return prompt


def render_question(prompt: Sequence[Turn]) -> str:
    """The question a judge sees: the last user turn, or the whole dialogue when earlier
    turns exist (a later question can refer to them). `<image>` placeholders are removed:
    the judge gets the images in its own message."""
    def clean(text: str) -> str:
        return text.replace(IMAGE_TOKEN, "").strip()

    turns = [t for t in prompt if t.role != "system"]
    if len(turns) <= 1:
        return clean(turns[-1].content) if turns else ""
    return "\n".join(f"{t.role.capitalize()}: {clean(t.content)}" for t in turns)


# --------------------------------------------------------------------------- parsing


@dataclass
class ParsedRating:
    scores: dict[str, int]
    reasoning: str


def _json_objects(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Every top-level JSON object in `text` (prose and code fences around them allowed)."""
    decoder = json.JSONDecoder()
    out, i = [], text.find("{")
    while i >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            out.append((i, obj))
        i = text.find("{", end)
    return out


def parse_rating(text: str, attributes: Sequence[str] = RATING_ATTRIBUTES) -> ParsedRating:
    """Read a judge reply; raise RatingParseError unless it holds every attribute's score.

    Accepted: a JSON object `{"reasoning": str, "scores": {attr: int}}` (or the attributes at
    its top level), anywhere in the reply; the last such object wins, since reasoning comes
    first. Attribute names are matched case-insensitively. Strict on values: each must be a
    JSON number with a whole value in 0..4 (`3` or `3.0`; not `"3"`, `3.5`, `true` or `7`).
    Reasoning is the object's `reasoning`, else the prose before the object.
    """
    if not isinstance(text, str) or not text.strip():
        raise RatingParseError("the reply is empty")
    objects = _json_objects(text)
    if not objects:
        raise RatingParseError("no JSON object in the reply")
    found = None
    for start, obj in reversed(objects):
        keyed = {str(k).strip().lower(): v for k, v in obj.items()}
        scores = keyed.get("scores")
        if isinstance(scores, dict):
            found = start, obj, {str(k).strip().lower(): v for k, v in scores.items()}
            break
        if any(a in keyed for a in attributes):
            found = start, obj, keyed
            break
    if found is None:
        raise RatingParseError("the JSON object has no 'scores' object")
    start, obj, scores = found

    problems = []
    missing = [a for a in attributes if a not in scores]
    if missing:
        problems.append(f"missing scores for {', '.join(missing)}")
    values: dict[str, int] = {}
    for a in attributes:
        if a not in scores:
            continue
        v = scores[a]
        if isinstance(v, bool) or not isinstance(v, int | float) or float(v) != int(v):
            problems.append(f"{a}={json.dumps(v)} is not a whole number")
        elif not SCORE_MIN <= v <= SCORE_MAX:
            problems.append(f"{a}={json.dumps(v)} is out of range ({SCORE_MIN}-{SCORE_MAX})")
        else:
            values[a] = int(v)
    if problems:
        raise RatingParseError("; ".join(problems))
    reasoning = obj.get("reasoning") if isinstance(obj.get("reasoning"), str) else None
    if reasoning is None:
        # the prose before the object, less an opening code fence (```json)
        reasoning = re.sub(r"```[A-Za-z]*\s*$", "", text[:start].rstrip())
    return ParsedRating(scores=values, reasoning=reasoning.strip())


# --------------------------------------------------------------------------- LLM judge


def _inert(text: str | None) -> str | None:
    """Text to quote inside a judge prompt: a literal `<image>` in an answer (or a model's
    reply) would otherwise count as an image placeholder and break the request."""
    return None if text is None else text.replace(IMAGE_TOKEN, "[image]")


class LLMJudge:
    """Rate responses by asking a model through any `Generator`.

    One request per response: the item's images, then the prompt with question, response
    (and reference answer, when `use_reference` and the item has one). A reply that
    `parse_rating` rejects is re-asked up to `max_reasks` times, in the same conversation,
    with the reason; still unusable, the Rating is recorded with `error` set and empty
    scores, and the run goes on. A `RequestRejected` from the backend is recorded the same
    way; any other exception stops the run (the cache of an `openai` backend keeps what was
    done, so a rerun resumes).
    """

    def __init__(self, generator: Generator, *, prompt: str | os.PathLike = DEFAULT_PROMPT,
                 max_reasks: int = 1, max_new_tokens: int = 512, temperature: float = 0.0,
                 use_reference: bool = True, batch_size: int = 32, name: str | None = None):
        if max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {max_reasks}")
        self.generator = generator
        self.prompt = load_prompt(prompt)
        self.prompt_hash = self.prompt.sha256
        self.max_reasks = max_reasks
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.use_reference = use_reference
        self.batch_size = batch_size
        ref = "+ref" if use_reference else ""
        self.name = name or f"{generator.name}/{self.prompt.name}{ref}"
        self.stats = {"requests": 0, "reasks": 0, "failed": 0}

    def rate(self, items: Sequence[JudgeItem], *, repeat: int = 0) -> list[list[Rating]]:
        slots = [(i, j) for i, it in enumerate(items) for j in range(len(it.responses))]
        out: list[list[Rating | None]] = [[None] * len(it.responses) for it in items]
        for start in range(0, len(slots), self.batch_size):
            chunk = slots[start:start + self.batch_size]
            for (i, j), rating in zip(chunk, self._rate_chunk(items, chunk, repeat), strict=True):
                out[i][j] = rating
        return [[r for r in row if r is not None] for row in out]

    def _rate_chunk(self, items: Sequence[JudgeItem], chunk: list[tuple[int, int]],
                    repeat: int) -> list[Rating]:
        convs: list[list[Turn]] = []
        for i, j in chunk:
            it = items[i]
            text = self.prompt.render(_inert(it.question), _inert(it.responses[j]),
                                      _inert(it.reference) if self.use_reference else None)
            head = IMAGE_TOKEN * len(it.images) + "\n" if it.images else ""
            convs.append([Turn("user", head + text)])
        results: list[Rating | None] = [None] * len(chunk)
        pending = list(range(len(chunk)))
        for attempt in range(self.max_reasks + 1):
            replies = self._ask([items[chunk[k][0]] for k in pending],
                                [convs[k] for k in pending], repeat)
            still = []
            for k, reply in zip(pending, replies, strict=True):
                i, j = chunk[k]
                it = items[i]
                if isinstance(reply, RequestRejected):
                    results[k] = self._failed(it, j, f"request rejected: {reply}")
                    continue
                try:
                    parsed = parse_rating(reply)
                except RatingParseError as e:
                    if attempt == self.max_reasks:
                        results[k] = self._failed(it, j, f"unusable judge reply after "
                                                         f"{attempt + 1} tries: {e.reason}")
                    else:
                        convs[k] = convs[k] + [Turn("assistant", _inert(reply) or "(empty)"),
                                               Turn("user", self.prompt.reask(e.reason))]
                        still.append(k)
                    continue
                results[k] = Rating(sample_id=it.id, response=it.responses[j],
                                    scores={a: float(v) for a, v in parsed.scores.items()},
                                    reasoning=parsed.reasoning, judge=self.name,
                                    prompt_hash=self.prompt_hash, response_index=j)
            self.stats["reasks"] += len(still)
            pending = still
            if not pending:
                break
        return [r for r in results if r is not None]

    def _ask(self, items: list[JudgeItem], convs: list[list[Turn]], repeat: int
             ) -> list[str | RequestRejected]:
        reqs = [GenRequest(images=list(it.images), messages=conv,
                           max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           meta={"prompt_hash": self.prompt_hash, "repeat": repeat, "id": it.id})
                for it, conv in zip(items, convs, strict=True)]
        self.stats["requests"] += len(reqs)
        return generate_or_reject(self.generator, reqs)

    def _failed(self, it: JudgeItem, j: int, error: str) -> Rating:
        self.stats["failed"] += 1
        return Rating(sample_id=it.id, response=it.responses[j], scores={}, judge=self.name,
                      prompt_hash=self.prompt_hash, response_index=j, error=error)


# --------------------------------------------------------------------------- consistency


def agreement(first: Sequence[Rating], second: Sequence[Rating],
              attributes: Sequence[str] = RATING_ATTRIBUTES) -> dict[str, Any]:
    """Per attribute, the share of responses rated identically / within 1 point in two passes.

    Only responses rated successfully in both passes count (`n`); failures are counted apart.
    """
    if len(first) != len(second):
        raise ValueError(f"two passes of different length ({len(first)} vs {len(second)})")
    both = [(a, b) for a, b in zip(first, second, strict=True) if not a.error and not b.error]
    per: dict[str, dict[str, float]] = {}
    for attr in attributes:
        diffs = [abs(a.scores[attr] - b.scores[attr]) for a, b in both]
        n = len(diffs)
        per[attr] = {"exact": sum(d == 0 for d in diffs) / n if n else 0.0,
                     "within_1": sum(d <= 1 for d in diffs) / n if n else 0.0,
                     "mean_abs_diff": sum(diffs) / n if n else 0.0}
    n = len(both)
    return {
        "n": n,
        "failed": len(first) - n,
        "attributes": per,
        "exact_all": (sum(all(a.scores[x] == b.scores[x] for x in attributes) for a, b in both)
                      / n if n else 0.0),
        "exact_mean": sum(v["exact"] for v in per.values()) / len(per) if per else 0.0,
        "within_1_mean": sum(v["within_1"] for v in per.values()) / len(per) if per else 0.0,
    }


def consistency(judge: Judge, items: Sequence[JudgeItem]) -> dict[str, Any]:
    """Rate `items` twice (the second pass with `repeat=1`, so no cached answer is reused) and
    report the judge's agreement with itself."""
    first = [r for row in judge.rate(items, repeat=0) for r in row]
    second = [r for row in judge.rate(items, repeat=1) for r in row]
    return {"judge": judge.name, "prompt_hash": judge.prompt_hash} | agreement(first, second)


# --------------------------------------------------------------------------- files


class ResumeMismatchError(ValueError):
    """An output file being resumed was made by another model, judge or prompt."""


def group_item(row: dict[str, Any], image_root: str | os.PathLike, *, where: str = ""
               ) -> JudgeItem:
    """A JudgeItem from a sampled group (a row of `mmalign pairs sample`'s output)."""
    from mmalign.io.images import resolve_image
    from mmalign.records import RecordError

    def field_error(reason: str, name: str) -> RecordError:
        return RecordError(reason, field=name, file=where or None, record_id=row.get("id"))

    for key in ("id", "prompt", "responses"):
        if key not in row:
            raise field_error("missing", key)
    responses = row["responses"]
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise field_error("expected a list of strings", "responses")
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise field_error("expected a non-empty list of turns", "prompt")
    turns = []
    for i, t in enumerate(prompt):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str):
            raise field_error("expected {role, content}", f"prompt[{i}]")
        turns.append(Turn(t.get("role", "user"), t["content"]))
    keys = row.get("images") or []
    images = [resolve_image(image_root, k, field=f"images[{i}]") for i, k in enumerate(keys)]
    return JudgeItem(id=str(row["id"]), images=images, question=render_question(turns),
                     responses=list(responses), reference=row.get("reference"),
                     image_keys=list(keys), category=row.get("category", "") or "")


def judge_file(judge: Judge, samples: str | os.PathLike, out: str | os.PathLike, *,
               image_root: str | os.PathLike | None = None, batch_size: int = 8,
               limit: int | None = None, retry_failed: bool = False, progress: bool = True
               ) -> dict[str, Any]:
    """Rate every group of a samples file into `out` (JSONL, one row per group); resumable.

    Each row is the group (id, images, prompt, reference, category, responses) plus
    `ratings` (Rating dicts, one per response), `judge` and `prompt_hash`. Rows are appended
    and fsynced after each batch, so a killed run keeps what it finished; a rerun skips the
    groups already rated (with `retry_failed`, also re-rates groups with a failed rating),
    then the file is rewritten atomically in input order. Returns counts.
    """
    from mmalign.io.atomic import write_jsonl

    samples, out = Path(samples), Path(out)
    root = Path(image_root) if image_root is not None else samples.parent
    every = read_journal(samples)
    groups = every if limit is None else every[:limit]
    done = {r["id"]: r for r in read_journal(out, repair=True)}
    for r in done.values():
        if r.get("judge") != judge.name or r.get("prompt_hash") != judge.prompt_hash:
            raise ResumeMismatchError(
                f"{out} holds ratings by judge {r.get('judge')!r} with prompt hash "
                f"{str(r.get('prompt_hash'))[:12]}, not {judge.name!r} with "
                f"{judge.prompt_hash[:12]}; use another output file or delete it")

    def needs(g: dict[str, Any]) -> bool:
        r = done.get(g["id"])
        return r is None or (retry_failed and any(x.get("error") for x in r["ratings"]))

    todo = [g for g in groups if needs(g)]
    bar = Progress("judge", total=len(groups), done=len(groups) - len(todo), enabled=progress,
                   unit="group")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                items = [group_item(g, root, where=str(samples)) for g in batch]
                rows = []
                for g, ratings in zip(batch, judge.rate(items), strict=True):
                    row = {k: g.get(k) for k in ("id", "images", "prompt", "reference",
                                                 "category", "responses")}
                    row |= {"judge": judge.name, "prompt_hash": judge.prompt_hash,
                            "ratings": [r.to_dict() for r in ratings]}
                    rows.append(row)
                    done[g["id"]] = row
                append_rows(f, rows)
                bar.update(len(batch))
    finally:
        bar.close()
    # Input order, and rows of groups outside this run's --limit are kept, not dropped.
    write_jsonl(out, [done[g["id"]] for g in every if g["id"] in done])
    rows = [done[g["id"]] for g in groups]
    n_ratings = sum(len(r["ratings"]) for r in rows)
    failed = sum(1 for r in rows for x in r["ratings"] if x.get("error"))
    return {"groups": len(rows), "rated_now": len(todo), "ratings": n_ratings,
            "failed": failed, "judge": judge.name, "prompt_hash": judge.prompt_hash}

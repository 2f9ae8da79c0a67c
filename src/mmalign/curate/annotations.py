"""Human (or oracle) annotations -> (better, worse) pairs for the two reward models.

Accepted files (JSON array or JSONL; each row is one image's annotation group):

Align2LLaVA's released format (reward_model/datasets/preference/{question,answer}/*.json):
  question sets  {"id", "image", "questions": [[q, q, ...], ...], "score": [s, ...]}
  answers        {"id", "image", "conversations": [
                     {"from": "human", "value": q},
                     {"from": "gpt", "value": [a, a, ...], "score": [s, ...]}, ...]}
                 (several human/gpt turns may follow each other; each turn is one group)

The world's oracle format (world/oracle.py, `annotations/*.jsonl`):
  question sets  {"id", "image", "category", "candidates": [{"questions": [...], "score": s}]}
  answers        {"id", "image", "category", "question": q,
                  "candidates": [{"answer": a, "score": s}, ...]}

Anywhere a `score` may appear, a `rank` may be given instead (1 = best; a list of ranks in the
released layout, one integer per candidate in ours). Scores must lie in [0, 1]; ranks are
positive integers. A group holds scores or ranks, never both.

Pair rule (the released code's): every ordered pair (i, j) with candidate i strictly better
than j gives (better=i, worse=j); ties give nothing. Augmentation: with probability
`augment_rate` per candidate, add (candidate, corrupted copy); answers are corrupted by a word
shuffle or a random crop, question sets by shuffling or cropping each question, or by
duplicating some of the questions. Two deliberate differences from the released code: a
corrupted copy always differs from its original (a crop drops at least one word, a shuffle is
redrawn; a candidate that cannot be made different, such as a single word, is not
augmented), and question-set corruption keeps the words of each question (the released code
joins the characters of each corrupted question with spaces, an apparent slip).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.io.containers import DataFileError, read_json_records
from mmalign.io.images import resolve_image
from mmalign.records import IMAGE_TOKEN, RecordError

QUESTION, ANSWER = "question", "answer"
KINDS = (QUESTION, ANSWER)
DEFAULT_AUGMENT_RATE = 0.25


@dataclass
class AnnotationGroup:
    """One image's K candidates with their human judgement.

    `candidates` are question sets (lists of questions) for the question RM and answer texts
    for the answer RM; `values` are the scores, or the ranks when `by == "rank"`.
    """

    id: str
    image: str  # relative to the image root
    kind: str  # question | answer
    candidates: list[Any]
    values: list[float]
    by: str = "score"  # score | rank
    category: str = ""
    question: str | None = None  # the asked question (answer groups)
    source: str = ""  # file:record, for messages

    def better(self, i: int, j: int) -> bool:
        """Is candidate i strictly better than candidate j? (Higher score, or lower rank.)"""
        if self.by == "rank":
            return self.values[i] < self.values[j]
        return self.values[i] > self.values[j]


@dataclass
class RewardPair:
    """One training/eval comparison for a reward model: the same image, two texts."""

    image: str
    better: str  # the reward model's input text (see `rm_text`)
    worse: str
    group: str  # annotation group id (held-out splits are made by group)
    origin: str = "annotation"  # annotation | shuffle | crop | duplicate
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "better": self.better, "worse": self.worse,
                "group": self.group, "origin": self.origin, "meta": self.meta}


# --------------------------------------------------------------------------- RM input texts


def strip_image_tokens(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def question_text(questions: Iterable[str]) -> str:
    """The question RM's text: the image's questions, one per line (placeholders removed)."""
    return "\n".join(strip_image_tokens(q) for q in questions)


def answer_text(question: str, answer: str) -> str:
    """The answer RM's text, as in the paper: "Question: q\\nAnswer: a"."""
    return f"Question: {strip_image_tokens(question)}\nAnswer: {strip_image_tokens(answer)}"


def split_answer_text(text: str) -> tuple[str, str] | None:
    """(question, answer) of an answer RM's text; None for any other text."""
    if not text.startswith("Question: ") or "\nAnswer: " not in text:
        return None
    question, answer = text.removeprefix("Question: ").split("\nAnswer: ", 1)
    return question, answer


def rm_text(group: AnnotationGroup, candidate: Any) -> str:
    if group.kind == QUESTION:
        return question_text(candidate)
    assert group.question is not None
    return answer_text(group.question, candidate)


# --------------------------------------------------------------------------- reading


def detect_kind(row: dict[str, Any]) -> str | None:
    if "questions" in row:
        return QUESTION
    if "conversations" in row or "question" in row:
        return ANSWER
    cands = row.get("candidates")
    if isinstance(cands, list) and cands and isinstance(cands[0], dict):
        if "questions" in cands[0]:
            return QUESTION
        if "answer" in cands[0]:
            return ANSWER
    return None


def read_annotations(path: str | os.PathLike, *, kind: str | None = None,
                     image_root: str | os.PathLike | None = None,
                     check_images: bool = True) -> list[AnnotationGroup]:
    """Every annotation group of `path`. A malformed row raises a `RecordError` naming the
    file, the record index (0-based line or element), the id and the field.

    `kind` (question | answer) is detected from the first row when not given; every row must
    be of that kind. Image paths must stay inside `image_root` (default: the file's folder);
    with `check_images` the files must exist.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; expected one of {KINDS}")
    file = str(path)
    root = Path(image_root) if image_root is not None else Path(path).parent
    groups: list[AnnotationGroup] = []
    seen_ids: dict[str, int] = {}
    for index, obj, _ in read_json_records(path):
        if isinstance(obj, RecordError):
            raise obj
        rid = obj.get("id")
        rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else None
        try:
            row_kind = detect_kind(obj)
            if row_kind is None:
                raise RecordError("cannot tell a question-set row from an answer row: expected "
                                  "'questions', 'conversations', 'question' or 'candidates'",
                                  field="candidates")
            kind = kind or row_kind
            if row_kind != kind:
                raise RecordError(f"{row_kind} row in a file of {kind} annotations",
                                  field="candidates" if "candidates" in obj else None)
            new = _parse_row(obj, kind)
            image = new[0].image
            resolved = resolve_image(root, image, field="image")
            if check_images and not resolved.is_file():
                raise RecordError(f"image file not found: {resolved} (image root {root}; "
                                  f"pass the image root if the paths are relative to another "
                                  f"folder)", field="image")
        except RecordError as e:
            raise e.located(file=file, index=index, record_id=rid) from None
        for g in new:
            if g.id in seen_ids:
                raise RecordError(f"duplicate id (also record {seen_ids[g.id]})", field="id",
                                  file=file, index=index, record_id=g.id)
            seen_ids[g.id] = index
            g.source = f"{file}:{index}"
        groups.extend(new)
    if not groups:
        raise DataFileError(f"{file}: no annotation rows")
    return groups


def _parse_row(obj: dict[str, Any], kind: str) -> list[AnnotationGroup]:
    rid = _req_str(obj, "id")
    image = _req_str(obj, "image")
    category = obj.get("category", "") or ""
    if not isinstance(category, str):
        raise RecordError("expected a string", field="category")
    if "candidates" in obj:  # the world's oracle layout: one object per candidate
        cands = obj["candidates"]
        if not isinstance(cands, list):
            raise RecordError(f"expected a list, got {type(cands).__name__}", field="candidates")
        key = "questions" if kind == QUESTION else "answer"
        by = None
        for i, c in enumerate(cands):
            if not isinstance(c, dict):
                raise RecordError(f"expected an object, got {type(c).__name__}",
                                  field=f"candidates[{i}]")
            if key not in c:
                raise RecordError("missing", field=f"candidates[{i}].{key}")
            c_by = _by(c, f"candidates[{i}]")
            if by is not None and c_by != by:
                raise RecordError("mixes 'score' and 'rank' in one group",
                                  field=f"candidates[{i}].{c_by}")
            by = c_by
        by = by or "score"
        return [_group(rid, image, kind, category, obj.get("question"),
                       [c[key] for c in cands], [c[by] for c in cands], by,
                       text_at=lambda i: f"candidates[{i}].{key}",
                       value_at=lambda i: f"candidates[{i}].{by}", list_field="candidates")]
    if kind == QUESTION:  # released layout: parallel lists `questions` and `score`
        by = _by(obj)
        return [_group(rid, image, kind, category, None, obj.get("questions"), obj.get(by), by,
                       text_at=lambda i: f"questions[{i}]", value_at=lambda i: f"{by}[{i}]",
                       list_field="questions")]
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RecordError("expected a non-empty list of turns", field="conversations")
    if len(conv) % 2:
        raise RecordError(f"{len(conv)} turns: questions and answers must alternate in pairs",
                          field="conversations")
    groups = []
    for t in range(0, len(conv), 2):
        for k in (t, t + 1):
            if not isinstance(conv[k], dict):
                raise RecordError("expected an object", field=f"conversations[{k}]")
        human, gpt = conv[t], conv[t + 1]
        if human.get("from") not in ("human", "user"):
            raise RecordError(f"expected 'human', got {human.get('from')!r}",
                              field=f"conversations[{t}].from")
        if gpt.get("from") not in ("gpt", "assistant"):
            raise RecordError(f"expected 'gpt', got {gpt.get('from')!r}",
                              field=f"conversations[{t + 1}].from")
        a = f"conversations[{t + 1}]"
        by = _by(gpt, a)
        gid = rid if len(conv) == 2 else f"{rid}#{t // 2}"
        groups.append(_group(gid, image, kind, category, human.get("value"), gpt.get("value"),
                             gpt.get(by), by, text_at=lambda i, a=a: f"{a}.value[{i}]",
                             value_at=lambda i, a=a, by=by: f"{a}.{by}[{i}]",
                             list_field=f"{a}.value", question_field=f"conversations[{t}].value"))
    return groups


def _by(obj: dict[str, Any], where: str = "") -> str:
    has = [k for k in ("score", "rank") if k in obj]
    if len(has) != 1:
        raise RecordError("needs exactly one of 'score' or 'rank'",
                          field=f"{where}.score" if where else "score")
    return has[0]


def _group(rid: str, image: str, kind: str, category: str, question: Any, texts: Any,
           values: Any, by: str, *, text_at, value_at, list_field: str,
           question_field: str = "question") -> AnnotationGroup:
    if kind == ANSWER and (not isinstance(question, str) or not question.strip()):
        raise RecordError("expected a non-empty question string", field=question_field)
    if not isinstance(texts, list):
        raise RecordError(f"expected a list of candidates, got {type(texts).__name__}",
                          field=list_field)
    if not isinstance(values, list):
        raise RecordError(f"expected a list of {by}s, got {type(values).__name__}",
                          field=value_at(0).rsplit("[", 1)[0])
    if len(texts) != len(values):
        raise RecordError(f"{len(texts)} candidates but {len(values)} {by}s", field=list_field)
    if not texts:
        raise RecordError("no candidates", field=list_field)
    return AnnotationGroup(
        id=rid, image=image, kind=kind, category=category,
        candidates=[_candidate(c, kind, text_at(i)) for i, c in enumerate(texts)],
        values=[_value(v, by, value_at(i)) for i, v in enumerate(values)], by=by,
        question=question if kind == ANSWER else None)


def _candidate(c: Any, kind: str, where: str) -> Any:
    if kind == ANSWER:
        if not isinstance(c, str) or not c.strip():
            raise RecordError(f"expected a non-empty answer string, got {c!r}", field=where)
        return c
    if isinstance(c, str):  # a set of one question may be written without the list
        c = [c]
    if not isinstance(c, list) or not c:
        raise RecordError(f"expected a non-empty list of questions, got {c!r}", field=where)
    for j, q in enumerate(c):
        if not isinstance(q, str) or not q.strip():
            raise RecordError(f"expected a non-empty question string, got {q!r}",
                              field=f"{where}[{j}]")
    return list(c)


def _value(v: Any, by: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RecordError(f"expected a number, got {v!r}", field=where)
    if by == "score" and not 0.0 <= v <= 1.0:
        raise RecordError(f"score {v} is outside [0, 1]", field=where)
    if by == "rank" and (v != int(v) or v < 1):
        raise RecordError(f"rank must be a positive integer, got {v!r}", field=where)
    return float(v)


def _req_str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and key == "id":
        return str(v)
    if not isinstance(v, str) or not v:
        raise RecordError("missing" if v is None else f"expected a non-empty string, got {v!r}",
                          field=key)
    return v


# --------------------------------------------------------------------------- pairs


def corrupt_text(text: str, rng: random.Random, mode: str | None = None) -> tuple[str, str] | None:
    """A word shuffle or a random crop of `text` that differs from it; None if impossible.

    Returns (corrupted, mode). A crop keeps a random non-empty, strict subset of the words in
    their order (the released code could keep all of them, giving a no-op pair).
    """
    words = text.strip().split()
    if len(words) < 2:
        return None
    mode = mode or rng.choice(("shuffle", "crop"))
    if mode == "shuffle":
        if len(set(words)) < 2:
            return None
        out = list(words)
        while out == words:
            rng.shuffle(out)
        return " ".join(out), mode
    if mode == "crop":
        keep = sorted(rng.sample(range(len(words)), rng.randint(1, len(words) - 1)))
        return " ".join(words[i] for i in keep), mode
    raise ValueError(f"unknown corruption {mode!r}")


def corrupt_questions(questions: list[str], rng: random.Random, mode: str | None = None
                      ) -> tuple[list[str], str] | None:
    """Corrupt a question set: shuffle or crop every question, or duplicate some of them."""
    mode = mode or rng.choice(("shuffle", "crop", "duplicate"))
    if mode == "duplicate":
        # Insert copies of a random subset of the questions at random positions.
        picks = rng.sample(range(len(questions)), rng.randint(1, len(questions)))
        out = list(questions)
        for i in picks:
            out.insert(rng.randint(0, len(out)), questions[i])
        return out, mode
    out, changed = [], False
    for q in questions:
        res = corrupt_text(q, rng, mode)
        out.append(res[0] if res else q)
        changed |= res is not None
    return (out, mode) if changed else None


def build_pairs(groups: Iterable[AnnotationGroup], *, augment_rate: float = DEFAULT_AUGMENT_RATE,
                seed: int = 0) -> tuple[list[RewardPair], dict[str, int]]:
    """(better, worse) pairs from the annotation groups, plus augmentation pairs.

    Returns the pairs and counts: `annotation` pairs, `ties` dropped, `same_text` dropped
    (two candidates with the same text cannot teach an order), `augmented` pairs by mode,
    `not_augmentable` candidates drawn for augmentation that could not be corrupted.
    """
    if not 0.0 <= augment_rate <= 1.0:
        raise ValueError(f"augment_rate must be in [0, 1], got {augment_rate}")
    # A stream of its own (not Random(seed)), so other seeded draws do not line up with it.
    rng = random.Random(f"mmalign.curate.augment:{seed}")
    pairs: list[RewardPair] = []
    counts = {"groups": 0, "candidates": 0, "annotation": 0, "ties": 0, "same_text": 0,
              "augmented": 0, "not_augmentable": 0}
    for g in groups:
        counts["groups"] += 1
        texts = [rm_text(g, c) for c in g.candidates]
        n = len(texts)
        counts["candidates"] += n
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                if g.better(i, j):
                    if texts[i] == texts[j]:
                        counts["same_text"] += 1
                        continue
                    pairs.append(RewardPair(g.image, texts[i], texts[j], g.id))
                    counts["annotation"] += 1
                elif i < j and g.values[i] == g.values[j]:
                    counts["ties"] += 1
            # One draw per candidate, whatever the outcome, so the rate is exactly the
            # probability of an augmentation attempt (as in the released code).
            if augment_rate and rng.random() < augment_rate:
                res = (corrupt_questions(g.candidates[i], rng) if g.kind == QUESTION
                       else corrupt_text(g.candidates[i], rng))
                if res is None:
                    counts["not_augmentable"] += 1
                    continue
                bad, mode = res
                worse = rm_text(g, bad)
                if worse == texts[i]:
                    counts["not_augmentable"] += 1
                    continue
                pairs.append(RewardPair(g.image, texts[i], worse, g.id, origin=mode))
                counts["augmented"] += 1
                counts[f"augmented_{mode}"] = counts.get(f"augmented_{mode}", 0) + 1
    return pairs, counts


def split_groups(groups: list[AnnotationGroup], eval_fraction: float, seed: int = 0
                 ) -> tuple[list[AnnotationGroup], list[AnnotationGroup]]:
    """Split by image group (never by pair: pairs of one image share text, which would leak).

    At least one group is held out when `eval_fraction > 0` and there are two or more groups.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    n_eval = int(len(groups) * eval_fraction)
    if eval_fraction > 0 and n_eval == 0 and len(groups) >= 2:
        n_eval = 1
    held = set(order[:n_eval])
    return ([g for i, g in enumerate(groups) if i not in held],
            [g for i, g in enumerate(groups) if i in held])


def write_pairs(path: str | os.PathLike, pairs: Iterable[RewardPair]) -> int:
    from mmalign.io.atomic import write_jsonl

    return write_jsonl(path, (p.to_dict() for p in pairs))

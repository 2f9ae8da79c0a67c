"""Inner-LLM style alignment: the model rewrites each kept answer in its own words, then
reviews original vs rewrite and keeps one; a fact guard rejects rewrites that lose or change
facts.

    gen = HFGenerator.from_pretrained("sft_model/")          # the default: the VLM itself
    guard = SceneGuard.from_world("world/")                  # or LexicalGuard() elsewhere
    kept, report = rewrite_samples(samples, gen, guard, RewriteConfig())

For every assistant turn of every record:
  1. rewrite: the generator gets prompts/rewrite_v1.txt filled with the turn's question and
     answer (text only by default, as the paper's inner LLM reads text; `include_image` sends
     the image too) and returns its own version;
  2. guard: a rewrite that is empty, or that drops or changes a fact, is rejected and the
     original stays (`rejected`);
  3. review: the generator gets prompts/review_v1.txt with both answers, as A and B in a seeded
     random order (so a model that always says "A" does not always pick one side), and names
     one. The rewrite replaces the answer only when chosen (`rewritten`); otherwise, or when
     the reply names neither, the original stays (`kept`).
Only answers are rewritten: they are the training targets whose style the model learns;
questions are what users ask and stay as they are.

Guards. `SceneGuard` checks exactly against the world's scene graph (scenes.jsonl is the image
content, not the defect truth file): every shape the rewrite mentions, with its colour and
size, must exist in the scene (or, when negated, must not), a count before a shape or "shapes"
must equal the scene's count, and every object mention, number, colour, grid position,
relation and yes/no of the original must survive. `LexicalGuard` (any corpus) requires the
rewrite to keep exactly the original's numbers, colour words, object nouns (from a vocabulary:
COCO's 80 classes plus the world's shapes), negation and leading yes/no. Both are strict on
purpose: a rejected rewrite costs nothing (the original stays), an accepted false one teaches
a hallucination.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmalign.backends.base import Generator, GenRequest
from mmalign.io.prompts import read_prompt
from mmalign.records import IMAGE_TOKEN, Sample, Turn
from mmalign.train.logps import through_turn_text
from mmalign.world import vocab
from mmalign.world.facts import Mention, mentions

# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    sha256: str  # of the file's bytes: recorded with every output made with it

    def render(self, **fields: str) -> str:
        """Fill `{name}` placeholders (plain replacement: answers may hold braces)."""
        out = self.text
        for k, v in fields.items():
            out = out.replace("{" + k + "}", v)
        return out.strip()


def load_prompt(name_or_path: str | os.PathLike, required: Sequence[str] = ()) -> Prompt:
    """A packaged prompt by name (`rewrite_v1`) or any .txt file by path."""
    prompt = Prompt(*read_prompt(name_or_path))
    name = prompt.name
    missing = [k for k in required if "{" + k + "}" not in prompt.text]
    if missing:
        raise ValueError(f"prompt {name!r} lacks the placeholder(s) "
                         f"{', '.join('{' + k + '}' for k in missing)}")
    return prompt


# --------------------------------------------------------------------------- lexical facts

_NUMBERS = {w: i for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
     "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
     "nineteen", "twenty"))} | {"single": 1, "both": 2, "twice": 2, "pair": 2, "dozen": 12}
COLOR_WORDS = frozenset(vocab.COLOR_NAMES) | frozenset(
    ("black", "white", "gray", "grey", "brown", "pink", "beige", "gold", "golden", "silver",
     "cyan", "magenta", "violet", "navy", "teal", "maroon", "tan", "turquoise", "crimson"))
COCO_NOUNS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
_IRREGULAR = {"person": ["people", "persons"], "mouse": ["mice"], "knife": ["knives"],
              "sheep": ["sheep"], "skis": ["skis"], "scissors": ["scissors"]}
_NEGATIONS = re.compile(r"\b(no|not|none|nothing|never|without|neither|nor)\b|n't\b",
                        re.IGNORECASE)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?")


def _plural_forms(noun: str) -> list[str]:
    if noun in _IRREGULAR:
        return [noun, *_IRREGULAR[noun]]
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return [noun, (head + " " if head else "") + plural]


def _noun_table(nouns: Sequence[str]) -> tuple[re.Pattern, dict[str, str]]:
    forms = {f: n for n in nouns for f in _plural_forms(n)}
    pattern = re.compile(r"\b(" + "|".join(re.escape(f) for f in
                                           sorted(forms, key=len, reverse=True)) + r")\b")
    return pattern, forms


DEFAULT_NOUNS = tuple(dict.fromkeys(COCO_NOUNS + vocab.SHAPES))
_DEFAULT_NOUN_TABLE = _noun_table(DEFAULT_NOUNS)


# "one" is also a pronoun ("one of them", "as far as one can see"): not a count there.
_PRONOUN_ONE = re.compile(r"\bone\s+(?:of|can|could|may|might|would|should|must|another|is|"
                          r"was|that|which|who|has|had)\b")


def numbers(text: str) -> set[float]:
    """Numbers stated in words or digits ("two", "2", "a dozen")."""
    out = set()
    for w in _WORD.findall(_PRONOUN_ONE.sub(" ", text.lower())):
        if w in _NUMBERS:
            out.add(float(_NUMBERS[w]))
        elif w[0].isdigit():
            out.add(float(w))
    return out


def colour_words(text: str) -> set[str]:
    return {"gray" if w == "grey" else w for w in _WORD.findall(text.lower()) if w in COLOR_WORDS}


def object_nouns(text: str, table: tuple[re.Pattern, dict[str, str]] = _DEFAULT_NOUN_TABLE
                 ) -> set[str]:
    pattern, forms = table
    return {forms[m] for m in pattern.findall(text.lower())}


def polarity(text: str) -> str | None:
    """'yes' or 'no' when the answer opens with one or concludes "the answer is yes/no"."""
    m = (re.match(r"\W*(yes|no)\b", text.lower())
         or re.search(r"\banswer is (yes|no)\b", text.lower()))
    return m.group(1) if m else None


def incomplete(original: str, rewrite: str) -> bool:
    """A rewrite that stops without closing punctuation where the original had it (cut off
    by the token limit, or a fragment) states less than it seems to."""
    def closed(t: str) -> bool:
        return t.rstrip().rstrip("\"')]").endswith((".", "!", "?"))
    return closed(original) and not closed(rewrite)


def negated(text: str) -> bool:
    return bool(_NEGATIONS.search(text))


def _diff(kind: str, orig: set, new: set, allowed_extra: set | None = None) -> str | None:
    dropped = orig - new
    added = new - orig - (allowed_extra or set())
    if dropped:
        return f"{kind} dropped: {', '.join(sorted(map(_fmt, dropped)))}"
    if added:
        return f"{kind} added: {', '.join(sorted(map(_fmt, added)))}"
    return None


def _fmt(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


# --------------------------------------------------------------------------- guards


class FactGuard(Protocol):
    name: str

    def check(self, question: str, original: str, rewrite: str, sample: Sample) -> str | None:
        """None if `rewrite` keeps the facts of `original`, else the reason it does not."""
        ...


class LexicalGuard:
    """Numbers, colour words, object nouns, negation and yes/no must match exactly."""

    name = "lexical"

    def __init__(self, nouns: Sequence[str] = DEFAULT_NOUNS):
        self.table = _noun_table(nouns) if tuple(nouns) != DEFAULT_NOUNS else _DEFAULT_NOUN_TABLE

    def check(self, question: str, original: str, rewrite: str, sample: Sample) -> str | None:
        if incomplete(original, rewrite):
            return "incomplete: the rewrite stops mid-sentence"
        if polarity(original) != polarity(rewrite):
            return f"yes/no changed: {polarity(original)} -> {polarity(rewrite)}"
        if negated(original) != negated(rewrite):
            return "negation " + ("dropped" if negated(original) else "added")
        return (_diff("number", numbers(original), numbers(rewrite))
                or _diff("colour", colour_words(original), colour_words(rewrite))
                or _diff("object", object_nouns(original, self.table),
                         object_nouns(rewrite, self.table)))


def _position_cells(text: str) -> set[tuple[int, int]]:
    """Grid cells named in either voice ("top left", "upper left corner", "middle", ...)."""
    low = text.lower()
    found = set()
    phrases = [(p, c) for table in (vocab.MACHINE_POSITION, vocab.CLEAN_POSITION)
               for c, p in table.items()]
    # Longest first, each span used once: "upper left corner" must not also count as "left".
    taken = [False] * len(low)
    for phrase, cell in sorted(phrases, key=lambda x: -len(x[0])):
        # "left of" / "right of" are relations, not places
        tail = r"(?!\s+of\b)" if phrase in ("left", "right") else ""
        for m in re.finditer(r"\b" + re.escape(phrase) + r"\b" + tail, low):
            if not any(taken[m.start():m.end()]):
                found.add(cell)
                for i in range(m.start(), m.end()):
                    taken[i] = True
    return found


_RELATIONS = re.compile(r"\b(left of|right of|above|below)\b")
_COUNT_BEFORE = re.compile(r"\b(" + "|".join(_NUMBERS) + r"|\d+)\s+$")
_TOTAL = re.compile(r"\b(" + "|".join(_NUMBERS) + r"|\d+)\s+(?:geometric\s+)?shapes?\b")


_SHAPE_WORDS = "|".join(sorted({f for sh in vocab.SHAPES for f in (sh, vocab.PLURALS[sh])},
                               key=len, reverse=True))
_ATTRS = "|".join(vocab.SIZES + vocab.COLOR_NAMES)
# "the (small) (red) circle (in the image) is (not) large": an attribute said of a shape.
_PREDICATE = re.compile(
    r"\b(?:(?P<size>small|large)\s+)?(?:(?P<color>" + "|".join(vocab.COLOR_NAMES) + r")\s+)?"
    r"(?P<shape>" + _SHAPE_WORDS + r")(?:\s+in\s+the\s+(?:image|picture))?\s+(?:is|are)\s+"
    r"(?P<neg>not\s+)?(?P<attr>" + _ATTRS + r")\b", re.IGNORECASE)
_SINGULAR = {vocab.PLURALS[sh]: sh for sh in vocab.SHAPES}


def _sizes(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w in vocab.SIZES}


def _relations(text: str) -> set[str]:
    return set(_RELATIONS.findall(text.lower()))


class SceneGuard:
    """Exact check against the world's scene graphs (see the module docstring)."""

    name = "scene"

    def __init__(self, scenes: dict[str, Any], fallback: FactGuard | None = None):
        self.scenes = scenes  # image path (relative to the world root) or image id -> Scene
        self.fallback = fallback or LexicalGuard()
        self.fallbacks = 0  # records whose image had no scene (checked lexically)

    @classmethod
    def from_world(cls, world: str | os.PathLike) -> SceneGuard:
        return cls.from_scenes(Path(world) / "scenes.jsonl")

    @classmethod
    def from_scenes(cls, path: str | os.PathLike) -> SceneGuard:
        from mmalign.world.scene import read_scene_file, scenes_by_image

        return cls(scenes_by_image(read_scene_file(path)))

    def scene_of(self, sample: Sample):
        if len(sample.images) != 1:
            return None
        rel = sample.images[0]
        return self.scenes.get(rel) or self.scenes.get(Path(rel).stem)

    def check(self, question: str, original: str, rewrite: str, sample: Sample) -> str | None:
        scene = self.scene_of(sample)
        if scene is None:
            self.fallbacks += 1
            return self.fallback.check(question, original, rewrite, sample)
        if incomplete(original, rewrite):
            return "incomplete: the rewrite stops mid-sentence"
        reason = self._true_of_scene(rewrite, scene)
        if reason:
            return reason
        if polarity(original) != polarity(rewrite):
            return f"yes/no changed: {polarity(original)} -> {polarity(rewrite)}"
        # What the question already says need not be repeated in the answer ("Yes." for
        # "Is the circle above the cross?"), so those items may be dropped, never changed.
        colours = set(vocab.COLOR_NAMES)
        return (self._kept_mentions(question, original, rewrite)
                or _diff("number", numbers(original) - numbers(question), numbers(rewrite),
                         numbers(question))
                or _diff("colour", (colour_words(original) - colour_words(question)) & colours,
                         colour_words(rewrite) & colours, scene.colors())
                or _diff("size", _sizes(original) - _sizes(question), _sizes(rewrite),
                         _sizes(question))
                or _diff("position", _position_cells(original) - _position_cells(question),
                         _position_cells(rewrite), _position_cells(question))
                or _diff("relation", _relations(original) - _relations(question),
                         _relations(rewrite), _relations(question)))

    @staticmethod
    def _true_of_scene(text: str, scene) -> str | None:
        for m in mentions(text):
            objs = [o for o in scene.objects if o.shape == m.shape
                    and (m.color is None or o.color == m.color)
                    and (m.size is None or o.size == m.size)]
            phrase = " ".join(x for x in (m.size, m.color, m.shape) if x)
            if m.negated and objs:
                return f"false: says there is no {phrase}, the scene has one"
            if not m.negated and not objs:
                return f"false: mentions a {phrase}, the scene has none"
            count = _COUNT_BEFORE.search(text[:m.start].lower())
            if count and not m.negated:
                n = _as_int(count.group(1))
                if n is not None and n != len(objs):
                    return f"false: says {n} {phrase}(s), the scene has {len(objs)}"
        for m in _PREDICATE.finditer(text):
            shape = m.group("shape").lower()
            shape = _SINGULAR.get(shape, shape)
            objs = [o for o in scene.objects if o.shape == shape
                    and (m.group("color") is None or o.color == m.group("color").lower())
                    and (m.group("size") is None or o.size == m.group("size").lower())]
            attr = m.group("attr").lower()
            has = [attr in (o.size, o.color) for o in objs]
            if objs and not (any(not h for h in has) if m.group("neg") else any(has)):
                return f"false: calls the {shape} {'not ' if m.group('neg') else ''}{attr}"
        for m in _TOTAL.finditer(text.lower()):
            n = _as_int(m.group(1))
            if n is not None and n != len(scene.objects):
                return f"false: says {n} shapes in total, the scene has {len(scene.objects)}"
        return None

    @staticmethod
    def _kept_mentions(question: str, original: str, rewrite: str) -> str | None:
        asked = mentions(question)
        new = mentions(rewrite)
        for m in mentions(original):
            if any(q.shape == m.shape and _covers(q, m, negation=False) for q in asked):
                continue  # restating the asked-about object is optional ("Two.")
            if not any(_covers(r, m) for r in new):
                phrase = " ".join(x for x in (m.size, m.color, m.shape) if x)
                return f"object dropped: {'no ' if m.negated else ''}{phrase}"
        return None


def _covers(r: Mention, m: Mention, negation: bool = True) -> bool:
    """Does mention r state at least what m states (same shape, colour, size, negation)?"""
    return (r.shape == m.shape and (r.negated == m.negated or not negation)
            and (m.color is None or r.color == m.color) and (m.size is None or r.size == m.size))


def _as_int(word: str) -> int | None:
    if word in _NUMBERS:
        return _NUMBERS[word]
    try:
        return int(word)
    except ValueError:
        return None


# --------------------------------------------------------------------------- rewriting


@dataclass
class RewriteConfig:
    rewrite_prompt: str = "rewrite_v1"  # packaged name or a .txt path
    review_prompt: str = "review_v1"
    include_image: bool = False  # send the image with the rewrite/review prompts
    max_new_tokens: int = 256
    review_max_new_tokens: int = 8
    temperature: float = 0.0
    batch_size: int = 32  # turns per generate() call
    seed: int = 0  # A/B order of the review


@dataclass
class TurnDecision:
    turn: int  # index of the assistant turn within the record
    decision: str  # rewritten | kept | rejected
    reason: str = ""
    rewrite: str = ""
    review: str = ""  # the reviewer's raw reply

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v != ""}


@dataclass
class _Job:
    sample: int
    turn: int  # assistant-turn index
    position: int  # index into sample.turns
    question: str
    answer: str
    rewrite: str = ""
    decision: TurnDecision | None = None
    swap: bool = False


def qa_turns(s: Sample) -> list[tuple[int, str, str]]:
    """(position in turns, question, answer) for each assistant turn."""
    out, question = [], ""
    for i, t in enumerate(s.turns):
        if t.role == "user":
            question = t.content
        elif t.role == "assistant":
            out.append((i, question, t.content))
    return out


def clean_rewrite(text: str) -> str:
    """Drop what models wrap answers in: an "Answer:" label, quotes, surrounding space."""
    t = text.strip()
    t = re.sub(r"^(?:rewritten\s+)?answer\s*:\s*", "", t, flags=re.IGNORECASE)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
    return t


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from the reviewer's reply: the first standalone letter A/B."""
    m = re.search(r"\b([AB])\b", text.strip())
    return m.group(1) if m else None


def rewrite_samples(samples: Sequence[Sample], generator: Generator, guard: FactGuard,
                    cfg: RewriteConfig | None = None, *, image_root: str | os.PathLike = ".",
                    log: Callable[[str], None] = lambda _: None
                    ) -> tuple[list[Sample], dict[str, Any]]:
    """Rewrite, guard and review every answer; return the new samples and a report."""
    cfg = cfg or RewriteConfig()
    rw_prompt = load_prompt(cfg.rewrite_prompt, ("question", "answer"))
    rv_prompt = load_prompt(cfg.review_prompt, ("question", "a", "b"))
    rng = random.Random(cfg.seed)
    root = Path(image_root)
    jobs = [_Job(k, t, pos, _plain(q), a)
            for k, s in enumerate(samples) for t, (pos, q, a) in enumerate(qa_turns(s))]

    def request(s: Sample, text: str, max_new: int) -> GenRequest:
        images = [root / p for p in s.images] if cfg.include_image else []
        prefix = IMAGE_TOKEN * len(images) + "\n" if images else ""
        return GenRequest(images=images, messages=[Turn("user", prefix + text)],
                          max_new_tokens=max_new, temperature=cfg.temperature, seed=cfg.seed)

    # 1. rewrite
    for start in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[start:start + cfg.batch_size]
        outs = generator.generate([request(samples[j.sample], rw_prompt.render(
            question=j.question, answer=j.answer), cfg.max_new_tokens) for j in chunk])
        for j, text in zip(chunk, outs, strict=True):
            j.rewrite = clean_rewrite(text)
        log(f"  rewrote {min(start + cfg.batch_size, len(jobs))}/{len(jobs)} answers")

    # 2. guard
    to_review = []
    for j in jobs:
        if not j.rewrite:
            j.decision = TurnDecision(j.turn, "rejected", "empty rewrite")
        elif j.rewrite == j.answer.strip():
            j.decision = TurnDecision(j.turn, "kept", "rewrite identical to the original")
        else:
            reason = guard.check(j.question, j.answer, j.rewrite, samples[j.sample])
            if reason:
                j.decision = TurnDecision(j.turn, "rejected", reason, j.rewrite)
            else:
                to_review.append(j)

    # 3. review (A/B order drawn per turn, seeded)
    for j in to_review:
        j.swap = rng.random() < 0.5
    for start in range(0, len(to_review), cfg.batch_size):
        chunk = to_review[start:start + cfg.batch_size]
        reqs = []
        for j in chunk:
            a, b = (j.rewrite, j.answer) if j.swap else (j.answer, j.rewrite)
            reqs.append(request(samples[j.sample], rv_prompt.render(question=j.question, a=a,
                                                                   b=b),
                                cfg.review_max_new_tokens))
        for j, text in zip(chunk, generator.generate(reqs), strict=True):
            choice = parse_choice(text)
            picked_rewrite = choice == ("A" if j.swap else "B")
            if choice is None:
                j.decision = TurnDecision(j.turn, "kept", "review named neither answer",
                                          j.rewrite, text)
            elif picked_rewrite:
                j.decision = TurnDecision(j.turn, "rewritten", "", j.rewrite, text)
            else:
                j.decision = TurnDecision(j.turn, "kept", "review preferred the original",
                                          j.rewrite, text)

    # Assemble the new samples.
    by_sample: dict[int, list[_Job]] = {}
    for j in jobs:
        by_sample.setdefault(j.sample, []).append(j)
    out = []
    for k, s in enumerate(samples):
        turns = list(s.turns)
        decisions = []
        for j in by_sample.get(k, []):
            assert j.decision is not None
            if j.decision.decision == "rewritten":
                turns[j.position] = Turn("assistant", j.rewrite)
            decisions.append(j.decision.to_dict())
        meta = dict(s.meta)
        meta["rewrite"] = {"turns": decisions, "backend": getattr(generator, "name", ""),
                           "guard": guard.name, "rewrite_prompt_sha256": rw_prompt.sha256,
                           "review_prompt_sha256": rv_prompt.sha256}
        out.append(Sample(s.id, s.images, turns, s.category, s.source, meta))

    counts = {"records": len(samples), "answers": len(jobs), "rewritten": 0, "kept": 0,
              "rejected": 0}
    reasons: dict[str, int] = {}
    for j in jobs:
        assert j.decision is not None
        counts[j.decision.decision] += 1
        if j.decision.decision != "rewritten":
            key = j.decision.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    report = {"counts": counts, "reasons": reasons, "backend": getattr(generator, "name", ""),
              "guard": guard.name,
              "prompts": {rw_prompt.name: rw_prompt.sha256, rv_prompt.name: rv_prompt.sha256},
              "records_changed": sum(1 for a, b in zip(samples, out, strict=True)
                                     if a.turns != b.turns)}
    if isinstance(guard, SceneGuard):
        report["scene_fallbacks"] = guard.fallbacks
    return out, report


def _plain(question: str) -> str:
    return question.replace(IMAGE_TOKEN, "").strip()


# --------------------------------------------------------------------------- perplexity


@dataclass
class Perplexity:
    perplexity: float
    tokens: int
    nll: float = 0.0  # mean negative log-likelihood per answer token (nats)
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"perplexity": round(self.perplexity, 4), "nll": round(self.nll, 5),
                "tokens": self.tokens, "records": self.records}


def target_perplexity(model: Any, processor: Any, samples: Sequence[Sample],
                      image_root: str | os.PathLike, *, batch_size: int = 8) -> Perplexity:
    """The model's perplexity of the assistant answers, as SFT sees them: the whole
    conversation with its images through the chat template, loss on answer tokens only.

    Answer spans are found by tokenising the conversation up to each answer's start
    (generation prompt) and end, so any chat template works, with or without generation
    markers; a span is the answer and its end-of-turn token (`through_turn_text`).
    exp(total NLL / total answer tokens) over all samples.
    """
    import torch

    from mmalign.io.images import load_image
    from mmalign.io.messages import typed_messages

    root = Path(image_root)
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device

    def template(turns: Sequence[Turn], gen: bool) -> str:
        msgs = typed_messages(turns)
        return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    def n_tokens(text: str, images: list) -> int:
        n_img = text.count(IMAGE_TOKEN)
        enc = processor(text=[text], images=[images[:n_img]] if n_img else None)
        return len(enc["input_ids"][0])

    model.eval()
    by_n: dict[int, list[Sample]] = {}
    for s in samples:  # processors batch items with equal image counts
        by_n.setdefault(len(s.images), []).append(s)
    for group in by_n.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            texts, images, spans = [], [], []
            for s in chunk:
                imgs = [load_image(root / p) for p in s.images]
                texts.append(template(s.turns, False))
                images.append(imgs)
                sp = []
                for pos, _, answer in qa_turns(s):
                    through = template(s.turns[:pos + 1], False)
                    cut = through_turn_text(through, answer)  # + the end-of-turn token
                    sp.append((n_tokens(template(s.turns[:pos], True), imgs),
                               n_tokens(through, imgs) if cut is None
                               else n_tokens(cut, imgs) + 1))
                spans.append(sp)
            enc = processor(text=texts, images=images if images[0] else None, padding=True,
                            padding_side="right", return_tensors="pt").to(device)
            target = enc["input_ids"][:, 1:]
            mask = torch.zeros_like(target, dtype=torch.bool)
            for b, sp in enumerate(spans):
                for a, e in sp:
                    # the token at position p is predicted from position p-1
                    mask[b, max(a - 1, 0):max(e - 1, 0)] = True
            mask &= enc["attention_mask"][:, 1:].bool()
            with torch.no_grad():
                logits = model(**enc).logits[:, :-1]  # (B, T-1, V)
                # Only answer positions go to float: a full (B, T, V) float copy is large.
                nll = torch.nn.functional.cross_entropy(logits[mask].float(), target[mask],
                                                        reduction="sum")
            total_nll += float(nll)
            total_tokens += int(mask.sum())
    nll = total_nll / max(total_tokens, 1)
    return Perplexity(math.exp(nll) if total_tokens else float("nan"), total_tokens, nll,
                      len(samples))


def answer_loglik(model: Any, processor: Any, image: str, question: str, answer: str,
                  image_root: str | os.PathLike) -> float:
    """Sum of log p(answer | image, question) under `model`, teacher-forced through the chat
    template as `target_perplexity` scores it: how likely the model finds one answer."""
    sample = Sample("loglik", [image], [Turn("user", f"{IMAGE_TOKEN}\n{question}"),
                                        Turn("assistant", answer)])
    ppl = target_perplexity(model, processor, [sample], image_root, batch_size=1)
    return -ppl.nll * ppl.tokens


def run_rewrite(data: str | os.PathLike, out_dir: str | os.PathLike, generator: Generator,
                guard: FactGuard, cfg: RewriteConfig | None = None, *,
                image_root: str | os.PathLike | None = None, perplexity_model: Any = None,
                perplexity_batch_size: int = 4, limit: int | None = None,
                log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Rewrite the records of `data` into OUT/rewritten.jsonl; return the manifest.

    `perplexity_model` is a (model, processor) pair: the inner LLM whose perplexity of the
    answers is measured before and after (None: not measured, e.g. remote-only runs).
    """
    import time

    from mmalign import __version__
    from mmalign.io.atomic import write_json
    from mmalign.io.formats import read_records, write_records

    t0 = time.time()
    cfg = cfg or RewriteConfig()
    root = Path(image_root) if image_root is not None else Path(data).parent
    records = read_records(data, image_root=root)
    samples = [r for r in records if isinstance(r, Sample)]
    if len(samples) != len(records):
        raise ValueError(f"{data}: rewrite needs samples (conversations), found preference "
                         f"pairs")
    if limit is not None:
        samples = samples[:limit]
    new, report = rewrite_samples(samples, generator, guard, cfg, image_root=root, log=log)
    if perplexity_model is not None:
        model, processor = perplexity_model
        before = target_perplexity(model, processor, samples, root,
                                   batch_size=perplexity_batch_size)
        after = target_perplexity(model, processor, new, root,
                                  batch_size=perplexity_batch_size)
        report["perplexity"] = {"before": before.to_dict(), "after": after.to_dict()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "rewritten.jsonl", new, "jsonl")
    manifest = {"stage": "curate.rewrite", "version": __version__, "input": str(data),
                "outputs": {"rewritten": "rewritten.jsonl"}, "config": cfg.__dict__,
                **report, "seconds": round(time.time() - t0, 2)}
    write_json(out / "manifest.json", manifest)
    return manifest

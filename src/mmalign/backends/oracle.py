"""`oracle` judge: ratings computed from the synthetic world's scene graphs, not asked of a model.

It stands in for human raters (or Gemini / GPT-4V) in experiments and tests: its ratings are
exact functions of the scene, the answer and (when given) a reference answer, plus optional
Gaussian annotator noise. The rules, per response (scores are whole numbers 0-4):

Claims. The answer is split into sentences and clauses (at ", while", ", and", ", but", ";").
Object mentions ("two small red circles", "a star") are read with `world.facts.mentions`.
A claim is a statement the scene graph can confirm or refute:
  - presence: each mention names objects that exist (shape, plus colour/size when said);
  - absence: "no star", "not a red circle", "without any star" (negation right before the
    mention) say no such object exists;
  - count: a number right before a mention ("two circles") is the number of matching objects;
    "N shapes" (or "N geometric shapes") is the number of objects in the scene;
  - attributes: in a clause with exactly one mention, a bare colour or size word ("the circle
    is blue") and a position phrase ("in the upper left corner", "at the top left") must hold
    for some object the mention names;
  - pronouns: a clause with no mention but "it"/"its" ("Its color is red.") makes the same
    attribute claims about the single object the previous clause named;
  - extremes: "<mention> ... closest/nearest to the top/bottom/left/right" holds when a
    matching object is in the outermost row/column that way;
  - relations: "A is (not) to the left of / to the right of / above / below B", the leading
    form "To the left of the B, there is A", and "nothing to the left of the B", checked on
    the grid cells.
  Sentences stating a hypothetical ("would", "if", "suppose", "removing", "removed", "were")
  describe another scene and are not checked against this one.
  With a reference answer there are also key-fact claims: the answer's yes/no (its first word,
  or "the answer is yes/no") must equal the reference's; numbers in hypothetical sentences
  must be among the reference's hypothetical numbers; and a short answer (at most 6 words)
  may only state colours, sizes, numbers, shapes and positions that the reference states in
  the same category (where the reference states any): "Red." against "The circle is blue."
  is a false claim.
correctness: 4 when no claim is false; otherwise floor(4 x share of true claims), capped at
  2 (any false claim costs at least two points). No checkable claim at all is 4 (nothing false).
helpfulness: with a reference, coverage = the share of the reference's key facts (yes/no,
  numbers, colours, sizes, shapes, positions, "nothing"), minus those the question already
  states, that the answer states too; helpfulness = floor(4 x coverage). Without a reference:
  4 when the answer makes at least one checkable claim, else 2. Either way capped at
  correctness (a wrong answer is not helpful).
coherence: 4, minus 1 for each of: no final punctuation (cut off), a sentence repeated
  verbatim, a word repeated three times in a row, chat-template or markup debris ("<image>",
  "</s>", "USER:", "ASSISTANT:"), fewer than half of the words distinct (answers of >= 10 words).
complexity: 1 for at most 3 words, 2 for one sentence, 3 for several, 4 for several with a
  reasoning connective (because, since, so, therefore, thus, hence, which means).
verbosity: by word count: 1-3 -> 1, 4-15 -> 2, 16-40 -> 3, more -> 4.
An empty answer gets 0 on every attribute.
Noise: N(0, noise) added to each attribute, rounded and clipped to 0-4, drawn from a generator
seeded by (seed, repeat, item id, response index), so a rerun gives the same ratings and the
second pass of a consistency check (`repeat=1`) a fresh draw.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmalign.backends.judge import JudgeItem
from mmalign.records import RATING_ATTRIBUTES, Rating
from mmalign.world import vocab
from mmalign.world.facts import Mention, mentions
from mmalign.world.scene import Obj, Scene, read_scene_file, scenes_by_image

# The oracle's "prompt" is its rule set: the hash of this file goes into every Rating, so
# ratings made under different rules never mix silently.
RULES_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

_NUMBERS = {w: i for i, w in enumerate(vocab.NUMBER_WORDS)}
_NUM = r"(?:" + "|".join(vocab.NUMBER_WORDS) + r"|\d+)"
_COLOR_RE = re.compile(r"\b(" + "|".join(vocab.COLOR_NAMES) + r")\b", re.IGNORECASE)
_SIZE_RE = re.compile(r"\b(" + "|".join(vocab.SIZES) + r")\b", re.IGNORECASE)
_NUM_RE = re.compile(r"\b(" + _NUM + r")\b", re.IGNORECASE)
_SHAPE_RE = re.compile(r"\b(" + "|".join(sorted(
    list(vocab.SHAPES) + [vocab.PLURALS[s] for s in vocab.SHAPES], key=len, reverse=True))
    + r")\b", re.IGNORECASE)
_POSITIONS = {p: c for c, p in vocab.CLEAN_POSITION.items()} | {
    p: c for c, p in vocab.MACHINE_POSITION.items()}
_POS_ALT = "|".join(sorted(_POSITIONS, key=len, reverse=True))
_POS_PHRASE = re.compile(r"\b(?:at|in) the (" + _POS_ALT + r")\b", re.IGNORECASE)
_POS_BARE = re.compile(r"\b(" + _POS_ALT + r")\b", re.IGNORECASE)
_REL = {"to the left of": "left of", "to the right of": "right of", "left of": "left of",
        "right of": "right of", "above": "above", "below": "below"}
_REL_RE = re.compile(r"\b(" + "|".join(sorted(_REL, key=len, reverse=True)) + r")\b",
                     re.IGNORECASE)
_TIGHT_NEG = re.compile(r"\b(?:no|not|without|zero|nothing)\s+(?:(?:a|an|any|the)\s+)?$",
                        re.IGNORECASE)
_COUNT_BEFORE = re.compile(r"\b(" + _NUM + r")\s+$", re.IGNORECASE)
_TOTAL = re.compile(r"\b(" + _NUM + r")\s+(?:geometric\s+)?(?:shapes?|objects?)\b", re.IGNORECASE)
_HYPOTHETICAL = re.compile(r"\b(would|if|suppose|removing|removed|were)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r",\s*(?:while|and|but|whereas)\s+|;\s*", re.IGNORECASE)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_ANSWER_IS = re.compile(r"\banswer is (yes|no)\b", re.IGNORECASE)
_CONNECTIVE = re.compile(r"\b(because|since|so|therefore|thus|hence|which means)\b",
                         re.IGNORECASE)
_DEBRIS = re.compile(r"<image>|</s>|<s>|<unk>|<pad>|\bUSER:|\bASSISTANT:")
_PRONOUN = re.compile(r"\b(it|its)\b", re.IGNORECASE)
_NOTHING_REL = re.compile(r"\bnothing\s+(" + "|".join(sorted(_REL, key=len, reverse=True))
                          + r")\b", re.IGNORECASE)
_EXTREME = re.compile(r"\b(?:closest|nearest) (?:to )?the (top|bottom|left|right)\b",
                      re.IGNORECASE)
_EXTREME_AXIS = {"top": (1, min), "bottom": (1, max), "left": (0, min), "right": (0, max)}
SHORT_ANSWER_WORDS = 6


def _num(word: str) -> int:
    w = word.lower()
    return int(w) if w.isdigit() else _NUMBERS[w]


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


# --------------------------------------------------------------------------- claims


@dataclass
class Claim:
    text: str  # what was claimed, for the reasoning field
    true: bool


@dataclass
class _Span:
    mention: Mention
    start: int
    end: int


def _spans(clause: str) -> list[_Span]:
    """Mentions with their end offsets (facts.mentions gives starts; the phrase ends at the
    shape word that follows the start)."""
    out = []
    for m in mentions(clause):
        shape = _SHAPE_RE.search(clause, m.start)
        end = shape.end() if shape else m.start
        out.append(_Span(m, m.start, end))
    return out


def _matches(o: Obj, m: Mention) -> bool:
    return (o.shape == m.shape and (m.color is None or o.color == m.color)
            and (m.size is None or o.size == m.size))


def _phrase(m: Mention) -> str:
    return " ".join(x for x in (m.size, m.color, m.shape) if x)


def scene_claims(text: str, scene: Scene) -> list[Claim]:
    """Every claim of `text` the scene graph can check, with its verdict (rules above)."""
    claims: list[Claim] = []
    last: _Span | None = None  # the one object the previous clause was about ("its colour")
    for sentence in _SENTENCE_SPLIT.split(text.strip()):
        if not sentence or _HYPOTHETICAL.search(sentence):
            last = None
            continue
        for total in _TOTAL.finditer(sentence):
            n = _num(total.group(1))
            claims.append(Claim(f"{n} shapes in total", n == len(scene.objects)))
        for clause in _CLAUSE_SPLIT.split(sentence):
            found, last = _clause_claims(clause, scene, last)
            claims += found
    return claims


def _clause_claims(clause: str, scene: Scene, last: _Span | None
                   ) -> tuple[list[Claim], _Span | None]:
    """Claims of one clause, and the single mention later pronouns may refer to."""
    out: list[Claim] = []
    spans = _spans(clause)
    if not spans:
        if last is not None and _PRONOUN.search(clause):
            # "Its color is red." about the object the previous clause named
            out += _attribute_claims(clause, _Span(last.mention, 0, 0), scene)
        return out, last
    nothing = _NOTHING_REL.search(clause[:spans[0].start])
    if nothing:  # "There is nothing to the left of the B": no object stands so
        rel = _REL[nothing.group(1).lower()]
        b = spans[0].mention
        holds = any(scene.holds(x, rel, y) for y in scene.objects if _matches(y, b)
                    for x in scene.objects if x is not y)
        return [Claim(f"nothing {rel} {_phrase(b)}", not holds)], None
    positive = []
    for s in spans:
        m, before = s.mention, clause[:s.start]
        found = [o for o in scene.objects if _matches(o, m)]
        if _TIGHT_NEG.search(before):
            out.append(Claim(f"no {_phrase(m)}", not found))
            continue
        count = _COUNT_BEFORE.search(before)
        if count:
            n = _num(count.group(1))
            out.append(Claim(f"{n} {_phrase(m)}", len(found) == n))
        else:
            out.append(Claim(f"a {_phrase(m)}", bool(found)))
        positive.append(s)
    if len(positive) == 1:
        out += _attribute_claims(clause, positive[0], scene)
        return out, positive[0]
    if len(spans) >= 2:
        out += _relation_claims(clause, spans, scene)
    return out, None


def _attribute_claims(clause: str, s: _Span, scene: Scene) -> list[Claim]:
    """Bare colour/size words and position phrases in a clause about one mention."""
    def outside(match: re.Match) -> bool:
        return match.end() <= s.start or match.start() >= s.end

    found = [o for o in scene.objects if _matches(o, s.mention)]
    out = []
    for c in {x.group(1).lower() for x in _COLOR_RE.finditer(clause) if outside(x)}:
        out.append(Claim(f"{_phrase(s.mention)} is {c}", any(o.color == c for o in found)))
    for z in {x.group(1).lower() for x in _SIZE_RE.finditer(clause) if outside(x)}:
        out.append(Claim(f"{_phrase(s.mention)} is {z}", any(o.size == z for o in found)))
    for p in {x.group(1).lower() for x in _POS_PHRASE.finditer(clause) if outside(x)}:
        cell = _POSITIONS[p]
        out.append(Claim(f"{_phrase(s.mention)} in the {p}", any(o.cell == cell for o in found)))
    for d in {x.group(1).lower() for x in _EXTREME.finditer(clause)}:
        axis, pick = _EXTREME_AXIS[d]
        edge = pick(o.cell[axis] for o in scene.objects)
        out.append(Claim(f"{_phrase(s.mention)} closest to the {d}",
                         any(o.cell[axis] == edge for o in found)))
    return out


def _relation_claims(clause: str, spans: list[_Span], scene: Scene) -> list[Claim]:
    out = []
    lead = _REL_RE.search(clause[:spans[0].start])
    if lead:  # "To the left of the B, there is A (and A2)": B first, then the subjects
        rel = _REL[lead.group(1).lower()]
        b = spans[0]
        for a in spans[1:]:
            out.append(_relation(a.mention, rel, b.mention, False, scene))
        return out
    for a, b in zip(spans, spans[1:], strict=False):
        between = clause[a.end:b.start]
        r = _REL_RE.search(between)
        if r:
            negated = bool(re.search(r"\bnot\b", between, re.IGNORECASE))
            out.append(_relation(a.mention, _REL[r.group(1).lower()], b.mention, negated, scene))
    return out


def _relation(a: Mention, rel: str, b: Mention, negated: bool, scene: Scene) -> Claim:
    holds = any(scene.holds(x, rel, y) for x in scene.objects if _matches(x, a)
                for y in scene.objects if _matches(y, b) and y is not x)
    word = "not " if negated else ""
    return Claim(f"{_phrase(a)} {word}{rel} {_phrase(b)}", holds != negated)


# --------------------------------------------------------------------------- key facts


def polarity(text: str) -> str | None:
    """yes/no: the first word, else a closing "the answer is yes/no"."""
    w = _words(text)
    if w and w[0].lower() in ("yes", "no"):
        return w[0].lower()
    found = _ANSWER_IS.findall(text)
    return found[-1].lower() if found else None


def key_facts(text: str, *, bare_positions: bool = False) -> set[tuple[str, object]]:
    """The closed-vocabulary facts a text states: (category, value) pairs."""
    facts: set[tuple[str, object]] = set()
    p = polarity(text)
    if p:
        facts.add(("yn", p))
    facts |= {("num", _num(x.group(1))) for x in _NUM_RE.finditer(text)}
    facts |= {("color", x.group(1).lower()) for x in _COLOR_RE.finditer(text)}
    facts |= {("size", x.group(1).lower()) for x in _SIZE_RE.finditer(text)}
    facts |= {("shape", m.shape) for m in mentions(text)}
    pos = _POS_BARE if bare_positions else _POS_PHRASE
    facts |= {("cell", _POSITIONS[x.group(1).lower()]) for x in pos.finditer(text)}
    if re.search(r"\bnothing\b", text, re.IGNORECASE):
        facts.add(("nothing", True))
    return facts


def _is_short(text: str) -> bool:
    return len(_words(text)) <= SHORT_ANSWER_WORDS


def reference_claims(answer: str, reference: str) -> list[Claim]:
    """Key-fact claims of `answer` checked against a reference answer (rules above)."""
    out = []
    pa, pr = polarity(answer), polarity(reference)
    if pa and pr:
        out.append(Claim(f"answer '{pa}'", pa == pr))
    hyp_a = _hypothetical_numbers(answer)
    hyp_r = _hypothetical_numbers(reference)
    if hyp_a and hyp_r:
        out.append(Claim(f"would-be number(s) {sorted(hyp_a)}", hyp_a <= hyp_r))
    if _is_short(answer):
        a = key_facts(answer, bare_positions=True)
        r = key_facts(reference, bare_positions=_is_short(reference))
        for cat in ("color", "size", "num", "shape", "cell"):
            a_c = {v for c, v in a if c == cat}
            r_c = {v for c, v in r if c == cat}
            if a_c and r_c:
                out.append(Claim(f"{cat} {sorted(map(str, a_c))}", a_c <= r_c))
    return out


def _hypothetical_numbers(text: str) -> set[int]:
    return {_num(x.group(1)) for s in _SENTENCE_SPLIT.split(text) if _HYPOTHETICAL.search(s)
            for x in _NUM_RE.finditer(s)}


def coverage(answer: str, reference: str, question: str = "") -> float:
    """Share of the reference's key facts (less those the question states) the answer states."""
    r = key_facts(reference, bare_positions=_is_short(reference)) - key_facts(question)
    if not r:
        return 1.0
    a = key_facts(answer, bare_positions=_is_short(answer))
    return len(r & a) / len(r)


# --------------------------------------------------------------------------- form


def coherence_problems(text: str) -> list[str]:
    problems = []
    t = text.strip()
    if t and t[-1] not in ".!?\"')":
        problems.append("ends mid-sentence")
    sentences = [s.strip().lower() for s in _SENTENCE_SPLIT.split(t) if s.strip()]
    if len(set(sentences)) < len(sentences):
        problems.append("repeats a sentence")
    words = [w.lower() for w in _words(t)]
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        problems.append("repeats a word three times in a row")
    if _DEBRIS.search(t):
        problems.append("contains template or markup debris")
    if len(words) >= 10 and len(set(words)) < len(words) / 2:
        problems.append("fewer than half of its words are distinct")
    return problems


def complexity(text: str) -> int:
    n = len(_words(text))
    if n == 0:
        return 0
    if n <= 3:
        return 1
    sentences = [s for s in _SENTENCE_SPLIT.split(text.strip()) if _words(s)]
    if len(sentences) <= 1:
        return 2
    return 4 if _CONNECTIVE.search(text) else 3


def verbosity(text: str) -> int:
    n = len(_words(text))
    return 0 if n == 0 else 1 if n <= 3 else 2 if n <= 15 else 3 if n <= 40 else 4


# --------------------------------------------------------------------------- the judge


@dataclass
class OracleRating:
    scores: dict[str, int]
    false_claims: list[str] = field(default_factory=list)
    true_claims: int = 0
    coverage: float | None = None
    coherence: list[str] = field(default_factory=list)

    def reasoning(self) -> str:
        parts = [f"{self.true_claims} true claim(s)"]
        if self.false_claims:
            parts.append("false: " + "; ".join(self.false_claims))
        if self.coverage is not None:
            parts.append(f"covers {self.coverage:.0%} of the reference's key facts")
        if self.coherence:
            parts.append("form: " + ", ".join(self.coherence))
        return ". ".join(parts) + "."


def rate_answer(answer: str, scene: Scene, *, question: str = "",
                reference: str | None = None) -> OracleRating:
    """The noiseless oracle ratings of one answer (rules in the module docstring)."""
    if not _words(answer):
        return OracleRating({a: 0 for a in RATING_ATTRIBUTES})
    claims = scene_claims(answer, scene)
    if reference:
        claims += reference_claims(answer, reference)
    false = [c.text for c in claims if not c.true]
    n_true = len(claims) - len(false)
    correctness = 4 if not false else min(2, math.floor(4 * n_true / len(claims)))
    cov = None
    if reference:
        cov = coverage(answer, reference, question)
        helpful = math.floor(4 * cov + 1e-9)
    else:
        helpful = 4 if claims else 2
    form = coherence_problems(answer)
    scores = {"helpfulness": min(helpful, correctness), "correctness": correctness,
              "coherence": max(0, 4 - len(form)), "complexity": complexity(answer),
              "verbosity": verbosity(answer)}
    return OracleRating(scores, false, n_true, cov, form)


def read_scenes(world_dir: str | os.PathLike) -> dict[str, Scene]:
    """scenes.jsonl of a world, keyed by image path (world-relative) and by image id."""
    path = Path(world_dir) / "scenes.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no scene graphs; the oracle judge needs a world "
                                f"folder (mmalign world make --out DIR)")
    return scenes_by_image(read_scene_file(path))


class OracleJudge:
    """Exact ratings from the world's scene graphs, with optional annotator noise."""

    def __init__(self, world_dir: str | os.PathLike, *, noise: float = 0.0, seed: int = 0,
                 use_reference: bool = True):
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.scenes = read_scenes(world_dir)
        self.noise = noise
        self.seed = seed
        self.use_reference = use_reference
        ref = "+ref" if use_reference else ""
        self.name = f"oracle{ref}(noise={noise:g},seed={seed})" if noise else f"oracle{ref}"
        self.prompt_hash = RULES_HASH

    def scene_of(self, item: JudgeItem) -> Scene | None:
        for key in list(item.image_keys) + [str(p) for p in item.images]:
            scene = self.scenes.get(key) or self.scenes.get(Path(key).stem)
            if scene is not None:
                return scene
        return None

    def rate(self, items: Sequence[JudgeItem], *, repeat: int = 0) -> list[list[Rating]]:
        out = []
        for it in items:
            scene = self.scene_of(it)
            row = []
            for j, response in enumerate(it.responses):
                if scene is None or len(it.images) > 1:
                    why = ("the oracle rates one image per item" if scene is not None else
                           f"image {(it.image_keys or it.images or ['?'])[0]!s} is not in the "
                           f"world's scenes.jsonl")
                    row.append(Rating(sample_id=it.id, response=response, scores={},
                                      judge=self.name, prompt_hash=self.prompt_hash,
                                      response_index=j, error=why))
                    continue
                r = rate_answer(response, scene, question=it.question,
                                reference=it.reference if self.use_reference else None)
                scores = self._noisy(r.scores, it.id, j, repeat)
                row.append(Rating(sample_id=it.id, response=response,
                                  scores={a: float(v) for a, v in scores.items()},
                                  reasoning=r.reasoning(), judge=self.name,
                                  prompt_hash=self.prompt_hash, response_index=j))
            out.append(row)
        return out

    def _noisy(self, scores: dict[str, int], item_id: str, j: int, repeat: int
               ) -> dict[str, int]:
        if not self.noise:
            return scores
        key = int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, repeat, key, j])
        eps = rng.normal(0.0, self.noise, size=len(RATING_ATTRIBUTES))
        return {a: int(np.clip(round(scores[a] + e), 0, 4))
                for a, e in zip(RATING_ATTRIBUTES, eps, strict=True)}

"""Hallucination injection: POVID's stage-1 negatives (DESIGN 6.2).

From a ground-truth (images, question, answer) the injector writes a rejected answer that reads
as fluently as the original but carries hallucinations of declared types:

    object    a plausible co-occurring object is added ("There is also a fork next to the plate.")
    color     an object's colour is changed          count     a number of objects is changed
    size      an object's size is changed            position  where an object is, is changed
    relation  how two objects are placed is reversed (left of <-> right of, above <-> below)
    reasoning for reasoning answers: a fact the rationale relies on AND the conclusion are wrong

Two injectors speak the `Injector` protocol (`inject(targets) -> Injected | Skipped` each):
`LexicalInjector` below (offline, driven by a `Lexicon` fitted on the corpus) and
`mmalign.pairs.inject_llm.LLMInjector` (any `Generator`: local HF model or OpenAI-compatible
endpoint, with our versioned prompt). `inject_hallucinations` turns samples into targets, runs
an injector and returns `PreferencePair`s (origin "injection", chosen = the ground truth) plus
the skipped answers with their reasons; nothing is dropped silently.

Every pair records in `meta["injection"]` the declared types it carries and each edit's exact
character span in the chosen and in the rejected text; outside those spans the two texts are
identical (`apply_edits` builds the rejected text from the spans, so this holds by
construction for the lexical injector; the LLM injector derives its spans from a diff).

The lexical injector never looks at scene graphs or images. What it knows about an image comes
from text: every answer in the corpus about the same image (`Target.context`). That is how it
adds only objects that are absent: by default (`object_evidence="absent"`) an added object is
one the image's own answers deny ("there is no fork", "zero crosses"), or the answer's own
denial turned round ("No, there is no fork." -> "Yes, there is a fork."), so the addition is
false for certain. `object_evidence="unmentioned"` also adds co-occurring objects that no
answer mentions for the image, as POVID's GPT-4 prompt does: more negatives, a small chance
that the "hallucinated" object is actually there. The same text evidence keeps attribute edits
false: no edit in a negated clause, none on a description that may fit two objects ("the red
cross" when the answers describe a small and a large one, or count two crosses but describe
one), none on the words the question uses to pick an object out ("What color is the large
square?": "large" there names which square, it states nothing).
"""

from __future__ import annotations

import difflib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from mmalign.pairs.lexicon import (
    NEGATIONS,
    PREPOSITIONS,
    Analysis,
    Lexicon,
    Mention,
    analyse,
    attribute_target,
    image_key,
    singularize,
)
from mmalign.records import (
    PreferencePair,
    RecordError,
    Sample,
    Turn,
    count_image_tokens,
    validate_pair,
)

HALLUCINATION_TYPES = ("object", "color", "count", "size", "position", "relation", "reasoning")
FACT_TYPES = ("color", "count", "size", "position", "relation")
OBJECT_EVIDENCE = ("absent", "unmentioned")
TURN_CHOICES = ("last", "all")
ORIGIN = "injection"


class InjectionError(ValueError):
    """A bad injection setting (unknown type, bad option value)."""


def parse_types(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'color,count' or ['color', 'count'] -> validated types in the given order ('all' = every
    type). Unknown names fail with a did-you-mean hint."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return HALLUCINATION_TYPES
    out: list[str] = []
    for n in names:
        if n not in HALLUCINATION_TYPES:
            close = difflib.get_close_matches(n, HALLUCINATION_TYPES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InjectionError(f"unknown hallucination type {n!r}{hint} "
                                 f"(types: {', '.join(HALLUCINATION_TYPES)})")
        if n not in out:
            out.append(n)
    return tuple(out)


# --------------------------------------------------------------------------- records


@dataclass
class Edit:
    """One hallucination: chosen[start:end] == original became replacement, which sits at
    rejected[rejected_start:rejected_end]. An added sentence has start == end."""

    type: str  # the declared hallucination type it belongs to
    kind: str  # what changed: object | color | count | size | position | relation | answer ...
    start: int
    end: int
    original: str
    replacement: str
    target: str | None = None  # the object noun the hallucination is about
    role: str | None = None  # reasoning: "rationale" or "conclusion"
    evidence: str | None = None  # object: why it is believed absent ("absent" | "unmentioned")
    rejected_start: int = -1
    rejected_end: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Target:
    """One ground-truth answer to corrupt: `answer` is the assistant turn after `prompt`."""

    id: str
    source_id: str
    turn: int  # index of the answer among the sample's assistant turns
    images: list[str]
    prompt: list[Turn]
    answer: str
    category: str = "other"
    source: str = ""
    # Every assistant answer of the corpus about the same image(s), this one included: the
    # text evidence of what the image holds (shared list per image).
    context: Sequence[str] = ()

    @property
    def image_key(self) -> str:
        return image_key(self.images, self.source_id)


@dataclass
class Injected:
    rejected: str
    edits: list[Edit]
    types: list[str]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    """No negative for this target: `code` groups reasons for the counts; `failed` marks an
    injector failure (an unusable LLM reply) as opposed to a type that does not apply."""

    code: str
    reason: str
    failed: bool = False
    raw: str | None = None


@runtime_checkable
class Injector(Protocol):
    name: str

    def describe(self) -> dict[str, Any]:
        """What identifies this injector's outputs (lexicon or prompt hash, settings); stored
        in the manifest and with every pair."""
        ...

    def inject(self, targets: Sequence[Target]) -> list[Injected | Skipped]:
        """One result per target, in order."""
        ...


def apply_edits(text: str, edits: Sequence[Edit]) -> tuple[str, list[Edit]]:
    """Build the rejected text from non-overlapping edits; return it and the edits (sorted)
    with their spans in the rejected text filled in."""
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    out: list[str] = []
    pos = shift = 0
    done: list[Edit] = []
    for e in ordered:
        if e.start < pos:
            raise InjectionError(f"edits overlap at character {e.start}")
        if text[e.start:e.end] != e.original:
            raise InjectionError(f"edit says {e.original!r} at {e.start}, text has "
                                 f"{text[e.start:e.end]!r}")
        out.append(text[pos:e.start])
        out.append(e.replacement)
        rs = e.start + shift
        done.append(Edit(**{**asdict(e), "rejected_start": rs,
                            "rejected_end": rs + len(e.replacement)}))
        shift += len(e.replacement) - (e.end - e.start)
        pos = e.end
    out.append(text[pos:])
    return "".join(out), done


# --------------------------------------------------------------------------- orchestration


@dataclass
class InjectionResult:
    pairs: list[PreferencePair]
    skipped: list[dict[str, Any]]  # rows for rejects.jsonl
    counts: dict[str, Any]


def answer_targets(samples: Iterable[Sample], turns: str = "last") -> list[Target]:
    """The answers to corrupt: each sample's last assistant turn, or every one (`turns="all"`,
    each with the conversation before it as the prompt)."""
    if turns not in TURN_CHOICES:
        raise InjectionError(f"turns must be one of {TURN_CHOICES}, got {turns!r}")
    samples = list(samples)
    context: dict[str, list[str]] = {}
    for s in samples:
        context.setdefault(image_key(s.images, s.id), []).extend(s.answers)
    out: list[Target] = []
    for s in samples:
        answer_turns = [k for k, t in enumerate(s.turns) if t.role == "assistant"]
        numbered = list(enumerate(answer_turns))
        for n, k in (numbered[-1:] if turns == "last" else numbered):
            prompt = list(s.turns[:k])
            # Only the images whose placeholders are in the prompt belong to this pair.
            images = list(s.images[:count_image_tokens(prompt)])
            out.append(Target(id=f"{s.id}:a{n}", source_id=s.id, turn=n, images=images,
                              prompt=prompt, answer=s.turns[k].content, category=s.category,
                              source=s.source, context=context[image_key(s.images, s.id)]))
    return out


def inject_hallucinations(samples: Iterable[Sample], injector: Injector, *, turns: str = "last",
                          batch_size: int = 64,
                          progress: Callable[[int, int], None] | None = None) -> InjectionResult:
    """Run `injector` over the answers of `samples`; return pairs, skipped rows and counts."""
    targets = answer_targets(samples, turns)
    info = injector.describe()
    pairs: list[PreferencePair] = []
    skipped: list[dict[str, Any]] = []
    codes: Counter = Counter()
    by_type: Counter = Counter()
    by_kind: Counter = Counter()
    failed = 0
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size]
        results = injector.inject(chunk)
        if len(results) != len(chunk):
            raise RuntimeError(f"injector {injector.name!r} returned {len(results)} results for "
                               f"{len(chunk)} targets")
        for t, r in zip(chunk, results, strict=True):
            if isinstance(r, Injected):
                pair = to_pair(t, r, info)
                try:
                    validate_pair(pair)
                except RecordError as e:
                    r = Skipped("invalid-pair", f"the pair breaks the contract: {e}")
                else:
                    pairs.append(pair)
                    by_type.update(r.types)
                    by_kind.update(e.kind for e in r.edits)
                    continue
            codes[r.code] += 1
            failed += r.failed
            skipped.append(_skip_row(t, r, injector.name))
        if progress:
            progress(min(start + batch_size, len(targets)), len(targets))
    counts = {"answers": len(targets), "pairs": len(pairs), "skipped": len(skipped),
              "failed": failed, "by_type": dict(sorted(by_type.items())),
              "by_kind": dict(sorted(by_kind.items())), "skip_codes": dict(sorted(codes.items()))}
    return InjectionResult(pairs, skipped, counts)


def to_pair(t: Target, r: Injected, info: dict[str, Any]) -> PreferencePair:
    injection = {**info, "types": list(r.types), "edits": [e.to_dict() for e in r.edits],
                 **r.info}
    return PreferencePair(
        id=t.id, images=list(t.images), prompt=list(t.prompt), chosen=t.answer,
        rejected=r.rejected, origin=ORIGIN, scores={"hallucinations": len(r.edits)},
        meta={"source_id": t.source_id, "turn": t.turn, "category": t.category,
              "source": t.source, "injection": injection})


def _skip_row(t: Target, r: Skipped, injector: str) -> dict[str, Any]:
    row = {"stage": "pairs.inject", "id": t.id, "source_id": t.source_id, "turn": t.turn,
           "category": t.category, "injector": injector, "code": r.code, "reason": r.reason,
           "failed": r.failed, "answer": t.answer}
    if r.raw is not None:
        row["raw"] = r.raw
    return row


# --------------------------------------------------------------------------- lexical injector

AUXILIARIES = frozenset({"is", "are", "was", "were", "do", "does", "did", "can", "could", "will",
                         "would", "should", "has", "have", "had", "must"})
CONTRACTIONS = {"don't": "do", "doesn't": "does", "didn't": "did", "isn't": "is",
                "aren't": "are", "wasn't": "was", "weren't": "were", "can't": "can",
                "cannot": "can", "won't": "will", "wouldn't": "would", "shouldn't": "should",
                "hasn't": "has", "haven't": "have", "couldn't": "could"}
AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was"}
NUMBER_WORDS_MAX = 100  # digits above this are years, prices, ...: not counts of objects

NO_CHANGE = {
    "color": "no colour word describes an object (outside negated clauses)",
    "size": "no size word describes an object (outside negated clauses)",
    "count": "no number counts an object (outside negated clauses)",
    "position": "no position word places an object (left/right, top/bottom, ...)",
    "relation": "no relation phrase relates two objects (left of, above, behind, ...)",
}
_COUNT_STOP = frozenset({"of", "percent", "times", "years", "year", "minutes", "hours", "days",
                         "and", "or", "is", "are", "was", "were", "in", "on", "at", "to"})

# Sentences that add an object; {np}: "a small purple star", {anchor}: a mentioned object.
ANCHORED = ("There is also {np} next to the {anchor}.", "{Np} can also be seen near the {anchor}.",
            "Next to the {anchor}, there is also {np}.")
FREE = ("There is also {np} in the image.", "{Np} can also be seen in the image.")
AFTER_DENIAL = ("However, there is {np} in the image.",)


@dataclass
class ImageFacts:
    """What the corpus's answers say about one image: objects mentioned as present (or in a
    negated clause, so possibly present), objects denied, colours/sizes given to each noun."""

    mentioned: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)
    colors: dict[str, set[str]] = field(default_factory=dict)  # noun -> colours given to it
    # (noun, colour or None, size or None) of every described mention
    phrases: set[tuple[str, str | None, str | None]] = field(default_factory=set)
    # Descriptions one answer gives two objects ("a large red cross ... a large red cross"):
    # moving or recolouring one of them could describe the other, so they are left alone.
    repeated: set[tuple[str, str | None, str | None]] = field(default_factory=set)
    counted: dict[str, int] = field(default_factory=dict)  # noun -> largest count stated


@dataclass
class Known:
    """What the injector knows while editing one answer: the image's facts, plus the nouns the
    question names and the descriptions it uses to pick an object out ("the large square")."""

    image: ImageFacts
    asked: set[str]
    referred: set[tuple[str, str | None, str | None]]

    def ambiguous(self, a: Analysis, m: Mention) -> bool:
        """Whether a description may fit two objects of the image: one answer describes two
        alike, the answers describe two different objects it fits ("red cross" when there
        are a small and a large red cross), or they count more such objects than they
        describe. Editing what is said about it could then state something true of another
        object."""
        d = a.descriptor(m)

        def fits(p: tuple[str, str | None, str | None]) -> bool:
            return p[0] == d[0] and all(x is None or y is None or x == y
                                        for x, y in zip(p[1:], d[1:], strict=True))
        if any(fits(r) for r in self.image.repeated):
            return True
        full = {p for p in self.image.phrases if None not in p and fits(p)}
        if len(full) > 1:
            return True
        # "There are two triangles", but fewer triangles described: which one a singular
        # mention means is unknown. (A plural mention, "two cars are on the left", speaks
        # of the group.)
        described = {p for p in self.image.phrases if p[0] == d[0] and None not in p}
        return not m.plural and self.image.counted.get(d[0], 0) > max(1, len(described))


def image_facts(texts: Iterable[str], lex: Lexicon) -> ImageFacts:
    f = ImageFacts()
    for text in texts:
        a = analyse(text, lex)
        here: Counter = Counter()
        for m in a.mentions:
            (f.denied if m.denied else f.mentioned).add(m.noun)
            if m.denied:
                continue
            d = a.descriptor(m)
            if d[1] is not None or d[2] is not None:
                # Described alike twice in one answer ("a small red cross ... a small red
                # cross") means two objects; a bare "the dog ... the dog" is one, mentioned
                # twice.
                here[d] += 1
                f.phrases.add(d)
            if d[1] is not None:
                f.colors.setdefault(m.noun, set()).add(d[1])
        f.repeated |= {d for d, n in here.items() if n > 1}
        for k, t in enumerate(a.tokens[:-1]):
            m = a.mention_starting(k + 1)
            n = lex.numbers.get(t.low)
            if m is not None and n is not None and a.joined(k, k + 1):
                f.counted[m.noun] = max(f.counted.get(m.noun, 0), n)
    f.denied -= f.mentioned  # a noun named as present anywhere is not known to be absent
    return f


@dataclass
class _Change:
    """A fact the answer states that can be changed: the value token `i` (old value `old`),
    candidate new values with weights, and how a new value is written into the tokens."""

    kind: str
    i: int
    old: str
    options: list[str]
    weights: list[float]
    target: str | None
    realise: Callable[[str], dict[tuple[int, int], str]]  # new value -> token range -> text


def _match_case(src: str, new: str) -> str:
    if len(src) > 1 and src.isupper():
        return new.upper()
    if src[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(a: Analysis, i: int, new: str) -> dict[tuple[int, int], str]:
    """Replace token i by `new`, fixing a preceding a/an ("an orange" -> "a purple")."""
    out = {(i, i + 1): _match_case(a.tokens[i].text, new)}
    if i > 0 and a.joined(i - 1, i) and a.tokens[i - 1].low in ("a", "an"):
        art = _article(new)
        if art != a.tokens[i - 1].low:
            out[(i - 1, i)] = _match_case(a.tokens[i - 1].text, art)
    return out


def _edit_from_tokens(a: Analysis, repl: dict[tuple[int, int], str], **kw: Any) -> Edit:
    """One edit spanning the replaced token ranges; text between them is kept verbatim."""
    ranges = sorted(repl)
    start, end = a.tokens[ranges[0][0]].start, a.tokens[ranges[-1][1] - 1].end
    parts, pos = [], start
    for lo, hi in ranges:
        parts.append(a.text[pos:a.tokens[lo].start])
        parts.append(repl[(lo, hi)])
        pos = a.tokens[hi - 1].end
    return Edit(start=start, end=end, original=a.text[start:end], replacement="".join(parts),
                **kw)


class LexicalInjector:
    """Offline injector: changes words the lexicon knows, leaving every other character alone.

    Per answer it tries the declared types in a random order (seeded by the answer's id, so a
    rerun gives the same pairs) and applies the first `edits` that apply: a type that finds
    nothing to change falls back to the next one; when none applies the answer is skipped with
    the reason of each type. Reasoning answers try `reasoning` first.
    """

    name = "lexical"

    def __init__(self, lexicon: Lexicon, *, types: Sequence[str] = HALLUCINATION_TYPES,
                 edits: int = 1, seed: int = 0, object_evidence: str = "absent"):
        if edits < 1:
            raise InjectionError(f"edits must be >= 1, got {edits}")
        if object_evidence not in OBJECT_EVIDENCE:
            raise InjectionError(f"object_evidence must be one of {OBJECT_EVIDENCE}, got "
                                 f"{object_evidence!r}")
        self.lex = lexicon
        self.types = parse_types(types)
        self.edits = edits
        self.seed = seed
        self.object_evidence = object_evidence
        self._facts: dict[str, ImageFacts] = {}
        self._colors = self._in_domain_colors()
        self._sha = lexicon.sha256()

    def describe(self) -> dict[str, Any]:
        return {"injector": self.name, "lexicon_sha256": self._sha, "seed": self.seed,
                "object_evidence": self.object_evidence}

    def inject(self, targets: Sequence[Target]) -> list[Injected | Skipped]:
        return [self.inject_one(t) for t in targets]

    # ------------------------------------------------------------------ one answer
    def inject_one(self, t: Target) -> Injected | Skipped:
        rng = random.Random(f"{self.seed}\x00{t.id}")
        a = analyse(t.answer, self.lex)
        facts = self._facts.get(t.image_key)
        if facts is None:
            facts = self._facts[t.image_key] = image_facts(t.context or [t.answer], self.lex)
        known = Known(facts, set(), set())
        for turn in t.prompt:
            if turn.role == "user":
                q = analyse(turn.content, self.lex)
                known.asked |= {m.noun for m in q.mentions}
                known.referred |= {q.descriptor(m) for m in q.mentions}
        others = [x for x in self.types if x != "reasoning"]
        rng.shuffle(others)
        reasoning = "reasoning" in self.types and t.category == "reasoning"
        order = (["reasoning"] if reasoning else []) + others
        edits: list[Edit] = []
        used: list[str] = []
        why: dict[str, str] = {}
        if "reasoning" in self.types and not reasoning:
            why["reasoning"] = f"not a reasoning answer (category {t.category!r})"
        for _ in range(2):  # first pass: distinct types; second: repeats if edits > types
            for kind in order:
                if len(used) >= self.edits:
                    break
                new, reason = self._propose(kind, a, known, rng, edits)
                if not new:
                    why.setdefault(kind, reason)
                    continue
                edits.extend(new)
                used.append(kind)
            if not used or len(used) >= self.edits:
                break
        if not edits:
            detail = "; ".join(f"{k}: {why[k]}" for k in self.types if k in why)
            return Skipped("not-applicable",
                           f"no declared hallucination type applies to this answer ({detail})")
        rejected, done = apply_edits(t.answer, edits)
        # The declared types that were tried and did not apply (the fallback's trail).
        not_applied = {k: v for k, v in why.items() if k not in used and k in order}
        return Injected(rejected, done, used,
                        {"not_applicable": not_applied} if not_applied else {})

    def _propose(self, kind: str, a: Analysis, known: Known, rng: random.Random,
                 taken: list[Edit]) -> tuple[list[Edit], str]:
        if kind == "object":
            return self._add_object(a, known, rng, taken)
        if kind == "reasoning":
            return self._reasoning(a, known, rng, taken)
        changes = self._changes(kind, a, known)
        if not changes:
            return [], NO_CHANGE[kind]
        edit = self._first_free(a, changes, rng, taken, kind)
        if edit is None:
            return [], "every candidate overlaps an earlier edit"
        return [edit], ""

    def _first_free(self, a: Analysis, changes: list[_Change], rng: random.Random,
                    taken: Sequence[Edit], type_: str, role: str | None = None) -> Edit | None:
        """A random change, realised, whose span does not touch an edit already made."""
        for c in rng.sample(changes, len(changes)):
            e = self._realise(a, c, _pick(rng, c.options, c.weights), type_, role)
            if not any(x.start <= e.end and e.start <= x.end for x in taken):
                return e
        return None

    def _realise(self, a: Analysis, c: _Change, new: str, type_: str, role: str | None = None
                 ) -> Edit:
        return _edit_from_tokens(a, c.realise(new), type=type_, kind=c.kind, target=c.target,
                                 role=role)

    # ------------------------------------------------------------------ fact changes
    def _changes(self, kind: str, a: Analysis, known: Known, relaxed: bool = False,
                 within: tuple[int, int] | None = None) -> list[_Change]:
        fn = {"color": self._color_changes, "size": self._size_changes,
              "count": self._count_changes, "position": self._position_changes,
              "relation": self._relation_changes}[kind]
        out = fn(a, known, relaxed)
        if within is not None:
            out = [c for c in out if within[0] <= c.i < within[1]]
        return out

    def _attribute_owner(self, a: Analysis, i: int, relaxed: bool, known: Known
                         ) -> Mention | None | bool:
        """The mention an attribute token describes; False when it describes no object (a
        background, a negated clause) or one the image's answers describe twice. In a
        reasoning conclusion (`relaxed`) a predicative attribute may refer back across
        sentences ("... star. Its color is orange.")."""
        if a.negated(i) or a.mention_at(i) is not None:
            return False
        found = attribute_target(a, i, self.lex)
        if found is not None:
            owner = found[0]
        elif relaxed and i > 0 and a.tokens[i - 1].low in ("is", "are", "was", "were"):
            before = [m for m in a.mentions if m.j <= i and m.positive]
            owner = before[-1] if before else None
        else:
            return False
        if owner is not None:
            d = a.descriptor(owner)
            if known.ambiguous(a, owner):
                return False
            # "What color is the large square?" -> "The large square is orange.": "large"
            # picks the square out (there is another one); changing it switches to the other
            # square instead of stating something false.
            word = a.tokens[i].low
            if any(r[0] == d[0] and word in (r[1], r[2]) for r in known.referred):
                return False
        return owner

    def _color_changes(self, a: Analysis, known: Known, relaxed: bool) -> list[_Change]:
        out = []
        for i, t in enumerate(a.tokens):
            if t.low not in self.lex.color_set:
                continue
            found = self._attribute_owner(a, i, relaxed, known)
            if found is False:
                continue
            owner = found.noun if found else None
            old = self.lex.canonical_color(t.low)
            # Not the old colour, nor one the image's answers give this noun elsewhere (a
            # second circle may really be that colour), weighted by how often the corpus
            # gives the noun each colour: the tempting, plausible mistake.
            taken = known.image.colors.get(owner, set()) if owner else set()
            options = [c for c in self._colors if c != old and c not in taken]
            if not options:
                continue
            assoc = self.lex.color_of.get(owner, Counter()) if owner else Counter()
            weights = [assoc.get(c, 0) + 0.2 * self.lex.word_counts.get(c, 0) + 0.05
                       for c in options]
            out.append(_Change("color", i, old, options, weights, owner,
                               lambda new, i=i: _with_article(a, i, new)))
        return out

    def _size_changes(self, a: Analysis, known: Known, relaxed: bool) -> list[_Change]:
        out = []
        for i, t in enumerate(a.tokens):
            if t.low not in self.lex.sizes:
                continue
            found = self._attribute_owner(a, i, relaxed, known)
            if found is False:
                continue
            owner = found.noun if found else None
            new = self.lex.sizes[t.low]
            # Skip when the image's answers describe another such object with the new size
            # ("a small green hexagon and a large green hexagon"): the change could name it.
            color = a.descriptor(found)[1] if found else None
            if any(n == owner and z == new and (c is None or color is None or c == color)
                   for n, c, z in known.image.phrases):
                continue
            out.append(_Change("size", i, t.low, [new], [1.0], owner,
                               lambda new, i=i: _with_article(a, i, new)))
        return out

    def _count_changes(self, a: Analysis, known: Known, relaxed: bool) -> list[_Change]:
        out = []
        generic = set(self.lex.generic_nouns)
        toks = a.tokens
        for i, t in enumerate(toks):
            n = self.lex.numbers.get(t.low)
            if n is None and t.low.isdigit() and int(t.low) <= NUMBER_WORDS_MAX:
                n = int(t.low)
            if n is None or a.negated(i):
                continue
            # The counted noun: a known object, or a generic one ("four geometric shapes"),
            # at most two modifiers away, with the number's grammatical number.
            j, noun = i + 1, None
            while j < len(toks) and j <= i + 3 and a.joined(j - 1, j):
                m = a.mention_starting(j)
                if m is not None:
                    noun = (m.noun, m.plural, m.i, m.j)
                    break
                w = toks[j].low
                if w in generic or singularize(w) in generic:
                    noun = (singularize(w) if w not in generic else w, w not in generic, j, j + 1)
                    break
                if not w.isalpha() or w in _COUNT_STOP:
                    break
                j += 1
            if noun is None or noun[1] != (n != 1):
                continue
            options = [v for v in (n - 1, n + 1) if v >= 1] if n > 0 else [1, 2]
            out.append(_Change("count", i, str(n), [str(v) for v in options],
                               [1.0] * len(options), noun[0],
                               lambda new, i=i, noun=noun: self._count_tokens(a, i, noun,
                                                                              int(new))))
        return out

    def _count_tokens(self, a: Analysis, i: int, noun: tuple[str, bool, int, int], new: int
                      ) -> dict[tuple[int, int], str]:
        toks = a.tokens
        src = toks[i].text
        words = {v: k for k, v in self.lex.numbers.items()}
        text = str(new) if src.isdigit() or new not in words else words[new]
        repl = {(i, i + 1): _match_case(src, text)}
        plural = new != 1
        if plural != noun[1]:
            singular, lo, hi = noun[0], noun[2], noun[3]
            form = self.lex.plural_of(singular) if plural else singular
            repl[(lo, hi)] = _match_case(a.text[toks[lo].start:toks[hi - 1].end], form)
            # Agreement of an adjacent copula: "There is one square" -> "There are two squares".
            if i > 0 and toks[i - 1].low in AGREEMENT and a.joined(i - 1, i):
                repl[(i - 1, i)] = _match_case(toks[i - 1].text, AGREEMENT[toks[i - 1].low])
            if hi < len(toks) and toks[hi].low in AGREEMENT and a.joined(hi - 1, hi):
                repl[(hi, hi + 1)] = _match_case(toks[hi].text, AGREEMENT[toks[hi].low])
        return repl

    def _relation_spans(self, a: Analysis) -> list[tuple[int, int, str]]:
        """Relation phrases as (first token, end token, phrase), longest match first."""
        out, i = [], 0
        longest = max((len(k) for k in self.lex.relation_phrases), default=1)
        while i < len(a.tokens):
            for n in range(min(longest, len(a.tokens) - i), 0, -1):
                key = tuple(t.low for t in a.tokens[i:i + n])
                if key in self.lex.relation_phrases and a.joined(i, i + n - 1):
                    out.append((i, i + n, " ".join(key)))
                    i += n
                    break
            else:
                i += 1
        return out

    def _relation_changes(self, a: Analysis, known: Known, relaxed: bool
                          ) -> list[_Change]:
        out = []
        for lo, hi, phrase in self._relation_spans(a):
            if a.negated(lo):
                lift = self._lift_relation_negation(a, lo, hi, phrase, known)
                if lift is not None:
                    out.append(lift)
                continue
            # It must relate objects: one named within a few words after it, same clause ...
            after = [m for m in a.mentions if hi <= m.i <= hi + 4 and not m.denied
                     and a.tokens[m.i].clause == a.tokens[lo].clause]
            if not after:
                continue
            # "the red cross is left of the red cross": with two objects described alike the
            # reversed relation can be just as true; an object described twice is left alone.
            # The other object (the subject) must be named too: "the cup is left of the
            # plate", "left of the plate, there is a cup". With two objects described alike
            # ("the red cross is left of the red cross") the reversed relation can be just as
            # true, so ambiguous descriptions are left alone.
            d = a.descriptor(after[0])
            sent = a.tokens[lo].sentence
            others = [m for m in a.mentions if m is not after[0] and m.positive
                      and a.tokens[m.i].sentence == sent]
            if not others or known.ambiguous(a, after[0]) or any(
                    a.descriptor(m) == d or known.ambiguous(a, m) for m in others):
                continue
            new = self.lex.relations[phrase]
            out.append(_Change(
                "relation", lo, phrase, [new], [1.0], after[0].noun,
                lambda new, lo=lo, hi=hi: {(lo, hi): _match_case(a.tokens[lo].text, new)}))
        return out

    def _lift_relation_negation(self, a: Analysis, lo: int, hi: int, phrase: str,
                                known: Known) -> _Change | None:
        """'No, the cup is not left of the plate.' -> 'Yes, the cup is left of the plate.':
        the answer denies the relation, so asserting it is false. Only where that 'not' is
        the clause's one negation and the relation is between named objects."""
        toks = a.tokens
        k = lo - 1
        if k < 1 or toks[k].low != "not" or not a.joined(k, lo):
            return None
        clause = toks[lo].clause
        if any(t.clause == clause and i != k and (t.low in NEGATIONS or t.low.endswith("n't"))
               for i, t in enumerate(toks)):
            return None
        after = [m for m in a.mentions if hi <= m.i <= hi + 4 and toks[m.i].clause == clause]
        before = [m for m in a.mentions if m.j <= k and toks[m.i].clause == clause]
        if not after or not before or known.ambiguous(a, after[0]) or \
                known.ambiguous(a, before[-1]):
            return None

        def realise(_: str) -> dict[tuple[int, int], str]:
            repl = {(k, lo + 1): toks[lo].text}  # "not to" -> "to"
            s_lo = a.sentences[toks[k].sentence][0]
            if toks[s_lo].low == "no" and toks[s_lo].clause != clause:
                repl[(s_lo, s_lo + 1)] = _match_case(toks[s_lo].text, "yes")
            return repl
        return _Change("relation", lo, f"not {phrase}", [phrase], [1.0], after[0].noun,
                       realise)

    def _position_changes(self, a: Analysis, known: Known, relaxed: bool
                          ) -> list[_Change]:
        in_relation = {k for lo, hi, _ in self._relation_spans(a) for k in range(lo, hi)}
        pos_words = set(self.lex.positions) | {"middle", "center", "centre"}
        nouns = set(self.lex.position_nouns)
        toks = a.tokens
        out = []
        i = 0
        while i < len(toks):
            if toks[i].low not in pos_words or i in in_relation:
                i += 1
                continue
            j = i
            while j + 1 < len(toks) and toks[j + 1].low in pos_words and a.joined(j, j + 1) \
                    and j + 1 not in in_relation:
                j += 1
            # A place in the image: "... corner/side/part" follows, or "in/at/to the" precedes
            # (so "the man left" or "the right answer" are not positions).
            followed = j + 1 < len(toks) and toks[j + 1].low in nouns and a.joined(j, j + 1)
            preceded = i >= 2 and toks[i - 1].low == "the" and \
                toks[i - 2].low in PREPOSITIONS and a.joined(i - 2, i)
            if (followed or preceded) and not a.negated(i):
                sent = toks[i].sentence
                near = sorted((m for m in a.mentions if m.positive
                               and toks[m.i].sentence == sent),
                              key=lambda m, i=i: min(abs(m.i - i), abs(m.j - 1 - i)))
                if near and not known.ambiguous(a, near[0]):
                    for k in range(i, j + 1):
                        new = self.lex.positions.get(toks[k].low)
                        if new is None:
                            continue
                        out.append(_Change(
                            "position", k, toks[k].low, [new], [1.0], near[0].noun,
                            lambda new, k=k: {(k, k + 1): _match_case(toks[k].text, new)}))
            i = j + 1
        return out

    # ------------------------------------------------------------------ object
    def _add_object(self, a: Analysis, known: Known, rng: random.Random, taken: list[Edit]
                    ) -> tuple[list[Edit], str]:
        in_answer = {m.noun for m in a.mentions}
        exclude = known.image.mentioned | in_answer | known.asked
        present = known.image.mentioned | {m.noun for m in a.mentions if m.positive}
        groups = {self.lex.objects[p].group for p in present
                  if p in self.lex.objects and self.lex.objects[p].group}
        pool: dict[str, tuple[float, str]] = {}
        for c in sorted(known.image.denied - exclude):
            pool[c] = (1.0 + self._affinity(c, present, groups), "absent")
        if self.object_evidence == "unmentioned":
            for c in sorted(set(self.lex.objects) - exclude - set(pool)):
                w = self._affinity(c, present, groups)
                if w > 0:  # only co-occurring (or same-category) objects are plausible
                    pool[c] = (w, "unmentioned")
        # The answer's own denial, turned round ("No, there is no fork" -> "Yes, there is a
        # fork"): the object is absent for certain, and this is the hallucination POPE probes.
        flips = [e for e in (self._flip_denial(a, m) for m in a.mentions if m.denied) if e]
        flips = [e for e in flips if not any(x.start <= e.end and e.start <= x.end
                                             for x in taken)]
        if flips and (not pool or rng.random() < 0.5):
            return [rng.choice(flips)], ""
        if not pool:
            if self.object_evidence == "absent":
                return [], ("no object is known to be absent from this image (no answer about "
                            "it denies one); object_evidence='unmentioned' would add "
                            "co-occurring objects no answer mentions")
            return [], "no co-occurring object that the image's answers leave unmentioned"
        names = list(pool)
        noun = _pick(rng, names, [pool[n][0] for n in names])
        edit = self._insertion(a, noun, rng, taken)
        if edit is None:
            return [], "no place to add a sentence outside the other edits"
        edit.evidence = pool[noun][1]
        return [edit], ""

    def _flip_denial(self, a: Analysis, m: Mention) -> Edit | None:
        """'no X' -> 'a X' / 'some Xs', and a leading 'No,' of the sentence -> 'Yes,'. Only
        when that 'no' is the clause's one negation (else the result may not be a claim)."""
        toks = a.tokens
        j = m.i - 1
        while j >= 0 and toks[j].low in self.lex.attribute_words and a.joined(j, j + 1):
            j -= 1
        if j < 0 or toks[j].low != "no" or not a.joined(j, m.i):
            return None
        clause = toks[j].clause
        negations = [k for k, t in enumerate(toks) if t.clause == clause and k != j
                     and (t.low in NEGATIONS or t.low.endswith("n't"))]
        if negations:
            return None
        nxt = toks[j + 1].low
        repl = {(j, j + 1): _match_case(toks[j].text, "some" if m.plural else _article(nxt))}
        s_lo = a.sentences[toks[j].sentence][0]
        if s_lo < j and toks[s_lo].low == "no" and toks[s_lo].clause != clause:
            repl[(s_lo, s_lo + 1)] = _match_case(toks[s_lo].text, "yes")
        return _edit_from_tokens(a, repl, type="object", kind="object", target=m.noun,
                                 evidence="absent")

    def _affinity(self, c: str, present: set[str], groups: set[str]) -> float:
        w = float(sum(self.lex.cooc(c, p) for p in present))
        entry = self.lex.objects.get(c)
        if entry and entry.group and entry.group in groups:
            w += 1.0
        return w

    def _insertion(self, a: Analysis, noun: str, rng: random.Random, taken: list[Edit]
                   ) -> Edit | None:
        """A new sentence about `noun`, after a sentence naming a present object (or the last
        sentence; for reasoning answers never after the conclusion)."""
        if not a.sentences:
            return None
        last = len(a.sentences) - 1
        anchors = [m for m in a.mentions if m.positive]
        choices = sorted({a.tokens[m.i].sentence for m in anchors}) or [last]
        ends = []
        for s in choices:
            p = a.sentence_span(s)[1]
            if not any(e.start < p < e.end or e.start == p for e in taken):
                ends.append((s, p))
        if not ends:
            return None
        s, p = rng.choice(ends)
        np_ = self._noun_phrase(noun, rng)
        in_sentence = [m for m in anchors if a.tokens[m.i].sentence == s]
        if in_sentence:
            m = rng.choice(in_sentence)
            anchor = a.text[m.start:m.end].lower()
            template = rng.choice(ANCHORED)
        else:
            anchor = ""
            denial = any(a.negated(k) for k in range(*a.sentences[s]))
            template = rng.choice(AFTER_DENIAL if denial else FREE)
        sentence = template.format(np=np_, Np=np_[:1].upper() + np_[1:], anchor=anchor)
        if a.text[p - 1:p] not in (".", "!", "?"):
            # No closing punctuation to start a new sentence after: close the old one first.
            sentence = "." + " " + sentence
        else:
            sentence = " " + sentence
        return Edit(type="object", kind="object", start=p, end=p, original="",
                    replacement=sentence, target=noun)

    def _noun_phrase(self, noun: str, rng: random.Random) -> str:
        words = []
        sizes = self.lex.size_of.get(noun)
        if sizes and rng.random() < 0.5:
            names = sorted(sizes)
            words.append(_pick(rng, names, [sizes[n] for n in names]))
        colors = self.lex.color_of.get(noun)
        if colors:
            names = sorted(colors)
            words.append(_pick(rng, names, [colors[n] for n in names]))
        words.append(noun)
        return f"{_article(words[0])} {' '.join(words)}"

    # ------------------------------------------------------------------ reasoning
    def _reasoning(self, a: Analysis, known: Known, rng: random.Random,
                   taken: list[Edit]) -> tuple[list[Edit], str]:
        """A wrong conclusion (last sentence) plus a wrong fact in the rationale before it.
        Where both state the same value ("leave three shapes. So, three shapes remain."), the
        rationale gets the same new value, so the wrong reasoning stays self-consistent."""
        if len(a.sentences) < 2:
            return [], "a reasoning answer needs a rationale and a conclusion (two sentences)"
        c_lo, c_hi = a.sentences[-1]
        conclusion, value = self._conclusion(a, known, rng, (c_lo, c_hi))
        if conclusion is None:
            return [], "the conclusion has no answer word, negation or fact to change"
        rationale = [c for kind in FACT_TYPES
                     for c in self._changes(kind, a, known, within=(0, c_lo))]
        if not rationale:
            return [], "the rationale states no fact that can be changed"
        taken = [*taken, conclusion]
        same = [c for c in rationale if value is not None and c.kind == value[0]
                and c.old == value[1] and value[2] in c.options]
        r = None
        if same:
            r = self._realise(a, rng.choice(same), value[2], "reasoning", "rationale")
            if any(x.start <= r.end and r.start <= x.end for x in taken):
                r = None
        r = r or self._first_free(a, rationale, rng, taken, "reasoning", "rationale")
        if r is None:
            return [], "every rationale fact overlaps an earlier edit"
        return [r, conclusion], ""

    def _conclusion(self, a: Analysis, known: Known, rng: random.Random,
                    span: tuple[int, int]) -> tuple[Edit | None, tuple[str, str, str] | None]:
        lo, hi = span
        toks = a.tokens
        # 1. the answer word: "..., the answer is yes." / "No, ..."
        flips = [k for k in range(lo, hi) if toks[k].low == "yes" or (
            toks[k].low == "no" and not (k + 1 < hi and a.joined(k, k + 1)))]
        if flips:
            k = rng.choice(flips)
            new = "no" if toks[k].low == "yes" else "yes"
            return _edit_from_tokens(a, {(k, k + 1): _match_case(toks[k].text, new)},
                                     type="reasoning", kind="answer", role="conclusion"), None
        # 2. a negation to lift: "they do not share" -> "they do share"
        lifts = []
        for k in range(lo, hi):
            if toks[k].low in CONTRACTIONS:
                lifts.append({(k, k + 1): _match_case(toks[k].text, CONTRACTIONS[toks[k].low])})
            elif toks[k].low == "not" and k > lo and toks[k - 1].low in AUXILIARIES \
                    and a.joined(k - 1, k):
                lifts.append({(k - 1, k + 1): toks[k - 1].text})
        if lifts:
            return _edit_from_tokens(a, rng.choice(lifts), type="reasoning", kind="negation",
                                     role="conclusion"), None
        # 3. a fact stated in the conclusion: "So, three shapes would remain."
        facts_here = [c for kind in FACT_TYPES
                      for c in self._changes(kind, a, known, relaxed=True, within=span)]
        if facts_here:
            c = rng.choice(facts_here)
            new = _pick(rng, c.options, c.weights)
            return self._realise(a, c, new, "reasoning", "conclusion"), (c.kind, c.old, new)
        # 4. negate the first auxiliary: "would remain" -> "would not remain"
        for k in range(lo, hi):
            if toks[k].low in AUXILIARIES and not (k + 1 < hi and toks[k + 1].low == "not"):
                return _edit_from_tokens(a, {(k, k + 1): toks[k].text + " not"},
                                         type="reasoning", kind="negation",
                                         role="conclusion"), None
        return None, None

    # ------------------------------------------------------------------ helpers
    def _in_domain_colors(self) -> list[str]:
        """Colours to change to: those the corpus gives objects when the lexicon was fitted (a
        world of six colours gets no 'beige' circles), else every colour; synonyms once."""
        canon = list(dict.fromkeys(self.lex.canonical_color(c) for c in self.lex.colors))
        used = {c for counts in self.lex.color_of.values() for c in counts}
        return [c for c in canon if c in used] or canon


def _pick(rng: random.Random, options: Sequence[str], weights: Sequence[float]) -> str:
    return options[0] if len(options) == 1 else rng.choices(list(options), list(weights))[0]

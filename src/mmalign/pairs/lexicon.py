"""The lexicon behind lexical hallucination injection, and how it reads English answers.

A `Lexicon` holds two kinds of knowledge:

- vocabulary: object nouns (singular -> plural, COCO super-category), colour, size, number,
  position and relation words, each attribute with the opposite it is swapped for. The packaged
  English one (`lexicon_en.json`: COCO's classes as LLaVA answers name them, plus common scene
  nouns) works on real COCO-based answers as shipped;
- statistics learned from a corpus by `fit_lexicon`: new object nouns (the words that colour,
  size and number words modify often enough, such as the world's "hexagon"), how many images
  mention each object, which objects are mentioned for the same image (co-occurrence), and
  which colours and sizes describe each object. They make an added object plausible (a fork
  beside a plate, a star among circles) and a changed colour a tempting one.

`analyse(text, lexicon)` splits an answer into tokens, clauses and sentences and finds object
mentions, including denied ones ("there is no fork", "zero crosses"). It knows nothing of how a
text was made, so it reads the synthetic world's answers and human English alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from mmalign.io.atomic import write_json
from mmalign.records import Sample

LEXICON_FORMAT = 1
DEFAULT_LEXICON = "lexicon_en.json"

# Grammar, not vocabulary: kept in code because the analysis below depends on them.
COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "being", "seems", "seem",
                     "appears", "appear", "looks", "look", "remains", "remain"})
# Words that may sit between a copula and a predicative colour/size ("is bright red").
PREDICATE_MODIFIERS = frozenset({"bright", "dark", "light", "pale", "deep", "mostly", "mainly",
                                 "entirely", "completely", "all", "also", "quite", "very",
                                 "rather", "fairly", "relatively", "both"})
# A clause holding one of these is negated; an attribute edited there may stay true
# ("the square is not above the triangle" -> "not below" can be true too), so it is left alone.
NEGATIONS = frozenset({"not", "no", "never", "nothing", "none", "neither", "nor", "without",
                       "cannot", "nobody", "nowhere"})
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "one", "some",
                         "any", "each", "every", "another", "its", "their", "his", "her"})
# Before "the" + a position word they make it a place: "in the corner", "to the left".
PREPOSITIONS = frozenset({"in", "on", "at", "to", "toward", "towards", "from", "near", "by",
                          "along", "across"})
_STOPWORD_TEXT = """
a an the and or but of in on at to for with by from as is are was were be been being has have
had do does did can could would will should may might must this that these those it its they
them their there here which who whom whose what where when while since so than then if because
into onto near next also very each every some any all both no not other more most less same
such only just about around over under above below between among across behind toward towards
further one ones i you he she we his her our your my me us him sits sit stands stand lies lie
holds hold appears appear seems seem looks look shows show contains contain positioned located
placed seen visible found including like nearby together really quite rather"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
_SENTENCE_END = frozenset(".!?\n")
_CLAUSE_END = frozenset(",;:()[]\u2014\u2013\"")


class LexiconError(ValueError):
    """A lexicon file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ObjectEntry:
    plural: str
    group: str = ""  # COCO super-category for packaged nouns; "" for learned ones


@dataclass
class Lexicon:
    """Vocabulary plus what was learned from a corpus. See the module docstring."""

    objects: dict[str, ObjectEntry]
    colors: list[str]
    sizes: dict[str, str]
    numbers: dict[str, int]
    relations: dict[str, str]
    positions: dict[str, str]
    color_synonyms: dict[str, str] = field(default_factory=dict)
    position_nouns: list[str] = field(default_factory=list)
    generic_nouns: list[str] = field(default_factory=list)
    # ---- learned by fit_lexicon (empty for the packaged lexicon)
    object_images: Counter = field(default_factory=Counter)  # noun -> images mentioning it
    cooccurrence: Counter = field(default_factory=Counter)  # (a, b), a < b -> images with both
    color_of: dict[str, Counter] = field(default_factory=dict)  # noun -> colour -> times
    size_of: dict[str, Counter] = field(default_factory=dict)  # noun -> size word -> times
    word_counts: Counter = field(default_factory=Counter)  # attribute word -> times seen
    learned_objects: list[str] = field(default_factory=list)
    fitted: dict[str, Any] = field(default_factory=dict)  # what it was fitted on (counts)

    # ------------------------------------------------------------------ views
    @cached_property
    def forms(self) -> dict[tuple[str, ...], tuple[str, bool]]:
        """Surface form (as lower-case words) -> (singular noun, is plural)."""
        out: dict[tuple[str, ...], tuple[str, bool]] = {}
        for noun, entry in self.objects.items():
            out[tuple(entry.plural.split())] = (noun, entry.plural != noun)
            out[tuple(noun.split())] = (noun, False)  # singular wins where both are equal
        return out

    @cached_property
    def max_form_words(self) -> int:
        return max((len(f) for f in self.forms), default=1)

    @cached_property
    def color_set(self) -> frozenset[str]:
        return frozenset(self.colors)

    @cached_property
    def relation_phrases(self) -> dict[tuple[str, ...], str]:
        return {tuple(k.split()): v for k, v in self.relations.items()}

    @cached_property
    def attribute_words(self) -> frozenset[str]:
        return frozenset(self.colors) | frozenset(self.sizes) | frozenset(self.numbers)

    def canonical_color(self, word: str) -> str:
        return self.color_synonyms.get(word, word)

    def plural_of(self, noun: str) -> str:
        entry = self.objects.get(noun)
        return entry.plural if entry else pluralize(noun)

    def cooc(self, a: str, b: str) -> int:
        return self.cooccurrence.get((a, b) if a < b else (b, a), 0)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEXICON_FORMAT,
            "objects": {k: {"plural": v.plural, "group": v.group}
                        for k, v in sorted(self.objects.items())},
            "colors": list(self.colors),
            "color_synonyms": dict(sorted(self.color_synonyms.items())),
            "sizes": dict(self.sizes),
            "numbers": dict(self.numbers),
            "relations": dict(self.relations),
            "positions": dict(self.positions),
            "position_nouns": list(self.position_nouns),
            "generic_nouns": list(self.generic_nouns),
            "object_images": dict(sorted(self.object_images.items())),
            "cooccurrence": {f"{a}|{b}": n for (a, b), n in sorted(self.cooccurrence.items())},
            "color_of": {k: dict(sorted(v.items())) for k, v in sorted(self.color_of.items())},
            "size_of": {k: dict(sorted(v.items())) for k, v in sorted(self.size_of.items())},
            "word_counts": dict(sorted(self.word_counts.items())),
            "learned_objects": sorted(self.learned_objects),
            "fitted": self.fitted,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "<lexicon>") -> Lexicon:
        """Build from `to_dict` output (or the packaged file); LexiconError names the field."""
        r = _Reader(source)
        if not isinstance(d, dict):
            raise r.error("", f"expected a JSON object, got {type(d).__name__}")
        objects = {}
        for noun, entry in r.mapping(d, "objects", required=True).items():
            where = f"objects.{noun}"
            if not isinstance(entry, dict) or not isinstance(entry.get("plural"), str) \
                    or not entry["plural"].strip():
                raise r.error(where, "expected {\"plural\": str, \"group\": str}")
            group = entry.get("group", "")
            if not isinstance(group, str):
                raise r.error(f"{where}.group", "expected a string")
            objects[noun.lower()] = ObjectEntry(entry["plural"].lower(), group)
        cooc = Counter()
        for key, n in r.counts(d, "cooccurrence").items():
            a, sep, b = key.partition("|")
            if not sep or not a or not b:
                raise r.error(f"cooccurrence.{key}", "expected a key 'noun|noun'")
            cooc[(a, b) if a < b else (b, a)] += n
        return cls(
            objects=objects,
            colors=[w.lower() for w in r.strings(d, "colors", required=True)],
            sizes=r.word_map(d, "sizes", required=True),
            numbers={k.lower(): v for k, v in r.counts(d, "numbers", required=True).items()},
            relations=r.word_map(d, "relations", required=True),
            positions=r.word_map(d, "positions", required=True),
            color_synonyms=r.word_map(d, "color_synonyms"),
            position_nouns=[w.lower() for w in r.strings(d, "position_nouns")],
            generic_nouns=[w.lower() for w in r.strings(d, "generic_nouns")],
            object_images=Counter(r.counts(d, "object_images")),
            cooccurrence=cooc,
            color_of={k: Counter(r.counts(v, f"color_of.{k}", top=False))
                      for k, v in r.mapping(d, "color_of").items()},
            size_of={k: Counter(r.counts(v, f"size_of.{k}", top=False))
                     for k, v in r.mapping(d, "size_of").items()},
            word_counts=Counter(r.counts(d, "word_counts")),
            learned_objects=r.strings(d, "learned_objects"),
            fitted=r.mapping(d, "fitted"),
        )

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Lexicon:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LexiconError(f"{p}: no such lexicon file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LexiconError(f"{p}: not a JSON lexicon ({e})") from None
        return cls.from_dict(data, str(p))

    @classmethod
    def default(cls) -> Lexicon:
        """The packaged English lexicon (nothing learned yet)."""
        res = resources.files("mmalign.pairs").joinpath(DEFAULT_LEXICON)
        return cls.from_dict(json.loads(res.read_text(encoding="utf-8")),
                             f"mmalign/pairs/{DEFAULT_LEXICON}")

    def sha256(self) -> str:
        """Content hash recorded with every injected pair (same lexicon = same hash)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()


class _Reader:
    """Typed field access for `Lexicon.from_dict` with errors that name the file and field."""

    def __init__(self, source: str):
        self.source = source

    def error(self, where: str, reason: str) -> LexiconError:
        return LexiconError(f"{self.source}: field {where!r}: {reason}" if where
                            else f"{self.source}: {reason}")

    def mapping(self, d: dict, key: str, required: bool = False) -> dict:
        if key not in d:
            if required:
                raise self.error(key, "missing")
            return {}
        if not isinstance(d[key], dict):
            raise self.error(key, f"expected an object, got {type(d[key]).__name__}")
        return d[key]

    def strings(self, d: dict, key: str, required: bool = False) -> list[str]:
        if key not in d:
            if required:
                raise self.error(key, "missing")
            return []
        v = d[key]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.error(key, "expected a list of non-empty strings")
        return list(v)

    def word_map(self, d: dict, key: str, required: bool = False) -> dict[str, str]:
        m = self.mapping(d, key, required)
        for k, v in m.items():
            if not isinstance(v, str) or not v:
                raise self.error(f"{key}.{k}", f"expected a non-empty string, got {v!r}")
        return {k.lower(): v.lower() for k, v in m.items()}

    def counts(self, d: Any, key: str, required: bool = False, top: bool = True
               ) -> dict[str, int]:
        m = self.mapping(d, key, required) if top else d
        if not isinstance(m, dict):
            raise self.error(key, f"expected an object, got {type(m).__name__}")
        for k, v in m.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise self.error(f"{key}.{k}", f"expected a whole number >= 0, got {v!r}")
        return dict(m)


# --------------------------------------------------------------------------- inflection


def pluralize(noun: str) -> str:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if len(noun) > 1 and noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def singularize(word: str) -> str:
    """Undo `pluralize` on a regular plural; other words come back unchanged."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


# --------------------------------------------------------------------------- text analysis


@dataclass(frozen=True)
class Token:
    text: str
    low: str
    start: int
    end: int
    sentence: int
    clause: int


@dataclass(frozen=True)
class Mention:
    """An object noun in the text: tokens [i, j), its singular noun and how it is used."""

    noun: str
    plural: bool
    i: int
    j: int
    start: int
    end: int
    denied: bool  # "no fork", "zero crosses", "not a fork": the text says it is absent
    negated: bool  # in a negated clause (neither clearly present nor clearly absent)

    @property
    def positive(self) -> bool:
        return not self.denied and not self.negated


@dataclass
class Analysis:
    text: str
    tokens: list[Token]
    mentions: list[Mention]
    sentences: list[tuple[int, int]]  # token index range [a, b) per sentence
    negated_clauses: frozenset[int]
    # Colour/size each mention is given here, by mention index (see `described`).
    attributes: dict[int, dict[str, str]] = field(default_factory=dict)

    def descriptor(self, m: Mention) -> tuple[str, str | None, str | None]:
        """(noun, colour, size) as this text describes the mention."""
        d = self.attributes.get(self.mentions.index(m), {})
        return m.noun, d.get("color"), d.get("size")

    def joined(self, i: int, j: int) -> bool:
        """Tokens i..j are separated by plain spaces only (one phrase, no punctuation)."""
        return all(self.text[self.tokens[k].end:self.tokens[k + 1].start].isspace()
                   for k in range(i, j))

    def mention_at(self, i: int) -> Mention | None:
        for m in self.mentions:
            if m.i <= i < m.j:
                return m
        return None

    def mention_starting(self, i: int) -> Mention | None:
        for m in self.mentions:
            if m.i == i:
                return m
        return None

    def sentence_span(self, s: int) -> tuple[int, int]:
        """Characters of sentence s, with its closing punctuation (not the space after)."""
        a, b = self.sentences[s]
        start, end = self.tokens[a].start, self.tokens[b - 1].end
        nxt = self.tokens[b].start if b < len(self.tokens) else len(self.text)
        gap = self.text[end:nxt]
        trail = len(gap) - len(gap.lstrip(".!?\"')]"))
        return start, end + trail

    def negated(self, i: int) -> bool:
        return self.tokens[i].clause in self.negated_clauses


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    sentence = clause = 0
    prev = 0
    for m in _TOKEN.finditer(text):
        if tokens:
            gap = text[prev:m.start()]
            if any(c in _SENTENCE_END for c in gap):
                sentence += 1
                clause += 1
            elif any(c in _CLAUSE_END for c in gap):
                clause += 1
        tokens.append(Token(m.group(), m.group().lower(), m.start(), m.end(), sentence, clause))
        prev = m.end()
    return tokens


def analyse(text: str, lex: Lexicon) -> Analysis:
    tokens = tokenize(text)
    sentences: list[tuple[int, int]] = []
    for k, t in enumerate(tokens):
        if not sentences or tokens[sentences[-1][0]].sentence != t.sentence:
            sentences.append((k, k + 1))
        else:
            sentences[-1] = (sentences[-1][0], k + 1)
    negated = frozenset(t.clause for t in tokens
                        if t.low in NEGATIONS or t.low.endswith("n't"))
    a = Analysis(text, tokens, [], sentences, negated)
    i = 0
    while i < len(tokens):
        found = None
        for n in range(min(lex.max_form_words, len(tokens) - i), 0, -1):
            key = tuple(t.low for t in tokens[i:i + n])
            if key in lex.forms and a.joined(i, i + n - 1):
                found = n, lex.forms[key]
                break
        if found is None or (found[0] == 1 and _colour_use(a, i, lex)):
            i += 1
            continue
        n, (noun, plural) = found
        a.mentions.append(Mention(noun, plural, i, i + n, tokens[i].start, tokens[i + n - 1].end,
                                  _denied(a, i, lex), tokens[i].clause in negated))
        i += n
    a.attributes = described(a, lex)
    return a


def _colour_use(a: Analysis, i: int, lex: Lexicon) -> bool:
    """Whether a word that is both a colour and an object ("orange") is used as the colour."""
    low = a.tokens[i].low
    if low not in lex.color_set:
        return False
    nxt = i + 1
    if nxt < len(a.tokens) and a.joined(i, nxt):
        w = a.tokens[nxt].low
        if w.isalpha() and w not in STOPWORDS:
            return True  # it modifies the next word: "orange circle", "orange ring"
    prev = a.tokens[i - 1].low if i > 0 else ""
    return prev not in DETERMINERS and prev not in lex.numbers


def _denied(a: Analysis, i: int, lex: Lexicon) -> bool:
    """'no X', 'zero Xs', 'not a/any X', 'not a single X', 'without a X', "isn't any X"
    (colour, size and number words may stand between)."""
    j = i - 1
    while j >= 0 and a.joined(j, j + 1) and a.tokens[j].low in lex.attribute_words:
        if a.tokens[j].low in ("zero",):
            return True
        j -= 1
    if j < 0 or not a.joined(j, j + 1):
        return False
    w = a.tokens[j].low
    if w in ("no", "zero"):
        return True
    if w == "single" and j > 0 and a.joined(j - 1, j):  # "not a single X"
        j -= 1
        w = a.tokens[j].low
    if w in ("a", "an", "any") and j > 0 and a.joined(j - 1, j):
        before = a.tokens[j - 1].low
        return before in ("not", "without", "no") or before.endswith("n't")
    return False


def attribute_target(a: Analysis, i: int, lex: Lexicon) -> tuple[Mention, str] | None:
    """The object an attribute word at token i describes, and how: "attributive" when it
    modifies a following noun ("large red circle"), "predicative" after a copula with the
    noun earlier in the clause ("the circle is red"). None when it describes no object."""
    j = i + 1
    while j < len(a.tokens) and a.joined(j - 1, j):
        m = a.mention_starting(j)
        if m is not None:
            return m, "attributive"
        if a.tokens[j].low not in lex.color_set and a.tokens[j].low not in lex.sizes:
            break
        j += 1
    k = i - 1
    if k >= 0 and a.tokens[k].low in PREDICATE_MODIFIERS and a.joined(k, k + 1):
        k -= 1
    if k < 0 or a.tokens[k].low not in COPULAS or not a.joined(k, k + 1):
        return None
    clause = a.tokens[i].clause
    before = [m for m in a.mentions if m.j <= k and a.tokens[m.i].clause == clause
              and not m.denied]
    return (before[-1], "predicative") if before else None


def described(a: Analysis, lex: Lexicon) -> dict[int, dict[str, str]]:
    """Colour and size each mention is given in this text: mention index -> {"color": ...,
    "size": ...} ("a small green hexagon", "the hexagon is small"). Negated clauses skipped."""
    index = {id(m): k for k, m in enumerate(a.mentions)}
    out: dict[int, dict[str, str]] = {}
    for i, t in enumerate(a.tokens):
        is_color = t.low in lex.color_set
        if not (is_color or t.low in lex.sizes) or a.mention_at(i) is not None or a.negated(i):
            continue
        found = attribute_target(a, i, lex)
        if found is None:
            continue
        slot = out.setdefault(index[id(found[0])], {})
        slot["color" if is_color else "size"] = lex.canonical_color(t.low) if is_color else t.low
    return out


# --------------------------------------------------------------------------- fitting


def image_key(images: Sequence[str], fallback: str) -> str:
    """Records about the same image(s) share facts; a text-only record stands alone."""
    return "\n".join(images) if images else f"\x00{fallback}"


def fit_lexicon(samples: Iterable[Sample], base: Lexicon | None = None, *,
                min_count: int = 3, min_images: int = 2) -> Lexicon:
    """Extend `base` (default: the packaged English lexicon) with what `samples` teach.

    1. New object nouns: the head word of phrases that a colour, size or number word opens
       ("two small hexagons", "a green ring"), kept when seen `min_count` times over at least
       `min_images` images and not generic ("shapes", "background") or a grammar word.
    2. With the extended vocabulary, per image (all answers of all records that share it):
       the objects mentioned as present, pairs of them (co-occurrence), and the colour and
       size words that describe each object; plus how often each attribute word occurs.
    Only assistant answers are read: questions may name absent objects ("is there a fork?").
    """
    lex = base or Lexicon.default()
    by_image: dict[str, list[str]] = defaultdict(list)
    n_records = 0
    for s in samples:
        n_records += 1
        by_image[image_key(s.images, s.id)].extend(s.answers)
    learned = _learn_nouns(by_image, lex, min_count, min_images)
    objects = dict(lex.objects)
    for noun, plural in learned.items():
        objects.setdefault(noun, ObjectEntry(plural))
    out = Lexicon(
        objects=objects, colors=list(lex.colors), sizes=dict(lex.sizes),
        numbers=dict(lex.numbers), relations=dict(lex.relations),
        positions=dict(lex.positions), color_synonyms=dict(lex.color_synonyms),
        position_nouns=list(lex.position_nouns), generic_nouns=list(lex.generic_nouns),
        object_images=Counter(lex.object_images), cooccurrence=Counter(lex.cooccurrence),
        color_of={k: Counter(v) for k, v in lex.color_of.items()},
        size_of={k: Counter(v) for k, v in lex.size_of.items()},
        word_counts=Counter(lex.word_counts),
        learned_objects=sorted(set(lex.learned_objects) | set(learned)),
    )
    n_answers = 0
    for texts in by_image.values():
        present: set[str] = set()
        for text in texts:
            n_answers += 1
            a = analyse(text, out)
            present |= {m.noun for m in a.mentions if not m.denied}
            _count_attributes(a, out)
        out.object_images.update(present)
        ordered = sorted(present)
        for x in range(len(ordered)):
            for y in range(x + 1, len(ordered)):
                out.cooccurrence[(ordered[x], ordered[y])] += 1
    prev = lex.fitted or {}
    out.fitted = {"records": prev.get("records", 0) + n_records,
                  "images": prev.get("images", 0) + len(by_image),
                  "answers": prev.get("answers", 0) + n_answers}
    return out


def _count_attributes(a: Analysis, lex: Lexicon) -> None:
    for i, t in enumerate(a.tokens):
        if t.low in lex.color_set or t.low in lex.sizes or t.low in lex.numbers:
            lex.word_counts[t.low] += 1
        if t.low not in lex.color_set and t.low not in lex.sizes:
            continue
        if a.mention_at(i) is not None:  # "orange" the fruit
            continue
        found = attribute_target(a, i, lex)
        if found is None or a.negated(i):
            continue
        noun = found[0].noun
        if t.low in lex.color_set:
            lex.color_of.setdefault(noun, Counter())[lex.canonical_color(t.low)] += 1
        else:
            lex.size_of.setdefault(noun, Counter())[t.low] += 1


def _learn_nouns(by_image: dict[str, list[str]], lex: Lexicon, min_count: int,
                 min_images: int) -> dict[str, str]:
    """Head nouns of attribute-led phrases: singular -> plural, for words not yet known.
    Regular plurals count towards their singular ("two circles" and "a red circle")."""
    seen: Counter = Counter()
    images: dict[str, set[str]] = defaultdict(set)
    plurals: dict[str, str] = {}
    generic = set(lex.generic_nouns) | {pluralize(g) for g in lex.generic_nouns}
    banned = generic | set(lex.attribute_words) | set(lex.positions) | set(lex.position_nouns) \
        | STOPWORDS
    known = {w for form in lex.forms for w in form}
    for key, texts in by_image.items():
        for text in texts:
            tokens = tokenize(text)
            a = Analysis(text, tokens, [], [], frozenset())
            heads: set[int] = set()  # "two green hexagons": one head, however many triggers
            for i, t in enumerate(tokens):
                if t.low not in lex.attribute_words and not t.low.isdigit():
                    continue
                run: list[int] = []
                j = i + 1
                while j < len(tokens) and len(run) < 3 and a.joined(j - 1, j):
                    w = tokens[j].low
                    if w in STOPWORDS or not w.isalpha():
                        break
                    run.append(j)
                    j += 1
                run = [k for k in run if tokens[k].low not in lex.attribute_words]
                if run and not any(tokens[k].low in known for k in run):
                    heads.add(run[-1])
            for k in heads:
                w = tokens[k].low
                singular = singularize(w)
                if w in banned or singular in banned or len(w) < 3 \
                        or w.endswith(("ing", "ed", "ly")):
                    continue
                if singular != w:
                    plurals[singular] = w
                seen[singular] += 1
                images[singular].add(key)
    return {s: plurals.get(s, pluralize(s)) for s, n in sorted(seen.items())
            if n >= min_count and len(images[s]) >= min_images and s not in known}

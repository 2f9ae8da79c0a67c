"""The LLM injector: hallucinations written by a language model through any `Generator`.

The model gets our prompt (`mmalign/prompts/inject_v1.txt`, our own words; its sha256 goes
with every pair) holding the question, the correct answer and the declared types, and must
reply with one JSON object: `{"rejected": str, "hallucinations": [{"type", "original",
"hallucinated"}]}`. `parse_injection` reads it strictly: a reply that is not exactly that
object (one code fence around it is tolerated), names an undeclared type, claims words that
are not where it says, changes nothing, or rewrites most of the answer is unusable. An
unusable reply is re-asked (`retries` times, with the reason) and then recorded as a failed
target with the raw reply; it never stops the run. Generation errors tied to one request
(`RequestRejected`: an over-long prompt, say) are recorded the same way.

The recorded spans come from a diff of the two texts, not from the model's account, so the
"unchanged outside the spans" contract holds for LLM pairs too; each span carries the type
the model declared for the words it contains ("unlabelled" when it declared none).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign.backends.base import Generator, GenRequest, generate_or_reject
from mmalign.backends.judge import render_question
from mmalign.io.prompts import prompt_sections, read_prompt
from mmalign.pairs.inject import (
    HALLUCINATION_TYPES,
    Edit,
    Injected,
    InjectionError,
    Skipped,
    Target,
    parse_types,
)
from mmalign.records import IMAGE_TOKEN, Turn

DEFAULT_PROMPT = "inject_v1"
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class InjectPrompt:
    """An injection prompt file: the main template plus `=== name ===` sections (`types`:
    one `name: description` line per type, `reasoning`, `re-ask`). Placeholders are replaced
    verbatim: {question} {answer} {types} {count} {reasoning_block}; re-ask: {error}."""

    name: str
    text: str
    sha256: str

    @property
    def sections(self) -> dict[str, str]:
        return prompt_sections(self.text)

    def type_descriptions(self) -> dict[str, str]:
        out = {}
        for line in self.sections.get("types", "").splitlines():
            name, sep, desc = line.partition(":")
            if sep and name.strip():
                out[name.strip()] = desc.strip()
        return out

    def render(self, question: str, answer: str, types: Sequence[str], count: int,
               reasoning: bool) -> str:
        desc = self.type_descriptions()
        listed = "\n".join(f"- {t}: {desc.get(t, t)}" for t in types)
        block = ("\n" + self.sections["reasoning"] + "\n") if reasoning and \
            "reasoning" in self.sections else ""
        return (self.sections["main"].replace("{question}", question)
                .replace("{answer}", answer).replace("{types}", listed)
                .replace("{count}", str(count)).replace("{reasoning_block}", block))

    def reask(self, error: str) -> str:
        s = self.sections
        if "re-ask" not in s:
            return f"Your reply could not be used: {error}. Reply again with only the JSON object."
        return s["re-ask"].replace("{error}", error)


def load_inject_prompt(name_or_path: str | os.PathLike = DEFAULT_PROMPT) -> InjectPrompt:
    """A packaged prompt by name (`inject_v1`) or any prompt file by path."""
    prompt = InjectPrompt(*read_prompt(name_or_path, "injection"))
    missing = [k for k in ("{question}", "{answer}", "{types}")
               if k not in prompt.sections["main"]]
    if missing:
        raise ValueError(f"injection prompt {prompt.name!r} lacks the placeholder(s) "
                         f"{', '.join(missing)}")
    return prompt


# --------------------------------------------------------------------------- parsing


class InjectionParseError(ValueError):
    """A reply that is not a usable injection; the message says why (sent back in a re-ask)."""


_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*)\n\s*```$", re.DOTALL)
_DIFF_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


def parse_injection(reply: str, answer: str, types: Sequence[str],
                    max_changed: float = 0.6) -> tuple[str, list[Edit]]:
    """Read a model's reply strictly; return the rejected text and its edits (diff spans)."""
    if not isinstance(reply, str) or not reply.strip():
        raise InjectionParseError("the reply is empty")
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InjectionParseError(f"the reply is not one JSON object ({e.msg} at character "
                                  f"{e.pos})") from None
    if not isinstance(obj, dict):
        raise InjectionParseError(f"the reply is JSON but not an object ({type(obj).__name__})")
    rejected = obj.get("rejected")
    if not isinstance(rejected, str) or not rejected.strip():
        raise InjectionParseError("'rejected' must be a non-empty string")
    claims = obj.get("hallucinations")
    if not isinstance(claims, list) or not claims:
        raise InjectionParseError("'hallucinations' must be a non-empty list")
    labelled: list[tuple[str, str]] = []
    for k, h in enumerate(claims):
        where = f"hallucinations[{k}]"
        if not isinstance(h, dict):
            raise InjectionParseError(f"{where} must be an object")
        kind, original, new = h.get("type"), h.get("original", ""), h.get("hallucinated")
        if kind not in types:
            raise InjectionParseError(f"{where}.type {kind!r} is not one of {', '.join(types)}")
        if not isinstance(original, str) or not isinstance(new, str) or not new.strip():
            raise InjectionParseError(f"{where} needs string 'original' and a non-empty "
                                      f"'hallucinated'")
        if new.strip() not in rejected:
            raise InjectionParseError(f"{where}.hallucinated {new!r} is not in 'rejected'")
        if original.strip() and original.strip() not in answer:
            raise InjectionParseError(f"{where}.original {original!r} is not in the answer")
        labelled.append((kind, new.strip()))
    if " ".join(rejected.split()) == " ".join(answer.split()):
        raise InjectionParseError("'rejected' is the answer unchanged")
    edits, changed = diff_edits(answer, rejected)
    words = max(1, len(re.findall(r"\w+", answer)))
    if changed / words > max_changed:
        raise InjectionParseError(f"{changed} of {words} words changed: keep the rest of the "
                                  f"answer as it is")
    for e in edits:
        e.type = e.kind = next((k for k, new in labelled if _overlap(new, e.replacement)),
                               UNLABELLED)
    return rejected, edits


def _overlap(claimed: str, span: str) -> bool:
    a, b = claimed.strip().lower(), span.strip().lower()
    return bool(a and b) and (a in b or b in a)


def diff_edits(chosen: str, rejected: str) -> tuple[list[Edit], int]:
    """Character spans where two texts differ, from a diff over words, spaces and punctuation
    (spaces are tokens too, so the texts agree exactly outside the spans). Also returns how
    many words of `chosen` were replaced or removed."""
    a, b = _DIFF_TOKEN.findall(chosen), _DIFF_TOKEN.findall(rejected)
    pa, pb = _offsets(a), _offsets(b)
    edits, changed = [], 0
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        changed += sum(1 for t in a[i1:i2] if re.match(r"\w", t))
        s, e, rs, re_ = pa[i1], pa[i2], pb[j1], pb[j2]
        edits.append(Edit(type=UNLABELLED, kind=UNLABELLED, start=s, end=e,
                          original=chosen[s:e], replacement=rejected[rs:re_],
                          rejected_start=rs, rejected_end=re_))
    return edits, changed


def _offsets(tokens: list[str]) -> list[int]:
    out, pos = [0], 0
    for t in tokens:
        pos += len(t)
        out.append(pos)
    return out


# --------------------------------------------------------------------------- injector


class LLMInjector:
    """Ask a `Generator` to write the hallucinations; see the module docstring."""

    def __init__(self, generator: Generator, *, types: Sequence[str] = HALLUCINATION_TYPES,
                 edits: int = 1, prompt: str | os.PathLike = DEFAULT_PROMPT,
                 max_new_tokens: int = 512, temperature: float = 0.0, retries: int = 1,
                 with_image: bool = False, image_root: str | os.PathLike | None = None,
                 max_changed: float = 0.6):
        if edits < 1 or retries < 0:
            raise InjectionError("edits must be >= 1 and retries >= 0")
        self.generator = generator
        self.types = parse_types(types)
        self.edits = edits
        self.prompt = load_inject_prompt(prompt)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.retries = retries
        self.with_image = with_image
        self.image_root = Path(image_root) if image_root is not None else None
        self.max_changed = max_changed
        self.name = f"llm:{generator.name}"

    def describe(self) -> dict[str, Any]:
        return {"injector": "llm", "generator": self.generator.name,
                "prompt": self.prompt.name, "prompt_sha256": self.prompt.sha256,
                "temperature": self.temperature}

    def inject(self, targets: Sequence[Target]) -> list[Injected | Skipped]:
        results: list[Injected | Skipped | None] = [None] * len(targets)
        allowed = [self._types_for(t) for t in targets]
        convs = [[Turn("user", self._render(t, ok))] for t, ok in zip(targets, allowed,
                                                                     strict=True)]
        pending = list(range(len(targets)))
        errors: dict[int, str] = {}
        replies: dict[int, str] = {}
        for attempt in range(self.retries + 1):
            if not pending:
                break
            got = self._generate([targets[i] for i in pending], [convs[i] for i in pending])
            still = []
            for i, reply in zip(pending, got, strict=True):
                if isinstance(reply, Exception):
                    results[i] = Skipped("llm-request", f"the backend refused the request: "
                                         f"{reply}", failed=True)
                    continue
                replies[i] = reply
                try:
                    rejected, edits = parse_injection(reply, targets[i].answer, allowed[i],
                                                      self.max_changed)
                except InjectionParseError as e:
                    errors[i] = str(e)
                    convs[i] = [*convs[i], Turn("assistant", reply or " "),
                                Turn("user", self.prompt.reask(str(e)))]
                    still.append(i)
                    continue
                types = sorted({e.type for e in edits if e.type != "unlabelled"})
                results[i] = Injected(rejected, edits, types or ["unlabelled"],
                                      {"attempts": attempt + 1})
            pending = still
        for i in pending:
            results[i] = Skipped("llm-unusable",
                                 f"unusable reply after {self.retries + 1} attempt(s): "
                                 f"{errors[i]}", failed=True, raw=replies.get(i))
        return [r for r in results if r is not None]

    def _types_for(self, t: Target) -> list[str]:
        # `reasoning` only makes sense for an answer that reasons to a conclusion.
        out = [x for x in self.types if x != "reasoning" or t.category == "reasoning"]
        return out or list(self.types)

    def _render(self, t: Target, types: list[str]) -> str:
        question = render_question(t.prompt)
        text = self.prompt.render(question, t.answer, types, self.edits,
                                  reasoning="reasoning" in types)
        return f"{IMAGE_TOKEN}\n{text}" if self.with_image and t.images else text

    def _request(self, t: Target, conv: list[Turn]) -> GenRequest:
        images: list[Path] = []
        if self.with_image and t.images:
            root = self.image_root or Path(".")
            images = [root / p for p in t.images[:1]]
        return GenRequest(images=images, messages=conv, max_new_tokens=self.max_new_tokens,
                          temperature=self.temperature)

    def _generate(self, targets: list[Target], convs: list[list[Turn]]
                  ) -> list[str | Exception]:
        reqs = [self._request(t, c) for t, c in zip(targets, convs, strict=True)]
        return generate_or_reject(self.generator, reqs)

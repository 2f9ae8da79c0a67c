"""Recipes: a YAML file -> typed dataclasses, with `key.sub=value` overrides that win.

A recipe names the stages to run, in order, and holds one section per stage:

    name: quickstart
    stages: [world, base, sft, eval, report]
    world: {corpus_images: 4000}        # WorldConfig fields
    sft: {max_steps: 150, lr: 2.0e-4}   # SFTSection fields
    ...

Loading is strict: a key that no dataclass field takes is an error naming the recipe file and
the key's path, with a "did you mean". Values are checked against the field's type; a float
field takes `2e-4` too (YAML 1.1 reads that as a string), and a list-of-strings field takes a
comma-separated string (`eval.benches=pope,vqa` on the command line). A dict field (such as
`world.defect_rates`) is merged key by key over its default, so naming one rate keeps the others.

Overrides are applied to the parsed YAML before it is typed, so they are checked exactly like
the file: `sft.lr=1e-4`, `eval.limit=null`, `world.scene.max_objects=3`. Each value is read as
a YAML scalar (or flow list: `eval.benches=[pope,vqa]`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmalign.world.make import WorldConfig


class RecipeError(ValueError):
    """A recipe (or an override) that cannot be used; the message names the file and key."""


# ---- sections -------------------------------------------------------------------------------

@dataclass
class BaseSection:
    """The base model every later stage starts from."""

    # A saved HF model folder. Relative paths are looked up in the current folder, then in the
    # repository root (where the shipped checkpoint lives).
    checkpoint: str = "checkpoints/tiny-base"
    # true: build the base model from the world (`mmalign.models.base.build_base`) even if the
    # checkpoint exists. A missing checkpoint is built the same way.
    train: bool = False
    # `mmalign.models.base.BaseConfig` fields for building (vision_steps, sft_steps, lr, ...).
    build: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTSection:
    """Supervised fine-tuning of the base model (`mmalign.train.sft.train_sft`).

    Names follow `mmalign train sft`'s options."""

    # Corpus files, any format mmalign.io reads; relative paths are inside the world folder.
    # "FILE:N" takes N records of a world file drawn at random (seed 0), e.g. the short-answer
    # part of a LLaVA-1.5-style mix: [corpus.json, clean.json:8000].
    data: list[str] = field(default_factory=lambda: ["corpus.json"])
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    max_length: int = 512
    lora: bool = False  # false: full fine-tuning
    lora_r: int = 16
    lora_alpha: int | None = None  # default 2 * lora_r
    freeze_vision_tower: bool = False
    limit: int | None = None  # train on the first N records only
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200
    report_to: list[str] = field(default_factory=lambda: ["none"])


@dataclass
class EvalSection:
    """Evaluation of every model named in `models` on the world's benchmarks."""

    # Stages whose `model` output is evaluated; each gets RUN/eval/<name>/.
    models: list[str] = field(default_factory=lambda: ["base", "sft"])
    benches: list[str] = field(default_factory=lambda: ["pope", "vqa", "mc", "chair"])
    limit: int | None = None  # the first N benchmark images only
    batch_size: int = 16
    device: str | None = None  # default: cuda if available


@dataclass
class ReportSection:
    """One HTML page + results.json comparing the evaluated models."""

    title: str | None = None  # default: "mmalign: <recipe name>"
    gallery: int = 8  # sample cards in the gallery (0: none)
    gallery_bench: str | None = None  # default: chair if evaluated, else the first bench


@dataclass
class Recipe:
    """A whole recipe. `source` and `overrides` record where it came from."""

    name: str = "recipe"
    description: str = ""
    run_dir: str | None = None  # default: runs/<name>
    stages: list[str] = field(default_factory=lambda: ["world", "base", "sft", "eval", "report"])
    world: WorldConfig = field(default_factory=WorldConfig)
    base: BaseSection = field(default_factory=BaseSection)
    sft: SFTSection = field(default_factory=SFTSection)
    eval: EvalSection = field(default_factory=EvalSection)
    report: ReportSection = field(default_factory=ReportSection)
    source: str = field(default="<recipe>", metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})


# ---- loading --------------------------------------------------------------------------------

def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file, apply `key.sub=value` overrides, and type it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({_one_line(e)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got "
                          f"{type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, source=str(path), overrides=overrides)


def recipe_from_dict(raw: dict[str, Any], *, source: str = "<recipe>",
                     overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    raw = apply_overrides(raw, overrides, source)
    recipe = to_dataclass(Recipe, raw, source=source, overridden=_override_keys(overrides))
    recipe.source, recipe.overrides = source, list(overrides)
    return recipe


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...],
                    source: str = "<recipe>") -> dict[str, Any]:
    """A copy of `raw` with each `a.b.c=value` set (the value read as YAML)."""
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"{source}: override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise RecipeError(f"{source}: override {item!r}: value is not valid YAML "
                              f"({_one_line(e)})") from None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise RecipeError(f"{source}: override {item!r}: "
                                  f"{'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def to_dataclass(cls: type, data: Any, *, where: str = "", source: str = "<recipe>",
                 overridden: set[str] | None = None) -> Any:
    """Build dataclass `cls` from a YAML mapping, strictly: unknown keys and wrong types raise
    RecipeError naming `source` and the key path (`where` is the path of `data` itself)."""
    ctx = _Ctx(source, overridden or set())
    return ctx.dataclass(cls, data, where)


# ---- typing YAML values ---------------------------------------------------------------------

_MISSING = object()


@dataclass
class _Ctx:
    source: str
    overridden: set[str]

    def error(self, where: str, msg: str) -> RecipeError:
        related = where and any(k == where or k.startswith(f"{where}.")
                                or where.startswith((f"{k}.", f"{k}[")) for k in self.overridden)
        origin = " (from a command-line override)" if related else ""
        return RecipeError(f"{self.source}: {where or 'recipe'}{origin}: {msg}")

    def dataclass(self, cls: type, data: Any, where: str, default: Any = _MISSING) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(where, f"expected a section (mapping of {cls.__name__} fields), "
                                    f"got {_show(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)
                  if f.init and not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f"; did you mean {_join(where, close[0])}?" if close else ""
                raise self.error(path, f"unknown key{hint} (known in "
                                       f"{where or 'the recipe'}: {', '.join(fields)})")
            f = fields[key]
            kwargs[key] = self.value(hints[key], value, path, _field_default(f, default))
        try:
            if isinstance(default, cls):  # keep the owner's default for keys not given
                return dataclasses.replace(default, **kwargs)
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise self.error(where, str(e)) from None

    def value(self, tp: Any, value: Any, where: str, default: Any = _MISSING) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            if value is None:
                if type(None) in args:
                    return None
                raise self.error(where, "must not be null")
            errors = []
            for arm in (a for a in args if a is not type(None)):
                try:
                    return self.value(arm, value, where, default)
                except RecipeError as e:
                    errors.append(e)
            raise errors[0]
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, where, default)
        if origin is list or origin is tuple:
            if isinstance(value, str) and args and args[0] is str:
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise self.error(where, f"expected a list, got {_show(value)}")
            items = [self.value(args[0] if args else Any, v, f"{where}[{i}]")
                     for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                raise self.error(where, f"expected a mapping, got {_show(value)}")
            merged = dict(default) if isinstance(default, dict) else {}
            for k, v in value.items():
                merged[str(k)] = self.value(args[1] if args else Any, v, f"{where}.{k}",
                                            merged.get(str(k), _MISSING))
            return merged
        return self.scalar(tp, value, where)

    def scalar(self, tp: Any, value: Any, where: str) -> Any:
        if value is None:
            raise self.error(where, f"must be a {tp.__name__}, not null")
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise self.error(where, f"must be true or false, got {_show(value)}")
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self.error(where, f"must be an integer, got {_show(value)}")
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise self.error(where, f"must be a number, got {_show(value)}")
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            raise self.error(where, f"must be a string, got {_show(value)}")
        return value  # a type the loader has no rule for: taken as written


def _field_default(f: dataclasses.Field, parent_default: Any) -> Any:
    """The field's default, taken from the parent's default object where there is one (so a
    nested section's defaults are its owner's, not the bare class's)."""
    if parent_default is not _MISSING and parent_default is not None:
        return getattr(parent_default, f.name, _MISSING)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _override_keys(overrides: list[str] | tuple[str, ...]) -> set[str]:
    return {o.partition("=")[0].strip() for o in overrides}


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())

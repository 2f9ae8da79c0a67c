"""The stage runner behind `mmalign run RECIPE`: manifests, skip-if-done, resume.

A run directory holds one folder per stage, `RUN/<stage>/`, with the stage's outputs and a
`manifest.json`:

    {"stage": "sft", "status": "done",              # running | done | failed | interrupted
     "run_id": "<uuid>",                            # new each time the stage (re)starts
     "config": {...},                               # what determines the outputs (the recipe
                                                    #   section, defaults filled in)
     "inputs": {"stages": {"world": "<hash>", ...}, # hash of each upstream stage's manifest
                "files": {"<label>": "<hash>"}},    # content hash of files outside the run
     "outputs": {"model": "sft/final"},             # paths relative to RUN (or absolute)
     "counts": {...}, "timings": {...}, "mmalign_version": "...", "recipe": "..."}

Rules, applied to the recipe's stages in order:
  - a stage whose manifest has the same config and inputs and status "done" is skipped;
  - a stage whose config or inputs changed (or that is named by --force) gets a clean folder
    and runs; its new manifest has a new hash, so every stage downstream runs too;
  - a stage left "running", "failed" or "interrupted" with the same config and inputs is
    re-entered without cleaning its folder, and resumes by itself (SFT from its newest
    checkpoint, eval from its prediction files, the world is rebuilt atomically).
The manifest is written (atomically) before a stage starts and again when it ends.

Stages are an extension point: a `Stage` names the function that runs it, the stages it reads
(`needs`), the config that determines it (`identity`) and any outside files it reads (`files`);
`register` adds it to STAGES. Each function calls library code and returns its outputs.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmalign import __version__
from mmalign.config import Recipe, RecipeError, to_dataclass
from mmalign.io.atomic import write_json
from mmalign.io.images import image_hash

MANIFEST = "manifest.json"
DONE = "done"
# Files of a saved model folder whose content identifies it (weights, config, tokenizer).
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "processor_config.json", "preprocessor_config.json", "chat_template.jinja",
               "chat_template.json", "special_tokens_map.json")
FULL_HASH_MAX_BYTES = 64 << 20  # larger files are hashed from their size and three samples


class StageError(RuntimeError):
    """A stage cannot start (its upstream is missing) or its folder is not ours."""


@dataclass
class StageResult:
    outputs: dict[str, str | Path]  # name -> path (made relative to RUN when inside it)
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage function gets: the recipe, its folder and its upstream manifests."""

    name: str
    recipe: Recipe
    run_dir: Path
    manifests: dict[str, dict[str, Any]]  # done upstream stages, by name
    log: Callable[[str], None] = print

    @property
    def out(self) -> Path:
        return self.run_dir / self.name

    def path(self, stage: str, output: str) -> Path:
        """An upstream stage's output, as an absolute path."""
        outputs = self.manifests[stage]["outputs"]
        if output not in outputs:
            raise StageError(f"stage {stage!r} has no output {output!r} "
                             f"(it has: {', '.join(outputs)})")
        return _absolute(outputs[output], self.run_dir)


def _no_files(recipe: Recipe) -> dict[str, Path]:
    return {}


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], StageResult]
    needs: Callable[[Recipe], list[str]]  # upstream stages whose outputs it reads
    identity: Callable[[Recipe], dict[str, Any]]  # the config that determines its outputs
    files: Callable[[Recipe], dict[str, Path]] = _no_files  # outside files it reads
    check: Callable[[Recipe], None] | None = None  # refuse a bad recipe before anything runs


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    STAGES[stage.name] = stage
    return stage


@dataclass
class StageRun:
    """What happened to one stage in one `run_pipeline` call."""

    name: str
    action: str  # ran | skipped | not selected
    seconds: float = 0.0


# ---- the runner -----------------------------------------------------------------------------

def run_pipeline(recipe: Recipe, run_dir: str | Path, *, only: Iterable[str] = (),
                 force: Iterable[str] = (), stages: dict[str, Stage] | None = None,
                 log: Callable[[str], None] = print) -> list[StageRun]:
    """Run the recipe's stages into `run_dir`, skipping those already done."""
    registry = STAGES if stages is None else stages
    run_dir = Path(run_dir).resolve()
    only, force = set(only), set(force)
    check_recipe(recipe, registry)
    for flag, names in (("--only", only), ("--force", force)):
        for n in sorted(names):
            if n not in recipe.stages:
                raise RecipeError(f"{flag} {n}: not a stage of {recipe.source} (stages: "
                                  f"{', '.join(recipe.stages)}){_did_you_mean(n, recipe.stages)}")

    done: dict[str, dict[str, Any]] = {}  # manifests of stages done (this run or before)
    report: list[StageRun] = []
    total = len(recipe.stages)
    for i, name in enumerate(recipe.stages, 1):
        stage = registry[name]
        folder = run_dir / name
        old = read_manifest(folder)
        needs = stage.needs(recipe)
        missing = [n for n in needs if n not in done]
        if only and name not in only:
            if old is not None and old.get("status") == DONE:
                if not missing and _key(stage, recipe, done, needs) != _old_key(old):
                    log(f"warning: {name} is out of date with the recipe; --only uses its "
                        f"existing outputs")
                done[name] = old
            report.append(StageRun(name, "not selected"))
            continue
        if missing:
            raise StageError(f"stage {name!r} reads the output of {missing[0]!r}, which has not "
                             f"finished in {run_dir}; run it first (without --only)")
        config, inputs = _key(stage, recipe, done, needs)
        same = old is not None and (old.get("config"), old.get("inputs")) == (config, inputs)
        if same and old.get("status") == DONE and name not in force:
            log(f"skip {name} (done)")
            done[name] = old
            report.append(StageRun(name, "skipped"))
            continue

        if old is not None and (not same or name in force):
            why = "forced" if name in force else "config or inputs changed"
            log(f"[{i}/{total}] {name}: {why}; starting from a clean folder")
            shutil.rmtree(folder)
        elif old is not None:
            log(f"[{i}/{total}] {name}: resuming ({old.get('status')} before)")
        else:
            _refuse_foreign_folder(folder)
            log(f"[{i}/{total}] {name}")
        done[name] = _run_stage(stage, recipe, run_dir, done, config, inputs, log)
        report.append(StageRun(name, "ran", done[name]["timings"]["seconds"]))
    return report


def _run_stage(stage: Stage, recipe: Recipe, run_dir: Path, done: dict[str, dict[str, Any]],
               config: dict[str, Any], inputs: dict[str, Any],
               log: Callable[[str], None]) -> dict[str, Any]:
    folder = run_dir / stage.name
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "stage": stage.name, "status": "running", "run_id": uuid.uuid4().hex,
        "config": config, "inputs": inputs,
        "outputs": {}, "counts": {}, "mmalign_version": __version__, "recipe": recipe.source,
        "overrides": recipe.overrides,
        "timings": {"started": _now()},
    }
    write_json(folder / MANIFEST, manifest)
    ctx = StageContext(stage.name, recipe, run_dir, dict(done), log)
    t0 = time.monotonic()
    try:
        result = stage.run(ctx)
    except BaseException as e:
        manifest["status"] = "failed" if isinstance(e, Exception) else "interrupted"
        manifest["error"] = f"{type(e).__name__}: {e}"
        manifest["timings"] |= {"finished": _now(), "seconds": round(time.monotonic() - t0, 2)}
        write_json(folder / MANIFEST, manifest)
        log(f"{manifest['status']} {stage.name} after {manifest['timings']['seconds']:.1f}s")
        raise
    seconds = round(time.monotonic() - t0, 2)
    manifest |= {"status": DONE,
                 "outputs": {k: _relative(v, run_dir) for k, v in result.outputs.items()},
                 "counts": _jsonable(result.counts)}
    manifest["timings"] |= {"finished": _now(), "seconds": seconds}
    write_json(folder / MANIFEST, manifest)
    log(f"done {stage.name} in {_duration(seconds)}")
    return _jsonable(manifest)  # as a later run reads it back, so its hash is the same


def check_recipe(recipe: Recipe, stages: dict[str, Stage] | None = None) -> None:
    """Refuse unknown or duplicate stages, a stage listed before one it reads, and whatever a
    stage's own check refuses; all before anything runs."""
    registry = STAGES if stages is None else stages
    if not recipe.stages:
        raise RecipeError(f"{recipe.source}: stages: no stages to run")
    seen: list[str] = []
    for name in recipe.stages:
        if name not in registry:
            raise RecipeError(f"{recipe.source}: stages: unknown stage {name!r}"
                              f"{_did_you_mean(name, list(registry))} "
                              f"(known: {', '.join(registry)})")
        if name in seen:
            raise RecipeError(f"{recipe.source}: stages: {name!r} is listed twice")
        stage = registry[name]
        if stage.check is not None:
            stage.check(recipe)
        for need in stage.needs(recipe):
            if need not in seen:
                raise RecipeError(f"{recipe.source}: stages: {name!r} reads the output of "
                                  f"{need!r}, which is not listed before it")
        seen.append(name)


def _key(stage: Stage, recipe: Recipe, done: dict[str, dict[str, Any]], needs: list[str]
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, inputs): what decides whether a stage's existing outputs are current."""
    config = _jsonable(stage.identity(recipe))
    inputs = {"stages": {n: manifest_hash(done[n]) for n in needs},
              "files": {label: file_hash(p) for label, p in stage.files(recipe).items()}}
    return config, inputs


def _old_key(old: dict[str, Any]) -> tuple[Any, Any]:
    return old.get("config"), old.get("inputs")


def _refuse_foreign_folder(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise StageError(f"{folder} exists, is not empty and has no {MANIFEST}: not a stage "
                         f"folder of `mmalign run`; choose another --run-dir or remove it")


# ---- manifests and hashes -------------------------------------------------------------------

def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """A stage folder's manifest, or None when there is none (or it is not ours)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # manifests are written atomically; a broken one is not ours
    if not isinstance(manifest, dict) or manifest.get("stage") != Path(folder).name:
        return None
    return manifest


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Identity of a finished stage: changes whenever it runs again (each run has its own
    run_id), so the stages after it run again too."""
    text = json.dumps(manifest, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: str | Path) -> str:
    """Content hash (no mtime): the whole file up to 64 MiB; above that, the size and three
    1 MiB samples (start, middle, end), so multi-GB weights are not read on every run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    size = path.stat().st_size
    if size <= FULL_HASH_MAX_BYTES:
        return "sha256:" + image_hash(path)  # a plain sha256 of the bytes, whatever the file
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(str(size).encode())
        for offset in (0, size // 2, size - (1 << 20)):
            f.seek(offset)
            h.update(f.read(1 << 20))
    return "sampled-sha256:" + h.hexdigest()


# ---- the quickstart stages ------------------------------------------------------------------

def _world_run(ctx: StageContext) -> StageResult:
    from mmalign.world.make import make_world

    out = ctx.out / "data"
    manifest = make_world(out, ctx.recipe.world, log=lambda m: ctx.log(f"  {m}"))
    return StageResult({"world": out}, manifest["counts"])


register(Stage("world", _world_run, needs=lambda r: [], identity=lambda r: asdict(r.world)))


def repo_root() -> Path | None:
    """The source checkout this package runs from, if it runs from one."""
    import mmalign

    root = Path(mmalign.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def find_checkpoint(path: str) -> Path | None:
    """A model folder by path: as given, else relative to the repository root."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + (
        [repo_root() / p] if repo_root() else [])
    for c in candidates:
        if (c / "config.json").is_file():
            return c.resolve()
    return None


def _base_builds(r: Recipe) -> bool:
    return r.base.train or find_checkpoint(r.base.checkpoint) is None


def _base_config(r: Recipe):
    from mmalign.models.base import BaseConfig

    return to_dataclass(BaseConfig, r.base.build, where="base.build", source=r.source)


def _base_identity(r: Recipe) -> dict[str, Any]:
    if _base_builds(r):
        return {"train": True, "build": asdict(_base_config(r))}
    return {"train": False, "checkpoint": r.base.checkpoint}


def _base_files(r: Recipe) -> dict[str, Path]:
    if _base_builds(r):
        return {}
    ckpt = find_checkpoint(r.base.checkpoint)
    assert ckpt is not None
    files = [ckpt / n for n in MODEL_FILES] + sorted(ckpt.glob("*.safetensors")) \
        + sorted(ckpt.glob("*.safetensors.index.json")) + sorted(ckpt.glob("*.bin"))
    return {f"checkpoint/{f.name}": f for f in files if f.is_file()}


def _base_run(ctx: StageContext) -> StageResult:
    r = ctx.recipe
    if not _base_builds(r):
        ckpt = find_checkpoint(r.base.checkpoint)
        ctx.log(f"  base model: {ckpt}")
        return StageResult({"model": ckpt}, {"files": len(_base_files(r))})
    from mmalign.models.base import build_base

    if not r.base.train:
        ctx.log(f"  base.checkpoint {r.base.checkpoint!r} not found: building the base model "
                f"from the world (slow on a CPU)")
    model = build_base(ctx.path("world", "world"), ctx.out / "build", _base_config(r))
    return StageResult({"model": Path(model)})


def _base_check(r: Recipe) -> None:
    if _base_builds(r):
        _base_config(r)  # build keys typed against BaseConfig, before anything runs


register(Stage("base", _base_run,
               needs=lambda r: ["world"] if _base_builds(r) else [],
               identity=_base_identity, files=_base_files, check=_base_check))


def _sft_external_data(r: Recipe) -> dict[str, Path]:
    # Data inside the world is covered by the world stage's hash; files elsewhere are hashed.
    return {f"data/{p}": Path(p).expanduser() for p in r.sft.data
            if Path(p).expanduser().is_absolute()}


def _has_subset(data: list[str]) -> bool:
    """Does sft.data name a FILE:N subset (experiments.mix_files)?"""
    return any(":" in Path(p).name for p in data)


def _sft_run(ctx: StageContext) -> StageResult:
    from mmalign.experiments import mix_files
    from mmalign.train.sft import SFTRunConfig, train_sft

    s = ctx.recipe.sft
    world = ctx.path("world", "world")
    cfg = SFTRunConfig(
        model=str(ctx.path("base", "model")),
        # absolute paths stay; "FILE:N" subsets keep world-relative image paths, hence the root
        data=mix_files(world, [str(Path(p).expanduser()) for p in s.data], ctx.out),
        image_root=str(world) if _has_subset(s.data) else None,
        output_dir=str(ctx.out), num_train_epochs=s.epochs, max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.lr, lr_scheduler_type=s.lr_scheduler, warmup_ratio=s.warmup_ratio,
        max_length=s.max_length, lora=s.lora, lora_r=s.lora_r,
        lora_alpha=s.lora_alpha if s.lora_alpha is not None else 2 * s.lora_r,
        freeze_vision_tower=s.freeze_vision_tower, limit=s.limit, seed=s.seed,
        logging_steps=s.logging_steps, save_steps=s.save_steps, report_to=s.report_to,
        resume=True)  # an interrupted run goes on from its newest checkpoint
    final = train_sft(cfg)
    history = json.loads((final / "train_log.json").read_text())
    losses = [e["loss"] for e in history if "loss" in e]
    counts = {"steps": max((e.get("step", 0) for e in history), default=0),
              "last_loss": losses[-1] if losses else None}
    return StageResult({"model": final}, counts)


def _sft_check(r: Recipe) -> None:
    if _has_subset(r.sft.data):
        outside = [p for p in r.sft.data if Path(p).expanduser().is_absolute()]
        if outside:
            raise RecipeError(f"{r.source}: sft.data: a FILE:N subset trains with the world "
                              f"as image root, so every file must be in the world; {outside} "
                              "is not")
    for p in _sft_external_data(r).values():
        if not p.is_file():
            raise RecipeError(f"{r.source}: sft.data: {p}: file not found")


register(Stage("sft", _sft_run, needs=lambda r: ["world", "base"],
               identity=lambda r: asdict(r.sft), files=_sft_external_data, check=_sft_check))


def _eval_check(r: Recipe) -> None:
    from mmalign.eval.tasks import UnknownTaskError, get_task

    for b in r.eval.benches:
        try:
            get_task(b)
        except UnknownTaskError as e:
            raise RecipeError(f"{r.source}: eval.benches: {e}") from None
    if not r.eval.models:
        raise RecipeError(f"{r.source}: eval.models: no models to evaluate")


def _eval_run(ctx: StageContext) -> StageResult:
    from mmalign.backends.hf import HFGenerator
    from mmalign.eval.run import evaluate

    e = ctx.recipe.eval
    world = ctx.path("world", "world")
    outputs, counts = {}, {}
    for name in e.models:
        model = ctx.path(name, "model")
        ctx.log(f"  evaluating {name} ({model}) on {', '.join(e.benches)}")
        gen = HFGenerator.from_pretrained(model, batch_size=e.batch_size, device=e.device)
        metrics = evaluate(gen, world, ctx.out / name, e.benches, limit=e.limit,
                           batch_size=e.batch_size)
        outputs[name] = ctx.out / name
        counts[name] = {b: t["items"] for b, t in metrics["tasks"].items()}
        del gen
        gc.collect()  # one model in memory at a time
    return StageResult(outputs, counts)


register(Stage("eval", _eval_run, needs=lambda r: ["world", *r.eval.models],
               identity=lambda r: asdict(r.eval), check=_eval_check))


def _report_run(ctx: StageContext) -> StageResult:
    from mmalign.report.html import gallery_from_predictions, write_report

    r = ctx.recipe
    dirs = {name: ctx.path("eval", name) for name in ctx.manifests["eval"]["outputs"]}
    results = {n: json.loads((d / "metrics.json").read_text()) for n, d in dirs.items()}
    gallery = None
    if r.report.gallery > 0:
        bench = r.report.gallery_bench or ("chair" if "chair" in r.eval.benches
                                           else r.eval.benches[0])
        gallery = gallery_from_predictions(ctx.path("world", "world"), dirs, bench=bench,
                                           n=r.report.gallery)
    html = write_report(results, ctx.out / "index.html", gallery,
                        title=r.report.title or f"mmalign: {r.name}")
    write_json(ctx.out / "results.json", results)
    ctx.log(f"  report: {html}")
    return StageResult({"html": html, "results": ctx.out / "results.json"},
                       {"runs": len(results), "gallery": len(gallery or [])})


register(Stage("report", _report_run, needs=lambda r: ["world", "eval"],
               identity=lambda r: asdict(r.report)))


# ---- small helpers --------------------------------------------------------------------------

def _relative(path: str | Path, run_dir: Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(run_dir))
    except ValueError:
        return str(p)


def _absolute(path: str, run_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else run_dir / p


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f} min"

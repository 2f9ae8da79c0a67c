"""Recipes (config.py) and the stage runner's skip / re-run / resume rules (pipeline.py).

The runner is tested with fake stage functions (each writes a marker file and records that it
ran), so the rules are checked in milliseconds; tests/integration/test_pipeline.py runs the
real stages through the real CLI.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from mmalign.config import Recipe, RecipeError, load_recipe, recipe_from_dict, to_dataclass
from mmalign.pipeline import (
    STAGES,
    Stage,
    StageError,
    StageResult,
    file_hash,
    read_manifest,
    run_pipeline,
)

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- recipes --------------------------------------------------------------------------------

# Experiment recipes drive a bench script (a grid of variants x seeds), not the stage pipeline.
EXPERIMENTS = {"align2llava": "load_experiment", "povid": "load_experiment",
               "mmdpo": "load_config"}


def _bench_loader(name: str):
    from mmalign.experiments import bench_module

    return getattr(bench_module(name), EXPERIMENTS[name])


def test_every_shipped_recipe_loads_and_passes_its_checks():
    from mmalign.pipeline import check_recipe

    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert len(recipes) == 4, recipes  # bump when a recipe is added
    for path in recipes:
        if path.stem in EXPERIMENTS:
            _bench_loader(path.stem)(path)  # strict: raises on an unknown key
            continue
        r = load_recipe(path)
        assert r.stages and all(s in STAGES for s in r.stages)
        check_recipe(r)


def test_quickstart_numbers_are_where_the_brief_says():
    r = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert r.name == "quickstart" and r.stages == ["world", "base", "sft", "eval", "report"]
    assert r.base.checkpoint == "checkpoints/tiny-base" and r.base.train is False
    assert (r.sft.data, r.sft.lora, r.sft.freeze_vision_tower, r.sft.max_steps,
            r.sft.batch_size, r.sft.lr) == \
        (["corpus.json", "clean.json:8000"], False, True, 150, 32, 2e-4)
    assert (r.eval.benches, r.eval.limit, r.eval.batch_size, r.eval.device) == \
        (["pope", "vqa", "mc", "chair"], 100, 32, "cpu")
    assert asdict(r.world) == asdict(Recipe().world)  # world defaults


def test_defaults_fill_missing_sections_and_name_comes_from_the_file(tmp_path):
    r = load_recipe(_write(tmp_path, "stages: [world]\n", "my-recipe.yaml"))
    assert r.name == "my-recipe" and r.stages == ["world"]
    assert r.sft == Recipe().sft and r.world == Recipe().world
    assert r.source == str(tmp_path / "my-recipe.yaml")
    assert load_recipe(_write(tmp_path, "", "empty.yaml")).stages == Recipe().stages


def test_overrides_win_and_values_are_yaml_scalars(tmp_path):
    path = _write(tmp_path, "sft: {lr: 1.0e-3, limit: 5, max_steps: 10}\n"
                            "eval: {benches: [pope]}\n")
    r = load_recipe(path, ["sft.lr=2e-4", "sft.limit=null", "sft.lora=true",
                           "eval.benches=vqa, mc", "world.scene.max_objects=3",
                           "eval.models=[sft]", "sft.data=[a.json,b.json]", "eval.device="])
    assert r.sft.lr == 2e-4 and isinstance(r.sft.lr, float)  # "2e-4" is a YAML 1.1 string
    assert r.sft.limit is None and r.sft.lora is True and r.sft.max_steps == 10
    assert r.eval.benches == ["vqa", "mc"] and r.eval.models == ["sft"]
    assert r.sft.data == ["a.json", "b.json"] and r.eval.device is None
    assert r.world.scene.max_objects == 3 and r.world.scene.min_objects == 1
    assert r.overrides[0] == "sft.lr=2e-4"


def test_integers_become_floats_but_not_the_other_way(tmp_path):
    r = load_recipe(_write(tmp_path, "sft: {lr: 1, epochs: 2}\n"))
    assert r.sft.lr == 1.0 and isinstance(r.sft.epochs, float)
    with pytest.raises(RecipeError, match=r"sft\.max_steps: must be an integer, got 1\.5"):
        load_recipe(_write(tmp_path, "sft: {max_steps: 1.5}\n"))


def test_dict_fields_merge_over_their_defaults(tmp_path):
    r = load_recipe(_write(tmp_path, "world: {defect_rates: {wrong_count: 0.5}}\n"),
                    ["world.defect_rates.truncation=0"])
    rates = Recipe().world.defect_rates
    assert r.world.defect_rates == rates | {"wrong_count": 0.5, "truncation": 0.0}


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    path = _write(tmp_path, "sft:\n  learning_rat: 0.1\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: sft.learning_rat: unknown key")
    assert "command-line" not in msg
    nested = _write(tmp_path, "world:\n  scene: {max_objectz: 3}\n", "nested.yaml")
    with pytest.raises(RecipeError, match=r"nested\.yaml: world\.scene\.max_objectz: unknown "
                                          r"key; did you mean world\.scene\.max_objects\?"):
        load_recipe(nested)
    with pytest.raises(RecipeError, match=r"evals: unknown key; did you mean eval\?"):
        load_recipe(_write(tmp_path, "evals: {}\n", "top.yaml"))


def test_an_override_error_says_it_came_from_the_command_line(tmp_path):
    path = _write(tmp_path, "{}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: sft\.lrr \(from a command-line override\): "
                                          r"unknown key; did you mean sft\.lr\?"):
        load_recipe(path, ["sft.lrr=1"])


@pytest.mark.parametrize("text, overrides, match", [
    ("sft: {lora: 1}\n", [], r"sft\.lora: must be true or false, got 1"),
    ("sft: {lr: fast}\n", [], r"sft\.lr: must be a number, got 'fast'"),
    ("sft: 3\n", [], r"sft: expected a section"),
    ("eval: {benches: {a: 1}}\n", [], r"eval\.benches: expected a list"),
    ("sft: {batch_size: null}\n", [], r"sft\.batch_size: must be a int, not null"),
    ("world: {defect_rates: {wrong_count: 2.0}}\n", [], r"world: defect rate wrong_count=2\.0"),
    ("world: {defect_rates: {no_such: 0.1}}\n", [], r"world: unknown defect type"),
    ("- a\n- b\n", [], r"a recipe is a mapping of sections, got list"),
    ("sft: [1,\n", [], r"not valid YAML"),
    ("{}\n", ["sft.lr"], r"override 'sft.lr' is not of the form key.sub=value"),
    ("{}\n", ["sft..lr=1"], r"not of the form"),
    ("sft: {lr: 0.1}\n", ["sft.lr.x=1"], r"sft\.lr is a value, not a section"),
    ("{}\n", ["sft.lr.x=1"], r"sft\.lr \(from a command-line override\): must be a number"),
])
def test_bad_recipes_fail_with_the_file_and_key(tmp_path, text, overrides, match):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError, match=match) as e:
        load_recipe(path, overrides)
    assert str(e.value).startswith(str(path))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_to_dataclass_types_any_config_class():
    @dataclass
    class C:
        a: int = 1
        b: list[str] | None = None

    assert to_dataclass(C, {"b": "x,y"}) == C(1, ["x", "y"])
    with pytest.raises(RecipeError, match=r"f\.yaml: base\.build\.c: unknown key"):
        to_dataclass(C, {"c": 1}, where="base.build", source="f.yaml")


# ---- the runner, with fake stages -----------------------------------------------------------

class Calls:
    """Fake stage functions: each records its name, writes a marker, maybe raises."""

    def __init__(self):
        self.ran: list[str] = []
        self.fail: set[str] = set()

    def stage(self, name: str, needs: list[str]) -> Stage:
        def run(ctx):
            self.ran.append(name)
            ctx.out.mkdir(parents=True, exist_ok=True)
            marker = ctx.out / "runs.txt"  # survives a resume, not a clean start
            marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
            for n in needs:  # what a real stage does: read its upstream outputs
                assert ctx.path(n, "out").is_dir()
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            extra = {"world": ctx.out} if name == "world" else {}  # the real world's output
            return StageResult({"out": ctx.out} | extra, {"n": 1})

        section = {"world": "world", "base": "base", "sft": "sft", "eval": "eval",
                   "report": "report"}[name]
        return Stage(name, run, needs=lambda r: list(needs),
                     identity=lambda r: asdict(getattr(r, section)))

    def registry(self) -> dict[str, Stage]:
        chain = ["world", "base", "sft", "eval", "report"]
        return {n: self.stage(n, chain[max(i - 1, 0):i]) for i, n in enumerate(chain)}


def _run(calls, tmp_path, overrides=(), logs=None, **kw):
    recipe = recipe_from_dict({"name": "t"}, source="t.yaml", overrides=list(overrides))
    calls.ran.clear()
    logs = [] if logs is None else logs
    return run_pipeline(recipe, tmp_path / "run", stages=calls.registry(), log=logs.append,
                        **kw)


ALL = ["world", "base", "sft", "eval", "report"]


def test_first_run_runs_all_then_everything_skips(tmp_path):
    calls = Calls()
    runs = _run(calls, tmp_path)
    assert calls.ran == ALL and [r.action for r in runs] == ["ran"] * 5
    for name in ALL:
        m = read_manifest(tmp_path / "run" / name)
        assert m["status"] == "done" and m["outputs"]["out"] == name
        assert m["counts"] == {"n": 1} and m["mmalign_version"]
        assert m["timings"]["seconds"] >= 0
    assert read_manifest(tmp_path / "run" / "sft")["config"]["max_steps"] == -1
    assert set(read_manifest(tmp_path / "run" / "sft")["inputs"]["stages"]) == {"base"}
    logs: list[str] = []
    runs = _run(calls, tmp_path, logs=logs)
    assert calls.ran == [] and [r.action for r in runs] == ["skipped"] * 5
    assert [m for m in logs if m.startswith("skip")] == [f"skip {n} (done)" for n in ALL]


def test_changed_config_reruns_that_stage_and_everything_downstream(tmp_path):
    calls = Calls()
    _run(calls, tmp_path)
    _run(calls, tmp_path, ["sft.lr=0.5"])
    assert calls.ran == ["sft", "eval", "report"]
    assert (tmp_path / "run" / "sft" / "runs.txt").read_text() == "x"  # a clean folder
    _run(calls, tmp_path, ["sft.lr=0.5"])
    assert calls.ran == []
    _run(calls, tmp_path, ["sft.lr=0.5", "report.gallery=2"])
    assert calls.ran == ["report"]
    _run(calls, tmp_path, ["sft.lr=0.5", "report.gallery=2", "world.seed=3"])
    assert calls.ran == ALL


def test_a_failed_stage_is_not_done_and_resumes_next_time(tmp_path):
    calls = Calls()
    calls.fail = {"sft"}
    with pytest.raises(RuntimeError, match="sft broke"):
        _run(calls, tmp_path)
    assert calls.ran == ["world", "base", "sft"]
    m = read_manifest(tmp_path / "run" / "sft")
    assert m["status"] == "failed" and m["error"] == "RuntimeError: sft broke"
    assert read_manifest(tmp_path / "run" / "eval") is None
    calls.fail = set()
    logs: list[str] = []
    _run(calls, tmp_path, logs=logs)
    assert calls.ran == ["sft", "eval", "report"]
    assert any("sft: resuming (failed before)" in m for m in logs)
    # re-entered, not cleaned: the stage's own checkpoints would still be there
    assert (tmp_path / "run" / "sft" / "runs.txt").read_text() == "xx"
    assert read_manifest(tmp_path / "run" / "sft")["status"] == "done"


def test_an_interrupted_stage_is_marked_interrupted(tmp_path):
    calls = Calls()
    reg = calls.registry()

    def interrupted(ctx):
        raise KeyboardInterrupt

    reg["base"] = Stage("base", interrupted, needs=lambda r: ["world"],
                        identity=lambda r: asdict(r.base))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(Recipe(), tmp_path / "run", stages=reg, log=lambda m: None)
    assert read_manifest(tmp_path / "run" / "base")["status"] == "interrupted"


def test_force_cleans_and_reruns_the_stage_and_downstream(tmp_path):
    calls = Calls()
    _run(calls, tmp_path)
    _run(calls, tmp_path, force=["base"])
    assert calls.ran == ["base", "sft", "eval", "report"]
    assert (tmp_path / "run" / "base" / "runs.txt").read_text() == "x"


def test_only_runs_the_named_stage_on_done_upstreams(tmp_path):
    calls = Calls()
    with pytest.raises(StageError, match=r"'sft' reads the output of 'base', which has not "
                                         r"finished"):
        _run(calls, tmp_path, only=["sft"])
    _run(calls, tmp_path, only=["world", "base"])
    assert calls.ran == ["world", "base"]
    runs = _run(calls, tmp_path, only=["sft"])
    assert calls.ran == ["sft"] and [r.action for r in runs][2:] == ["ran", "not selected",
                                                                      "not selected"]
    logs: list[str] = []
    _run(calls, tmp_path, ["world.seed=5"], only=["sft"], logs=logs)  # stale upstream: warned
    assert calls.ran == [] and "warning: world is out of date with the recipe" in logs[0]
    _run(calls, tmp_path)
    assert calls.ran == ["eval", "report"]


@pytest.mark.parametrize("kw, match", [
    (dict(only=["sfft"]), r"--only sfft: not a stage of t\.yaml .*did you mean 'sft'\?"),
    (dict(force=["evl"]), r"--force evl: .*did you mean 'eval'\?"),
])
def test_only_and_force_names_are_checked(tmp_path, kw, match):
    with pytest.raises(RecipeError, match=match):
        _run(Calls(), tmp_path, **kw)


def test_stage_list_errors(tmp_path):
    reg = Calls().registry()
    for stages, match in [(["world", "sfft"], r"t\.yaml: stages: unknown stage 'sfft'; did you "
                                              r"mean 'sft'\?"),
                          (["world", "sft", "base"], r"'sft' reads the output of 'base', which "
                                                     r"is not listed before it"),
                          (["world", "world"], "listed twice"), ([], "no stages")]:
        r = recipe_from_dict({"stages": stages}, source="t.yaml")
        with pytest.raises(RecipeError, match=match):
            run_pipeline(r, tmp_path / "run", stages=reg, log=lambda m: None)


def test_a_folder_that_is_not_a_stage_folder_is_left_alone(tmp_path):
    (tmp_path / "run" / "world").mkdir(parents=True)
    (tmp_path / "run" / "world" / "precious.txt").write_text("mine")
    with pytest.raises(StageError, match="has no manifest.json"):
        _run(Calls(), tmp_path)
    assert (tmp_path / "run" / "world" / "precious.txt").read_text() == "mine"


def test_file_hash_is_by_content_not_mtime(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    h = file_hash(p)
    p.write_bytes(b"abc")  # new mtime, same bytes
    assert file_hash(p) == h and h.startswith("sha256:")
    p.write_bytes(b"abd")
    assert file_hash(p) != h


# ---- the real base stage, with a fake world and a fake build_base ---------------------------

def _base_registry(calls: Calls) -> dict[str, Stage]:
    return {"world": calls.stage("world", []), "base": STAGES["base"]}


def test_base_records_a_shipped_checkpoint_and_notices_new_weights(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"weights-1")
    monkeypatch.chdir(tmp_path)  # a relative checkpoint path is found from here
    calls = Calls()
    recipe = recipe_from_dict({"stages": ["world", "base"], "base": {"checkpoint": "ckpt"}})
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(calls), log=lambda m: None)
    m = read_manifest(tmp_path / "run" / "base")
    assert m["outputs"] == {"model": str(ckpt.resolve())}
    assert set(m["inputs"]["files"]) == {"checkpoint/config.json", "checkpoint/model.safetensors"}
    assert m["inputs"]["stages"] == {}  # a shipped checkpoint does not depend on the world
    logs: list[str] = []
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(calls), log=logs.append)
    assert "skip base (done)" in logs
    (ckpt / "model.safetensors").write_bytes(b"weights-2")
    logs.clear()
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(calls), log=logs.append)
    assert "skip world (done)" in logs and "done base" in " ".join(logs)


@pytest.fixture
def fake_build_base(monkeypatch):
    """Stand-in for mmalign.models.base (the real one trains for an hour)."""

    @dataclass
    class BaseConfig:
        seed: int = 0
        sft_steps: int = 3000
        lr: float = 1e-3

    seen = []

    def build_base(world, out, cfg=None):
        seen.append((Path(world), Path(out), cfg))
        (Path(out) / "model").mkdir(parents=True)
        return Path(out) / "model"

    module = types.ModuleType("mmalign.models.base")
    module.BaseConfig, module.build_base = BaseConfig, build_base
    monkeypatch.setitem(sys.modules, "mmalign.models.base", module)
    return seen, BaseConfig


def test_base_builds_from_the_world_when_asked(tmp_path, fake_build_base):
    seen, BaseConfig = fake_build_base
    calls = Calls()
    recipe = recipe_from_dict({"stages": ["world", "base"],
                               "base": {"train": True, "build": {"sft_steps": 5, "lr": "2e-3"}}})
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(calls), log=lambda m: None)
    world, out, cfg = seen[0]
    assert world == tmp_path / "run" / "world" and out == tmp_path / "run" / "base" / "build"
    assert cfg == BaseConfig(sft_steps=5, lr=2e-3)
    m = read_manifest(tmp_path / "run" / "base")
    assert m["outputs"] == {"model": "base/build/model"} and set(m["inputs"]["stages"]) == \
        {"world"}
    assert m["config"] == {"train": True, "build": {"seed": 0, "sft_steps": 5, "lr": 2e-3}}
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(calls), log=lambda m: None)
    assert len(seen) == 1  # done: not rebuilt


def test_a_missing_checkpoint_is_built_and_bad_build_keys_are_refused(tmp_path,
                                                                        fake_build_base):
    seen, _ = fake_build_base
    recipe = recipe_from_dict({"stages": ["world", "base"],
                               "base": {"checkpoint": str(tmp_path / "nowhere")}})
    run_pipeline(recipe, tmp_path / "run", stages=_base_registry(Calls()), log=lambda m: None)
    assert len(seen) == 1
    bad = recipe_from_dict({"stages": ["world", "base"], "base": {"train": True,
                                                                  "build": {"sft_step": 5}}},
                           source="b.yaml")
    with pytest.raises(RecipeError, match=r"b\.yaml: base\.build\.sft_step: unknown key; did "
                                          r"you mean base\.build\.sft_steps\?"):
        run_pipeline(bad, tmp_path / "run2", stages=_base_registry(Calls()), log=lambda m: None)
    assert not (tmp_path / "run2").exists()  # refused before anything ran


def test_eval_benches_are_checked_before_anything_runs(tmp_path):
    r = recipe_from_dict({"eval": {"benches": ["pope", "vqq"]}}, source="e.yaml")
    with pytest.raises(RecipeError, match=r"e\.yaml: eval\.benches: unknown benchmark 'vqq'; "
                                          r"did you mean 'vqa'\?"):
        run_pipeline(r, tmp_path / "run", log=lambda m: None)
    assert json.dumps(asdict(r.eval))  # sections are plain data

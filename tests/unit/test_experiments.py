import json

import pytest

from mmalign.experiments import evaluate_model


def _metrics(folder, limit):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "benches": {"vqa": {"accuracy": 0.5}},
        "tasks": {"vqa": {"limit": limit, "items": 3}}}))


def test_evaluate_model_reuses_metrics_only_at_the_same_image_limit(tmp_path):
    _metrics(tmp_path / "e", 10)
    missing_model = tmp_path / "no-model"  # loading it would fail: reuse must not load
    assert evaluate_model(missing_model, tmp_path, tmp_path / "e", ["vqa"], limit=10) == \
        {("vqa", "accuracy"): 0.5}
    with pytest.raises(OSError):  # another limit: it has to evaluate, so loads the model
        evaluate_model(missing_model, tmp_path, tmp_path / "e", ["vqa"], limit=20)


def _world_file(folder, n):
    from mmalign.io.formats import write_records
    from mmalign.records import Sample, Turn

    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "clean.json", [
        Sample(f"r{i}", ["images/x.png"], [Turn("user", "<image>\nq"), Turn("assistant", f"a{i}")])
        for i in range(n)], "llava")


def test_mix_files_draws_the_same_subset_every_time_and_keeps_whole_files(tmp_path):
    from mmalign.experiments import mix_files
    from mmalign.io.formats import read_records

    world = tmp_path / "world"
    _world_file(world, 20)
    whole, part = mix_files(world, ["clean.json", "clean.json:5"], tmp_path / "a")
    assert whole == str(world / "clean.json")
    ids = [r.id for r in read_records(part)]
    assert len(ids) == len(set(ids)) == 5
    assert ids != [f"r{i}" for i in range(5)]  # drawn, not the first five
    again = mix_files(world, ["clean.json:5"], tmp_path / "b")[0]
    assert [r.id for r in read_records(again)] == ids
    # Image paths stay relative to the world, so runs train with image_root = world.
    assert {tuple(r.images) for r in read_records(part)} == {("images/x.png",)}


@pytest.mark.parametrize("spec, message", [("clean.json:x", "record count"),
                                           ("clean.json:0", "record count"),
                                           ("clean.json:21", "only 20 records")])
def test_mix_files_rejects_bad_specs(tmp_path, spec, message):
    from mmalign.experiments import mix_files

    _world_file(tmp_path / "world", 20)
    with pytest.raises(ValueError, match=message):
        mix_files(tmp_path / "world", [spec], tmp_path / "out")


def test_check_settings_accepts_a_field_added_later_only_at_its_default(tmp_path):
    from dataclasses import dataclass, field

    from mmalign.config import RecipeError
    from mmalign.experiments import check_settings, field_defaults

    @dataclass
    class Run:
        model: str
        steps: int = 3
        tags: list = field(default_factory=lambda: ["a"])
        new: bool = False  # added after the record below was written

    assert field_defaults(Run) == {"steps": 3, "tags": ["a"], "new": False}
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"model": "m", "steps": 3, "tags": ["a"]}))
    check_settings(record, {"model": "m", "steps": 3, "tags": ["a"], "new": False},
                   field_defaults(Run))
    assert json.loads(record.read_text())["new"] is False  # the record gains it
    with pytest.raises(RecipeError, match="new: False -> True"):
        check_settings(record, {"model": "m", "steps": 3, "tags": ["a"], "new": True},
                       field_defaults(Run))
    record.write_text(json.dumps({"model": "m", "steps": 3, "tags": ["a"]}))
    with pytest.raises(RecipeError, match="new: None -> True"):
        check_settings(record, {"model": "m", "steps": 3, "tags": ["a"], "new": True},
                       field_defaults(Run))
    with pytest.raises(RecipeError, match="new"):  # without defaults, any new key is a change
        check_settings(record, {"model": "m", "steps": 3, "tags": ["a"], "new": False})
    with pytest.raises(RecipeError, match="steps: 3 -> 4"):
        check_settings(record, {"model": "m", "steps": 4, "tags": ["a"], "new": False},
                       field_defaults(Run))

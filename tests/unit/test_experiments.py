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

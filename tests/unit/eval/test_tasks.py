"""The eval-task registry."""

from __future__ import annotations

import pytest

from mmalign.eval import tasks
from mmalign.eval.tasks import EvalTask, UnknownTaskError, get_task, register_task, task_names


def test_builtin_tasks_are_registered_in_report_order():
    assert task_names()[:4] == ["pope", "vqa", "mc", "chair"]
    assert get_task("chair").lower_is_better == {"CHAIR_i", "CHAIR_s"}
    assert get_task("mc").bench_file == "bench/mc.jsonl"


@pytest.mark.parametrize("name, hint", [("popee", "pope"), ("chiar", "chair"), ("VQA", None)])
def test_unknown_name_suggests_the_closest(name, hint):
    with pytest.raises(UnknownTaskError) as e:
        get_task(name)
    message = str(e.value)
    assert f"unknown benchmark {name!r}" in message
    assert "known: chair, mc, open, pope, vqa" in message
    if hint:
        assert f"did you mean {hint!r}?" in message


def test_register_refuses_a_silent_override_and_accepts_a_new_task():
    pope = get_task("pope")
    with pytest.raises(ValueError, match="already registered"):
        register_task(pope)
    mine = EvalTask(name="mine", bench_file="bench/mine.jsonl", version=1,
                    build_items=lambda rows: rows, score_output=lambda it, out: {},
                    metrics=lambda rows: {"n": len(rows)}, headline=lambda m: m,
                    columns=lambda m: m)
    try:
        assert register_task(mine) is mine and get_task("mine") is mine
    finally:
        tasks._TASKS.pop("mine", None)

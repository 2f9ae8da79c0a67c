"""The eval-task registry: benchmark name -> how to ask, how to score, how to summarise.

A task turns the rows of its benchmark file into *items* (one per model call: id, image,
prompt, max_new_tokens, plus the gold fields its metrics need), scores one output against its
item (`parse`, `correct`), and computes metrics from prediction rows alone, so a prediction
file can always be re-scored without the model. The five built-in tasks are registered right
here (no import side effects elsewhere); add your own with `register_task`.

Bump a task's `version` when its prompt, parse or metric changes: it is written into
metrics.json, and a run resumed on predictions made with a different prompt refuses to mix them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mmalign.eval import chair, mc, open, pope, vqa

Item = dict[str, Any]
Metrics = dict[str, Any]


@dataclass(frozen=True)
class EvalTask:
    name: str
    bench_file: str  # relative to the world folder
    version: int
    build_items: Callable[[list[dict[str, Any]]], list[Item]]
    score_output: Callable[[Item, str], dict[str, Any]]  # -> {"parse": ..., "correct": ...}
    metrics: Callable[[list[dict[str, Any]]], Metrics]  # prediction rows -> metrics
    headline: Callable[[Metrics], dict[str, float]]  # the report's bars (and text table)
    columns: Callable[[Metrics], dict[str, float]]  # the report's full table
    lower_is_better: frozenset[str] = field(default_factory=frozenset)  # headline names
    description: str = ""

    @classmethod
    def from_module(cls, name: str, module: ModuleType, metrics: Callable[..., Metrics], *,
                    bench_file: str | None = None, lower_is_better: frozenset[str] = frozenset(),
                    description: str = "") -> EvalTask:
        """A task from a module with VERSION, build_items, score_output, headline, columns."""
        return cls(name=name, bench_file=bench_file or f"bench/{name}.jsonl",
                   version=module.VERSION, build_items=module.build_items,
                   score_output=module.score_output, metrics=metrics,
                   headline=module.headline, columns=module.columns,
                   lower_is_better=lower_is_better, description=description)


class UnknownTaskError(ValueError):
    pass


_TASKS: dict[str, EvalTask] = {}


def register_task(task: EvalTask, *, replace: bool = False) -> EvalTask:
    if task.name in _TASKS and not replace:
        raise ValueError(f"eval task {task.name!r} is already registered (replace=True to "
                         f"override it)")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> EvalTask:
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskError(f"unknown benchmark {name!r}{hint} "
                               f"(known: {', '.join(sorted(_TASKS))})") from None


def task_names() -> list[str]:
    return list(_TASKS)


register_task(EvalTask.from_module(
    "pope", pope, pope.pope_metrics,
    description="yes/no object existence; random / popular / adversarial negatives"))
register_task(EvalTask.from_module(
    "vqa", vqa, vqa.vqa_metrics, description="short exact answers, normalised exact match"))
register_task(EvalTask.from_module(
    "mc", mc, mc.circular_eval, description="multiple choice under CircularEval"))
register_task(EvalTask.from_module(
    "chair", chair, chair.chair_metrics, lower_is_better=frozenset({"CHAIR_i", "CHAIR_s"}),
    description="object hallucination in free descriptions (CHAIR_i, CHAIR_s)"))
register_task(EvalTask.from_module(
    "open", open, open.open_metrics, bench_file="bench/openended.jsonl",
    description="open-ended answers rated 0-4 on five attributes by the oracle judge"))

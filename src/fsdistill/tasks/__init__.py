"""Tasks: everything that depends on what the rows are.

A task owns: loading a split's rows (Hub or local) into :class:`Example` objects, the user turn a model
sees for an example (and an optional system prompt), the gold answer text a student trains on (optional:
a task may have questions only), the gold final answer and the scoring of a generation, and its
generation settings (max new tokens, stop strings). Every task is configured by the `task:` section
(tasks/configured.py: row formats and templates; tasks/scoring.py: the scoring rules); configs/tasks/
holds the shipped ones (GSM8K, whose settings are also the schema's defaults, and twostep). Nothing
outside a scoring rule's module knows its answer format (GSM8K's `#### N` lives in tasks/gsm8k.py only).

A scoring function given by import path (task.scoring: callable) is imported here, and only for a config
composed from the command line (config.command_line_sources): a config rebuilt from what a run or result
file recorded names code by text only, and evaluating a folder must never import what it names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from fsdistill.config import Config, command_line_sources
from fsdistill.errors import UserError
from fsdistill.tasks.base import NEEDS, Example, Scored, Scoring, Task, TaskGeneration
from fsdistill.tasks.configured import ConfiguredTask
from fsdistill.tasks.scoring import make_scoring

__all__ = [
    "NEEDS",
    "ConfiguredTask",
    "Example",
    "Scored",
    "Scoring",
    "Task",
    "TaskGeneration",
    "make_task",
    "resolve_callable",
]


def resolve_callable(path: str, where: str) -> Callable:
    """The function named 'package.module:function' (or a dotted attribute path after the colon),
    imported now; a UserError naming `where` and the key when it does not resolve to a callable."""
    key = "'task.scoring_callable'"
    module_name, _, attribute = path.partition(":")
    try:
        target = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure of user code is the user's to see
        raise UserError(
            f"{where}: {key} {path!r}: cannot import module {module_name!r} ({type(e).__name__}: {e})"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserError(f"{where}: {key} {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{where}: {key} {path!r} is not callable (a {type(target).__name__})")
    return target


def make_task(cfg: Config) -> Task:
    """The task the config's `task:` section describes, with its scoring rule resolved."""
    function = None
    if cfg.task.scoring == "callable":
        sources = command_line_sources(cfg)
        if sources is None:
            raise UserError(
                f"'task.scoring_callable' ({cfg.task.scoring_callable!r}) comes from a recorded config (a run's "
                "run.json or config.yaml, a checkpoint, a result file): code is imported only from the config "
                "given on the command line. Pass --config with the task's settings."
            )
        where = sources.get("task.scoring_callable", "the schema default")
        function = resolve_callable(cfg.task.scoring_callable, where)
    return ConfiguredTask(cfg.task, make_scoring(cfg.task, function), cfg.teacher.row_fields())

"""Tasks: everything that depends on what the rows are.

A task owns: loading a split's rows (Hub or local) into :class:`Example` objects, the user turn a model
sees for an example, the gold answer text a student trains on (optional: a task may have questions
only), the gold final answer and the scoring of a generation, and its generation settings (max new
tokens, stop strings). Nothing outside a task's module knows its answer format (GSM8K's `#### N` lives
in tasks/gsm8k.py only). A task is chosen by `task.name`; :func:`make_task` builds it from the config.

To add a task: a module with a class implementing :class:`Task`, and an entry in TASKS.
"""

from __future__ import annotations

from fsdistill.config import Config
from fsdistill.tasks.base import Example, Scored, Task, TaskGeneration
from fsdistill.tasks.gsm8k import GSM8K

TASKS: dict[str, type] = {"gsm8k": GSM8K}

__all__ = ["Example", "TaskGeneration", "Scored", "Task", "TASKS", "make_task"]


def make_task(cfg: Config) -> Task:
    """The task `task.name` names, with its settings."""
    return TASKS[cfg.task.name](cfg.task)

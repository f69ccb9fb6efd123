"""The task interface: the Example type and the Task protocol (see fsdistill.tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol


@dataclass(frozen=True)
class Example:
    """One row of a split.

    row: position in the source split, 0-based (few-shot draws and result records are keyed by it).
    question: what fills the user turn.
    answer: the worked answer a student trains on and exemplars show; None for questions-only rows.
    gold: the normalised final answer generations are scored against; None when unknown.
    """

    row: int
    question: str
    answer: Optional[str]
    gold: Optional[str]


@dataclass(frozen=True)
class Scored:
    """One scored generation: the answer read from it (None: none found) and whether it is correct."""

    extracted: Optional[str]
    correct: bool


@dataclass(frozen=True)
class TaskGeneration:
    """A task's generation settings (decoding is greedy for evaluation)."""

    max_new_tokens: int
    stop_strings: tuple[str, ...]


class Task(Protocol):
    """What the rest of the package asks of a task."""

    name: str

    def load(self, source: str, split: str, hub_config: str) -> list[Example]:
        """Every row of a split: a local JSONL file or folder ({split}.jsonl), or a Hub dataset id.
        Malformed rows fail naming the file and line (tasks.rows.DataError)."""
        ...

    def user_turn(self, example: Example) -> str:
        """The text of the user turn that asks `example`'s question."""
        ...

    def score(self, generation: str, gold: str) -> Scored:
        """Read a generation's answer and compare it with the gold final answer."""
        ...

    def generation(self) -> TaskGeneration:
        """How long generations may be and which strings end them."""
        ...

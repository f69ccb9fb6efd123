"""The task interface: the Example type, the Scoring and Task protocols (see fsdistill.tasks)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Optional, Protocol


@dataclass(frozen=True)
class Example:
    """One row of a split.

    row: position in the source split, 0-based (few-shot draws and result records are keyed by it).
    question: what fills {question} in the user turn.
    answer: the worked answer a student trains on and exemplars show; None for questions-only rows.
    gold: the normalised final answer generations are scored against; None when unknown.
    fields: the row's other values that task.question_template names, and those the teacher reads
        (teacher.context_field, the fields teacher.template names) when present, as (name, text) pairs.
    """

    row: int
    question: str
    answer: Optional[str]
    gold: Optional[str]
    fields: tuple[tuple[str, str], ...] = ()


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


class Scoring(Protocol):
    """One scoring rule (task.scoring): how a gold answer is read and how a generation is judged."""

    kind: str  # the task.scoring value
    gold_description: str  # what an answer must hold for gold_from_answer, for error messages

    def gold_from_answer(self, answer: str) -> str:
        """The gold final answer read from a worked answer (raises ValueError when it holds none)."""
        ...

    def normalize_gold(self, gold: str) -> str:
        """A gold field's value in the form score() compares (raises ValueError when invalid)."""
        ...

    def score(self, generation: str, gold: str) -> Scored:
        """Read a generation's answer and compare it with the (normalised) gold answer."""
        ...


# What a use of a split needs from every row: "answer" (training on gold answers, exemplars),
# "gold" (scoring), "teacher" (the row fields the teacher reads: teacher.context_field and those
# teacher.template names). A row lacking one is a data error naming its file and line.
NEEDS = ("answer", "gold", "teacher")


class Task(Protocol):
    """What the rest of the package asks of a task."""

    name: str

    def load(self, source: str, split: str, hub_config: str, need: Collection[str] = ()) -> list[Example]:
        """Every row of a split: a local file or folder, or a Hub dataset id (tasks.rows.load_split).
        Malformed rows, and rows lacking what `need` names (see NEEDS), fail naming the file and line
        (tasks.rows.DataError), all of them in one error."""
        ...

    def user_turn(self, example: Example) -> str:
        """The text of the user turn that asks `example`'s question."""
        ...

    def system_prompt(self) -> Optional[str]:
        """The system turn's text opening every conversation, or None for none of ours."""
        ...

    def score(self, generation: str, gold: str) -> Scored:
        """Read a generation's answer and compare it with the gold final answer."""
        ...

    def generation(self) -> TaskGeneration:
        """How long generations may be and which strings end them."""
        ...

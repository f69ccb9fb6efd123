"""The task as configured (`task:`): where a row's question, worked answer and gold answer are, the user
turn, the system prompt, the scoring rule and the generation limits.

Row formats (task.row_format):
* ``fields``: the question in `task.question_field`, the worked answer in `task.answer_field`, the gold
  final answer in `task.gold_field` (or read from the answer by the scoring rule, tasks/scoring.py);
* ``messages``: a chat list in `task.messages_field`, ``[user]`` or ``[user, assistant]``: the user turn's
  content is the question, the assistant turn's the answer;
* ``prompt_completion``: TRL's columns ``prompt`` and ``completion``, each a string or (conversational)
  a one-message list: ``[user]`` and ``[assistant]``.
The user turn is `task.question_template` with ``{question}`` and any other field of the row (``{passage}``,
``{choices}``...) filled in. A row without an answer is a question only: allowed wherever nothing reads an
answer (a test split scored against a gold field; the training rows of a task whose exemplars come from
`fewshot.pool`), refused, naming file and line, where one is needed (tasks.base.NEEDS).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Collection
from typing import Any, Optional

from fsdistill.config import TaskConfig
from fsdistill.tasks.base import Example, Scored, Scoring, TaskGeneration
from fsdistill.tasks.rows import DataError, MissingField, RowParser, load_split

PROMPT, COMPLETION = "prompt", "completion"  # TRL's prompt-completion column names
_PURPOSE = {
    "answer": "training on gold answers and exemplars read the worked answer",
    "gold": "scoring needs the gold final answer",
    "teacher": "the teacher reads it (teacher.context_field or teacher.template)",
}
# The config key that names each field a `fields` row is read from, and what to do when no row has it.
_FIELD_KEYS = {
    "question": ("task.question_field", "set task.question_field to the one holding the question"),
    "answer": ("task.answer_field", "set task.answer_field to the one holding the worked answer"),
    "gold": (
        "task.gold_field",
        "set task.gold_field to the one holding the gold answer (or null: read it from the worked answer)",
    ),
}


def template_fields(template: str) -> set[str]:
    """The names a str.format template fills ('Q: {question} ({topic})' -> {'question', 'topic'})."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _type(value: Any) -> str:
    return type(value).__name__


class ConfiguredTask:
    """A task built from `task.*` with its scoring rule (tasks.scoring.make_scoring).

    teacher_fields: row fields the teacher reads (TeacherConfig.row_fields): kept in Example.fields when a
    row has them, required where the teacher is built (need "teacher").
    """

    def __init__(self, settings: TaskConfig, scoring: Scoring, teacher_fields: Collection[str] = ()):
        self.settings = settings
        self.name = settings.name
        self.scoring = scoring
        self.other_fields = sorted(template_fields(settings.question_template) - {"question"})
        self.teacher_fields = sorted(set(teacher_fields) - set(self.other_fields))

    # -- rows ------------------------------------------------------------------------------------
    def load(self, source: str, split: str, hub_config: str, need: Collection[str] = ()) -> list[Example]:
        return load_split(source, split, hub_config, self.parser(need))

    def parser(self, need: Collection[str] = ()) -> RowParser:
        """parse(obj, row, where) for tasks.rows, refusing rows without what `need` names."""
        unknown = set(need) - set(_PURPOSE)
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}; known: {sorted(_PURPOSE)}")
        return functools.partial(self.parse, need=frozenset(need))

    def parse(self, obj: object, row: int, where: str, need: frozenset[str] = frozenset()) -> Example:
        s = self.settings
        if not isinstance(obj, dict):
            wanted = {
                "fields": f"'{s.question_field}' and '{s.answer_field}'",
                "messages": f"'{s.messages_field}'",
            }
            raise DataError(
                f"{where}: a row must be a JSON object with "
                f"{wanted.get(s.row_format, f'{PROMPT!r} and {COMPLETION!r}')}, got {_type(obj)}"
            )
        if s.row_format == "fields":
            question = self._string(obj, s.question_field, where, required=True, role="question")
            answer = self._string(obj, s.answer_field, where, required=False)
            answer_name = s.answer_field
        elif s.row_format == "messages":
            question, answer = self._messages(obj, where)
            answer_name = s.messages_field
        else:
            question, answer = self._prompt_completion(obj, where)
            answer_name = COMPLETION
        if not question.strip():
            name = {"fields": s.question_field, "messages": s.messages_field}.get(s.row_format, PROMPT)
            raise DataError(f"{where}: field '{name}' is empty")
        gold = self._gold(obj, answer, answer_name, where)
        for what, have, missing in (
            ("answer", answer, f"missing field '{answer_name}'"),
            ("gold", gold, self._no_gold(answer_name)),
        ):
            if what in need and have is None:
                self._missing(obj, f"{where}: {missing} ({_PURPOSE[what]})", what, answer_name)
        fields = [(name, self._template_value(obj, name, where)) for name in self.other_fields]
        for name in self.teacher_fields:
            if obj.get(name) is not None or "teacher" in need:
                fields.append((name, self._template_value(obj, name, where, "the teacher")))
        return Example(row=row, question=question, answer=answer, gold=gold, fields=tuple(fields))

    def _missing(self, obj: dict, message: str, what: str, answer_name: str) -> None:
        """Raise the error of a row without its answer or gold: a MissingField (reported once when no row
        has it) where a config key names the field, else a plain DataError."""
        s = self.settings
        if what == "gold" and s.gold_field is not None:
            raise MissingField(message, s.gold_field, *_FIELD_KEYS["gold"], obj)
        if s.row_format == "fields" and answer_name == s.answer_field:
            raise MissingField(message, s.answer_field, *_FIELD_KEYS["answer"], obj)
        raise DataError(message)

    def _string(self, obj: dict, name: str, where: str, required: bool, role: str = "") -> Optional[str]:
        value = obj.get(name)
        if value is None:
            if required:
                raise MissingField(f"{where}: missing field '{name}'", name, *_FIELD_KEYS[role], obj)
            return None
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' must be a string, got {_type(value)}")
        return value

    def _turn(self, message: object, role: str, name: str, where: str) -> str:
        if not (
            isinstance(message, dict)
            and message.get("role") == role
            and isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: field '{name}' must hold a {role} message {{'role': '{role}', 'content': str}}, "
                f"got {message!r:.80}"
            )
        return message["content"]

    def _messages(self, obj: dict, where: str) -> tuple[str, Optional[str]]:
        name = self.settings.messages_field
        value = obj.get(name)
        if value is None:
            raise MissingField(
                f"{where}: missing field '{name}'",
                name,
                "task.messages_field",
                "set task.messages_field to the one holding the chat list (or choose the task.row_format the "
                "rows have)",
                obj,
            )
        if not isinstance(value, list) or not 1 <= len(value) <= 2:
            roles = (
                [m.get("role") if isinstance(m, dict) else _type(m) for m in value]
                if isinstance(value, list)
                else None
            )
            raise DataError(
                f"{where}: field '{name}' must be [user] or [user, assistant] messages (one question and its "
                f"answer; a system prompt is task.system_prompt), got {roles if roles is not None else _type(value)}"
            )
        question = self._turn(value[0], "user", name, where)
        answer = self._turn(value[1], "assistant", name, where) if len(value) == 2 else None
        return question, answer

    def _prompt_completion(self, obj: dict, where: str) -> tuple[str, Optional[str]]:
        prompt, completion = obj.get(PROMPT), obj.get(COMPLETION)
        if prompt is None:
            raise MissingField(
                f"{where}: missing field '{PROMPT}'",
                PROMPT,
                "task.row_format=prompt_completion",
                "choose the task.row_format the rows have (fields, with task.question_field and "
                "task.answer_field; messages)",
                obj,
            )
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise DataError(
                    f"{where}: field '{PROMPT}' must be a string or one user message (a system prompt is "
                    f"task.system_prompt), got {len(prompt)} messages"
                )
            prompt = self._turn(prompt[0], "user", PROMPT, where)
        elif not isinstance(prompt, str):
            raise DataError(
                f"{where}: field '{PROMPT}' must be a string or a message list, got {_type(prompt)}"
            )
        if isinstance(completion, list):
            if len(completion) != 1:
                raise DataError(f"{where}: field '{COMPLETION}' must be a string or one assistant message")
            completion = self._turn(completion[0], "assistant", COMPLETION, where)
        elif completion is not None and not isinstance(completion, str):
            raise DataError(
                f"{where}: field '{COMPLETION}' must be a string or a message list, got {_type(completion)}"
            )
        return prompt, completion

    def _gold(self, obj: dict, answer: Optional[str], answer_name: str, where: str) -> Optional[str]:
        s, scoring = self.settings, self.scoring
        if s.gold_field is not None:
            value = obj.get(s.gold_field)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise DataError(
                    f"{where}: field '{s.gold_field}' must be a string or a number, got {_type(value)}"
                )
            try:
                return scoring.normalize_gold(str(value))
            except ValueError as e:
                raise DataError(
                    f"{where}: field '{s.gold_field}' is not a valid gold answer for task.scoring={scoring.kind} ({e})"
                ) from None
        if answer is None:
            return None
        try:
            return scoring.gold_from_answer(answer)
        except ValueError as e:
            raise DataError(
                f"{where}: field '{answer_name}' has no valid {scoring.gold_description} ({e})"
            ) from None

    def _no_gold(self, answer_name: str) -> str:
        if self.settings.gold_field is not None:
            return f"missing field '{self.settings.gold_field}' (task.gold_field)"
        return f"no gold answer: missing field '{answer_name}' to read it from (or set task.gold_field)"

    def _template_value(
        self, obj: dict, name: str, where: str, reader: str = "task.question_template"
    ) -> str:
        value = obj.get(name)
        if value is None:
            if reader.startswith("task."):
                uses, key, fix = (
                    f"{reader} uses {{{name}}}",
                    f"{reader}'s {{{name}}}",
                    f"use in {reader} only fields the rows have",
                )
            else:
                uses, key, fix = (
                    f"{reader} reads field '{name}'",
                    f"{reader}'s field '{name}' (teacher.context_field or teacher.template)",
                    "name in the teacher section only fields the rows have",
                )
            raise MissingField(
                f"{where}: {uses}, but the row has no field '{name}' (its fields: {sorted(obj)})",
                name,
                key,
                fix,
                obj,
            )
        if isinstance(value, (dict, list)):
            raise DataError(f"{where}: field '{name}' ({reader}) must be text, got {_type(value)}")
        return str(value)

    # -- prompts and scoring ---------------------------------------------------------------------
    def user_turn(self, example: Example) -> str:
        return self.settings.question_template.format(question=example.question, **dict(example.fields))

    def system_prompt(self) -> Optional[str]:
        return self.settings.system_prompt

    def score(self, generation: str, gold: str) -> Scored:
        return self.scoring.score(generation, gold)

    def generation(self) -> TaskGeneration:
        return TaskGeneration(self.settings.max_new_tokens, tuple(self.settings.stop_strings))

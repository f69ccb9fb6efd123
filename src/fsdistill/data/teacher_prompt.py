"""What the teacher sees beyond the student's prompt (teacher.*), resolved once: files read and hashed.

The teacher's conversation for a row with exemplars `shots` (docs/teacher.md shows one of each kind):

    system turn   task.system_prompt, teacher.system (or teacher.system_file), the shared context
                  (teacher.context_files: one file, or one drawn per row from a pool), joined by blank
                  lines; no system turn when all are absent (a chat template may then insert its own
                  default, as it does for the student)
    exemplars     fewshot.k user/assistant turns, as without a teacher context
    user turn     teacher.template filled in: {question} is the student's user turn, {context} the row's
                  teacher.context_field, {name} another field of the row; without a template, the
                  student's user turn itself
    answer        the student's answer part (ids identical by construction; PromptBuilder checks it)

The student's conversation never changes. A teacher system text thus replaces a template's built-in
default system turn for the teacher only (SmolLM2 inserts "You are a helpful AI assistant named
SmolLM..." when a conversation has none): the student keeps that default unless task.system_prompt is set.

This module makes text only. PromptBuilder (prompts.py) renders and tokenises it into the teacher's ids,
whatever then runs the teacher (the frozen base, another model, or a served engine that receives the ids),
so every way of running a teacher sees the same sequence.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fsdistill.config import TeacherConfig
from fsdistill.data.fewshot import shuffled
from fsdistill.errors import UserError
from fsdistill.tasks import Example

INLINE = "teacher.system"  # the `path` of a system text given inline


@dataclass(frozen=True)
class ContextText:
    """One text the teacher reads, with where it came from and its sha256 (recorded in run.json, result
    files and the teacher-cache key, so an edited file is never mistaken for the one a run used)."""

    path: str  # a file path, or INLINE
    text: str
    sha256: str

    @classmethod
    def read(cls, path: str, key: str) -> ContextText:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"'{key}': cannot read {path} as UTF-8 text ({e})") from None
        if not text.strip():
            raise UserError(f"'{key}': {path} is empty")
        return cls.of(path, text.strip())

    @classmethod
    def of(cls, path: str, text: str) -> ContextText:
        return cls(path, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class TeacherContext:
    """The teacher's context as configured (see the module docstring), texts resolved."""

    system: Optional[ContextText]  # teacher.system or teacher.system_file
    shared: tuple[ContextText, ...]  # teacher.context_files: one shared text, or a pool
    seed: int  # teacher.context_seed
    context_field: Optional[str]
    template: Optional[str]  # the resolved user-turn template; None: the student's user turn

    @classmethod
    def from_config(cls, teacher: TeacherConfig) -> Optional[TeacherContext]:
        """The context teacher.* describes, its files read now (a missing or empty file is a UserError
        naming the key); None when the teacher sees only the student's prompt and its exemplars."""
        if not teacher.has_context:
            return None
        system = None
        if teacher.system is not None:
            system = ContextText.of(INLINE, teacher.system.strip())
        elif teacher.system_file is not None:
            system = ContextText.read(teacher.system_file, "teacher.system_file")
        shared = tuple(ContextText.read(path, "teacher.context_files") for path in teacher.context_files)
        return cls(system, shared, teacher.context_seed, teacher.context_field, teacher.resolved_template())

    def identity(self) -> dict:
        """What the teacher's input depends on besides the rows: the template and each text's sha256."""
        return {
            "template": self.template,
            "context_field": self.context_field,
            "system": None if self.system is None else {self.system.path: self.system.sha256},
            "context_files": {c.path: c.sha256 for c in self.shared},
            "context_seed": self.seed if len(self.shared) > 1 else None,
        }

    def shared_for(self, row: int) -> Optional[ContextText]:
        """The shared context of `row`: the one file, or the pool's file drawn for this row (seeded)."""
        if not self.shared:
            return None
        if len(self.shared) == 1:
            return self.shared[0]
        return self.shared[random.Random(f"context:{self.seed}:{row}").randrange(len(self.shared))]

    def system_text(self, task_system: Optional[str], row: int) -> Optional[str]:
        """The teacher's system turn: task.system_prompt, the teacher's system text, the shared context."""
        shared = self.shared_for(row)
        parts = [task_system, self.system and self.system.text, shared and shared.text]
        parts = [p for p in parts if p]
        return "\n\n".join(parts) if parts else None

    def user_turn(self, student_turn: str, example: Example, donor: Example) -> str:
        """The teacher's user turn for `example`: the template with {question} = the student's user turn
        and the row fields (teacher.context_field as {context}) read from `donor` (the example itself, or
        another row under teacher.shuffle_context)."""
        if self.template is None:
            return student_turn
        fields = dict(donor.fields)
        values = dict(fields)
        if self.context_field is not None:
            if self.context_field not in fields:
                raise UserError(
                    f"row {donor.row} has no field '{self.context_field}' (teacher.context_field) for the teacher"
                )
            values["context"] = fields[self.context_field]
        try:
            return self.template.format_map({**values, "question": student_turn})
        except KeyError as e:
            raise UserError(
                f"row {donor.row}: teacher.template names {{{e.args[0]}}}, which the row lacks"
            ) from None

    def describe(self, row: int, donor_row: Optional[int] = None) -> list[str]:
        """Lines saying where each part of the teacher's context for `row` comes from (show_batch)."""
        lines = []
        if self.system is not None:
            where = "inline (teacher.system)" if self.system.path == INLINE else self.system.path
            lines.append(f"system text: {where}, sha256 {self.system.sha256[:12]}")
        shared = self.shared_for(row)
        if shared is not None:
            pool = f" (drawn for this row from a pool of {len(self.shared)})" if len(self.shared) > 1 else ""
            lines.append(f"shared context: {shared.path}{pool}, sha256 {shared.sha256[:12]}")
        if self.context_field is not None:
            source = "this row" if donor_row in (None, row) else f"row {donor_row} (teacher.shuffle_context)"
            lines.append(f"per-row context: field '{self.context_field}' of {source}")
        if self.template is not None:
            lines.append(f"user-turn template: {self.template!r}")
        return lines


def context_donors(rows: list[int], seed: int) -> dict[int, int]:
    """teacher.shuffle_context: each row -> the row whose per-row context its teacher sees, a uniformly
    drawn derangement (no row keeps its own), seeded. Needs at least 2 rows."""
    if len(rows) < 2:
        raise UserError(f"teacher.shuffle_context needs at least 2 training rows, got {len(rows)}")
    return dict(zip(rows, shuffled(list(rows), random.Random(f"context-donors:{seed}"), "derangement")))

"""Which training rows serve as the teacher's exemplars, for each example and step.

Modes (fewshot.selection):
- per_example: the original's rule, `random.Random(seed + row).sample(pool without row, k)`, kept in
  sampled order: a fixed set per training row, the same every epoch.
- per_batch: one sample per optimizer step, shared by every micro-batch and process of that step, never
  containing any example of that step.
- fixed: one seeded set for the whole run; those rows are removed from the training examples.

Shuffled answers (fewshot.shuffle_answers): the k exemplar answers are permuted among the k exemplar
questions (`random.Random(seed + row + 99999).shuffle`, the original's rule; a plain permutation, so an
answer may stay with its own question).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from fsdistill.errors import UserError
from fsdistill.tasks import Example


class FewShotError(UserError, ValueError):
    """fewshot.k cannot be drawn from the rows available (shown without a traceback by the CLIs)."""


class ShotSampler:
    """Exemplar rows for a training example; `pool` holds every row allowed as an exemplar."""

    def __init__(self, pool: Sequence[Example], k: int, selection: str, seed: int, shuffle_answers: bool):
        if k > len(pool) - 1:
            raise FewShotError(
                f"fewshot.k={k} needs at least {k + 1} training rows, the pool has {len(pool)}"
            )
        self.by_row = {e.row: e for e in pool}
        self.pool_rows = [e.row for e in pool]
        self.k = k
        self.selection = selection
        self.seed = seed
        self.shuffle_answers = shuffle_answers
        self.fixed_rows = random.Random(seed).sample(self.pool_rows, k) if selection == "fixed" else []

    def shot_rows(self, row: int, step: int, step_rows: Sequence[int]) -> list[int]:
        """Exemplar rows for training row `row` at optimizer step `step` (0-based) whose rows are `step_rows`."""
        if self.k == 0:
            return []
        if self.selection == "per_example":
            return random.Random(self.seed + row).sample([j for j in self.pool_rows if j != row], self.k)
        if self.selection == "per_batch":
            exclude = set(step_rows)
            rng = random.Random(f"per_batch:{self.seed}:{step}")
            return rng.sample([j for j in self.pool_rows if j not in exclude], self.k)
        return list(self.fixed_rows)

    def shots(self, row: int, step: int, step_rows: Sequence[int]) -> list[Example]:
        """The exemplars of the teacher prompt, in order; answers permuted among them if shuffle_answers."""
        shots = [self.by_row[j] for j in self.shot_rows(row, step, step_rows)]
        if self.shuffle_answers:
            answers = [e.answer for e in shots]
            # per_batch draws change every step, so key the permutation by the step there.
            key = self.seed + row + 99999 if self.selection != "per_batch" else f"shuffle:{self.seed}:{step}"
            random.Random(key).shuffle(answers)
            shots = [dataclasses.replace(e, answer=a) for e, a in zip(shots, answers)]
        return shots

    def cache_key(self, row: int, step: int) -> tuple[int, int] | None:
        """Key under which the teacher ids of `row` can be cached (None: they change every step)."""
        return None if self.selection == "per_batch" and self.k > 0 else (row, 0)

    def check_step_size(self, global_batch: int) -> None:
        """per_batch draws k rows outside the step's G rows: refuse at launch what would fail mid-run."""
        if self.selection != "per_batch" or self.k == 0:
            return
        free = len(self.pool_rows) - min(global_batch, len(self.pool_rows))
        if free < self.k:
            raise FewShotError(
                f"fewshot.selection=per_batch with fewshot.k={self.k}: a step takes {global_batch} of the "
                f"{len(self.pool_rows)} training rows, leaving {free} to draw exemplars from"
            )

"""Which rows serve as the teacher's exemplars, for each example and step.

The pool is the training rows (the original's), or a separate set (fewshot.pool): then no pool row is a
training row, and nothing is excluded or removed on that account.

Modes (fewshot.selection):
- per_example: the original's rule, `random.Random(seed + row).sample(pool without row, k)`, kept in
  sampled order: a fixed set per training row, the same every epoch.
- per_batch: one sample per optimizer step, shared by every micro-batch and process of that step, never
  containing any example of that step.
- fixed: one seeded set for the whole run; those rows are removed from the training examples.

Shuffled answers (fewshot.shuffle_answers): the k exemplar answers are moved among the k exemplar
questions by a generator seeded with `seed + row + 99999` (the original's key; per_batch: the step).
fewshot.shuffle_mode=permutation is the original's `random.shuffle`, under which an answer may stay with
its own question (at k = 8 about 63% of draws leave at least one pair intact; at k = 2 half the draws
change nothing). derangement (the default) redraws with the same generator until no exemplar keeps its
own answer, which gives a uniformly distributed derangement.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from fsdistill.errors import UserError
from fsdistill.tasks import Example


class FewShotError(UserError, ValueError):
    """fewshot.k cannot be drawn from the rows available (shown without a traceback by the CLIs)."""


def shuffled(items: list, rng: random.Random, mode: str) -> list:
    """items reordered by `rng`: permutation is one random.shuffle (the original's; an item may stay in
    place); derangement shuffles positions again until none stays in place (uniform over derangements;
    needs len(items) >= 2, ~e draws on average)."""
    if mode == "permutation":
        out = list(items)
        rng.shuffle(out)
        return out
    if len(items) < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {len(items)}")
    order = list(range(len(items)))
    while True:
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return [items[j] for j in order]


class ShotSampler:
    """Exemplar rows for a training example; `pool` holds every row allowed as an exemplar."""

    def __init__(
        self,
        pool: Sequence[Example],
        k: int,
        selection: str,
        seed: int,
        shuffle_answers: bool,
        shuffle_mode: str = "derangement",
        separate_pool: bool = False,
    ):
        if separate_pool and k > len(pool):
            raise FewShotError(f"fewshot.k={k} needs at least {k} rows in fewshot.pool, it has {len(pool)}")
        if not separate_pool and k > len(pool) - 1:
            raise FewShotError(
                f"fewshot.k={k} needs at least {k + 1} training rows, the pool has {len(pool)}"
            )
        if shuffle_mode not in ("derangement", "permutation"):
            raise ValueError(f"shuffle_mode must be derangement or permutation, got {shuffle_mode!r}")
        self.by_row = {e.row: e for e in pool}
        self.pool_rows = [e.row for e in pool]
        self.k = k
        self.selection = selection
        self.seed = seed
        self.shuffle_answers = shuffle_answers
        self.shuffle_mode = shuffle_mode
        # A separate pool shares no rows with training: the example itself is never in it.
        self.separate_pool = separate_pool
        self.fixed_rows = random.Random(seed).sample(self.pool_rows, k) if selection == "fixed" else []

    def shot_rows(self, row: int, step: int, step_rows: Sequence[int]) -> list[int]:
        """Exemplar rows for training row `row` at optimizer step `step` (0-based) whose rows are `step_rows`."""
        if self.k == 0:
            return []
        if self.selection == "per_example":
            candidates = self.pool_rows if self.separate_pool else [j for j in self.pool_rows if j != row]
            return random.Random(self.seed + row).sample(candidates, self.k)
        if self.selection == "per_batch":
            exclude = set() if self.separate_pool else set(step_rows)
            rng = random.Random(f"per_batch:{self.seed}:{step}")
            return rng.sample([j for j in self.pool_rows if j not in exclude], self.k)
        return list(self.fixed_rows)

    def shots(self, row: int, step: int, step_rows: Sequence[int]) -> list[Example]:
        """The exemplars of the teacher prompt, in order; answers moved among them if shuffle_answers."""
        shots = [self.by_row[j] for j in self.shot_rows(row, step, step_rows)]
        if self.shuffle_answers and shots:
            # per_batch draws change every step, so key the permutation by the step there.
            key = self.seed + row + 99999 if self.selection != "per_batch" else f"shuffle:{self.seed}:{step}"
            answers = shuffled([e.answer for e in shots], random.Random(key), self.shuffle_mode)
            shots = [dataclasses.replace(e, answer=a) for e, a in zip(shots, answers)]
        return shots

    def cache_key(self, row: int, step: int) -> tuple[int, int] | None:
        """Key under which the teacher ids of `row` can be cached (None: they change every step)."""
        return None if self.selection == "per_batch" and self.k > 0 else (row, 0)

    def check_step_size(self, global_batch: int) -> None:
        """per_batch draws k rows outside the step's G rows: refuse at launch what would fail mid-run."""
        if self.selection != "per_batch" or self.k == 0 or self.separate_pool:
            return
        free = len(self.pool_rows) - min(global_batch, len(self.pool_rows))
        if free < self.k:
            raise FewShotError(
                f"fewshot.selection=per_batch with fewshot.k={self.k}: a step takes {global_batch} of the "
                f"{len(self.pool_rows)} training rows, leaving {free} to draw exemplars from"
            )

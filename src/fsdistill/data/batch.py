"""The training batch type and the deterministic stream of micro-batches.

The order of examples is a pure function of (training.seed, step): epoch e visits the training rows in
`random.Random(f"order:{seed}:{e}")`'s permutation, the stream runs on across epochs, and optimizer step
s owns examples [s*G, (s+1)*G) of it (G = processes x per-device batch x accumulation). Within a step,
micro-batch m of process r takes slots [(m*P + r)*B, (m*P + r + 1)*B) (P processes, B per device) of the
step's rows: in stream order, or, with data.group_by_length, sorted by sequence length (teacher length
when there is a teacher, ties in stream order), so similar lengths are padded together while the step's
set of rows, and so its gradient, stays the same. Resuming at step s therefore needs nothing but s, and
every process derives its own disjoint share without talking to the others (grouping by length encodes
all G rows of the step on every process to get there).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np
import torch

from fsdistill.data.fewshot import ShotSampler
from fsdistill.data.prompts import EncodedExample, PromptBuilder
from fsdistill.data.teacher_prompt import context_donors
from fsdistill.tasks import Example
from fsdistill.tasks.rows import exemplar_pool, training_rows

IGNORE_INDEX = -100


@dataclass
class Batch:
    """A right-padded micro-batch. B examples, S = longest student, T = longest teacher sequence.

    student_ids, student_mask, labels: (B, S); labels are IGNORE_INDEX outside the answer part, and
        labels[b, p] = student_ids[b, p] inside it (the next-token shift is done by the consumer).
    teacher_ids, teacher_mask: (B, T) (equal to the student's when the teacher has no exemplars).
    student_answer_start, teacher_answer_start, answer_len: (B,), positions of the answer part.
    rows: (B,), the examples' rows in the source split.
    """

    student_ids: torch.Tensor
    student_mask: torch.Tensor
    labels: torch.Tensor
    teacher_ids: torch.Tensor
    teacher_mask: torch.Tensor
    student_answer_start: torch.Tensor
    teacher_answer_start: torch.Tensor
    answer_len: torch.Tensor
    rows: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def size(self) -> int:
        return self.student_ids.shape[0]

    @property
    def num_answer_tokens(self) -> int:
        return int(self.answer_len.sum())


def _pad_right(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(s) for s in seqs), default=1)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def collate(encoded: list[EncodedExample], pad_id: int) -> Batch:
    """Right-pad encoded examples into a Batch (padding side is right for training, always).

    With no examples (all dropped for length) the batch is one padding row without labels, so every
    process still runs a forward and backward pass (DDP needs them all) that adds nothing.
    """
    if not encoded:
        encoded = [
            EncodedExample(
                row=-1,
                student_ids=[pad_id],
                teacher_ids=[pad_id],
                student_answer_start=1,
                teacher_answer_start=1,
            )
        ]
    student_ids, student_mask = _pad_right([e.student_ids for e in encoded], pad_id)
    teacher_ids, teacher_mask = _pad_right([e.teacher_ids for e in encoded], pad_id)
    labels = torch.full_like(student_ids, IGNORE_INDEX)
    for i, e in enumerate(encoded):
        labels[i, e.student_answer_start : len(e.student_ids)] = student_ids[
            i, e.student_answer_start : len(e.student_ids)
        ]
    return Batch(
        student_ids=student_ids,
        student_mask=student_mask,
        labels=labels,
        teacher_ids=teacher_ids,
        teacher_mask=teacher_mask,
        student_answer_start=torch.tensor([e.student_answer_start for e in encoded], dtype=torch.long),
        teacher_answer_start=torch.tensor([e.teacher_answer_start for e in encoded], dtype=torch.long),
        answer_len=torch.tensor([e.answer_len for e in encoded], dtype=torch.long),
        rows=torch.tensor([e.row for e in encoded], dtype=torch.long),
    )


class ExampleOrder:
    """The infinite, seeded, epoch-reshuffled stream of training rows, cut into optimizer steps."""

    def __init__(self, rows: list[int], seed: int, global_batch: int):
        self.rows = list(rows)
        self.seed = seed
        self.global_batch = global_batch

    @lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs, tied to this object's life
    def epoch_order(self, epoch: int) -> tuple[int, ...]:
        order = list(self.rows)
        random.Random(f"order:{self.seed}:{epoch}").shuffle(order)
        return tuple(order)

    def step_rows(self, step: int) -> list[int]:
        """The G rows of optimizer step `step` (0-based), in stream order."""
        n = len(self.rows)
        out = []
        for i in range(step * self.global_batch, (step + 1) * self.global_batch):
            out.append(self.epoch_order(i // n)[i % n])
        return out

    def micro_rows(self, step: int, micro: int, rank: int, num_processes: int, per_device: int) -> list[int]:
        """This process's rows for micro-batch `micro` of `step` in stream order (no length grouping)."""
        return self.step_rows(step)[micro_slots(micro, rank, num_processes, per_device)]


def micro_slots(micro: int, rank: int, num_processes: int, per_device: int) -> slice:
    """The positions in a step's G-row list that micro-batch `micro` of process `rank` takes.

    Consecutive and disjoint across (micro, rank), covering the step; the ranks of one micro-batch are
    neighbours, so with a length-sorted list the processes that run it together get similar widths.
    """
    start = (micro * num_processes + rank) * per_device
    return slice(start, start + per_device)


@dataclass
class MicroBatch:
    batch: Batch
    dropped_rows: list[int]  # examples over the length limits, left out of this micro-batch
    # Every example of the micro-batch as encoded, dropped ones included: rollouts (train/rollouts.py)
    # read their prompts from here (a row without a worked answer is its prompts alone).
    encoded: list[EncodedExample] = field(default_factory=list)


class TrainingBatches:
    """Builds the micro-batches of any (step, micro, rank) from rows, shots and the prompt builder.

    Examples longer than the length limits are dropped (never truncated: truncation would cut the
    answer) and reported. Student encodings are cached per row; teacher encodings too, except for
    per_batch shots, which change every step. With group_by_length the step's rows are cut into
    micro-batches in length order instead of stream order (see the module docstring).
    """

    def __init__(
        self,
        examples: list[Example],
        prompts: PromptBuilder,
        shots: ShotSampler | None,
        order: ExampleOrder,
        max_student_len: int,
        max_teacher_len: int,
        pad_id: int,
        group_by_length: bool,
        donors: dict[int, int] | None = None,
    ):
        self.by_row = {e.row: e for e in examples}
        # teacher.shuffle_context: row -> the row whose per-row context its teacher reads.
        self.donors = donors
        self.prompts = prompts
        self.shots = shots
        self.order = order
        self.max_student_len = max_student_len
        self.max_teacher_len = max_teacher_len
        self.pad_id = pad_id
        self.group_by_length = group_by_length
        self._student_cache: dict[int, tuple] = {}
        # Encoded pairs as int32 arrays: ~8 bytes per token instead of ~36 for Python lists of ints
        # (k=8 on the full split: ~15 M teacher tokens; with group_by_length every process encodes,
        # and so caches, every row, not only its own share).
        self._teacher_cache: dict[tuple, tuple[np.ndarray, np.ndarray, int, int]] = {}
        # The last step's encodings in length order: every micro-batch of a step slices the same list,
        # so the step is encoded and sorted once (per_batch encodings are not in the caches above).
        self._by_length: tuple[int, list[EncodedExample]] | None = None

    def donor(self, row: int):
        """The example whose per-row context row `row`'s teacher reads: itself, or its donor."""
        return self.by_row[self.donors[row]] if self.donors else self.by_row[row]

    def encode(self, row: int, step: int, step_rows: list[int]) -> EncodedExample:
        example = self.by_row[row]
        if example.answer is None:  # questions only (on-policy training): the prompts, no answer part
            shots = self.shots.shots(row, step, step_rows) if self.shots else []
            return self.prompts.encode_prompts(example, shots, self.donor(row))
        key = self.shots.cache_key(row, step) if self.shots else (row, 0)
        if key is not None and key in self._teacher_cache:
            student_ids, teacher_ids, student_start, teacher_start = self._teacher_cache[key]
            return EncodedExample(
                row, student_ids.tolist(), teacher_ids.tolist(), student_start, teacher_start
            )
        if row not in self._student_cache:
            self._student_cache[row] = self.prompts.encode_student(example)
        shots = self.shots.shots(row, step, step_rows) if self.shots else []
        encoded = self.prompts.encode_pair(example, shots, self._student_cache[row], self.donor(row))
        if key is not None:
            self._teacher_cache[key] = (
                np.asarray(encoded.student_ids, dtype=np.int32),
                np.asarray(encoded.teacher_ids, dtype=np.int32),
                encoded.student_answer_start,
                encoded.teacher_answer_start,
            )
        return encoded

    def fits(self, e: EncodedExample) -> bool:
        return len(e.student_ids) <= self.max_student_len and len(e.teacher_ids) <= self.max_teacher_len

    def sort_length(self, e: EncodedExample) -> int:
        """The length that sets a micro-batch's padded width: the teacher's when there is one (k shots
        make it the longest sequence), else the student's."""
        return len(e.teacher_ids) if self.shots is not None else len(e.student_ids)

    def step_by_length(self, step: int) -> list[EncodedExample]:
        """All G examples of `step`, encoded and sorted by sort_length, ties in stream order.

        A pure function of the step (no communication: every process sorts the same list). Shots see
        the unsorted step rows, as without grouping, so they do not depend on this option.
        """
        if self._by_length is None or self._by_length[0] != step:
            step_rows = self.order.step_rows(step)
            encoded = [self.encode(r, step, step_rows) for r in step_rows]
            order = sorted(range(len(encoded)), key=lambda i: (self.sort_length(encoded[i]), i))
            self._by_length = (step, [encoded[i] for i in order])
        return self._by_length[1]

    def micro_encoded(
        self, step: int, micro: int, rank: int, num_processes: int, per_device: int
    ) -> list[EncodedExample]:
        """The encoded examples of micro-batch `micro` on process `rank`: disjoint across (micro, rank)."""
        if self.group_by_length:
            return self.step_by_length(step)[micro_slots(micro, rank, num_processes, per_device)]
        # Stream order: encode only this process's share.
        step_rows = self.order.step_rows(step)
        rows = self.order.micro_rows(step, micro, rank, num_processes, per_device)
        return [self.encode(r, step, step_rows) for r in rows]

    def micro_rows(self, step: int, micro: int, rank: int, num_processes: int, per_device: int) -> list[int]:
        """The rows of micro-batch `micro` on process `rank`, dropped ones included."""
        return [e.row for e in self.micro_encoded(step, micro, rank, num_processes, per_device)]

    def micro_batch(
        self, step: int, micro: int, rank: int, num_processes: int, per_device: int
    ) -> MicroBatch:
        encoded = self.micro_encoded(step, micro, rank, num_processes, per_device)
        kept = [e for e in encoded if self.fits(e)]
        dropped = [e.row for e in encoded if not self.fits(e)]
        return MicroBatch(batch=collate(kept, self.pad_id), dropped_rows=dropped, encoded=encoded)


def build_training_batches(cfg, tokenizer, with_teacher: bool, num_processes: int) -> TrainingBatches:
    """TrainingBatches for a config: rows (subset, minus validation and fixed exemplars), shots, order.

    Training on gold answers reads every training row's answer, and so do exemplars drawn from the
    training rows: a row without one is refused here, naming its file and line, before any model loads.
    Rollouts of the student or the teacher (rollout.source) need only the questions.
    """
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    train, _validation = training_rows(cfg, prompts.task, need=training_needs(cfg, with_teacher))
    shots, donors = None, None
    if with_teacher:
        _ = prompts.teacher  # the teacher's context files are read (and refused if unreadable) now
        f = cfg.fewshot
        separate = f.pool is not None
        pool = exemplar_pool(cfg, prompts.task, train)
        shots = ShotSampler(pool, f.k, f.selection, f.seed, f.shuffle_answers, f.shuffle_mode, separate)
        if not separate:  # a fixed exemplar is then a training row: never train on it as well
            fixed = set(shots.fixed_rows)
            train = [e for e in train if e.row not in fixed]
    if with_teacher and cfg.teacher.shuffle_context:
        donors = context_donors([e.row for e in train], cfg.teacher.context_seed)
    t = cfg.training
    order = ExampleOrder(
        [e.row for e in train], t.seed, num_processes * t.per_device_batch_size * t.grad_accum_steps
    )
    if shots is not None:
        shots.check_step_size(order.global_batch)
    return TrainingBatches(
        train,
        prompts,
        shots,
        order,
        cfg.data.max_student_len,
        cfg.data.max_teacher_len if with_teacher else cfg.data.max_student_len,
        tokenizer.pad_token_id,
        cfg.data.group_by_length,
        donors,
    )


def training_needs(cfg, with_teacher: bool) -> tuple[str, ...]:
    """What every training row must have (tasks.base.NEEDS): its worked answer, unless the answers are
    the student's or the teacher's samples (rollout.source student/teacher, without rollout.gold_ce) and
    the exemplars come from elsewhere (fewshot.pool) or there are none; and the row fields the teacher
    reads (teacher.context_field, teacher.template's), when there is a teacher."""
    r = cfg.rollout
    gold_read = r.source in ("gold", "mixed") or r.gold_ce
    exemplars_from_rows = with_teacher and cfg.fewshot.k > 0 and cfg.fewshot.pool is None
    need = ("answer",) if gold_read or exemplars_from_rows else ()
    return need + (("teacher",) if with_teacher and cfg.teacher.row_fields() else ())

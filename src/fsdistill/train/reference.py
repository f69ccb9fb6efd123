"""The original's distillation step, kept as the reference that the fast paths are tested against.

What the original computes per micro-batch (its defects in alignment aside, see docs/differences.md):
the teacher's forward over the whole k-shot sequence and the student's over its own, each returning
full-vocabulary logits at every position, (B, T, V) and (B, S, V), then indexed at the answer positions.
Nothing is cached, nothing is chunked. Equivalence tests compare this with `step.micro_batch_losses`
(losses and gradients), and scripts/bench_step.py times it as variant (b).
"""

from __future__ import annotations

import contextlib

import torch

from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.losses import TeacherTargets, cross_entropy, teacher_targets_from_logits
from fsdistill.distill.objective import distillation_sums
from fsdistill.modeling.answer_lm import eval_mode
from fsdistill.train.step import MicroLosses


def reference_micro_batch_losses(cfg, student, live, batch, autocast):
    """`micro_batch_losses` the original's way. Returns (MicroLosses, shapes of the two logits tensors).

    student: the AnswerLogitsLM (its `.model` is the peft/transformers model); live: a LiveTeacher (its
    `answer_lm`, `adapter_off` and target spec; for a CachedTeacher pass its `.live`: nothing is cached).
    """
    pos = answer_positions(batch)
    with autocast():
        full_student = student.model(
            input_ids=batch.student_ids, attention_mask=batch.student_mask, use_cache=False
        ).logits  # (B, S, V)
    student_logits = full_student[pos.batch_index, pos.student_positions]
    shapes = {"student_logits": tuple(full_student.shape)}
    mask = torch.ones(pos.count, dtype=torch.bool, device=student_logits.device)
    ce_sum, _ = cross_entropy(student_logits, pos.targets, mask)
    off = live.adapter_off() if live.adapter_off else contextlib.nullcontext()
    with torch.no_grad(), off, eval_mode(live.answer_lm), autocast():
        full_teacher = live.answer_lm.model(
            input_ids=batch.teacher_ids, attention_mask=batch.teacher_mask, use_cache=False
        ).logits  # (B, T, V)
    shapes["teacher_logits"] = tuple(full_teacher.shape)
    teacher_logits = full_teacher[pos.batch_index, pos.teacher_positions]
    del full_teacher
    spec = live.spec
    if spec.top_k is None:
        targets = TeacherTargets(logits=teacher_logits)
    else:
        targets = teacher_targets_from_logits(
            teacher_logits,
            top_k=spec.top_k,
            keep_full=False,
            logsumexp_temperature=spec.logsumexp_temperature,
        )
    dist_sum, divergence_sum = distillation_sums(cfg, student_logits, targets, mask, pos.targets)
    return MicroLosses(ce_sum, dist_sum, divergence_sum, pos.count), shapes

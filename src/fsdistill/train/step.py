"""One optimizer step's forward and backward passes: the stages every method shares.

    loss of an optimizer step = (sum of CE over answer tokens + λ · sum of distillation over them)
                                / (answer tokens of the whole step, over all micro-batches and processes)

Per micro-batch the stages run in this order:
  1. teacher targets: the teacher (if any) runs first, under no_grad, reduced at once to what the loss
     reads (top-K per chunk), so its peak does not stack on the student's stored activations;
  2. student losses: the student's forward to the final hidden states at the answer positions, then the
     output head and CE + distillation chunk by chunk (bounded memory);
  3. backward, scaled so that gradients are those of the step's loss above whatever the split into
     micro-batches and processes.
The optimizer stage (clip, AdamW, schedule) is the recipe's (recipe.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsdistill.config import Config
from fsdistill.distill.alignment import AnswerPositions, answer_positions
from fsdistill.distill.losses import TeacherTargets, cross_entropy
from fsdistill.distill.objective import distillation_sum
from fsdistill.modeling.sharding import gradient_sync


@dataclass
class MicroLosses:
    ce_sum: torch.Tensor  # 0-dim, float32, with grad
    dist_sum: torch.Tensor  # 0-dim, float32, with grad (0 without a teacher)
    tokens: int  # answer tokens (= distilled positions = CE positions)


def answer_losses(cfg: Config, head, hidden, targets, teacher_targets: TeacherTargets | None, autocast):
    """(CE sum, distillation sum) over the N answer positions, the output head applied chunk by chunk.

    hidden (N, H): the student's final hidden states at the answer positions; targets (N,) the answer ids;
    teacher_targets: the teacher's TeacherTargets at the same positions, or None (SFT). With more than
    training.logits_chunk_size positions each chunk runs under activation checkpointing: its (chunk, V)
    logits are freed after the forward and recomputed in the backward, so the loss's extra memory is
    O(chunk x V) whatever N is (one extra output-head forward per chunk is the price).
    """
    size = cfg.training.logits_chunk_size
    n = hidden.shape[0]
    ce_total = hidden.new_zeros((), dtype=torch.float32)
    dist_total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, max(n, 1), size):
        end = min(start + size, n)

        def chunk_losses(h, start=start, end=end):
            with autocast():
                logits = head(h)  # (chunk, V)
            # The losses' own arithmetic is float32 (losses.py) whatever autocast surrounds this call.
            with torch.autocast(device_type=h.device.type, enabled=False):
                mask = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
                ce, _ = cross_entropy(logits, targets[start:end], mask)
                if teacher_targets is None:
                    return ce, torch.zeros_like(ce)
                # Made here, not outside: full-vocabulary teacher logits must not outlive the chunk either.
                teacher = teacher_targets.chunk(start, end)
                return ce, distillation_sum(cfg, logits, teacher, mask)

        if n > size:
            ce, dist = torch.utils.checkpoint.checkpoint(chunk_losses, hidden[start:end], use_reentrant=False)
        else:
            ce, dist = chunk_losses(hidden[start:end])
        ce_total, dist_total = ce_total + ce, dist_total + dist
    return ce_total, dist_total


def teacher_targets(teacher, batch, pos: AnswerPositions, autocast) -> TeacherTargets | None:
    """Stage 1: the teacher's targets at the answer positions (None without a teacher)."""
    if teacher is None:
        return None
    with autocast():
        return teacher.targets(batch, pos)


def student_losses(cfg: Config, student, batch, pos: AnswerPositions, targets, autocast) -> MicroLosses:
    """Stage 2: the student's CE and distillation sums at the answer positions, all inside the (wrapped)
    student's forward (see AnswerLogitsLM: DDP and FSDP see every use of the parameters)."""

    def losses(lm):
        with autocast():
            hidden = lm.hidden_at(
                batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
            )
        return answer_losses(cfg, lm.head, hidden, pos.targets, targets, autocast)

    ce_sum, dist_sum = student(losses)
    return MicroLosses(ce_sum, dist_sum, pos.count)


def micro_batch_losses(cfg: Config, student, teacher, batch, autocast) -> MicroLosses:
    """CE and distillation sums of one micro-batch, at exactly the same answer positions (stages 1-2)."""
    pos = answer_positions(batch)
    return student_losses(cfg, student, batch, pos, teacher_targets(teacher, batch, pos, autocast), autocast)


@dataclass
class StepSums:
    """One optimizer step's forward and backward passes, summed over all micro-batches and processes."""

    ce_sum: float  # sum of CE over the step's answer tokens
    dist_sum: float  # sum of the distillation loss over them (0 without a teacher)
    answer_tokens: float  # answer tokens of the step (the loss's denominator)
    dropped: int  # examples of the step dropped for length
    seq_tokens: float  # student (+ teacher) tokens run through the model


def backward_step(cfg: Config, accelerator, student, teacher, micro_batches) -> StepSums:
    """Stages 1-3 for this process's micro-batches of one optimizer step; gradients accumulate.

    The step's answer tokens are all-reduced first; micro-batch i's backward is scaled by
    num_processes / step tokens, so once DDP has averaged over processes every parameter's gradient is
    d(sum of CE + λ·D over the step's answer tokens) / d(parameter) / (step's answer tokens), whatever the
    split into processes and micro-batches (FSDP's reduce-scatter averages over processes as DDP does).
    Gradients are reduced only on the last micro-batch.
    """
    device = accelerator.device
    local = torch.tensor(
        [
            sum(mb.batch.num_answer_tokens for mb in micro_batches),
            sum(len(mb.dropped_rows) for mb in micro_batches),
        ],
        dtype=torch.float64,
        device=device,
    )
    step_tokens, step_dropped = accelerator.reduce(local, reduction="sum").tolist()
    scale = accelerator.num_processes / max(step_tokens, 1.0)
    ce_total = torch.zeros((), dtype=torch.float64, device=device)
    dist_total = torch.zeros((), dtype=torch.float64, device=device)
    seq_tokens = 0
    for m, mb in enumerate(micro_batches):
        batch = mb.batch.to(device)
        with gradient_sync(student, accelerator, enabled=m == len(micro_batches) - 1):
            losses = micro_batch_losses(cfg, student, teacher, batch, accelerator.autocast)
            accelerator.backward((losses.ce_sum + cfg.distill.weight * losses.dist_sum) * scale)
        ce_total += losses.ce_sum.detach().double()
        dist_total += losses.dist_sum.detach().double()
        seq_tokens += int(batch.student_mask.sum()) + (int(batch.teacher_mask.sum()) if teacher else 0)
    seq = torch.tensor(float(seq_tokens), dtype=torch.float64, device=device)
    sums = accelerator.reduce(torch.stack([ce_total, dist_total, seq]), reduction="sum").tolist()
    return StepSums(sums[0], sums[1], step_tokens, int(step_dropped), sums[2])

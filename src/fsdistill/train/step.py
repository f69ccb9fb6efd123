"""One optimizer step's forward and backward passes: the stages every method shares.

    loss of an optimizer step = (c · sum of CE over answer tokens + λ · sum of distillation over them)
                                / (answer tokens of the whole step, over all micro-batches and processes)
                              [ + sum of CE over gold answer tokens / gold answer tokens   (rollout.gold_ce) ]

c is 1 on gold answers and on the teacher's samples, 0 on the student's own samples (on-policy: the
student learns from the teacher's grades of what it wrote, not to repeat it). The answers are the step's
batch: gold, or rollouts drawn once for the whole step (train/rollouts.py) before these stages.

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

from dataclasses import dataclass, field

import torch

from fsdistill.config import Config
from fsdistill.distill.alignment import AnswerPositions, answer_positions
from fsdistill.distill.losses import TeacherTargets, cross_entropy
from fsdistill.distill.objective import distillation_sums
from fsdistill.modeling.sharding import gradient_sync


@dataclass
class MicroLosses:
    ce_sum: torch.Tensor  # 0-dim, float32, with grad
    dist_sum: torch.Tensor  # 0-dim, float32, with grad (0 without a teacher)
    divergence_sum: torch.Tensor  # 0-dim, no grad: the per-token divergence before clipping and weights
    tokens: int  # answer tokens (= distilled positions = CE positions)


def answer_losses(
    cfg: Config,
    head,
    hidden,
    targets,
    teacher_targets: TeacherTargets | None,
    autocast,
    vocab_size: int | None = None,
):
    """(CE sum, distillation sum, divergence sum) over the N answer positions, the output head applied
    chunk by chunk.

    hidden (N, H): the student's final hidden states at the answer positions; targets (N,) the answer ids;
    teacher_targets: the teacher's TeacherTargets at the same positions, or None (SFT); vocab_size: the
    distillation term reads the student's first vocab_size logits only (a teacher with a smaller
    vocabulary: the ids both share; the CE keeps the whole head), or None. With more than
    training.logits_chunk_size positions each chunk runs under activation checkpointing: its (chunk, V)
    logits are freed after the forward and recomputed in the backward, so the loss's extra memory is
    O(chunk x V) whatever N is (one extra output-head forward per chunk is the price).
    """
    size = cfg.training.logits_chunk_size
    n = hidden.shape[0]
    totals = [hidden.new_zeros((), dtype=torch.float32) for _ in range(3)]
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
                    return ce, torch.zeros_like(ce), torch.zeros_like(ce)
                # Made here, not outside: full-vocabulary teacher logits must not outlive the chunk either.
                teacher = teacher_targets.chunk(start, end)
                shared = logits if vocab_size is None else logits[:, :vocab_size]
                dist, divergence = distillation_sums(cfg, shared, teacher, mask, targets[start:end])
                return ce, dist, divergence

        if n > size:
            parts = torch.utils.checkpoint.checkpoint(chunk_losses, hidden[start:end], use_reentrant=False)
        else:
            parts = chunk_losses(hidden[start:end])
        totals = [total + part for total, part in zip(totals, parts)]
    return tuple(totals)


def teacher_targets(teacher, batch, pos: AnswerPositions, autocast) -> TeacherTargets | None:
    """Stage 1: the teacher's targets at the answer positions (None without a teacher)."""
    if teacher is None:
        return None
    with autocast():
        return teacher.targets(batch, pos)


def student_losses(
    cfg: Config, student, batch, pos: AnswerPositions, targets, autocast, vocab_size: int | None = None
) -> MicroLosses:
    """Stage 2: the student's CE and distillation sums at the answer positions, all inside the (wrapped)
    student's forward (see AnswerLogitsLM: DDP and FSDP see every use of the parameters); vocab_size as in
    answer_losses."""

    def losses(lm):
        with autocast():
            hidden = lm.hidden_at(
                batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
            )
        return answer_losses(cfg, lm.head, hidden, pos.targets, targets, autocast, vocab_size)

    ce_sum, dist_sum, divergence_sum = student(losses)
    return MicroLosses(ce_sum, dist_sum, divergence_sum.detach(), pos.count)


def micro_batch_losses(cfg: Config, student, teacher, batch, autocast) -> MicroLosses:
    """CE and distillation sums of one micro-batch, at exactly the same answer positions (stages 1-2)."""
    pos = answer_positions(batch)
    targets = teacher_targets(teacher, batch, pos, autocast)
    vocab_size = None if teacher is None else teacher.vocab_size
    return student_losses(cfg, student, batch, pos, targets, autocast, vocab_size)


@dataclass
class StepData:
    """This process's batches of one optimizer step, and how the loss reads them.

    micro_batches: the answers the losses read (data.batch.MicroBatch: gold, or rollouts);
    ce_weight: c in the module docstring (1.0, or 0.0 for the student's own samples);
    gold: micro-batches of gold answers trained with CE alone over their own token count (rollout.gold_ce),
    else empty.
    """

    micro_batches: list
    ce_weight: float = 1.0
    gold: list = field(default_factory=list)


@dataclass
class StepSums:
    """One optimizer step's forward and backward passes, summed over all micro-batches and processes."""

    ce_sum: float  # sum of CE over the step's answer tokens
    dist_sum: float  # sum of the distillation loss over them (0 without a teacher)
    divergence_sum: float  # sum of the per-token divergence (before clipping and weights)
    answer_tokens: float  # answer tokens of the step (the loss's denominator)
    dropped: int  # examples of the step dropped for length
    seq_tokens: float  # student (+ teacher) tokens run through the model
    ce_weight: float = 1.0  # c of the step
    gold_ce_sum: float = 0.0  # rollout.gold_ce: sum of CE over the gold answer tokens
    gold_tokens: float = 0.0  # ... and their count (that term's denominator)


def backward_step(cfg: Config, accelerator, student, teacher, step: StepData) -> StepSums:
    """Stages 1-3 for this process's micro-batches of one optimizer step; gradients accumulate.

    The step's answer tokens are all-reduced first; micro-batch i's backward is scaled by
    num_processes / step tokens, so once DDP has averaged over processes every parameter's gradient is
    d(c · sum of CE + λ·D over the step's answer tokens) / d(parameter) / (step's answer tokens), whatever
    the split into processes and micro-batches (FSDP's reduce-scatter averages over processes as DDP does).
    Gold-answer CE batches (rollout.gold_ce) follow, scaled by their own token count. Gradients are
    reduced only on the last backward of the step.
    """
    device = accelerator.device
    local = torch.tensor(
        [
            sum(mb.batch.num_answer_tokens for mb in step.micro_batches),
            sum(len(mb.dropped_rows) for mb in step.micro_batches),
            sum(mb.batch.num_answer_tokens for mb in step.gold),
        ],
        dtype=torch.float64,
        device=device,
    )
    step_tokens, step_dropped, gold_tokens = accelerator.reduce(local, reduction="sum").tolist()
    scale = accelerator.num_processes / max(step_tokens, 1.0)
    gold_scale = accelerator.num_processes / max(gold_tokens, 1.0)
    passes = [(mb, teacher) for mb in step.micro_batches] + [(mb, None) for mb in step.gold]
    totals = torch.zeros(5, dtype=torch.float64, device=device)  # ce, dist, divergence, gold ce, seq tokens
    for m, (mb, teacher_of_pass) in enumerate(passes):
        batch = mb.batch.to(device)
        gold = m >= len(step.micro_batches)
        with gradient_sync(student, accelerator, enabled=m == len(passes) - 1):
            losses = micro_batch_losses(cfg, student, teacher_of_pass, batch, accelerator.autocast)
            if gold:
                loss = losses.ce_sum * gold_scale
            elif step.ce_weight == 1.0:  # the paper's loss, written as always (bit-identical runs)
                loss = (losses.ce_sum + cfg.distill.weight * losses.dist_sum) * scale
            else:
                loss = (step.ce_weight * losses.ce_sum + cfg.distill.weight * losses.dist_sum) * scale
            accelerator.backward(loss)
        ce = losses.ce_sum.detach().double()
        if gold:
            totals[3] += ce
        else:
            totals[0] += ce
            totals[1] += losses.dist_sum.detach().double()
            totals[2] += losses.divergence_sum.double()
        totals[4] += int(batch.student_mask.sum()) + (int(batch.teacher_mask.sum()) if teacher_of_pass else 0)
    sums = accelerator.reduce(totals, reduction="sum").tolist()
    return StepSums(
        ce_sum=sums[0],
        dist_sum=sums[1],
        divergence_sum=sums[2],
        answer_tokens=step_tokens,
        dropped=int(step_dropped),
        seq_tokens=sums[4],
        ce_weight=step.ce_weight,
        gold_ce_sum=sums[3],
        gold_tokens=gold_tokens,
    )

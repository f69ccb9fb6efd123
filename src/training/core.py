"""The one training loop. SFT, few-shot distillation and the controls differ only in the teacher.

    loss of an optimizer step = (sum of CE over answer tokens + λ · sum of distillation over them)
                                / (answer tokens of the whole step, over all micro-batches and processes)

Per step: every process builds its micro-batches (deterministic in the step, see data/batch.py), the
step's answer-token count is all-reduced, each micro-batch's backward pass is scaled by
num_processes / that count (DDP averages gradients over processes), then one clipped AdamW step and one
scheduler step. The scheduler is not handed to `accelerator.prepare`, which would step it once per
process (the original's LR hit 0 at step 500 of 1000 on 2 GPUs).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fsdistill.cli import check_launcher_precision
from fsdistill.config import Config, run_name, to_dict, to_yaml
from fsdistill.data.batch import build_training_batches
from fsdistill.data.prompts import load_tokenizer
from fsdistill.errors import UserError
from fsdistill.models.student import build_student_teacher, check_answer_logits, eval_mode, model_identity
from fsdistill.models.teacher import target_spec
from fsdistill.models.teacher_cache import CachedTeacher
from fsdistill.training.alignment import answer_positions
from fsdistill.training.checkpoint import (
    git_commit,
    list_checkpoints,
    load_training_state,
    prepare_run_dir,
    prune_checkpoints,
    save_checkpoint,
    write_json_atomic,
)
from fsdistill.training.losses import TeacherTargets, cross_entropy, distillation_loss


class TrainingDiverged(UserError):
    """The loss or gradient became NaN/inf; the run stops and keeps its last good checkpoint."""


# ------------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------------


def make_accelerator(cfg: Config):
    """An Accelerator whose mixed precision is the config's; a disagreeing launcher flag is refused."""
    from accelerate import Accelerator

    check_launcher_precision(cfg)
    return Accelerator(mixed_precision=cfg.training.mixed_precision)


def make_autocast(mixed_precision: str, device):
    """A context-manager factory doing what accelerate's autocast does for training.mixed_precision, for
    code that runs without an Accelerator (the benchmark, scripts/precompute_teacher.py)."""
    if mixed_precision == "no":
        return nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def check_global_batch(cfg: Config, num_processes: int) -> int:
    t = cfg.training
    global_batch = num_processes * t.per_device_batch_size * t.grad_accum_steps
    if t.global_batch_size is not None and t.global_batch_size != global_batch:
        raise UserError(
            f"training.global_batch_size={t.global_batch_size} but {num_processes} processes x "
            f"per_device_batch_size {t.per_device_batch_size} x grad_accum_steps {t.grad_accum_steps} = "
            f"{global_batch}; change grad_accum_steps (or the process count) so they agree"
        )
    return global_batch


def make_scheduler(cfg: Config, optimizer):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[
        cfg.training.lr_schedule
    ]
    return get_scheduler(
        name, optimizer, num_warmup_steps=cfg.training.warmup_steps, num_training_steps=cfg.training.max_steps
    )


# ------------------------------------------------------------------------------------------------
# Loss of one micro-batch
# ------------------------------------------------------------------------------------------------


@dataclass
class MicroLosses:
    ce_sum: torch.Tensor  # 0-dim, float32, with grad
    dist_sum: torch.Tensor  # 0-dim, float32, with grad (0 without a teacher)
    tokens: int  # answer tokens (= distilled positions = CE positions)


def answer_losses(cfg: Config, head, hidden, targets, teacher_answers, autocast):
    """(CE sum, distillation sum) over the N answer positions, the output head applied chunk by chunk.

    hidden (N, H): the student's final hidden states at the answer positions; targets (N,) the answer ids;
    teacher_answers: TeacherAnswers at the same positions, or None (SFT). With more than
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
            mask = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
            ce, _ = cross_entropy(logits, targets[start:end], mask)
            if teacher_answers is None:
                return ce, torch.zeros_like(ce)
            # Made here, not outside: full-vocabulary teacher logits must not outlive the chunk either.
            teacher = teacher_answers.chunk(start, end)
            return ce, distillation_sum(cfg, logits, teacher, mask)

        if n > size:
            ce, dist = torch.utils.checkpoint.checkpoint(chunk_losses, hidden[start:end], use_reentrant=False)
        else:
            ce, dist = chunk_losses(hidden[start:end])
        ce_total, dist_total = ce_total + ce, dist_total + dist
    return ce_total, dist_total


def distillation_sum(cfg: Config, student_logits, teacher: TeacherTargets, mask) -> torch.Tensor:
    """distill.loss summed over positions: student_logits (n, V), teacher targets at the same n, mask (n,)."""
    d = cfg.distill
    dist_sum, _ = distillation_loss(
        d.loss,
        student_logits,
        teacher,
        mask,
        temperature=d.temperature,
        beta=d.beta,
        support=target_spec(cfg).support,
        scale_by_temperature_squared=d.scale_by_temperature_squared,
    )
    return dist_sum


def micro_batch_losses(cfg: Config, student, teacher, batch, autocast) -> MicroLosses:
    """CE and distillation sums of one micro-batch, at exactly the same answer positions.

    The teacher runs first: its activations (no grad) and its (chunk, V) logits are gone, reduced to top-K
    targets, before the student's forward stores activations for the backward pass, so the two peaks do
    not stack.
    """
    pos = answer_positions(batch)
    answers = None
    if teacher is not None:
        with autocast():
            answers = teacher.answers(batch, pos)
    with autocast():
        hidden = student(
            batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions, return_hidden=True
        )
    ce_sum, dist_sum = answer_losses(cfg, unwrap(student).head, hidden, pos.targets, answers, autocast)
    return MicroLosses(ce_sum, dist_sum, pos.count)


def unwrap(module):
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


@dataclass
class StepSums:
    """One optimizer step's forward and backward passes, summed over all micro-batches and processes."""

    ce_sum: float  # sum of CE over the step's answer tokens
    dist_sum: float  # sum of the distillation loss over them (0 without a teacher)
    answer_tokens: float  # answer tokens of the step (the loss's denominator)
    dropped: int  # examples of the step dropped for length
    seq_tokens: float  # student (+ teacher) tokens run through the model


def backward_step(cfg: Config, accelerator, student, teacher, micro_batches) -> StepSums:
    """Forward and backward of this process's micro-batches of one optimizer step; gradients accumulate.

    The step's answer tokens are all-reduced first; micro-batch i's backward is scaled by
    num_processes / step tokens, so once DDP has averaged over processes every parameter's gradient is
    d(sum of CE + λ·D over the step's answer tokens) / d(parameter) / (step's answer tokens), whatever the
    split into processes and micro-batches. DDP syncs only on the last micro-batch.
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
        sync = nullcontext() if m == len(micro_batches) - 1 else accelerator.no_sync(student)
        with sync:
            losses = micro_batch_losses(cfg, student, teacher, batch, accelerator.autocast)
            accelerator.backward((losses.ce_sum + cfg.distill.weight * losses.dist_sum) * scale)
        ce_total += losses.ce_sum.detach().double()
        dist_total += losses.dist_sum.detach().double()
        seq_tokens += int(batch.student_mask.sum()) + (int(batch.teacher_mask.sum()) if teacher else 0)
    seq = torch.tensor(float(seq_tokens), dtype=torch.float64, device=device)
    sums = accelerator.reduce(torch.stack([ce_total, dist_total, seq]), reduction="sum").tolist()
    return StepSums(sums[0], sums[1], step_tokens, int(step_dropped), sums[2])


# ------------------------------------------------------------------------------------------------
# Step data
# ------------------------------------------------------------------------------------------------


class StepBatches(torch.utils.data.Dataset):
    """Item s = this process's micro-batches of optimizer step s (a DataLoader prefetches them)."""

    def __init__(self, batches, rank: int, num_processes: int, cfg: Config):
        self.batches, self.rank, self.num_processes = batches, rank, num_processes
        self.per_device, self.accum = cfg.training.per_device_batch_size, cfg.training.grad_accum_steps

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int):
        return [
            self.batches.micro_batch(step, m, self.rank, self.num_processes, self.per_device)
            for m in range(self.accum)
        ]


def step_loader(batches, cfg: Config, rank: int, num_processes: int, start: int, end: int):
    dataset = StepBatches(batches, rank, num_processes, cfg)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, end),
        num_workers=cfg.data.num_workers,
        collate_fn=lambda x: x,
        persistent_workers=False,
        generator=torch.Generator(),  # never draw from the global RNG: resumed runs must match straight ones
    )


# ------------------------------------------------------------------------------------------------
# Run records
# ------------------------------------------------------------------------------------------------


class RunRecorder:
    """run.json, metrics.jsonl and TensorBoard, written by the main process only."""

    def __init__(
        self, run_dir: Path, cfg: Config, method: str, accelerator, global_batch: int, start_step: int
    ):
        self.run_dir, self.is_main = run_dir, accelerator.is_main_process
        self.writer = None
        self.manifest = {
            "name": run_name(cfg),
            "method": method,
            "output_dir": str(run_dir),
            "git_commit": git_commit(),
            "num_processes": accelerator.num_processes,
            "global_batch_size": global_batch,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "running",
            "dropped_examples": [],
            "checkpoints": [],
            "config": to_dict(cfg),
        }
        if not self.is_main:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        old = run_dir / "run.json"
        if start_step > 0 and old.is_file():
            previous = json.loads(old.read_text())
            self.manifest["dropped_examples"] = previous.get("dropped_examples", [])
            self.manifest["resumed_from_step"] = start_step
            self.manifest["started"] = previous.get("started", self.manifest["started"])
        self.manifest["checkpoints"] = [{"step": s, "path": p.name} for s, p in list_checkpoints(run_dir)]
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        self._truncate_metrics(start_step)
        self.save()
        if cfg.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def _truncate_metrics(self, start_step: int) -> None:
        """On resume, drop records past the checkpoint (a crash may have logged steps that are redone)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        keep = [
            line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start_step
        ]
        path.write_text("".join(f"{line}\n" for line in keep))

    def save(self) -> None:
        if self.is_main:
            write_json_atomic(self.run_dir / "run.json", self.manifest)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self, status: str) -> None:
        self.manifest["status"] = status
        self.save()
        if self.writer is not None:
            self.writer.close()


def parameter_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def train(cfg: Config, method: str, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train `method` ('sft' has no teacher; the others distil from a live teacher) as `cfg` says."""
    from accelerate.utils import set_seed

    run_dir = Path(cfg.output.dir)
    accelerator = make_accelerator(cfg)
    rank, nproc = accelerator.process_index, accelerator.num_processes
    global_batch = check_global_batch(cfg, nproc)
    resume_from = prepare_run_dir(run_dir, resume, overwrite, accelerator.is_main_process)
    accelerator.wait_for_everyone()

    set_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    with_teacher = method != "sft"
    batches = build_training_batches(cfg, tokenizer, with_teacher, nproc)
    pair = build_student_teacher(cfg, with_teacher)
    student, teacher = pair.student, pair.teacher
    student.to(accelerator.device)
    if teacher is not None and teacher.answer_lm is not student:
        teacher.answer_lm.to(accelerator.device)
    with eval_mode(student):
        check_answer_logits(student, len(tokenizer), accelerator.device)
    if teacher is not None:
        teacher.self_check(len(tokenizer), accelerator.device)

    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    # With LoRA the teacher keeps the unwrapped module: its no-grad passes need no DDP.
    student, optimizer = accelerator.prepare(student, optimizer)

    start = 0
    if resume_from is not None:
        start = load_training_state(accelerator, resume_from, cfg, student, optimizer, scheduler)
    else:
        set_seed(cfg.training.seed + rank)  # per-process dropout streams
    end = min(cfg.training.max_steps, cfg.training.stop_after or cfg.training.max_steps)
    recorder = RunRecorder(run_dir, cfg, method, accelerator, global_batch, start)
    meta = {
        "name": run_name(cfg),
        "method": method,
        "model_identity": model_identity(cfg),
        "num_processes": nproc,
        "global_batch_size": global_batch,
    }
    rows_seen: list[list[int]] = []
    status = "failed"
    try:
        _loop(
            cfg,
            accelerator,
            student,
            teacher,
            optimizer,
            scheduler,
            batches,
            recorder,
            meta,
            tokenizer,
            run_dir,
            start,
            end,
            rows_seen,
        )
        status = "finished" if end == cfg.training.max_steps else f"stopped_after_{end}"
    except TrainingDiverged:
        status = "diverged"
        raise
    finally:
        recorder.close(status)
        ranks = run_dir / "ranks"
        ranks.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            ranks / f"rank{rank}.json",
            {
                "rank": rank,
                "world_size": nproc,
                "first_step": start + 1,
                "rows_by_step": rows_seen,
                "trainable_parameters_sha256": parameter_digest(accelerator.unwrap_model(student)),
            },
        )
    return run_dir


def _loop(
    cfg,
    accelerator,
    student,
    teacher,
    optimizer,
    scheduler,
    batches,
    recorder,
    meta,
    tokenizer,
    run_dir,
    start,
    end,
    rows_seen,
) -> None:
    t = cfg.training
    nproc = accelerator.num_processes
    params = [p for p in student.parameters() if p.requires_grad]
    progress = tqdm(
        total=end,
        initial=start,
        disable=not accelerator.is_main_process,
        desc=meta["method"],
        unit="step",
        dynamic_ncols=True,
    )
    student.train()
    for step_index, micro_batches in zip(
        range(start, end), step_loader(batches, cfg, accelerator.process_index, nproc, start, end)
    ):
        step = step_index + 1  # steps are counted from 1: checkpoint-{step} holds `step` updates
        tick = time.perf_counter()
        rows_seen.append([r for mb in micro_batches for r in mb.batch.rows.tolist() if r >= 0])
        dropped = [r for mb in micro_batches for r in mb.dropped_rows]
        sums = backward_step(cfg, accelerator, student, teacher, micro_batches)
        if teacher is not None:
            teacher.end_step(accelerator)
        step_tokens, step_dropped = sums.answer_tokens, sums.dropped
        grad_norm = accelerator.clip_grad_norm_(
            params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        )
        ce, dist = sums.ce_sum / max(step_tokens, 1.0), sums.dist_sum / max(step_tokens, 1.0)
        if not all(math.isfinite(v) for v in (ce, dist, float(grad_norm))):
            optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"non-finite loss or gradient at step {step} (ce={ce}, dist={dist}, grad_norm={float(grad_norm)}); "
                f"stopped before updating: the last good checkpoint in {run_dir} is intact"
            )
        lr = scheduler.get_last_lr()[0]
        if step_tokens > 0:
            optimizer.step()
        elif accelerator.is_main_process:
            # Every example of the step was over the length limits. AdamW would still move the weights
            # (momentum, weight decay) on zero gradients, so the update is skipped; the schedule advances.
            tqdm.write(
                f"warning: step {step} has no answer tokens (all its examples were dropped): no update"
            )
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if dropped or step_dropped:
            _report_dropped(recorder, step, dropped, int(step_dropped))
        elapsed = time.perf_counter() - tick
        values = {
            "train/ce_loss": ce,
            "train/dist_loss": dist,
            "train/total_loss": ce + cfg.distill.weight * dist,
            "train/lr": lr,
            "train/grad_norm": float(grad_norm),
            "train/tokens_per_s": sums.seq_tokens / max(elapsed, 1e-9),
            "train/answer_tokens": step_tokens,
        }
        if isinstance(teacher, CachedTeacher):
            values["train/teacher_cache_hit_rate"] = teacher.hits / max(teacher.hits + teacher.misses, 1)
        if teacher is None:
            values.pop("train/dist_loss")
            values["train/total_loss"] = ce
        if step_tokens > 0 and (step % t.log_every == 0 or step == end or step == start + 1):
            recorder.log(step, values)
        progress.update(1)
        progress.set_postfix(ce=f"{ce:.4f}", dist=f"{dist:.4f}" if teacher else "-", lr=f"{lr:.2e}")
        if step % t.save_every == 0 or step == end:
            path = save_checkpoint(
                accelerator, run_dir, step, cfg, meta, student, optimizer, scheduler, tokenizer
            )
            if accelerator.is_main_process:
                prune_checkpoints(run_dir, t.keep_last)
                recorder.manifest["checkpoints"] = [
                    {"step": s, "path": p.name} for s, p in list_checkpoints(run_dir)
                ]
                recorder.save()
            del path
    progress.close()


def _report_dropped(recorder: RunRecorder, step: int, local_rows: list[int], total: int) -> None:
    """Count examples left out for length; warn once per run (main process), never silently."""
    first = not recorder.manifest["dropped_examples"]
    recorder.manifest["dropped_examples"].append({"step": step, "count": total, "rows_on_main": local_rows})
    if first and recorder.is_main:
        tqdm.write(
            f"warning: step {step}: {total} example(s) longer than data.max_student_len/max_teacher_len were "
            "dropped (never truncated); every drop is counted in run.json 'dropped_examples'"
        )

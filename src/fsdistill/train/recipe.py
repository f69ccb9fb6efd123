"""The one training recipe: SFT, few-shot distillation and the controls differ only in the teacher.

    setup → for each optimizer step: step → log → checkpoint → finish

A step is a sequence of stages (step.py for the middle three):
    batch (the step's micro-batches of gold answers; or rollouts sampled for them, train/rollouts.py)
    → teacher targets → student losses → backward      (per micro-batch)
    → optimizer (clip, AdamW, schedule; a vLLM sampler then takes the new weights)

Every process builds its own micro-batches (deterministic in the step, see data/batch.py). The scheduler
is not handed to `accelerator.prepare`, which would step it once per process (the original's LR hit 0 at
step 500 of 1000 on 2 GPUs). The state of a run is one object, :class:`TrainState`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm.auto import tqdm

from fsdistill.cli import check_distributed_launch, check_launcher_precision
from fsdistill.config import Config, run_name
from fsdistill.data.batch import TrainingBatches, build_training_batches
from fsdistill.data.prompts import load_tokenizer
from fsdistill.distill.teacher import Teacher, make_teacher
from fsdistill.errors import Interrupted, UserError
from fsdistill.files import write_json_atomic
from fsdistill.methods import METHODS, Method
from fsdistill.modeling.answer_lm import check_answer_logits, eval_mode
from fsdistill.modeling.identity import teacher_identity, tokenizer_identity, weights_identity
from fsdistill.modeling.loading import load_student, model_config, teacher_vocabulary
from fsdistill.modeling.sharding import local_tensor, shard, shard_record
from fsdistill.train.checkpoint import (
    check_resume,
    load_training_state,
    model_identity,
    prune_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from fsdistill.train.records import RunRecorder, end_of_run_line, make_trackers, resume_sources
from fsdistill.train.rollouts import Rollouts, rollout_metrics
from fsdistill.train.run_dir import (
    check_output_dir,
    checkpoint_step,
    clear_run_dir,
    remove_stale_temporaries,
    run_lock,
)
from fsdistill.train.signals import StopRequest
from fsdistill.train.step import StepData, StepSums, backward_step


class TrainingDiverged(UserError):
    """The loss or gradient became NaN/inf; the run stops and keeps its last good checkpoint."""


# ------------------------------------------------------------------------------------------------
# Setup helpers
# ------------------------------------------------------------------------------------------------


def make_accelerator(cfg: Config, log_with: Optional[list] = None):
    """An Accelerator whose mixed precision is the config's; a disagreeing launcher flag is refused."""
    from accelerate import Accelerator

    check_launcher_precision(cfg)
    check_distributed_launch(cfg)
    return Accelerator(mixed_precision=cfg.training.mixed_precision, log_with=log_with or None)


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


def warn_if_peak_lr_unreached(cfg: Config) -> None:
    """Warn when the linear warmup outlasts the run (max_steps <= warmup_steps): the learning rate then
    climbs for the whole run and never reaches training.lr. Only a warning: the schedule stays as
    configured (exact resumption and the committed runs depend on it)."""
    t = cfg.training
    if t.warmup_steps == 0 or t.max_steps > t.warmup_steps:
        return
    highest = t.lr * (t.max_steps - 1) / t.warmup_steps  # the last update's: transformers' warmup ramp
    tqdm.write(
        f"warning: training.max_steps={t.max_steps} <= training.warmup_steps={t.warmup_steps}: the learning "
        f"rate warms up for the whole run and never reaches training.lr={t.lr:g} (the last update uses "
        f"{highest:.3g}); set training.warmup_steps below max_steps (e.g. a tenth of it) to reach the peak",
        file=sys.stderr,
    )


def make_scheduler(cfg: Config, optimizer):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[
        cfg.training.lr_schedule
    ]
    return get_scheduler(
        name, optimizer, num_warmup_steps=cfg.training.warmup_steps, num_training_steps=cfg.training.max_steps
    )


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


def parameter_digest(model) -> str:
    """sha256 of this process's trainable parameters (its shards under FSDP): equal digests, equal weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(local_tensor(p).detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# The run's state, and setup
# ------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a run holds, made once by :func:`setup`."""

    cfg: Config
    method: Method
    accelerator: Any
    run_dir: Path
    tokenizer: Any
    batches: TrainingBatches
    student: Any  # the AnswerLogitsLM, wrapped by accelerator.prepare (DDP on several processes)
    teacher: Optional[Teacher]
    optimizer: Any
    scheduler: Any
    params: list  # trainable parameters
    recorder: RunRecorder
    checkpoint_meta: dict  # what every checkpoint.json records besides its step and files
    start: int  # optimizer steps already done (0, or the resumed checkpoint's step)
    end: int  # the last step this launch runs (training.stop_after or max_steps)
    resources: ExitStack  # the run lock and the signal handlers, released by finish()
    stop: StopRequest
    rollouts: Optional[Rollouts] = None  # rollout.source other than gold
    rows_seen: list[list[int]] = field(default_factory=list)  # this process's rows, per step
    sources: list[str] = field(default_factory=list)  # whose answers each step of this launch trained on
    updates: int = 0  # optimizer updates made by this launch
    last_saved: int = -1  # the step of the newest checkpoint written by this launch
    step: int = 0  # the last optimizer step completed (by this launch or, on resume, an earlier one)


def training_rows_sha256(batches: TrainingBatches) -> str:
    """sha256 of the training rows as loaded (row, question, answer), in row order: a changed data file
    under the same data.source gives another digest."""
    rows = [[e.row, e.question, e.answer] for e in sorted(batches.by_row.values(), key=lambda e: e.row)]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def lock_run_folder(accelerator, run_dir: Path, resources: ExitStack) -> None:
    """The main process takes the run's lock for the run's life; every process learns whether it got it
    (the others are not second writers: they write only their own rank files, under its lock)."""
    from accelerate.utils import broadcast_object_list

    problem = [None]
    if accelerator.is_main_process:
        try:
            resources.enter_context(run_lock(run_dir))
        except UserError as e:
            problem = [str(e)]
    if accelerator.num_processes > 1:
        broadcast_object_list(problem)
    if problem[0]:
        raise UserError(problem[0])


def setup(
    cfg: Config, method: Method, *, resume: bool | str, overwrite: bool, resources: ExitStack
) -> TrainState:
    """Run folder, data, student and teacher, optimizer and schedule; restored from a checkpoint on resume.

    Everything that can refuse the run (folder ownership, the lock, the model's fields, a checkpoint that
    is damaged or is not this run) does so before the first weight is loaded, and nothing is deleted
    before the lock is held.
    """
    from accelerate.utils import set_seed

    run_dir = Path(cfg.output.dir)
    resume_from = check_output_dir(run_dir, resume, overwrite)
    accelerator = make_accelerator(cfg, make_trackers(cfg, run_dir, checkpoint_step(resume_from)))
    rank, nproc = accelerator.process_index, accelerator.num_processes
    global_batch = check_global_batch(cfg, nproc)
    lock_run_folder(accelerator, run_dir, resources)
    if accelerator.is_main_process:
        warn_if_peak_lr_unreached(cfg)
    if accelerator.is_main_process:
        if overwrite:
            clear_run_dir(run_dir)
        remove_stale_temporaries(run_dir)
    accelerator.wait_for_everyone()
    model_config(cfg.model)  # model.architecture's fields, checked before any weights load
    resume_meta = verify_checkpoint(resume_from) if resume_from is not None else None
    stop = StopRequest(cfg.training.checkpoint_signal)
    resources.callback(stop.restore)

    set_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    batches = build_training_batches(cfg, tokenizer, method.teacher, nproc)
    if method.teacher:
        teacher_vocabulary(
            cfg, tokenizer
        )  # another model as teacher: its vocabulary, before any weights load
    identity = {
        "training_rows_sha256": training_rows_sha256(batches),
        "tokenizer_sha256": tokenizer_identity(tokenizer),
        "weights": weights_identity(cfg.model),
        # The teacher's context (template, each text's sha256) and another model's weights, when set.
        **(teacher_identity(cfg, batches.prompts.teacher) if method.teacher else {}),
    }
    if resume_from is not None:
        check_resume(resume_from, resume_meta, cfg, method.name, identity, nproc)
    fsdp = cfg.training.distributed == "fsdp"
    student = load_student(cfg)
    student.to(accelerator.device)
    teacher = make_teacher(cfg, student, sharded=fsdp, tokenizer=tokenizer) if method.teacher else None
    with eval_mode(student):
        check_answer_logits(student, len(tokenizer), accelerator.device)
    if teacher is not None:
        teacher.self_check(len(tokenizer), accelerator.device)

    if fsdp:  # sharded in place; the optimizer then holds this process's shards (train/sharding.py)
        shard(student, cfg.training.mixed_precision)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    if fsdp:
        optimizer = accelerator.prepare(optimizer)
    else:
        # With LoRA the teacher keeps the unwrapped module: its no-grad passes need no DDP.
        student, optimizer = accelerator.prepare(student, optimizer)

    start = 0
    if resume_from is not None:
        start = load_training_state(accelerator, resume_from, cfg, student, optimizer, scheduler)
        if accelerator.is_main_process:
            tqdm.write(
                f"resuming from {resume_from} (step {start} of {cfg.training.max_steps})", file=sys.stderr
            )
    else:
        set_seed(cfg.training.seed + rank)  # per-process dropout streams
    end = min(cfg.training.max_steps, cfg.training.stop_after or cfg.training.max_steps)
    resumes = resume_sources(run_dir, resume_from, start) if resume_from is not None else None
    recorder = RunRecorder(run_dir, cfg, method.name, identity, accelerator, global_batch, start)
    if resumes is not None:  # where the weights came from, this run's own checkpoint or another run's
        recorder.manifest["resumed_from"] = resumes
        recorder.save()
    meta = {
        "name": run_name(cfg),
        "method": method.name,
        "model_identity": model_identity(cfg),
        "identity": identity,
        "num_processes": nproc,
        "global_batch_size": global_batch,
    }
    trainable = [p for p in student.parameters() if p.requires_grad]
    rollouts = None
    if cfg.rollout.source != "gold":
        rollouts = Rollouts(
            cfg, tokenizer, batches.prompts, batches.by_row, run_dir, rank, accelerator.autocast
        )
        resources.callback(rollouts.close)
        rollouts.sync(accelerator.unwrap_model(student), start)
    return TrainState(
        cfg, method, accelerator, run_dir, tokenizer, batches, student, teacher, optimizer, scheduler,
        trainable, recorder, meta, start, end, resources, stop, rollouts,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def train(cfg: Config, method: str, *, resume: bool | str = False, overwrite: bool = False) -> Path:
    """Train `method` (a name in fsdistill.methods.METHODS) as `cfg` says; returns the run folder."""
    with ExitStack() as resources:
        state = setup(cfg, METHODS[method], resume=resume, overwrite=overwrite, resources=resources)
        status = "failed"
        try:
            run_steps(state)
            status = "finished" if state.end == cfg.training.max_steps else f"stopped_after_{state.end}"
        except TrainingDiverged:
            status = "diverged"
            raise
        except Interrupted:
            status = "interrupted"
            raise
        finally:
            finish(state, status)
            if state.accelerator.is_main_process:
                tqdm.write(
                    end_of_run_line(state.recorder, max(state.step, state.start), cfg.training.max_steps)
                )
    return state.run_dir


def run_steps(state: TrainState) -> None:
    """step → log → checkpoint, for steps start+1 .. end (steps count from 1: checkpoint-{step} holds
    `step` updates); after each step, a stop requested by a signal writes a checkpoint and ends the run."""
    acc = state.accelerator
    loader = step_loader(
        state.batches, state.cfg, acc.process_index, acc.num_processes, state.start, state.end
    )
    progress = tqdm(
        total=state.end,
        initial=state.start,
        disable=not acc.is_main_process,
        desc=state.method.name,
        unit="step",
        dynamic_ncols=True,
    )
    state.student.train()
    for step, micro_batches in zip(range(state.start + 1, state.end + 1), loader):
        tick = time.perf_counter()
        result = train_step(state, step, micro_batches)
        log_step(state, step, result, time.perf_counter() - tick)
        state.step = step
        progress.update(1)
        progress.set_postfix(
            ce=f"{result.ce:.4f}", dist=f"{result.dist:.4f}" if state.teacher else "-", lr=f"{result.lr:.2e}"
        )
        t = state.cfg.training
        if step % t.save_every == 0 or step == state.end:
            checkpoint(state, step)
        received = state.stop.agreed(acc)
        if received:
            progress.close()
            stop_on_signal(state, step, received)
    progress.close()
    if state.end > state.start and state.updates == 0:
        raise UserError(
            f"no optimizer update in steps {state.start + 1}..{state.end}: every example of every step was "
            "longer than data.max_student_len / max_teacher_len (dropped, never truncated; see run.json "
            "dropped_examples); the weights are untrained"
        )


def stop_on_signal(state: TrainState, step: int, received: str) -> None:
    """Write a checkpoint of `step` (unless just written) and end the run with the command to resume."""
    if state.last_saved != step:
        checkpoint(state, step)
    raise Interrupted(
        f"{received} after step {step}: checkpoint written to {state.run_dir / f'checkpoint-{step}'}; "
        f"resume with: {resume_command()} (launched as before, e.g. under "
        "accelerate launch)",
        state.stop.exit_status(),
        quiet=not state.accelerator.is_main_process,
    )


def resume_command() -> str:
    """This command line with --resume (and without --overwrite)."""
    command = [a for a in sys.argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["python", *command, "--resume"])


def agreed_failure(accelerator, failure: str | None) -> str | None:
    """This process's failure, or another's, or None when no process failed (a collective: every process
    calls it, so all stop at the same step)."""
    if accelerator.num_processes == 1:
        return failure
    flag = torch.tensor([1.0 if failure else 0.0], device=accelerator.device)
    if accelerator.reduce(flag, reduction="sum").item() == 0:
        return None
    return failure or "the teacher failed on another process"


def stop_on_teacher_failure(state: TrainState, step: int, failure: str) -> None:
    """The teacher could not give step `step`'s targets (a served teacher that stopped answering): write a
    checkpoint of the last finished step (if this launch made one that is not written yet) and stop, exit
    status 75 (EX_TEMPFAIL: try again later), with the command that resumes at `step`."""
    done = step - 1
    if done > state.start and state.last_saved != done:
        checkpoint(state, done)
    saved = (
        f"checkpoint of step {done} in {state.run_dir / f'checkpoint-{done}'}"
        if done > 0
        else "no step finished, nothing to resume"
    )
    raise Interrupted(
        f"step {step}: {failure}. Stopped before the step's update; {saved}; resume with: "
        f"{resume_command()} once the teacher answers again",
        75,
        quiet=not state.accelerator.is_main_process,
    )


@dataclass
class StepResult:
    sums: StepSums
    ce: float  # mean CE per answer token of the step
    dist: float  # mean distillation loss per answer token
    lr: float  # the learning rate the update used
    grad_norm: float  # before clipping
    source: str = "gold"  # whose answers the step trained on (rollout.source; mixed: drawn per step)
    rollout: Optional[dict] = None  # rollout metrics (summed over processes), for a sampled step
    distill_weight: float = 0.0  # λ (0 without a teacher)

    @property
    def total(self) -> float:
        """The step's loss: c·CE + λ·D (+ gold-answer CE with rollout.gold_ce); see step.py."""
        s, weight = self.sums, self.distill_weight
        gold = s.gold_ce_sum / s.gold_tokens if s.gold_tokens else 0.0
        return s.ce_weight * self.ce + weight * self.dist + gold


def train_step(state: TrainState, step: int, micro_batches) -> StepResult:
    """batch (→ rollouts) → (teacher targets → student losses → backward) per micro-batch → optimizer."""
    acc = state.accelerator
    source, rollout = "gold", None
    if state.rollouts is None:
        batches = StepData(micro_batches)
    else:
        batches, source, stats = state.rollouts.step_batches(
            step, micro_batches, acc.unwrap_model(state.student), state.teacher
        )
        if stats is not None:
            total = acc.reduce(stats.as_tensor(acc.device), reduction="sum")
            rollout = rollout_metrics(total, acc.num_processes)
    state.sources.append(source)
    state.rows_seen.append([r for mb in batches.micro_batches for r in mb.batch.rows.tolist() if r >= 0])
    if state.teacher is not None:  # before the step's first collective: a served teacher's targets
        failure = agreed_failure(acc, state.teacher.prepare_step(batches.micro_batches))
        if failure is not None:
            stop_on_teacher_failure(state, step, failure)
    sums = backward_step(state.cfg, acc, state.student, state.teacher, batches)
    if state.teacher is not None:
        state.teacher.end_step(acc)
    result = optimizer_step(state, step, sums)
    result.source, result.rollout = source, rollout
    result.distill_weight = state.cfg.distill.weight if state.teacher is not None else 0.0
    if state.rollouts is not None:
        state.rollouts.sync(acc.unwrap_model(state.student), step)
    state.updates += int(sums.answer_tokens > 0)
    dropped = [r for mb in batches.micro_batches for r in mb.dropped_rows]
    if dropped or sums.dropped:
        report_dropped(state.recorder, step, dropped, sums.dropped)
    return result


def optimizer_step(state: TrainState, step: int, sums: StepSums) -> StepResult:
    """Clip, check, update, advance the schedule. A step without answer tokens updates nothing (AdamW would
    still move the weights on zero gradients: momentum, weight decay); the schedule advances anyway."""
    t = state.cfg.training
    grad_norm = float(
        state.accelerator.clip_grad_norm_(
            state.params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        )
    )
    tokens = max(sums.answer_tokens, 1.0)
    ce, dist = sums.ce_sum / tokens, sums.dist_sum / tokens
    if not all(math.isfinite(v) for v in (ce, dist, grad_norm)):
        state.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(
            f"non-finite loss or gradient at step {step} (ce={ce}, dist={dist}, grad_norm={grad_norm}); "
            f"stopped before updating: the last good checkpoint in {state.run_dir} is intact"
        )
    lr = state.scheduler.get_last_lr()[0]
    if sums.answer_tokens > 0:
        state.optimizer.step()
    elif state.accelerator.is_main_process:
        tqdm.write(
            f"warning: step {step} has no answer tokens (all its examples were dropped): no update",
            file=sys.stderr,
        )
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, ce, dist, lr, grad_norm)


def log_step(state: TrainState, step: int, result: StepResult, seconds: float) -> None:
    """Record the step's metrics at log_every, at the first step of a launch and at its last."""
    if result.sums.answer_tokens <= 0:
        return
    if not (step % state.cfg.training.log_every == 0 or step == state.end or step == state.start + 1):
        return
    sums = result.sums
    values = {"train/ce_loss": result.ce}
    if state.teacher is not None:
        values["train/dist_loss"] = result.dist
        values["train/divergence"] = sums.divergence_sum / max(sums.answer_tokens, 1.0)
    if sums.gold_tokens:
        values["train/gold_ce_loss"] = sums.gold_ce_sum / sums.gold_tokens
    if state.rollouts is not None:
        values["train/on_policy"] = float(result.source == "student")
    values.update(
        {
            "train/total_loss": result.total,
            "train/lr": result.lr,
            "train/grad_norm": result.grad_norm,
            "train/tokens_per_s": result.sums.seq_tokens / max(seconds, 1e-9),
            "train/answer_tokens": result.sums.answer_tokens,
        }
    )
    if state.teacher is not None:
        values.update({f"train/{k}": v for k, v in state.teacher.metrics().items()})
    values.update(result.rollout or {})
    state.recorder.log(step, values)
    if state.rollouts is not None:
        state.recorder.log_samples(step, state.rollouts.last_samples)


def checkpoint(state: TrainState, step: int) -> None:
    state.last_saved = step
    save_checkpoint(
        state.accelerator,
        state.run_dir,
        step,
        state.cfg,
        state.checkpoint_meta,
        state.student,
        state.optimizer,
        state.scheduler,
        state.tokenizer,
    )
    if state.accelerator.is_main_process:
        prune_checkpoints(state.run_dir, state.cfg.training.keep_last)
        state.recorder.checkpoints_changed()


def report_dropped(recorder: RunRecorder, step: int, local_rows: list[int], total: int) -> None:
    """Count examples left out for length; warn once per run (main process), never silently."""
    first = not recorder.manifest["dropped_examples"]
    recorder.manifest["dropped_examples"].append({"step": step, "count": total, "rows_on_main": local_rows})
    if first and recorder.is_main:
        tqdm.write(
            f"warning: step {step}: {total} example(s) longer than data.max_student_len/max_teacher_len were "
            "dropped (never truncated); every drop is counted in run.json 'dropped_examples'",
            file=sys.stderr,
        )


def finish(state: TrainState, status: str) -> None:
    """run.json's final status, and what this process saw (rows per step, a digest of its weights).
    Best effort when the run failed writing (a full disk): the error that ended the run is the one shown."""
    state.recorder.close(status)
    acc = state.accelerator
    record = {
        "rank": acc.process_index,
        "world_size": acc.num_processes,
        "first_step": state.start + 1,
        "rows_by_step": state.rows_seen,
        "sources_by_step": state.sources,
        "trainable_parameters_sha256": parameter_digest(acc.unwrap_model(state.student)),
        **shard_record(acc.unwrap_model(state.student)),
    }
    try:
        write_json_atomic(state.run_dir / "ranks" / f"rank{acc.process_index}.json", record)
    except OSError as e:
        tqdm.write(f"warning: could not write {state.run_dir / 'ranks'}: {e}", file=sys.stderr)

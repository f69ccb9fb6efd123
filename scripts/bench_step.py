"""Time one training micro-batch (forward + backward) for SFT, distillation, and naive distillation.

What is measured
----------------
In ONE process, on the config's model, the student and the teacher are built exactly as training builds
them (`build_student_teacher`: LoRA by default, the teacher being the adapter switched off), and a fixed
set of micro-batches is taken from the real training stream (`build_training_batches`, steps 0, 1, ...
in training order; micro-batches whose examples were all dropped for length are skipped). Every variant
runs on the same micro-batches (built with the teacher's sequences, also for sft). One timed call on one
micro-batch is

    micro_batch_losses(...)  ->  ((ce_sum + distill.weight * dist_sum) / answer_tokens).backward()
    ->  zero_grad(set_to_none=True)                   [+ one AdamW step with --optimizer-step]

i.e. what the training loop does per micro-batch (no gradient clipping, no all-reduce, no scheduler), with
the batch already on the device. Without --optimizer-step NO optimizer step is timed. Variants:

  sft            CE only (teacher None): the SFT baseline's cost.
  distill        CE + the configured distillation loss with the live teacher, the project's own code:
                 hidden states are gathered at the answer positions and only those rows go through the
                 output head, so logits are (N, V) with N = answer tokens.
  distill_naive  The same loss computed the way the original did: the full-sequence logits of the teacher
                 and of the student from the model's normal forward, `model(input_ids, attention_mask)
                 .logits` of shape (B, T, V), then indexed at the answer positions. It lives only in this
                 script (a comparison baseline, not project code). Before anything is timed, its CE and
                 distillation sums AND the LoRA gradients are checked to equal the `distill` variant's
                 (allclose, eval mode so dropout cannot differ) on every micro-batch: the comparison is
                 apples to apples, else the script stops.

Calls are interleaved round-robin, one round = every variant once on the same micro-batch, and the order
is rotated every round (A B C, B C A, C A B, ...), so slow drift of the machine (other jobs, thermal
throttling, allocator state) and "who runs after whom" hit every variant alike. Rounds cycle through the
micro-batches. The first --warmup rounds are not timed.

Why ratios
----------
Absolute seconds depend on the machine and on what else runs on it (a shared CPU box can be 2x slower
from one minute to the next). Ratios of variants measured in the same process, interleaved, cancel most
of that. `ratios` are ratios of the per-variant medians; `paired_ratios` are the medians (and min/max)
of the per-round ratios (both variants on the same micro-batch, seconds apart), the more robust of the two
under contention. Report ratios; quote seconds only together with the device.

Memory
------
On CUDA: torch.cuda.max_memory_allocated over each timed call (absolute, and above what was allocated
before the call), max over the variant's calls. Everywhere: the size in bytes of the largest logits
tensor each variant materialises, from shapes: N x V x bytes (sft, distill) vs B x T x V x bytes
(distill_naive, T = the padded teacher length; its gradient on the student side has the student's shape).

Running it
----------
Tiny random model on CPU (offline copies of the tokenizer and GSM8K):

    HF_HUB_OFFLINE=1 python scripts/bench_step.py --config configs/tiny/online_v1.yaml \\
        model.tokenizer=../shared/tokenizers/qwen3 data.source=../shared/data/gsm8k \\
        --steps 5 --warmup 1 --threads 1 --output /tmp/step_ratio.json

(--threads 1 on a CPU shared with other jobs: two threads fighting other processes stall badly.)

A real-size model with random weights on a GPU, from an architecture folder that holds only config.json
(no weights are needed: model.init=random builds the shape with seeded random weights):

    python scripts/bench_step.py --config configs/online_v1.yaml \\
        model.name=../shared/models/qwen3-1.7b model.init=random \\
        model.tokenizer=../shared/tokenizers/qwen3 data.source=../shared/data/gsm8k \\
        --steps 20 --warmup 3 --output experiments/bench/qwen3_1.7b_h100.json

or with the architecture given inline (model.name=null needs model_type in it, and model.tokenizer):

    ARCH='{model_type: qwen3, vocab_size: 151936, hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 8, head_dim: 128, tie_word_embeddings: true, max_position_embeddings: 40960}'
    python scripts/bench_step.py --config configs/online_v1.yaml model.name=null model.init=random \\
        "model.architecture=$ARCH" model.tokenizer=../shared/tokenizers/qwen3 data.source=../shared/data/gsm8k

A Hub model with its pretrained weights: model.name=Qwen/Qwen3-1.7B model.init=pretrained. Training's
precision settings (model.dtype, training.mixed_precision -> torch.autocast, as accelerate does) apply.
fp16 runs without a GradScaler (the timing is the same). distill_naive needs memory for the (B, T, V)
logits; if it runs out of memory, the JSON is not written: lower training.per_device_batch_size or drop
the variant with --variants sft,distill (then no naive/optimized check is made).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from fsdistill.config import load_config, to_dict
from fsdistill.errors import UserError, exit_on_user_error

VARIANTS = ("sft", "distill", "distill_naive")
DEFAULT_OUTPUT = "experiments/bench/step_ratio.json"
RATIOS = (("distill", "sft"), ("distill_naive", "distill"), ("distill_naive", "sft"))


# ------------------------------------------------------------------------------------------------
# The naive baseline: full-sequence logits from the model's normal forward, then indexed
# ------------------------------------------------------------------------------------------------


def naive_micro_batch_losses(cfg, student, teacher, batch, autocast):
    """`micro_batch_losses` computed the original's way: (B, T, V) logits of both models, then indexed.

    Returns (MicroLosses, shapes) with shapes = {"student_logits": (B, S, V), "teacher_logits": (B, T, V)}.
    """
    import torch

    from fsdistill.models.student import eval_mode
    from fsdistill.training.alignment import answer_positions
    from fsdistill.training.core import MicroLosses, distillation_sum
    from fsdistill.training.losses import cross_entropy

    pos = answer_positions(batch)
    with autocast():
        full_student = student.model(
            input_ids=batch.student_ids, attention_mask=batch.student_mask, use_cache=False
        ).logits  # (B, S, V)
    student_logits = full_student[pos.batch_index, pos.student_positions]
    shapes = {"student_logits": tuple(full_student.shape)}
    mask = torch.ones(pos.count, dtype=torch.bool, device=student_logits.device)
    ce_sum, _ = cross_entropy(student_logits, pos.targets, mask)
    off = teacher.adapter_off() if teacher.adapter_off else nullcontext()
    with torch.no_grad(), off, eval_mode(teacher.answer_lm), autocast():
        full_teacher = teacher.answer_lm.model(
            input_ids=batch.teacher_ids, attention_mask=batch.teacher_mask, use_cache=False
        ).logits  # (B, T, V)
    shapes["teacher_logits"] = tuple(full_teacher.shape)
    teacher_logits = full_teacher[pos.batch_index, pos.teacher_positions]
    del full_teacher
    dist_sum = distillation_sum(cfg, student_logits, teacher_logits, mask)
    del teacher_logits
    return MicroLosses(ce_sum, dist_sum, pos.count), shapes


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config (may say 'inherit: BASE.yaml').")
    parser.add_argument("--base_config", help="A YAML config loaded before --config.")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="Config overrides, applied last."
    )
    parser.add_argument("--steps", type=int, default=10, help="Timed rounds (each runs every variant once).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds first.")
    parser.add_argument(
        "--micro-batches",
        type=int,
        default=4,
        help="Distinct micro-batches (real data, training order); rounds cycle through them.",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"Comma-separated subset of {','.join(VARIANTS)}."
    )
    parser.add_argument(
        "--optimizer-step",
        action="store_true",
        help="Also time one AdamW step (training.lr, weight_decay) per call; off: forward+backward+zero_grad.",
    )
    parser.add_argument("--device", default=None, help="torch device; default cuda if available, else cpu.")
    parser.add_argument(
        "--check-rtol",
        type=float,
        default=None,
        help="Relative tolerance of the distill_naive == distill loss check (gradients: 5x this); default "
        "1e-4 in float32, 2e-2 under bf16/fp16.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for this run (restored afterwards); default: torch's own. On a shared "
        "CPU, 1 avoids oversubscription stalls that swamp the measurement.",
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"JSON result file (default {DEFAULT_OUTPUT})."
    )
    args = parser.parse_intermixed_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants or len(set(variants)) != len(variants):
        parser.error(f"--variants: give distinct names from {VARIANTS}, got {args.variants!r}")
    if args.steps < 1 or args.warmup < 0 or args.micro_batches < 1 or (args.threads or 1) < 1:
        parser.error("--steps, --micro-batches and --threads must be >= 1, --warmup >= 0")
    if args.check_rtol is not None and not args.check_rtol > 0:
        parser.error("--check-rtol must be > 0")
    args.variants = variants
    return args


def make_autocast(mixed_precision: str, device):
    """What accelerate's autocast does for training.mixed_precision (no Accelerator singleton needed)."""
    import torch

    if mixed_precision == "no":
        return nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def fixed_micro_batches(batches, cfg, count: int):
    """The first `count` non-empty micro-batches of the training stream (one process), with their stats."""
    per_device, accum = cfg.training.per_device_batch_size, cfg.training.grad_accum_steps
    out, stats, tries = [], [], 0
    step = 0
    while len(out) < count:
        for m in range(accum):
            tries += 1
            mb = batches.micro_batch(step, m, 0, 1, per_device)
            b = mb.batch
            if b.num_answer_tokens == 0:
                continue
            out.append(b)
            stats.append(
                {
                    "step": step,
                    "micro": m,
                    "rows": [int(r) for r in b.rows.tolist()],
                    "examples": b.size,
                    "answer_tokens": b.num_answer_tokens,
                    "student_len": int(b.student_ids.shape[1]),
                    "teacher_len": int(b.teacher_ids.shape[1]),
                    "student_tokens": int(b.student_mask.sum()),
                    "teacher_tokens": int(b.teacher_mask.sum()),
                    "dropped_rows": list(mb.dropped_rows),
                }
            )
            if len(out) == count:
                break
        step += 1
        if tries > 50 * count and not out:
            raise UserError(
                "every example examined was dropped for length (data.max_student_len / max_teacher_len): "
                "raise the limits or lower fewshot.k"
            )
    return out, stats


def check_naive_matches(cfg, student, teacher, batches, autocast, params, rtol, grad_rtol, atol):
    """Optimized vs naive loss sums and gradients on every micro-batch, eval mode (no dropout).

    Losses: math.isclose(rel_tol=rtol, abs_tol=atol) on the CE and the distillation sums. Gradients of
    (ce + weight * dist) / answer_tokens w.r.t. the trainable parameters: max |g_naive - g| <= grad_rtol *
    max |g| (elementwise relative tests fail on entries that are ~0 up to summation-order noise). Only the
    optimized gradients are copied (one copy of the trainable parameters); the caller raises on failure.
    """
    import torch

    from fsdistill.training.core import micro_batch_losses

    def total(losses):
        return (losses.ce_sum + cfg.distill.weight * losses.dist_sum) / max(losses.tokens, 1)

    student.eval()
    records = []
    try:
        for i, batch in enumerate(batches):
            losses = micro_batch_losses(cfg, student, teacher, batch, autocast)
            total(losses).backward()
            ce_a, dist_a = losses.ce_sum.item(), losses.dist_sum.item()
            reference = [
                p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params
            ]
            for p in params:
                p.grad = None
            del losses
            losses, shapes = naive_micro_batch_losses(cfg, student, teacher, batch, autocast)
            total(losses).backward()
            ce_b, dist_b = losses.ce_sum.item(), losses.dist_sum.item()
            del losses
            grad_scale = grad_diff = 0.0
            for p, ref in zip(params, reference):
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                grad_scale = max(grad_scale, ref.float().abs().max().item())
                grad_diff = max(grad_diff, (g.float() - ref.float()).abs().max().item())
                p.grad = None
            del reference
            pairs = ((ce_a, ce_b), (dist_a, dist_b))
            ok_loss = all(math.isclose(a, b, rel_tol=rtol, abs_tol=atol) for a, b in pairs)
            ok_grad = grad_diff <= grad_rtol * grad_scale
            records.append(
                {
                    "micro_batch": i,
                    "ce_sum": [ce_a, ce_b],
                    "dist_sum": [dist_a, dist_b],
                    "loss_rel_diff": max(abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in pairs),
                    "grad_max_abs_diff_over_max_abs_grad": grad_diff / max(grad_scale, 1e-30),
                    "max_abs_grad": grad_scale,
                    "naive_logits_shapes": {k: list(v) for k, v in shapes.items()},
                    "allclose": bool(ok_loss and ok_grad),
                }
            )
    finally:
        student.train()
    return {
        "what": "distill vs distill_naive in eval mode: [optimized, naive] CE and distillation sums, and the "
        "gradients of the trainable parameters of (ce + weight * dist) / answer_tokens",
        "rtol_loss": rtol,
        "atol_loss": atol,
        "rtol_grad": grad_rtol,  # max |g_naive - g| <= rtol_grad * max |g|
        "max_loss_rel_diff": max(r["loss_rel_diff"] for r in records),
        "max_grad_rel_diff": max(r["grad_max_abs_diff_over_max_abs_grad"] for r in records),
        "allclose": all(r["allclose"] for r in records),
        "per_micro_batch": records,
    }


def logits_dtype(student, batch, autocast) -> dict:
    """dtype, bytes per element and V of the logits the student produces (under the training autocast)."""
    import torch

    idx = torch.zeros(1, dtype=torch.long, device=batch.student_ids.device)
    with torch.no_grad(), autocast():
        probe = student(batch.student_ids[:1, :2], batch.student_mask[:1, :2], idx, idx)
    return {
        "dtype": str(probe.dtype).replace("torch.", ""),
        "bytes": probe.element_size(),
        "vocab": int(probe.shape[-1]),
    }


def logits_bytes(stats, vocab: int, elem: int):
    """Largest logits tensor per variant and micro-batch, from shapes (bytes): N x V vs B x max(S, T) x V."""
    per = []
    for s in stats:
        n = s["answer_tokens"]
        naive = s["examples"] * max(s["student_len"], s["teacher_len"]) * vocab * elem
        per.append({"sft": n * vocab * elem, "distill": n * vocab * elem, "distill_naive": naive})
    return per


def summary(values):
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def device_description(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"


def config_summary(cfg, model) -> dict:
    from fsdistill.models.student import base_causal_lm

    base = base_causal_lm(model.model)
    mc = base.config
    return {
        "model.name": cfg.model.name,
        "model.init": cfg.model.init,
        "model_class": type(base).__name__,
        "model_type": getattr(mc, "model_type", None),
        "hidden_size": getattr(mc, "hidden_size", None),
        "num_hidden_layers": getattr(mc, "num_hidden_layers", None),
        "vocab_size": getattr(mc, "vocab_size", None),
        "parameters": sum(p.numel() for p in base.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model.dtype": cfg.model.dtype,
        "model.gradient_checkpointing": cfg.model.gradient_checkpointing,
        "model.attn_implementation": getattr(mc, "_attn_implementation", cfg.model.attn_implementation),
        "training.use_lora": cfg.training.use_lora,
        "lora.r": cfg.lora.r if cfg.training.use_lora else None,
        "training.mixed_precision": cfg.training.mixed_precision,
        "training.per_device_batch_size": cfg.training.per_device_batch_size,
        "fewshot.k": cfg.fewshot.k,
        "fewshot.selection": cfg.fewshot.selection,
        "distill.loss": cfg.distill.loss,
        "distill.top_k": cfg.distill.top_k,
        "distill.topk_support": cfg.distill.topk_support,
        "distill.weight": cfg.distill.weight,
        "data.max_student_len": cfg.data.max_student_len,
        "data.max_teacher_len": cfg.data.max_teacher_len,
    }


def print_table(result) -> None:
    v = result["variants"]
    cuda = result["device"]["type"] == "cuda"
    print(f"\n{result['device']['name']}  ({result['steps']} timed rounds, {result['timed']})")
    head = f"{'variant':<15}{'median s':>11}{'min s':>10}{'max s':>10}{'largest logits':>17}"
    print(head + (f"{'peak GPU MiB':>14}" if cuda else ""))
    for name, r in v.items():
        line = (
            f"{name:<15}{r['seconds']['median']:>11.4f}{r['seconds']['min']:>10.4f}{r['seconds']['max']:>10.4f}"
            f"{r['largest_logits_bytes'] / 2**20:>13.1f} MiB"
        )
        if cuda:
            line += f"{r['peak_memory_bytes'] / 2**20:>14.0f}"
        print(line)
    for key, value in result["ratios"].items():
        paired = result["paired_ratios"][key]
        print(
            f"{key:<24} {value:6.3f}x   (per-round median {paired['median']:.3f}, "
            f"min {paired['min']:.3f}, max {paired['max']:.3f})"
        )
    check = result.get("naive_check")
    if check:
        print(
            f"naive == optimized: {check['allclose']} (max loss rel diff {check['max_loss_rel_diff']:.2e}, "
            f"max grad rel diff {check['max_grad_rel_diff']:.2e})"
        )


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg, _source = load_config(args.config, args.base_config, args.overrides)
    if cfg.fewshot.k == 0 and any(v != "sft" for v in args.variants):
        print(
            "note: fewshot.k=0: the teacher sees the student's own sequence (zero-shot teacher)",
            file=sys.stderr,
        )

    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        # the global RNG is left as found (in-process callers, tests)
        with torch.random.fork_rng(devices=cuda_devices):
            return _run(args, cfg, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args, cfg, argv) -> dict:
    import torch
    import transformers
    from tqdm.auto import tqdm

    from fsdistill.data.batch import build_training_batches
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.models.student import build_student_teacher, check_answer_logits, eval_mode
    from fsdistill.training.checkpoint import git_commit
    from fsdistill.training.core import micro_batch_losses

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available")
    autocast = make_autocast(cfg.training.mixed_precision, device)
    with_teacher = any(v != "sft" for v in args.variants)

    print(f"bench_step: loading tokenizer, data and model on {device} ...", file=sys.stderr)
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    batches_src = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    cpu_batches, stats = fixed_micro_batches(batches_src, cfg, args.micro_batches)
    batches = [b.to(device) for b in cpu_batches]
    pair = build_student_teacher(cfg, with_teacher)
    student, teacher = pair.student, pair.teacher
    student.to(device)
    if teacher is not None and teacher.answer_lm is not student:
        teacher.answer_lm.to(device)
    with eval_mode(student):
        check_answer_logits(student, len(tokenizer), device)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.AdamW(params, lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
        if args.optimizer_step
        else None
    )

    # --- naive == optimized, before timing -------------------------------------------------------
    # float32 throughout: the two paths differ only in summation order. bf16/fp16: the output head's
    # matmul on (B*T, H) vs (N, H) rows may round differently (other kernels), which can also swap
    # near-tied top-k entries; the tolerance is wide but far below what a wrong position or loss gives.
    exact = cfg.model.dtype == "float32" and cfg.training.mixed_precision == "no"
    rtol = args.check_rtol if args.check_rtol is not None else (1e-4 if exact else 2e-2)
    grad_rtol, atol = 5 * rtol, (1e-6 if exact else 1e-3)
    check = None
    if "distill_naive" in args.variants:
        print(
            "bench_step: checking distill_naive against distill (losses and gradients) ...", file=sys.stderr
        )
        check = check_naive_matches(cfg, student, teacher, batches, autocast, params, rtol, grad_rtol, atol)
        if not check["allclose"]:
            raise RuntimeError(
                "distill_naive and distill disagree, the comparison would not be apples to apples:\n"
                + json.dumps(check["per_micro_batch"], indent=1)
            )
    with eval_mode(student):
        dtypes = logits_dtype(student, batches[0], autocast)

    # --- timing ----------------------------------------------------------------------------------
    def run_once(variant: str, batch) -> tuple[float, int, int]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        tick = time.perf_counter()
        if variant == "distill_naive":
            losses, _ = naive_micro_batch_losses(cfg, student, teacher, batch, autocast)
        else:
            losses = micro_batch_losses(cfg, student, None if variant == "sft" else teacher, batch, autocast)
        total = losses.ce_sum + cfg.distill.weight * losses.dist_sum if variant != "sft" else losses.ce_sum
        (total / max(losses.tokens, 1)).backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            for p in params:
                p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - tick
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            return elapsed, peak, peak - before
        return elapsed, 0, 0

    variants = list(args.variants)
    times = {v: [] for v in variants}
    peaks = {v: [0, 0] for v in variants}
    rounds = []
    student.train()
    total_rounds = args.warmup + args.steps
    for r in tqdm(
        range(total_rounds), desc="bench rounds", unit="round", file=sys.stderr, dynamic_ncols=True
    ):
        shift = r % len(variants)
        order = variants[shift:] + variants[:shift]
        mb = r % len(batches)
        row = {"round": r - args.warmup, "micro_batch": mb, "order": order, "seconds": {}}
        for v in order:
            seconds, peak, above = run_once(v, batches[mb])
            if r >= args.warmup:
                times[v].append(seconds)
                peaks[v] = [max(peaks[v][0], peak), max(peaks[v][1], above)]
                row["seconds"][v] = seconds
        if r >= args.warmup:
            rounds.append(row)

    # --- results ---------------------------------------------------------------------------------
    per_mb_logits = logits_bytes(stats, dtypes["vocab"], dtypes["bytes"])
    result_variants = {}
    for v in variants:
        result_variants[v] = {
            "seconds": summary(times[v]),
            "largest_logits_bytes": max(x[v] for x in per_mb_logits),
            "peak_memory_bytes": peaks[v][0] if device.type == "cuda" else None,
            "peak_memory_above_start_bytes": peaks[v][1] if device.type == "cuda" else None,
        }
    ratios, paired = {}, {}
    for a, b in RATIOS:
        if a in times and b in times:
            key = f"{a}/{b}"
            ratios[key] = result_variants[a]["seconds"]["median"] / result_variants[b]["seconds"]["median"]
            paired[key] = summary([row["seconds"][a] / row["seconds"][b] for row in rounds])
    result = {
        "what": "seconds per micro-batch: micro_batch_losses + backward + zero_grad"
        + (" + AdamW step" if optimizer is not None else " (no optimizer step)")
        + "; variants interleaved round-robin, order rotated each round",
        "timed": "forward+backward+zero_grad" + ("+AdamW step" if optimizer is not None else ""),
        "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        "steps": args.steps,
        "warmup": args.warmup,
        "ratios": ratios,
        "paired_ratios": paired,
        "variants": result_variants,
        "naive_check": check,
        "logits": {
            **dtypes,
            "how": "largest logits tensor per variant from shapes: sft/distill N x V, distill_naive "
            "B x max(S, T) x V (x bytes of the logits dtype)",
            "per_micro_batch": per_mb_logits,
        },
        "micro_batches": stats,
        "rounds": rounds,
        "device": {
            "type": device.type,
            "name": device_description(device),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": _version("peft"),
            "cuda": torch.version.cuda,
        },
        "git_commit": git_commit(),
        "config_summary": config_summary(cfg, student),
        "config": to_dict(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    bad = [k for k, x in ratios.items() if not (math.isfinite(x) and x > 0)]
    if bad:
        raise RuntimeError(f"non-finite or non-positive ratios {bad}: {ratios}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print_table(result)
    print(f"wrote {out}")
    return result


def _version(module: str):
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - informational only
        return None


if __name__ == "__main__":
    main()

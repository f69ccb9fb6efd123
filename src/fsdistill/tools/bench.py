"""Time one distillation micro-batch (forward + backward) five ways, against SFT and the original's step.

Variants, in one process, on the same model and the same micro-batches of real GSM8K:

  (a) sft            CE only: the SFT baseline's step.
  (b) original       the original's algorithm (training/reference.py): the teacher's forward over the whole
                     k-shot sequence and the student's over its own, full-vocabulary logits at every
                     position, then indexed at the answer positions.
  (c) first_visit    our step when the example is seen for the first time: the live teacher (answer
                     positions only, top-K per chunk, run before the student), its targets stored in an
                     in-memory teacher cache (emptied before every call, so every call is a first visit).
  (d) cache_warm     our step on a later visit: the targets come from the cache, no teacher forward.
  (e) shared_prefix  our step with `fixed` shots: the same rows and students, the teacher's exemplar prefix
                     computed once (the teacher is frozen) and reused; only question + answer tokens run.

One timed call = micro_batch_losses (or the reference) -> ((ce + weight * dist) / answer tokens).backward()
-> drop the gradients; no optimizer step (it is the same for every variant). Calls are interleaved round
by round with the order rotated each round, so machine drift hits every variant alike; ratios of medians
are reported, and per-round paired ratios. The first --warmup rounds are untimed; the first of them runs
each variant under a memory profiler (CUDA: max allocated; CPU: the peak of torch.profiler's allocation
events), and fills the warm cache and the stored prefix.

Before timing, one micro-batch is checked in eval mode without gradients: (b), (c) and (d) must give the
same CE and distillation sums (float32: rel 1e-4; bf16: 2e-2, the output head runs on other row counts).

Beside each measured ratio, the ratio a FLOP count predicts for the same shapes (`predicted_ratios`: how far
each variant is from its floor). Per micro-batch of B rows padded to width W, for a forward pass:
  body       2 x (non-embedding parameters) x B x W          every matrix of every layer, every position
  attention  2 x layers x (nh x hd) x B x W^2                 causal q.k scores and the weighted values
                                                              (half of each W x W product); a suffix of S
                                                              tokens over a cached prefix of P: W^2 becomes
                                                              2 x S x P + S^2
  head       2 x V x H x (positions it runs at)               the answer positions (ours, the teacher's
                                                              top-K), every position of both sequences (b)
The backward pass costs 1x the student's forward under LoRA (input gradients only: the weights are frozen)
and 2x under full fine-tuning (input and weight gradients); the teacher runs forward only. So
  (a) sft = (1 + backward) x student(head at the N answer positions);   (d) cache_warm = (a)
  (b) original = teacher(B x W_teacher, head everywhere) + (1 + backward) x student(head everywhere)
  (c) first_visit = teacher(B x W_teacher, head at N) + (a)
  (e) shared_prefix = teacher(suffix only, attending to the prefix, head at N) + (a)
Shapes are the padded tensors the kernels run on (`micro_batches` in the JSON: rows, widths, answer tokens,
the fixed-shot teacher's width and shared prefix); FLOPs are averaged over the micro-batches. Left out:
the adapters (2 x r x (d_in + d_out) per adapted matrix and token, ~1-2% at r 16), norms, softmax, top-K,
the losses' elementwise work, the optimizer.

Also reported: the amortised cost over the reference schedule (1,000 steps x 32 examples over the training
rows: first-visit share f = unique examples / examples seen; amortised = f x (c) + (1 - f) x (d)), student
tokens per second, and on CUDA the SFT step's model FLOPs utilisation.

Presets:
  --preset cpu   configs/bench/cpu.yaml: SmolLM2-135M-Instruct (run scripts/prepare_smollm2.py once),
                 LoRA, bf16, per-device batch 2, 8 shots. ~5 minutes on 2 cores.
  --preset gpu   configs/bench/gpu.yaml: the Qwen3-1.7B shape with random weights, bf16, per-device batch 4,
                 8 shots (model.name from ../shared/models/qwen3-1.7b when present).
Both read GSM8K and the Qwen3 tokenizer from ../shared beside the repo (or $FSDISTILL_SHARED) when present
(offline), else the Hub.
Any config works with --config; overrides (key=value) apply last.

    python scripts/bench_step.py --preset cpu          # -> experiments/bench/step_cpu.json
    fsdistill-bench-step --preset cpu                 # the same, installed as a command (from a checkout)
    python scripts/bench_step.py --on_policy --preset cpu   # the on-policy step (fsdistill.tools.bench_on_policy)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fsdistill.config import load_config, to_dict
from fsdistill.errors import UserError, exit_on_user_error

# A developer command, run from a checkout (pip install -e .): its configs/ and the ../shared beside it,
# or the folder FSDISTILL_SHARED names (a machine where the data travels inside the checkout: the GPU check).
REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("FSDISTILL_SHARED") or REPO.parent / "shared")
VARIANTS = ("sft", "original", "first_visit", "cache_warm", "shared_prefix")
LABELS = dict(zip(VARIANTS, "abcde"))
PRESETS = {
    "cpu": {
        "config": "configs/bench/cpu.yaml",
        "local": {"data.source": SHARED / "data" / "gsm8k"},
    },
    "gpu": {
        "config": "configs/bench/gpu.yaml",
        "local": {
            "model.name": SHARED / "models" / "qwen3-1.7b",
            "model.tokenizer": SHARED / "tokenizers" / "qwen3",
            "data.source": SHARED / "data" / "gsm8k",
        },
    },
}
# Dense bf16 peak of the GPUs we know (for MFU); others: pass --peak-tflops.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# ------------------------------------------------------------------------------------------------
# Arguments and set-up
# ------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="A shipped benchmark setting.")
    source.add_argument("--config", help="Any training config (YAML).")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="Config overrides, applied last."
    )
    parser.add_argument("--steps", type=int, default=3, help="Timed rounds (each runs every variant once).")
    parser.add_argument(
        "--warmup", type=int, default=1, help="Untimed rounds first (the first one profiles memory)."
    )
    parser.add_argument(
        "--micro-batches", type=int, default=2, help="Distinct micro-batches; rounds cycle through them."
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"Comma-separated subset of {','.join(VARIANTS)}."
    )
    parser.add_argument(
        "--schedule-steps", type=int, default=1000, help="Reference schedule: optimizer steps."
    )
    parser.add_argument("--schedule-batch", type=int, default=32, help="Reference schedule: global batch.")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="GPU peak for MFU (default: by name)."
    )
    parser.add_argument("--device", default=None, help="torch device; default cuda if available, else cpu.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this run.")
    parser.add_argument(
        "--output", default=None, help="JSON file (default experiments/bench/step_<preset>.json)."
    )
    args = parser.parse_intermixed_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or len(set(variants)) != len(variants) or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: distinct names from {VARIANTS}, got {args.variants!r}")
    if "sft" not in variants:
        parser.error("--variants must include sft (every ratio is to it)")
    if args.steps < 1 or args.warmup < 1 or args.micro_batches < 1:
        parser.error("--steps, --warmup and --micro-batches must be >= 1 (warm-up fills the caches)")
    args.variants = variants
    if args.output is None:
        args.output = f"experiments/bench/step_{args.preset or 'config'}.json"
    return args


def preset_overrides(preset: str | None) -> list[str]:
    """Local copies beside the repo when they exist (offline machines), else the config's Hub ids."""
    if preset is None:
        return []
    return [f"{key}={path}" for key, path in PRESETS[preset]["local"].items() if path.exists()]


def same_rows_with_fixed_shots(cfg, tokenizer, batch):
    """The micro-batch `batch` (its rows, in order) re-encoded with the run's `fixed` exemplar set."""
    from fsdistill.data.batch import build_training_batches, collate

    fixed = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    prompts, shots = fixed.prompts, fixed.shots.shots(0, 0, [])
    examples = [fixed.shots.by_row.get(r) for r in batch.rows.tolist()]
    if any(e is None for e in examples):
        raise UserError("a benchmark row is not in the fixed-shot pool; pick other --micro-batches")
    return collate([prompts.encode_pair(e, shots) for e in examples], tokenizer.pad_token_id)


def first_micro_batches(batches, cfg, count: int):
    """The first `count` micro-batches of the training stream with answer tokens, and their sizes."""
    out, step = [], 0
    per_device, accum = cfg.training.per_device_batch_size, cfg.training.grad_accum_steps
    while len(out) < count:
        for m in range(accum):
            b = batches.micro_batch(step, m, 0, 1, per_device).batch
            if b.num_answer_tokens and len(out) < count:
                out.append(b)
        step += 1
        if step > 100 * count and not out:
            raise UserError("every example examined was dropped for length: raise data.max_*_len")
    return out


def batch_stats(batch) -> dict:
    return {
        "rows": batch.rows.tolist(),
        "answer_tokens": batch.num_answer_tokens,
        "student_tokens": int(batch.student_mask.sum()),
        "teacher_tokens": int(batch.teacher_mask.sum()),
        "student_width": int(batch.student_ids.shape[1]),
        "teacher_width": int(batch.teacher_ids.shape[1]),
        "student_lengths": batch.student_mask.sum(dim=1).tolist(),
    }


def shared_prefix_tokens(cfg, batch) -> int:
    """The exemplar prefix the shared_prefix variant reuses for this (fixed-shot) micro-batch: its rows'
    common leading tokens, stopping before the first predicting position (as the live teacher plans it),
    0 when shorter than teacher.prefix_min_tokens (then the plain forward runs)."""
    from fsdistill.modeling.prefix import shared_prefix_length

    limit = int(batch.teacher_answer_start.min()) - 1
    length = shared_prefix_length(batch.teacher_ids, batch.teacher_mask, limit)
    return length if length >= cfg.teacher.prefix_min_tokens else 0


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


def peak_bytes(fn, device) -> tuple[int, str]:
    """Peak memory allocated while fn() runs, above what was allocated before it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(
            device
        ) - before, "torch.cuda.max_memory_allocated - allocated before"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak, "torch.profiler CPU allocation events: peak of the running sum of allocations and frees"


def environment_record(device, cfg) -> dict:
    """What a benchmark's JSON records about where and with what it ran: the device, versions, the git
    commit, the config and the time."""
    import torch
    import transformers

    from fsdistill.files import git_state

    return {
        "device": {
            "type": device.type,
            "name": device_description(device),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "git_commit": git_state()["commit"],
        "config": to_dict(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


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


@dataclass(frozen=True)
class FlopShape:
    """What the FLOP model reads of a causal LM (element counts)."""

    layers: int
    attention_width: int  # nh x hd: the width of the q.k products and of the values
    hidden: int  # H, the output head's input
    vocab: int  # V
    body_parameters: int  # decoder layers + final norm (no embedding, no head)
    lora: bool  # backward = 1x forward (frozen weights) instead of 2x

    @classmethod
    def of(cls, student) -> FlopShape:
        from fsdistill.modeling.answer_lm import base_causal_lm

        lm = base_causal_lm(student.model)
        c = lm.config
        head = lm.get_output_embeddings().weight.numel()
        embed = lm.get_input_embeddings().weight.numel()
        base = sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n)  # without adapters
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(
            layers=c.num_hidden_layers,
            attention_width=c.num_attention_heads * head_dim,
            hidden=c.hidden_size,
            vocab=lm.get_output_embeddings().weight.shape[0],
            body_parameters=base - embed - (0 if c.tie_word_embeddings else head),
            lora=any(not p.requires_grad for p in student.parameters()),
        )


def forward_flops(shape: FlopShape, tokens: int, head_positions: int, attention_pairs: int) -> float:
    """FLOPs of one forward pass: tokens through the body, head_positions through the output head, and
    attention_pairs = the sum over sequences of W^2 (causal, full sequence of W tokens) or of
    2 x S x P + S^2 (S suffix tokens attending to a cached prefix of P and causally to themselves)."""
    body = 2 * shape.body_parameters * tokens
    attention = 2 * shape.layers * shape.attention_width * attention_pairs
    head = 2 * shape.vocab * shape.hidden * head_positions
    return float(body + attention + head)


def variant_flops(shape: FlopShape, s: dict) -> dict[str, float]:
    """Predicted FLOPs of one call of each variant on micro-batch `s` (a `micro_batches` entry)."""
    rows = len(s["rows"])
    backward = 1 if shape.lora else 2
    ws, wt, n = s["student_width"], s["teacher_width"], s["answer_tokens"]

    def student(head_positions: int) -> float:
        return (1 + backward) * forward_flops(shape, rows * ws, head_positions, rows * ws**2)

    sft = student(n)
    teacher_full = forward_flops(shape, rows * wt, rows * wt, rows * wt**2)
    teacher = forward_flops(shape, rows * wt, n, rows * wt**2)
    out = {
        "sft": sft,
        "original": teacher_full + student(rows * ws),
        "first_visit": teacher + sft,
        "cache_warm": sft,
    }
    if "shared_prefix_tokens" in s:
        p = s["shared_prefix_tokens"]
        suffix = s["fixed_shot_teacher_width"] - p
        out["shared_prefix"] = (
            forward_flops(shape, rows * suffix, n, rows * (2 * suffix * p + suffix**2)) + sft
        )
    return out


def predicted_ratios(shape: FlopShape, stats: list[dict], keys) -> dict:
    """{"flops": mean FLOPs per variant over the micro-batches, "ratios": {key: ratio}} for the measured
    ratio keys ("first_visit/original", ...) whose variants the model covers."""
    per = [variant_flops(shape, s) for s in stats]
    mean = {v: sum(f[v] for f in per) / len(per) for v in per[0]}
    ratios = {}
    for key in keys:
        a, b = key.split("/")
        if a in mean and b in mean:
            ratios[key] = mean[a] / mean[b]
    return {"flops": mean, "ratios": ratios}


def sft_model_flops(shape: FlopShape, stats: list[dict]) -> float:
    """Model FLOPs of one SFT call for MFU, averaged over the micro-batches: the FLOP model above on the
    real tokens (not the padding): every student token through the body, the answer tokens through the
    head, attention over each sequence's own length, backward 1x (LoRA) or 2x (full) the forward."""
    backward = 1 if shape.lora else 2
    per = [
        (1 + backward)
        * forward_flops(
            shape, s["student_tokens"], s["answer_tokens"], sum(n * n for n in s["student_lengths"])
        )
        for s in stats
    ]
    return sum(per) / len(per)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    config = str(REPO / PRESETS[args.preset]["config"]) if args.preset else args.config
    overrides = [*preset_overrides(args.preset), *args.overrides, "teacher.cache=off"]
    cfg, _ = load_config(config, overrides=overrides)
    if cfg.fewshot.selection != "per_example" or cfg.fewshot.k == 0:
        raise UserError(
            "bench_step times per_example k-shot teachers (variant e switches to fixed shots itself)"
        )
    fixed_cfg, _ = load_config(config, overrides=[*overrides, "fewshot.selection=fixed"])

    return isolated(args.threads, _run, args, cfg, fixed_cfg, argv)


def isolated(threads: int | None, fn, *fn_args):
    """fn(*fn_args) with torch's thread count set to `threads` (when given) and the global RNG and thread
    count left as found (the benchmarks run in-process in the tests)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            return fn(*fn_args)
    finally:
        torch.set_num_threads(before)


def _run(args, cfg, fixed_cfg, argv) -> dict:
    import torch
    from tqdm.auto import tqdm

    from fsdistill.data.batch import build_training_batches
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.teacher import make_live_teacher, make_teacher
    from fsdistill.distill.teacher_cache import CachedTeacher, MemoryStore
    from fsdistill.files import write_json_atomic
    from fsdistill.modeling.answer_lm import check_answer_logits, eval_mode
    from fsdistill.modeling.loading import load_student, make_autocast
    from fsdistill.train.reference import reference_micro_batch_losses
    from fsdistill.train.step import micro_batch_losses

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = make_autocast(cfg.training.mixed_precision, device)
    print(f"bench_step: tokenizer, data and model on {device} ...", file=sys.stderr)
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    stream = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    cpu_batches = first_micro_batches(stream, cfg, args.micro_batches)
    batches = [b.to(device) for b in cpu_batches]
    fixed_batches = [same_rows_with_fixed_shots(fixed_cfg, tokenizer, b).to(device) for b in cpu_batches]
    stats = [batch_stats(b) for b in cpu_batches]
    for s, fb in zip(stats, fixed_batches):
        s["fixed_shot_teacher_tokens"] = int(fb.teacher_mask.sum())
        s["fixed_shot_teacher_width"] = int(fb.teacher_ids.shape[1])
        s["shared_prefix_tokens"] = shared_prefix_tokens(fixed_cfg, fb)

    student = load_student(cfg)
    student.to(device)
    live = make_teacher(cfg, student)  # teacher.cache=off: a LiveTeacher
    with eval_mode(student):
        check_answer_logits(student, len(tokenizer), device)
    cold = CachedTeacher(live, MemoryStore())
    warm = CachedTeacher(live, MemoryStore())
    prefix_teacher = make_live_teacher(fixed_cfg, live.answer_lm, live.adapter_off)
    if prefix_teacher.prefix is None:
        raise UserError(
            "this model does not support prefix reuse (sliding-window layers): drop shared_prefix"
        )
    prefix_teacher.self_check(len(tokenizer), device)
    params = [p for p in student.parameters() if p.requires_grad]

    def losses(variant: str, i: int):
        if variant == "sft":
            return micro_batch_losses(cfg, student, None, batches[i], autocast)
        if variant == "original":
            return reference_micro_batch_losses(cfg, student, live, batches[i], autocast)[0]
        if variant == "first_visit":
            cold.store.entries.clear()
            return micro_batch_losses(cfg, student, cold, batches[i], autocast)
        if variant == "cache_warm":
            return micro_batch_losses(cfg, student, warm, batches[i], autocast)
        return micro_batch_losses(fixed_cfg, student, prefix_teacher, fixed_batches[i], autocast)

    def step(variant: str, i: int) -> None:
        out = losses(variant, i)
        ((out.ce_sum + cfg.distill.weight * out.dist_sum) / max(out.tokens, 1)).backward()
        for p in params:
            p.grad = None

    # --- (b) == (c) == (d) on one micro-batch, eval mode, no gradients ----------------------------
    exact = cfg.model.dtype == "float32" and cfg.training.mixed_precision == "no"
    rtol = 1e-4 if exact else 2e-2
    print("bench_step: checking original == first_visit == cache_warm ...", file=sys.stderr)
    check = {"rtol": rtol, "micro_batch": 0, "sums": {}}
    with eval_mode(student), torch.no_grad():
        for v in [v for v in ("original", "first_visit", "cache_warm") if v in args.variants]:
            out = losses(v, 0)
            check["sums"][v] = {"ce_sum": out.ce_sum.item(), "dist_sum": out.dist_sum.item()}
            warm.store.entries.update(cold.store.entries)  # cache_warm reads what first_visit stored
    # Every micro-batch's targets in the warm cache before any round (micro-batch 0's from the check).
    with eval_mode(student), torch.no_grad(), autocast():
        for b in batches:
            warm.targets(b, answer_positions(b))
    fills = warm.misses
    values = list(check["sums"].values())
    check["allclose"] = all(
        math.isclose(a[k], values[0][k], rel_tol=rtol, abs_tol=1e-6)
        for a in values
        for k in ("ce_sum", "dist_sum")
    )
    if not check["allclose"]:
        raise RuntimeError(f"the variants disagree, the comparison would not be apples to apples: {check}")

    # --- rounds ------------------------------------------------------------------------------------
    variants = list(args.variants)
    times = {v: [] for v in variants}
    memory, rounds = {}, []
    student.train()
    for r in tqdm(range(args.warmup + args.steps), desc="bench rounds", unit="round", file=sys.stderr):
        shift = r % len(variants)
        order = variants[shift:] + variants[:shift]
        i = r % len(batches)
        row = {"round": r - args.warmup, "micro_batch": i, "order": order, "seconds": {}}
        for v in order:
            if r == 0:
                memory[v], how = peak_bytes(lambda v=v, i=i: step(v, i), device)
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tick = time.perf_counter()
            step(v, i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= args.warmup:
                times[v].append(time.perf_counter() - tick)
                row["seconds"][v] = times[v][-1]
        if r >= args.warmup:
            rounds.append(row)
    if warm.misses != fills:
        raise RuntimeError("the warm cache missed during the rounds: its timing would include the teacher")

    # --- results -------------------------------------------------------------------------------------
    med = {v: statistics.median(times[v]) for v in variants}
    ratios = {f"{v}/sft": med[v] / med["sft"] for v in variants if v != "sft"}
    if "original" in variants:
        ratios.update(
            {f"{v}/original": med[v] / med["original"] for v in variants if v not in ("sft", "original")}
        )
    paired = {}
    for key in ratios:
        a, b = key.split("/")
        paired[key] = summary([row["seconds"][a] / row["seconds"][b] for row in rounds])
    unique = len(stream.order.rows)
    seen = args.schedule_steps * args.schedule_batch
    first_share = min(1.0, unique / seen)
    amortised = None
    if {"first_visit", "cache_warm"} <= set(variants):
        seconds = first_share * med["first_visit"] + (1 - first_share) * med["cache_warm"]
        amortised = {
            "schedule": f"{args.schedule_steps} steps x {args.schedule_batch} examples over {unique} training rows",
            "first_visit_share": first_share,
            "seconds": seconds,
            "ratio_to_sft": seconds / med["sft"],
            "ratio_to_original": seconds / med["original"] if "original" in variants else None,
        }
    student_tokens = statistics.mean(s["student_tokens"] for s in stats)
    result_variants = {
        v: {
            "label": LABELS[v],
            "seconds": summary(times[v]),
            "peak_memory_bytes": memory[v],
            "student_tokens_per_s": student_tokens / med[v],
        }
        for v in variants
    }
    flop_shape = FlopShape.of(student)
    predicted = predicted_ratios(flop_shape, stats, ratios)
    if amortised is not None:
        f = predicted["flops"]
        flops = first_share * f["first_visit"] + (1 - first_share) * f["cache_warm"]
        amortised["predicted_ratio_to_sft"] = flops / f["sft"]
        amortised["predicted_ratio_to_original"] = flops / f["original"]
    mfu = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or next((t for k, t in PEAK_TFLOPS.items() if k in name), None)
        flops = sft_model_flops(flop_shape, stats)
        mfu = {
            "sft_model_flops_per_call": flops,
            "peak_tflops": peak,
            "sft_mfu": flops / med["sft"] / (peak * 1e12) if peak else None,
        }
    peaks = {v: memory[v] for v in variants}
    result = {
        "what": "seconds per micro-batch (forward + backward, no optimizer step); variants interleaved, order "
        "rotated each round; ratios of medians",
        "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        "preset": args.preset,
        "steps": args.steps,
        "warmup": args.warmup,
        "ratios": ratios,
        "predicted_ratios": predicted["ratios"],
        "paired_ratios": paired,
        "amortised": amortised,
        "memory": {
            "how": how,
            "peak_bytes": peaks,
            "first_visit/sft": peaks["first_visit"] / peaks["sft"] if "first_visit" in peaks else None,
            "original/sft": peaks["original"] / peaks["sft"] if "original" in peaks else None,
        },
        "mfu": mfu,
        "flops": {
            "what": "FLOPs per call predicted from the shapes (module docstring), mean over the micro-batches",
            "shape": asdict(flop_shape),
            "per_variant": predicted["flops"],
        },
        "variants": result_variants,
        "check": check,
        "prefix": {"computed": prefix_teacher.prefix.computed, "reused": prefix_teacher.prefix.reused},
        "micro_batches": stats,
        "rounds": rounds,
        **environment_record(device, cfg),
    }
    out = Path(args.output)
    write_json_atomic(out, result)
    print_table(result)
    print(f"wrote {out}")
    return result


def print_table(result) -> None:
    print(f"\n{result['device']['name']}  ({result['steps']} timed rounds)")
    print(f"{'variant':<18}{'median s':>10}{'min s':>9}{'max s':>9}{'peak MiB':>10}{'student tok/s':>15}")
    for name, r in result["variants"].items():
        s = r["seconds"]
        print(
            f"({r['label']}) {name:<14}{s['median']:>10.3f}{s['min']:>9.3f}{s['max']:>9.3f}"
            f"{r['peak_memory_bytes'] / 2**20:>10.0f}{r['student_tokens_per_s']:>15.0f}"
        )
    print(f"\n{'ratio':<26}{'measured':>9}{'FLOPs':>8}   per round (median, min, max)")
    for key, value in result["ratios"].items():
        p = result["paired_ratios"][key]
        predicted = result["predicted_ratios"].get(key)
        floor = f"{predicted:8.3f}" if predicted is not None else f"{'-':>8}"
        print(f"{key:<26}{value:9.3f}{floor}   {p['median']:.3f}, {p['min']:.3f}, {p['max']:.3f}")
    a = result["amortised"]
    if a:
        print(
            f"amortised over {a['schedule']}: first-visit share {a['first_visit_share']:.3f}, "
            f"{a['ratio_to_sft']:.3f}x sft (FLOPs {a['predicted_ratio_to_sft']:.3f}), "
            f"{a['ratio_to_original'] or float('nan'):.3f}x original "
            f"(FLOPs {a['predicted_ratio_to_original']:.3f})"
        )
    m = result["memory"]
    if m["first_visit/sft"] is not None:
        print(
            f"peak memory: first_visit/sft {m['first_visit/sft']:.3f}, original/sft {m['original/sft'] or float('nan'):.3f}"
        )


def bench_markdown(result: dict) -> str:
    """The step benchmark's JSON as Markdown (compute.md's tables are rendered from it, never typed in)."""
    lines = ["| variant | median s | peak MiB | student tokens/s |", "| --- | --- | --- | --- |"]
    for name, r in result["variants"].items():
        lines.append(
            f"| ({r['label']}) {name} | {r['seconds']['median']:.2f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
            f"{r['student_tokens_per_s']:.0f} |"
        )
    lines += [
        "",
        "| ratio | measured (ratio of medians) | per-round paired median [min, max] | predicted by FLOPs |",
        "| --- | --- | --- | --- |",
    ]
    for key, value in result["ratios"].items():
        p, predicted = result["paired_ratios"][key], result["predicted_ratios"].get(key)
        floor = f"{predicted:.3f}" if predicted is not None else "—"
        lines.append(
            f"| {key} | {value:.3f} | {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] | {floor} |"
        )
    a = result["amortised"]
    if a:
        lines.append(
            f"| amortised / sft (first-visit share {a['first_visit_share']:.3f}) | {a['ratio_to_sft']:.3f} | — | "
            f"{a['predicted_ratio_to_sft']:.3f} |"
        )
        if a["ratio_to_original"] is not None:
            lines.append(
                f"| amortised / original | {a['ratio_to_original']:.3f} | — | {a['predicted_ratio_to_original']:.3f} |"
            )
    m = result["memory"]
    for key in ("first_visit/sft", "original/sft"):
        if m[key] is not None:
            lines.append(f"| peak memory {key} | {m[key]:.3f} | — | — |")
    return "\n".join(lines) + "\n"


def repeats_markdown(results: list[dict]) -> str:
    """Repeated runs of one benchmark (step or on-policy JSON) as one table: each ratio's median and range
    over the runs, beside its FLOP prediction (the same in every run: the shapes do not change)."""
    runs = []
    for r in results:
        if "predicted_ratios" in r:  # the step benchmark
            ratios = {k: (v, r["predicted_ratios"].get(k)) for k, v in r["ratios"].items()}
            if r["amortised"]:
                a = r["amortised"]
                ratios["amortised/sft"] = (a["ratio_to_sft"], a["predicted_ratio_to_sft"])
                if a["ratio_to_original"] is not None:
                    ratios["amortised/original"] = (a["ratio_to_original"], a["predicted_ratio_to_original"])
        else:  # the on-policy benchmark
            ratios = {k: (v["measured"], v["predicted_by_flops"]) for k, v in r["ratios"].items()}
        runs.append(ratios)
    lines = [
        f"| ratio | median of {len(runs)} runs [min, max] | each run | predicted by FLOPs |",
        "| --- | --- | --- | --- |",
    ]
    for key in runs[0]:
        values = [run[key][0] for run in runs]
        predicted = runs[0][key][1]
        floor = f"{predicted:.3f}" if predicted is not None else "—"
        each = ", ".join(f"{v:.3f}" for v in values)
        lines.append(
            f"| {key} | {statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}] | {each} | {floor} |"
        )
    return "\n".join(lines) + "\n"

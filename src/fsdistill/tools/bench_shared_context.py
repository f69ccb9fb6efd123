"""Time teacher scoring over a long shared context (scripts/bench_step.py --shared_context): its prefix's
keys/values reused against the whole context re-encoded at every call (what OPCD and TRL's trainers do).

The teacher sees a ~2,000-token shared context (teacher.context_files: one file, placed in its system turn)
and no exemplars; the student sees the bare question. On one model and the same micro-batches of real
GSM8K rows with their gold answers, in one process:

  prefix     this repository: the context's keys/values computed once for the run (the teacher is frozen)
             and reused; only each row's question + answer run per call (teacher.prefix_cache, the default);
  reencode   the same teacher with teacher.prefix_cache=false: the whole context at every call.

One timed call = the teacher's targets (top-K at every answer token) for --micro-batches micro-batches.
Calls are interleaved round by round, order alternated; ratios of medians and per-round paired ratios,
beside the ratio a FLOP count predicts for the same padded shapes (fsdistill/tools/bench.py's count:
body, causal attention, a suffix of S tokens over a cached prefix of P costing 2SP + S^2 attention pairs,
the head at the answer positions). The prefix's one-time cost (computed in the first, untimed round) is
reported apart. Before timing both must give the same distillation sum (bf16: within 2%).

With --profile (CPU), one more call of each variant after the timed rounds runs under torch.profiler and
its operators' own time is split into parts (the attention kernel, matrix products, top-K, copies, the rest),
beside each part's FLOP ratio: where the time above the FLOP prediction goes. The attention part has two FLOP
ratios: counted as above (causal pairs only) and as the kernel runs it: with a padding mask the CPU kernel
computes every block of the W x W square (and of the S x (P + S) block over the prefix), masked or not.

The context: the first 2,000 tokens (the model's tokenizer) of the original work's README, read from
../shared/reference (or $FSDISTILL_SHARED), written to a temporary file for the run; its sha256 is recorded.

    python scripts/bench_step.py --shared_context --preset cpu   # -> experiments/bench/shared_context_cpu.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fsdistill.config import load_config
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import sha256_file
from fsdistill.tools.bench import (
    PRESETS,
    REPO,
    SHARED,
    FlopShape,
    environment_record,
    first_micro_batches,
    forward_flops,
    isolated,
    preset_overrides,
    summary,
)

VARIANTS = ("prefix", "reencode")
CONTEXT_SOURCE = SHARED / "reference" / "original-README.md"
TARGET = 0.15  # the target for prefix / reencode


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="A shipped benchmark setting.")
    source.add_argument("--config", help="Any training config (fewshot.k is set to 0).")
    p.add_argument("--rounds", type=int, default=5, help="Timed rounds (each runs both variants once).")
    p.add_argument(
        "--warmup", type=int, default=1, help="Untimed rounds first (the prefix is computed there)."
    )
    p.add_argument("--micro-batches", type=int, default=4, help="Micro-batches scored per timed call.")
    p.add_argument("--context-tokens", type=int, default=2000, help="Length of the shared context (tokens).")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="Also split one untimed call of each variant into parts with torch.profiler (CPU only).",
    )
    p.add_argument("--output", default=None, help="default experiments/bench/shared_context_<preset>.json")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, applied last")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 1 or args.micro_batches < 1 or args.context_tokens < 1:
        p.error("--rounds, --warmup, --micro-batches and --context-tokens must be at least 1")
    args.output = args.output or str(
        REPO / "experiments" / "bench" / f"shared_context_{args.preset or 'custom'}.json"
    )
    return args


def write_context(tokenizer, tokens: int, folder: Path) -> Path:
    """The first `tokens` tokens of the original README as a text file in `folder` (never in the repo)."""
    if not CONTEXT_SOURCE.is_file():
        raise UserError(f"{CONTEXT_SOURCE}: the benchmark's context text is read from ../shared/reference")
    ids = tokenizer(CONTEXT_SOURCE.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    if len(ids) < tokens:
        raise UserError(f"{CONTEXT_SOURCE} has {len(ids)} tokens, fewer than --context-tokens {tokens}")
    path = folder / "shared_context.txt"
    path.write_text(tokenizer.decode(ids[:tokens]), encoding="utf-8")
    return path


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    config = str(REPO / PRESETS[args.preset]["config"]) if args.preset else args.config
    base = [*preset_overrides(args.preset), *args.overrides, "teacher.cache=off", "fewshot.k=0"]
    with tempfile.TemporaryDirectory(prefix="fsdistill-bench-context-") as tmp:
        cfg, _ = load_config(config, overrides=base)
        from fsdistill.data.prompts import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
        context = write_context(tokenizer, args.context_tokens, Path(tmp))
        with_context = [*base, f"teacher.context_files=[{context}]"]
        cfg, _ = load_config(config, overrides=with_context)
        reencode_cfg, _ = load_config(config, overrides=[*with_context, "teacher.prefix_cache=false"])
        return isolated(args.threads, _run, args, cfg, reencode_cfg, tokenizer, argv)


def _run(args, cfg, reencode_cfg, tokenizer, argv) -> dict:
    import torch
    from tqdm.auto import tqdm

    from fsdistill.data.batch import build_training_batches
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.teacher import make_live_teacher, make_teacher
    from fsdistill.files import write_json_atomic
    from fsdistill.modeling.answer_lm import eval_mode
    from fsdistill.modeling.loading import load_student, make_autocast
    from fsdistill.train.step import micro_batch_losses

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = make_autocast(cfg.training.mixed_precision, device)
    print(f"bench shared context: data and model on {device} ...", file=sys.stderr)
    torch.manual_seed(cfg.training.seed)
    stream = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    cpu_batches = first_micro_batches(stream, cfg, args.micro_batches)
    batches = [b.to(device) for b in cpu_batches]
    student = load_student(cfg)
    student.to(device)
    prefix = make_teacher(cfg, student)
    reencode = make_live_teacher(reencode_cfg, prefix.answer_lm, prefix.adapter_off)
    if prefix.prefix is None or reencode.prefix is not None:
        raise UserError(
            "this model does not support prefix reuse (sliding-window layers): nothing to compare"
        )
    prefix.self_check(len(tokenizer), device)
    teachers = {"prefix": prefix, "reencode": reencode}

    def score(teacher):
        with torch.no_grad(), autocast():
            return [teacher.targets(b, answer_positions(b)) for b in batches]

    def timed(fn, *fn_args) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        fn(*fn_args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - tick

    # --- both teachers give the same distillation sum before anything is timed ----------------------
    exact = cfg.model.dtype == "float32" and cfg.training.mixed_precision == "no"
    check = {"rtol": 1e-4 if exact else 2e-2, "dist_sum": {}}
    first_prefix_seconds = None
    with eval_mode(student), torch.no_grad():
        for name, teacher in teachers.items():
            tick = time.perf_counter()
            check["dist_sum"][name] = sum(
                micro_batch_losses(cfg, student, teacher, b, autocast).dist_sum.item() for b in batches
            )
            if name == "prefix":
                first_prefix_seconds = time.perf_counter() - tick
    a, b = check["dist_sum"].values()
    check["allclose"] = math.isclose(a, b, rel_tol=check["rtol"], abs_tol=1e-6) and a > 0
    if not check["allclose"]:
        raise RuntimeError(f"the teachers disagree, the comparison would not be apples to apples: {check}")

    times = {v: [] for v in VARIANTS}
    rounds = []
    for r in tqdm(range(args.warmup + args.rounds), desc="bench rounds", unit="round", file=sys.stderr):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        row = {"round": r - args.warmup, "order": order, "seconds": {}}
        for name in order:
            row["seconds"][name] = timed(score, teachers[name])
        if r >= args.warmup:
            for name in VARIANTS:
                times[name].append(row["seconds"][name])
            rounds.append(row)
    if prefix.prefix.computed != 1:
        raise RuntimeError(f"the shared prefix was computed {prefix.prefix.computed} times, not once per run")
    profiled = None
    if args.profile:
        if device.type != "cpu":
            raise UserError("--profile splits CPU operators' time; run it with --device cpu")
        profiled = {name: profile_parts(score, teacher) for name, teacher in teachers.items()}

    shapes = [shape_of(b, cfg.teacher.prefix_min_tokens) for b in cpu_batches]
    flop_shape = FlopShape.of(student)
    flops = {
        "prefix": sum(suffix_flops(flop_shape, s) for s in shapes),
        "reencode": sum(full_flops(flop_shape, s) for s in shapes),
    }
    med = {name: statistics.median(v) for name, v in times.items()}
    ratios = {
        "prefix/reencode": {
            "measured": med["prefix"] / med["reencode"],
            "predicted_by_flops": flops["prefix"] / flops["reencode"],
            "paired": summary([r["seconds"]["prefix"] / r["seconds"]["reencode"] for r in rounds]),
            "target": f"<= {TARGET}",
        }
    }
    context_file = Path(cfg.teacher.context_files[0])
    result = {
        "what": "seconds to score --micro-batches micro-batches with the teacher (top-K targets at every answer "
        "token); variants interleaved, order alternated each round; ratios of medians, per-round paired ratios, "
        "and the ratio FLOPs predict",
        # bench_cli.py takes --shared_context off before this module's main: put it back, to re-run it.
        "command": [
            sys.argv[0],
            "--shared_context",
            *(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--shared_context"),
        ],
        "preset": args.preset,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "ratios": ratios,
        "seconds": {name: summary(v) for name, v in times.items()},
        "prefix_once": {
            "computed": prefix.prefix.computed,
            "reused": prefix.prefix.reused,
            "tokens": int(prefix.prefix.stored.ids.numel()),
            "first_call_seconds_including_the_prefix": first_prefix_seconds,
        },
        "context": {
            "source": str(CONTEXT_SOURCE.relative_to(SHARED.parent)),
            "tokens": args.context_tokens,
            "sha256": sha256_file(context_file),
        },
        "flops": {"what": "FLOPs per timed call, fsdistill/tools/bench.py's count", **flops},
        **({"profile": profile_record(profiled, flop_parts(flop_shape, shapes))} if profiled else {}),
        "micro_batches": shapes,
        "check": check,
        "rounds_detail": rounds,
        **environment_record(device, cfg),
    }
    result["config"]["teacher"]["context_files"] = ["<temporary file: see context>"]
    out = Path(args.output)
    write_json_atomic(out, result)
    r = ratios["prefix/reencode"]
    print(
        f"prefix/reencode measured {r['measured']:.3f} (paired median {r['paired']['median']:.3f}), "
        f"predicted by FLOPs {r['predicted_by_flops']:.3f}, target <= {TARGET}"
    )
    print(f"wrote {out}")
    return result


def shape_of(batch, min_tokens: int) -> dict:
    """A micro-batch's padded teacher shape: rows, width W, answer tokens, and the shared prefix P the live
    teacher reuses (its rows' common leading tokens before the first predicting position)."""
    from fsdistill.modeling.prefix import shared_prefix_length

    limit = int(batch.teacher_answer_start.min()) - 1
    prefix = shared_prefix_length(batch.teacher_ids, batch.teacher_mask, limit)
    return {
        "rows": batch.size,
        "teacher_width": int(batch.teacher_ids.shape[1]),
        "answer_tokens": batch.num_answer_tokens,
        "shared_prefix_tokens": prefix if prefix >= min_tokens else 0,
    }


def full_flops(shape: FlopShape, s: dict) -> float:
    """The whole teacher sequence through the body and causal attention; the head at the answer tokens."""
    rows, width = s["rows"], s["teacher_width"]
    return forward_flops(shape, rows * width, s["answer_tokens"], rows * width**2)


def suffix_flops(shape: FlopShape, s: dict) -> float:
    """The suffix S = W - P only, attending to the cached prefix P (2SP + S^2 pairs); the head as above."""
    rows, p = s["rows"], s["shared_prefix_tokens"]
    suffix = s["teacher_width"] - p
    return forward_flops(shape, rows * suffix, s["answer_tokens"], rows * (2 * suffix * p + suffix**2))


# Parts of a call by operator name (a substring of torch.profiler's key); the first match wins.
PARTS = {
    "attention kernel": ("scaled_dot_product",),
    "matrix products (body, head)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "top-K over the vocabulary": ("aten::topk",),
    "copies (prefix + suffix keys/values, head repeat, casts)": ("aten::cat", "aten::copy_"),
}
OTHER = "the rest (norms, rotary, activations, mask, indexing)"


def profile_parts(score, teacher) -> dict[str, float]:
    """Seconds of operator self time per part (PARTS, else OTHER) of one call score(teacher), and total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        score(teacher)
    parts = dict.fromkeys([*PARTS, OTHER], 0.0)
    for event in prof.key_averages():
        part = next((p for p, keys in PARTS.items() if any(k in event.key for k in keys)), OTHER)
        parts[part] += event.self_cpu_time_total / 1e6
    return {**parts, "total": sum(parts.values())}


def flop_parts(shape: FlopShape, shapes: list[dict]) -> dict[str, dict[str, float]]:
    """FLOPs per call of each variant by part: body + head (the matrix products), attention counted (causal
    pairs) and attention as the CPU kernel runs it under a padding mask (every block: W x W, S x (P + S))."""
    out = {v: {"matrix products": 0.0, "attention": 0.0, "attention as run": 0.0} for v in VARIANTS}
    per_pair = 2 * shape.layers * shape.attention_width
    for s in shapes:
        rows, width, p, n = s["rows"], s["teacher_width"], s["shared_prefix_tokens"], s["answer_tokens"]
        suffix = width - p
        head = 2 * shape.vocab * shape.hidden * n
        for variant, tokens, counted, as_run in (
            ("prefix", suffix, 2 * suffix * p + suffix**2, 2 * suffix * width),
            ("reencode", width, width**2, 2 * width**2),
        ):
            out[variant]["matrix products"] += 2 * shape.body_parameters * rows * tokens + head
            out[variant]["attention"] += per_pair * rows * counted
            out[variant]["attention as run"] += per_pair * rows * as_run
    return out


def profile_record(profiled: dict, flops: dict) -> dict:
    """The --profile part of the JSON: seconds by part per variant and the FLOPs the parts stand for."""
    return {
        "what": "operator self time (torch.profiler) of one untimed call per variant after the timed rounds, "
        "by part; the profiler's own overhead included",
        "seconds": profiled,
        "flops": flops,
    }


def target_line(result: dict) -> str:
    """Where the FLOP count would meet the target with these rows (context_for_target)."""
    p = context_for_target(result)
    where = f"a shared context of {p:,} tokens or more" if p else "no context up to 10x this one"
    return (
        f"By the FLOP count, these rows reach the target (<= {TARGET}) with {where} "
        f"(this run: {result['micro_batches'][0]['shared_prefix_tokens']:,})."
    )


def total(flops: dict, attention: str) -> float:
    """A variant's FLOPs per call: the matrix products and its attention, counted or as run."""
    return flops["matrix products"] + flops[attention]


def profile_markdown(record: dict) -> list[str]:
    """The --profile table: each part's seconds and share per variant, the time ratio and the FLOP ratio."""
    s, f = record["seconds"], record["flops"]
    flop_ratio = {
        "attention kernel": f"{f['prefix']['attention'] / f['reencode']['attention']:.3f} counted, "
        f"{f['prefix']['attention as run'] / f['reencode']['attention as run']:.3f} as run",
        "matrix products (body, head)": f"{f['prefix']['matrix products'] / f['reencode']['matrix products']:.3f}",
        "top-K over the vocabulary": "the same work in both",
        "total": f"{total(f['prefix'], 'attention') / total(f['reencode'], 'attention'):.3f} counted, "
        f"{total(f['prefix'], 'attention as run') / total(f['reencode'], 'attention as run'):.3f} as run",
    }
    lines = [
        "| part of a call (torch.profiler, one call each) | prefix s (share) | reencode s (share) | "
        "prefix/reencode time | prefix/reencode FLOPs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for part in [*PARTS, OTHER, "total"]:
        a, b = s["prefix"][part], s["reencode"][part]
        share = lambda x, v: f"{x:.3f} ({x / s[v]['total']:.0%})"  # noqa: E731
        lines.append(
            f"| {part} | {share(a, 'prefix')} | {share(b, 'reencode')} | {a / b:.3f} | {flop_ratio.get(part, '')} |"
        )
    return lines


def context_for_target(result: dict, step: int = 10) -> int | None:
    """The shortest shared context (tokens, rounded up to `step`) at which the FLOP count predicts
    prefix/reencode <= TARGET for the same rows; the measured length if it already does; None past 1,000x.

    Read from the JSON alone (--profile's FLOP parts and the micro-batch shapes): per micro-batch of R rows,
    S suffix and P prefix tokens, matrix products = c x R x (tokens run) + head and attention = a x R x pairs,
    so c, head and a follow from the two variants' parts; P then varies with the rows held fixed (the ratio
    falls as P grows: doubling, then bisection)."""
    parts, shapes = result["profile"]["flops"], result["micro_batches"]
    suffix = [(s["rows"], s["teacher_width"] - s["shared_prefix_tokens"]) for s in shapes]
    measured = shapes[0]["shared_prefix_tokens"]
    run_prefix = sum(r * s for r, s in suffix)
    run_full = sum(r * (s + measured) for r, s in suffix)
    mp = parts["prefix"]["matrix products"]
    per_token = (parts["reencode"]["matrix products"] - mp) / (run_full - run_prefix)
    head = mp - per_token * run_prefix
    per_pair = parts["prefix"]["attention"] / sum(r * (2 * s * measured + s * s) for r, s in suffix)

    def ratio(p: int) -> float:
        prefix = per_token * run_prefix + head + per_pair * sum(r * (2 * s * p + s * s) for r, s in suffix)
        full = sum(per_token * r * (s + p) + per_pair * r * (s + p) ** 2 for r, s in suffix) + head
        return prefix / full

    if ratio(measured) <= TARGET:
        return measured
    low, high = measured, 2 * measured  # ratio(low) > TARGET
    while ratio(high) > TARGET:
        low, high = high, 2 * high
        if high > 1000 * measured:
            return None
    while high - low > step:
        mid = (low + high) // 2
        low, high = (low, mid) if ratio(mid) <= TARGET else (mid, high)
    return high


def shared_context_markdown(result: dict) -> str:
    """The shared-context benchmark's JSON as Markdown (compute.md renders it, never typed in)."""
    r = result["ratios"]["prefix/reencode"]
    p, s, once = r["paired"], result["seconds"], result["prefix_once"]
    return (
        "\n".join(
            [
                "| teacher scoring | median s per call | predicted FLOPs per call |",
                "| --- | --- | --- |",
                f"| prefix (context computed once, reused) | {s['prefix']['median']:.3f} | {result['flops']['prefix']:.3g} |",
                f"| reencode (context run at every call) | {s['reencode']['median']:.3f} | {result['flops']['reencode']:.3g} |",
                "",
                "| ratio | measured (ratio of medians) | per-round paired median [min, max] | predicted by FLOPs | target |",
                "| --- | --- | --- | --- | --- |",
                f"| prefix/reencode | {r['measured']:.3f} | {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] | "
                f"{r['predicted_by_flops']:.3f} | {r['target']} |",
                "",
                f"The prefix ({once['tokens']:,} tokens) was computed {once['computed']} time(s) and reused "
                f"{once['reused']:,} times.",
                *(
                    ["", *profile_markdown(result["profile"]), "", target_line(result)]
                    if "profile" in result
                    else []
                ),
            ]
        )
        + "\n"
    )

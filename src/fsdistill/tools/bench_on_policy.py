"""Time an on-policy step (scripts/bench_step.py --on_policy): teacher scoring of rollouts with and without
the exemplar prefix cache, and the whole step split into its stages, against an SFT step.

On one model, the same rows and the same rollouts, in one process:

  (1) teacher scoring of the step's rollouts (k-shot prompt + sampled answer, fixed shots):
        prefix_teacher  the exemplar prefix's keys/values computed once (the teacher is frozen) and reused,
                        only question + sampled answer run (this repository);
        reencode        the whole k-shot context run at every call (what OPCD, OPSD and TRL do).
  (2) the on-policy step, stage by stage, for one optimizer step's rows (per-device batch x accumulation):
        generation      one batched sampling call (transformers generate, eval mode, on a CPU with the
                        linear layers prepared for decoding: modeling/generation.py), at most the task's
                        median gold-answer length new tokens;
        teacher         the prefix teacher's targets at every sampled token, every micro-batch;
        student         the student's forward + backward on the sampled answers, every micro-batch;
      against sft: the SFT step's forward + backward on the same rows' gold answers.
  (3) the decode floor: generate alone (generation_generate: the same call without the prepared layers,
      which must sample the same ids; on_policy_generate_alone/sft is the step sampled that way, in the
      same rounds: what the step cost before the prepared layers, on the machine as it was), and the time streaming the weights and the KV cache once per
      forward pass would take at this machine's read bandwidth, measured in the same rounds
      (weights_read: the fastest of 3 passes of a max-reduction over every weight tensor, as stored).
      floor = forward passes x weights_read + KV-cache bytes read / bandwidth, where the forward passes
      are the prefill and one decode step per further token of the longest sample, and decode step t reads
      layers x 2 x kv_heads x head_dim x rows x (prompt width + t) cache entries. Beside FLOPs, this is the
      floor of a decode step at a few rows: each sampled token reads every weight once.

  (4) where vLLM is importable (its own environment: scripts/setup_vllm.sh), the same rollouts sampled by a
      colocated engine as rollout.backend=vllm builds it (the student's adapter served, vllm.* and
      rollout.vllm_* as configured; on a CPU pass vllm.enforce_eager=true and set VLLM_CPU_KVCACHE_SPACE):
      generation_vllm, the same prompts and max_new_tokens, in the same rounds; each backend's sampled
      tokens / s (they stop at end-of-turn on their own draws). Where vLLM is not importable the JSON says
      so (rollout_vllm.measured false).

Variants are interleaved round by round, order rotated; ratios of medians, per-round paired ratios, and
beside each the ratio a FLOP count predicts (2 x matmul parameters x tokens per forward, x2 more for the
LoRA backward's input gradients; attention scores left out). Generation on a CPU is bound by one small
forward per new token, not by FLOPs: its measured share is far above the predicted one, and that gap is
the number to read.

    python scripts/bench_step.py --on_policy --preset cpu     # -> experiments/bench/on_policy_cpu.json
    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python scripts/bench_step.py --on_policy --preset cpu \
        vllm.enforce_eager=true                               # (4) as well
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fsdistill.config import load_config, to_dict
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.tools.bench import (
    PRESETS,
    REPO,
    device_description,
    isolated,
    load_average,
    preset_overrides,
    summary,
)

TEACHER_VARIANTS = ("prefix_teacher", "reencode")
READ_PASSES = 3  # weights_read: the fastest of this many passes per round
STEP_VARIANTS = ("sft", "on_policy")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="A shipped benchmark setting.")
    source.add_argument("--config", help="Any training config (per_example or fixed shots; fixed is used).")
    p.add_argument("--rounds", type=int, default=5, help="Timed rounds (each runs every variant once).")
    p.add_argument(
        "--warmup", type=int, default=1, help="Untimed rounds first (the prefix is computed there)."
    )
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--output", default=None, help="default experiments/bench/on_policy_<preset>.json")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, applied last")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 1:
        p.error("--rounds and --warmup must be at least 1")
    args.output = args.output or str(
        REPO / "experiments" / "bench" / f"on_policy_{args.preset or 'custom'}.json"
    )
    return args


def median_answer_tokens(batches) -> int:
    """The median length in tokens of the training rows' gold answer parts (answer + end-of-turn)."""
    lengths = []
    for example in batches.by_row.values():
        _, answer_ids, _ = batches.prompts.encode_student(example)
        lengths.append(len(answer_ids))
    return int(statistics.median(lengths))


def matmul_parameters(student) -> tuple[int, int]:
    """(decoder matmul parameters, output-head parameters) of the student's causal LM."""
    from fsdistill.modeling.answer_lm import base_causal_lm

    lm = base_causal_lm(student.model)
    head = lm.get_output_embeddings().weight.numel()
    embed = lm.get_input_embeddings().weight.numel()
    decoder = sum(p.numel() for name, p in lm.named_parameters() if "lora_" not in name) - embed
    decoder -= 0 if lm.config.tie_word_embeddings else head
    return decoder, head


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    config = str(REPO / PRESETS[args.preset]["config"]) if args.preset else args.config
    base = [*preset_overrides(args.preset), *args.overrides, "teacher.cache=off", "fewshot.selection=fixed"]
    cfg, _ = load_config(config, overrides=[*base, "rollout.source=student"])
    if cfg.fewshot.k == 0:
        raise UserError("the on-policy benchmark times a k-shot teacher: fewshot.k must be at least 1")
    reencode_cfg, _ = load_config(config, overrides=[*base, "teacher.prefix_cache=false"])
    vllm_cfg = None
    if vllm_importable():
        vllm_cfg, _ = load_config(config, overrides=[*base, "rollout.source=student", "rollout.backend=vllm"])

    with tempfile.TemporaryDirectory(prefix="bench-on-policy-vllm-") as engine_dir:
        return isolated(args.threads, _run, args, cfg, reencode_cfg, vllm_cfg, Path(engine_dir), argv)


def vllm_importable() -> bool:
    """Whether this environment has vLLM (part (4) runs then)."""
    return importlib.util.find_spec("vllm") is not None


VLLM_NOT_MEASURED = (
    "vllm is not importable in this environment: make its own (bash scripts/setup_vllm.sh) and run this "
    "benchmark from it to time a colocated engine too"
)


def colocated_engine(vllm_cfg, max_new_tokens, tokenizer, batches, student, engine_dir, autocast):
    """Rollouts through an engine as rollout.backend=vllm builds it, serving the student as training's
    first step would (its adapter synced at step 0), or None where vLLM is not importable. engine_dir: a
    temporary run folder for the synced adapter."""
    from fsdistill.train.rollouts import Rollouts

    if vllm_cfg is None:
        return None
    vllm_cfg.rollout.max_new_tokens = max_new_tokens
    rollouts = Rollouts(vllm_cfg, tokenizer, batches.prompts, batches.by_row, engine_dir, 0, autocast)
    rollouts.sync(student, 0)
    return rollouts


def _run(args, cfg, reencode_cfg, vllm_cfg, engine_dir, argv) -> dict:
    import torch
    import transformers
    from tqdm.auto import tqdm

    from fsdistill.data.batch import build_training_batches
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.teacher import make_live_teacher, make_teacher
    from fsdistill.files import git_state, write_json_atomic
    from fsdistill.modeling.answer_lm import eval_mode
    from fsdistill.modeling.loading import load_student, make_autocast
    from fsdistill.train.rollouts import Rollouts
    from fsdistill.train.step import micro_batch_losses, student_losses, teacher_targets

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = make_autocast(cfg.training.mixed_precision, device)
    print(f"bench on-policy: tokenizer, data and model on {device} ...", file=sys.stderr)
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    batches = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    answer_len = median_answer_tokens(batches)
    cfg.rollout.max_new_tokens = answer_len
    student = load_student(cfg)
    student.to(device)
    teacher = make_teacher(cfg, student)
    reencode = make_live_teacher(reencode_cfg, teacher.answer_lm, teacher.adapter_off)
    if teacher.prefix is None or reencode.prefix is not None:
        raise UserError(
            "this model does not support prefix reuse (sliding-window layers): nothing to compare"
        )
    teacher.self_check(len(tokenizer), device)
    rollouts = Rollouts(
        cfg, tokenizer, batches.prompts, batches.by_row, Path(args.output).parent, 0, autocast
    )
    params = [p for p in student.parameters() if p.requires_grad]
    per_device, accum = cfg.training.per_device_batch_size, cfg.training.grad_accum_steps
    gold = [batches.micro_batch(0, m, 0, 1, per_device) for m in range(accum)]
    if any(mb.dropped_rows for mb in gold):
        raise UserError("a benchmark row is over the length limits: raise data.max_*_len")

    def sample(by=rollouts):
        data, _, stats = by.step_batches(1, gold, student, teacher)
        return [mb.batch.to(device) for mb in data.micro_batches], stats

    def sample_with_generate_alone():
        rollouts.sampler.prepare_linears = False
        try:
            return sample()
        finally:
            rollouts.sampler.prepare_linears = True

    weights = decode_weights(student)
    engine = colocated_engine(vllm_cfg, answer_len, tokenizer, batches, student, engine_dir, autocast)
    vllm_tokens, vllm_ended, vllm_passes = [], [], []

    def read_weights():
        """The fastest of READ_PASSES passes reading every weight once (seconds)."""
        return min(timed(read_once, weights)[0] for _ in range(READ_PASSES))

    def targets(t, sampled):
        """A teacher's targets for every micro-batch of the rollouts (no grad: Teacher.targets is)."""
        return [teacher_targets(t, b, answer_positions(b), autocast) for b in sampled]

    def student_step(sampled, targets_of):
        for b, targets in zip(sampled, targets_of):
            pos = answer_positions(b)
            out = student_losses(cfg, student, b, pos, targets, autocast)
            (cfg.distill.weight * out.dist_sum / max(out.tokens, 1)).backward()
        for p in params:
            p.grad = None

    def sft_step():
        for mb in gold:
            out = micro_batch_losses(cfg, student, None, mb.batch.to(device), autocast)
            (out.ce_sum / max(out.tokens, 1)).backward()
        for p in params:
            p.grad = None

    def timed(fn, *fn_args):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        out = fn(*fn_args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - tick, out

    # --- the two teachers agree on the same rollouts before anything is timed ----------------------
    exact = cfg.model.dtype == "float32" and cfg.training.mixed_precision == "no"
    check = {"rtol": 1e-4 if exact else 2e-2, "dist_sum": {}}
    print("bench on-policy: checking prefix_teacher == reencode ...", file=sys.stderr)
    first, _ = sample()
    with eval_mode(student), torch.no_grad():
        for name, t in (("prefix_teacher", teacher), ("reencode", reencode)):
            check["dist_sum"][name] = sum(
                student_losses(cfg, student, b, answer_positions(b), tg, autocast).dist_sum.item()
                for b, tg in zip(first, targets(t, first))
            )
    a, b = check["dist_sum"].values()
    check["allclose"] = math.isclose(a, b, rel_tol=check["rtol"], abs_tol=1e-6) and a > 0
    if not check["allclose"]:
        raise RuntimeError(f"the teachers disagree, the comparison would not be apples to apples: {check}")

    times = {
        k: []
        for k in (
            *TEACHER_VARIANTS,
            "generation",
            "teacher",
            "student",
            "sft",
            "generation_generate",
            "weights_read",
            "generation_vllm",
        )
    }
    rounds, sampled_tokens, ended, forward_passes, same_samples = [], [], [], [], []
    student.train()
    for r in tqdm(range(args.warmup + args.rounds), desc="bench rounds", unit="round", file=sys.stderr):
        row = {"round": r - args.warmup, "load_average_1min": load_average(), "seconds": {}}
        # (2): sft and the on-policy stages; (1): the two teachers on this round's rollouts
        order = ["sft", "on_policy"] if r % 2 == 0 else ["on_policy", "sft"]
        sampled = None
        for variant in order:
            if variant == "sft":
                row["seconds"]["sft"], _ = timed(sft_step)
                continue
            row["seconds"]["generation"], (sampled, stats) = timed(sample)
            row["seconds"]["teacher"], targets_of = timed(targets, teacher, sampled)
            row["seconds"]["student"], _ = timed(student_step, sampled, targets_of)
            sampled_tokens.append(stats.sampled_tokens)
            ended.append(stats.ended / max(stats.samples, 1))
            forward_passes.append(max(int(b.answer_len.max()) for b in sampled))
        teachers = list(TEACHER_VARIANTS) if r % 2 == 0 else list(reversed(TEACHER_VARIANTS))
        for name in teachers:
            t = teacher if name == "prefix_teacher" else reencode
            row["seconds"][name], _ = timed(targets, t, sampled)
        # (3): generate alone on the same rows and seed, and the weights' read time; (4) a colocated vLLM
        # engine on the same rows; order alternated
        last_parts = ("generation_generate", "weights_read", "generation_vllm")[: 3 if engine else 2]
        for name in last_parts[:: 1 if r % 2 == 0 else -1]:
            if name == "weights_read":
                row["seconds"][name] = read_weights()
                continue
            if name == "generation_vllm":
                row["seconds"][name], (vsampled, vstats) = timed(sample, engine)
                vllm_tokens.append(vstats.sampled_tokens)
                vllm_ended.append(vstats.ended / max(vstats.samples, 1))
                vllm_passes.append(max(int(b.answer_len.max()) for b in vsampled))
                continue
            row["seconds"][name], (alone, _) = timed(sample_with_generate_alone)
            same_samples.append(
                all(torch.equal(a.student_ids, b.student_ids) for a, b in zip(alone, sampled))
            )
        if r >= args.warmup:
            for k, v in row["seconds"].items():
                times[k].append(v)
            row["seconds"]["on_policy"] = sum(row["seconds"][k] for k in ("generation", "teacher", "student"))
            # the same step sampled by generate alone (what it cost before the prepared layers), same round
            row["seconds"]["on_policy_generate_alone"] = sum(
                row["seconds"][k] for k in ("generation_generate", "teacher", "student")
            )
            rounds.append(row)
    for k in ("on_policy", "on_policy_generate_alone"):
        times[k] = [row["seconds"][k] for row in rounds]
    if engine is not None:
        engine.close()

    # --- predicted FLOP ratios -----------------------------------------------------------------------
    decoder, head = matmul_parameters(student)
    last = sampled
    teacher_tokens = sum(int(b.teacher_mask.sum()) for b in last)
    answer_tokens = sum(b.num_answer_tokens for b in last)
    student_tokens = sum(int(b.student_mask.sum()) for b in last)
    rows = sum(b.size for b in last)
    prefix = shared_prefix_length(last)
    suffix_tokens = teacher_tokens - rows * prefix
    gold_student_tokens = sum(int(mb.batch.student_mask.sum()) for mb in gold)
    gold_answer_tokens = sum(mb.batch.num_answer_tokens for mb in gold)
    prompt_tokens = sum(e.student_answer_start for mb in gold for e in mb.encoded)

    def forward(tokens, head_tokens):
        return 2 * (decoder * tokens + head * head_tokens)

    flops = {
        "generation": forward(prompt_tokens + answer_tokens, answer_tokens),
        "teacher": forward(suffix_tokens, answer_tokens),
        "reencode": forward(teacher_tokens, answer_tokens),
        "student": 2 * forward(student_tokens, answer_tokens),
        "sft": 2 * forward(gold_student_tokens, gold_answer_tokens),
    }
    flops["on_policy"] = flops["generation"] + flops["teacher"] + flops["student"]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    ratios = {
        "prefix_teacher/reencode": {
            "measured": med["prefix_teacher"] / med["reencode"],
            "predicted_by_flops": flops["teacher"] / flops["reencode"],
            "paired": summary([r["seconds"]["prefix_teacher"] / r["seconds"]["reencode"] for r in rounds]),
            "target": "<= 0.35",
        },
        "on_policy/sft": {
            "measured": med["on_policy"] / med["sft"],
            "predicted_by_flops": flops["on_policy"] / flops["sft"],
            "paired": summary([r["seconds"]["on_policy"] / r["seconds"]["sft"] for r in rounds]),
        },
    }
    if not all(same_samples):
        raise RuntimeError("generate alone sampled other ids than the prepared layers: they are not the same")
    from fsdistill.modeling.loading import DTYPES

    cache_bytes = {"bf16": 2, "fp16": 2}.get(cfg.training.mixed_precision, DTYPES[cfg.model.dtype].itemsize)
    floor = decode_floor(student, last, weights, forward_passes[-1], cache_bytes)
    for row in rounds:
        sec = row["seconds"]
        sec["generation_floor"] = floor["forward_passes"] * sec["weights_read"] + floor["kv_bytes"] / (
            floor["weight_bytes"] / sec["weights_read"]
        )
    times["generation_floor"] = [row["seconds"]["generation_floor"] for row in rounds]
    med["generation_floor"] = statistics.median(times["generation_floor"])
    ratios["generation/generation_floor"] = {
        "measured": med["generation"] / med["generation_floor"],
        "paired": summary([r["seconds"]["generation"] / r["seconds"]["generation_floor"] for r in rounds]),
        "target": "<= 3",
    }
    ratios["on_policy_generate_alone/sft"] = {
        "measured": med["on_policy_generate_alone"] / med["sft"],
        "predicted_by_flops": ratios["on_policy/sft"]["predicted_by_flops"],
        "paired": summary([r["seconds"]["on_policy_generate_alone"] / r["seconds"]["sft"] for r in rounds]),
    }
    ratios["generation/generation_generate"] = {
        "measured": med["generation"] / med["generation_generate"],
        "paired": summary([r["seconds"]["generation"] / r["seconds"]["generation_generate"] for r in rounds]),
    }
    ratios["on_policy/sft"]["target"] = "<= 3.5 (stretch <= 3.0)"
    floor["bandwidth_gb_per_s"] = floor["weight_bytes"] / med["weights_read"] / 1e9
    shares = {k: med[k] / med["on_policy"] for k in ("generation", "teacher", "student")}
    predicted_shares = {k: flops[k] / flops["on_policy"] for k in ("generation", "teacher", "student")}
    result = {
        "what": "seconds per optimizer step's rows (one rollout batch); variants interleaved, order alternated "
        "each round; ratios of medians, per-round paired ratios, and the ratio FLOPs predict",
        "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        "preset": args.preset,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "ratios": ratios,
        "on_policy_step_shares": {"measured": shares, "predicted_by_flops": predicted_shares},
        "rollout": {
            "max_new_tokens": answer_len,
            "max_new_tokens_is": "the median gold-answer length (tokens, answer + end-of-turn) of the training rows",
            "rows_per_step": rows,
            "sampled_tokens_per_step": summary(sampled_tokens[args.warmup :]),
            "ended_fraction": summary(ended[args.warmup :]),
            "tokens_per_s": statistics.median(sampled_tokens[args.warmup :]) / med["generation"],
        },
        "rollout_vllm": vllm_throughput(
            rounds,
            {"tokens": sampled_tokens, "decode_steps": forward_passes},
            {"tokens": vllm_tokens, "decode_steps": vllm_passes, "ended": vllm_ended},
            args.warmup,
        )
        if engine is not None
        else {"measured": False, "why": VLLM_NOT_MEASURED},
        "seconds": {k: summary(v) for k, v in times.items() if v},
        "load_average_1min": summary([row["load_average_1min"] for row in rounds]),
        "decode_floor": floor,
        "same_samples_as_generate_alone": all(same_samples),
        "flops": flops,
        "tokens": {
            "teacher": teacher_tokens,
            "teacher_suffix": suffix_tokens,
            "shared_prefix": prefix,
            "student": student_tokens,
            "answer": answer_tokens,
            "sft_student": gold_student_tokens,
            "sft_answer": gold_answer_tokens,
        },
        "check": check,
        "rounds_detail": rounds,
        "device": {
            "type": device.type,
            "name": device_description(device),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "git_commit": git_state()["commit"],
        "config": to_dict(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.output)
    write_json_atomic(out, result)
    for name, r in ratios.items():
        predicted = r.get("predicted_by_flops")
        print(
            f"{name:<32} measured {r['measured']:.3f}"
            + (f"  predicted by FLOPs {predicted:.3f}" if predicted else "")
        )
    print(
        f"generation {med['generation']:.2f} s, generate alone {med['generation_generate']:.2f} s, decode floor "
        f"{med['generation_floor']:.2f} s ({floor['weight_bytes'] / 1e6:.0f} MB of weights read in "
        f"{1e3 * med['weights_read']:.1f} ms: {floor['bandwidth_gb_per_s']:.1f} GB/s)"
    )
    for k in shares:
        print(
            f"  {k:<12} share of the on-policy step {shares[k]:.2f} (FLOPs predict {predicted_shares[k]:.2f})"
        )
    print(f"rollout tokens/s {result['rollout']['tokens_per_s']:.1f}")
    if engine is not None:
        print(f"rollout tokens/s by a colocated vLLM engine {result['rollout_vllm']['tokens_per_s']:.1f}")
    print(f"wrote {out}")
    return result


def vllm_throughput(rounds: list, hf: dict, engine: dict, warmup: int) -> dict:
    """The colocated engine's sampled tokens / s beside hf's on the same prompts and max_new_tokens: each the
    median tokens per step over the median seconds, the per-round ratio (vLLM / hf), and the seconds per
    decoding step (the longest sample's tokens: the two backends' samples end at other lengths). hf and
    engine: per-round lists (warm-up rounds first) of sampled tokens, decoding steps (and, for the engine,
    the fraction of samples that ended)."""
    import vllm

    hf_tokens, hf_steps = hf["tokens"][warmup:], hf["decode_steps"][warmup:]
    vllm_tokens, vllm_steps = engine["tokens"][warmup:], engine["decode_steps"][warmup:]
    hf_s = [row["seconds"]["generation"] for row in rounds]
    vllm_s = [row["seconds"]["generation_vllm"] for row in rounds]
    return {
        "measured": True,
        "vllm_version": vllm.__version__,
        "sampled_tokens_per_step": summary(vllm_tokens),
        "ended_fraction": summary(engine["ended"][warmup:]),
        "decode_steps": summary(vllm_steps),
        "tokens_per_s": statistics.median(vllm_tokens) / statistics.median(vllm_s),
        "hf_tokens_per_s": statistics.median(hf_tokens) / statistics.median(hf_s),
        "vllm/hf_paired": summary(
            [(v / vs) / (h / hs) for v, vs, h, hs in zip(vllm_tokens, vllm_s, hf_tokens, hf_s)]
        ),
        "seconds_per_decode_step": statistics.median(vllm_s) / statistics.median(vllm_steps),
        "hf_seconds_per_decode_step": statistics.median(hf_s) / statistics.median(hf_steps),
    }


def decode_weights(student) -> list:
    """The tensors a decode step reads, as stored: every parameter of the causal LM except the input
    embedding (a step reads one row of it per sequence) unless the output head is tied to it."""
    from fsdistill.modeling.answer_lm import base_causal_lm

    lm = base_causal_lm(student.model)
    embedding = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings().weight
    return [p.detach() for p in lm.parameters() if p is not embedding or head is embedding]


def read_once(weights) -> None:
    """Read every byte of the weights once: a max over each tensor's bytes seen as int16 (no NaN or
    denormal arithmetic, vectorised; measured here as fast as any read-only reduction torch offers)."""
    import torch

    for w in weights:
        w.reshape(-1).view(torch.int16).amax()


def decode_floor(student, sampled, weights, forward_passes: int, cache_bytes: int) -> dict:
    """The bytes the decode floor counts: the weights once per forward pass, and the KV cache each decode
    step reads (the cache holds the left-padded prompts and the tokens sampled so far)."""
    from fsdistill.modeling.answer_lm import base_causal_lm

    config = base_causal_lm(student.model).config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads  # config attributes
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    rows = sum(b.size for b in sampled)
    prompt_width = max(int(b.student_answer_start.max()) for b in sampled)
    per_entry = config.num_hidden_layers * 2 * kv_heads * head_dim * rows * cache_bytes
    entries = sum(prompt_width + t for t in range(1, forward_passes))  # decode steps after the prefill
    return {
        "weight_bytes": sum(w.numel() * w.element_size() for w in weights),
        "weight_tensors": len(weights),
        "forward_passes": forward_passes,
        "kv_bytes": per_entry * entries,
        "kv_bytes_per_cache_entry": per_entry,
        "prompt_width": prompt_width,
        "rows": rows,
    }


def shared_prefix_length(batches) -> int:
    """The length of the token prefix every teacher sequence of these batches shares (the exemplars), up to
    the first answer position (what the prefix cache may reuse: modeling/prefix.py)."""
    rows = [b.teacher_ids[i, : int(b.teacher_mask[i].sum())].tolist() for b in batches for i in range(b.size)]
    n = min(int(b.teacher_answer_start.min()) - 1 for b in batches)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


def on_policy_markdown(result: dict) -> str:
    """The on-policy benchmark's JSON as Markdown (compute.md renders it, never typed in)."""
    seconds = result["seconds"]
    lines = [
        "| ratio | measured (ratio of medians) | per-round paired median [min, max] | predicted by FLOPs | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, r in result["ratios"].items():
        p = r["paired"]
        predicted = r.get("predicted_by_flops")
        lines.append(
            f"| {key} | {r['measured']:.3f} | {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] | "
            f"{'—' if predicted is None else f'{predicted:.3f}'} | {r.get('target', '')} |"
        )
    shares = result["on_policy_step_shares"]
    lines += ["", "| stage of the on-policy step | median s | share | share predicted by FLOPs |"]
    lines.append("| --- | --- | --- | --- |")
    for stage in ("generation", "teacher", "student"):
        lines.append(
            f"| {stage} | {seconds[stage]['median']:.2f} | {shares['measured'][stage]:.2f} | "
            f"{shares['predicted_by_flops'][stage]:.2f} |"
        )
    lines.append(f"| the whole step | {seconds['on_policy']['median']:.2f} | 1 | 1 |")
    lines.append(f"| SFT step on the same rows | {seconds['sft']['median']:.2f} | | |")
    lines.append(
        f"| generation throughput: sampled tokens / s | {result['rollout']['tokens_per_s']:.1f} | | |"
    )
    engine = result.get("rollout_vllm")
    if engine and engine["measured"]:  # written since vLLM was timed beside hf
        lines.append(
            f"| the same by a colocated vLLM engine (rollout.backend=vllm) | {engine['tokens_per_s']:.1f} | | |"
        )
    floor = result.get("decode_floor")
    if floor:  # written since the decode floor was measured
        lines.append(
            f"| generation by transformers generate alone (the same ids) | "
            f"{seconds['generation_generate']['median']:.2f} | | |"
        )
        lines.append(
            f"| generation's decode floor: {floor['forward_passes']} forward passes x "
            f"{floor['weight_bytes'] / 1e6:.0f} MB of weights + {floor['kv_bytes'] / 1e6:.0f} MB of KV cache, "
            f"read at {floor['bandwidth_gb_per_s']:.1f} GB/s | {seconds['generation_floor']['median']:.2f} | | |"
        )
    load = result.get("load_average_1min")
    if load:  # written since the load was recorded
        lines += [
            "",
            f"Machine load during the rounds (1-minute load average, {result['device']['name']}): "
            f"median {load['median']:.2f} [{load['min']:.2f}, {load['max']:.2f}].",
        ]
    if engine and not engine["measured"]:
        lines += ["", f"vLLM not measured: {engine['why']}."]
    return "\n".join(lines) + "\n"


def generation_backends_markdown(results: list[dict]) -> str:
    """Runs of the on-policy benchmark made with vLLM importable, as one table: each backend's sampled
    tokens / s on the same prompts and max_new_tokens, median [min, max] over the runs."""
    engines = [r["rollout_vllm"] for r in results]
    if not all(e["measured"] for e in engines):
        raise UserError(
            "a bench-generation-backends table reads runs that timed vLLM (rollout_vllm.measured)"
        )
    rows = [
        ("hf (transformers generate, prepared linear layers): sampled tokens / s", "hf_tokens_per_s", 1),
        ("vLLM (a colocated engine, rollout.backend=vllm): sampled tokens / s", "tokens_per_s", 1),
        ("vLLM / hf tokens / s (per run: the median of its per-round ratios)", "vllm/hf_paired", 1),
        ("hf: ms per decoding step (the longest sample's tokens)", "hf_seconds_per_decode_step", 1e3),
        ("vLLM: ms per decoding step", "seconds_per_decode_step", 1e3),
    ]
    rows = [
        (name, [scale * (e[key]["median"] if isinstance(e[key], dict) else e[key]) for e in engines])
        for name, key, scale in rows
    ]
    lines = [
        f"| measure | median of {len(results)} runs [min, max] | each run |",
        "| --- | --- | --- |",
    ]
    for name, values in rows:
        each = ", ".join(f"{v:.2f}" for v in values)
        lines.append(
            f"| {name} | {statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}] | {each} |"
        )
    first, config = results[0], results[0]["config"]
    loads = [r["load_average_1min"]["median"] for r in results]
    lines += [
        "",
        f"{first['rollout']['rows_per_step']} prompts per step, at most {first['rollout']['max_new_tokens']} new "
        f"tokens, {Path(config['model']['name']).name} ({config['training']['mixed_precision']}), "
        f"vLLM {engines[0]['vllm_version']} (vllm.enforce_eager {str(config['vllm']['enforce_eager']).lower()}), "
        f"{first['rounds']} rounds per run; {first['device']['name']}; machine load (1-minute average, each "
        f"run's median) {min(loads):.1f} to {max(loads):.1f}.",
    ]
    return "\n".join(lines) + "\n"

"""Does a colocated vLLM engine slow training down? A training step's seconds before and after one starts.

    # from the vLLM environment (bash scripts/setup_vllm.sh), SmolLM2 prepared:
    .venv-vllm/bin/python scripts/vllm_colocation.py --config configs/twostep/on_policy.yaml \
        vllm.enforce_eager=true --output experiments/vllm/colocation_cpu.json

rollout.backend=vllm starts the engine inside the training process (train/rollouts.py). vLLM's CPU worker
changes that process: it replaces torch.set_num_threads by a function that only warns, asks for 1 thread,
and seeds the global generators (modeling/generation.py start_vllm_engine puts all of it back). This
measures what training sees, in one process: `--rounds` training micro-steps (the config's student, LoRA or
full, forward + backward of a fixed batch of per_device_batch_size x --tokens random ids under the config's
mixed precision) before the engine exists; then the engine starts (rollouts' own VLLMSampler, the config's
dtype and settings) and `--rounds` rounds time the same micro-step three ways, in rotated order: with the
engine idle, right after a rollout-sized vLLM sampling call (per_device_batch_size prompts of 64 tokens,
rollout.max_new_tokens or the task's), and right after the same call to the hf sampler (the control: does
vLLM's sampling in particular slow the next step?). Also: torch's thread count before and after the start,
and whether torch.set_num_threads still takes effect. One run is one process; run it 3 times for a spread
(the machine is shared: its load average is recorded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.errors import exit_on_user_error


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--output", required=True, help="Result JSON.")
    parser.add_argument("--rounds", type=int, default=8, help="Timed micro-steps before and after (median).")
    parser.add_argument("--tokens", type=int, default=128, help="Sequence length of the training batch.")
    return parser.parse_intermixed_args(argv)


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse(argv)  # before the imports below: --help loads no torch
    import torch

    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.files import package_versions, write_json_atomic
    from fsdistill.modeling.generation import SamplingSettings
    from fsdistill.modeling.loading import load_student
    from fsdistill.train.rollouts import HFSampler, VLLMSampler

    cfg, _ = config_from_args(args)
    student = load_student(cfg)
    step = training_micro_step(cfg, student.model, args.tokens)
    load_before = os.getloadavg()[0]
    threads_before = torch.get_num_threads()
    step()  # warm-up: allocator, autograd graph
    before = [timed(step) for _ in range(args.rounds)]

    r = cfg.rollout
    eos = load_tokenizer(cfg.model.tokenizer or cfg.model.name).eos_token_id
    new_tokens = r.max_new_tokens or cfg.task.max_new_tokens
    settings = SamplingSettings(r.temperature, r.top_p, r.top_k, new_tokens, (eos,))
    prompts = [list(range(1000, 1000 + 64))] * cfg.training.per_device_batch_size
    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        sampler = VLLMSampler(cfg, settings, Path(run_dir), rank=0)
        engine_start = time.perf_counter() - tick
        threads_after = torch.get_num_threads()
        torch.set_num_threads(threads_after + 1)
        settable = torch.get_num_threads() == threads_after + 1
        torch.set_num_threads(threads_after)
        sampler.sync(student.model, 0)
        hf = HFSampler(settings, eos, autocast=lambda: mixed_precision(cfg))
        kinds = {
            "engine_idle": lambda i: None,
            "after_vllm_sampling": lambda i: sampler.sample(None, prompts, i, settings.max_new_tokens),
            "after_hf_sampling": lambda i: hf.sample(student.model, prompts, i, settings.max_new_tokens),
        }
        steps = {kind: [] for kind in kinds}
        sampling = {kind: [] for kind in kinds if kind != "engine_idle"}
        for i in range(args.rounds):
            order = list(kinds)[i % 3 :] + list(kinds)[: i % 3]  # rotated, so drift falls on all three
            for kind in order:
                spent = timed(lambda kind=kind, i=i: kinds[kind](i))
                if kind in sampling:
                    sampling[kind].append(spent)
                steps[kind].append(timed(step))
        sampler.close()
    medians = {"without_engine": statistics.median(before)}
    medians.update({kind: statistics.median(v) for kind, v in steps.items()})
    result = {
        "what": "seconds of one training micro-step (forward + backward): before a colocated engine starts, "
        "then beside it, idle or right after a sampling call of vLLM or of hf (the three kinds interleaved)",
        "config": args.config,
        "model": cfg.model.name,
        "lora": cfg.training.use_lora,
        "mixed_precision": cfg.training.mixed_precision,
        "batch": [cfg.training.per_device_batch_size, args.tokens],
        "sampling": {
            "prompts": len(prompts),
            "prompt_tokens": len(prompts[0]),
            "new_tokens": settings.max_new_tokens,
        },
        "rounds": args.rounds,
        "step_seconds": {"without_engine": before, **steps},
        "median_step_seconds": medians,
        "with_over_without": medians["engine_idle"] / medians["without_engine"],
        "sampling_seconds": sampling,
        "engine_start_seconds": engine_start,
        "torch_threads": {"before": threads_before, "after_engine_start": threads_after},
        "set_num_threads_works_after_engine_start": settable,
        "environment": {
            "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpus": os.cpu_count(),
        },
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "packages": package_versions(("torch", "transformers", "peft", "vllm")),
    }
    write_json_atomic(args.output, result)
    print(
        ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in medians.items())
        + f"; threads {threads_before} -> {threads_after}, set_num_threads works after: {settable}"
    )
    return result


def mixed_precision(cfg):
    """The autocast context of training.mixed_precision on a CPU (disabled for "no")."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.training.mixed_precision)
    return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)


def training_micro_step(cfg, model, tokens: int):
    """A function running one forward + backward of a fixed random batch (per_device_batch_size x tokens)
    through `model` under the config's mixed precision, gradients cleared after."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(
        0, model.config.vocab_size, (cfg.training.per_device_batch_size, tokens), generator=generator
    )
    model.train()

    def step():
        with mixed_precision(cfg):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def timed(function) -> float:
    tick = time.perf_counter()
    function()
    return time.perf_counter() - tick


def colocation_markdown(results: list[dict]) -> str:
    """Several runs' median step seconds, without and beside the engine (result_tables kind
    `vllm-colocation`)."""
    ratios = sorted(r["with_over_without"] for r in results)
    lines = [
        "| run | without engine | beside it, idle | after vLLM sampling | after hf sampling | vLLM / hf sampling (s) "
        "| threads before → after | set_num_threads after start | load average |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(results, 1):
        m, t, load, sampling = (
            r["median_step_seconds"],
            r["torch_threads"],
            r["load_average"],
            r["sampling_seconds"],
        )
        vllm, hf = (statistics.median(sampling[k]) for k in ("after_vllm_sampling", "after_hf_sampling"))
        works = "works" if r["set_num_threads_works_after_engine_start"] else "ignored"
        lines.append(
            f"| {i} | {m['without_engine']:.2f} s | {m['engine_idle']:.2f} s | {m['after_vllm_sampling']:.2f} s | "
            f"{m['after_hf_sampling']:.2f} s | {vllm:.1f} / {hf:.1f} | {t['before']} → {t['after_engine_start']} | "
            f"{works} | {load['before']:.1f} → {load['after']:.1f} |"
        )
    lines.append(
        f"\nStep beside the idle engine / without it: median {statistics.median(ratios):.2f}, range "
        f"{ratios[0]:.2f}–{ratios[-1]:.2f} ({len(results)} runs)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

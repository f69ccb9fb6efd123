"""Do the vllm and hf generation backends give the same verdicts? Both on the same prompts, in one run.

    # from the vLLM environment (bash scripts/setup_vllm.sh), the twostep data and SmolLM2 prepared:
    .venv-vllm/bin/python scripts/vllm_agreement.py --config configs/twostep/sft.yaml vllm.enforce_eager=true \
        --n_samples 200 --dtypes float32 bfloat16 --output experiments/vllm/agreement.json

For each dtype (model.dtype) and shot count (eval.icl_shots, or --shots), the base model's greedy answers to
eval_icl.py's prompts (k exemplars drawn once with eval.icl_seed; the test split's seeded subset of
eval.n_samples problems) from transformers (generate_hf, eval.batch_size per call) and from one vLLM engine
(VLLMGenerator: the engine eval_icl.py --backend vllm builds), each scored by the task. Per cell: both
accuracies, the problems whose verdict agrees and whose text is identical, the seconds per problem of each
backend's generation alone (the median of --repeats rounds, the backends alternating in one process; the
model's load and the engine's start recorded apart), and the problems whose verdict differs, with both
texts. The load average before and after says how busy the (shared) machine was.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.errors import exit_on_user_error

DTYPES = ("float32", "bfloat16")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--output", required=True, help="Result JSON (written once, at the end).")
    parser.add_argument("--n_samples", type=int, help="Test subset size (default: eval.n_samples).")
    parser.add_argument("--shots", type=int, nargs="+", help="Shot counts (default: eval.icl_shots).")
    parser.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="model.dtype values."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Timed rounds per backend (the median is kept)."
    )
    args = parser.parse_intermixed_args(argv)
    flags = {"n_samples": args.n_samples, "icl_shots": args.shots}
    args.overrides = [f"eval.{k}={v}" for k, v in flags.items() if v is not None] + args.overrides
    return args


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse(argv)  # before the imports below: --help loads no torch
    import dataclasses

    from fsdistill.eval import evaluate as ev
    from fsdistill.eval.results import collect_provenance
    from fsdistill.files import write_json_atomic
    from fsdistill.tasks.rows import data_provenance, data_roles

    cfg, _ = config_from_args(args)
    session = eval_inputs(cfg)
    cells = []
    for dtype in args.dtypes:
        run_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype=dtype))
        cells += compare_backends(run_cfg, session, args.repeats)
    result = {
        "what": "greedy answers of the hf and vllm backends to the same prompts (eval_icl.py's), scored by the task",
        "model": cfg.model.name,
        "task": cfg.task.name,
        "split": "test",
        "n": len(session.data.examples),
        "max_new_tokens": ev.generation_settings(cfg, session.prompts).max_new_tokens,
        "hf_batch_size": cfg.eval.batch_size,
        "repeats": args.repeats,
        "vllm": {
            "enforce_eager": cfg.vllm.enforce_eager,
            "engine_in_process": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0",
            "cpu_kv_cache_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
        },
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "cells": cells,
        "provenance": collect_provenance(
            data_provenance(cfg.data.source, data_roles(cfg, "test")),
            tokenizer=cfg.model.tokenizer or cfg.model.name,
        ),
    }
    write_json_atomic(args.output, result)
    print(agreement_markdown(result))
    return result


def eval_inputs(cfg):
    """What eval_icl.py reads: the tokenizer, its prompt builder, the test subset and the exemplar pool."""
    from types import SimpleNamespace

    from fsdistill.data.prompts import PromptBuilder, load_tokenizer
    from fsdistill.eval.evaluate import load_eval_data

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    data = load_eval_data(cfg, prompts.task, "test")
    return SimpleNamespace(tokenizer=tokenizer, prompts=prompts, task=prompts.task, data=data)


def compare_backends(cfg, session, repeats: int) -> list[dict]:
    """One cell per shot count for this config's dtype. The hf model and the engine are both loaded, then
    `repeats` rounds generate every shot count with each backend, in turn, the order alternating from
    round to round (so a busy spell of the shared machine falls on both); seconds are the rounds' median.
    Greedy decoding: every round must give the same texts."""
    import statistics

    import torch

    from fsdistill.eval import evaluate as ev
    from fsdistill.eval.generation import VLLMGenerator, generate_hf
    from fsdistill.modeling.loading import load_causal_lm

    settings = ev.generation_settings(cfg, session.prompts)
    shots = list(cfg.eval.icl_shots)
    prompt_ids = {
        k: ev.generation_prompts(
            session.prompts, session.data.examples, ev.icl_exemplars(session.data.train, k, cfg.eval.icl_seed)
        )
        for k in shots
    }
    load = os.getloadavg()[0]
    tick = time.perf_counter()
    model = load_causal_lm(cfg.model).to(ev.eval_device()).eval()
    hf_load = time.perf_counter() - tick
    tick = time.perf_counter()
    engine = VLLMGenerator(
        cfg.model.name,
        tokenizer=cfg.model.tokenizer,
        settings=settings,
        tensor_parallel_size=cfg.eval.tensor_parallel_size,
        dtype=cfg.model.dtype,
        max_lora_rank=None,
        gpu_memory_utilization=cfg.eval.gpu_memory_utilization,
        enforce_eager=cfg.vllm.enforce_eager,
    )
    engine_start = time.perf_counter() - tick
    backends = {
        "hf": lambda ids: generate_hf(
            model, session.tokenizer, ids, settings, cfg.eval.batch_size, progress=False
        ),
        "vllm": engine.generate,
    }
    texts: dict = {}
    seconds: dict = {(name, k): [] for name in backends for k in shots}
    try:
        for round_ in range(repeats):
            for name in sorted(backends, reverse=round_ % 2 == 1):
                for k in shots:
                    out, spent = timed(backends[name], prompt_ids[k])
                    if texts.setdefault((name, k), out) != out:
                        raise RuntimeError(f"{name} {k}-shot: greedy texts changed between rounds")
                    seconds[name, k].append(spent)
    finally:
        engine.close()
    cells = []
    for k in shots:
        cell = agreement(session.task, session.data.examples, texts["hf", k], texts["vllm", k])
        n = len(prompt_ids[k])
        cell.update(
            dtype=cfg.model.dtype,
            shots=k,
            seconds_per_problem={name: statistics.median(seconds[name, k]) / n for name in backends},
            seconds_per_round={name: seconds[name, k] for name in backends},
            hf_model_load_seconds=hf_load,
            vllm_engine_start_seconds=engine_start,
            load_average={"before": load, "after": os.getloadavg()[0]},
            torch_threads=torch.get_num_threads(),
        )
        cells.append(cell)
    return cells


def timed(function, *args):
    tick = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - tick


def agreement(task, examples, hf_texts: list[str], vllm_texts: list[str]) -> dict:
    """Both backends' accuracy on the same problems, how many verdicts and texts agree, and the problems
    whose verdict differs (index, gold, both texts)."""
    from fsdistill.eval.evaluate import score_examples

    hf, vllm = score_examples(task, examples, hf_texts), score_examples(task, examples, vllm_texts)
    n = len(examples)
    differ = [
        {"index": a["index"], "gold": a["gold"], "hf": a["prediction"], "vllm": b["prediction"]}
        for a, b in zip(hf, vllm)
        if a["correct"] != b["correct"]
    ]
    return {
        "n": n,
        "accuracy": {"hf": sum(r["correct"] for r in hf) / n, "vllm": sum(r["correct"] for r in vllm) / n},
        "same_verdict": n - len(differ),
        "same_text": sum(a == b for a, b in zip(hf_texts, vllm_texts)),
        "verdict_differs": differ,
    }


def agreement_markdown(result: dict) -> str:
    """The table README.md / compute.md show (result_tables kind `vllm-agreement`)."""
    lines = [
        "| dtype | shots | n | accuracy hf | accuracy vLLM | same verdict | same text | s/problem hf | s/problem vLLM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in result["cells"]:
        acc, sec, n = c["accuracy"], c["seconds_per_problem"], c["n"]
        lines.append(
            f"| {c['dtype']} | {c['shots']} | {n} | {acc['hf']:.1%} | {acc['vllm']:.1%} | "
            f"{c['same_verdict']}/{n} ({c['same_verdict'] / n:.1%}) | {c['same_text']}/{n} | "
            f"{sec['hf']:.3f} | {sec['vllm']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

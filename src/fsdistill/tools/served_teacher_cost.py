"""What a served teacher costs against the local one on the same teacher sequences.

    # a server of the config's model (float32 like the local side), then from the vLLM environment:
    python -m vllm.entrypoints.openai.api_server --model MODEL --dtype float32 --enforce-eager --port 8000 &
    .venv-vllm/bin/python scripts/served_teacher_cost.py --config configs/twostep/distill.yaml \
        --server http://127.0.0.1:8000 --output experiments/vllm/served_teacher_cost.json \
        model.dtype=float32 training.mixed_precision=no fewshot.selection=fixed distill.loss=forward_kl \
        distill.top_k=8 distill.topk_support=tail_bucket

The first --micro_batches micro-batches of the training stream (with fixed shots the exemplars are a prefix
every teacher sequence shares); each repeat times, in rotated order, the targets of all of them from (1) the
local teacher reusing the shared prefix's keys/values (teacher.prefix_cache, what a run uses), (2) the local
teacher without it, (3) the served teacher: one request for all of them, as a training step sends its
micro-batches (vLLM computes every prompt position's log-probabilities and reads no prefix cache for such a
request). One process, the server on the same machine: the two share its cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from types import SimpleNamespace

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.errors import exit_on_user_error


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--server", required=True, help="URL of a vllm serve of the config's model.")
    parser.add_argument("--output", required=True, help="Result JSON.")
    parser.add_argument("--micro_batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_intermixed_args(argv)


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse(argv)  # before the imports below: --help loads no torch
    import torch

    from fsdistill.data.batch import build_training_batches
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.served_teacher import ServedTeacher, TeacherServer, check_server
    from fsdistill.distill.teacher import make_live_teacher, make_teacher
    from fsdistill.files import package_versions, write_json_atomic
    from fsdistill.modeling.loading import load_student
    from fsdistill.tools.bench import first_micro_batches, shared_prefix_tokens

    cfg, _ = config_from_args(args)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    stream = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    batches = first_micro_batches(stream, cfg, args.micro_batches)
    student = load_student(cfg)
    live = make_teacher(cfg, student)
    no_prefix_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, prefix_cache=False))
    plain = make_live_teacher(no_prefix_cfg, live.answer_lm, live.adapter_off)
    if live.prefix is None:
        print(
            "warning: the local teacher reuses no prefix here (use fewshot.selection=fixed)", file=sys.stderr
        )
    server = TeacherServer(args.server, cfg.model.name, 600.0, 0, 0.0)
    check_server(server, cfg.distill.top_k)
    served = ServedTeacher(
        server, tokenizer, cfg.distill.top_k, None, cfg.distill.topk_support == "tail_bucket"
    )
    micro = [SimpleNamespace(batch=b) for b in batches]

    def local(teacher):
        with torch.no_grad():
            for b in batches:
                teacher.targets(b, answer_positions(b))

    def remote():
        failure = served.prepare_step(micro)
        if failure:
            raise RuntimeError(failure)

    kinds = {
        "local_prefix_cached": lambda: local(live),
        "local_no_prefix": lambda: local(plain),
        "served": remote,
    }
    local(live)  # warm-up: the prefix's keys/values computed once, as in a run
    seconds = {k: [] for k in kinds}
    for r in range(args.repeats):
        order = list(kinds)[r % 3 :] + list(kinds)[: r % 3]
        for kind in order:
            tick = time.perf_counter()
            kinds[kind]()
            seconds[kind].append(time.perf_counter() - tick)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "what": "seconds to get the teacher targets of the same micro-batches: local teacher with and without "
        "the shared-prefix cache, and a vLLM server (one request for all micro-batches)",
        "config": args.config,
        "model": cfg.model.name,
        "dtype": cfg.model.dtype,
        "top_k": cfg.distill.top_k,
        "micro_batches": len(batches),
        "rows": sum(int(b.teacher_ids.shape[0]) for b in batches),
        "teacher_tokens": sum(int(b.teacher_mask.sum()) for b in batches),
        "answer_tokens": sum(int(b.num_answer_tokens) for b in batches),
        "shared_prefix_tokens": shared_prefix_tokens(cfg, batches[0]),
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": medians,
        "served_over_local_prefix_cached": medians["served"] / medians["local_prefix_cached"],
        "range_served_over_local_prefix_cached": [
            min(seconds["served"]) / max(seconds["local_prefix_cached"]),
            max(seconds["served"]) / min(seconds["local_prefix_cached"]),
        ],
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
    }
    write_json_atomic(args.output, result)
    print(", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    return result

"""Time scripts/compare_evals.py on a result file of two entries of a million paired examples each.

What it measures is the paired comparison at scale, reading included: the command runs in a child
process exactly as a user runs it (``compare_evals.py --evals FILE --a run_a --b run_b``, default
--n_boot), and its wall time and peak resident memory (getrusage of the child) are recorded. The file is
made once per invocation, before any timing, from a seeded draw of the four paired cells (both right,
only a, only b, neither) with short predictions ("... Answer: 42"), the shape of a generated evaluation
entry; its size is recorded too.

    python scripts/bench_compare_evals.py        # -> experiments/bench/compare_evals_1m.json (3 runs)

Each run is one measurement; --runs repeats it (the median and range are reported). The JSON also keeps
what the command printed, so the statistics themselves can be read beside their cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fsdistill.errors import exit_on_user_error
from fsdistill.tools.bench import REPO, load_average, summary

# The paired table the synthetic entries are drawn from: P(both right), P(only a), P(only b), P(neither).
CELLS = (0.60, 0.10, 0.08, 0.22)
LIMITS = {"seconds": 60.0, "peak_mib": 4096.0}  # the target for n = 1,000,000


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="paired examples per entry (default 1,000,000)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of compare_evals.py (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic outcomes")
    p.add_argument("--output", default=str(REPO / "experiments" / "bench" / "compare_evals_1m.json"))
    args = p.parse_args(argv)
    if args.n < 1 or args.runs < 1:
        p.error("--n and --runs must be at least 1")
    return args


def synthetic_results(n: int, seed: int) -> dict:
    """A result file (the schema of eval/results.py) with entries run_a and run_b at step 100, scored on
    the same n examples, their correctness drawn per example from CELLS."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cell = rng.choice(4, size=n, p=CELLS)
    answers = rng.integers(0, 1000, size=n)
    correct_a = (cell == 0) | (cell == 1)
    correct_b = (cell == 0) | (cell == 2)

    def entry(condition: str, correct) -> dict:
        examples = []
        for i in range(n):
            gold = str(int(answers[i]))
            said = gold if correct[i] else str(int(answers[i]) + 1)
            examples.append(
                {
                    "index": i,
                    "prediction": f"{said} Answer: {said}",
                    "extracted": said,
                    "gold": gold,
                    "correct": bool(correct[i]),
                }
            )
        n_correct = int(correct.sum())
        return {
            "condition": condition,
            "method": "sft",
            "step": 100,
            "shots": 0,
            "checkpoint": None,
            "accuracy": n_correct / n,
            "n": n,
            "n_correct": n_correct,
            "ci95": [0.0, 1.0],  # not read by the comparison
            "examples": examples,
            "teacher_forced": None,
        }

    provenance = {"git_commit": None, "packages": {}, "data_sha256": None, "tokenizer": None, "created": None}
    return {
        "schema_version": 1,
        "kind": "eval",
        "settings": {"script": "bench_compare_evals", "n": n, "seed": seed},
        "provenance": provenance,
        "results": [entry("run_a", correct_a), entry("run_b", correct_b)],
    }


def timed_compare(evals: Path, output: Path) -> dict:
    """One run of compare_evals.py in a child process: wall seconds, the child's peak RSS, its output."""
    command = [
        sys.executable,
        str(REPO / "scripts" / "compare_evals.py"),
        "--evals",
        str(evals),
        "--a",
        "run_a",
        "--b",
        "run_b",
        "--output",
        str(output),
    ]
    load = load_average()
    tick = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait4 reports this child's own peak RSS (getrusage(RUSAGE_CHILDREN) would keep the largest of all).
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - tick
    printed = child.stdout.read()
    child.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"compare_evals.py failed ({status}):\n{printed}")
    return {
        "seconds": seconds,
        "peak_mib": usage.ru_maxrss / 1024,
        "load_average_1min": load,
        "printed": printed.splitlines(),
    }


@exit_on_user_error
def main(argv=None) -> dict:
    from fsdistill.files import git_state, write_json_atomic

    args = parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_compare_") as tmp:
        evals, out = Path(tmp) / "evals.json", Path(tmp) / "compare.json"
        print(f"bench compare: writing two entries of {args.n:,} examples ...", file=sys.stderr)
        evals.write_text(json.dumps(synthetic_results(args.n, args.seed)), encoding="utf-8")
        size_mib = evals.stat().st_size / 2**20
        for r in range(args.runs):
            runs.append(timed_compare(evals, out))
            print(
                f"run {r + 1}: {runs[-1]['seconds']:.1f} s, peak {runs[-1]['peak_mib']:.0f} MiB",
                file=sys.stderr,
            )
        comparison = json.loads(out.read_text(encoding="utf-8"))["comparisons"][0]
    seconds, peaks = [r["seconds"] for r in runs], [r["peak_mib"] for r in runs]
    result = {
        "what": "scripts/compare_evals.py on one result file of two entries (run_a, run_b) of n paired "
        "examples each, default --n_boot, in a child process: wall seconds (reading, statistics, writing) "
        "and the child's peak resident memory",
        "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        "n": args.n,
        "cells": dict(zip(("both", "a_only", "b_only", "neither"), CELLS)),
        "file_mib": size_mib,
        "runs": args.runs,
        "seconds": summary(seconds),
        "peak_mib": summary(peaks),
        "load_average_1min": summary([r["load_average_1min"] for r in runs]),
        "limits": LIMITS,
        "within_limits": max(seconds) < LIMITS["seconds"] and max(peaks) < LIMITS["peak_mib"],
        "comparison": {k: comparison[k] for k in ("n", "diff_pp", "diff_ci95_pp", "mcnemar_p")}
        | {"a_only_correct": comparison["a_only_correct"], "b_only_correct": comparison["b_only_correct"]},
        "printed": runs[-1]["printed"],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "git_commit": git_state()["commit"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(args.output, result)
    print(
        f"compare_evals.py, 2 x {args.n:,} examples ({size_mib:.0f} MiB): median {statistics.median(seconds):.1f} s "
        f"[{min(seconds):.1f}, {max(seconds):.1f}], peak {max(peaks):.0f} MiB over {args.runs} runs"
    )
    print(f"wrote {args.output}")
    return result


def compare_bench_markdown(result: dict) -> str:
    """The comparison benchmark's JSON as Markdown (compute.md renders it, never typed in)."""
    s, m, c = result["seconds"], result["peak_mib"], result["comparison"]
    lo, hi = c["diff_ci95_pp"]
    # a p-value below the smallest positive double is written 0.0 in the JSON
    p_text = f"{c['mcnemar_p']:.3g}" if c["mcnemar_p"] > 0 else "0 (below the smallest positive double)"
    return (
        "\n".join(
            [
                "| examples per entry | result file MiB | runs | wall s: median [min, max] | peak MiB: median [min, max] | target |",
                "| --- | --- | --- | --- | --- | --- |",
                f"| {result['n']:,} | {result['file_mib']:.0f} | {result['runs']} | {s['median']:.1f} "
                f"[{s['min']:.1f}, {s['max']:.1f}] | {m['median']:.0f} [{m['min']:.0f}, {m['max']:.0f}] | "
                f"< {result['limits']['seconds']:.0f} s, < {result['limits']['peak_mib']:.0f} MiB |",
                "",
                f"Machine load when each run started (1-minute load average, {result['machine']['cpus']} "
                f"cores, shared): median {result['load_average_1min']['median']:.2f} "
                f"[{result['load_average_1min']['min']:.2f}, {result['load_average_1min']['max']:.2f}].",
                "",
                f"What it computed: a − b = {c['diff_pp']:+.3f} pp [{lo:+.3f}, {hi:+.3f}] (paired bootstrap, "
                f"{c['a_only_correct']:,} vs {c['b_only_correct']:,} discordant), McNemar p = {p_text}.",
            ]
        )
        + "\n"
    )

"""The GPU check: one command for a lent GPU, under 5 minutes on one GPU, its JSON rewritten after every
stage (a run cut off at its time limit still reports what it did, and names the stage it was in).

    python scripts/prepare_gpu_check.py                  # here: wheels, tokenizer, config, data -> .gpu_carry/
    bash scripts/gpu_check.sh --output "$OUT"            # there (compute.md gives the device command)
    python scripts/gpu_check.py --smoke --output DIR     # here, on CPU: the same stages on a tiny model

Stages (each a record in gpu_check.json: status ok | failed | skipped with its reason, seconds):
  environment          python, torch, CUDA, the device, its bf16 peak TFLOP/s (for MFU), package versions
  gpu_tests            `pytest -m "gpu or vllm"` on the test files that mark tests so, each test's outcome
                       from the JUnit report: the vLLM tests (the real engine, tests/test_vllm.py) are
                       reported as skipped where vLLM is not installed, never as passed
  activation_formula   fsdistill.tools.memory's bytes per decoder layer against what autograd saves, for
                       each model family (Llama, Qwen 3, Gemma 3) and case (LoRA, full FT fp32 / bf16),
                       on this device (CUDA: bool dropout masks, its attention kernels)
  train_*              10 optimizer steps at the Qwen3-1.7B shape (random weights, bf16, LoRA r16, per-device
                       batch 4, no accumulation, 16 GSM8K rows so that later steps revisit examples): SFT;
                       8-shot distillation with the teacher cache off; on (teacher.cache=memory); and with
                       fixed shots (the exemplar prefix's keys/values reused). Each: seconds per step (the
                       recipe's own timing of each step), tokens/s, peak memory (torch.cuda.
                       max_memory_allocated) next to the memory estimate for the same widths (ddp_lora on
                       1 GPU, fsdistill.tools.memory)
  bench                scripts/bench_step.py --preset gpu: the five variants' seconds, their ratios beside the
                       FLOP floors, tokens/s, the SFT step's MFU against the device's bf16 peak

--smoke: on CPU, a tiny random model (configs/tiny), 2 steps, the bench on one micro-batch; the GPU-only
stage (gpu_tests) is skipped with its reason, peak memory is not measured (no CUDA allocator). The test
suite runs it (tests/test_gpu_check.py).

The machine it was written for (compute.md): one H200, Python 3.12, torch 2.11, transformers 5.17, peft,
accelerate, tensorboard; no omegaconf, no Hub, and ../shared does not travel: scripts/prepare_gpu_check.py
puts what is missing into .gpu_carry/ (git-ignored), and scripts/gpu_check.sh installs the wheels into a
folder of their own and points FSDISTILL_SHARED at the carried data.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import (
    describe_files,
    files_under,
    folders_under,
    listed_unchanged,
    remove,
    remove_made_folder,
)
from fsdistill.tools.bench import PEAK_TFLOPS, REPO, SHARED

CARRY = REPO / ".gpu_carry"
STEPS, SMOKE_STEPS = 10, 2
# The runs of the train_* stages: (stage, entry point, config, overrides on top of the common ones).
RUNS = [
    ("train_sft", "train_baseline", "base.yaml", []),
    ("train_distill_cache_off", "train_online_v1", "online_v1.yaml", ["teacher.cache=off"]),
    ("train_distill_cache_memory", "train_online_v1", "online_v1.yaml", ["teacher.cache=memory"]),
    ("train_distill_fixed_prefix", "train_online_v1", "online_v1.yaml", ["fewshot.selection=fixed"]),
]
STAGES = ["environment", "gpu_tests", "activation_formula", *[r[0] for r in RUNS], "bench"]


# ------------------------------------------------------------------------------------------------
# The record, rewritten after every stage
# ------------------------------------------------------------------------------------------------


class Check:
    """gpu_check.json: what ran, stage by stage. Written (atomically) when a stage starts, with status
    "running", and when it ends, so a run killed mid-stage leaves the stage it died in named."""

    def __init__(self, out: Path, smoke: bool, deadline: float):
        self.path = out / "gpu_check.json"
        self.deadline = deadline
        self.record = {
            "what": "the GPU check (fsdistill/tools/gpu_check.py): stages in order, each ok, failed or skipped",
            "smoke": smoke,
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stages": {},
        }

    def write(self) -> None:
        from fsdistill.files import write_json_atomic

        write_json_atomic(self.path, self.record)

    def run(self, name: str, fn, skip: str | None = None) -> dict:
        rec: dict = {"status": "running"}
        self.record["stages"][name] = rec
        if skip is None and time.monotonic() > self.deadline:
            skip = "out of time (--budget-seconds): not started"
        if skip is not None:
            rec.update(status="skipped", reason=skip)
            self.write()
            return rec
        self.write()
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        tick = time.monotonic()
        try:
            result = fn()
            rec.update(result)
            rec["status"] = result.get("status", "ok")  # a stage may report its own failure (gpu_tests)
        except (Exception, SystemExit) as e:  # a UserError in a run exits 2: recorded, next stage
            rec.update(
                status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:]
            )
        rec["seconds"] = round(time.monotonic() - tick, 2)
        self.write()
        print(f"gpu_check: {name}: {rec['status']} ({rec['seconds']} s)", file=sys.stderr, flush=True)
        return rec


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------


def environment() -> dict:
    import torch

    from fsdistill.files import git_state, package_versions

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "versions": package_versions(
            ("torch", "transformers", "peft", "accelerate", "omegaconf", "tokenizers", "safetensors", "vllm")
        ),
        "git": git_state(),
        "carried": json.loads((CARRY / "MANIFEST.json").read_text())
        if (CARRY / "MANIFEST.json").exists()
        else None,
        "shared": str(SHARED),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        info["device"] = {
            "name": name,
            "count": torch.cuda.device_count(),
            "capability": list(torch.cuda.get_device_capability(0)),
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "bf16_peak_tflops": next((t for k, t in PEAK_TFLOPS.items() if k in name), None),
            "peak_source": "dense bf16 peak of the data sheet (fsdistill/tools/bench.py PEAK_TFLOPS)",
        }
    return info


def gpu_tests(out: Path) -> dict:
    """`pytest -m "gpu or vllm"` on the files that mark such tests (the vLLM ones run the real engine on the
    GPU where vLLM is installed); every test's outcome from its JUnit report."""
    import xml.etree.ElementTree as ET

    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").glob("test_*.py")
        if re.search(r"pytest\.mark\.(gpu|vllm)\b", p.read_text())
    )
    report = out / "pytest_gpu.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu or vllm", "-q", "-rs", "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}", *files]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    tests = []
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome, message = "passed", None
            for tag in ("skipped", "failure", "error"):
                node = case.find(tag)
                if node is not None:
                    outcome, message = tag if tag != "failure" else "failed", node.get("message")
                    break
            tests.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome,
                    "message": message,
                }
            )
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    failed = done.returncode not in (0, 5) or counts["failed"] or counts["error"]  # 5: nothing collected
    return {
        "status": "failed" if failed else "ok",
        "command": command,
        "exit_status": done.returncode,
        "counts": counts,
        "tests": tests,
        "output_tail": (done.stdout + done.stderr)[-3000:],
    }


def activation_formula(device: str, families=None) -> dict:
    """Bytes one decoder layer saves for backward, measured (3 layers minus 2) against the formula, for
    `families` (default: every family the estimate knows)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fsdistill.tools import memory

    batch, seq = 2, 64
    mask_bytes = 1 if device == "cuda" else 4  # dropout masks: bool on CUDA, float32 on CPU
    tiny = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_attention_heads=4)
    tiny.update(num_key_value_heads=2, head_dim=24)

    def saved(model_type: str, case: str, layers: int) -> int:
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, num_hidden_layers=layers, **tiny)
        dtype = torch.float32 if case == "full_fp32" else torch.bfloat16
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device)
        module = model
        if case == "lora":
            import peft

            lora = peft.LoraConfig(
                r=8, lora_alpha=16, lora_dropout=0.05, target_modules=list(memory.LORA_TARGETS)
            )
            module = peft.get_peft_model(model, lora)
        module.train()
        ids = torch.randint(0, 1000, (batch, seq), generator=torch.Generator().manual_seed(1)).to(device)
        mask = torch.ones(batch, seq, dtype=torch.long, device=device)
        mask[0, -16:] = 0

        def forward():
            with torch.autocast(device, dtype=torch.bfloat16):
                return model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)

        return memory.saved_activation_bytes(module, forward)

    rows = []
    for model_type in families or memory.FAMILIES:
        shape = memory.ModelShape.from_config(
            AutoConfig.for_model(model_type, num_hidden_layers=2, **tiny).to_dict(), model_type
        )
        for case in memory.CASES:
            measured = saved(model_type, case, 3) - saved(model_type, case, 2)
            per_token, per_layer = memory.layer_activation_bytes(
                shape, seq, case, memory.Lora(8, 0.05), mask_bytes
            )
            formula = batch * seq * per_token + per_layer
            rows.append(
                {
                    "family": model_type,
                    "case": case,
                    "measured": measured,
                    "formula": formula,
                    "ratio": measured / formula,
                }
            )
    worst = max(abs(r["ratio"] - 1) for r in rows)
    return {"device": device, "batch": batch, "seq_len": seq, "rows": rows, "max_relative_difference": worst}


def run_settings(smoke: bool, shared: Path) -> tuple[Path, list[str]]:
    """(configs folder, overrides every train_* run shares)."""
    common = [
        f"model.tokenizer={shared / 'tokenizers' / 'qwen3'}",
        f"data.source={shared / 'data' / 'gsm8k'}",
        "data.max_train_examples=16",
        f"training.max_steps={SMOKE_STEPS if smoke else STEPS}",
        f"training.save_every={SMOKE_STEPS if smoke else STEPS}",
        "training.per_device_batch_size=4",
        "training.grad_accum_steps=1",
        "training.global_batch_size=null",
        "training.warmup_steps=0",
        "training.log_every=1",
        "output.log_with=[]",
    ]
    if smoke:  # a smaller step than the GPU's: the tiny model's 151,936-word head dominates on a CPU
        return REPO / "configs" / "tiny", [*common, "training.per_device_batch_size=2"]
    return REPO / "configs", [*common, f"model.name={shared / 'models' / 'qwen3-1.7b'}", "model.init=random"]


def run_overrides(smoke: bool, extra: list[str], teacher: bool) -> list[str]:
    """A run's own overrides; smoke distillation runs use 1 shot and a short prefix minimum (tiny)."""
    if smoke and teacher:
        return [*extra, "fewshot.k=1", "teacher.prefix_min_tokens=16"]
    return extra


@functools.lru_cache(maxsize=2)
def cached_tokenizer(path: str):
    from fsdistill.data.prompts import load_tokenizer

    return load_tokenizer(path)


def widths(config: str, overrides: list[str], with_teacher: bool, steps: int) -> dict:
    """The widest micro-batches of the run's steps (what its peak memory depends on)."""
    from fsdistill.config import load_config
    from fsdistill.data.batch import build_training_batches

    cfg, _ = load_config(config, overrides=overrides)
    stream = build_training_batches(cfg, cached_tokenizer(cfg.model.tokenizer), with_teacher, 1)
    found = {"student": 0, "teacher": 0, "answer_tokens": 0}
    for step in range(steps):
        b = stream.micro_batch(step, 0, 0, 1, cfg.training.per_device_batch_size).batch
        found["student"] = max(found["student"], int(b.student_ids.shape[1]))
        found["answer_tokens"] = max(found["answer_tokens"], b.num_answer_tokens)
        if with_teacher:
            found["teacher"] = max(found["teacher"], int(b.teacher_ids.shape[1]))
    return found


def train_run(entry: str, config: str, overrides: list[str], work_dir: Path, smoke: bool) -> dict:
    """One training run in this process: the recipe's time of each step, metrics, peak memory, estimate."""
    import gc

    import torch

    from fsdistill.config import load_config
    from fsdistill.modeling.loading import model_config
    from fsdistill.tools import memory
    from fsdistill.train import entry as entries
    from fsdistill.train import recipe

    steps = SMOKE_STEPS if smoke else STEPS
    run_dir = work_dir / Path(config).stem / entry
    seconds: dict[int, float] = {}
    log_step = recipe.log_step

    def timed(state, step, result, took):  # the recipe times train_step and hands the seconds here
        seconds[step] = took
        return log_step(state, step, result, took)

    cuda = torch.cuda.is_available()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else None
    recipe.log_step = timed
    try:
        # The entry point without its exit-on-error wrapper: a UserError is recorded with its message.
        getattr(entries, entry).__wrapped__(["--config", config, "--output_dir", str(run_dir), *overrides])
    finally:
        recipe.log_step = log_step
    peak = torch.cuda.max_memory_allocated() if cuda else None
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    cfg, _ = load_config(config, overrides=overrides)
    with_teacher = entry != "train_baseline"
    found = widths(config, overrides, with_teacher, steps)
    shape = memory.ModelShape.from_config(model_config(cfg.model).to_dict(), cfg.model.name or "tiny")
    b = cfg.training.per_device_batch_size
    work = memory.Workload(
        per_device_batch=b,
        student_tokens=found["student"],
        teacher_tokens=found["teacher"] if with_teacher else None,
        answer_tokens=math.ceil(found["answer_tokens"] / b),
        logits_chunk=cfg.training.logits_chunk_size,
        lora=memory.Lora(cfg.lora.r, cfg.lora.dropout, tuple(cfg.lora.target_modules)),
    )
    mode = "ddp_lora" if cfg.training.use_lora else "ddp_full"
    estimate = memory.estimate(shape, work, mode, 1, checkpointing=cfg.model.gradient_checkpointing)
    later = [seconds[s] for s in sorted(seconds) if s > 1] or list(seconds.values())
    result = {
        "entry": entry,
        "config": str(Path(config).relative_to(REPO)),
        "overrides": overrides,
        "steps": len(seconds),
        "seconds_per_step": [round(seconds[s], 4) for s in sorted(seconds)],
        "median_seconds_per_step_after_the_first": statistics.median(later),
        "tokens_per_s_median": statistics.median(m["train/tokens_per_s"] for m in metrics),
        "last_metrics": metrics[-1],
        "widest_micro_batch": found,
        "estimate": {
            "mode": mode,
            "gpus": 1,
            "workload": {"per_device_batch": b, **found},
            "bytes": estimate,
        },
    }
    if cuda:
        result["peak_memory"] = {
            "max_memory_allocated": peak,
            "allocated_before": before,
            "max_memory_reserved": torch.cuda.max_memory_reserved(),
            "measured/estimate": peak / estimate["total"],
        }
    else:
        result["peak_memory"] = {"not_measured": "CPU: no CUDA allocator statistics"}
    remove_made_folder(work_dir, str(run_dir.relative_to(work_dir)))  # random weights: nothing to keep
    return result


def bench_stage(out: Path, smoke: bool, shared: Path) -> dict:
    from fsdistill.tools import bench

    path = out / "bench_gpu.json" if not smoke else out / "bench_smoke.json"
    if smoke:
        argv = ["--config", str(REPO / "configs" / "tiny" / "online_v1.yaml")]
        argv += [
            f"model.tokenizer={shared / 'tokenizers' / 'qwen3'}",
            f"data.source={shared / 'data' / 'gsm8k'}",
        ]
        argv += [
            "data.max_train_examples=16",
            "fewshot.k=1",
            "distill.top_k=8",
            "teacher.prefix_min_tokens=16",
            "training.per_device_batch_size=2",
        ]
        argv += ["--steps", "1", "--micro-batches", "1", "--threads", "1"]
    else:
        argv = ["--preset", "gpu", "--steps", "5"]
    result = bench.main([*argv, "--output", str(path)])
    keep = ("ratios", "predicted_ratios", "amortised", "memory", "mfu", "device")
    summary = {k: result[k] for k in keep}
    summary["seconds_median"] = {v: r["seconds"]["median"] for v, r in result["variants"].items()}
    summary["student_tokens_per_s"] = {v: r["student_tokens_per_s"] for v, r in result["variants"].items()}
    return {"argv": argv, "json": path.name, **summary}


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, help="Folder for gpu_check.json and its companions.")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny random model, 2 steps (see above).")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"Comma-separated subset of {','.join(STAGES)}."
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=280.0,
        help="Stages not started by then are skipped (recorded).",
    )
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"--stages: names from {','.join(STAGES)}, got {args.stages!r}")
    args.stages = stages
    return args


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    shared = SHARED
    needed = [shared / "tokenizers" / "qwen3", shared / "data" / "gsm8k"]
    if not args.smoke:
        needed.append(shared / "models" / "qwen3-1.7b" / "config.json")
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise UserError(
            f"not found: {', '.join(missing)}; run scripts/prepare_gpu_check.py here first (it fills .gpu_carry/), "
            "or point FSDISTILL_SHARED at a folder holding tokenizers/qwen3, data/gsm8k, models/qwen3-1.7b"
        )
    import torch

    cuda = torch.cuda.is_available()
    if not args.smoke and not cuda:
        raise UserError("no CUDA device: the GPU check needs one (--smoke runs the same stages on CPU)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args.smoke, time.monotonic() + args.budget_seconds)
    work_dir = Path(tempfile.mkdtemp(prefix="fsdistill-gpu-check-"))
    configs, common = run_settings(args.smoke, shared)
    partial = functools.partial
    # (the stage's function, the reason it is skipped or None)
    plan = {
        "environment": (environment, None),
        "gpu_tests": (
            partial(gpu_tests, out),
            "smoke mode: the gpu and vllm tests run on a CUDA GPU (the vllm ones also in .ci/run)"
            if args.smoke
            else None,
        ),
        # On CPU tests/test_memory.py checks every family already; the smoke run checks one.
        "activation_formula": (
            partial(activation_formula, "cuda" if cuda else "cpu", ["qwen3"] if args.smoke else None),
            None,
        ),
        "bench": (partial(bench_stage, out, args.smoke, shared), None),
    }
    for name, entry, config, extra in RUNS:
        overrides = [*common, *run_overrides(args.smoke, extra, entry != "train_baseline")]
        plan[name] = (partial(train_run, entry, str(configs / config), overrides, work_dir, args.smoke), None)
    try:
        for name in STAGES:
            if name in args.stages:
                fn, skip = plan[name]
                check.run(name, fn, skip)
    finally:
        remove_made_folder(work_dir.parent, work_dir.name)  # made by mkdtemp above
    statuses = {name: rec["status"] for name, rec in check.record["stages"].items()}
    check.record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    check.record["summary"] = statuses
    check.write()
    print(json.dumps(statuses, indent=1))
    print(f"wrote {check.path}")
    if any(s == "failed" for s in statuses.values()):
        sys.exit(1)
    return check.record


# ------------------------------------------------------------------------------------------------
# Preparation, here, before a GPU is lent: what the GPU machine lacks, in .gpu_carry/
# ------------------------------------------------------------------------------------------------

# What the check's code paths import that the GPU image lacks (the device tool's KINDS.md lists what it
# holds: torch, transformers, peft, accelerate, tensorboard, safetensors, numpy, pyyaml, tqdm, pytest, ...):
# omegaconf (the config schema), at the version the tests ran with. Its own requirements are read from
# the wheel and fetched too unless the image has them (omegaconf 2.4 vendors its antlr4 runtime; 2.3
# would need antlr4-python3-runtime).
WHEELS = ("omegaconf",)
ON_THE_IMAGE = {"pyyaml", "typing-extensions", "packaging", "numpy", "torch", "setuptools"}
# The GPU machine's Python and platform (x86-64 manylinux): pip matches each platform tag exactly.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
GSM8K_ROWS = {"train": 300, "test": 50}  # the check reads 16 training rows; the rest is headroom
TREE_LIMIT = 64 * 2**20  # what the device tool carries: tracked files + the carry folder
DEVICE_COMMAND = 'bash scripts/gpu_check.sh --output "$OUT"'


def wheel_requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines of a wheel that apply without extras (the names and version specifiers)."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return [r.split(";")[0].strip() for r in reqs if "extra ==" not in r]


def requirement_name(req: str) -> str:
    import re

    return re.split(r"[\s<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")


def download_wheels(folder: Path, python_version: str) -> list[str]:
    """pip download of WHEELS and their missing requirements for the GPU machine; returns what was asked."""
    import importlib.metadata

    folder.mkdir(parents=True)
    wanted = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    asked: list[str] = []
    while wanted:
        req = wanted.pop(0)
        asked.append(req)
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", python_version, "--implementation", "cp", "-d", str(folder)]
        command += [arg for p in PLATFORMS for arg in ("--platform", p)]
        done = subprocess.run([*command, req], capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"pip download {req} failed:\n{done.stderr[-2000:]}")
        have = {requirement_name(r) for r in asked} | ON_THE_IMAGE
        for wheel in folder.glob("*.whl"):
            for dep in wheel_requirements(wheel):
                if requirement_name(dep) not in have:
                    wanted.append(dep)
                    have.add(requirement_name(dep))
    return asked


def copy_gsm8k_slice(source: Path, target: Path) -> dict[str, int]:
    target.mkdir(parents=True)
    counts = {}
    for split, rows in GSM8K_ROWS.items():
        lines = (source / f"{split}.jsonl").read_text().splitlines()[:rows]
        (target / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def tracked_bytes() -> int:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    names = [n for n in done.stdout.decode().split("\0") if n]
    return sum((REPO / n).stat().st_size for n in names if (REPO / n).is_file())


def clear_carry(carry: Path, relative: str) -> None:
    """Delete a carry folder this command filled before: exactly the files its MANIFEST.json lists, each
    unchanged (size and sha256), then the emptied folders. A file of anyone else's there would travel to the
    GPU machine with the carry, so a folder holding one is refused with nothing deleted."""
    record = carry / "MANIFEST.json"
    if not record.is_file():  # absent or empty (replaceable_folder)
        return
    try:
        manifest = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(
            f"{record}: not the manifest this command writes ({e}); nothing was deleted"
        ) from None
    ours = listed_unchanged(carry, manifest.get("files") if isinstance(manifest, dict) else None, record)
    others = sorted(set(files_under(carry)) - {*ours, "MANIFEST.json"})
    if others:
        raise UserError(
            f"--carry {carry}: holds files this command did not write ({', '.join(others[:5])}), which would "
            "travel with it: move them away or choose another --carry (nothing was deleted)"
        )
    folders = [f"{relative}/{d}" for d in folders_under(carry)]
    remove(REPO, [f"{relative}/{n}" for n in [*ours, "MANIFEST.json"]], [*folders, relative])


@exit_on_user_error
def prepare_main(argv=None) -> dict:
    """scripts/prepare_gpu_check.py: fill the carry folder and print the device command."""
    parser = argparse.ArgumentParser(
        description="Put what the GPU machine lacks into a git-ignored folder that the device tool carries: "
        "wheels (omegaconf), the Qwen3 tokenizer, the Qwen3-1.7B config.json, a GSM8K slice; print the "
        "command to run there."
    )
    parser.add_argument(
        "--carry",
        default=str(CARRY),
        help="The folder to fill (one this command filled before is replaced; any other is refused).",
    )
    parser.add_argument("--python-version", default="3.12", help="The GPU machine's Python (wheel tags).")
    parser.add_argument("--skip-wheels", action="store_true", help="Leave the wheels out (tests, offline).")
    args = parser.parse_args(argv)
    from fsdistill.files import git_state, replaceable_folder, write_json_atomic

    carry = Path(args.carry)
    # The folder holding it is resolved, the carry folder itself never: a link there is refused.
    carry = carry.parent.resolve() / carry.name
    sources = {
        "tokenizer": SHARED / "tokenizers" / "qwen3",
        "model_config": SHARED / "models" / "qwen3-1.7b" / "config.json",
        "gsm8k": SHARED / "data" / "gsm8k",
    }
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise UserError(
            f"not found: {', '.join(missing)} (the shared folder beside the repo, or FSDISTILL_SHARED)"
        )
    try:
        relative = str(carry.relative_to(REPO))
    except ValueError:
        raise UserError(f"--carry {carry}: must be inside the repository to travel with it") from None
    # Replaced only when it is a carry folder this command filled (its MANIFEST.json) or empty: never a
    # folder of the user's (`--carry src` must not delete the sources).
    if not replaceable_folder(carry, lambda folder: (folder / "MANIFEST.json").is_file()):
        raise UserError(
            f"--carry {carry}: exists and is not a carry folder this command filled (no MANIFEST.json); "
            "it is left as it is: choose another --carry"
        )
    clear_carry(carry, relative)
    shared = carry / "shared"
    asked = [] if args.skip_wheels else download_wheels(carry / "wheels", args.python_version)
    shutil.copytree(sources["tokenizer"], shared / "tokenizers" / "qwen3")
    (shared / "models" / "qwen3-1.7b").mkdir(parents=True)
    shutil.copy(sources["model_config"], shared / "models" / "qwen3-1.7b" / "config.json")
    rows = copy_gsm8k_slice(sources["gsm8k"], shared / "data" / "gsm8k")
    files = describe_files(carry)
    carried = sum(f["bytes"] for f in files.values())
    tree = tracked_bytes()
    if carried + tree > TREE_LIMIT:
        raise UserError(
            f"{carried + tree} bytes would travel (tracked {tree} + carried {carried}), over the device tool's "
            f"{TREE_LIMIT} (64 MiB)"
        )
    manifest = {
        "what": "files for the GPU check (scripts/prepare_gpu_check.py); carried by the device tool",
        "git": git_state(),
        "wheels_requested": asked,
        "gsm8k_rows": rows,
        "files": files,
        "bytes": carried,
        "tracked_bytes": tree,
        "device_run": {"command": DEVICE_COMMAND, "carry": [relative], "timeout_s": 420},
    }
    write_json_atomic(carry / "MANIFEST.json", manifest)
    print(
        f"wrote {carry}: {len(files)} files, {carried / 2**20:.1f} MiB (+ {tree / 2**20:.1f} MiB of tracked files)"
    )
    print("on the GPU machine, the device tool's run with:")
    print(f"  command: {DEVICE_COMMAND}\n  carry: {json.dumps([relative])}\n  timeout_s: 420")
    return manifest

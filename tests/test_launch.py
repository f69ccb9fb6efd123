"""The shipped launch files: configs/accelerate/*.yaml and scripts/slurm/train.sbatch.

Each accelerate file parses (as YAML and as accelerate's own config class), says in its name what it
launches (processes, machines), never asks accelerate for FSDP or a precision (training.distributed and
training.mixed_precision are the config's), and one is launched with the flags the SLURM script passes.
The SLURM script runs against stand-ins for srun, scontrol and accelerate: the command line each node
gets, --resume after a requeue, and a requeue only for an interrupted run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO

ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))
NAME = re.compile(
    r"^(?:(?P<kind>ddp|fsdp)_(?P<gpus>\d+)gpu|multinode_(?P<nodes>\d+)x(?P<per_node>\d+)gpu)\.yaml$"
)
SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"


def test_there_are_single_machine_ddp_fsdp_and_multinode_files():
    names = {p.name for p in ACCELERATE}
    assert {"ddp_2gpu.yaml", "ddp_8gpu.yaml", "fsdp_8gpu.yaml", "multinode_2x8gpu.yaml"} <= names


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_file_matches_its_name(path):
    from accelerate.commands.config.config_args import ClusterConfig

    m = NAME.match(path.name)
    assert m, f"{path.name}: name it ddp_<N>gpu, fsdp_<N>gpu or multinode_<M>x<N>gpu"
    text = path.read_text()
    raw = yaml.safe_load(text)
    ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: no unknown keys, valid values
    if m["kind"]:
        machines, processes = 1, int(m["gpus"])
    else:
        machines, processes = int(m["nodes"]), int(m["nodes"]) * int(m["per_node"])
    assert (raw["num_machines"], raw["num_processes"]) == (machines, processes)
    # A plain multi-GPU launch: sharding is training.distributed's, never accelerate's FSDP plugin
    # (which falls back to DDP on CPU without a word, so it would not be the path the tests run).
    assert raw["distributed_type"] == "MULTI_GPU" and "fsdp_config" not in raw
    assert raw["use_cpu"] is False
    # The string "no", not YAML's false: the run refuses a launcher precision that disagrees with its own.
    assert raw["mixed_precision"] == "no"
    if m["kind"] == "fsdp":
        assert "training.distributed=fsdp" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_multinode_file_launches_with_the_flags_the_slurm_script_passes(tmp_path):
    """On CPU, one machine of 2 processes: accelerate accepts the file and the node flags, and hands the
    workers the world size and a precision the run accepts ("no")."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os\n"
        "keys = ['RANK', 'WORLD_SIZE', 'ACCELERATE_MIXED_PRECISION']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
    )
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(CONFIGS / "accelerate" / "multinode_2x8gpu.yaml")]
    command += ["--num_machines", "1", "--num_processes", "2", "--machine_rank", "0"]
    command += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), str(probe)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(s["RANK"] for s in seen) == ["0", "1"]
    assert {(s["WORLD_SIZE"], s["ACCELERATE_MIXED_PRECISION"]) for s in seen} == {("2", "no")}


# --------------------------------------------------------------------------------------------------
# scripts/slurm/train.sbatch against stand-ins
# --------------------------------------------------------------------------------------------------

FAKE_SRUN = """#!/usr/bin/env bash
# srun: drop its options, run the task once, as node 0
while [[ $1 == --* ]]; do shift; done
SLURM_NODEID=0 exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
case "$1" in
    show) printf 'node-a\\nnode-b\\n' ;;
    requeue) echo "$2" >> "$FAKE_LOG/requeued" ;;
esac
"""
# accelerate: record the command line, then leave the run folder as FAKE_RUN_STATUS says.
FAKE_ACCELERATE = """#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
with open(Path(os.environ["FAKE_LOG"]) / "launches", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
out = Path(sys.argv[sys.argv.index("--output_dir") + 1])
out.mkdir(parents=True, exist_ok=True)
status = os.environ["FAKE_RUN_STATUS"]
(out / "run.json").write_text(json.dumps({"status": status}))
if status == "interrupted":
    (out / "checkpoint-4").mkdir(exist_ok=True)
    (out / "checkpoint-4" / "checkpoint.json").write_text("{}")
sys.exit({"finished": 0, "interrupted": 1, "failed": 1}[status])
"""


@pytest.fixture
def slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("accelerate", FAKE_ACCELERATE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.mkdir()

    def run(*args: str, status: str = "finished", restart: int = 0):
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_LOG": str(log),
            "FAKE_RUN_STATUS": status,
            "SLURM_JOB_ID": "777",
            "SLURM_NNODES": "2",
            "SLURM_JOB_NODELIST": "node-[a-b]",
            "SLURM_RESTART_COUNT": str(restart),
        }
        return subprocess.run(["bash", str(SBATCH), *args], cwd=REPO, env=env, capture_output=True, text=True)

    def launches() -> list[list[str]]:
        path = log / "launches"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    run.launches, run.requeued = launches, (lambda: (log / "requeued").exists())
    return run


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_slurm_script_launches_each_node_and_requeues_an_interrupted_run(slurm, tmp_path):
    out = tmp_path / "run"
    first = slurm("configs/qwen8b_distill.yaml", str(out), "training.distributed=fsdp", status="interrupted")
    assert first.returncode == 0, first.stderr
    (argv,) = slurm.launches()
    assert argv[:2] == ["launch", "--config_file"]
    assert flag(argv, "--num_machines") == "2" and flag(argv, "--num_processes") == "16"
    assert flag(argv, "--machine_rank") == "0" and flag(argv, "--main_process_ip") == "node-a"
    assert flag(argv, "--main_process_port") == str(20000 + 777)
    assert (
        "src/training/train_online_v1.py" in argv and flag(argv, "--config") == "configs/qwen8b_distill.yaml"
    )
    assert argv[-1] == "training.distributed=fsdp" and "--resume" not in argv
    assert slurm.requeued()

    # The requeued job continues from the checkpoint; a finished run is not requeued again.
    (tmp_path / "log" / "requeued").unlink()
    second = slurm("configs/qwen8b_distill.yaml", str(out), status="finished", restart=1)
    assert second.returncode == 0, second.stderr
    assert "--resume" in slurm.launches()[-1] and not slurm.requeued()


def test_slurm_script_gives_up_after_max_restarts_and_refuses_bad_arguments(slurm, tmp_path):
    done = slurm("configs/online_v1.yaml", str(tmp_path / "run"), status="interrupted", restart=20)
    assert done.returncode == 1 and "not requeued" in done.stderr and not slurm.requeued()
    usage = slurm("configs/online_v1.yaml")
    assert usage.returncode == 2 and usage.stderr.startswith("error: usage")
    missing = slurm("configs/nope.yaml", str(tmp_path / "x"))
    assert missing.returncode == 2 and "configs/nope.yaml not found" in missing.stderr
    failed = slurm("configs/online_v1.yaml", str(tmp_path / "failed"), status="failed")
    assert failed.returncode == 1 and not slurm.requeued()
    assert Path(SBATCH).read_text().count("#SBATCH --signal=USR1@120") == 1

"""Two real processes on CPU (gloo) through `accelerate launch`, against the 1-process reference run.

`ACCELERATE_USE_CPU=true` and `--multi_gpu` are both needed: without them accelerate silently runs one
process (or two unsynchronised rank-0 processes), so the tests assert two distinct ranks ran.

Both runs have the same global batch G = 4 (2 processes x 2 per device x 1 here, 1 x 2 x 2 in the
reference), so they see the same examples at every step: the 2-process run must give the same LR
schedule, losses, gradient norms and weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TEACHER_OVERRIDES, TINY, adapter_weights, common_overrides, metrics

pytestmark = pytest.mark.slow

ACCELERATE = Path(sys.executable).with_name("accelerate")
SCRIPT = REPO / "src" / "training" / "train_online_v1.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, short_gsm8k) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "online_2proc"
    settings = [
        *common_overrides(short_gsm8k),
        *TEACHER_OVERRIDES,
        "training.grad_accum_steps=1",  # 2 processes x 2 x 1 = 4, as the reference's 1 x 2 x 2
    ]
    return launch_two_processes(out, settings)


def accelerate_two_processes(
    script: Path, args: list[str], expect_ok: bool = True, timeout: int = 540, **extra_env: str
) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` with 2 CPU processes (gloo), one thread each, from the repo root."""
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = subprocess.run(
        [*cmd, str(script), *args],
        env=env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert (proc.returncode == 0) == expect_ok, proc.stderr[-4000:]
    return proc


def launch_two_processes(out: Path, settings: list[str]) -> Path:
    """train_online_v1 on the tiny config under `accelerate launch` with 2 CPU processes (gloo)."""
    accelerate_two_processes(
        SCRIPT, ["--config", str(TINY / "online_v1.yaml"), "--output_dir", str(out), *settings]
    )
    return out


def rank_records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank*.json"))]


def test_both_ranks_ran_on_disjoint_examples(two_process_run, online_reference):
    ranks = rank_records(two_process_run)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["first_step"] == 1 for r in ranks)
    reference = rank_records(online_reference)[0]["rows_by_step"]
    for step in range(4):
        rows0, rows1 = ranks[0]["rows_by_step"][step], ranks[1]["rows_by_step"][step]
        assert len(rows0) == len(rows1) == 2
        assert not set(rows0) & set(rows1)
        assert sorted(rows0 + rows1) == sorted(reference[step])  # the same examples as 1 process
    manifest = json.loads((two_process_run / "run.json").read_text())
    assert (manifest["num_processes"], manifest["global_batch_size"], manifest["status"]) == (
        2,
        4,
        "finished",
    )
    assert [m["step"] for m in metrics(two_process_run)] == [1, 2, 3, 4]  # only the main process logs


def test_ranks_hold_identical_weights(two_process_run):
    digests = {r["trainable_parameters_sha256"] for r in rank_records(two_process_run)}
    assert len(digests) == 1


def test_schedule_losses_and_weights_match_one_process(two_process_run, online_reference):
    two, one = metrics(two_process_run), metrics(online_reference)
    # One scheduler step per optimizer step (not one per process: the original's LR hit 0 half-way).
    assert [m["train/lr"] for m in two] == [m["train/lr"] for m in one]
    for a, b in zip(one, two):
        assert b["train/answer_tokens"] == a["train/answer_tokens"]
        for key in ("train/ce_loss", "train/dist_loss", "train/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
    w_one = adapter_weights(online_reference / "checkpoint-4")
    w_two = adapter_weights(two_process_run / "checkpoint-4")
    assert w_one.keys() == w_two.keys()
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# A launcher precision flag that disagrees with the config
# ------------------------------------------------------------------------------------------------


def precision_argv(out: Path, short_gsm8k: Path) -> list[str]:
    return [
        str(SCRIPT),
        "--config",
        str(TINY / "online_v1.yaml"),
        "--output_dir",
        str(out),
        *common_overrides(short_gsm8k),
        *TEACHER_OVERRIDES,
        "training.mixed_precision=no",
    ]


MESSAGE = "error: accelerate launch --mixed_precision bf16 disagrees with training.mixed_precision=no"


def test_launcher_precision_flag_is_refused(tmp_path, short_gsm8k):
    """What the script does under `accelerate launch --mixed_precision bf16`, which passes the flag as
    ACCELERATE_MIXED_PRECISION: exit 2, one error line, no traceback, before torch loads."""
    out = tmp_path / "bf16"
    proc = subprocess.run(
        [sys.executable, *precision_argv(out, short_gsm8k)],
        env=env(ACCELERATE_MIXED_PRECISION="bf16"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(MESSAGE)
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_launcher_precision_flag_is_refused_through_accelerate_launch(tmp_path, short_gsm8k):
    """Through the real launcher. The script exits 2 with its one-line error; accelerate's own launcher
    then reports the failed child as a CalledProcessError (its traceback, its exit status 1): that part
    is accelerate's, outside this package (`accelerate launch -q` drops that traceback)."""
    out = tmp_path / "bf16"
    proc = subprocess.run(
        [
            str(ACCELERATE),
            "launch",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "bf16",
            "--dynamo_backend",
            "no",
            *precision_argv(out, short_gsm8k),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert MESSAGE in proc.stderr
    assert "returned non-zero exit status 2" in proc.stderr
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith('File "')]
    assert frames and all("accelerate" in f for f in frames)  # no frame of this package's code
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# The teacher cache across processes
# ------------------------------------------------------------------------------------------------


def test_teacher_cache_entries_are_shared_between_processes(tmp_path, short_gsm8k):
    """6 rows, G = 2 processes x 1: every row twice in 6 steps. A row that rank 1 saw first is a hit on
    rank 0 in the second epoch only if rank 1 shared its entry; rank 0 logs its own hit rate."""
    out = tmp_path / "cached_2proc"
    settings = [
        *common_overrides(short_gsm8k),
        *TEACHER_OVERRIDES,
        "data.max_train_examples=6",
        "data.validation_size=0",
        "training.per_device_batch_size=1",
        "training.grad_accum_steps=1",
        "training.max_steps=6",
        "training.save_every=6",
        "teacher.cache=memory",
    ]
    launch_two_processes(out, settings)
    ranks = rank_records(out)
    assert [r["rank"] for r in ranks] == [0, 1]
    first_epoch_rank1 = {row for rows in ranks[1]["rows_by_step"][:3] for row in rows}
    second_epoch_rank0 = {row for rows in ranks[0]["rows_by_step"][3:] for row in rows}
    assert first_epoch_rank1 & second_epoch_rank0  # rank 0 revisits rows only rank 1 had computed
    assert [m["train/teacher_cache_hit_rate"] for m in metrics(out)][-1] == 0.5

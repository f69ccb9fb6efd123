"""Safe runs and files: no code runs from a checkpoint, nothing is deleted that the project did not write,
one writer per folder, identity checks on resume and for the teacher cache, clear errors on damaged files,
no silent no-ops, and preemption that saves and resumes exactly.

Training runs are the tiny 2-layer Qwen3 of configs/tiny on the shortest GSM8K rows (tests/helpers.py),
in-process where possible; the signal tests run the README's entry points as subprocesses (1 process, and
2 processes under `accelerate launch`).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    REPO,
    TEACHER_OVERRIDES,
    TINY,
    cli_argv,
    common_overrides,
    metrics,
    record_checksum,
    run_cli,
    snapshot,
)

from fsdistill import files
from fsdistill.train.entry import train_baseline, train_online_v1
from fsdistill.train.run_dir import list_checkpoints


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, short_gsm8k) -> Path:
    """A distillation run of 6 steps stopped after 4, with checkpoints 2 and 4 (tests copy it to change it)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    overrides = [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, "training.max_steps=6"]
    argv = cli_argv("online_v1.yaml", out, *overrides, "training.stop_after=4")
    assert run_cli(train_online_v1, argv) == 0
    return out


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def resume_argv(run: Path, short_gsm8k, *flags: str) -> list[str]:
    """--resume of the `checkpointed` run, to its end at step 6 (flags: default a bare --resume)."""
    overrides = [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, "training.max_steps=6"]
    return cli_argv("online_v1.yaml", run, *overrides, flags=flags or ("--resume",))


def refused(main, argv, capsys) -> str:
    """Run a CLI that must refuse: exit 2, one `error:` line (after any progress bars), no traceback;
    returns that line."""
    capsys.readouterr()
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")] or [err]
    return err[err.index(line) :]


# --------------------------------------------------------------------------------------------------
# 1. No unpickling
# --------------------------------------------------------------------------------------------------


class WritesAMarker:
    """Unpickling this opens (creates) the marker file: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


LOADED_ON_RESUME = (
    "checkpoint.json",
    "config.yaml",
    "adapter_model.safetensors",
    "training_state.safetensors",
    "training_state.json",
    "rng_state_0.safetensors",
    "rng_state_0.json",
)


@pytest.mark.parametrize("name", [*LOADED_ON_RESUME, "all"])
def test_a_crafted_pickle_in_any_checkpoint_file_runs_nothing(
    name, checkpointed, tmp_path, short_gsm8k, capsys
):
    """Each file --resume opens, replaced by a pickle whose unpickling writes a marker (its checksum
    updated, as an attacker would), then every one at once: resume fails cleanly, the marker never appears."""
    run = copy_run(checkpointed, tmp_path / "run")
    checkpoint, marker = run / "checkpoint-4", tmp_path / "marker"
    for victim in LOADED_ON_RESUME if name == "all" else (name,):
        (checkpoint / victim).write_bytes(pickle.dumps(WritesAMarker(marker)))
        if victim != "checkpoint.json" and (checkpoint / "checkpoint.json").read_bytes()[:1] == b"{":
            record_checksum(checkpoint, victim)
    refused(train_online_v1, resume_argv(run, short_gsm8k), capsys)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# 2. Only our own files
# --------------------------------------------------------------------------------------------------


def foreign_tree(folder: Path) -> Path:
    for name, text in {
        "tensorboard/important.txt": "a user's notes",
        "checkpoint-5/model.bin": "someone else's weights",
        "notes.txt": "notes",
        "config.yaml": "mine: true\n",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_folder_that_is_not_a_run_of_ours_is_never_touched(tmp_path, short_gsm8k, capsys):
    folder = foreign_tree(tmp_path / "theirs")
    before = snapshot(folder)
    for flags in ((), ("--overwrite",), ("--resume",)):
        argv = cli_argv("base.yaml", folder, *common_overrides(short_gsm8k), flags=flags)
        err = refused(train_baseline, argv, capsys)
        assert "is not empty and is not a run folder of this project" in err, err
        assert snapshot(folder) == before
    (tmp_path / "a_file").write_text("x")
    err = refused(
        train_baseline, cli_argv("base.yaml", tmp_path / "a_file", *common_overrides(short_gsm8k)), capsys
    )
    assert "is a file, not a folder" in err


def test_overwrite_deletes_only_what_the_run_wrote(checkpointed, tmp_path, short_gsm8k):
    run = foreign_tree(copy_run(checkpointed, tmp_path / "run"))  # a run of ours, with others' files in it
    (run / "checkpoint-2" / "extra.bin").write_text("not ours")
    (run / ".checkpoint-6.tmp").mkdir()
    (run / ".checkpoint-6.tmp" / "config.yaml").write_text("a crashed save's file")
    for rank in (0, 1):  # what the vLLM sampler leaves when its run is killed (train/rollouts.py)
        (run / "rollout_adapter" / f"rank{rank}").mkdir(parents=True)
        for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
            (run / "rollout_adapter" / f"rank{rank}" / name).write_text("a rollout adapter's file")
    (run / "rollout_adapter" / "rank1" / "mine.txt").write_text("not ours")
    foreign = {p: p.read_bytes() for p in (
        run / "tensorboard" / "important.txt", run / "checkpoint-5" / "model.bin", run / "notes.txt",
        run / "checkpoint-2" / "extra.bin", run / "rollout_adapter" / "rank1" / "mine.txt",
    )}  # fmt: skip
    argv = cli_argv(
        "base.yaml", run, *common_overrides(short_gsm8k), "training.max_steps=1", flags=("--overwrite",)
    )
    assert run_cli(train_baseline, argv) == 0
    assert all(p.read_bytes() == data for p, data in foreign.items())
    assert sorted(p.name for p in (run / "checkpoint-2").iterdir()) == ["extra.bin"]  # ours gone, theirs kept
    assert not (run / "checkpoint-4").exists() and not (run / ".checkpoint-6.tmp").exists()
    assert [p.name for p in (run / "rollout_adapter").rglob("*")] == ["rank1", "mine.txt"]
    assert [s for s, _ in list_checkpoints(run)] == [1]
    assert json.loads((run / "run.json").read_text())["method"] == "sft"
    assert [m["step"] for m in metrics(run)] == [1]


def victim_folder(tmp_path: Path) -> Path:
    """Files outside any run, which no command of the project may delete."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("a file outside the run")
    return victim


def list_in_checkpoint(checkpoint: Path, name: str, digest: str = "0" * 64) -> None:
    """A crafted checkpoint.json: `name` among the files it lists (with `digest` as its sha256)."""
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    meta["files"][name] = digest
    (checkpoint / "checkpoint.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_a_checkpoint_listing_a_file_outside_the_run_deletes_nothing(
    form, checkpointed, tmp_path, short_gsm8k, capsys
):
    """checkpoint.json listing ../../victim/keep.txt (or its absolute path): --overwrite, and a --resume
    whose keep_last=1 would prune that checkpoint (the file's real sha256 listed, so the checkpoint verifies),
    are refused with exit 2 naming the path, before any work; nothing in or outside the run is deleted."""
    victim = victim_folder(tmp_path)
    run = copy_run(checkpointed, tmp_path / "run")
    name = "../../victim/keep.txt" if form == "relative" else str(victim / "keep.txt")
    list_in_checkpoint(run / "checkpoint-2", name, files.sha256_file(victim / "keep.txt"))
    before = snapshot(tmp_path)
    argv = cli_argv("base.yaml", run, *common_overrides(short_gsm8k), flags=("--overwrite",))
    err = refused(train_baseline, argv, capsys)
    assert "refused" in err and "keep.txt" in err and "nothing was deleted" in err, err
    resume = [*resume_argv(run, short_gsm8k), "training.keep_last=1"]
    err = refused(train_online_v1, resume, capsys)
    assert "refused" in err and "keep.txt" in err, err
    assert snapshot(tmp_path) == before


def test_a_symlinked_checkpoint_is_refused_and_nothing_is_deleted_through_it(
    checkpointed, tmp_path, short_gsm8k, capsys
):
    """checkpoint-4 a link to another folder (a copy of a checkpoint, 9 files): --overwrite and --resume
    are refused naming the link; nothing there, nor in the run, is deleted."""
    run = copy_run(checkpointed, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "checkpoint-4", elsewhere)
    (run / "checkpoint-4").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    for main, argv in (
        (train_baseline, cli_argv("base.yaml", run, *common_overrides(short_gsm8k), flags=("--overwrite",))),
        (train_online_v1, resume_argv(run, short_gsm8k)),
        (train_online_v1, resume_argv(run, short_gsm8k, "--resume", str(run / "checkpoint-4"))),
    ):
        err = refused(main, argv, capsys)
        assert f"{run / 'checkpoint-4'} is a symbolic link" in err, err
    assert snapshot(tmp_path) == before and len(list(elsewhere.iterdir())) >= 9


def test_a_symlinked_checkpoint_file_is_refused_on_resume(checkpointed, tmp_path, short_gsm8k, capsys):
    """A checkpoint file that is a link to a file outside the run (same bytes, so its sha256 matches):
    resume does not read it; it names the link."""
    run = copy_run(checkpointed, tmp_path / "run")
    adapter = run / "checkpoint-4" / "adapter_model.safetensors"
    outside = tmp_path / "adapter_model.safetensors"
    shutil.move(adapter, outside)
    adapter.symlink_to(outside)
    err = refused(train_online_v1, resume_argv(run, short_gsm8k), capsys)
    assert f"{adapter} is a symbolic link" in err, err
    assert outside.is_file() and adapter.is_symlink()


def test_a_run_resumed_from_another_runs_checkpoint_records_where_it_came_from(
    checkpointed, tmp_path, short_gsm8k
):
    source = checkpointed / "checkpoint-2"
    run = tmp_path / "continued"
    assert run_cli(train_online_v1, resume_argv(run, short_gsm8k, "--resume", str(source))) == 0
    (record,) = json.loads((run / "run.json").read_text())["resumed_from"]
    assert record["checkpoint"] == str(source.resolve()) and record["step"] == 2
    assert record["checkpoint_json_sha256"] == files.sha256_file(source / "checkpoint.json")
    assert [m["step"] for m in metrics(run)] == [3, 4, 5, 6]


def test_a_run_without_checkpoints_needs_a_flag(tmp_path, short_gsm8k, capsys):
    run = tmp_path / "run"
    argv = cli_argv("base.yaml", run, *common_overrides(short_gsm8k), "training.max_steps=1")
    assert run_cli(train_baseline, argv) == 0
    shutil.rmtree(run / "checkpoint-1")  # a run whose checkpoints were removed
    before = snapshot(run)
    err = refused(train_baseline, argv, capsys)
    assert "already holds a run without checkpoints" in err and "--overwrite" in err
    assert snapshot(run) == before


def test_runs_of_earlier_versions_count_as_ours():
    """The committed experiment records (written before this version) are runs of ours."""
    from fsdistill.train.run_dir import is_our_run

    runs = sorted((REPO / "experiments").glob("*/runs/*"))
    assert runs and all(is_our_run(r) for r in runs)


# --------------------------------------------------------------------------------------------------
# 3. One writer
# --------------------------------------------------------------------------------------------------


def test_a_second_launch_is_refused_while_a_run_holds_the_folder(checkpointed, tmp_path, short_gsm8k, capsys):
    """The lock a run holds for its life (here taken as a running launch takes it): --resume and
    --overwrite launches are refused naming the holder, and touch nothing."""
    from fsdistill.train.run_dir import run_lock

    run = copy_run(checkpointed, tmp_path / "run")
    script = "import time\nfrom pathlib import Path\nfrom fsdistill.train.run_dir import run_lock\n"
    script += f"with run_lock(Path({str(run)!r})):\n    print('held', flush=True)\n    time.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        for flag in ("--resume", "--overwrite"):
            argv = cli_argv(
                "online_v1.yaml", run, *common_overrides(short_gsm8k), *TEACHER_OVERRIDES, flags=(flag,)
            )
            err = refused(train_online_v1, argv, capsys)
            assert "is being written by another run" in err and f'"pid": {holder.pid}' in err, err
            assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):  # released when its holder died (killed, not exited)
        pass


# --------------------------------------------------------------------------------------------------
# 4. Identity on resume and for the teacher cache
# --------------------------------------------------------------------------------------------------


def test_resume_as_another_method_is_refused(tmp_path, short_gsm8k, capsys):
    run = tmp_path / "sft"
    common = common_overrides(short_gsm8k)
    assert run_cli(train_baseline, cli_argv("base.yaml", run, *common, "training.stop_after=2")) == 0
    argv = cli_argv("online_v1.yaml", run, *common, *TEACHER_OVERRIDES, flags=("--resume",))
    err = refused(train_online_v1, argv, capsys)
    assert "method: checkpoint has 'sft', now has 'few_shot_distillation'" in err


def test_resume_with_a_changed_training_file_is_refused(tmp_path, short_gsm8k, capsys):
    data = copy_run(short_gsm8k, tmp_path / "data")
    overrides = [*common_overrides(short_gsm8k), f"data.source={data}"]
    run = tmp_path / "run"
    assert run_cli(train_baseline, cli_argv("base.yaml", run, *overrides, "training.stop_after=2")) == 0
    lines = (data / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[5])
    lines[5] = json.dumps({**row, "answer": row["answer"].replace("####", "so\n####")})
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    err = refused(train_baseline, cli_argv("base.yaml", run, *overrides, flags=("--resume",)), capsys)
    assert "training_rows_sha256: checkpoint has" in err


def test_resume_from_a_named_checkpoint(checkpointed, tmp_path, short_gsm8k, capsys):
    run = copy_run(checkpointed, tmp_path / "run")
    assert run_cli(train_online_v1, resume_argv(run, short_gsm8k, "--resume", str(run / "checkpoint-2"))) == 0
    out = capsys.readouterr()
    assert f"resuming from {run / 'checkpoint-2'} (step 2 of 6)" in out.out + out.err
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4, 5, 6]


@pytest.fixture
def local_model(tmp_path) -> Path:
    """The tiny random Qwen3 saved as a local model folder (model.init=pretrained from it)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fsdistill.config import load_config

    cfg, _ = load_config(str(TINY / "base.yaml"))
    arch = dict(cfg.model.architecture)
    folder = tmp_path / "model"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch)).save_pretrained(
        folder
    )
    return folder


def replace_weights(folder: Path, seed: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)


def test_a_teacher_cache_of_other_weights_or_altered_values_is_refused(
    local_model, tmp_path, short_gsm8k, capsys
):
    from fsdistill.distill.precompute import main as precompute

    settings = [
        *common_overrides(short_gsm8k), *TEACHER_OVERRIDES, f"model.name={local_model}", "model.init=pretrained",
        "model.architecture={}", "teacher.cache=disk", f"teacher.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    assert run_cli(precompute, ["--config", str(TINY / "online_v1.yaml"), *settings]) == 0
    cache = tmp_path / "cache"
    values = (cache / "values.npy").read_bytes()
    (cache / "values.npy").write_bytes(values[:128] + bytes(len(values) - 128))  # the npy header, then zeros
    err = refused(train_online_v1, cli_argv("online_v1.yaml", tmp_path / "r1", *settings), capsys)
    assert "values.npy is missing, truncated or altered" in err
    (cache / "values.npy").write_bytes(values)
    replace_weights(local_model, seed=1)
    err = refused(train_online_v1, cli_argv("online_v1.yaml", tmp_path / "r2", *settings), capsys)
    assert "weights: cache has" in err and "model.safetensors" in err


# --------------------------------------------------------------------------------------------------
# 5. Damaged files
# --------------------------------------------------------------------------------------------------


def test_a_truncated_checkpoint_names_itself_and_the_previous_one(
    checkpointed, tmp_path, short_gsm8k, capsys
):
    run = copy_run(checkpointed, tmp_path / "run")
    adapter = run / "checkpoint-4" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    err = refused(train_online_v1, resume_argv(run, short_gsm8k), capsys)
    assert f"{run / 'checkpoint-4'} is damaged: adapter_model.safetensors is truncated or altered" in err
    assert f"the previous complete checkpoint is {run / 'checkpoint-2'}: resume from it with --resume" in err
    state = run / "checkpoint-2" / "training_state.json"
    state.write_text(state.read_text()[:50])
    err = refused(
        train_online_v1, resume_argv(run, short_gsm8k, "--resume", str(run / "checkpoint-2")), capsys
    )
    assert "training_state.json is truncated or altered" in err and "there is no earlier checkpoint" in err


def test_a_torn_last_metrics_line_is_dropped_on_resume(checkpointed, tmp_path, short_gsm8k, capsys):
    run = copy_run(checkpointed, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/ce_lo')  # the process died mid-write
    assert run_cli(train_online_v1, resume_argv(run, short_gsm8k)) == 0
    assert "a torn last record (a crash mid-write) was dropped" in capsys.readouterr().err
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("writer", ["json", "safetensors"])
def test_a_full_disk_keeps_every_earlier_checkpoint(writer, tmp_path, short_gsm8k, monkeypatch, capsys):
    """A full disk while checkpoint-4 is written, as the JSON writer (OSError ENOSPC) or safetensors
    (its own SafetensorError) reports it: exit 2 naming the problem, run.json says failed, checkpoint-2 is
    intact, nothing half-written is left, and --resume works."""
    import safetensors.torch
    from safetensors import SafetensorError

    from fsdistill.train.checkpoint import verify_checkpoint

    module, name = (files, "write_text_atomic") if writer == "json" else (safetensors.torch, "save_file")
    real = getattr(module, name)

    def full_disk(*args, **kwargs):
        path = Path(args[0] if writer == "json" else args[1])
        if path.parent.name.startswith(".checkpoint-4.tmp"):
            if writer == "json":
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            raise SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                'on device" })'
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, full_disk)
    run = tmp_path / "run"
    argv = cli_argv("online_v1.yaml", run, *common_overrides(short_gsm8k), *TEACHER_OVERRIDES)
    err = refused(train_online_v1, argv, capsys)
    assert (
        "writing checkpoint-4" in err
        and "the disk is full" in err
        and "earlier checkpoints are intact" in err
    )
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert [s for s, _ in list_checkpoints(run)] == [2] and verify_checkpoint(run / "checkpoint-2")
    assert not list(run.glob(".checkpoint-*"))
    monkeypatch.setattr(module, name, real)
    assert run_cli(train_online_v1, [*argv, "--resume"]) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written_keeps_the_earlier_one(tmp_path, short_gsm8k):
    """The process killed (SIGKILL, no handler runs) halfway through writing checkpoint-4, its weights
    and RNG state written, its training state not: checkpoint-2 is intact and the only complete one, and
    --resume removes the half-written temporary and finishes the run."""
    run = tmp_path / "run"
    argv = cli_argv("online_v1.yaml", run, *common_overrides(short_gsm8k), *TEACHER_OVERRIDES)
    code = (
        "import os, signal, sys\n"
        "from fsdistill.train import checkpoint\n"
        "from fsdistill.train.entry import train_online_v1\n"
        "real = checkpoint.save_state\n"
        "def dies_midway(obj, stem):\n"
        "    if stem.parent.name.startswith('.checkpoint-4.tmp') and stem.name == 'training_state':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(obj, stem)\n"
        "checkpoint.save_state = dies_midway\n"
        "train_online_v1(sys.argv[1:])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    (half,) = run.glob(".checkpoint-4.tmp-*")
    assert (half / "rng_state_0.safetensors").is_file() and not (half / "checkpoint.json").exists()
    from fsdistill.train.checkpoint import verify_checkpoint

    assert [s for s, _ in list_checkpoints(run)] == [2] and verify_checkpoint(run / "checkpoint-2")
    assert run_cli(train_online_v1, [*argv, "--resume"]) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2, 4] and not list(run.glob(".checkpoint-*"))
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


# --------------------------------------------------------------------------------------------------
# 6. No silent no-ops
# --------------------------------------------------------------------------------------------------


def test_a_run_that_never_updates_is_an_error(tmp_path, short_gsm8k, capsys):
    run = tmp_path / "run"
    argv = cli_argv(
        "base.yaml", run, *common_overrides(short_gsm8k), "data.max_student_len=16", "data.max_teacher_len=16"
    )
    err = refused(train_baseline, argv, capsys)
    assert "no optimizer update in steps 1..4" in err and "the weights are untrained" in err
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.architecture.num_hidden_layers=abc", "num_hidden_layers must be an integer (as Qwen3Config"),
        ("model.architecture.hiden_size=64", "Qwen3Config has no field 'hiden_size'"),
    ],
)
def test_architecture_fields_are_checked_before_any_weights_load(
    override, message, tmp_path, short_gsm8k, capsys
):
    run = tmp_path / "run"
    err = refused(
        train_baseline, cli_argv("base.yaml", run, *common_overrides(short_gsm8k), override), capsys
    )
    assert message in err
    assert not (run / "run.json").exists()


def test_fsdp_without_a_distributed_launch_is_refused_before_any_folder(
    tmp_path, short_gsm8k, monkeypatch, capsys
):
    """training.distributed=fsdp started by plain python (no RANK/WORLD_SIZE, as also under `accelerate
    launch --num_processes 2` without --multi_gpu on a CPU machine): exit 2 with the command to use, no
    traceback, no folder."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "run"
    argv = cli_argv(
        "online_v1.yaml", run, *common_overrides(short_gsm8k), *TEACHER_OVERRIDES, "training.distributed=fsdp"
    )
    err = refused(train_online_v1, argv, capsys)
    assert "training.distributed=fsdp needs a distributed launch" in err
    assert "accelerate launch --multi_gpu --num_processes N" in err
    assert not run.exists()


# --------------------------------------------------------------------------------------------------
# 7. Interrupts and preemption
# --------------------------------------------------------------------------------------------------


SIGNAL_STEPS = ["training.max_steps=14", "training.save_every=100", "training.log_every=1"]


def digest(run: Path) -> str:
    return json.loads((run / "ranks" / "rank0.json").read_text())["trainable_parameters_sha256"]


def launch(
    run: Path, short_gsm8k, processes: int, *flags: str, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """The README's entry point as a user runs it (under `accelerate launch` for 2 processes)."""
    overrides = [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, *SIGNAL_STEPS, *extra]
    args = [*cli_argv("online_v1.yaml", run, *overrides), *flags]
    script = str(REPO / "src" / "training" / "train_online_v1.py")
    if processes == 1:
        command = [sys.executable, script, *args]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), script, *args,
        ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "metrics.jsonl").is_file() and len(metrics(run)) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_saves_and_resume_equals_a_straight_run(processes, tmp_path, short_gsm8k):
    """SIGTERM mid-run (for 2 processes: to the `accelerate launch` parent, which forwards it): the step
    ends, every rank saves the same checkpoint, run.json says interrupted, one line says how to resume;
    --resume then ends with exactly (bitwise) the weights of a run that was never interrupted."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    proc = launch(straight, short_gsm8k, processes)
    assert proc.wait(timeout=600) == 0, proc.communicate()
    proc = launch(stopped, short_gsm8k, processes)
    wait_for_step(stopped, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    # (torchrun, under accelerate launch, reports the signal it received with a traceback of its own.)
    assert proc.returncode != 0 and (processes == 2 or "Traceback" not in err), err
    (step,) = [s for s, _ in list_checkpoints(stopped)]
    assert 2 <= step < 14
    manifest = json.loads((stopped / "run.json").read_text())
    assert manifest["status"] == "interrupted" and [c["step"] for c in manifest["checkpoints"]] == [step]
    assert f"SIGTERM after step {step}: checkpoint written to {stopped / f'checkpoint-{step}'}" in err
    assert err.count("resume with: ") == 1, err  # one line, not one per process
    proc = launch(stopped, short_gsm8k, processes, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"resuming from {stopped / f'checkpoint-{step}'} (step {step} of 14)" in err
    assert json.loads((stopped / "run.json").read_text())["status"] == "finished"
    assert digest(stopped) == digest(straight)


ON_POLICY = ("rollout.source=student", "rollout.max_new_tokens=6", "output.log_with=[]")
FSDP = ("training.distributed=fsdp",)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, processes",
    [(ON_POLICY, 1), (ON_POLICY, 2), (FSDP, 2)],
    ids=["on_policy-1", "on_policy-2", "fsdp-2"],
)
def test_sigterm_on_policy_and_under_fsdp_saves_says_so_once_and_resumes(
    extra, processes, tmp_path, short_gsm8k
):
    """SIGTERM to an on-policy run (the student samples every step) and to a sharded one: the step ends, a
    checkpoint is written, run.json says interrupted, exactly one line (not one per process) says how to
    resume, and --resume finishes the run."""
    run = tmp_path / "run"
    proc = launch(run, short_gsm8k, processes, extra=extra)
    wait_for_step(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    (step,) = [s for s, _ in list_checkpoints(run)]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert err.count("resume with: ") == 1 and f"SIGTERM after step {step}" in err, err
    proc = launch(run, short_gsm8k, processes, "--resume", extra=extra)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert err.count(f"resuming from {run / f'checkpoint-{step}'}") == 1, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert [m["step"] for m in metrics(run)][-1] == 14


@pytest.mark.slow
def test_ctrl_c_saves_and_a_second_one_exits_at_once(tmp_path, short_gsm8k):
    once, twice = tmp_path / "once", tmp_path / "twice"
    proc = launch(once, short_gsm8k, 1)
    wait_for_step(once, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT and "SIGINT after step" in err and "Traceback" not in err
    assert json.loads((once / "run.json").read_text())["status"] == "interrupted"
    proc = launch(twice, short_gsm8k, 1)
    wait_for_step(twice, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # two signals sent at once may be delivered as one
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert (
        proc.returncode == 130 and "interrupted (Ctrl-C): stopped at once" in err and "Traceback" not in err
    )

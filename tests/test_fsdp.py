"""training.distributed=fsdp on CPU: 2 processes (gloo) under `accelerate launch`, the parameters really
sharded (accelerate would silently fall back to data parallelism here: the test reads each rank's record of
its DTensor parameters and bytes), the same losses as DDP, consolidated weights equal to DDP's, exact
resumption from sharded checkpoints, LoRA, and no pickle in a sharded checkpoint.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import TEACHER_OVERRIDES, TINY, common_overrides, metrics, record_checksum
from test_distributed import SCRIPT, accelerate_two_processes
from test_safety import WritesAMarker

pytestmark = pytest.mark.slow


def launch(config: str, out: Path, *overrides: str, expect: int = 0) -> subprocess.CompletedProcess:
    """train_online_v1 on a tiny config, 2 CPU processes, G = 2 x 2 x 1 = 4."""
    args = ["--config", str(TINY / config), "--output_dir", str(out), *overrides]
    return accelerate_two_processes(SCRIPT, args, expect_ok=expect == 0)


def settings(short_gsm8k: Path, *extra: str) -> list[str]:
    return [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, "training.grad_accum_steps=1", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, short_gsm8k) -> dict[str, Path]:
    """Full fine-tuning + distillation (the frozen teacher copy sharded too), 4 steps: FSDP, and DDP."""
    root = tmp_path_factory.mktemp("fsdp")
    for name, mode in (("fsdp", "fsdp"), ("ddp", "ddp")):
        launch("full_ft_distill.yaml", root / name, *settings(short_gsm8k, f"training.distributed={mode}"))
    return {"fsdp": root / "fsdp", "ddp": root / "ddp"}


def rank_records(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "ranks").glob("rank*.json"))]


def test_parameters_are_sharded_half_on_each_process(runs):
    fsdp, ddp = rank_records(runs["fsdp"]), rank_records(runs["ddp"])
    assert [r["rank"] for r in fsdp] == [0, 1]
    for record in fsdp:
        assert record["sharded"] and record["dtensor_parameters"] == record["parameters"] > 0
        held = record["parameter_bytes"]
        assert abs(held["local"] / held["global"] - 0.5) < 0.01, held
    assert all(
        not r["sharded"] and r["parameter_bytes"]["local"] == r["parameter_bytes"]["global"] for r in ddp
    )
    assert fsdp[0]["parameter_bytes"]["global"] == ddp[0]["parameter_bytes"]["global"]


def test_losses_equal_ddp(runs):
    sharded, replicated = metrics(runs["fsdp"]), metrics(runs["ddp"])
    assert [m["step"] for m in sharded] == [1, 2, 3, 4]
    for a, b in zip(sharded, replicated):
        for key in ("train/ce_loss", "train/dist_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-4)
        assert a["train/lr"] == b["train/lr"]


def test_consolidated_weights_equal_ddp_and_evaluate(runs, short_gsm8k):
    from safetensors.torch import load_file

    from fsdistill.config import load_config
    from fsdistill.train.checkpoint import load_checkpoint_model
    from fsdistill.train.sharded_state import consolidate

    checkpoint = runs["fsdp"] / "checkpoint-4"
    assert not (checkpoint / "model.safetensors").exists()  # only shards were written
    folder = consolidate(checkpoint)
    sharded = load_file(str(folder / "model.safetensors"))
    replicated = load_file(str(runs["ddp"] / "checkpoint-4" / "model.safetensors"))
    assert sharded.keys() == replicated.keys()
    for key in sharded:
        torch.testing.assert_close(sharded[key], replicated[key], rtol=1e-5, atol=1e-6)
    cfg, _ = load_config(str(TINY / "full_ft_distill.yaml"), overrides=settings(short_gsm8k))
    model = load_checkpoint_model(checkpoint, cfg)  # what eval_checkpoints.py loads
    assert torch.equal(model.state_dict()["model.norm.weight"], sharded["model.norm.weight"])


def test_resume_from_a_sharded_checkpoint_equals_the_straight_run(runs, tmp_path, short_gsm8k):
    out = tmp_path / "resumed"
    launch(
        "full_ft_distill.yaml",
        out,
        *settings(short_gsm8k, "training.distributed=fsdp", "training.stop_after=2"),
    )
    proc = launch(
        "full_ft_distill.yaml", out, *settings(short_gsm8k, "training.distributed=fsdp"), "--resume"
    )
    assert "resuming from" in proc.stderr and "(step 2 of 4)" in proc.stderr
    straight = {r["rank"]: r["trainable_parameters_sha256"] for r in rank_records(runs["fsdp"])}
    resumed = {r["rank"]: r["trainable_parameters_sha256"] for r in rank_records(out)}
    assert resumed == straight  # bitwise, shard by shard

    # A sharded checkpoint holds no pickle either: every shard file a crafted pickle (checksums updated).
    checkpoint, marker = out / "checkpoint-2", tmp_path / "marker"
    for path in sorted(checkpoint.glob("*_shard_*")) + sorted(checkpoint.glob("rng_state_*")):
        path.write_bytes(pickle.dumps(WritesAMarker(marker)))
        record_checksum(checkpoint, path.name)
    shutil.rmtree(out / "checkpoint-4")
    proc = launch(
        "full_ft_distill.yaml", out, *settings(short_gsm8k, "training.distributed=fsdp"), "--resume", expect=2
    )
    assert "error: " in proc.stderr and "_shard_" in proc.stderr
    assert (
        "not the JSON file this project writes" in proc.stderr or "not a readable safetensors" in proc.stderr
    )
    assert not marker.exists()


def test_lora_under_fsdp(tmp_path, short_gsm8k):
    """The frozen base sharded, the adapters trained; the consolidated adapter is what peft loads."""
    import peft
    from safetensors.torch import load_file

    from fsdistill.config import load_config
    from fsdistill.train.checkpoint import load_checkpoint_model

    out = tmp_path / "lora"
    overrides = settings(short_gsm8k, "training.distributed=fsdp", "training.max_steps=2")
    launch("online_v1.yaml", out, *overrides)
    assert [m["step"] for m in metrics(out)] == [1, 2]
    record = rank_records(out)[0]
    assert (
        record["sharded"] and record["parameter_bytes"]["local"] < 0.51 * record["parameter_bytes"]["global"]
    )
    cfg, _ = load_config(str(TINY / "online_v1.yaml"), overrides=overrides)
    model = load_checkpoint_model(out / "checkpoint-2", cfg)
    adapter = load_file(str(out / "checkpoint-2" / "consolidated" / "adapter_model.safetensors"))
    assert sorted(adapter) == sorted(peft.get_peft_model_state_dict(model))
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # trained away from zero

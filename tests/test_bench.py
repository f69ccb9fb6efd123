"""scripts/bench_step.py: one in-process run on the tiny config (real tokenizer and GSM8K from ../shared)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from conftest import CONFIGS, OFFLINE_OVERRIDES, REPO

TINY = str(CONFIGS / "tiny" / "online_v1.yaml")
SMALL = [
    "training.per_device_batch_size=1",
    "data.max_train_examples=16",
    "fewshot.k=1",
    "distill.top_k=8",
]


def bench_module():
    """The script as a module (scripts/ is not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location("bench_step", REPO / "scripts" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_step_tiny(gsm8k_dir, qwen3_tokenizer_path, tmp_path, capsys):
    import torch

    out = tmp_path / "bench" / "step_ratio.json"
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    result = bench_module().main(
        [
            "--config",
            TINY,
            *OFFLINE_OVERRIDES,
            *SMALL,
            "--warmup",
            "1",
            "--steps",
            "2",
            "--micro-batches",
            "2",
            "--threads",
            "1",
            "--output",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)

    for key in (
        "ratios",
        "paired_ratios",
        "variants",
        "naive_check",
        "logits",
        "micro_batches",
        "rounds",
        "device",
        "versions",
        "config_summary",
        "config",
        "timed",
    ):
        assert key in saved, key
    assert set(saved["ratios"]) == {"distill/sft", "distill_naive/distill", "distill_naive/sft"}
    for value in saved["ratios"].values():
        assert math.isfinite(value) and value > 0
    for paired in saved["paired_ratios"].values():
        assert paired["n"] == 2 and 0 < paired["min"] <= paired["median"] <= paired["max"] < math.inf
    assert set(saved["variants"]) == {"sft", "distill", "distill_naive"}
    for v in saved["variants"].values():
        s = v["seconds"]
        assert s["n"] == 2 and 0 < s["min"] <= s["median"] <= s["max"]
    assert len(saved["rounds"]) == 2 and all(len(r["seconds"]) == 3 for r in saved["rounds"])
    assert saved["rounds"][0]["order"] != saved["rounds"][1]["order"]  # rotated

    # the naive baseline computed the same losses and gradients as the project's code
    check = saved["naive_check"]
    assert check["allclose"] is True and len(check["per_micro_batch"]) == 2
    for record in check["per_micro_batch"]:
        (ce_a, ce_b), (d_a, d_b) = record["ce_sum"], record["dist_sum"]
        assert ce_a > 0 and d_a > 0
        assert math.isclose(ce_a, ce_b, rel_tol=1e-4) and math.isclose(d_a, d_b, rel_tol=1e-4)
        assert record["max_abs_grad"] > 0  # the gradient comparison compared something
        assert record["naive_logits_shapes"]["teacher_logits"][-1] == saved["logits"]["vocab"]

    # logits-size estimate: (B, T, V) of the naive path vs (N, V)
    mbs, per = saved["micro_batches"], saved["logits"]["per_micro_batch"]
    assert len(mbs) == 2 and all(m["answer_tokens"] > 0 for m in mbs)
    assert all(m["teacher_len"] > m["student_len"] >= m["answer_tokens"] for m in mbs)  # k = 1 exemplar
    v, b = saved["logits"]["vocab"], saved["logits"]["bytes"]
    assert (v, b) == (151936, 4)
    for m, p in zip(mbs, per):
        assert p["distill"] == m["answer_tokens"] * v * b
        assert p["distill_naive"] == m["examples"] * m["teacher_len"] * v * b
    naive, optimized = saved["variants"]["distill_naive"], saved["variants"]["distill"]
    assert naive["largest_logits_bytes"] > optimized["largest_logits_bytes"] > 0
    assert saved["versions"]["torch"] == torch.__version__ and saved["device"]["type"] == "cpu"
    assert saved["config_summary"]["fewshot.k"] == 1 and saved["config_summary"]["distill.top_k"] == 8
    assert "distill_naive/distill" in capsys.readouterr().out


def test_bench_step_refuses_bad_arguments(tmp_path, capsys):
    main = bench_module().main
    with pytest.raises(SystemExit):
        main(["--config", TINY, "--variants", "sft,nope", "--output", str(tmp_path / "x.json")])
    assert "--variants" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a config mistake: a UserError, exit 2, before torch work
        main(["--config", TINY, "training.per_device_batch_size=0", "--output", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert "per_device_batch_size" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_bench_step_stops_when_naive_disagrees(gsm8k_dir, qwen3_tokenizer_path, tmp_path, monkeypatch):
    """The naive/optimized check is live: a baseline that computes another loss stops the run untimed."""
    module = bench_module()
    honest = module.naive_micro_batch_losses

    def off_by_a_bit(*args, **kwargs):
        losses, shapes = honest(*args, **kwargs)
        losses.dist_sum = losses.dist_sum * 1.01
        return losses, shapes

    monkeypatch.setattr(module, "naive_micro_batch_losses", off_by_a_bit)
    out = tmp_path / "x.json"
    argv = ["--config", TINY, *OFFLINE_OVERRIDES, *SMALL, "--variants", "distill,distill_naive"]
    argv += ["--micro-batches", "1", "--warmup", "0", "--steps", "1", "--threads", "1", "--output", str(out)]
    with pytest.raises(RuntimeError, match="disagree"):
        module.main(argv)
    assert not out.exists()

"""scripts/bench_step.py: one in-process run on the tiny config (real tokenizer and GSM8K from ../shared).

Timings are not asserted (they depend on the machine); what is: every variant ran on the same micro-batches,
the variants computed the same losses before anything was timed, the warm cache never missed, the prefix was
computed once and reused, and the original's full-sequence logits show in its peak memory.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import CONFIGS, OFFLINE_OVERRIDES

from fsdistill.tools import bench

TINY = str(CONFIGS / "tiny" / "online_v1.yaml")
SMALL = ["data.max_train_examples=16", "fewshot.k=2", "distill.top_k=8", "teacher.prefix_min_tokens=16"]
VARIANTS = {"sft", "original", "first_visit", "cache_warm", "shared_prefix"}


def test_bench_step_tiny(gsm8k_dir, qwen3_tokenizer_path, tmp_path, capsys):
    import torch

    out = tmp_path / "bench" / "step.json"
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    argv = ["--config", TINY, *OFFLINE_OVERRIDES, *SMALL, "--warmup", "1", "--steps", "2", "--threads", "1"]
    result = bench.main([*argv, "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)

    assert set(saved["variants"]) == VARIANTS
    expected = {f"{v}/sft" for v in VARIANTS - {"sft"}} | {
        f"{v}/original" for v in ("first_visit", "cache_warm", "shared_prefix")
    }
    assert set(saved["ratios"]) == expected
    for key, value in saved["ratios"].items():
        assert math.isfinite(value) and value > 0, key
        assert saved["paired_ratios"][key]["n"] == 2
    assert len(saved["rounds"]) == 2 and all(set(r["seconds"]) == VARIANTS for r in saved["rounds"])
    assert saved["rounds"][0]["order"] != saved["rounds"][1]["order"]  # rotated

    check = saved["check"]  # float32: the three agree before timing
    assert check["allclose"] is True and set(check["sums"]) == {"original", "first_visit", "cache_warm"}
    sums = list(check["sums"].values())
    assert sums[0]["dist_sum"] > 0 and sums[1] == sums[2]  # warm cache = the first visit, bit for bit
    assert saved["prefix"]["computed"] == 1 and saved["prefix"]["reused"] >= 2

    peaks = saved["memory"]["peak_bytes"]
    assert all(p > 0 for p in peaks.values())
    # The original materialises (B, T, V) teacher logits: more than ours on the first visit.
    assert peaks["original"] > peaks["first_visit"]
    teacher_tokens = max(m["teacher_width"] for m in saved["micro_batches"])
    assert peaks["original"] >= teacher_tokens * 151936 * 4  # at least one (1, T, V) float32 tensor

    amortised = saved["amortised"]
    assert amortised["first_visit_share"] == pytest.approx(16 / 32000)  # 16 training rows, 32,000 visits
    assert amortised["seconds"] > 0 and saved["device"]["type"] == "cpu" and saved["mfu"] is None
    assert all(m["fixed_shot_teacher_tokens"] > m["student_tokens"] for m in saved["micro_batches"])
    assert "first_visit/original" in capsys.readouterr().out


def test_bench_step_refuses_bad_arguments(tmp_path, capsys):
    main = bench.main
    with pytest.raises(SystemExit):
        main(["--config", TINY, "--variants", "sft,nope", "--output", str(tmp_path / "x.json")])
    assert "--variants" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a config mistake: a UserError, exit 2, before torch work
        main(["--config", TINY, "training.per_device_batch_size=0", "--output", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert "per_device_batch_size" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_bench_step_stops_when_the_original_disagrees(gsm8k_dir, qwen3_tokenizer_path, tmp_path, monkeypatch):
    """The check is live: a reference that computes another loss stops the run before any timing."""
    from fsdistill.train import reference

    honest = reference.reference_micro_batch_losses

    def off_by_a_bit(*args, **kwargs):
        losses, shapes = honest(*args, **kwargs)
        losses.dist_sum = losses.dist_sum * 1.01
        return losses, shapes

    monkeypatch.setattr(reference, "reference_micro_batch_losses", off_by_a_bit)
    out = tmp_path / "x.json"
    argv = ["--config", TINY, *OFFLINE_OVERRIDES, *SMALL, "--variants", "sft,original,first_visit"]
    argv += ["--micro-batches", "1", "--steps", "1", "--threads", "1", "--output", str(out)]
    with pytest.raises(RuntimeError, match="disagree"):
        bench.main(argv)
    assert not out.exists()

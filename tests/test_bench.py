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
    assert all(0 < m["shared_prefix_tokens"] < m["fixed_shot_teacher_width"] for m in saved["micro_batches"])

    # The FLOP floors: every measured ratio has one, recomputed from the JSON alone.
    assert set(saved["predicted_ratios"]) == set(saved["ratios"])
    shape = bench.FlopShape(**saved["flops"]["shape"])
    assert shape.lora and shape.layers == 2 and shape.vocab == 151936
    again = bench.predicted_ratios(shape, saved["micro_batches"], saved["ratios"])
    assert again["ratios"] == pytest.approx(saved["predicted_ratios"])
    assert (
        saved["predicted_ratios"]["first_visit/original"] < 1 < saved["predicted_ratios"]["first_visit/sft"]
    )
    assert saved["predicted_ratios"]["cache_warm/sft"] == 1
    out = capsys.readouterr().out
    assert "first_visit/original" in out and "FLOPs" in out
    table = bench.bench_markdown(saved)  # compute.md's tables (tools/result_tables.py)
    r, p = saved["ratios"]["cache_warm/sft"], saved["paired_ratios"]["cache_warm/sft"]
    assert (
        f"| cache_warm/sft | {r:.3f} | {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] | 1.000 |" in table
    )


def test_flop_model_on_hand_computed_shapes():
    """2 layers, attention width 4, H 3, V 10, 100 body parameters; 2 rows: student width 5, teacher 20,
    6 answer tokens; fixed-shot teacher 22 wide of which 15 are the shared prefix."""
    lora = bench.FlopShape(layers=2, attention_width=4, hidden=3, vocab=10, body_parameters=100, lora=True)
    s = {
        "rows": [0, 1],
        "student_width": 5,
        "teacher_width": 20,
        "answer_tokens": 6,
        "fixed_shot_teacher_width": 22,
        "shared_prefix_tokens": 15,
        "student_tokens": 8,
        "student_lengths": [5, 3],
    }
    # student forward, head at the 6 answer positions: body 2*100*10, attention 2*2*4*(2*5^2), head 2*10*3*6
    student = 2000 + 800 + 360
    # teacher forward: body 2*100*40, attention 2*2*4*(2*20^2); the head at 6 positions, or at all 40 (b)
    teacher = 8000 + 12800
    # suffix of 7 over a prefix of 15: body 2*100*14, attention 2*2*4*2*(2*7*15 + 7^2)
    suffix = 2800 + 8288 + 360
    assert bench.variant_flops(lora, s) == {
        "sft": 2 * student,  # LoRA: backward = 1 x forward
        "original": teacher + 2400 + 2 * (2000 + 800 + 600),  # heads at all 2 x 20 and 2 x 5 positions
        "first_visit": teacher + 360 + 2 * student,
        "cache_warm": 2 * student,
        "shared_prefix": suffix + 2 * student,
    }
    full = bench.FlopShape(**{**lora.__dict__, "lora": False})
    assert bench.variant_flops(full, s)["sft"] == 3 * student  # full fine-tuning: backward = 2 x forward
    # MFU counts real tokens: 8 through the body, attention over lengths 5 and 3, 6 through the head
    assert bench.sft_model_flops(lora, [s]) == 2 * (1600 + 2 * 2 * 4 * (25 + 9) + 360)
    ratios = bench.predicted_ratios(lora, [s], ["first_visit/original", "cache_warm/sft", "x/sft"])["ratios"]
    assert ratios == {
        "first_visit/original": (teacher + 360 + 2 * student) / (teacher + 2400 + 6800),
        "cache_warm/sft": 1,
    }


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


def test_bench_on_policy_tiny(gsm8k_dir, qwen3_tokenizer_path, tmp_path, capsys, monkeypatch):
    """`bench_step.py --on_policy`: the two teachers agreed before timing (float32), every round timed every
    stage on the same rollouts, and the FLOP-predicted ratios follow from the token counts in the JSON.
    Without vLLM the JSON and its table say that vLLM was not measured (tests/test_vllm.py times it)."""
    import torch

    from fsdistill.tools import bench_on_policy

    monkeypatch.setattr(bench_on_policy, "vllm_importable", lambda: False)
    out = tmp_path / "bench" / "on_policy.json"
    rng = torch.get_rng_state()
    argv = ["--on_policy", "--config", TINY, *OFFLINE_OVERRIDES, *SMALL, "training.grad_accum_steps=2"]
    from fsdistill.tools.bench_cli import main as bench_step  # scripts/bench_step.py

    result = bench_step([*argv, "--rounds", "2", "--threads", "1", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result)) and torch.equal(torch.get_rng_state(), rng)

    check = saved["check"]
    assert check["allclose"] is True and check["rtol"] == 1e-4
    assert check["dist_sum"]["prefix_teacher"] == pytest.approx(check["dist_sum"]["reencode"], rel=1e-4)
    assert len(saved["rounds_detail"]) == 2
    stages = {"sft", "generation", "teacher", "student", "prefix_teacher", "reencode", "on_policy"}
    stages |= {"generation_generate", "weights_read", "generation_floor", "on_policy_generate_alone"}
    floor = saved["decode_floor"]
    for r in saved["rounds_detail"]:
        s = r["seconds"]
        assert set(s) == stages
        assert s["on_policy"] == pytest.approx(s["generation"] + s["teacher"] + s["student"])
        alone = s["generation_generate"] + s["teacher"] + s["student"]
        assert s["on_policy_generate_alone"] == pytest.approx(alone)
        bandwidth = floor["weight_bytes"] / s["weights_read"]
        per_pass = s["weights_read"]
        assert s["generation_floor"] == pytest.approx(
            floor["forward_passes"] * per_pass + floor["kv_bytes"] / bandwidth
        )
    assert saved["same_samples_as_generate_alone"] is True

    tokens, flops = saved["tokens"], saved["flops"]
    assert 0 < tokens["shared_prefix"] and tokens["teacher_suffix"] < tokens["teacher"]
    assert tokens["answer"] > 0 and saved["rollout"]["rows_per_step"] == 2 * 2  # batch 2 x accumulation 2
    assert saved["config"]["rollout"]["source"] == "student"
    predicted = saved["ratios"]["prefix_teacher/reencode"]["predicted_by_flops"]
    assert predicted == pytest.approx(flops["teacher"] / flops["reencode"]) and 0 < predicted < 1
    assert flops["on_policy"] == pytest.approx(flops["generation"] + flops["teacher"] + flops["student"])
    shares = saved["on_policy_step_shares"]["predicted_by_flops"]
    assert sum(shares.values()) == pytest.approx(1)
    assert "prefix_teacher/reencode" in capsys.readouterr().out
    table = bench_on_policy.on_policy_markdown(saved).splitlines()
    row = next(ln for ln in table if ln.startswith("| prefix_teacher/reencode"))
    assert row.endswith(f"| {predicted:.3f} | <= 0.35 |")
    assert any(ln.startswith("| generation's decode floor") for ln in table)
    assert saved["rollout_vllm"] == {"measured": False, "why": bench_on_policy.VLLM_NOT_MEASURED}
    assert f"vLLM not measured: {bench_on_policy.VLLM_NOT_MEASURED}." in table


def test_decode_floor_counts_the_weights_and_the_kv_cache_by_hand():
    """The floor's bytes on a tiny random Llama: every weight as stored, except an untied input embedding
    (a step reads one row of it), and the KV cache entries each decode step reads."""
    from types import SimpleNamespace

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fsdistill.tools.bench_on_policy import decode_floor, decode_weights

    for tied in (True, False):
        config = LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
        )
        lm = LlamaForCausalLM(config)
        weights = decode_weights(SimpleNamespace(model=lm))
        total = sum(p.numel() for p in lm.parameters())
        assert sum(w.numel() for w in weights) == (total if tied else total - 64 * 32)
        batch = SimpleNamespace(size=2, student_answer_start=torch.tensor([5, 7]))
        floor = decode_floor(
            SimpleNamespace(model=lm), [batch, batch], weights, forward_passes=4, cache_bytes=2
        )
        per_entry = 3 * 2 * 2 * 8 * 4 * 2  # layers x (k, v) x kv heads x head dim x rows x bytes
        assert floor["kv_bytes_per_cache_entry"] == per_entry
        assert floor["kv_bytes"] == per_entry * (8 + 9 + 10)  # 3 decode steps after the prefill, width 7
        assert floor["weight_bytes"] == 4 * sum(w.numel() for w in weights)


def test_bench_compare_evals_small(tmp_path, capsys):
    """scripts/bench_compare_evals.py at 3,000 examples: it runs compare_evals.py on its synthetic file in
    a child process, records the child's time and peak memory, and its statistics are those of the drawn
    table (no timing is asserted)."""
    from fsdistill.eval.stats import mcnemar_exact_from_counts
    from fsdistill.tools.bench_compare import compare_bench_markdown, synthetic_results
    from fsdistill.tools.bench_compare import main as bench_compare

    out = tmp_path / "compare.json"
    result = bench_compare(["--n", "3000", "--runs", "2", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["seconds"]["n"] == 2 and result["peak_mib"]["min"] > 0
    entries = synthetic_results(3000, 0)["results"]
    a = [ex["correct"] for ex in entries[0]["examples"]]
    b = [ex["correct"] for ex in entries[1]["examples"]]
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    c = result["comparison"]
    assert (c["n"], c["a_only_correct"], c["b_only_correct"]) == (3000, a_only, b_only)
    assert c["diff_pp"] == pytest.approx(100 * (a_only - b_only) / 3000)
    assert c["mcnemar_p"] == pytest.approx(mcnemar_exact_from_counts(a_only, b_only), rel=1e-12)
    assert "McNemar p" in result["printed"][1]
    table = compare_bench_markdown(result)
    assert "| 3,000 |" in table and f"{c['mcnemar_p']:.3g}" in table

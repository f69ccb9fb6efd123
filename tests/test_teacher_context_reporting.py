"""What the teacher-context experiment reports, on hand-made result files: the system prompt chosen on
validation by a paired test (or none), the readings' verdicts, the tables rendered from JSON; and the
shared-context benchmark (scripts/bench_step.py --shared_context) in-process on the tiny model."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS, OFFLINE_OVERRIDES

from fsdistill.errors import UserError
from fsdistill.eval.results import make_entry, new_results
from fsdistill.eval.summary import summary_reading
from fsdistill.eval.system_prompts import select, system_prompts_markdown
from fsdistill.tools import result_tables

N = 200
PROVENANCE = {"git_commit": None, "packages": {}, "data_sha256": None, "tokenizer": None, "created": "now"}


def result_file(name: str, correct: set[int], prompt: str | None, split: str = "validation") -> dict:
    """An eval_icl.py-like file: the base model 0-shot on N problems, `correct` the ones it got right."""
    examples = [
        {"index": i, "prediction": "x", "extracted": "1", "gold": "1", "correct": i in correct}
        for i in range(N)
    ]
    results = new_results({"split": split, "task.system_prompt": prompt, "model.name": "m"}, PROVENANCE)
    results["results"].append(make_entry(name, "base", None, 0, examples))
    return results


def test_the_chosen_prompt_is_the_largest_significant_gain():
    base = ("none.json", result_file("none", set(range(20)), None))
    candidates = [
        ("small.json", result_file("small", set(range(26)), "a")),  # +3 points: not significant
        ("big.json", result_file("big", set(range(60)), "b")),  # +20 points
        ("bigger.json", result_file("bigger", set(range(70)), "c")),  # +25 points
        ("worse.json", result_file("worse", set(range(5)), "d")),
    ]
    out = select(base, candidates, alpha=0.05, n_boot=500)
    by_name = {c["name"]: c for c in out["candidates"]}
    assert out["chosen"] == "bigger" and out["threshold"] == pytest.approx(0.05 / 4)
    assert (
        by_name["big"]["qualifies"]
        and not by_name["small"]["qualifies"]
        and not by_name["worse"]["qualifies"]
    )
    assert by_name["bigger"]["diff_pp"] == pytest.approx(25.0) and by_name["bigger"]["only_with"] == 50
    assert out["baseline"]["accuracy"] == pytest.approx(0.10)
    table = system_prompts_markdown(out)
    assert "| bigger: “c” | 35.0% [" in table and "**chosen**" in table and "none (without) | 10.0%" in table


def test_no_significant_gain_chooses_nothing():
    base = ("none.json", result_file("none", set(range(20)), None))
    out = select(base, [("a.json", result_file("a", set(range(24)), "a"))], alpha=0.05, n_boot=200)
    assert out["chosen"] is None and "nothing to distil" in system_prompts_markdown(out)


def test_selection_never_reads_test():
    base = ("none.json", result_file("none", set(range(20)), None, split="test"))
    with pytest.raises(UserError, match="validation split"):
        select(base, [("a.json", result_file("a", set(range(80)), "a"))], alpha=0.05, n_boot=200)


def side(condition: str, accuracy: float, shots: int = 0, step: int | None = 100) -> dict:
    return {"condition": condition, "step": step, "shots": shots, "accuracy": accuracy, "n_correct": 0}


def test_reading_says_plainly_where_distillation_does_not_beat_sft():
    comparison = {"n": 500, "mcnemar_p": 0.2, "a_only_correct": 1, "b_only_correct": 2}
    summary = {
        "comparisons": [
            {**comparison, "a": side("d", 0.80), "b": side("sft", 0.86), "diff_pp": -6.0, "diff_ci95_pp": [-9.0, -3.0]},
            {**comparison, "a": side("d", 0.80), "b": side("base", 0.4, 2, None), "diff_pp": 40.0, "diff_ci95_pp": [35.0, 45.0]},
            {**comparison, "a": side("e", 0.85), "b": side("sft", 0.86), "diff_pp": -1.0, "diff_ci95_pp": [-4.0, 2.0]},
        ]
    }  # fmt: skip
    lines = summary_reading(summary).splitlines()
    assert lines[0].startswith("- d (80.0%) is **worse than** sft (86.0%): −6.0 points [−9.0, −3.0]")
    assert "is **better than** base 2-shot (40.0%)" in lines[1]
    assert "is **not distinguishable from** sft" in lines[2] and "p = 0.20" in lines[2]


def test_new_table_kinds_render_from_json(tmp_path):
    base = ("none.json", result_file("none", set(range(20)), None))
    selection = select(base, [("a.json", result_file("a", set(range(80)), "a"))], alpha=0.05, n_boot=200)
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    summary = tmp_path / "summary.json"
    summary.write_text((CONFIGS.parent / "experiments" / "on_policy" / "summary.json").read_text())
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- system-prompts-table: selection.json -->\n<!-- end system-prompts-table -->\n"
        "<!-- summary-reading-table: summary.json -->\n<!-- end summary-reading-table -->\n"
    )
    result_tables.main([str(doc)])
    text = doc.read_text()
    assert "| a: “a” | 40.0%" in text and "on_policy_seed1 (51.2%) is **worse than** distill_seed1" in text
    result_tables.main(["--check", str(doc)])


def test_bench_shared_context_tiny(gsm8k_dir, qwen3_tokenizer_path, tmp_path, capsys):
    """`bench_step.py --shared_context --profile`: both teachers agreed before timing (float32), the context's
    prefix was computed once and reused at every call, the FLOP-predicted ratio follows from the shapes, the
    profiled parts add up, and the context length at which FLOPs meet the target is the count's."""
    from fsdistill.config import load_config
    from fsdistill.modeling.loading import load_student
    from fsdistill.tools.bench_cli import main as bench_step  # scripts/bench_step.py
    from fsdistill.tools.bench_shared_context import (
        TARGET,
        FlopShape,
        context_for_target,
        full_flops,
        shared_context_markdown,
        suffix_flops,
    )

    out = tmp_path / "bench" / "shared_context.json"
    argv = [
        "--shared_context", "--config", str(CONFIGS / "tiny" / "online_v1.yaml"), *OFFLINE_OVERRIDES,
        "data.max_train_examples=16", "distill.top_k=8", "--rounds", "2", "--micro-batches", "2",
        "--context-tokens", "120", "--threads", "1", "--profile", "--output", str(out),
    ]  # fmt: skip
    result = bench_step(argv)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["command"][1:] == argv  # re-runnable: --shared_context kept
    check = saved["check"]
    assert check["allclose"] is True and check["rtol"] == 1e-4
    once = saved["prefix_once"]
    assert once["computed"] == 1 and once["tokens"] >= 120
    # 2 micro-batches x (check + warm-up + 2 rounds + the profiled call), less the first
    assert once["reused"] == 2 * (1 + 1 + 2 + 1) - 1
    assert all(s["shared_prefix_tokens"] == once["tokens"] for s in saved["micro_batches"])
    ratio = saved["ratios"]["prefix/reencode"]
    assert ratio["predicted_by_flops"] == pytest.approx(saved["flops"]["prefix"] / saved["flops"]["reencode"])
    assert 0 < ratio["predicted_by_flops"] < 1 and saved["context"]["tokens"] == 120
    table = shared_context_markdown(saved)
    assert f"| {ratio['predicted_by_flops']:.3f} | <= 0.15 |" in table
    # --profile: one call of each variant split into parts that add up, and the FLOPs they stand for.
    profiled = saved["profile"]
    for variant in ("prefix", "reencode"):
        seconds = profiled["seconds"][variant]
        assert seconds["attention kernel"] > 0 and seconds["matrix products (body, head)"] > 0
        assert sum(v for k, v in seconds.items() if k != "total") == pytest.approx(seconds["total"])
        flops = profiled["flops"][variant]
        assert flops["matrix products"] + flops["attention"] == pytest.approx(saved["flops"][variant])
    counted = profiled["flops"]["prefix"]["attention"] / profiled["flops"]["reencode"]["attention"]
    as_run = (
        profiled["flops"]["prefix"]["attention as run"] / profiled["flops"]["reencode"]["attention as run"]
    )
    assert as_run < counted  # the padded square runs whole: re-encoding does more than causal pairs
    assert "| attention kernel | " in table and f"{counted:.3f} counted, {as_run:.3f} as run" in table
    # Where the FLOP count meets the target with these rows: a longer context, found from the JSON alone,
    # against the benchmark's own count on the tiny model with the micro-batches' prefix lengthened.
    found = context_for_target(saved)  # to within 10 tokens
    assert found is not None and f"a shared context of {found:,} tokens or more" in table
    cfg, _ = load_config(argv[2], overrides=argv[3:5])
    shape = FlopShape.of(load_student(cfg))

    def predicted(prefix_tokens: int) -> float:
        shapes = [
            {**s, "teacher_width": s["teacher_width"] - s["shared_prefix_tokens"] + prefix_tokens,
             "shared_prefix_tokens": prefix_tokens}
            for s in saved["micro_batches"]
        ]  # fmt: skip
        return sum(suffix_flops(shape, s) for s in shapes) / sum(full_flops(shape, s) for s in shapes)

    assert predicted(once["tokens"]) == pytest.approx(ratio["predicted_by_flops"], rel=1e-3)
    assert predicted(found) <= TARGET < predicted(found - 10) or found == once["tokens"]
    assert "prefix/reencode measured" in capsys.readouterr().out

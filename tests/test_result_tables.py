"""The result tables of README.md and compute.md are rendered from the committed JSON
(fsdistill.tools.result_tables)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO

from fsdistill.eval.summary import summary_markdown
from fsdistill.tools import result_tables


def test_the_documents_tables_match_their_json(capsys):
    result_tables.main(["--check"])
    assert "match their JSON" in capsys.readouterr().out
    documents = (
        ("README.md", ("summary",)),
        ("compute.md", ("bench-step", "bench-on-policy", "bench-repeats")),
    )
    for name, kinds in documents:
        text = (REPO / name).read_text()
        for kind in kinds:
            assert text.count(f"<!-- {kind}-table: ") == text.count(f"<!-- end {kind}-table -->") >= 1, name


def test_a_typed_in_number_is_caught_and_rewritten(tmp_path, capsys):
    summary = REPO / "experiments" / "twostep" / "summary.json"
    (tmp_path / "s").mkdir()
    shutil.copy(summary, tmp_path / "s" / "summary.json")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- summary-table: s/summary.json -->\n<!-- end summary-table -->\nrest\n")
    result_tables.main([str(readme)])
    rendered = readme.read_text()
    assert rendered.startswith("intro\n") and rendered.endswith("rest\n")
    result_tables.main(["--check", str(readme)])  # current: exit 0

    accuracy = f"{100 * json.loads(summary.read_text())['references'][1]['accuracy']:.1f}%"
    assert accuracy in rendered
    readme.write_text(rendered.replace(accuracy, "47.1%", 1))
    with pytest.raises(SystemExit) as stop:
        result_tables.main(["--check", str(readme)])
    assert stop.value.code == 1 and "stale" in capsys.readouterr().err


def test_summary_markdown_formats_hand_made_numbers():
    run = {"condition": "a_seed1", "step": 50, "accuracy": 0.5, "ci95": [0.4, 0.6]}
    summary = {
        "split": "test",
        "n": 10,
        "references": [{"label": "Base 0-shot", "accuracy": 0.1, "ci95": [0.02, 0.404]}],
        "groups": [
            {
                "label": "A",
                "runs": [run, {**run, "condition": "a_seed2", "accuracy": 0.7}],
                "mean_accuracy": 0.6,
            }
        ],
        "comparisons": [
            {
                "a": {"condition": "a_seed1", "shots": 0},
                "b": {"condition": "base", "shots": 2},
                "diff_pp": -12.34,
                "diff_ci95_pp": [-20.0, 3.05],
                "mcnemar_p": 3.94e-55,
                "a_only_correct": 1,
                "b_only_correct": 4,
            }
        ],
    }
    lines = summary_markdown(summary).splitlines()
    assert lines[2] == "| Base 0-shot | | | 10.0% [2.0, 40.4] |"
    assert (
        lines[3]
        == "| A | a_seed1 / a_seed2 | 50 / 50 | 50.0% [40.0, 60.0] / 70.0% [40.0, 60.0]; mean 60.0% |"
    )
    assert lines[-1] == "| a_seed1 − base 2-shot | −12.3 [−20.0, +3.0] | 3.9e-55 | 1 / 4 |"


def test_repeated_runs_show_each_ratios_median_and_range():
    from fsdistill.tools.bench import repeats_markdown

    def run(first_visit, amortised):
        return {
            "ratios": {"first_visit/original": first_visit},
            "predicted_ratios": {"first_visit/original": 0.857},
            "amortised": {
                "ratio_to_sft": amortised,
                "predicted_ratio_to_sft": 1.7,
                "ratio_to_original": None,
                "predicted_ratio_to_original": 0.36,
            },
        }

    on_policy = {"ratios": {"prefix_teacher/reencode": {"measured": 0.2, "predicted_by_flops": 0.1}}}
    lines = repeats_markdown([run(0.9, 1.5), run(0.95, 1.4), run(0.8, 1.6)]).splitlines()
    assert lines[0].startswith("| ratio | median of 3 runs [min, max]")
    assert lines[2] == "| first_visit/original | 0.900 [0.800, 0.950] | 0.900, 0.950, 0.800 | 0.857 |"
    assert lines[3] == "| amortised/sft | 1.500 [1.400, 1.600] | 1.500, 1.400, 1.600 | 1.700 |"
    assert len(lines) == 4  # no amortised/original without the original's timing
    assert repeats_markdown([on_policy]).splitlines()[2] == (
        "| prefix_teacher/reencode | 0.200 [0.200, 0.200] | 0.200 | 0.100 |"
    )


def test_vllm_agreement_counts_verdicts_texts_and_differences():
    """scripts/vllm_agreement.py's comparison of the two backends' texts on hand-made answers (last_number)."""
    from fsdistill.config import load_config
    from fsdistill.tasks import Example, make_task
    from fsdistill.tools.vllm_agreement import agreement, agreement_markdown

    cfg, _ = load_config(str(REPO / "configs" / "tasks" / "twostep.yaml"), overrides=["model.name=m"])
    task = make_task(cfg)
    examples = [Example(i, "q", None, gold) for i, gold in enumerate(["4", "6", "8", "10"])]
    hf = ["Answer: 4", "Answer: 6", "Answer: 7", "Answer: 1"]
    vllm = ["Answer: 4", "So: 6", "Answer: 8", "Answer: 2"]  # same verdicts on rows 0, 1 and 3; text on 0
    cell = agreement(task, examples, hf, vllm)
    assert (cell["n"], cell["same_verdict"], cell["same_text"]) == (4, 3, 1)
    assert cell["accuracy"] == {"hf": 0.5, "vllm": 0.75}
    assert cell["verdict_differs"] == [{"index": 2, "gold": "8", "hf": "Answer: 7", "vllm": "Answer: 8"}]
    cell.update(dtype="float32", shots=2, seconds_per_problem={"hf": 0.5, "vllm": 0.125})
    row = agreement_markdown({"cells": [cell]}).splitlines()[2]
    assert row == "| float32 | 2 | 4 | 50.0% | 75.0% | 3/4 (75.0%) | 1/4 | 0.500 | 0.125 |"


def test_vllm_colocation_table_gives_each_run_and_the_ratios_median_and_range():
    from fsdistill.tools.vllm_colocation import colocation_markdown

    def run(without, beside):
        return {
            "median_step_seconds": {"without_engine": without, "with_engine": beside},
            "with_over_without": beside / without,
            "torch_threads": {"before": 2, "after_engine_start": 2},
            "set_num_threads_works_after_engine_start": True,
            "load_average": {"before": 1.0, "after": 2.0},
        }

    table = colocation_markdown([run(1.0, 1.1), run(2.0, 1.8), run(1.0, 1.25)])
    assert "| 2 | 2.000 | 1.800 | 0.90 | 2 → 2 | works | 1.0 → 2.0 |" in table
    assert table.endswith("median 1.10, range 0.90–1.25 (3 runs).")

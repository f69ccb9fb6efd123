"""The result tables and prose figures of README.md and compute.md are rendered from the committed JSON
(fsdistill.tools.result_tables, fsdistill.tools.prose_figures)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from conftest import REPO

from fsdistill.errors import UserError
from fsdistill.eval.summary import summary_markdown
from fsdistill.tools import result_tables, twostep
from fsdistill.tools.prose_figures import FigureError, render_figures


def test_the_documents_tables_match_their_json(capsys):
    result_tables.main(["--check"])
    assert "match their JSON" in capsys.readouterr().out
    checked = result_tables.documents(REPO)
    documents = (
        ("docs/results.md", ("summary", "before-after")),
        ("compute.md", ("bench-step", "bench-on-policy", "bench-repeats")),
    )
    for name, kinds in documents:
        assert REPO / name in checked
        text = (REPO / name).read_text()
        for kind in kinds:
            assert text.count(f"<!-- {kind}-table: ") == text.count(f"<!-- end {kind}-table -->") >= 1, name
    results = (REPO / "docs" / "results.md").read_text()
    assert results.count("<!-- value: ") == results.count("<!-- end value -->") >= 50  # the readings' figures
    readme = (REPO / "README.md").read_text()
    assert REPO / "README.md" in checked
    assert readme.count("<!-- value: ") == readme.count("<!-- end value -->") >= 5  # its summary's figures


def test_check_finds_the_docs_pages_and_fails_on_an_edited_figure_in_one(tmp_path, monkeypatch, capsys):
    """Without arguments --check reads README.md, compute.md and every docs/*.md page of the checkout; a
    figure edited in a page that did not exist when the list was written is caught and its line named."""
    (tmp_path / "s").mkdir()
    shutil.copy(REPO / "experiments" / "twostep" / "summary.json", tmp_path / "s" / "summary.json")
    (tmp_path / "README.md").write_text("readme\n")
    (tmp_path / "compute.md").write_text("compute\n")
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "new_page.md"
    page.write_text(f"# A new page\n2-shot: {value('accuracy ../s/summary.json base@2')}\n")
    monkeypatch.setattr(result_tables, "REPO", tmp_path)
    assert result_tables.documents(tmp_path) == [tmp_path / "README.md", tmp_path / "compute.md", page]
    result_tables.main([])  # renders the page's figure from the JSON, relative to the page's folder
    rendered = page.read_text()
    result_tables.main(["--check"])
    figure = rendered_values(rendered)[0]
    assert re.fullmatch(r"\d+\.\d%", figure)
    page.write_text(rendered.replace(f"-->{figure}<", "-->99.9%<"))
    with pytest.raises(SystemExit) as stop:
        result_tables.main(["--check"])
    assert stop.value.code == 1
    assert f"{page}:2: 2-shot" in capsys.readouterr().err


def test_every_document_with_a_rendered_figure_is_checked():
    """A Markdown file of the checkout holding a table or prose-figure marker is among the documents
    gen_result_tables.py --check (CI) renders by default, else its numbers could drift unnoticed."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    marked = {
        REPO / name
        for name in tracked
        if re.search(r"<!-- ([a-z-]+-table|value): ", (REPO / name).read_text(encoding="utf-8"))
    }
    assert REPO / "docs" / "teacher.md" in marked
    assert marked <= set(result_tables.documents(REPO))


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

    def run(without, idle):
        return {
            "median_step_seconds": {
                "without_engine": without,
                "engine_idle": idle,
                "after_vllm_sampling": 3.0,
                "after_hf_sampling": 4.0,
            },
            "with_over_without": idle / without,
            "sampling_seconds": {
                "after_vllm_sampling": [1.0, 2.0, 9.0],
                "after_hf_sampling": [5.0, 6.0, 7.0],
            },
            "torch_threads": {"before": 2, "after_engine_start": 2},
            "set_num_threads_works_after_engine_start": True,
            "load_average": {"before": 1.0, "after": 2.0},
        }

    table = colocation_markdown([run(1.0, 1.1), run(2.0, 1.8), run(1.0, 1.25)])
    row = "| 2 | 2.00 s | 1.80 s | 3.00 s | 4.00 s | 2.0 / 6.0 | 2 → 2 | works | 1.0 → 2.0 |"
    assert row in table.splitlines()
    assert table.endswith("median 1.10, range 0.90–1.25 (3 runs).")


# --------------------------------------------------------------------------------------------------
# Prose figures (fsdistill.tools.prose_figures)
# --------------------------------------------------------------------------------------------------

V1 = REPO / "experiments" / "twostep" / "v1"
ON_POLICY_V1 = REPO / "experiments" / "on_policy" / "v1"


def value(spec: str, text: str = "?") -> str:
    return f"<!-- value: {spec} -->{text}<!-- end value -->"


def rendered_values(text: str) -> list[str]:
    return re.findall(r"-->([^<]*)<!-- end value -->", text)


def test_a_typed_in_or_edited_prose_figure_is_caught_and_rewritten(tmp_path, capsys):
    """The figure the issue found wrong: the 2-shot base model's first step on the first (version 1) test
    split, typed in as 59%, re-derived from the committed predictions as 62.0% (310 of 500)."""
    readme = tmp_path / "README.md"
    spec = f"first-step {V1 / 'icl_eval.json'} base@2"
    readme.write_text(f"intro\nthe base model gets it right on {value(spec, '59%')} of problems\n")
    with pytest.raises(SystemExit) as stop:
        result_tables.main(["--check", str(readme)])
    assert stop.value.code == 1
    assert f"{readme}:2: the base model" in capsys.readouterr().err  # names the line
    result_tables.main([str(readme)])
    assert rendered_values(readme.read_text()) == ["62.0%"]
    result_tables.main(["--check", str(readme)])  # current: exit 0
    readme.write_text(readme.read_text().replace("62.0%", "62.1%"))
    with pytest.raises(SystemExit):
        result_tables.main(["--check", str(readme)])


def test_prose_figures_read_summaries_predictions_and_run_logs():
    summary = json.loads((V1 / "summary.json").read_text())
    spec = "distill_seed1:shuffled_answers_seed1"
    row = next(c for c in summary["comparisons"] if ":".join(c["spec"]) == spec)
    logged = [json.loads(line) for line in open(ON_POLICY_V1 / "runs" / "on_policy_seed1" / "metrics.jsonl")]
    kl = [r["train/divergence"] for r in logged]
    doc = " ".join(
        value(s)
        for s in (
            "accuracy v1/summary.json base@2",
            "accuracy v1/summary.json distill_seed1,distill_seed2",
            "mean v1/summary.json sft_seed1,sft_seed2 pct:0",
            f"diff v1/summary.json {spec}",
            f"diff v1/summary.json {spec} abs:2",
            f"interval v1/summary.json {spec}",
            f"p v1/summary.json {spec}",
            f"only-a v1/summary.json {spec}",
            f"only-b v1/summary.json {spec}",
            "first-step v1/test_eval.json sft_seed1,sft_seed2 pct:0",
            "two-step-format v1/icl_eval.json base@2 pct:0",
            "twins v1/test_eval.json train",
            "distinct test_eval.json train",
            "twin-accuracy v1/test_eval.json sft_seed1 train with",
            "twin-accuracy v1/test_eval.json sft_seed1 train without",
            "field v1/timing.json total_seconds",
            "field v1/timing.json seconds.test_eval minutes:1",
            "metric ../on_policy/v1/runs/on_policy_seed1 train/divergence first 2 range num:1",
            "metric ../on_policy/v1/runs/on_policy_seed1 train/divergence last 20 max num:3",
        )
    )
    figures = rendered_values(render_figures(doc, V1.parent, "doc"))
    assert figures[:3] == ["37.6%", "76.4–79.6%", "89%"]  # the summary table's numbers
    lo, hi = row["diff_ci95_pp"]
    assert figures[3:9] == [
        f"{row['diff_pp']:+.1f}".replace("-", "−"),
        f"{abs(row['diff_pp']):.2f}",
        f"{lo:+.1f} to {hi:+.1f}".replace("-", "−"),
        "0.064",
        str(row["a_only_correct"]),
        str(row["b_only_correct"]),
    ]
    # 462 and 466 of 500 SFT answers start with the right sum; the base model writes the format on 95%
    assert figures[9:11] == ["92–93%", "95%"]
    assert figures[11] == "217"  # the count of test problems with their twin in train
    # version 2's training split keeps twins together: 500 problems, each pair counted once
    assert figures.pop(12) == str(
        500 - sum(twostep.twin_elsewhere(*[twostep.make_splits(0)["train"]] * 2)) // 2
    )
    twin = twostep.twin_elsewhere(twostep.make_splits(0, 1)["test"], twostep.make_splits(0, 1)["train"])
    sft = next(
        e for e in json.loads((V1 / "test_eval.json").read_text())["results"] if e["condition"] == "sft_seed1"
    )
    for which, text in zip((True, False), figures[12:14]):
        right = [e["correct"] for e in sft["examples"] if twin[e["index"]] == which]
        assert text == f"{100 * sum(right) / len(right):.1f}%" and len(right) == (217 if which else 283)
    timing = json.loads((V1 / "timing.json").read_text())
    assert figures[14:16] == [f"{timing['total_seconds']:,}", f"{timing['seconds']['test_eval'] / 60:.1f}"]
    assert figures[16:] == [f"{min(kl[:2]):.1f}–{max(kl[:2]):.1f}", f"{max(kl[-20:]):.3f}"]


def test_a_figure_that_cannot_be_rendered_names_the_document_and_line(tmp_path):
    bad = {
        value("median v1/summary.json sft_seed1"): "unknown quantity 'median'",
        value("accuracy v1/summary.json sft_seed9"): "no run 'sft_seed9' in the summary",
        value("p v1/summary.json sft_seed1:distill_seed1"): "no paired test 'sft_seed1:distill_seed1'",
        value("accuracy v1/summary.json sft_seed1 pct"): "format 'pct'",
        value("diff v1/summary.json"): "diff: wrong arguments ''",
        value("field v1/timing.json seconds.nothing"): "no key 'seconds.nothing'",
        value("metric ../on_policy/v1/runs/on_policy_seed1 rollout/accuracy middle 20"): "first|last N",
        # version 1 results recorded the train and test files only
        value("twins v1/test_eval.json validation"): "its provenance names no validation file",
        "<!-- value: accuracy v1/summary.json base@2 -->37.6%\n": "without '<!-- end value -->'",
    }
    for doc, message in bad.items():
        with pytest.raises(FigureError, match=re.escape(message)) as caught:
            render_figures(f"line one\n{doc}", V1.parent, "README.md")
        assert str(caught.value).startswith("README.md:2: ") or "end value" in message
    # A result file whose test split is no twostep split of the version it records is refused.
    results = json.loads((V1 / "icl_eval.json").read_text())
    results["provenance"]["data_sha256"]["data/twostep/test.jsonl"] = "0" * 64
    (tmp_path / "icl.json").write_text(json.dumps(results))
    with pytest.raises(FigureError, match="no twostep split of version 1, seed 0 has it"):
        render_figures(value("first-step icl.json base@2"), tmp_path, "README.md")


def test_before_after_table_shows_each_row_of_either_version():
    from fsdistill.eval.summary import before_after_markdown

    def summary(sft, kd=None):
        ref = {"label": "Base 0-shot", "condition": "base", "shots": 0, "accuracy": 0.1, "ci95": [0.05, 0.2]}
        runs = [{"condition": "sft_seed1", "step": 100, "accuracy": sft, "ci95": [sft - 0.1, sft + 0.1]}]
        groups = [{"label": "SFT", "runs": runs, "mean_accuracy": sft}]
        if kd is not None:
            kd_run = {"condition": "kd_seed1", "step": 50, "accuracy": kd, "ci95": [kd - 0.1, kd + 0.1]}
            groups.append({"label": "KD", "runs": [kd_run], "mean_accuracy": kd})
        return {"split": "test", "n": 500, "references": [ref], "groups": groups}

    lines = before_after_markdown([summary(0.9), summary(0.8), summary(0.9, 0.7), summary(0.8, 0.6)])
    assert lines.splitlines() == [
        "| test, n = 500 | runs | before [Wilson 95%] | after [Wilson 95%] |",
        "| --- | --- | --- | --- |",
        "| Base 0-shot | | 10.0% [5.0, 20.0] | 10.0% [5.0, 20.0] |",
        "| SFT | sft_seed1 | 90.0% [80.0, 100.0] | 80.0% [70.0, 90.0] |",
        "| KD | kd_seed1 | 70.0% [60.0, 80.0] | 60.0% [50.0, 70.0] |",
    ]
    assert "| KD | kd_seed1 | | 60.0% [50.0, 70.0] |" in before_after_markdown(
        [summary(0.9), summary(0.8, 0.6)]
    )
    with pytest.raises(UserError, match="sft_seed1 reads 90.0%"):  # a reused run that differs
        before_after_markdown([summary(0.9), summary(0.8), summary(0.7), summary(0.8)])
    with pytest.raises(UserError, match="pairs of summaries"):
        before_after_markdown([summary(0.9)])

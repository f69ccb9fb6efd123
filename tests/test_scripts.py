"""scripts/show_config.py on every shipped config; scripts/show_batch.py on the tiny and Qwen3 configs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import CONFIGS, OFFLINE_OVERRIDES, REPO, gsm8k_parser

from fsdistill.config import load_config, to_dict
from fsdistill.tasks.rows import load_split

# configs/tasks/ holds fragments that model configs inherit (they name no model); configs/accelerate/
# holds accelerate launch files (tests/test_launch.py).
NOT_TRAINING = {*CONFIGS.glob("tasks/*.yaml"), *CONFIGS.glob("accelerate/*.yaml")}
ALL_CONFIGS = sorted(set(CONFIGS.rglob("*.yaml")) - NOT_TRAINING)
SFT_CONFIGS = {"base.yaml", "qwen8b.yaml", "tiny/base.yaml", "tiny/full_ft.yaml"}
BATCH_CONFIGS = sorted(
    [
        *CONFIGS.glob("tiny/*.yaml"),
        CONFIGS / "base.yaml",
        CONFIGS / "online_v1.yaml",
        *CONFIGS.glob("ablation_*.yaml"),
        *CONFIGS.glob("qwen8b*.yaml"),
    ]
)


def load_script(name: str):
    """The package command behind scripts/{name}.py, as an object with .main."""
    from types import SimpleNamespace

    from fsdistill.tools import inspect

    return SimpleNamespace(main=getattr(inspect, name))


def rel(path) -> str:
    return str(path.relative_to(CONFIGS))


# --------------------------------------------------------------------------------------------------
# show_config.py
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=rel)
def test_show_config_prints_the_resolved_config(path, capsys):
    show_config = load_script("show_config")
    show_config.main(["--config", str(path), "--sources", "training.seed=7"])
    out = capsys.readouterr().out
    body, _, sources = out.partition("# set explicitly:")
    cfg, source = load_config(str(path), overrides=["training.seed=7"])
    assert yaml.safe_load(body) == to_dict(cfg)  # every key, defaults filled in
    assert "#   training.seed: the command line" in sources
    for key in source:
        assert f"#   {key}: " in sources


def test_show_config_subprocess_exit_status(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "scripts/show_config.py", "--config", "configs/online_v1.yaml", "fewshot.k=4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["fewshot"]["k"] == 4
    none = subprocess.run(
        [sys.executable, "scripts/show_config.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert none.returncode == 2 and "give --config FILE" in none.stderr and "Traceback" not in none.stderr


# --------------------------------------------------------------------------------------------------
# show_batch.py
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def show_batch_module(qwen3_tokenizer_path):
    """show_batch with load_tokenizer cached: the real loader, called once per module, not per config."""
    from fsdistill.data import prompts

    real = prompts.load_tokenizer
    cache: dict[str, object] = {}

    def cached(name_or_path):
        assert str(name_or_path) == str(qwen3_tokenizer_path)
        if name_or_path not in cache:
            cache[name_or_path] = real(name_or_path)
        return cache[name_or_path]

    mp = pytest.MonkeyPatch()
    mp.setattr(prompts, "load_tokenizer", cached)
    yield load_script("show_batch")
    mp.undo()


@pytest.fixture(scope="module")
def train_rows(gsm8k_dir):
    return load_split(str(gsm8k_dir), "train", "main", gsm8k_parser())


HEADER = re.compile(
    r"# training example: step (?P<step>\d+), slot (?P<slot>\d+), row (?P<row>\d+) of split 'train'\n"
    r"(?:# no teacher \(--sft\)|# exemplar rows of the training split \((?P<sel>\w+)"
    r"(?:, answers shuffled \((?P<mode>\w+)\))?\): "
    r"\[(?P<shots>[\d, ]*)\])\n"
    r"# student: (?P<s_len>\d+) tokens \(max (?P<s_max>\d+)\); answer part: (?P<a_len>\d+) tokens, "
    r"label positions (?P<l0>\d+)\.\.(?P<l1>\d+)\n"
    r"(?:# teacher: (?P<t_len>\d+) tokens \(max (?P<t_max>\d+)\); answer part starts at (?P<t_start>\d+)\n)?"
)


@pytest.mark.parametrize("path", BATCH_CONFIGS, ids=rel)
def test_show_batch_marks_the_answer_span_and_counts_tokens(path, show_batch_module, train_rows, capsys):
    sft = rel(path) in SFT_CONFIGS
    args = ["--config", str(path), "--step", "2", *(["--sft"] if sft else []), *OFFLINE_OVERRIDES]
    show_batch_module.main(args)
    out = capsys.readouterr().out
    m = HEADER.search(out)
    assert m, out[:1000]
    cfg, _ = load_config(str(path), overrides=OFFLINE_OVERRIDES)
    h = {k: v for k, v in m.groupdict().items()}
    assert (int(h["step"]), int(h["slot"])) == (2, 0)
    assert int(h["s_max"]) == cfg.data.max_student_len
    ex = train_rows[int(h["row"])]
    answer_part = ex.answer + "<|im_end|>\n"
    s_len, a_len = int(h["s_len"]), int(h["a_len"])
    assert (int(h["l0"]), int(h["l1"])) == (s_len - a_len, s_len - 1)
    assert (h["shots"] is None) == sft and (h["t_len"] is None) == sft
    # the marked spans: exactly the answer part, once for the student and once for the teacher
    body = out.replace("(answer part between \u27e6 \u27e7)", "")  # the section titles name the markers
    spans = re.findall("\u27e6(.*?)\u27e7", body, flags=re.S)
    assert spans == [answer_part] * (1 if sft else 2)
    assert "===== STUDENT" in out and ("===== TEACHER" in out) != sft
    student = out.split("===== STUDENT")[1].split("\n", 1)[1]
    assert f"Question: {ex.question}<|im_end|>" in student and "<think>\n\n</think>\n\n\u27e6" in student
    if not sft:
        shots = [int(x) for x in h["shots"].split(",") if x.strip()]
        assert len(shots) == cfg.fewshot.k and int(h["row"]) not in shots
        mode = cfg.fewshot.shuffle_mode if cfg.fewshot.shuffle_answers else None
        assert (h["sel"], h["mode"]) == (cfg.fewshot.selection, mode)
        teacher = out.split("===== TEACHER")[1]
        assert teacher.count("<|im_start|>user\nQuestion: ") == cfg.fewshot.k + 1
        if cfg.fewshot.k == 0:
            assert int(h["t_len"]) == s_len
        else:
            assert int(h["t_len"]) > s_len
        assert int(h["t_max"]) == cfg.data.max_teacher_len
        assert int(h["t_len"]) - int(h["t_start"]) == a_len


def test_show_batch_reports_a_too_long_example(show_batch_module, capsys):
    path = CONFIGS / "tiny" / "online_v1.yaml"
    show_batch_module.main(["--config", str(path), *OFFLINE_OVERRIDES, "data.max_student_len=16"])
    assert "exceeds a length limit and is dropped" in capsys.readouterr().out


def test_show_batch_user_errors_exit_2_without_traceback(show_batch_module, capsys):
    path = CONFIGS / "tiny" / "online_v1.yaml"
    for extra in (["data.max_train_examples=2"], ["--index", "-1"]):  # k=2 needs 3 rows; a bad index
        with pytest.raises(SystemExit) as e:
            show_batch_module.main(["--config", str(path), *OFFLINE_OVERRIDES, *extra])
        assert e.value.code == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_overrides_may_come_before_and_after_options(show_batch_module, capsys):
    show_config = load_script("show_config")
    show_config.main(
        ["fewshot.k=3", "--config", str(CONFIGS / "online_v1.yaml"), "training.lr=1e-3", "--sources"]
    )
    out = capsys.readouterr().out
    assert yaml.safe_load(out.split("# set explicitly:")[0])["fewshot"]["k"] == 3
    assert "#   training.lr: the command line" in out
    path = CONFIGS / "tiny" / "online_v1.yaml"
    show_batch_module.main(
        [OFFLINE_OVERRIDES[0], "--config", str(path), OFFLINE_OVERRIDES[1], "--index", "5"]
    )
    assert "slot 1, row " in capsys.readouterr().out  # index 5 with G = 4: step 1, slot 1


# --------------------------------------------------------------------------------------------------
# Every script of the README is a thin wrapper over the package
# --------------------------------------------------------------------------------------------------


def test_every_script_answers_help_without_torch():
    """Each file under scripts/ and src/training/ runs as `python FILE --help` (one subprocess for all:
    imports cost seconds), stays a few lines calling the package, and none loads torch or pyplot just to
    parse its arguments; the result-file commands load no matplotlib either."""
    scripts = sorted([*(REPO / "scripts").glob("*.py"), *(REPO / "src" / "training").glob("*.py")])
    plain = [
        p for p in scripts if p.stem in ("compare_evals", "merge_evals", "show_config", "gen_config_docs")
    ]
    rest = [p for p in scripts if p not in plain]
    for path in scripts:
        code_lines = [ln for ln in path.read_text().split('"""')[-1].splitlines() if ln.strip()]
        assert len(code_lines) <= 4, f"{path} is not a thin wrapper over the package: {code_lines}"
    code = (
        "import runpy, sys\n"
        "def run(path):\n"
        "    sys.argv = [path, '--help']\n"
        "    try:\n"
        "        runpy.run_path(path, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (path, e.code)\n"
        "    else:\n"
        "        raise AssertionError(path + ' --help did not exit')\n"
        f"for path in {[str(p) for p in plain]!r}:\n"
        "    run(path)\n"
        "    assert 'matplotlib' not in sys.modules, path\n"
        f"for path in {[str(p) for p in rest]!r}:\n"
        "    run(path)\n"
        "assert 'torch' not in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"  # figures use Figure + Agg canvas, no global state
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("usage:") == len(scripts)


def test_the_demo_writes_an_untracked_folder_unless_asked_to_refresh_the_committed_copy():
    def paths(*flags: str) -> list[str]:
        done = subprocess.run(
            ["bash", "scripts/demo_cpu.sh", *flags, "--print-paths"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    for path in paths():  # by default: git ignores every folder the demo writes
        assert subprocess.run(["git", "check-ignore", "-q", f"{path}/x.json"], cwd=REPO).returncode == 0, path
    assert paths("--refresh") == ["experiments/demo", "assets/demo"]
    for path in paths("--refresh"):  # the deliberate flag: the committed copy
        assert subprocess.run(["git", "ls-files", path], cwd=REPO, capture_output=True, text=True).stdout
    bad = subprocess.run(["bash", "scripts/demo_cpu.sh", "--bogus"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown argument '--bogus'")


def test_experiment_lanes_run_side_by_side_time_the_phases_and_fail_on_a_failed_lane(tmp_path):
    """scripts/experiment_lanes.sh, which the CPU experiment scripts source."""
    script = f"""
set -euo pipefail
LOGS={tmp_path}
. {REPO}/scripts/experiment_lanes.sh
lanes one "echo wrote a" "echo wrote b"
phase first
write_timing {tmp_path}/timing.json
lanes two "true" "exit 3"
echo not reached
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not reached" not in proc.stdout
    assert "a lane of 'two' failed" in proc.stderr
    assert (tmp_path / "one_a.log").read_text() == "wrote a\n" and "wrote b" in proc.stdout
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert set(timing["seconds"]) == {"first"} and timing["total_seconds"] >= 0

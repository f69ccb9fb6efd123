"""Shared fixtures: the real GSM8K and Qwen3 tokenizer from ../shared (beside the repo), offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# Beside the repo, or where FSDISTILL_SHARED says (the GPU check carries a copy inside the checkout).
SHARED = Path(os.environ.get("FSDISTILL_SHARED") or REPO.parent / "shared")
GSM8K_DIR = SHARED / "data" / "gsm8k"
QWEN3_TOKENIZER = SHARED / "tokenizers" / "qwen3"
CONFIGS = REPO / "configs"

# Overrides that point a tiny config at the local copies instead of the Hub.
OFFLINE_OVERRIDES = [f"model.tokenizer={QWEN3_TOKENIZER}", f"data.source={GSM8K_DIR}"]


VLLM_ABSENT = (
    "vLLM is not installed in this environment: it lives in its own (bash scripts/setup_vllm.sh), where "
    "`.venv-vllm/bin/python -m pytest -m vllm` runs these tests against the real engine"
)


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.vllm` tests need the real engine: without vLLM they skip, saying where they run."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    skip = pytest.mark.skip(reason=VLLM_ABSENT)
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(skip)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: these tests read the real data from ../shared beside the repo")
    return path


def prepared_smollm2_dir() -> Path:
    """The SmolLM2-135M-Instruct folder scripts/prepare_smollm2.py writes (FSDISTILL_SMOLLM2_DIR, else
    models/), or a skip saying how to prepare it. One check, by the marker the preparation writes last, so
    a half-written folder is not taken for a prepared one."""
    from fsdistill.tools.smollm2 import default_model_dir, is_prepared

    folder = default_model_dir()
    if not is_prepared(folder):
        pytest.skip(f"SmolLM2-135M-Instruct is not prepared at {folder}: python scripts/prepare_smollm2.py")
    return folder


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    return _need(GSM8K_DIR)


@pytest.fixture(scope="session")
def qwen3_tokenizer_path() -> Path:
    return _need(QWEN3_TOKENIZER)


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_tokenizer_path))


# ------------------------------------------------------------------------------------------------
# Training runs shared by test_training.py and test_distributed.py (added with those tests)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def short_gsm8k(tmp_path_factory, gsm8k_dir, qwen3_tokenizer_path) -> Path:
    """A local GSM8K folder with the 64 shortest training rows, shortest first (see tests/helpers.py)."""
    from helpers import write_short_gsm8k

    return write_short_gsm8k(tmp_path_factory.mktemp("short_gsm8k"))


@pytest.fixture(scope="session")
def online_reference(tmp_path_factory, short_gsm8k) -> Path:
    """One in-process train_online_v1 run (4 steps, G = 1 process x 2 x 2 accumulated) that several
    tests read: its files, its recorded losses, and the 1-process reference of the 2-process run."""
    from helpers import TEACHER_OVERRIDES, cli_argv, common_overrides, run_cli

    from fsdistill.train.entry import train_online_v1 as main

    out = tmp_path_factory.mktemp("runs") / "online_ref"
    argv = cli_argv("online_v1.yaml", out, *common_overrides(short_gsm8k), *TEACHER_OVERRIDES)
    assert run_cli(main, argv) == 0
    return out


def qwen_cfg(*overrides: str, config: str = "online_v1.yaml"):
    """A shipped Qwen3 config pointed at the local tokenizer and data."""
    from fsdistill.config import load_config

    cfg, _ = load_config(str(CONFIGS / config), overrides=[*OFFLINE_OVERRIDES, *overrides])
    return cfg


def gsm8k_parser():
    """The row parser of the GSM8K task (the schema's default task), every row needing its answer and gold."""
    from fsdistill.config import TaskConfig
    from fsdistill.tasks import ConfiguredTask
    from fsdistill.tasks.scoring import make_scoring

    settings = TaskConfig()
    return ConfiguredTask(settings, make_scoring(settings)).parser(("answer", "gold"))


@pytest.fixture(scope="session")
def train_rows(gsm8k_dir):
    """The real GSM8K training split."""
    from fsdistill.tasks.rows import load_split

    return load_split(str(gsm8k_dir), "train", "main", gsm8k_parser())

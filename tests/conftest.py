"""Shared fixtures: the real GSM8K and Qwen3 tokenizer from ../shared (beside the repo), offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GSM8K_DIR = SHARED / "data" / "gsm8k"
QWEN3_TOKENIZER = SHARED / "tokenizers" / "qwen3"
CONFIGS = REPO / "configs"

# Overrides that point a tiny config at the local copies instead of the Hub.
OFFLINE_OVERRIDES = [f"model.tokenizer={QWEN3_TOKENIZER}", f"data.source={GSM8K_DIR}"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: these tests read the real data from ../shared beside the repo")
    return path


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

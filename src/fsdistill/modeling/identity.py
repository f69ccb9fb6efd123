"""What a model and a tokenizer are, beyond their names: the identity a resumed run, a checkpoint and a
teacher cache record, so that other weights or another tokenizer under the same `model.name` are noticed.

- weights: the sha256 of each weight file of a local folder (cached by path, size and modification
  time, so a 16 GB model is hashed once), the Hub revision (commit) of a Hub model, or "random" for
  model.init=random (the architecture is already part of the config).
- tokenizer: the sha256 of what decides its ids: the serialised vocabulary and rules, special tokens and
  chat template.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fsdistill.config import ModelConfig
from fsdistill.files import sha256_file, write_json_atomic

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fsdistill" / "sha256.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (absolute path, size, mtime): rehashed only when the file changes."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_file(path)
        try:
            write_json_atomic(cache_path, cache)
        except OSError:  # a read-only home: hash again next time
            pass
    return cache[key]


def weights_identity(model: ModelConfig) -> dict:
    """{"random": true}, {"files": {name: sha256}} for a local folder, or {"hub_revision": commit}."""
    if model.init == "random":
        return {"random": True}
    folder = Path(model.name).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        return {"files": {p.name: cached_sha256(p) for p in files}}
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model.name, "config.json")
    revision = Path(found).parent.name if isinstance(found, str) else None
    return {"hub_revision": revision}


def tokenizer_identity(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary and rules, its special tokens and its chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rules = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.all_special_tokens, getattr(tokenizer, "chat_template", None)])
    return hashlib.sha256((rules + extra).encode()).hexdigest()

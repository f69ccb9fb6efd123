"""What a model and a tokenizer are, beyond their names: the identity a resumed run, a checkpoint and a
teacher cache record, so that other weights or another tokenizer under the same `model.name` are noticed.

- weights: the sha256 of each weight file of a local folder (cached by path, size and modification
  time, so a 16 GB model is hashed once), the Hub revision (commit) of a Hub model, or "random" for
  model.init=random (the architecture is already part of the config).
- tokenizer: the sha256 of what decides its ids: the serialised vocabulary and rules, special tokens and
  chat template.
- teacher: what the teacher adds (teacher.*): its context's template and the sha256 of each text it reads,
  and another model's weights identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fsdistill.config import Config, ModelConfig
from fsdistill.files import sha256_file, write_json_atomic
from fsdistill.modeling.loading import teacher_model_settings

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


def teacher_identity(cfg: Config, context) -> dict:
    """What the teacher's targets depend on beyond the config's settings, for run.json, result files and
    the teacher-cache key: its context (a data.teacher_prompt.TeacherContext, or None: the template and
    each text's sha256) and teacher.model's weights identity. {} for the plain k-shot base teacher."""
    out = {}
    if context is not None:
        out["teacher_context"] = context.identity()
    settings = teacher_model_settings(cfg)
    if settings is not None:
        out["teacher_weights"] = weights_identity(settings)
    return out

"""Training state as safetensors + JSON: optimizer, scheduler and RNG states with no pickle.

`torch.load(weights_only=False)` of a checkpoint file runs whatever a crafted file tells the unpickler to
run, and a checkpoint folder is a user's folder. So a state (nested dicts, lists and tuples of tensors,
numpy arrays, numbers, strings, booleans and None: what optimizer.state_dict(), scheduler.state_dict() and
the RNG states are) is stored as two files that only hold data:

    STEM.safetensors   every tensor, under a key naming where it sits ("state.0.exp_avg")
    STEM.json          the structure, with {"__tensor__": key} in the tensors' places; tuples, numpy arrays
                       and dicts with non-string keys (the optimizer's parameter indices) are tagged so
                       they come back as they were

A file that is not what it should be raises CheckpointError naming it: nothing in it is ever executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsdistill.errors import UserError
from fsdistill.files import write_json_atomic


class CheckpointError(UserError):
    """A checkpoint (or one of its files) that is damaged, foreign or from an incompatible version."""


def _split(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """obj with its tensors moved into `tensors` (keys from their place) -> a JSON-able structure."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()  # safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _split(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"state_io: cannot store a {type(obj).__name__} at {key!r} without pickle")


def _join(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        if obj["__tensor__"] not in tensors:
            raise CheckpointError(
                f"{where}: names tensor {obj['__tensor__']!r}, which its .safetensors lacks"
            )
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_join(v, tensors, where) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _join(v, tensors, where) for k, v in obj["__items__"]}
    return {k: _join(v, tensors, where) for k, v in obj.items()}


def save_state(obj: Any, stem: Path) -> list[Path]:
    """Write STEM.safetensors and STEM.json; returns the two paths."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = _split(obj, "state", tensors)
    tensor_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    save_file(tensors, str(tensor_path))
    write_json_atomic(json_path, structure)
    return [tensor_path, json_path]


def read_json(path: Path) -> Any:
    """A JSON file of a checkpoint; anything else (binary, torn, a pickle) raises CheckpointError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not the JSON file this project writes ({e})") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of a checkpoint (tensors on the CPU); anything else raises CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load_state(stem: Path) -> Any:
    """The state save_state wrote at STEM."""
    json_path = stem.with_suffix(".json")
    return _join(read_json(json_path), read_safetensors(stem.with_suffix(".safetensors")), json_path)

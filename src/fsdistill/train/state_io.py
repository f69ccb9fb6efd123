"""Training state as safetensors + JSON: optimizer, scheduler and RNG states with no pickle.

`torch.load(weights_only=False)` of a checkpoint file runs whatever a crafted file tells the unpickler to
run, and a checkpoint folder is a user's folder. So a state (nested dicts, lists and tuples of tensors,
numpy arrays, numbers, strings, booleans and None: what optimizer.state_dict(), scheduler.state_dict() and
the RNG states are) is stored as two files that only hold data:

    STEM.safetensors   every tensor, under a key naming where it sits ("state.0.exp_avg")
    STEM.json          the structure, with {"__tensor__": key} in the tensors' places; tuples, numpy arrays
                       and dicts with non-string keys (the optimizer's parameter indices) are tagged so
                       they come back as they were; a sharded tensor (DTensor, FSDP) keeps this process's
                       part and {"__dtensor__": key, "placements", "shape", "stride"}

A file that is not what it should be raises CheckpointError naming it: nothing in it is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsdistill.errors import UserError
from fsdistill.files import write_json_atomic


class CheckpointError(UserError):
    """A checkpoint (or one of its files) that is damaged, foreign or from an incompatible version."""


@dataclass
class LocalShard:
    """A sharded tensor's part as one process saved it, read back without a process group (consolidation)."""

    local: torch.Tensor
    placement_dim: int | None  # the dimension it is sharded along; None: replicated
    shape: list[int]  # the whole tensor's shape


def _placements(tensor) -> list[dict]:
    from torch.distributed.tensor import Replicate, Shard

    out = []
    for p in tensor.placements:
        if isinstance(p, Shard):
            out.append({"shard": p.dim})
        elif isinstance(p, Replicate):
            out.append({"replicate": True})
        else:
            raise TypeError(f"state_io: cannot store a DTensor placed as {p}")
    return out


def _split(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """obj with its tensors moved into `tensors` (keys from their place) -> a JSON-able structure."""
    from torch.distributed.tensor import DTensor

    if isinstance(obj, DTensor):
        tensors[key] = obj.to_local().detach().cpu().contiguous().clone()
        return {
            "__dtensor__": key,
            "placements": _placements(obj),
            "shape": list(obj.shape),
            "stride": list(obj.stride()),
        }
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


def _dtensor(obj: dict, local: torch.Tensor, mesh, where: Path):
    """The saved part as a DTensor on `mesh` (this process's device), or a LocalShard without a mesh."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    dims = [p.get("shard") for p in obj["placements"]]
    if mesh is None:
        return LocalShard(local, next((d for d in dims if d is not None), None), obj["shape"])
    placements = [Shard(d) if d is not None else Replicate() for d in dims]
    device = mesh.device_type if mesh.device_type != "cpu" else "cpu"
    return DTensor.from_local(
        local.to(device),
        mesh,
        placements,
        run_check=False,
        shape=torch.Size(obj["shape"]),
        stride=tuple(obj["stride"]),
    )


def _join(obj: Any, tensors: dict[str, torch.Tensor], where: Path, mesh=None) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensors, where, mesh) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__dtensor__" in obj:
        if obj["__dtensor__"] not in tensors:
            raise CheckpointError(
                f"{where}: names tensor {obj['__dtensor__']!r}, which its .safetensors lacks"
            )
        return _dtensor(obj, tensors[obj["__dtensor__"]], mesh, where)
    if "__tensor__" in obj:
        if obj["__tensor__"] not in tensors:
            raise CheckpointError(
                f"{where}: names tensor {obj['__tensor__']!r}, which its .safetensors lacks"
            )
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_join(v, tensors, where, mesh) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _join(v, tensors, where, mesh) for k, v in obj["__items__"]}
    return {k: _join(v, tensors, where, mesh) for k, v in obj.items()}


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


def load_state(stem: Path, mesh=None) -> Any:
    """The state save_state wrote at STEM. Sharded tensors come back as DTensors on `mesh` (this process's
    part), or, with no mesh, as LocalShard records (for consolidation, outside a process group)."""
    json_path = stem.with_suffix(".json")
    return _join(read_json(json_path), read_safetensors(stem.with_suffix(".safetensors")), json_path, mesh)

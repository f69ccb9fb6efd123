"""Sharded checkpoint state (training.distributed=fsdp): each process writes its own shards, read back
into the same number of processes, and consolidated into a plain model folder for evaluation.

checkpoint-{step}/model_shard_{rank}.safetensors + .json      this process's parts of the trainable weights
checkpoint-{step}/optimizer_shard_{rank}.safetensors + .json  and of AdamW's state (keyed by parameter name)

Both go through train/state_io.py (safetensors + JSON, no pickle: torch.distributed.checkpoint's metadata
and accelerate's optimizer files are pickles, so neither is used). Resuming needs the same process count,
as for DDP (per-process RNG streams). consolidate() needs no processes: each tensor's parts, concatenated in
rank order along its sharded dimension, are the tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fsdistill.files import replace_path, write_json_atomic
from fsdistill.train.state_io import CheckpointError, load_state, read_json, save_state


def _options(lora: bool, strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=False, ignore_frozen_params=lora, strict=strict)


def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}


def save_shards(folder: Path, rank: int, model: nn.Module, optimizer, lora: bool) -> None:
    """This process's shards of the trainable weights and of the optimizer state (keyed by parameter name).
    With LoRA only the adapters: ignore_frozen_params misses a frozen weight tied to another (Qwen3's
    tied output head), so the trainable names are kept explicitly."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(model, options=_options(lora))
    if lora:
        trainable = _trainable_names(model)
        weights = {k: v for k, v in weights.items() if k in trainable}
    save_state(weights, folder / f"model_shard_{rank}")
    save_state(
        get_optimizer_state_dict(model, optimizer, options=_options(lora)), folder / f"optimizer_shard_{rank}"
    )


def load_shards(folder: Path, rank: int, model: nn.Module, optimizer, lora: bool) -> None:
    """Put this process's shards back into the sharded model and optimizer (the same process count). With
    LoRA the frozen base is not in the shards (it is model.name's), so the check is on the trainable names."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    mesh = next(p for p in model.parameters()).device_mesh
    weights = load_state(folder / f"model_shard_{rank}", mesh=mesh)
    state = load_state(folder / f"optimizer_shard_{rank}", mesh=mesh)
    if lora and set(weights) != _trainable_names(model):
        differ = sorted(set(weights) ^ _trainable_names(model))[:5]
        raise CheckpointError(f"{folder}: its adapter shards do not fit this model (e.g. {differ})")
    try:
        set_model_state_dict(model, weights, options=_options(lora, strict=not lora))
        set_optimizer_state_dict(model, optimizer, state, options=_options(lora))
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: its sharded state does not fit this model ({e})") from None


def consolidate(checkpoint: Path, out: Path | None = None) -> Path:
    """A plain model folder from a sharded checkpoint, without processes: each tensor's shards concatenated
    in rank order along its sharded dimension. LoRA: adapter_model.safetensors + adapter_config.json (what
    peft loads); full fine-tuning: a transformers model folder with the tokenizer. Returns the folder
    (default checkpoint/consolidated, written atomically, reused when already there)."""
    from safetensors.torch import save_file

    meta = read_json(checkpoint / "checkpoint.json")
    world = int(meta["sharded"]["world_size"])
    out = out or checkpoint / "consolidated"
    if (out / "consolidated.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    shards = [load_state(checkpoint / f"model_shard_{r}", mesh=None) for r in range(world)]
    full = {}
    for key in shards[0]:
        parts = [s[key] for s in shards]
        dim = parts[0].placement_dim
        full[key] = torch.cat([p.local for p in parts], dim=dim) if dim is not None else parts[0].local
    if meta["model_identity"]["training.use_lora"]:
        adapter = {
            k.removeprefix("model.").replace(".default.", "."): v.contiguous() for k, v in full.items()
        }
        save_file(adapter, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text((checkpoint / "adapter_config.json").read_text())
    else:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        weights = {k.removeprefix("model."): v for k, v in full.items()}
        dtype = next(iter(weights.values())).dtype
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint), dtype=dtype)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        if [k for k in missing if k not in tied] or unexpected:
            raise CheckpointError(
                f"{checkpoint}: shards do not fit its config (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(checkpoint).save_pretrained(str(tmp))
    write_json_atomic(tmp / "consolidated.json", {"from": str(checkpoint), "world_size": world})
    replace_path(out.parent, tmp.name, out.name)
    return out

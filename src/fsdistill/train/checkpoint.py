"""Checkpoints that carry their own config and identity, written atomically and read without pickle.

checkpoint-{step}/
  adapter_model.safetensors, adapter_config.json     LoRA: the adapter
  model*.safetensors, config.json, tokenizer files    full fine-tuning: the model, loadable on its own
  training_state.safetensors + .json                  optimizer tensors; step, param groups, scheduler
  model_shard_{rank}, optimizer_shard_{rank}          training.distributed=fsdp: each process's shards of
                                                      the weights and optimizer state instead (evaluation
                                                      consolidates them into consolidated/: sharded_state.py)
  rng_state_{rank}.safetensors + .json                each process's RNG streams (python, numpy, torch)
  config.yaml                                         the resolved config the run trained with
  checkpoint.json                                     name, method, step, process count, the config's
                                                      model identity, the run's identity (training rows,
                                                      tokenizer, weights), and the sha256 of every file

A checkpoint is written into a temporary sibling named after the writing launch and renamed when
complete, so a crash (kill -9, disk full) never leaves a half checkpoint under the real name and never
touches the earlier ones. Loading checks every file against checkpoint.json's sha256 first, then reads
only JSON and safetensors (train/state_io.py): a damaged checkpoint names its file and the previous
complete checkpoint; a crafted one runs nothing.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from fsdistill.config import Config, config_identity, from_dict, identity_differences, to_yaml
from fsdistill.errors import UserError
from fsdistill.files import contained, replace_path, sha256_file, write_json_atomic
from fsdistill.modeling.loading import load_causal_lm, load_pretrained_folder
from fsdistill.modeling.sharding import is_sharded
from fsdistill.train.run_dir import list_checkpoints, remove_checkpoint
from fsdistill.train.sharded_state import consolidate, load_shards, save_shards
from fsdistill.train.state_io import CheckpointError, load_state, read_json, read_safetensors, save_state

# Settings a resumed run may change (config_identity patterns): they do not alter what is computed.
RESUME_MAY_DIFFER = (
    "training.stop_after",
    "training.save_every",
    "training.keep_last",
    "training.log_every",
    "training.checkpoint_signal",
    "data.num_workers",
    "output.*",
    "eval.*",
)
# What decides which weights a checkpoint holds (the base model, and the adapter's shape): everything
# else may differ between the config a checkpoint was trained with and the one that loads it.
WEIGHTS_MAY_DIFFER = (
    "*",
    "!model.name",
    "!model.init",
    "!model.architecture",
    "!training.use_lora",
    "!lora.r",
    "!lora.alpha",
    "!lora.target_modules",
)


class CheckpointMismatch(UserError):
    """A checkpoint that was trained with another base model or adapter than the config describes."""


# ------------------------------------------------------------------------------------------------
# Reading a checkpoint's records, and checking it
# ------------------------------------------------------------------------------------------------


def saved_config(checkpoint: Path) -> Config:
    """The config a checkpoint was trained with (its config.yaml), validated like a file."""
    path = checkpoint / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path}: not the config this project writes ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not the config this project writes")
    return from_dict(data, str(path))


def model_identity(cfg: Config) -> dict:
    """What a checkpoint must share with a config to be loaded under it (WEIGHTS_MAY_DIFFER)."""
    return config_identity(cfg, WEIGHTS_MAY_DIFFER)


def verify_checkpoint(checkpoint: Path) -> dict:
    """checkpoint.json, once every file it lists has its recorded sha256 (CheckpointError otherwise,
    naming the file and the previous complete checkpoint to fall back to, which is never done silently)."""
    meta = read_json(checkpoint / "checkpoint.json")
    if not isinstance(meta, dict) or "files" not in meta:
        raise CheckpointError(
            f"{checkpoint} was written by an earlier version, which stored its optimizer and RNG state as "
            "pickles; this version never unpickles a checkpoint, so the run cannot be resumed from it (its "
            "weights still evaluate); start again with --overwrite"
        )
    check_listed_names(checkpoint, meta["files"])
    for name, digest in meta["files"].items():
        path = checkpoint / name
        if not path.is_file() or sha256_file(path) != digest:
            what = (
                "missing"
                if not path.is_file()
                else "truncated or altered (sha256 differs from checkpoint.json)"
            )
            earlier = [
                p for s, p in list_checkpoints(checkpoint.parent) if p != checkpoint and s < int(meta["step"])
            ]
            fallback = (
                f"; the previous complete checkpoint is {earlier[-1]}: resume from it with --resume {earlier[-1]}"
                if earlier
                else "; there is no earlier checkpoint"
            )
            raise CheckpointError(f"{checkpoint} is damaged: {name} is {what}{fallback}")
    return meta


def check_listed_names(checkpoint: Path, files) -> None:
    """Every file checkpoint.json lists is a file of the checkpoint itself: no name leaves the folder, and
    neither the checkpoint folder nor a file is a symbolic link (what the checkpoint writer never makes; a
    link would have resume read, and pruning delete, what lies outside the run). PathRefused otherwise."""
    if not isinstance(files, dict) or not all(isinstance(n, str) for n in files):
        raise CheckpointError(f"{checkpoint / 'checkpoint.json'}: 'files' is not a mapping of file names")
    for name in ("checkpoint.json", *files):
        contained(checkpoint.parent, f"{checkpoint.name}/{name}")


def check_resume(
    checkpoint: Path, meta: dict, cfg: Config, method: str, identity: dict, num_processes: int
) -> None:
    """Refuse a resume under anything that would not continue the same run, listing every difference:
    another config (but bookkeeping), another method, other training rows, tokenizer or weights, or
    another process count (exact resumption replays per-process RNG streams)."""
    diffs = identity_differences(
        config_identity(saved_config(checkpoint), RESUME_MAY_DIFFER),
        config_identity(cfg, RESUME_MAY_DIFFER),
        "checkpoint",
        "now",
    )
    saved = {
        "method": meta.get("method"),
        "num_processes": meta.get("num_processes"),
        **meta.get("identity", {}),
    }
    now = {"method": method, "num_processes": num_processes, **identity}
    diffs += identity_differences(saved, now, "checkpoint", "now")
    if diffs:
        raise UserError(f"--resume: {checkpoint} is not this run:\n    " + "\n    ".join(diffs))


def check_checkpoint_matches(checkpoint_dir: Path, cfg: Config) -> dict:
    """The checkpoint's checkpoint.json, once its files check out and its config's model identity equals
    cfg's; a mismatch raises CheckpointMismatch naming every differing key."""
    if not (checkpoint_dir / "checkpoint.json").is_file():
        raise CheckpointMismatch(f"{checkpoint_dir}: not a checkpoint of this project (no checkpoint.json)")
    meta = read_json(checkpoint_dir / "checkpoint.json")
    if isinstance(meta, dict) and "files" in meta:  # earlier versions recorded no checksums
        verify_checkpoint(checkpoint_dir)
    diffs = identity_differences(
        model_identity(saved_config(checkpoint_dir)), model_identity(cfg), "checkpoint", "config"
    )
    if diffs:
        raise CheckpointMismatch(f"{checkpoint_dir} does not match the config:\n    " + "\n    ".join(diffs))
    return meta


def checkpoint_model_folder(checkpoint_dir: Path, cfg: Config) -> Path:
    """The folder holding a checkpoint's weights as peft / transformers / vLLM load them (adapter files, or
    a model folder with its tokenizer), once its files check out and it matches cfg's model: the
    checkpoint itself, or for a sharded (FSDP) checkpoint its consolidated/ folder, written once."""
    meta = check_checkpoint_matches(checkpoint_dir, cfg)
    return consolidate(checkpoint_dir) if isinstance(meta, dict) and meta.get("sharded") else checkpoint_dir


def load_checkpoint_model(checkpoint_dir: Path, cfg: Config) -> nn.Module:
    """The CausalLM of a checkpoint for evaluation: base + adapter (LoRA) or the saved full model (see
    checkpoint_model_folder)."""
    from safetensors import SafetensorError

    folder = checkpoint_model_folder(checkpoint_dir, cfg)
    try:
        if cfg.training.use_lora:
            import peft

            base = load_causal_lm(cfg.model)
            return peft.PeftModel.from_pretrained(base, str(folder))
        return load_pretrained_folder(folder, cfg.model.dtype)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{checkpoint_dir}: its weights cannot be read ({e})") from None


# ------------------------------------------------------------------------------------------------
# RNG state
# ------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------


def _agree(accelerator, problem: str | None) -> None:
    """Every process learns whether any of them failed (a rank that raised alone would leave the others
    waiting at the next barrier forever); all raise the first problem."""
    from accelerate.utils import gather_object

    problems = (
        [p for p in gather_object([problem]) if p]
        if accelerator.num_processes > 1
        else [problem]
        if problem
        else []
    )
    if problems:
        raise CheckpointError(problems[0])


def disk_full(error: BaseException) -> bool:
    """Whether a writer's exception means the disk is full: an OSError with ENOSPC, or a library's own error
    type carrying the OS message (safetensors raises SafetensorError: '... No space left on device ...')."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return os.strerror(errno.ENOSPC) in str(error) or "StorageFull" in str(error)


def _save_failed(step: int, run_dir: Path, error: Exception) -> str:
    """The message of a checkpoint write that failed, whatever the writer raised (OSError, SafetensorError,
    ...): a full disk says so; anything else is named with its type."""
    full = disk_full(error)
    if full:
        what = "the disk is full"
    elif isinstance(error, OSError):
        what = f"{error.strerror or error}"
    else:
        what = f"{type(error).__name__}: {error}"
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    return (
        f"writing checkpoint-{step} in {run_dir} failed: {what}{where}; the incomplete copy "
        "was removed and the earlier checkpoints are intact"
        + ("; free some space and --resume" if full else "")
    )


def save_checkpoint(
    accelerator, run_dir: Path, step: int, cfg: Config, meta: dict, model, optimizer, scheduler, tokenizer
) -> Path:
    """Write checkpoint-{step}/ atomically from all processes (each saves its RNG state)."""
    from accelerate.utils import broadcast_object_list

    final = run_dir / f"checkpoint-{step}"
    # Unique per launch (host, pid of the main process): two writers never share a temporary folder.
    name = [f".checkpoint-{step}.tmp-{socket.gethostname()}-{os.getpid()}"]
    if accelerator.num_processes > 1:
        broadcast_object_list(name)
    tmp = run_dir / name[0]
    problem = None
    try:
        if accelerator.is_main_process:
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        save_state(rng_state(), tmp / f"rng_state_{accelerator.process_index}")
        if is_sharded(accelerator.unwrap_model(model)):  # every process writes its own shards
            save_shards(
                tmp,
                accelerator.process_index,
                accelerator.unwrap_model(model),
                optimizer,
                cfg.training.use_lora,
            )
    except Exception as e:  # whatever the writer raises (OSError, SafetensorError on a full disk, ...)
        problem = _save_failed(step, run_dir, e)
    try:
        _agree(accelerator, problem)
        if accelerator.is_main_process:
            try:
                _write_main_files(
                    accelerator, tmp, final, step, cfg, meta, model, optimizer, scheduler, tokenizer
                )
            except Exception as e:
                problem = _save_failed(step, run_dir, e)
        _agree(accelerator, problem)
    except CheckpointError:
        if accelerator.is_main_process and tmp.exists():
            remove_checkpoint(tmp)  # only the files a checkpoint writes
        raise
    return final


def _write_main_files(
    accelerator, tmp, final, step, cfg, meta, model, optimizer, scheduler, tokenizer
) -> None:
    answer_lm = accelerator.unwrap_model(model)
    inner = answer_lm.model  # a PeftModel (saves the adapter) or a CausalLM
    sharded = is_sharded(answer_lm)
    if sharded:  # the weights are in the shards; this is what consolidation needs beside them
        if cfg.training.use_lora:
            inner.peft_config["default"].save_pretrained(str(tmp))
        else:
            inner.config.save_pretrained(str(tmp))
    else:
        inner.save_pretrained(str(tmp), safe_serialization=True)
    if not cfg.training.use_lora:
        tokenizer.save_pretrained(str(tmp))
    state = {"scheduler": scheduler.state_dict(), "step": step}
    if not sharded:
        state["optimizer"] = optimizer.state_dict()
    save_state(state, tmp / "training_state")
    (tmp / "config.yaml").write_text(to_yaml(cfg))
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    record = {**meta, "step": step, "next_step": step, "files": files}
    if sharded:
        record["sharded"] = {"world_size": accelerator.num_processes}
    write_json_atomic(tmp / "checkpoint.json", record)
    if final.exists():
        remove_checkpoint(final)
    replace_path(final.parent, tmp.name, final.name)


def prune_checkpoints(run_dir: Path, keep_last: int | None) -> None:
    if keep_last is None:
        return
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        remove_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# Loading for resumption
# ------------------------------------------------------------------------------------------------


def load_training_state(accelerator, checkpoint: Path, cfg: Config, model, optimizer, scheduler) -> int:
    """Restore weights, optimizer, scheduler and this process's RNG from a verified checkpoint
    (verify_checkpoint, check_resume); returns the step to continue from."""
    answer_lm = accelerator.unwrap_model(model)
    inner = answer_lm.model
    if is_sharded(answer_lm):  # weights and optimizer state from this process's shards
        load_shards(checkpoint, accelerator.process_index, answer_lm, optimizer, cfg.training.use_lora)
    elif cfg.training.use_lora:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(inner, read_safetensors(checkpoint / "adapter_model.safetensors"))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise CheckpointError(f"{checkpoint}: adapter weights do not fit the model: {unexpected[:5]}")
    else:
        load_full_weights(inner, checkpoint)
    state = load_state(checkpoint / "training_state")
    try:
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(load_state(checkpoint / f"rng_state_{accelerator.process_index}"))
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{checkpoint}: its training state does not fit this run ({e})") from None
    return int(state["step"])


def load_full_weights(model, checkpoint: Path) -> None:
    """Load a full fine-tuning checkpoint's weights (model.safetensors, or the shards its index lists)
    into `model` in place; refuse missing or unexpected keys, except tied weights saved once."""
    index = checkpoint / "model.safetensors.index.json"
    if (checkpoint / "model.safetensors").is_file():
        files = [checkpoint / "model.safetensors"]
    elif index.is_file():
        files = [checkpoint / f for f in sorted(set(read_json(index)["weight_map"].values()))]
    else:
        raise UserError(f"{checkpoint}: no model weights found (model.safetensors or its index)")
    state = {}
    for f in files:
        state.update(read_safetensors(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise UserError(
            f"{checkpoint}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )

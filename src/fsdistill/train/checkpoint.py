"""Run folders and checkpoints that carry their own config, written atomically.

A run folder holds:
  config.yaml        the resolved config, written at start
  run.json           name, method, config, git commit, global batch, checkpoints so far, status
  metrics.jsonl      one JSON line per logged optimizer step (what figure scripts read)
  tensorboard/       event files
  ranks/rank{r}.json what process r saw (rows per step) and a digest of its trainable parameters
  checkpoint-{step}/ weights (adapter or full model), training_state.pt (optimizer, scheduler, step),
                     rng_state_{rank}.pt, config.yaml, checkpoint.json (step, method, model identity)

Each checkpoint is written to a temporary sibling folder and renamed when complete, so a crash during
a save leaves the earlier checkpoints intact and no half checkpoint that looks finished.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from fsdistill.config import Config, config_identity, from_dict, identity_differences, to_yaml
from fsdistill.errors import UserError
from fsdistill.files import write_json_atomic
from fsdistill.modeling.loading import DTYPES, load_causal_lm

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Settings a resumed run may change (config_identity patterns): they do not alter what is computed.
RESUME_MAY_DIFFER = (
    "training.stop_after",
    "training.save_every",
    "training.keep_last",
    "training.log_every",
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


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / "checkpoint.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer steps a checkpoint folder holds (0 for None: a fresh start)."""
    return 0 if checkpoint is None else int(CHECKPOINT_RE.match(checkpoint.name).group(1))


def resume_checkpoint(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (or None); refuses to clobber a run. Touches nothing, so it is called
    before any model is loaded and a refusal costs nothing."""
    existing = list_checkpoints(run_dir)
    if resume:
        if not existing:
            raise UserError(f"--resume: {run_dir} holds no checkpoint to resume from")
        return existing[-1][1]
    if existing and not overwrite:
        steps = [s for s, _ in existing]
        raise UserError(
            f"{run_dir} already holds checkpoints (steps {steps}); pass --resume to continue the run or "
            "--overwrite to delete them and start again"
        )
    return None


def clear_run_dir(run_dir: Path) -> None:
    """--overwrite: delete a run's records and checkpoints (main process only)."""
    if run_dir.exists():
        existing = list_checkpoints(run_dir)
        for name in ("metrics.jsonl", "run.json", "config.yaml"):
            (run_dir / name).unlink(missing_ok=True)
        for sub in ("tensorboard", "ranks"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
        for _, path in existing:
            shutil.rmtree(path)
        for path in run_dir.glob(".checkpoint-*.tmp"):  # a crashed save's leftovers
            shutil.rmtree(path, ignore_errors=True)


def saved_config(checkpoint: Path) -> Config:
    """The config a checkpoint was trained with (its config.yaml), validated like a file."""
    return from_dict(
        yaml.safe_load((checkpoint / "config.yaml").read_text()), str(checkpoint / "config.yaml")
    )


def model_identity(cfg: Config) -> dict:
    """What a checkpoint must share with a config to be loaded under it (WEIGHTS_MAY_DIFFER)."""
    return config_identity(cfg, WEIGHTS_MAY_DIFFER)


def check_checkpoint_matches(checkpoint_dir: Path, cfg: Config) -> dict:
    """The checkpoint's checkpoint.json, once its config's model identity equals cfg's; a mismatch raises
    CheckpointMismatch naming every differing key."""
    meta_path = checkpoint_dir / "checkpoint.json"
    if not meta_path.is_file():
        raise CheckpointMismatch(f"{checkpoint_dir}: not a checkpoint of this project (no checkpoint.json)")
    diffs = identity_differences(
        model_identity(saved_config(checkpoint_dir)), model_identity(cfg), "checkpoint", "config"
    )
    if diffs:
        raise CheckpointMismatch(f"{checkpoint_dir} does not match the config:\n    " + "\n    ".join(diffs))
    return json.loads(meta_path.read_text())


def load_checkpoint_model(checkpoint_dir: Path, cfg: Config) -> nn.Module:
    """The CausalLM of a checkpoint for evaluation: base + adapter (LoRA) or the saved full model."""
    check_checkpoint_matches(checkpoint_dir, cfg)
    if cfg.training.use_lora:
        import peft

        base = load_causal_lm(cfg.model)
        return peft.PeftModel.from_pretrained(base, str(checkpoint_dir))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=DTYPES[cfg.model.dtype])


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator, run_dir: Path, step: int, cfg: Config, meta: dict, model, optimizer, scheduler, tokenizer
) -> Path:
    """Write checkpoint-{step}/ atomically from all processes (each saves its RNG state)."""
    final = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        inner = accelerator.unwrap_model(model).model  # a PeftModel (saves the adapter) or a CausalLM
        inner.save_pretrained(str(tmp), safe_serialization=True)
        if not cfg.training.use_lora:
            tokenizer.save_pretrained(str(tmp))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
            tmp / "training_state.pt",
        )
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        write_json_atomic(tmp / "checkpoint.json", {**meta, "step": step, "next_step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(run_dir: Path, keep_last: int | None) -> None:
    if keep_last is None:
        return
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path)


def load_training_state(accelerator, checkpoint: Path, cfg: Config, model, optimizer, scheduler) -> int:
    """Restore weights, optimizer, scheduler and this process's RNG; returns the step to continue from."""
    from safetensors.torch import load_file

    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    diffs = identity_differences(
        config_identity(saved_config(checkpoint), RESUME_MAY_DIFFER),
        config_identity(cfg, RESUME_MAY_DIFFER),
        "checkpoint",
        "now",
    )
    if diffs:
        raise UserError(
            f"--resume: {checkpoint} was trained with other settings:\n    " + "\n    ".join(diffs)
        )
    if meta["num_processes"] != accelerator.num_processes:
        raise UserError(
            f"--resume: {checkpoint} was written by {meta['num_processes']} processes, this launch has "
            f"{accelerator.num_processes}; exact resumption needs the same process count"
        )
    inner = accelerator.unwrap_model(model).model
    if cfg.training.use_lora:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(inner, load_file(str(checkpoint / "adapter_model.safetensors")))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"{checkpoint}: adapter weights do not fit the model: {unexpected[:5]}")
    else:
        load_full_weights(inner, checkpoint)
    state = torch.load(checkpoint / "training_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(torch.load(checkpoint / f"rng_state_{accelerator.process_index}.pt", weights_only=False))
    return int(state["step"])


def load_full_weights(model, checkpoint: Path) -> None:
    """Load a full fine-tuning checkpoint's weights (model.safetensors, or the shards its index lists)
    into `model` in place; refuse missing or unexpected keys, except tied weights saved once."""
    from safetensors.torch import load_file

    index = checkpoint / "model.safetensors.index.json"
    if (checkpoint / "model.safetensors").is_file():
        files = [checkpoint / "model.safetensors"]
    elif index.is_file():
        files = [checkpoint / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        raise UserError(f"{checkpoint}: no model weights found (model.safetensors or its index)")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise UserError(
            f"{checkpoint}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )

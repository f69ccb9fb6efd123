"""Consolidate a sharded (training.distributed=fsdp) checkpoint into a plain model folder.

    python scripts/consolidate_checkpoint.py experiments/qwen8b_fsdp/checkpoint-1000 [--output DIR]

LoRA: adapter_model.safetensors + adapter_config.json, what peft (and vLLM's LoRA requests) load; full
fine-tuning: a transformers model folder with the tokenizer. Needs no processes and no GPU: each tensor's
shards, concatenated in rank order along its sharded dimension. eval_checkpoints.py does this itself the
first time it meets a sharded checkpoint (into checkpoint-STEP/consolidated/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error


@exit_on_user_error
def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="A checkpoint-STEP folder of an FSDP run.")
    parser.add_argument("--output", default=None, help="Folder to write (default CHECKPOINT/consolidated).")
    args = parser.parse_args(argv)

    from fsdistill.train.checkpoint import verify_checkpoint
    from fsdistill.train.sharded_state import consolidate

    checkpoint = Path(args.checkpoint)
    meta = verify_checkpoint(checkpoint)
    if not meta.get("sharded"):
        raise UserError(
            f"{checkpoint} is not sharded: it already is a plain model folder (LoRA adapter or model)"
        )
    out = consolidate(checkpoint, Path(args.output) if args.output else None)
    print(f"wrote {out}")
    return out

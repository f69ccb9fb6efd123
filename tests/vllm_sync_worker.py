"""One process of test_on_policy.py's FSDP sync test, under `accelerate launch` (2 CPU processes): the tiny
student sharded as training shards it, synced into a stand-in vLLM engine; writes what the engine got."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from helpers import RolloutVLLM
from safetensors.torch import load_file

from fsdistill.config import load_config
from fsdistill.modeling.generation import SamplingSettings
from fsdistill.modeling.loading import load_student
from fsdistill.modeling.sharding import shard
from fsdistill.train.rollouts import VLLMSampler


def main(config: str, out: str, *overrides: str) -> None:
    accelerator = Accelerator()
    rank, out_dir = accelerator.process_index, Path(out)
    cfg, _ = load_config(config, overrides=list(overrides))
    torch.manual_seed(0)
    student = load_student(cfg)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter non-trivial so a wrong gather shows
        for name, p in student.model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    whole = {k: v.detach().clone() for k, v in student.model.state_dict().items()}
    shard(student, cfg.training.mixed_precision)
    assert any(type(p).__name__ == "DTensor" for p in student.parameters()), "not sharded"
    vllm = RolloutVLLM()
    sampler = VLLMSampler(cfg, SamplingSettings(1.0, 1.0, 0, 6, (2,)), out_dir, rank, vllm_module=vllm)
    sampler.sync(student.model, 0)
    if cfg.training.use_lora:
        saved = load_file(str(out_dir / "rollout_adapter" / f"rank{rank}" / "adapter_model.safetensors"))
        lora = {k: v for k, v in whole.items() if "lora_" in k}
        assert len(saved) == len(lora) > 0
        for key, value in saved.items():  # peft drops the adapter name: ...q_proj.lora_A.weight
            match = [k for k in lora if k.replace(".default", "") == key]
            assert len(match) == 1 and torch.equal(value, lora[match[0]]), key
        count = len(saved)
    else:
        got = [pair for batch in vllm.loaded for pair in batch]
        assert [name for name, _ in got] == list(whole), "names or order differ"
        for name, tensor in got:
            assert type(tensor).__name__ == "Tensor" and torch.equal(tensor, whole[name]), name
        count = len(got)
    (out_dir / f"rank{rank}.ok").write_text(str(count))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Sharding across processes with torch's FSDP2 (training.distributed=fsdp), and its checkpoint state.

What is sharded: every decoder layer is a unit of its own (its parameters gathered for its forward and
backward, freed after), and the whole AnswerLogitsLM is the root unit (embeddings, final norm, output
head). Parameters, gradients and AdamW's two moments each take 1/N of their memory on every one of the
N processes; the full-FT teacher (a frozen copy) is sharded the same way, with no optimizer state. LoRA
works unchanged: the frozen base is sharded with the adapters, only the adapters get gradients.

Why torch's `fully_shard` rather than accelerate's FSDP plugin: accelerate turns its FSDP path on only for
GPUs (and XPUs, NPUs) and otherwise falls back to data parallelism without a word, so the path tested here
(CPU, gloo) would not be the one that runs on GPUs. `fully_shard` is what accelerate's FSDP2 plugin calls;
driving it directly gives one code path, tested on CPU (tests/test_fsdp.py asserts that the parameters are
DTensors holding half their bytes on each of 2 processes). accelerate still provides the process group,
devices, autocast and collectives.

Sharded checkpoints: train/sharded_state.py.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def shard(answer_lm: nn.Module, mixed_precision: str) -> None:
    """fully_shard every decoder layer, then the whole model (in place). Under bf16/fp16 training the
    gathered parameters are cast to that dtype for compute and gradients reduced in float32
    (MixedPrecisionPolicy): the communication of autocast's compute, at half the bytes."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = AUTOCAST_DTYPES.get(mixed_precision)
    policy = (
        MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        if dtype
        else MixedPrecisionPolicy()
    )
    decoder = answer_lm.causal_lm.get_decoder()
    for layer in decoder.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(answer_lm, mp_policy=policy)


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a (possibly sharded) tensor."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a (possibly sharded) tensor. For a DTensor this is a collective (an all-gather): every
    process must call it, for the same tensors in the same order."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def parameter_bytes(module: nn.Module) -> dict[str, int]:
    """{"local": bytes of parameters held by this process, "global": bytes of all parameters}."""
    local = sum(local_tensor(p).numel() * p.element_size() for p in module.parameters())
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    return {"local": local, "global": total}


@contextlib.contextmanager
def gradient_sync(model: nn.Module, accelerator, enabled: bool):
    """Micro-batches before the last of a step accumulate gradients without reducing them: DDP's no_sync,
    FSDP2's set_requires_gradient_sync(False)."""
    if enabled:
        yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def shard_record(model: nn.Module) -> dict:
    """What ranks/rank{r}.json records about sharding (tests check the bytes: about 1/N per process)."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return {
        "sharded": is_sharded(model),
        "dtensor_parameters": sum(isinstance(p, DTensor) for p in params),
        "parameters": len(params),
        "parameter_bytes": parameter_bytes(model),
    }

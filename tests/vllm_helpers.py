"""Helpers of tests/test_vllm.py and its 2-process worker: what the colocated engine serves after each sync.

EngineProbe wraps Rollouts.sync of a real training run: after every sync it asks the engine for the
log-probabilities of a fixed sequence (prompt_logprobs: computed afresh, vLLM does not read its prefix cache
for them) and for the greedy next token after it (read through the prefix cache, which the previous probe
filled: stale keys/values from earlier weights would show there), and computes the same with the hf
student in float32. It also records every batch the engine sampled, and whether torch.set_num_threads
still works once the engine stands in the training process.
"""

from __future__ import annotations

import torch

# A fixed sequence of 2+ full KV-cache blocks (128 tokens each on a CPU), so the prefix cache holds some.
PROBE_TEXT = " ".join(
    f"Question {i}: Natalia sold clips to {i + 40} of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?"
    for i in range(8)
)


def engine_logprobs(sampler, ids: list[int]) -> tuple[list[float], tuple[int, float]]:
    """(log p of ids[1:] under what the engine serves now; its greedy next token after ids and the token's
    log p), the first from prompt_logprobs, the second through the prefix cache."""
    prompt = [{"prompt_token_ids": list(ids)}]
    scored = sampler.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    (out,) = sampler.llm.generate(prompt, sampling_params=scored, lora_request=sampler.lora, use_tqdm=False)
    sequence = [out.prompt_logprobs[i][token].logprob for i, token in enumerate(ids) if i > 0]
    greedy = sampler.vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=0)
    (out,) = sampler.llm.generate(prompt, sampling_params=greedy, lora_request=sampler.lora, use_tqdm=False)
    token = out.outputs[0].token_ids[0]
    return sequence, (token, out.outputs[0].logprobs[0][token].logprob)


def hf_logprobs(student, ids: list[int], next_token: int) -> tuple[list[float], float]:
    """The same from the hf student (the recipe's AnswerLogitsLM: called through its forward, where FSDP
    gathers the shards; under FSDP every process must call it)."""
    from fsdistill.modeling.answer_lm import eval_mode

    def logits(lm):
        return lm.model(input_ids=torch.tensor([ids])).logits

    with torch.no_grad(), eval_mode(student):
        logp = student(logits)[0].float().log_softmax(-1)
    sequence = [logp[i - 1, token].item() for i, token in enumerate(ids) if i > 0]
    return sequence, logp[-1, next_token].item()


class EngineProbe:
    def __init__(self, probe_ids: list[int]):
        self.ids = probe_ids
        self.records: list[dict] = []  # one per sync: step, lora id, engine and hf log-probabilities
        self.samples: list[list[list[int]]] = []  # every batch the engine sampled, in order
        self.threads: list[tuple[int, int]] = []  # (threads asked for, threads got) after the engine started
        self.draws: list[list[list[int]]] = []  # at start: one prompt twice, sampled twice with one seed

    def install(self, setattr_) -> None:
        """Wrap Rollouts.sync and VLLMSampler.sample through `setattr_` (monkeypatch.setattr, or setattr)."""
        from fsdistill.train.rollouts import Rollouts, VLLMSampler

        sync, sample = Rollouts.sync, VLLMSampler.sample

        def probed_sync(rollouts, student, step):
            sync(rollouts, student, step)
            self.record(rollouts.sampler, student, step)

        def recorded_sample(sampler, *args, **kwargs):
            batch = sample(sampler, *args, **kwargs)
            self.samples.append(batch)
            return batch

        self.sample = sample  # the unwrapped one, for draws outside the run's own
        setattr_(Rollouts, "sync", probed_sync)
        setattr_(VLLMSampler, "sample", recorded_sample)

    def record(self, sampler, student, step: int) -> None:
        if not self.threads:
            prompt = self.ids[:16]
            self.draws = [self.sample(sampler, None, [prompt, prompt], 7, 8) for _ in range(2)]
            before = torch.get_num_threads()
            torch.set_num_threads(before + 1)
            self.threads.append((before + 1, torch.get_num_threads()))
            torch.set_num_threads(before)
        engine, (token, engine_next) = engine_logprobs(sampler, self.ids)
        hf, hf_next = hf_logprobs(student, self.ids, token)
        lora = sampler.lora.lora_int_id if sampler.lora is not None else None
        self.records.append(
            {"step": step, "lora_id": lora, "engine": engine, "hf": hf, "next": [token, engine_next, hf_next]}
        )


def max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))

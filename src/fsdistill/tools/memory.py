"""Per-GPU memory of a training step, estimated from the model's shapes (scripts/estimate_memory.py).

    python scripts/estimate_memory.py --lengths-from-data     # -> experiments/memory/estimates.{json,md}

For each model (a folder of folders holding config.json, by default ../shared/models beside the repo; or
any Hugging Face config.json given with --config-json), each mode and each GPU count, the bytes one GPU
holds at the peak of a training step. **These are estimates from shapes, not measurements**: the formulas
below were checked on CPU against the tensors autograd actually saves (tests/test_memory.py) and against
`sum(p.numel())` of the transformers model; the GPU check (scripts/gpu_check.sh) compares one row with
torch.cuda.max_memory_allocated on a GPU.

Modes (the teacher is always there: few-shot distillation; SFT is the same without it):
  ddp_lora    LoRA student, DistributedDataParallel: every GPU holds the whole frozen base model in bf16
              and the adapters with their gradients and AdamW state in fp32. Teacher: the same module with
              the adapter off (no extra weights).
  ddp_full    full fine-tuning, DDP: fp32 weights, gradients and AdamW state on every GPU, plus the teacher,
              a frozen fp32 copy of the initial weights; with N > 1, DDP's gradient buckets (a second fp32
              copy of the gradients: accelerate keeps gradient_as_bucket_view off).
  fsdp_lora   LoRA under training.distributed=fsdp: base model, adapters, their gradients and AdamW state
              all divided by N; each decoder layer gathered in bf16 when it runs.
  fsdp_full   full fine-tuning under FSDP: weights, gradients, AdamW state and the frozen teacher copy
              divided by N; the gathered-layer working set below.

Parameters, counted from config.json (checked against the transformers model in the tests):
  embedding V*H; per layer: q H*(nh*hd), k and v H*(nkv*hd) each, o (nh*hd)*H (+ biases with
  attention_bias), gate/up/down 3*H*I (+ biases with mlp_bias), 2 norms of H (Gemma 3: 4), Qwen 3 and
  Gemma 3 also q/k norms of hd each; final norm H; output head V*H unless tied. LoRA (rank r, on
  q,k,v,o,gate,up,down): r*(d_in + d_out) per adapted matrix.

Bytes per parameter (what the recipe does): LoRA base weights in model.dtype bf16 (2 B), adapters fp32
(4 B) with fp32 gradients (4 B) and two fp32 AdamW moments (8 B); full fine-tuning keeps fp32 weights
(4 + 4 + 8 B) and a frozen fp32 teacher copy (4 B). AdamW's step (torch's foreach implementation) adds one
fp32 temporary per trainable parameter while it runs (activations are freed by then).

Activations (student, stored for the backward pass; bytes per token per decoder layer, from the tensors
autograd saves, tests/test_memory.py compares them with a real forward on CPU; H hidden, I intermediate,
Q = nh*hd, K = nkv*hd, T the padded sequence length, m the dropout mask's bytes per element: 1 on CUDA,
bool; 4 on CPU):
  each RMSNorm: 4H + 4 (its input in fp32, 1/rms), plus, when its weight trains, the normalised input it
      multiplies (Gemma 3: 4H; others: 4H with fp32 weights, 2H with bf16 ones);
  q/k norms (Qwen 3, Gemma 3): 4Q + 4nh and 4K + 4nkv, plus 2Q and 2K (Gemma 3: 4Q, 4K) when they train;
  attention (SDPA with a padding mask: keys and values repeated to nh heads): q, k, v, output 8Q, the
      log-sum-exp 4nh, and the additive (B, 1, T, T) bf16 mask each layer builds: 2T;
  MLP: the activation's input 2I, the product's two factors 4I;
  the matrix inputs: full fine-tuning with fp32 weights (DDP, bf16 autocast): a bf16 copy of the input
      for each of q, k, v, gate, up (2H each: autocast casts each call separately) and down's input 2I
      (o reads the attention output, counted above); with bf16 weights (FSDP's gathered weights): one
      2H copy shared by q, k, v, one by gate and up, and 2I; LoRA: per adapted matrix with input d,
      the dropout mask m*d, the dropout output cast to bf16 2d and the rank-r intermediate 2r (the frozen
      matrix itself saves nothing);
  per layer, not per token: autocast's bf16 copies of fp32 weights it multiplies (2 B per weight: the
      adapters under LoRA, every matrix under full-FT DDP); Gemma 3's (1 + w) norm weights in fp32.
Stored activations = layers x B x T x that + the final norm. With gradient checkpointing only each
layer's input is stored (2H per token, 4H with fp32 weights) and one layer is recomputed at a time; but
autocast caches its bf16 weight copies for its whole region (the student's forward), so under full-FT
DDP every layer's copy is still counted. The backward pass is assumed to need one more layer's worth of
activations as gradient temporaries.

The teacher runs first, without gradients, and is reduced to its top-K at once: its peak is transient
and does not stack on the student's activations. Estimated as B x T_teacher x (2 residual-stream tensors
+ the larger of the MLP's three I-wide tensors + a normed input and attention's q, k, v, output and mask),
plus one chunk of its logits (chunk x V x 6 B: bf16 logits and a fp32 copy).

Loss (student): the output head and the losses run over the answer positions in chunks of
training.logits_chunk_size: min(B x answer tokens, chunk) x V x 16 B (bf16 logits 2, a fp32 copy 4,
log-softmax's fp32 output kept for the backward 4, and in the backward its fp32 and bf16 gradients 6).

FSDP's gathered-layer working set (torch's fully_shard, bf16 compute): two decoder layers gathered at
once in bf16 (the running one and the prefetched next); the root unit (embeddings, final norm, untied
head) stays gathered from its first forward to the end of the backward (torch keeps the root unsharded
after forward), for the student and for a full-FT teacher; full fine-tuning also holds one unit's
unsharded gradient before its reduce-scatter (the bf16 gradient and the fp32 copy that is reduced: 6 B
per parameter, of the larger of a layer and the root).

Peak = parameters + gradients + AdamW state + teacher weights + FSDP working set
       + the largest of (teacher's transient, student's activations + loss + autocast weight copies,
       AdamW's temporary).
Not counted: the CUDA context and NCCL buffers (~1-2 GiB, outside torch's allocator), allocator
fragmentation, the teacher's top-K targets (N x K x 10 B), the data. A row fits a GPU when its peak is at
most --usable (0.9) of the GPU's memory.

Sequence lengths: the padded widths of the longest micro-batch of one epoch, measured with
--lengths-from-data (GSM8K, the Qwen3 tokenizer, 8-shot per-example teacher; other tokenizers give
similar lengths), else the defaults of --student-tokens/--teacher-tokens/--answer-tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.tools.bench import REPO, SHARED

MODES = ("ddp_lora", "ddp_full", "fsdp_lora", "fsdp_full")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GIB = 2**30
# The shipped training config of each reference model (folder names of ../shared/models): its per-device
# batch, LoRA settings, chunk and top-K are the estimate's workload (tests check the model names agree).
SHIPPED_CONFIGS = {
    "qwen3-1.7b": "online_v1.yaml",
    "qwen3-8b": "qwen8b_distill.yaml",
    "llama-3.2-3b-instruct": "online_v1_llama.yaml",
    "gemma-3-270m": "gemma270m_distill.yaml",
}
DEFAULT_CONFIG = "online_v1.yaml"  # the workload of a model without a shipped config


# ------------------------------------------------------------------------------------------------
# Shapes and parameter counts
# ------------------------------------------------------------------------------------------------

# What differs between the supported families: norms per layer, q/k norms, and whether the norm computes
# in fp32 and multiplies by (1 + w) in fp32 (Gemma) or multiplies w by the input cast back (Llama, Qwen).
FAMILIES = {
    "llama": {"norms_per_layer": 2, "qk_norm": False, "float_norm": False},
    "qwen3": {"norms_per_layer": 2, "qk_norm": True, "float_norm": False},
    "gemma3_text": {"norms_per_layer": 4, "qk_norm": True, "float_norm": True},
}


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only model's shapes, read from its config.json (dimensions are element counts)."""

    name: str
    model_type: str
    vocab: int  # V
    hidden: int  # H
    intermediate: int  # I
    layers: int  # L
    heads: int  # nh
    kv_heads: int  # nkv
    head_dim: int  # hd
    tied: bool  # output head shares the embedding matrix
    attention_bias: bool
    mlp_bias: bool
    norms_per_layer: int
    qk_norm: bool
    float_norm: bool

    @classmethod
    def from_config(cls, config: dict, name: str) -> ModelShape:
        """config: a config.json's fields (a dict). Unknown model types are refused (UserError)."""
        model_type = config.get("model_type")
        if model_type not in FAMILIES:
            raise UserError(
                f"{name}: model_type {model_type!r} has no shape model here (known: {', '.join(FAMILIES)})"
            )
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        return cls(
            name=name,
            model_type=model_type,
            vocab=config["vocab_size"],
            hidden=hidden,
            intermediate=config["intermediate_size"],
            layers=config["num_hidden_layers"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            # transformers' default for these families is tied embeddings when the field is absent.
            tied=bool(config.get("tie_word_embeddings", True)),
            attention_bias=bool(config.get("attention_bias", False)),
            mlp_bias=bool(config.get("mlp_bias", False)),
            **FAMILIES[model_type],
        )

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def matrices(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's weight matrices as (d_in, d_out)."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_matmul_parameters(self) -> int:
        return sum(a * b for a, b in self.matrices().values())

    def layer_parameters(self) -> int:
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        n = self.layer_matmul_parameters() + self.norms_per_layer * h
        if self.attention_bias:
            n += q + 2 * kv + h
        if self.mlp_bias:
            n += 2 * i + h
        if self.qk_norm:
            n += 2 * self.head_dim
        return n

    def parameter_counts(self) -> dict[str, int]:
        """Elements of: embedding, all layers, final norm, output head (0 when tied), total, and the
        non-embedding parameters (layers + final norm: what the FLOP model's body counts)."""
        embedding = self.vocab * self.hidden
        layers = self.layers * self.layer_parameters()
        head = 0 if self.tied else self.vocab * self.hidden
        return {
            "embedding": embedding,
            "layers": layers,
            "final_norm": self.hidden,
            "head": head,
            "total": embedding + layers + self.hidden + head,
            "non_embedding": layers + self.hidden,
        }

    def root_parameters(self) -> int:
        """What FSDP's root unit holds: embedding, final norm, untied head."""
        counts = self.parameter_counts()
        return counts["embedding"] + counts["final_norm"] + counts["head"]

    def lora_parameters(self, r: int, targets=LORA_TARGETS) -> int:
        """Adapter elements over all layers: r x (d_in + d_out) per adapted matrix."""
        per_layer = sum(r * (a + b) for name, (a, b) in self.matrices().items() if name in targets)
        return self.layers * per_layer


# ------------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------------

# What the matrices of a layer are, numerically, in each case: "lora" (frozen bf16 base, fp32 or bf16
# adapters), "full_fp32" (trainable fp32 weights under bf16 autocast: DDP full fine-tuning), "full_bf16"
# (trainable weights seen in bf16: FSDP's gathered weights under its bf16 mixed-precision policy).
CASES = ("lora", "full_fp32", "full_bf16")


@dataclass(frozen=True)
class Lora:
    r: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS


def norm_bytes(shape: ModelShape, width: int, case: str, input_bytes: int, groups: int = 1) -> int:
    """Bytes an RMSNorm over `width` elements per token, normalised in `groups` groups of width / groups
    (q/k norms: one per head), saves per token: its input in fp32 and 1/rms per group, and with a
    trainable weight the normalised input the weight multiplies (input_bytes per element; Gemma: fp32)."""
    saved = 4 * width + 4 * groups
    if case != "lora":
        saved += (4 if shape.float_norm else input_bytes) * width
    return saved


def layer_activation_bytes(
    shape: ModelShape, seq_len: int, case: str, lora: Lora = Lora(), mask_bytes: int = 1
) -> tuple[int, int]:
    """(bytes per token, bytes per layer independent of tokens) that one decoder layer saves for the
    backward pass at padded sequence length seq_len, in `case` (one of CASES). mask_bytes: bytes per
    element of a dropout mask (CUDA 1, CPU 4). See the module docstring for the list of tensors."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    h, i, q, kv = shape.hidden, shape.intermediate, shape.q_dim, shape.kv_dim
    residual_bytes = 4 if case == "full_fp32" else 2
    per_token = shape.norms_per_layer * norm_bytes(shape, h, case, residual_bytes)
    if shape.qk_norm:  # their input is a projection's bf16 output
        per_token += norm_bytes(shape, q, case, 2, shape.heads) + norm_bytes(
            shape, kv, case, 2, shape.kv_heads
        )
    per_token += 8 * q + 4 * shape.heads + 2 * seq_len  # SDPA: q, k, v, out; log-sum-exp; the mask
    per_token += 2 * i + 4 * i  # the activation's input; the product's factors
    per_layer = 0
    if case == "lora":
        for name, (d_in, d_out) in shape.matrices().items():
            if name in lora.targets:
                per_token += (mask_bytes * d_in if lora.dropout > 0 else 0) + 2 * d_in + 2 * lora.r
                per_layer += 2 * lora.r * (d_in + d_out)  # autocast's bf16 copy of the fp32 adapter
    elif case == "full_fp32":
        per_token += 5 * 2 * h + 2 * i  # one bf16 cast per q, k, v, gate, up; down's input
        per_layer += 2 * shape.layer_matmul_parameters()  # autocast's bf16 copies of the weights
    else:
        per_token += 2 * 2 * h + 2 * i  # one shared input for q, k, v and one for gate, up; down's input
    if shape.float_norm:  # Gemma's (1 + w) in fp32, saved by the multiplication
        per_layer += 4 * (shape.norms_per_layer * h + (2 * shape.head_dim if shape.qk_norm else 0))
    return per_token, per_layer


def student_activation_bytes(
    shape: ModelShape,
    batch: int,
    seq_len: int,
    case: str,
    checkpointing: bool,
    lora: Lora = Lora(),
    mask_bytes: int = 1,
) -> int:
    """Peak bytes of the student's activations during its forward and backward (stored + one layer's
    worth of backward temporaries; with gradient checkpointing: each layer's input + a recomputed layer +
    the temporaries), for `batch` sequences padded to seq_len tokens."""
    per_token, per_layer = layer_activation_bytes(shape, seq_len, case, lora, mask_bytes)
    tokens = batch * seq_len
    one_layer = tokens * per_token + per_layer
    final_norm = tokens * norm_bytes(shape, shape.hidden, case, 4 if case == "full_fp32" else 2)
    if checkpointing:
        inputs = shape.layers * tokens * shape.hidden * (4 if case == "full_fp32" else 2)
        return inputs + final_norm + 2 * one_layer
    return shape.layers * one_layer + final_norm + one_layer


def teacher_transient_bytes(shape: ModelShape, batch: int, seq_len: int, case: str, positions: int) -> int:
    """The teacher's no-grad forward over `batch` k-shot sequences of seq_len tokens, at its peak, and one
    chunk of `positions` answer positions through the head (bf16 logits and a fp32 copy)."""
    h, i, q = shape.hidden, shape.intermediate, shape.q_dim
    residual = 4 if case == "full_fp32" else 2
    attention = 4 * h + 8 * q + 2 * seq_len  # a normed input, q, k, v, output, the layer's mask
    per_token = 2 * residual * h + max(3 * 2 * i + 4 * h, attention)
    return batch * seq_len * per_token + positions * shape.vocab * 6


def loss_bytes(shape: ModelShape, positions: int) -> int:
    """The student's loss chunk: positions x V x 16 B (see the module docstring)."""
    return positions * shape.vocab * 16


# ------------------------------------------------------------------------------------------------
# The estimate
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What one GPU runs per micro-batch (lengths are padded widths, in tokens)."""

    per_device_batch: int
    student_tokens: int
    teacher_tokens: int | None  # None: SFT, no teacher
    answer_tokens: int  # per sequence
    logits_chunk: int = 1024
    lora: Lora = Lora()

    @property
    def positions(self) -> int:
        """Answer positions of one loss chunk."""
        return min(self.per_device_batch * self.answer_tokens, self.logits_chunk)


def estimate(shape: ModelShape, work: Workload, mode: str, gpus: int, checkpointing: bool) -> dict:
    """Per-GPU bytes of one training step's peak for `mode` (MODES) on `gpus` GPUs: a dict of components
    (parameters, gradients, optimizer, teacher, fsdp_working_set, activations, autocast_weight_copies,
    teacher_transient, loss, optimizer_temporary) and `total` (see the module docstring for the sum)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    distributed, kind = mode.split("_")
    fsdp = distributed == "fsdp"
    shard = gpus if fsdp else 1
    counts = shape.parameter_counts()
    total_params = counts["total"]
    if kind == "lora":
        trainable = shape.lora_parameters(work.lora.r, work.lora.targets)
        parameters = (total_params * 2 + trainable * 4) / shard
        teacher = 0.0
        case = "lora"
    else:
        trainable = total_params
        parameters = total_params * 4 / shard
        teacher = total_params * 4 / shard if work.teacher_tokens else 0.0
        case = "full_bf16" if fsdp else "full_fp32"
    gradients = trainable * 4 / shard
    if not fsdp and gpus > 1:
        gradients += trainable * 4  # DDP's gradient buckets
    optimizer = trainable * 8 / shard
    working_set = 0.0
    if fsdp:
        gathered_layers = 2 * shape.layer_parameters() * 2
        roots = shape.root_parameters() * 2 * (2 if kind == "full" and work.teacher_tokens else 1)
        unit_grads = 6 * max(shape.layer_parameters(), shape.root_parameters()) if kind == "full" else 0
        working_set = gathered_layers + roots + unit_grads
    activations = student_activation_bytes(
        shape, work.per_device_batch, work.student_tokens, case, checkpointing, work.lora
    )
    weight_copies = 0
    if case == "full_fp32":
        # autocast's bf16 copy of the output head. The layers' copies are among their saved tensors
        # (activations), but with gradient checkpointing only two layers' are: autocast still caches every
        # weight's copy until its region (the student's forward) ends, so the others count here.
        weight_copies = 2 * shape.vocab * shape.hidden
        if checkpointing:
            weight_copies += max(shape.layers - 2, 0) * 2 * shape.layer_matmul_parameters()
    teacher_peak = 0
    if work.teacher_tokens:
        teacher_peak = teacher_transient_bytes(
            shape, work.per_device_batch, work.teacher_tokens, case, work.positions
        )
    loss = loss_bytes(shape, work.positions)
    optimizer_temporary = trainable * 4 / shard
    static = parameters + gradients + optimizer + teacher + working_set
    total = static + max(teacher_peak, activations + loss + weight_copies, optimizer_temporary)
    return {
        "parameters": parameters,
        "gradients": gradients,
        "optimizer": optimizer,
        "teacher": teacher,
        "fsdp_working_set": working_set,
        "activations": activations,
        "autocast_weight_copies": weight_copies,
        "teacher_transient": teacher_peak,
        "loss": loss,
        "optimizer_temporary": optimizer_temporary,
        "total": total,
    }


# ------------------------------------------------------------------------------------------------
# Measurement (tests and the GPU check): what autograd saves
# ------------------------------------------------------------------------------------------------


def saved_activation_bytes(module, forward) -> int:
    """Bytes of the distinct tensor storages autograd saves while forward() runs, the storages of
    module's parameters excluded (torch.autograd.graph.saved_tensors_hooks). forward's result is held
    until the count is taken, so no saved tensor is freed and its address reused on the way."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in params and key not in seen:
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


# ------------------------------------------------------------------------------------------------
# Sequence lengths from the data
# ------------------------------------------------------------------------------------------------


def measure_lengths(config: str, overrides: list[str]) -> dict:
    """Padded widths over one epoch of a config's training stream (1 process, its per-device batch):
    the widest student and teacher micro-batch, and the most answer tokens in one micro-batch."""
    from fsdistill.config import load_config
    from fsdistill.data.batch import build_training_batches
    from fsdistill.data.prompts import load_tokenizer

    cfg, _ = load_config(config, overrides=overrides)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    stream = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    t = cfg.training
    per_step = t.per_device_batch_size * t.grad_accum_steps
    steps = math.ceil(len(stream.order.rows) / per_step)
    widths = {"student": 0, "teacher": 0, "answer_tokens_per_micro_batch": 0}
    for step in range(steps):
        for micro in range(t.grad_accum_steps):
            b = stream.micro_batch(step, micro, 0, 1, t.per_device_batch_size).batch
            widths["student"] = max(widths["student"], int(b.student_ids.shape[1]))
            widths["teacher"] = max(widths["teacher"], int(b.teacher_ids.shape[1]))
            widths["answer_tokens_per_micro_batch"] = max(
                widths["answer_tokens_per_micro_batch"], b.num_answer_tokens
            )
    return {
        "config": config,
        "overrides": overrides,
        "per_device_batch": t.per_device_batch_size,
        "micro_batches": steps * t.grad_accum_steps,
        "max_width": widths,
        "student_tokens": widths["student"],
        "teacher_tokens": widths["teacher"],
        "answer_tokens": math.ceil(widths["answer_tokens_per_micro_batch"] / t.per_device_batch_size),
    }


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default=None,
        help="A folder of model folders each holding config.json (default ../shared/models beside the repo).",
    )
    parser.add_argument(
        "--config-json", action="append", default=[], help="Any model's config.json (repeatable)."
    )
    parser.add_argument("--gpus", type=int, nargs="+", default=[2, 4, 8], help="FSDP GPU counts.")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="Memory of one GPU (GiB).")
    parser.add_argument(
        "--usable", type=float, default=0.9, help="Fraction of it a step may use (context, fragmentation)."
    )
    parser.add_argument(
        "--lengths-from-data",
        action="store_true",
        help="Measure the lengths over one epoch of configs/online_v1.yaml (GSM8K and the Qwen3 tokenizer "
        "from ../shared): slower (about a minute), what the committed estimate used.",
    )
    # Defaults: what --lengths-from-data measured (experiments/memory/estimates.json, "lengths").
    parser.add_argument("--student-tokens", type=int, default=511, help="Padded student width.")
    parser.add_argument("--teacher-tokens", type=int, default=2589, help="Padded 8-shot teacher width.")
    parser.add_argument("--answer-tokens", type=int, default=256, help="Answer tokens per sequence.")
    parser.add_argument("--output", default="experiments/memory/estimates.json", help="JSON file to write.")
    parser.add_argument(
        "--markdown", default=None, help="Markdown table to write (default: the JSON's path with .md)."
    )
    args = parser.parse_args(argv)
    if any(g < 1 for g in args.gpus):
        parser.error("--gpus must be >= 1")
    if not 0 < args.usable <= 1:
        parser.error("--usable must be in (0, 1]")
    return args


def read_config_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read a config.json ({e})") from None


def shown_path(path: Path) -> str:
    """A path as the committed JSON shows it: relative to the checkout when it lies beside it (../shared/...),
    so no machine's absolute path is recorded."""
    try:
        return str(Path("..") / path.resolve().relative_to(REPO.parent.resolve()))
    except ValueError:
        return str(path)


def model_configs(args) -> dict[str, tuple[Path, dict]]:
    """{name: (config.json path, its fields)} from --models and --config-json."""
    found: dict[str, tuple[Path, dict]] = {}
    folder = Path(args.models) if args.models else SHARED / "models"
    if args.models or (not args.config_json and folder.exists()):
        if not folder.is_dir():
            raise UserError(f"--models {folder}: not a folder")
        for path in sorted(folder.glob("*/config.json")):
            found[path.parent.name] = (path, read_config_json(path))
        if not found:
            raise UserError(f"--models {folder}: no */config.json inside")
    for name in args.config_json:
        path = Path(name)
        found[path.parent.name or path.stem] = (path, read_config_json(path))
    if not found:
        raise UserError(f"no model configs: {folder} does not exist; give --models DIR or --config-json FILE")
    return found


def shipped_workload(name: str, lengths: dict) -> tuple[dict, Workload, bool]:
    """The workload of a model's shipped config (or of configs/online_v1.yaml): (where it came from,
    the Workload, whether the shipped config checkpoints activations)."""
    from fsdistill.config import load_config

    path = REPO / "configs" / SHIPPED_CONFIGS.get(name, DEFAULT_CONFIG)
    cfg, _ = load_config(str(path))
    work = Workload(
        per_device_batch=cfg.training.per_device_batch_size,
        student_tokens=lengths["student_tokens"],
        teacher_tokens=lengths["teacher_tokens"],
        answer_tokens=lengths["answer_tokens"],
        logits_chunk=cfg.training.logits_chunk_size,
        lora=Lora(cfg.lora.r, cfg.lora.dropout, tuple(cfg.lora.target_modules)),
    )
    source = {"config": str(path.relative_to(REPO)), "shipped": name in SHIPPED_CONFIGS}
    return source, work, cfg.model.gradient_checkpointing


def gib(x: float) -> str:
    return f"{x / GIB:.1f}"


def markdown_table(result: dict) -> str:
    cap = result["gpu_memory_gib"] * result["usable"]
    lines = [
        f"| model | mode | GPUs | B | params | grads | AdamW | teacher | FSDP gathered | activations "
        f"(ckpt off / on) | loss chunk | total (ckpt off / on) | fits {result['gpu_memory_gib']:g} GB "
        f"(≤ {cap:g} GiB) off / on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        off, on = row["checkpointing_off"], row["checkpointing_on"]
        gpus = f"{row['gpus']}" if row["mode"].startswith("fsdp") else f"any ≥ {row['gpus']}"
        fits = " / ".join("yes" if row[k] else "**no**" for k in ("fits_off", "fits_on"))
        lines.append(
            f"| {row['model']} | {row['mode']} | {gpus} | {row['per_device_batch']} | {gib(off['parameters'])} | "
            f"{gib(off['gradients'])} | {gib(off['optimizer'])} | {gib(off['teacher'])} | "
            f"{gib(off['fsdp_working_set'])} | "
            f"{gib(off['activations'] + off['autocast_weight_copies'])} / "
            f"{gib(on['activations'] + on['autocast_weight_copies'])} | {gib(off['loss'])} | "
            f"{gib(off['total'])} / {gib(on['total'])} | {fits} |"
        )
    return "\n".join(lines) + "\n"


@exit_on_user_error
def main(argv=None) -> dict:
    args = parse_args(argv)
    configs = model_configs(args)
    shapes = {name: ModelShape.from_config(fields, name) for name, (_, fields) in configs.items()}
    if args.lengths_from_data:
        data, tokenizer = SHARED / "data" / "gsm8k", SHARED / "tokenizers" / "qwen3"
        if not (data.exists() and tokenizer.exists()):
            raise UserError(f"--lengths-from-data reads {data} and {tokenizer}: not found")
        print("estimate_memory: measuring sequence lengths over one epoch ...", file=sys.stderr)
        lengths = measure_lengths(
            str(REPO / "configs" / DEFAULT_CONFIG), [f"model.tokenizer={tokenizer}", f"data.source={data}"]
        )
        lengths["config"] = f"configs/{DEFAULT_CONFIG}"
        lengths["overrides"] = [
            "model.tokenizer=../shared/tokenizers/qwen3",
            "data.source=../shared/data/gsm8k",
        ]
        lengths["how"] = "measured: widest micro-batches of one epoch"
    else:
        lengths = {
            "how": "command-line values",
            "student_tokens": args.student_tokens,
            "teacher_tokens": args.teacher_tokens,
            "answer_tokens": args.answer_tokens,
        }
    capacity = args.gpu_memory_gib * args.usable * GIB
    models, rows = {}, []
    for name, shape in shapes.items():
        source, work, shipped_checkpointing = shipped_workload(name, lengths)
        models[name] = {
            "config_json": shown_path(configs[name][0]),
            "shape": asdict(shape),
            "parameters": shape.parameter_counts(),
            "lora_parameters": shape.lora_parameters(work.lora.r, work.lora.targets),
            "workload": {**asdict(work), "positions": work.positions, **source},
            "shipped_gradient_checkpointing": shipped_checkpointing,
        }
        for mode in MODES:
            for gpus in args.gpus if mode.startswith("fsdp") else [2]:
                off = estimate(shape, work, mode, gpus, checkpointing=False)
                on = estimate(shape, work, mode, gpus, checkpointing=True)
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "gpus": gpus,
                        "per_device_batch": work.per_device_batch,
                        "checkpointing_off": off,
                        "checkpointing_on": on,
                        "fits_off": off["total"] <= capacity,
                        "fits_on": on["total"] <= capacity,
                    }
                )
    from fsdistill.files import git_state, write_json_atomic, write_text_atomic

    result = {
        "what": "estimated per-GPU bytes at the peak of one training step (few-shot distillation), from "
        "shapes; not measurements (fsdistill/tools/memory.py states the formulas)",
        "command": ["scripts/estimate_memory.py", *(argv if argv is not None else sys.argv[1:])],
        "gpu_memory_gib": args.gpu_memory_gib,
        "usable": args.usable,
        "lengths": lengths,
        "models": models,
        "rows": rows,
        "git_commit": git_state()["commit"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.output)
    write_json_atomic(out, result)
    table = markdown_table(result)
    md = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    write_text_atomic(md, table)
    print(table)
    print(f"wrote {out} and {md}")
    return result

"""Reuse the keys/values of an exemplar prefix that every teacher sequence of a micro-batch shares.

With `fixed` shots (one exemplar set for the run) or `per_batch` shots (one set per step), the k-shot
teacher sequences of a micro-batch start with the same ~2k tokens. Their keys and values depend only on
those tokens (causal attention), so they are computed once, at batch size 1, and every example runs only
its own question + answer tokens against them. The prefix is expanded over the batch as a view
(`expand`, stride 0: no copy); each layer concatenates it with the suffix's keys for its attention call
and drops the result right after, as an uncached forward drops its own keys, so the stored prefix is
never modified and can serve the next micro-batch (for `fixed` shots: the whole run; the teacher is
frozen).

Two things make this exact rather than approximately right:
- The attention mask covers prefix + suffix, (B, P + S). A suffix-only mask (B, S) runs without error
  and is silently wrong.
- Positions continue from P (rotary embeddings): the decoder derives them from the cache length.
Only models whose layers all use full attention are supported (a sliding-window layer would need the
window applied across the prefix); `check_prefix_forward` refuses the others at start-up by comparing
against an uncached forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def _dynamic_layer_class():
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


def make_prefix_cache(layers_kv: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int, length: int):
    """A transformers Cache whose layer i holds prefix keys/values [:, :, :length] expanded to batch_size.

    layers_kv[i] = (keys, values), each (1, kv_heads, P, head_dim) with P >= length. Views only.
    """
    from transformers.cache_utils import Cache

    layer_cls = _read_only_layer_class()
    layers = []
    for keys, values in layers_kv:
        layer = layer_cls()
        layer.hold(
            keys[:, :, :length].expand(batch_size, -1, -1, -1),
            values[:, :, :length].expand(batch_size, -1, -1, -1),
        )
        layers.append(layer)
    return Cache(layers=layers)


_READ_ONLY_LAYER = None


def _read_only_layer_class():
    """A DynamicLayer that returns prefix + new keys/values but never stores them (defined lazily:
    importing transformers at module import would slow down config-only commands)."""
    global _READ_ONLY_LAYER
    if _READ_ONLY_LAYER is None:
        base = _dynamic_layer_class()

        class ReadOnlyPrefixLayer(base):
            def hold(self, keys: torch.Tensor, values: torch.Tensor) -> None:
                self.dtype, self.device = keys.dtype, keys.device
                self.keys, self.values = keys, values
                self.is_initialized = True

            def update(self, key_states, value_states, *args, **kwargs):
                # (B, kv_heads, P, d) + (B, kv_heads, S, d) -> (B, kv_heads, P + S, d), not kept.
                keys = torch.cat([self.keys.to(key_states.dtype), key_states], dim=-2)
                values = torch.cat([self.values.to(value_states.dtype), value_states], dim=-2)
                return keys, values

        _READ_ONLY_LAYER = ReadOnlyPrefixLayer
    return _READ_ONLY_LAYER


def shared_prefix_length(ids: torch.Tensor, mask: torch.Tensor, limit: int) -> int:
    """Leading tokens that every row of ids (B, T) shares (all unpadded), at most `limit`."""
    same = (ids == ids[:1]) & mask.bool()
    agree = same.all(dim=0)
    if bool(agree[:limit].all()):
        return limit
    return int((~agree[:limit]).nonzero()[0, 0])


@dataclass
class StoredPrefix:
    ids: torch.Tensor  # (P,) token ids of the prefix
    layers_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, kv_heads, P, head_dim)


class PrefixKV:
    """The one stored prefix (the latest) and the decision to reuse it, recompute it, or not use it.

    For a micro-batch with shared prefix length L (capped so every predicting position stays in the
    suffix) and a stored prefix agreeing with it on m leading tokens:
      - reuse the stored prefix truncated to m (a view) when the extra suffix work B x (L - m) costs no
        more than running L prefix tokens once, and m >= min_tokens;
      - else compute a new prefix of length L (when L >= min_tokens) and store it;
      - else run the plain forward.
    `fixed` shots thus compute the exemplar prefix once per run; `per_batch` shots once per step.
    """

    def __init__(self, min_tokens: int):
        self.min_tokens = min_tokens
        self.stored: StoredPrefix | None = None
        self.computed = 0  # prefixes run (for tests and the benchmark)
        self.reused = 0

    def plan(self, ids: torch.Tensor, mask: torch.Tensor, limit: int) -> tuple[str, int]:
        """('reuse' | 'compute' | 'none', prefix length) for teacher ids (B, T)."""
        length = shared_prefix_length(ids, mask, limit)
        if self.stored is not None:
            n = min(length, self.stored.ids.numel())
            stored = self.stored.ids[:n].to(ids.device)
            differ = (stored != ids[0, :n]).nonzero()
            m = n if differ.numel() == 0 else int(differ[0, 0])
            if m >= self.min_tokens and ids.shape[0] * (length - m) <= length:
                self.reused += 1
                return "reuse", m
        if length >= self.min_tokens:
            return "compute", length
        return "none", 0

    def compute(self, decoder: nn.Module, ids: torch.Tensor, length: int) -> None:
        """Run the prefix ids[0, :length] at batch size 1 and store its per-layer keys/values."""
        prefix = ids[:1, :length]
        out = decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
        cache = out.past_key_values
        self.stored = StoredPrefix(
            ids=prefix[0].clone(), layers_kv=[(layer.keys, layer.values) for layer in cache.layers]
        )
        self.computed += 1


def suffix_hidden(decoder: nn.Module, stored: StoredPrefix, ids, mask, length: int) -> torch.Tensor:
    """Last hidden states (B, T - length, H) of teacher ids (B, T) whose first `length` tokens are the
    stored prefix's: only positions >= length are run."""
    batch = ids.shape[0]
    cache = make_prefix_cache(stored.layers_kv, batch, length)
    suffix_ids, suffix_mask = ids[:, length:], mask[:, length:]
    full_mask = torch.cat([torch.ones_like(mask[:, :length]), suffix_mask], dim=1)  # (B, P + S), see above
    out = decoder(input_ids=suffix_ids, attention_mask=full_mask, past_key_values=cache, use_cache=True)
    return out.last_hidden_state


def all_layers_full_attention(config) -> bool:
    """True when no decoder layer uses a sliding window (prefix reuse is only implemented for those)."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)  # a transformers config attribute, absent on some models
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(text, "sliding_window", None) is None or not getattr(text, "use_sliding_window", True)


def check_prefix_forward(decoder: nn.Module, vocab_size: int, device) -> None:
    """Fail at start-up if reusing a prefix's keys/values differs from the plain forward on this model.

    Two right-padded rows sharing 12 tokens; the suffix hidden states must match the uncached ones.
    """
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (2, 24), generator=gen).to(device)
    ids[1, :12] = ids[0, :12]
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        plain = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, 12:]
        kv = PrefixKV(min_tokens=1)
        kv.compute(decoder, ids, 12)
        reused = suffix_hidden(decoder, kv.stored, ids, mask, 12)
    valid = mask[:, 12:].bool()
    diff = (plain[valid].float() - reused[valid].float()).abs().max().item()
    scale = max(1.0, plain[valid].float().abs().max().item())
    tol = 1e-4 if plain.dtype == torch.float32 else 5e-2
    if diff > tol * scale:
        raise RuntimeError(
            f"{type(decoder).__name__}: reusing a prefix's keys/values changes the hidden states by {diff:.3g}; "
            "set teacher.prefix_cache=false for this model"
        )

"""Used in notebooks 05, 08, 10: the KV cache, what it holds, and what a decoding step costs.

- ``KVCache``: per layer, the keys and values of every position seen so far, grown by one
  row per generated token (``generation.ScratchLlama`` fills it).
- ``kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=4)``: the bytes such a cache
  holds, from a model config alone: 2 (K and V) × layers × batch × KV heads × positions ×
  head_dim × bytes per value.
- ``decode_step_uncached`` / ``decode_step_cached`` / ``decode_costs``: one attention
  layer's next-token step with and without a cache, and their timings over context lengths.
- ``time_decode_steps``: best-of timings of one real decoding step, cached and uncached.
- ``measure_memory_bandwidth`` and ``decode_step_lower_bound``: a decoding step must read
  every weight and the whole cache once, so ``bytes read / bandwidth`` is a floor on its time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# The cache itself and its size
# --------------------------------------------------------------------------------------


class KVCache:
    """Per layer, the keys and values of every position processed so far.

    ``keys[layer]`` and ``values[layer]`` are ``(B, n_kv_heads, T_seen, head_dim)``; each
    ``append`` concatenates the new positions along ``T_seen`` and returns the full tensors.
    """

    def __init__(self, n_layers: int) -> None:
        _positive_int("n_layers", n_layers)
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """Number of positions cached (0 before the prompt is processed)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``k``, ``v`` ``(B, n_kv_heads, T_new, head_dim)`` to ``layer``; return the full tensors."""
        if not 0 <= layer < len(self.keys):
            raise ValueError(f"layer must be in [0, {len(self.keys)}), got {layer}")
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` ``(B',)`` of every layer (beam search reorders its beams)."""
        for layer in range(len(self.keys)):
            if self.keys[layer] is not None:
                self.keys[layer] = self.keys[layer].index_select(0, index)
                self.values[layer] = self.values[layer].index_select(0, index)

    def nbytes(self) -> int:
        """Memory the cache holds: 2 × layers × B × kv_heads × T × head_dim × bytes per value."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


def _config_shape(config) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a transformers config (or any object with those fields)."""
    try:
        layers = config.num_hidden_layers
        heads = config.num_attention_heads
    except AttributeError as error:
        raise ValueError(
            "config must have num_hidden_layers and num_attention_heads (a transformers "
            f"config), got {type(config).__name__}"
        ) from error
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, kv_heads, head_dim


def kv_cache_bytes(config, seq_len: int, batch: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes a KV cache holds for ``seq_len`` positions of a decoder with ``config``.

    Per layer and position the cache keeps one key and one value vector per *KV* head
    (grouped-query attention shares them between query heads; query heads cost nothing):
    ``2 × layers × batch × kv_heads × seq_len × head_dim × bytes_per_value``
    (4 bytes for fp32, 2 for fp16/bf16). ``config`` needs ``num_hidden_layers``,
    ``num_attention_heads``, and optionally ``num_key_value_heads`` (default: all heads)
    and ``head_dim`` (default: ``hidden_size // num_attention_heads``).
    """
    for name, value in (("seq_len", seq_len), ("batch", batch), ("bytes_per_value", bytes_per_value)):
        _positive_int(name, value)
    layers, kv_heads, head_dim = _config_shape(config)
    return 2 * layers * batch * kv_heads * seq_len * head_dim * bytes_per_value


# --------------------------------------------------------------------------------------
# What one decoding step costs, with and without the cache (one attention layer)
# --------------------------------------------------------------------------------------


def _timer():
    """The course's timing function (``measurement.time_call`` once it exists, else bench's)."""
    try:
        from course_utils.measurement import time_call
    except ImportError:  # measurement.py not there yet: bench still has it
        from course_utils.bench import time_call
    return time_call


@dataclass(frozen=True)
class DecodeRow:
    """Seconds to produce the next token's attention output with n tokens of context."""

    n: int
    cached: object
    uncached: object
    max_difference: float


def _attention_layer(d_model: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    w_qkv = torch.randn(d_model, 3 * d_model, generator=generator) / math.sqrt(d_model)
    w_out = torch.randn(d_model, d_model, generator=generator) / math.sqrt(d_model)
    return w_qkv, w_out


def decode_step_uncached(x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, heads: int) -> torch.Tensor:
    """Next-token output with no cache: project all n tokens, causal attention over all.

    x ``(1, n, C)`` -> ``(1, C)`` for the last position: O(n·C²) projections plus O(n²·C)
    attention, every step.
    """
    batch, n, channels = x.shape
    q, k, v = (x @ w_qkv).split(channels, dim=-1)  # 3 × (1, n, C)
    q, k, v = (t.view(batch, n, heads, -1).transpose(1, 2) for t in (q, k, v))  # (1, H, n, d)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (1, H, n, d)
    return out[:, :, -1].reshape(batch, channels) @ w_out  # (1, C)


def decode_step_cached(
    x_new: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    w_qkv: torch.Tensor, w_out: torch.Tensor, heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token output with a KV cache: project 1 token, attend over n cached keys.

    x_new ``(1, 1, C)``; caches ``(1, H, n-1, d)`` -> output ``(1, C)`` and caches with the
    new token appended ``(1, H, n, d)``: O(C²) + O(n·C) per step.
    """
    batch, _, channels = x_new.shape
    q, k, v = (x_new @ w_qkv).split(channels, dim=-1)  # 3 × (1, 1, C)
    q, k, v = (t.view(batch, 1, heads, -1).transpose(1, 2) for t in (q, k, v))  # (1, H, 1, d)
    k_cache = torch.cat([k_cache, k], dim=2)  # (1, H, n, d)
    v_cache = torch.cat([v_cache, v], dim=2)
    out = F.scaled_dot_product_attention(q, k_cache, v_cache)  # the new query sees every key
    return out.reshape(batch, channels) @ w_out, k_cache, v_cache


def decode_costs(
    context_lengths: Sequence[int], d_model: int = 512, heads: int = 8, repeats: int = 5,
    warmup: int = 1, seed: int = 0,
) -> list[DecodeRow]:
    """Time one decoding step with and without a KV cache at each context length.

    Both paths produce the same next-token output (``max_difference`` says how close).
    """
    _positive_int("d_model", d_model)
    _positive_int("heads", heads)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    time_call = _timer()
    w_qkv, w_out = _attention_layer(d_model, seed)
    rows = []
    for n in context_lengths:
        _positive_int("context length", n)
        x = torch.randn(1, n, d_model, generator=torch.Generator().manual_seed(seed + n))
        with torch.no_grad():
            _, k_prefix, v_prefix = (x[:, :-1] @ w_qkv).split(d_model, dim=-1)
            k_cache, v_cache = (t.view(1, n - 1, heads, -1).transpose(1, 2).contiguous()
                                for t in (k_prefix, v_prefix))  # (1, H, n-1, d)
            uncached_out = decode_step_uncached(x, w_qkv, w_out, heads)
            cached_out, _, _ = decode_step_cached(x[:, -1:], k_cache, v_cache, w_qkv, w_out, heads)
            uncached = time_call(partial(decode_step_uncached, x, w_qkv, w_out, heads),
                                 warmup, repeats)
            cached = time_call(
                partial(decode_step_cached, x[:, -1:], k_cache, v_cache, w_qkv, w_out, heads),
                warmup, repeats,
            )
        rows.append(DecodeRow(n, cached, uncached, float((cached_out - uncached_out).abs().max())))
    return rows


# --------------------------------------------------------------------------------------
# The memory-bandwidth floor of a decoding step
# --------------------------------------------------------------------------------------


@torch.no_grad()
def measure_memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-``repeats`` read bandwidth of this machine in bytes/s.

    Sums a ``megabytes`` fp32 buffer (far larger than any CPU cache), which reads every
    byte once and writes almost nothing: the access pattern of a matrix-vector product.
    """
    _positive_int("megabytes", megabytes)
    _positive_int("repeats", repeats)
    buffer = torch.ones(megabytes * 2**20 // 4)
    buffer.sum()  # warm-up: pages touched, threads started
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best


def decode_step_lower_bound(weight_bytes: int, cache_bytes: int, bandwidth: float) -> float:
    """Seconds a decoding step needs at least: every weight and the whole cache read once.

    At batch 1 each weight is used in one multiply-add per step, so the step is bound by
    memory traffic, not arithmetic: ``(weight_bytes + cache_bytes) / bandwidth``.
    """
    _positive_int("weight_bytes", weight_bytes)
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be a non-negative integer, got {cache_bytes!r}")
    if not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a positive number of bytes/s, got {bandwidth!r}")
    return (weight_bytes + cache_bytes) / bandwidth


@dataclass(frozen=True)
class DecodeStepTiming:
    """Best-of-``repeats`` seconds of one decoding step at sequence length ``n``."""

    n: int
    uncached: float
    cached: float


@torch.no_grad()
def time_decode_steps(model, ids: torch.Tensor, lengths: Sequence[int], repeats: int = 3) -> list[DecodeStepTiming]:
    """Time the step that produces token ``n + 1`` of ``ids`` ``(1, T)``, for each n in ``lengths``.

    ``model`` is a ``generation.ScratchLlama`` (``model(ids, cache, last_only=True)``).
    Uncached: the whole prefix ``ids[:, :n]`` runs. Cached: the first ``n - 1`` positions
    are in a KV cache (filled untimed) and only position n runs. Repeats alternate over the
    lengths (so a change in machine load hits every length alike); the best time is kept.
    """
    _positive_int("repeats", repeats)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids must be a (1, T) tensor of token ids, got shape {tuple(ids.shape)}")
    lengths = [_positive_int("length", n) for n in lengths]
    if not lengths or max(lengths) > ids.shape[1] or min(lengths) < 2:
        raise ValueError(f"lengths must be non-empty, each in [2, {ids.shape[1]}], got {lengths}")
    caches = {}
    for n in lengths:  # prefill, untimed: the cache holds positions 0 .. n-2
        cache = model.new_cache()
        model(ids[:, : n - 1], cache, last_only=True)
        caches[n] = cache
    best = {n: [math.inf, math.inf] for n in lengths}
    for _ in range(repeats):
        for n in lengths:
            start = time.perf_counter()
            model(ids[:, :n], None, last_only=True)
            best[n][0] = min(best[n][0], time.perf_counter() - start)
            cache = caches[n]
            keys, values = list(cache.keys), list(cache.values)
            start = time.perf_counter()
            model(ids[:, n - 1 : n], cache, last_only=True)
            best[n][1] = min(best[n][1], time.perf_counter() - start)
            cache.keys, cache.values = keys, values  # back to n - 1 cached positions
    return [DecodeStepTiming(n, *best[n]) for n in lengths]

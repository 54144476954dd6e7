"""Used in notebook 10: the attention variants whose cost the notebook measures against n.

Attention variants on ``(B, H, n, d)`` inputs:

- ``naive``: ``softmax(q kᵀ / √d) v`` written out (notebook 04's formula, kept lean: the
  scale is applied in place); it materialises the ``(B, H, n, n)`` scores *and* the
  same-sized softmax weights, so its memory grows as n².
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with PyTorch's own
  choice of kernel, and ``sdpa[BACKEND]`` for each backend that runs on the device
  (on CPU: ``FLASH_ATTENTION`` and ``MATH``), reported by name.
- ``tiled``: :func:`course_utils.flash_attention.tiled_attention`, FlashAttention's
  algorithm written from scratch (re-exported here as ``bench.tiled_attention``).

Also ``make_inputs`` (seeded q, k, v), ``score_matrix_bytes`` (the n² formula) and
``predicted_extra_bytes`` (a generous memory forecast, so a sweep can skip what would not
fit). Timing, the matmul peak and FLOP counts live in ``course_utils.measurement``; the
KV-cache bytes and decoding costs in ``course_utils.kv_cache``; the benchmark harness
(memory probes in fresh processes, sweeps, CSV and PNG, the ``task bench`` command line)
in ``tools/bench.py``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_utils.flash_attention import (  # noqa: F401  (re-exported: bench.tiled_attention)
    DEFAULT_BLOCK_K,
    DEFAULT_BLOCK_Q,
    TILED_TOLERANCE,
    check_qkv,
    tile_count,
    tiled_attention,
)
from course_utils.masks import causal_mask, sliding_window_mask
from course_utils.params import positive_int

BYTES_PER_FP32 = 4
SDPA_BACKEND_NAMES = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ / √d) v, materialising the full ``(B, H, Tq, Tk)`` score matrix.

    q ``(B, H, Tq, d)``, k ``(B, H, Tk, d)``, v ``(B, H, Tk, dv)`` -> ``(B, H, Tq, dv)``.
    ``causal``: query i sees keys 0..i. ``window``: query i sees only the ``window`` keys
    nearest to it (``course_utils.masks.sliding_window_mask``; causal or symmetric).
    """
    check_qkv(q, k, v, causal)
    scores = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk): the n² matrix
    scores.mul_(1.0 / math.sqrt(q.shape[-1]))  # in place: one n² buffer, not two
    n = q.shape[-2]
    if window is not None:
        positive_int("window", window)
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"a sliding window needs Tq == Tk, got {q.shape[-2]} and {k.shape[-2]}")
        allowed = sliding_window_mask(n, window, causal=causal, device=q.device)
        scores.masked_fill_(~allowed, float("-inf"))
    elif causal:
        scores.masked_fill_(~causal_mask(n, device=q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk): a second n² matrix
    return weights @ v  # (B, H, Tq, dv)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; ``backend`` (e.g. ``"MATH"``) forces one kernel."""
    check_qkv(q, k, v, causal)
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in SDPA_BACKEND_NAMES:
        raise ValueError(f"backend must be one of {SDPA_BACKEND_NAMES}, got {backend!r}")
    with sdpa_kernel(getattr(SDPBackend, backend)):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def available_sdpa_backends(device: str = "cpu") -> list[str]:
    """Names of the SDPA backends that actually run (causal and not) on ``device``."""
    q = torch.randn(1, 2, 16, 8, device=device)
    names = []
    for name in SDPA_BACKEND_NAMES:
        try:
            with _quiet_warnings():
                sdpa_attention(q, q, q, backend=name)
                sdpa_attention(q, q, q, causal=True, backend=name)
        except RuntimeError:  # "No viable backend ...": not compiled in for this device
            continue
        names.append(name)
    return names


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a refused backend warns why before it raises
        yield


def score_matrix_bytes(batch: int, heads: int, n: int, bytes_per_element: int = BYTES_PER_FP32) -> int:
    """Bytes of one ``(B, H, n, n)`` score matrix: B·H·n²·bytes_per_element."""
    for name, value in (("batch", batch), ("heads", heads), ("n", n),
                        ("bytes_per_element", bytes_per_element)):
        positive_int(name, value)
    return batch * heads * n * n * bytes_per_element


def predicted_extra_bytes(
    variant: str, batch: int, heads: int, n: int, d: int, causal: bool = False,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> int:
    """A generous prediction of a variant's memory beyond its inputs (for the memory cap).

    Every variant allocates its ``(B, H, n, d)`` output. ``naive`` and SDPA's ``MATH``
    kernel also hold two n² matrices (scores, then softmax weights); ``tiled`` a few
    ``(B·H, block_q, block_k)`` tiles; the fused SDPA kernels small per-thread buffers.
    """
    output = batch * heads * n * d * BYTES_PER_FP32
    if variant in ("naive", "sdpa[MATH]"):
        mask = n * n if causal else 0  # the boolean (n, n) mask
        # MATH measured ~1.15x naive (it keeps a few more intermediates): allow 2.5 n².
        factor = 2.0 if variant == "naive" else 2.5
        return int(factor * score_matrix_bytes(batch, heads, n)) + mask + output
    if variant == "tiled":
        tile = batch * heads * min(block_q, n) * min(block_k, n) * BYTES_PER_FP32
        return 2 * tile + 3 * output
    if variant == "sdpa" or variant.startswith("sdpa["):
        return 4 * output
    raise ValueError(f"unknown variant {variant!r}: expected naive, tiled, sdpa or sdpa[BACKEND]")


def attention_fn(
    variant: str, causal: bool = False, block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The callable ``f(q, k, v)`` for a variant name (``naive``, ``tiled``, ``sdpa[MATH]``…)."""
    if variant == "naive":
        return lambda q, k, v: naive_attention(q, k, v, causal=causal)
    if variant == "tiled":
        return lambda q, k, v: tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
    if variant == "sdpa":
        return lambda q, k, v: sdpa_attention(q, k, v, causal=causal)
    if variant.startswith("sdpa[") and variant.endswith("]"):
        backend = variant[5:-1]
        if backend not in SDPA_BACKEND_NAMES:
            raise ValueError(f"unknown SDPA backend {backend!r}: expected one of {SDPA_BACKEND_NAMES}")
        return lambda q, k, v: sdpa_attention(q, k, v, causal=causal, backend=backend)
    raise ValueError(f"unknown variant {variant!r}: expected naive, tiled, sdpa or sdpa[BACKEND]")


def default_variants(device: str = "cpu") -> list[str]:
    """naive, sdpa (PyTorch's choice), one ``sdpa[BACKEND]`` per available backend, tiled."""
    return ["naive", "sdpa", *[f"sdpa[{name}]" for name in available_sdpa_backends(device)], "tiled"]


def make_inputs(
    batch: int, heads: int, n: int, d: int, device: str = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-variance fp32 q, k, v of shape ``(B, H, n, d)``, the same for a given seed."""
    for name, value in (("batch", batch), ("heads", heads), ("n", n), ("d", d)):
        positive_int(name, value)
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=generator) for _ in range(3))
    return q.to(device), k.to(device), v.to(device)

"""The O(n²) cost of attention, measured (notebook 10 and ``task bench``).

Attention variants on ``(B, H, n, d)`` inputs:

- ``naive``: ``softmax(q kᵀ / √d) v`` written out; it materialises the ``(B, H, n, n)``
  scores *and* the same-sized softmax weights, so its memory grows as n².
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with PyTorch's own
  choice of kernel, and ``sdpa[BACKEND]`` for each backend that runs on the device
  (on CPU: ``FLASH_ATTENTION`` and ``MATH``), reported by name.
- ``tiled``: :func:`tiled_attention`, the FlashAttention algorithm written from scratch:
  blocks of queries × blocks of keys with a running max and sum (online softmax), never an
  n × n matrix. Causal and sliding-window masks skip the key blocks they hide entirely.

A harness times each variant (warm-up, repeats, median and spread), measures its real peak
memory (CPU: a fresh subprocess per case reading its peak RSS, minus an identical process
that stops before the attention call; CUDA: the allocator's peak), sets it next to the
theoretical size of the score matrix, measures the machine's fp32 matmul throughput in the
same run, and fits log-log exponents. ``python -m course_utils.bench`` runs a sweep and
writes a CSV and a PNG under ``results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course_utils.masks import causal_mask, sliding_window_mask

REPO = Path(__file__).resolve().parents[1]
BYTES_PER_FP32 = 4
DEFAULT_BLOCK_Q = 256  # tuned on the 2-core course CPU: see notebook 10 and the README
DEFAULT_BLOCK_K = 128
TILED_TOLERANCE = 1e-5  # fp32: max |tiled - naive| on unit-variance inputs, measured ~1e-7
SDPA_BACKEND_NAMES = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_bhnd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (batch, heads, seq_len, head_dim); got shapes "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "q, k, v must share (batch, heads); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "expected q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            "causal attention here is self-attention: q and k need the same length, got "
            f"Tq={q.shape[-2]} and Tk={k.shape[-2]}"
        )
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point, got dtype {q.dtype}")


# --------------------------------------------------------------------------------------
# The variants
# --------------------------------------------------------------------------------------


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
    _check_bhnd(q, k, v, causal)
    scores = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk): the n² matrix
    scores.mul_(1.0 / math.sqrt(q.shape[-1]))  # in place: one n² buffer, not two
    n = q.shape[-2]
    if window is not None:
        _positive_int("window", window)
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
    _check_bhnd(q, k, v, causal)
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


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    window: int | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
    workers: int | None = None,
) -> torch.Tensor:
    """FlashAttention's algorithm in plain PyTorch: exact attention, no n × n matrix.

    q ``(B, H, Tq, d)``, k ``(B, H, Tk, d)``, v ``(B, H, Tk, dv)`` -> ``(B, H, Tq, dv)``.
    For each block of ``block_q`` queries it walks over blocks of ``block_k`` keys, keeping
    per query a running max ``m``, a running softmax denominator ``l`` and an unnormalised
    output ``acc``. A new block with scores s updates them as

        m' = max(m, rowmax(s));  p = exp(s - m');  c = exp(m - m')
        l' = c·l + rowsum(p);    acc' = c·acc + p v

    and the output is ``acc / l`` at the end: the same numbers as softmax(s) v, computed
    with one ``(B·H, block_q, block_k)`` score tile alive at a time. Key blocks that the
    causal or sliding-window mask hides completely are never computed. Lengths need not be
    multiples of the block sizes. A query that may attend to no key gets a zero output.

    Query blocks are independent, so on CPU ``workers`` threads (default: torch's thread
    count) each take whole query blocks and run their tile ops single-threaded, as
    FlashAttention hands one query block to each GPU thread block. The memory in flight is
    then ``workers`` tiles.
    """
    _check_bhnd(q, k, v, causal)
    _positive_int("block_q", block_q)
    _positive_int("block_k", block_k)
    if window is not None:
        _positive_int("window", window)
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"a sliding window needs Tq == Tk, got {q.shape[-2]} and {k.shape[-2]}")
    batch, heads, n_q, d = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d)
    # Fold batch and heads into one batch dimension so each tile is one bmm.
    q = q.reshape(batch * heads, n_q, d)  # (BH, Tq, d)
    k_t = k.reshape(batch * heads, n_k, d).transpose(1, 2)  # (BH, d, Tk)
    v = v.reshape(batch * heads, n_k, d_v)  # (BH, Tk, dv)
    out = torch.empty(batch * heads, n_q, d_v, dtype=q.dtype, device=q.device)
    masked = causal or window is not None

    def attend_query_block(q_start: int) -> None:
        """One query block against every key block it can see; writes its rows of out."""
        q_end = min(q_start + block_q, n_q)
        q_block = q[:, q_start:q_end] * scale  # (BH, bq, d): scale q, not the bq×bk scores
        rows = q_end - q_start
        running_max = torch.full((batch * heads, rows, 1), -math.inf, dtype=q.dtype, device=q.device)
        running_sum = torch.zeros(batch * heads, rows, 1, dtype=q.dtype, device=q.device)
        acc = torch.zeros(batch * heads, rows, d_v, dtype=q.dtype, device=q.device)
        # The keys this query block can see: skip whole blocks the mask hides.
        k_lo, k_hi = 0, n_k
        if causal:
            k_hi = q_end
        if window is not None:
            k_lo = max(0, q_start - window + 1)
            if not causal:
                k_hi = min(n_k, q_end - 1 + window)
        # One score buffer per query block, reused by every full-width tile: fewer, larger
        # allocations keep the memory footprint close to one tile per worker.
        tile = torch.empty(batch * heads, rows, min(block_k, k_hi - k_lo), dtype=q.dtype,
                           device=q.device)
        for k_start in range(k_lo, k_hi, block_k):
            k_end = min(k_start + block_k, k_hi)
            if k_end - k_start == tile.shape[-1]:
                scores = torch.bmm(q_block, k_t[:, :, k_start:k_end], out=tile)  # (BH, bq, bk)
            else:  # the last, narrower tile
                scores = torch.bmm(q_block, k_t[:, :, k_start:k_end])
            if masked:
                allowed = _block_mask(q_start, q_end, k_start, k_end, causal, window, q.device)
                if allowed is not None:
                    scores.masked_fill_(~allowed, -math.inf)
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))  # (BH, bq, 1)
            # A row with no visible key yet has max -inf: subtract 0 instead (exp(-inf) = 0).
            safe_max = new_max.masked_fill(new_max == -math.inf, 0.0) if masked else new_max
            probs = scores.sub_(safe_max).exp_()  # (BH, bq, bk), in place: no second tile
            correction = torch.exp(running_max - safe_max)  # (BH, bq, 1): rescale the past
            running_sum.mul_(correction).add_(probs.sum(dim=-1, keepdim=True))
            acc.mul_(correction).baddbmm_(probs, v[:, k_start:k_end])  # acc = c·acc + p v
            running_max = new_max
        if masked:  # rows that saw no key at all: output 0, as course_utils.attention does
            running_sum.masked_fill_(running_sum == 0, 1.0)
        out[:, q_start:q_end] = acc.div_(running_sum)

    starts = range(0, n_q, block_q)
    workers = min(torch.get_num_threads() if workers is None else _positive_int("workers", workers),
                  len(starts))
    if workers <= 1 or q.device.type != "cpu":
        for q_start in starts:
            attend_query_block(q_start)
    else:  # query blocks are independent: worker threads take them, as GPU thread blocks do
        # Each worker runs its tile ops single-threaded (set_num_threads is per thread for
        # OpenMP and MKL: the caller keeps its count). Left multi-threaded, every small tile op
        # would wait for a team of threads at a barrier: thousands of barriers per call, each
        # a scheduler time slice when other processes share the cores (20-50x slower, measured).
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(pool.map(attend_query_block, starts))
    return out.view(batch, heads, n_q, d_v)


def tiled_tile_count(
    n: int, causal: bool = False, window: int | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> int:
    """How many score tiles :func:`tiled_attention` computes for self-attention over n tokens.

    The work it does is (tiles × block_q × block_k), not the number of visible pairs: a
    tile the mask hides only partly is still computed whole.
    """
    for name, value in (("n", n), ("block_q", block_q), ("block_k", block_k)):
        _positive_int(name, value)
    tiles = 0
    for q_start in range(0, n, block_q):
        q_end = min(q_start + block_q, n)
        k_lo, k_hi = 0, n
        if causal:
            k_hi = q_end
        if window is not None:
            k_lo = max(0, q_start - _positive_int("window", window) + 1)
            if not causal:
                k_hi = min(n, q_end - 1 + window)
        tiles += -(-(k_hi - k_lo) // block_k)
    return tiles


def _block_mask(
    q_start: int, q_end: int, k_start: int, k_end: int, causal: bool, window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """``(bq, bk)`` boolean mask (True = may attend) for one tile, None if all allowed."""
    row_lo, row_hi = q_start, q_end - 1
    # Fast path: the whole tile is visible (most tiles, far from the diagonal and band edge).
    fully_visible = True
    if causal and k_end - 1 > row_lo:
        fully_visible = False
    if window is not None:
        if row_hi - k_start >= window:
            fully_visible = False
        if not causal and k_end - 1 - row_lo >= window:
            fully_visible = False
    if fully_visible:
        return None
    rows = torch.arange(q_start, q_end, device=device).unsqueeze(1)  # (bq, 1)
    cols = torch.arange(k_start, k_end, device=device).unsqueeze(0)  # (1, bk)
    distance = rows - cols
    allowed = torch.ones(q_end - q_start, k_end - k_start, dtype=torch.bool, device=device)
    if causal:
        allowed &= distance >= 0
    if window is not None:
        allowed &= distance < window
        if not causal:
            allowed &= distance > -window
    return allowed


# --------------------------------------------------------------------------------------
# Formulas: FLOPs and bytes
# --------------------------------------------------------------------------------------


def attention_flops(batch: int, heads: int, n: int, d: int, causal: bool = False) -> float:
    """Matmul FLOPs of attention: q kᵀ and p v are each 2·n·n·d per head -> 4·B·H·n²·d.

    Causal attention needs only the lower triangle: half of it.
    """
    for name, value in (("batch", batch), ("heads", heads), ("n", n), ("d", d)):
        _positive_int(name, value)
    flops = 4.0 * batch * heads * n * n * d
    return flops / 2 if causal else flops


def score_matrix_bytes(batch: int, heads: int, n: int, bytes_per_element: int = BYTES_PER_FP32) -> int:
    """Bytes of one ``(B, H, n, n)`` score matrix: B·H·n²·bytes_per_element."""
    for name, value in (("batch", batch), ("heads", heads), ("n", n),
                        ("bytes_per_element", bytes_per_element)):
        _positive_int(name, value)
    return batch * heads * n * n * bytes_per_element


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, n: int, batch: int = 1,
    bytes_per_element: int = BYTES_PER_FP32,
) -> int:
    """Bytes of a KV cache: keys and values (×2) per layer, KV head, position, dimension."""
    for name, value in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim),
                        ("n", n), ("batch", batch), ("bytes_per_element", bytes_per_element)):
        _positive_int(name, value)
    return 2 * layers * batch * kv_heads * n * head_dim * bytes_per_element


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


# --------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------


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
        _positive_int(name, value)
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=generator) for _ in range(3))
    return q.to(device), k.to(device), v.to(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    warmup: int

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the repeats span ±5 % around the median."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], warmup: int = 1, repeats: int = 5, device: str = "cpu") -> Timing:
    """Median, min and max seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    The median resists the odd slow repeat (another process, a page fault storm); the
    spread says how noisy the machine was.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    _positive_int("repeats", repeats)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), repeats, warmup)


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """The machine's fp32 matmul throughput: 2·size³ FLOPs per (size × size) product."""
    _positive_int("size", size)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    timing = time_call(lambda: a @ b, warmup=2, repeats=repeats, device=device)
    return 2.0 * size**3 / timing.median_s / 1e9


# --------------------------------------------------------------------------------------
# Peak memory: a fresh process per case (CPU) or the CUDA allocator's peak
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCase:
    """One memory measurement: a variant on ``(batch, heads, n, d)`` inputs."""

    variant: str
    n: int
    batch: int = 1
    heads: int = 8
    d: int = 64
    causal: bool = False
    block_q: int = DEFAULT_BLOCK_Q
    block_k: int = DEFAULT_BLOCK_K
    threads: int = 2


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of the process that ran the case, of the baseline process, and the gap."""

    case: MemoryCase
    peak_bytes: int
    baseline_bytes: int

    @property
    def extra_bytes(self) -> int:
        """What the attention call added on top of interpreter, torch and inputs."""
        return max(0, self.peak_bytes - self.baseline_bytes)


def _maxrss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux, read ``VmHWM`` (the peak of this process image) rather than ``ru_maxrss``:
    ``ru_maxrss`` also keeps the peak of the image before ``exec``, i.e. the (forked) parent,
    so a probe started from a 450 MB Jupyter kernel or pytest would report ≥ 450 MB
    whatever it did. Elsewhere it is ``ru_maxrss`` (macOS reports bytes, Linux KiB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (and ``ru_maxrss``) to its current RSS, if Linux allows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), if this libc has it.

    Otherwise a later allocation could reuse pages freed by the warm-up, which are still
    resident, and the attention call would seem to need nothing.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _probe(case: MemoryCase, run: bool) -> int:
    """Body of a probe process: inputs, a tiny warm-up of every variant, then (maybe) the case.

    The warm-up loads the same code, kernels and thread pools in the baseline and the
    measured process, so the difference of their peaks is the attention call itself.
    """
    torch.set_num_threads(case.threads)
    q, k, v = make_inputs(case.batch, case.heads, case.n, case.d)
    # Small, but more than one query block: the tiled variant starts its worker threads
    # (thread stacks, malloc arenas, BLAS buffers: a one-off cost) here, not in the measured call.
    tiny = make_inputs(1, 2, 2 * case.block_q + 1, case.d, seed=1)
    for variant in ("naive", "tiled", "sdpa", *[f"sdpa[{b}]" for b in available_sdpa_backends()]):
        attention_fn(variant, case.causal, case.block_q, case.block_k)(*tiny)
    gc.collect()
    _release_free_memory()
    # Import and warm-up left transient peaks above what is resident now; forget them, or
    # they would hide any call smaller than them (Linux ≥ 4.0; elsewhere the gap shrinks).
    _reset_peak_rss()
    if run:
        out = attention_fn(case.variant, case.causal, case.block_q, case.block_k)(q, k, v)
        del out
    return _maxrss_bytes()


def _run_probe(case: MemoryCase, run: bool, python: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(case.threads)
    payload = json.dumps({"case": asdict(case), "run": run})
    return subprocess.Popen(
        [python, "-m", "course_utils.bench", "--probe", payload],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def measure_memory(
    cases: Iterable[MemoryCase], jobs: int = 1, python: str | None = None
) -> list[MemoryResult]:
    """Peak RSS of each case, each in a fresh process, minus a baseline process's peak.

    The baseline process does everything the measured one does (imports, allocates the
    same inputs, warms up on a tiny input) except the attention call; cases with the same
    input shape share one baseline. ``jobs`` processes run at once (memory, unlike time,
    does not suffer from sharing the CPU). CPU only: on CUDA use :func:`cuda_peak_bytes`.
    """
    cases = list(cases)
    _positive_int("jobs", jobs)
    python = python or sys.executable
    shape = lambda c: (c.batch, c.heads, c.n, c.d, c.causal, c.threads)  # noqa: E731
    baselines = {shape(c): c for c in cases}
    tasks = [(c, False) for c in baselines.values()] + [(c, True) for c in cases]
    peaks: dict[tuple[MemoryCase, bool], int] = {}
    running: list[tuple[tuple[MemoryCase, bool], subprocess.Popen]] = []

    def finish(item):
        key, proc = item
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe {key[0]} failed:\n{stderr[-2000:]}")
        peaks[key] = int(json.loads(stdout.strip().splitlines()[-1])["maxrss_bytes"])

    for task in tasks:
        if len(running) >= jobs:
            finish(running.pop(0))
        running.append((task, _run_probe(*task, python)))
    for item in running:
        finish(item)
    return [MemoryResult(c, peaks[(c, True)], peaks[(baselines[shape(c)], False)]) for c in cases]


def cuda_peak_bytes(fn: Callable[[], object]) -> int:
    """Extra bytes the CUDA caching allocator reached while ``fn()`` ran."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# --------------------------------------------------------------------------------------
# Sweeps, fits, CSV, figure
# --------------------------------------------------------------------------------------


@dataclass
class BenchRow:
    """One variant at one n: timing, throughput and memory (None when not measured)."""

    variant: str
    n: int
    batch: int
    heads: int
    d: int
    causal: bool
    device: str
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    spread: float | None = None
    gflops: float | None = None
    fraction_of_matmul_peak: float | None = None
    score_matrix_bytes: int = 0
    predicted_extra_bytes: int = 0
    extra_bytes: int | None = None
    skipped: str = ""


@dataclass
class SweepResult:
    """Rows of a sweep plus the matmul peak measured in the same run."""

    rows: list[BenchRow]
    matmul_gflops: float
    device: str
    threads: int

    def by_variant(self, variant: str, measured: str = "median_s") -> tuple[list[int], list[float]]:
        """(n values, values) of one variant where ``measured`` was measured."""
        pairs = [(r.n, getattr(r, measured)) for r in self.rows
                 if r.variant == variant and getattr(r, measured) is not None and not r.skipped]
        return [n for n, _ in pairs], [value for _, value in pairs]

    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.rows))

    def row(self, variant: str, n: int) -> BenchRow:
        for r in self.rows:
            if r.variant == variant and r.n == n:
                return r
        raise KeyError(f"no row for variant {variant!r} at n={n}")


def fit_exponent(ns: Sequence[float], values: Sequence[float]) -> float:
    """Slope of log(value) against log(n): 2 means the value grows as n², 1 as n."""
    ns, values = np.asarray(ns, dtype=float), np.asarray(values, dtype=float)
    if ns.shape != values.shape or ns.size < 2:
        raise ValueError(f"need ≥ 2 (n, value) pairs of equal length, got {ns.size} and {values.size}")
    if (ns <= 0).any() or (values <= 0).any():
        raise ValueError("a log-log fit needs positive n and values")
    if np.unique(ns).size < 2:
        raise ValueError("need at least two different n to fit a slope")
    slope, _ = np.polyfit(np.log(ns), np.log(values), 1)
    return float(slope)


def run_sweep(
    ns: Sequence[int],
    variants: Sequence[str] | None = None,
    batch: int = 1,
    heads: int = 8,
    d: int = 64,
    causal: bool = False,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    memory_ns: Sequence[int] | None = None,
    memory_variants: Sequence[str] | None = None,
    memory_cap_bytes: float | None = None,
    memory_jobs: int = 1,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Time every variant at every n; measure peak memory at ``memory_ns`` (default all n)
    for ``memory_variants`` (default all variants).

    A case whose :func:`predicted_extra_bytes` exceeds ``memory_cap_bytes`` is skipped and
    the reason logged and kept in its row. Times come first, in this process; memory
    probes after, in fresh processes, so they never overlap a timing.
    """
    ns = [_positive_int("n", n) for n in ns]
    if not ns:
        raise ValueError("ns must list at least one sequence length")
    variants = list(variants) if variants is not None else default_variants(device)
    for variant in variants:
        attention_fn(variant)  # validates the name before any time is spent
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for but torch.cuda.is_available() is False")
    memory_ns = ns if memory_ns is None else list(memory_ns)
    say = log or (lambda _: None)
    peak = matmul_gflops(device=device)
    say(f"fp32 matmul peak on {device}: {peak:.0f} GFLOP/s")
    rows: list[BenchRow] = []
    for n in ns:
        q, k, v = make_inputs(batch, heads, n, d, device)
        flops = attention_flops(batch, heads, n, d, causal)
        for variant in variants:
            row = BenchRow(
                variant, n, batch, heads, d, causal, device,
                score_matrix_bytes=score_matrix_bytes(batch, heads, n),
                predicted_extra_bytes=predicted_extra_bytes(variant, batch, heads, n, d, causal,
                                                            block_q, block_k),
            )
            rows.append(row)
            if memory_cap_bytes is not None and row.predicted_extra_bytes > memory_cap_bytes:
                row.skipped = (f"predicted {format_bytes(row.predicted_extra_bytes)} > cap "
                               f"{format_bytes(memory_cap_bytes)}")
                say(f"skip {variant} at n={n}: {row.skipped}")
                continue
            fn = attention_fn(variant, causal, block_q, block_k)
            timing = time_call(partial(fn, q, k, v), warmup, repeats, device)
            row.median_s, row.min_s, row.max_s = timing.median_s, timing.min_s, timing.max_s
            row.spread = timing.spread
            row.gflops = flops / timing.median_s / 1e9
            row.fraction_of_matmul_peak = row.gflops / peak
            if str(device).startswith("cuda") and n in memory_ns and (
                    memory_variants is None or variant in memory_variants):
                row.extra_bytes = cuda_peak_bytes(partial(fn, q, k, v))
            say(f"{variant:>22} n={n:>6}: {timing.median_s * 1e3:9.2f} ms "
                f"(±{timing.spread / 2:.0%}), {row.gflops:6.1f} GFLOP/s")
        del q, k, v
    if device == "cpu":
        measured = set(variants if memory_variants is None else memory_variants)
        todo = [r for r in rows if r.n in memory_ns and r.variant in measured and not r.skipped]
        cases = [MemoryCase(r.variant, r.n, batch, heads, d, causal, block_q, block_k,
                            torch.get_num_threads()) for r in todo]
        for row, result in zip(todo, measure_memory(cases, jobs=memory_jobs), strict=True):
            row.extra_bytes = result.extra_bytes
            say(f"{row.variant:>22} n={row.n:>6}: peak +{format_bytes(result.extra_bytes)} "
                f"(score matrix {format_bytes(row.score_matrix_bytes)})")
    return SweepResult(rows, peak, device, torch.get_num_threads())


def format_bytes(value: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, three significant digits)."""
    value = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def exponents(result: SweepResult, measured: str = "median_s", min_n: int = 1) -> dict[str, float]:
    """Fitted log-log slope of ``measured`` vs n per variant (points with n ≥ ``min_n``)."""
    fitted = {}
    for variant in result.variants():
        ns, values = result.by_variant(variant, measured)
        pairs = [(n, x) for n, x in zip(ns, values, strict=True) if n >= min_n and x > 0]
        if len({n for n, _ in pairs}) >= 2:
            fitted[variant] = fit_exponent([n for n, _ in pairs], [x for _, x in pairs])
    return fitted


def write_csv(result: SweepResult, path: str | Path) -> Path:
    """One line per row, plus the matmul peak and thread count on every line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(BenchRow)] + ["matmul_gflops", "threads"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({**asdict(row), "matmul_gflops": round(result.matmul_gflops, 2),
                             "threads": result.threads})
    return path


def plot_sweep(result: SweepResult, min_n: int = 1, axes=None, title_suffix: str = ""):
    """Log-log time and peak-memory panels, fitted exponents in the legends; returns fig."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    else:
        fig = axes[0].figure
    time_exp = exponents(result, "median_s", min_n)
    mem_exp = exponents(result, "extra_bytes", min_n)
    for variant in result.variants():
        ns, times = result.by_variant(variant, "median_s")
        if ns:
            label = variant + (f"  (∝ n^{time_exp[variant]:.2f})" if variant in time_exp else "")
            axes[0].loglog(ns, [t * 1e3 for t in times], "o-", label=label)
        ns, extra = result.by_variant(variant, "extra_bytes")
        if ns:
            label = variant + (f"  (∝ n^{mem_exp[variant]:.2f})" if variant in mem_exp else "")
            axes[1].loglog(ns, [max(x, 1) / 2**20 for x in extra], "o-", label=label)
    score_ns = sorted({r.n for r in result.rows})
    score = [result.rows[0].batch * result.rows[0].heads * n * n * 4 / 2**20 for n in score_ns]
    axes[1].loglog(score_ns, score, "k--", lw=1, label="one n×n fp32 score matrix (formula)")
    def slopes(fitted: dict[str, float]) -> str:
        return f"fitted slopes {min(fitted.values()):.2f} to {max(fitted.values()):.2f}" if fitted else "no fit"

    axes[0].set(xlabel="sequence length n", ylabel="time per call (ms)",
                title=f"Time per call against n: {slopes(time_exp)}{title_suffix}")
    axes[1].set(xlabel="sequence length n", ylabel="peak memory above inputs (MB)",
                title=f"Peak extra memory against n: {slopes(mem_exp)}{title_suffix}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Decoding: per-token cost with and without a KV cache
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeRow:
    """Seconds to produce the next token's attention output with n tokens of context."""

    n: int
    cached: Timing
    uncached: Timing
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
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
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
# Command line: python -m course_utils.bench
# --------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(",", " ").split()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers like 128,256,512, got {text!r}") from error
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.bench",
        description="Sweep attention variants over n; write results/bench_<device>.csv/.png.",
    )
    parser.add_argument("--n", type=_int_list, default=[256, 512, 1024, 2048, 4096, 8192],
                        help="sequence lengths, comma-separated (default 256..8192)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--causal", action="store_true", help="causal attention")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("--variants", default=None,
                        help="comma-separated (default: naive, sdpa, each sdpa[BACKEND], tiled)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-cap-gb", type=float, default=8.0,
                        help="skip a case predicted to need more than this (default 8)")
    parser.add_argument("--memory-n", type=_int_list, default=None,
                        help="measure peak memory only at these n (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="time only, no memory probes")
    parser.add_argument("--memory-jobs", type=int, default=1, help="memory probes run at once")
    parser.add_argument("--block-q", type=int, default=DEFAULT_BLOCK_Q)
    parser.add_argument("--block-k", type=int, default=DEFAULT_BLOCK_K)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: $COURSE_NUM_THREADS or 2)")
    parser.add_argument("--out", default=str(REPO / "results"), help="output folder (default results/)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe
    return parser


def summary_table(result: SweepResult) -> str:
    """A markdown table of the sweep (what the README shows)."""
    lines = ["| variant | n | median time | spread | GFLOP/s | % of matmul peak | peak memory above inputs | n×n score matrix |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.rows:
        if r.skipped:
            lines.append(f"| {r.variant} | {r.n} | skipped: {r.skipped} | | | | | "
                         f"{format_bytes(r.score_matrix_bytes)} |")
            continue
        memory = format_bytes(r.extra_bytes) if r.extra_bytes is not None else "–"
        lines.append(
            f"| {r.variant} | {r.n} | {r.median_s * 1e3:.1f} ms | ±{r.spread / 2:.0%} | {r.gflops:.1f} | "
            f"{r.fraction_of_matmul_peak:.0%} | {memory} | {format_bytes(r.score_matrix_bytes)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:  # a memory probe process: print its peak RSS as JSON and leave
        payload = json.loads(args.probe)
        print(json.dumps({"maxrss_bytes": _probe(MemoryCase(**payload["case"]), payload["run"])}))
        return 0
    from course_utils.repro import default_threads

    torch.set_num_threads(args.threads or default_threads())
    variants = args.variants.split(",") if args.variants else None
    result = run_sweep(
        args.n, variants, args.batch, args.heads, args.d, args.causal, args.device,
        args.repeats, args.warmup, memory_ns=[] if args.no_memory else args.memory_n,
        memory_cap_bytes=args.memory_cap_gb * 2**30, memory_jobs=args.memory_jobs,
        block_q=args.block_q, block_k=args.block_k,
    )
    stem = Path(args.out) / f"bench_{args.device}{'_causal' if args.causal else ''}"
    csv_path = write_csv(result, stem.with_suffix(".csv"))
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_sweep(result, min_n=min(args.n) * 2 if len(set(args.n)) > 2 else 1,
                     title_suffix=f" ({args.device}, {result.threads} threads)")
    fig.savefig(stem.with_suffix(".png"), dpi=90)
    print()
    print(summary_table(result))
    print()
    fit_from = min(args.n) * 2 if len(set(args.n)) > 2 else 1
    for what, key in (("time", "median_s"), ("peak memory", "extra_bytes")):
        fitted = exponents(result, key, fit_from)
        print(f"fitted {what} exponents (n ≥ {fit_from}): "
              + ", ".join(f"{v} n^{e:.2f}" for v, e in fitted.items()))
    largest = max(r.n for r in result.rows if r.variant == "tiled" and not r.skipped) \
        if any(r.variant == "tiled" and not r.skipped for r in result.rows) else None
    if largest and any(r.variant == "sdpa" and r.n == largest and not r.skipped for r in result.rows):
        tiled, sdpa = result.row("tiled", largest), result.row("sdpa", largest)
        line = f"at n={largest}: tiled / sdpa time {tiled.median_s / sdpa.median_s:.2f}x"
        if tiled.extra_bytes and sdpa.extra_bytes:
            line += f", memory {tiled.extra_bytes / sdpa.extra_bytes:.2f}x"
        print(line)
    print(f"wrote {csv_path} and {stem.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Used in notebooks 07 and 10 and by ``task bench``: one stopwatch and one yardstick.

Every "GFLOP/s" and every "% of peak" in the course is computed with this module, so the
numbers of notebook 07 (a transformer block), notebook 10 (attention against n) and
``task bench`` (``tools/bench.py``) can be compared with each other:

- ``time_call(fn)`` -> :class:`Timing`: warm-up calls, then ``repeats`` timed calls; the
  median, the fastest (``min_s``: the least disturbed by other processes) and the spread.
- ``matmul_peak_gflops()``: this machine's fp32 GEMM throughput, a ``1024 × 1024`` product,
  fastest of ten: the yardstick "% of peak" divides by.
- ``attention_flops(batch, heads, n, d)`` and ``sublayer_flops(config, seq_len)``: matmul
  FLOPs from the formula (multiply + add = 2), for attention alone and for every
  sublayer of a block (projections, attention core, FFN).
- ``fit_power_law(ns, values)`` -> :class:`PowerLawFit`: the exponent a of ``value ∝ n^a``
  by Theil–Sen (the median of the slopes between every pair of points, so one disturbed
  point cannot move it far), with its 95 % interval.
- ``cache_sizes()``: the CPU's cache levels (bytes), read from Linux's sysfs (or macOS's
  sysctl): what a working set must fit in to run at cache speed.

Timings depend on the machine and its load: cells that print them are tagged
``nbval-ignore-output``. Under load, prefer ``min_s`` to the median.
"""

from __future__ import annotations

import math
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from course_utils.params import integer, positive_int

if TYPE_CHECKING:  # only for the type hint: blocks imports nothing from here
    from course_utils.blocks import TransformerConfig

PEAK_MATMUL_SIZE = 1024  # one size for every "% of peak" in the course
PEAK_REPEATS = 10  # short calls, many of them: one is likely to run undisturbed on a busy CPU


# ----------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``len(times)`` calls, made after ``warmup`` untimed ones."""

    times: tuple[float, ...]
    warmup: int

    @property
    def repeats(self) -> int:
        return len(self.times)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def min_s(self) -> float:
        """The fastest call: the one least disturbed by other processes."""
        return min(self.times)

    @property
    def max_s(self) -> float:
        return max(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the repeats span ±5 % around the median."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(
    fn: Callable[[], Any], warmup: int = 2, repeats: int = 5, device: str = "cpu",
) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed (caches, allocator, lazy initialisation), then
    time ``repeats`` calls with ``time.perf_counter``, under ``torch.no_grad()``. On CUDA
    the device is synchronised around each call, so the time is the kernel's, not the
    launch's."""
    integer("warmup", warmup, min=0)
    positive_int("repeats", repeats)
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    return Timing(tuple(times), warmup)


def matmul_peak_gflops(
    size: int = PEAK_MATMUL_SIZE, warmup: int = 2, repeats: int = PEAK_REPEATS, device: str = "cpu",
) -> float:
    """This machine's fp32 matmul throughput in GFLOP/s: a ``size × size`` product (2·size³
    FLOPs), the *fastest* of ``repeats`` calls, since a peak is the best the machine does.
    Measured with torch's current thread count. A 1024² product already runs at the CPU's
    GEMM speed (course machine, 2 cores: 211 GFLOP/s, vs 218 for 2048², in earlier runs)
    and takes ~10 ms, so among ten calls one is likely to run undisturbed even when other
    programs share the cores."""
    positive_int("size", size)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    timing = time_call(lambda: a @ b, warmup=warmup, repeats=repeats, device=device)
    return 2.0 * size**3 / timing.min_s / 1e9


# ----------------------------------------------------------------------------- FLOPs
def attention_flops(batch: int, heads: int, n: int, d: int, causal: bool = False) -> float:
    """Matmul FLOPs of attention over n tokens: q kᵀ and p v are each 2·n²·d per head, so
    4·B·H·n²·d. Causal attention needs only the lower triangle: half of it."""
    for name, value in (("batch", batch), ("heads", heads), ("n", n), ("d", d)):
        positive_int(name, value)
    flops = 4.0 * batch * heads * n * n * d
    return flops / 2 if causal else flops


def sublayer_flops(config: TransformerConfig, seq_len: int, batch: int = 1) -> dict[str, int]:
    """Matmul FLOPs (multiply + add = 2) of one block's sublayers for ``batch × seq_len`` tokens.

    With N = batch·T tokens, C = d_model, F = d_ff, d_kv = num_kv_heads·head_dim:
    ``qkv_proj`` 2N·C·(C + 2 d_kv); ``attn_core`` 4·batch·T²·C (q kᵀ and weights·v over all
    heads, :func:`attention_flops`; softmax's few element-wise ops per score are left out);
    ``out_proj`` 2N·C²; ``ffn_up`` 2N·C·F (×2 for SwiGLU's gate); ``ffn_down`` 2N·F·C.
    ``attention`` and ``ffn`` are the sums. ``norms`` (~8 element-wise ops per value, two
    norms) are not matmuls and are not in the sums.
    """
    positive_int("seq_len", seq_len)
    positive_int("batch", batch)
    n, c, f = batch * seq_len, config.d_model, config.d_ff
    d_kv = (config.num_kv_heads or config.num_heads) * config.head_dim
    flops = {
        "qkv_proj": 2 * n * c * (c + 2 * d_kv),
        "attn_core": int(attention_flops(batch, config.num_heads, seq_len, config.head_dim)),
        "out_proj": 2 * n * c * c,
        "ffn_up": 2 * n * c * f * (2 if config.activation == "swiglu" else 1),
        "ffn_down": 2 * n * f * c,
        "norms": 2 * 8 * n * c,
    }
    flops["attention"] = flops["qkv_proj"] + flops["attn_core"] + flops["out_proj"]
    flops["ffn"] = flops["ffn_up"] + flops["ffn_down"]
    return flops


# ----------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class PowerLawFit:
    """``value ≈ scale · n^exponent``; ``low``/``high``: the exponent's 95 % interval."""

    exponent: float
    low: float
    high: float
    scale: float
    points: int

    def __str__(self) -> str:
        return f"n^{self.exponent:.2f} [{self.low:.2f}, {self.high:.2f}]"


def fit_power_law(ns: Sequence[float], values: Sequence[float], confidence: float = 0.95) -> PowerLawFit:
    """Fit ``value ∝ n^a`` on log-log axes with the Theil–Sen estimator.

    a is the median of the slopes log(v_j / v_i) / log(n_j / n_i) over every pair of
    points (``scipy.stats.theilslopes``), so a single disturbed point (a timing hit by
    another process) moves it little, where a least-squares line follows it. ``low`` and
    ``high`` bound a at ``confidence`` (Sen's interval from the ranks of the pairwise
    slopes: wide when the points scatter or are few).
    """
    from scipy.stats import theilslopes

    x, y = np.asarray(ns, dtype=float), np.asarray(values, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(f"need ≥ 3 (n, value) pairs of equal length, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log fit needs finite, positive n and values")
    if np.unique(x).size < 2:
        raise ValueError("need at least two different n to fit a slope")
    slope, intercept, low, high = theilslopes(np.log(y), np.log(x), alpha=confidence)
    return PowerLawFit(float(slope), float(low), float(high), float(math.exp(intercept)), int(x.size))


def fit_exponent(ns: Sequence[float], values: Sequence[float]) -> float:
    """The exponent alone of :func:`fit_power_law` (2 means the value grows as n²)."""
    return fit_power_law(ns, values).exponent


# ----------------------------------------------------------------------------- caches
@dataclass(frozen=True)
class CacheLevel:
    """One CPU cache: level (1, 2, 3), kind (Data, Instruction, Unified), size in bytes,
    and how many logical CPUs share one instance of it."""

    level: int
    kind: str
    size_bytes: int
    shared_by: int


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _cpu_list_count(text: str) -> int:
    count = 0
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            count += int(hi) - int(lo) + 1
        elif part:
            count += 1
    return max(count, 1)


def cache_sizes(root: str | Path = "/sys/devices/system/cpu/cpu0/cache") -> list[CacheLevel]:
    """The data and unified caches CPU 0 sees, smallest level first; [] if unknown.

    Linux: ``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size,shared_cpu_list}``.
    macOS: ``sysctl hw.l1dcachesize hw.l2cachesize hw.l3cachesize``.
    """
    levels = []
    root = Path(root)
    if root.is_dir():
        for index in sorted(root.glob("index*")):
            try:
                kind = (index / "type").read_text().strip()
                if kind == "Instruction":
                    continue
                levels.append(CacheLevel(
                    int((index / "level").read_text()), kind,
                    _parse_size((index / "size").read_text()),
                    _cpu_list_count((index / "shared_cpu_list").read_text()),
                ))
            except (OSError, ValueError):
                continue
    elif platform.system() == "Darwin":
        for level, key in ((1, "hw.l1dcachesize"), (2, "hw.l2cachesize"), (3, "hw.l3cachesize")):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
                if out.returncode == 0 and out.stdout.strip().isdigit():
                    levels.append(CacheLevel(level, "Data" if level == 1 else "Unified",
                                             int(out.stdout.strip()), 1))
            except (OSError, subprocess.SubprocessError):
                continue
    return sorted(levels, key=lambda c: c.level)


def format_bytes(value: float) -> str:
    """1536 -> '1.5 KiB' (powers of 1024, three significant digits)."""
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")

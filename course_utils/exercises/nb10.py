"""Checkers for notebook 10's exercises: the n² bytes, one online-softmax step, and the
whole tiled (FlashAttention-style) attention, checked against
``torch.nn.functional.scaled_dot_product_attention`` and for O(n) memory."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_utils.exercises import CheckResult, run_check
from course_utils.flash_attention import peak_tensor_bytes
from course_utils.solutions import nb10 as solutions

SCORE_CASES = [(1, 1, 512, 4), (1, 8, 4096, 4), (2, 12, 1000, 2), (4, 32, 131072, 2)]


def check_score_matrix_bytes(score_matrix_bytes: Callable[..., int]) -> CheckResult:
    """``score_matrix_bytes(batch, heads, n, bytes_per_element)``: bytes of the n×n scores."""

    def diagnose(got, expected, args, kwargs):
        batch, heads, n, width = args
        if isinstance(got, bool) or not isinstance(got, int | float):
            return f"returned {type(got).__name__}, expected a number of bytes (int)"
        if got == expected:
            return None
        if got == batch * heads * n * width:
            return f"got {got} for n={n}: that grows as n, but there is one score per (query, key) pair: n²"
        if got == expected * 8:
            return f"got {got}: that's bits; bytes_per_element is already in bytes"
        if got == n * n * width:
            return f"got {got}: one n×n matrix per (batch, head): multiply by batch and heads"
        if got in (batch * n * n * width, heads * n * n * width):
            return f"got {got}: the matrix is (batch, heads, n, n): both batch and heads count"
        return f"got {got} for batch={batch}, heads={heads}, n={n}, {width} B/element; expected {expected}"

    return run_check(
        "score_matrix_bytes", score_matrix_bytes, solutions.score_matrix_bytes,
        [(case, {}) for case in SCORE_CASES], diagnose,
        hint=True,
    )


def _online_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(10)
    cases = []
    for rows, block, dv, scale, start in ((3, 4, 2, 1.0, "empty"), (5, 8, 3, 3.0, "mid"),
                                         (2, 6, 4, 1000.0, "mid")):
        scores = torch.randn(rows, block, generator=generator, dtype=torch.float64) * scale
        values = torch.randn(block, dv, generator=generator, dtype=torch.float64)
        if start == "empty":  # the first block: nothing seen yet
            running_max = torch.full((rows, 1), -math.inf, dtype=torch.float64)
            running_sum = torch.zeros(rows, 1, dtype=torch.float64)
            acc = torch.zeros(rows, dv, dtype=torch.float64)
        else:  # a state left by earlier blocks, with maxima below this block's
            running_max = torch.randn(rows, 1, generator=generator, dtype=torch.float64) * scale - scale
            running_sum = torch.rand(rows, 1, generator=generator, dtype=torch.float64) * 3 + 1
            acc = torch.randn(rows, dv, generator=generator, dtype=torch.float64)
        cases.append(((running_max, running_sum, acc, scores, values), {}))
    return cases


def check_online_softmax_update(online_softmax_update: Callable[..., tuple]) -> CheckResult:
    """``online_softmax_update(m, l, acc, scores, values) -> (m', l', acc')``."""

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, tuple | list) or len(got) != 3:
            return "return a tuple (new_max, new_sum, new_acc)"
        names = ("new_max", "new_sum", "new_acc")
        for name, g, e in zip(names, got, expected, strict=True):
            if not isinstance(g, torch.Tensor):
                return f"{name} is a {type(g).__name__}, expected a tensor"
            if g.shape != e.shape:
                return f"{name} has shape {tuple(g.shape)}, expected {tuple(e.shape)} (keepdim=True?)"
        for name, g in zip(names, got, strict=True):
            if not torch.isfinite(g).all():
                return (f"{name} has inf/NaN: exp() overflowed; subtract the new running max "
                        "before exponentiating")
        m, s, a = got
        m_ref, s_ref, a_ref = expected
        if not torch.allclose(m, m_ref, rtol=1e-9, atol=1e-9):
            return "new_max is wrong: it is the larger of the old max and this block's row max"
        sum_ok = torch.allclose(s, s_ref, rtol=1e-7, atol=1e-9)
        acc_ok = torch.allclose(a, a_ref, rtol=1e-7, atol=1e-9)
        if sum_ok and acc_ok:
            return None
        old_max, old_sum, old_acc, scores, values = args
        probs = torch.exp(scores - m_ref)
        if not sum_ok and torch.allclose(s, old_sum + probs.sum(-1, keepdim=True)):
            return "new_sum forgot to rescale the old sum by exp(old_max - new_max)"
        if not acc_ok and torch.allclose(a, old_acc + probs @ values):
            return "new_acc forgot to rescale the old acc by exp(old_max - new_max)"
        if not sum_ok:
            return "new_sum is wrong: exp(old_max - new_max) * old_sum + rowsum(exp(scores - new_max))"
        return "new_acc is wrong: exp(old_max - new_max) * old_acc + exp(scores - new_max) @ values"

    return run_check(
        "online_softmax_update", online_softmax_update, solutions.online_softmax_update,
        _online_cases(), diagnose,
        hint=True,
    )


# ----------------------------------------------------------------------------- 10.3

TILED_TOLERANCE = 1e-5  # fp32 against SDPA, unit-variance inputs (scaled case: relative)
MEMORY_N = (256, 1024)  # the memory check: peak bytes at these two lengths
MEMORY_RATIO_LIMIT = 8.0  # 4x the tokens: O(n) memory grows ~4x, an n x n matrix 16x


def _tiled_variant(q, k, v, causal=False, block_q=64, block_k=64, *, rescale_sum=True,
                   rescale_acc=True, per_tile=False, local_mask=False, mask=True, scale=True):
    """The tile loop with one thing changed, to recognise a slip."""
    b, h, n_q, d = q.shape
    n_k = k.shape[-2]
    out = torch.empty(b, h, n_q, v.shape[-1], dtype=q.dtype)
    for qs in range(0, n_q, block_q):
        qe = min(qs + block_q, n_q)
        qb = q[:, :, qs:qe] * (1 / math.sqrt(d) if scale else 1.0)
        m = torch.full((b, h, qe - qs, 1), -math.inf, dtype=q.dtype)
        s_run = torch.zeros(b, h, qe - qs, 1, dtype=q.dtype)
        acc = torch.zeros(b, h, qe - qs, v.shape[-1], dtype=q.dtype)
        last = qe if (causal and mask) else n_k
        for ks in range(0, last, block_k):
            ke = min(ks + block_k, last)
            sc = qb @ k[:, :, ks:ke].transpose(-2, -1)
            if causal and mask:
                if local_mask:
                    rows, cols = torch.arange(qe - qs)[:, None], torch.arange(ke - ks)[None]
                else:
                    rows, cols = torch.arange(qs, qe)[:, None], torch.arange(ks, ke)[None]
                sc = sc.masked_fill(cols > rows, -math.inf)
            new_m = torch.maximum(m, sc.amax(-1, keepdim=True))
            p = torch.exp(sc - new_m)
            c = torch.exp(m - new_m)
            if per_tile:
                acc = acc + (p @ v[:, :, ks:ke]) / p.sum(-1, keepdim=True)
                s_run = torch.ones_like(s_run)
            else:
                s_run = (c * s_run if rescale_sum else s_run) + p.sum(-1, keepdim=True)
                acc = (c * acc if rescale_acc else acc) + p @ v[:, :, ks:ke]
            m = new_m
        out[:, :, qs:qe] = acc / s_run
    return out


def _tiled_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(10)

    def inputs(b, h, n_q, n_k, d, d_v, spread=1.0):
        return (torch.randn(b, h, n_q, d, generator=generator) * spread,
                torch.randn(b, h, n_k, d, generator=generator) * spread,
                torch.randn(b, h, n_k, d_v, generator=generator))

    return [
        (("values", *inputs(1, 2, 100, 100, 16, 16), False, 32, 32), {}),
        (("values", *inputs(2, 3, 130, 130, 8, 8), True, 64, 32), {}),
        (("values", *inputs(1, 4, 77, 150, 32, 24), False, 16, 64), {}),
        (("values", *inputs(1, 2, 200, 200, 16, 16), True, 48, 80), {}),
        (("values", *inputs(1, 1, 256, 256, 64, 64, spread=6.0), True, 64, 64), {}),  # scores > 88: exp overflows
        (("memory", None, None, None, False, 128, 128), {}),
    ]


def _run_tiled(fn, memo: dict | None = None):
    """Adapt ``fn(q, k, v, causal, block_q, block_k)`` to the cases: values, or peak memory.
    With ``memo`` (the reference), each case runs once even when it is asked for twice
    (once as the expected value, once filled in for a stub)."""

    def run(kind, q, k, v, causal, block_q, block_k):
        key = (kind, id(q), causal, block_q, block_k)
        if memo is not None and key in memo:
            return memo[key]
        result = measure(kind, q, k, v, causal, block_q, block_k)
        if memo is not None:
            memo[key] = result
        return result

    def measure(kind, q, k, v, causal, block_q, block_k):
        if kind == "values":
            return fn(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
        peaks, outputs_ok = [], True
        for n in MEMORY_N:
            generator = torch.Generator().manual_seed(n)
            q, k, v = (torch.randn(1, 2, n, 32, generator=generator) for _ in range(3))
            out, peak = peak_tensor_bytes(fn, q, k, v, causal=causal, block_q=block_q, block_k=block_k)
            expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            outputs_ok &= isinstance(out, torch.Tensor) and out.shape == expected.shape and bool(
                torch.allclose(out, expected, atol=TILED_TOLERANCE, rtol=TILED_TOLERANCE))
            peaks.append(peak)
        return peaks, outputs_ok

    return run


def check_tiled_attention(tiled_attention: Callable[..., torch.Tensor]) -> CheckResult:
    """``tiled_attention(q, k, v, causal, block_q, block_k)`` must equal
    ``F.scaled_dot_product_attention`` (causal and not, five shapes, block sizes that do not
    divide the lengths, scores large enough to overflow ``exp``; max |difference| ≤ 1e-5,
    relative for the large-score case), and the peak bytes of the tensors it creates must grow
    about linearly with n (``TensorMemoryMeter``: 4x the tokens must cost < 8x the memory;
    an n × n matrix costs 16x)."""

    def diagnose(got, expected, args, kwargs):
        kind, q, k, v, causal, block_q, block_k = args
        if kind == "memory":
            (small, large), outputs_ok = got
            if not outputs_ok:
                return "on the memory-test inputs the output differs from SDPA"
            ratio = large / max(small, 1)
            if ratio >= MEMORY_RATIO_LIMIT:
                return (f"memory grows like n²: from n = {MEMORY_N[0]} to {MEMORY_N[1]} (4x) the tensors "
                        f"you create peak at {small / 2**20:.2f} then {large / 2**20:.2f} MiB ({ratio:.1f}x; an "
                        f"O(n) tile loop stays under {MEMORY_RATIO_LIMIT:.0f}x). Something n × n is alive at "
                        "once: a full score matrix, or all tiles kept in a list")
            return None
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor (B, H, Tq, dv)"
        truth = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if got.shape != truth.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(truth.shape)} = (B, H, Tq, dv)"
        if not torch.isfinite(got).all():
            return ("inf/NaN in the output: exp() overflowed or saw -inf - (-inf); subtract the new "
                    "running max (old max and this tile's row max) before exponentiating")
        spread = truth.abs().max().item() if q.abs().max() > 10 else 1.0
        error = (got - truth).abs().max().item()
        if error <= TILED_TOLERANCE * spread:
            return None
        settings = dict(causal=causal, block_q=block_q, block_k=block_k)
        slips = [
            (dict(rescale_sum=False), "the running sum is not rescaled by exp(old max - new max) when the max changes"),
            (dict(rescale_acc=False), "the accumulated output is not rescaled by exp(old max - new max) when the max changes"),
            (dict(per_tile=True), "each tile was normalised by its own sum: accumulate unnormalised, divide by the running sum once, at the end"),
            (dict(scale=False), "the scores are not scaled by 1/√d"),
        ]
        if causal:
            slips[:0] = [(dict(mask=False), "the causal mask is missing: query i must not see keys after i "
                                             "(skip tiles entirely above the diagonal, mask the ones it crosses)"),
                         (dict(local_mask=True), "the causal mask uses positions inside the tile: compare the "
                                                 "global query and key positions (tile start + offset)")]
        for change, words in slips:
            variant = _tiled_variant(q, k, v, **settings, **change)
            if torch.isfinite(variant).all() and (got - variant).abs().max().item() <= TILED_TOLERANCE * spread:
                return words
        if causal and (got - F.scaled_dot_product_attention(q, k, v)).abs().max().item() <= TILED_TOLERANCE:
            return "the output equals non-causal attention: the causal mask is missing"
        return (f"max |difference| from SDPA {error:.2e} (tolerance {TILED_TOLERANCE * spread:.0e}) for q "
                f"{tuple(q.shape)}, k {tuple(k.shape)}, causal={causal}, blocks {block_q}x{block_k}")

    return run_check("tiled_attention", _run_tiled(tiled_attention), _run_tiled(solutions.tiled_attention, {}),
                     _tiled_cases(), diagnose, hint=True, timeout_s=30)

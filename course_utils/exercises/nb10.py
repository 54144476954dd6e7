"""Checkers for notebook 10's exercises: the n² bytes, and one online-softmax step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
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
        hint="one score per (batch, head, query, key): batch * heads * n * n * bytes_per_element",
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
        hint="new_max = max(old, rowmax); p = exp(s - new_max); c = exp(old - new_max); "
             "sum = c*sum + rowsum(p); acc = c*acc + p @ values",
    )

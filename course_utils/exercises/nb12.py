"""Used in notebook 12: checkers of its exercises (MiniGPT and induction heads)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb12 as solutions

_SCHEDULE = (100, 1e-2, 10, 1e-3)  # total_steps, peak_lr, warmup_steps, min_lr


def check_warmup_cosine(warmup_cosine: Callable[..., float]) -> CheckResult:
    """``warmup_cosine(step, total_steps, peak_lr, warmup_steps, min_lr) -> float``."""
    total, peak, warmup, low = _SCHEDULE
    steps = [0, 4, 9, 10, 30, 55, 80, 99]
    cases = [((s, total, peak, warmup, low), {}) for s in steps]
    cases.append(((0, 50, 3e-3, 0, 3e-4), {}))  # no warm-up: starts at the peak

    def diagnose(got, expected, args, kwargs):
        step, total_steps, peak_lr, warmup_steps, min_lr = args
        try:
            got = float(got)
        except (TypeError, ValueError):
            return f"returned {type(got).__name__}, expected a float"
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12):
            return None
        if step < warmup_steps and math.isclose(got, peak_lr * step / warmup_steps, rel_tol=1e-6):
            return (f"step {step}: {got:.3g}, expected {expected:.3g}: the warm-up starts at "
                    "peak_lr / warmup_steps, not 0 (a zero learning rate wastes a step): use step + 1")
        if step >= warmup_steps and math.isclose(got, peak_lr * 0.5 * (1 + math.cos(
                math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))),
                rel_tol=1e-6):
            return f"step {step}: the cosine must end at min_lr={min_lr}, not 0"
        if step == total_steps - 1:
            return f"last step: {got:.3g}, expected min_lr = {expected:.3g}"
        return f"step {step}: {got:.4g}, expected {expected:.4g}"

    return run_check(
        "warmup_cosine", warmup_cosine, solutions.warmup_cosine, cases, diagnose,
        hint="warm-up: peak*(step+1)/warmup; then p = (step-warmup)/(total-warmup-1), "
             "min + (peak-min) * (1 + cos(pi p)) / 2",
    )


def _induction_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    cases = []
    for heads, seq_len, start, length in ((2, 12, 2, 5), (3, 16, 0, 8), (1, 20, 6, 7)):
        scores = torch.randn(heads, seq_len, seq_len, generator=generator) * 2
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        cases.append(((weights, start, length), {}))
    return cases


def check_induction_score(
    induction_score: Callable[[torch.Tensor, int, int], torch.Tensor],
) -> CheckResult:
    """``induction_score(weights (H, T, T), first_start, block_len) -> (H,)``."""

    def diagnose(got, expected, args, kwargs):
        weights, start, length = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one score per head)"
        if torch.allclose(got, expected, atol=1e-6):
            return None
        second = start + length
        every = torch.arange(second, second + length)  # all queries of the second copy
        if torch.allclose(got, weights[:, every, every - length + 1].mean(-1), atol=1e-6):
            return ("you included the last query of the second copy: the token after it is not "
                    "part of the copy (at the end of a sequence it does not exist), so copying "
                    "predicts nothing there; stop one query earlier")

        def matches(offset: int) -> bool:  # attention to key i + offset, with or without the last query
            return any(torch.allclose(got, weights[:, q, q + offset].mean(-1), atol=1e-6)
                       for q in (every, every[:-1]))

        if matches(-length):
            return ("you measured attention to i - block_len: that is the earlier copy of the "
                    "*same* token (a duplicate-token head); an induction head looks one further, "
                    "at the token that came next: i - block_len + 1")
        if matches(-1):
            return "that is the previous-token score (key i - 1), not the induction score"
        first = torch.arange(start, second)
        if any(torch.allclose(got, weights[:, q, (q - length + 1).clamp_min(0)].mean(-1), atol=1e-6)
               for q in (first, first[:-1])):
            return "use the queries of the second copy (first_start + block_len …), not the first"
        return f"got {got.tolist()}, expected {expected.tolist()}"

    return run_check(
        "induction_score", induction_score, solutions.induction_score, _induction_cases(),
        diagnose,
        hint="queries i = first_start + block_len … first_start + 2*block_len - 2; keys i - block_len + 1",
    )

"""Checkers for notebook 11 (attention analysis)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb11 as solutions


def _entropy_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    random = torch.softmax(torch.randn(3, 5, 5, generator=generator) * 2, dim=-1)
    causal = torch.softmax(
        torch.randn(2, 4, 4, generator=generator).masked_fill(
            ~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf")
        ),
        dim=-1,
    )  # rows with exact zeros: 0 log 0 must count as 0
    one_hot = torch.eye(4).expand(2, 4, 4).clone()
    uniform = torch.full((1, 6, 6), 1 / 6)
    return [((w,), {}) for w in (random, causal, one_hot, uniform)]


def check_head_entropy(head_entropy: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """``head_entropy(weights (H, T, T)) -> (H,)``: mean row entropy in nats."""

    def diagnose(got, expected, args, kwargs):
        (weights,) = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            if got.dim() == 2 and got.shape == weights.shape[:2]:
                return (f"shape {tuple(got.shape)}: that is one entropy per query row; "
                        "average over the queries to get one number per head")
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one value per head)"
        if torch.isnan(got).any():
            return "NaN: a weight of 0 gives 0 * log(0) = 0 * -inf = NaN; treat those terms as 0"
        if torch.allclose(got, expected, atol=1e-5):
            return None
        if torch.allclose(got, expected / math.log(2), atol=1e-5):
            return "off by a factor 1/ln 2: that is bits (log2); use the natural log (nats)"
        if torch.allclose(got, -expected, atol=1e-5):
            return "wrong sign: entropy is -Σ p log p (log p ≤ 0, so entropy ≥ 0)"
        if torch.allclose(got, expected * weights.shape[-2], atol=1e-4):
            return "T times too large: you summed over the query rows instead of averaging"
        return f"got {got.tolist()}, expected {expected.tolist()}"

    return run_check(
        "head_entropy", head_entropy, solutions.head_entropy, _entropy_cases(), diagnose,
        hint="-(w * log w).sum(-1), with 0 where w == 0 (torch.where), then .mean(-1)",
    )


def _zero_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    return [
        ((torch.randn(2, 3, 12, generator=generator), 0, 4), {}),
        ((torch.randn(1, 5, 12, generator=generator), 2, 4), {}),
        ((torch.randn(2, 4, 18, generator=generator), 5, 6), {}),
        ((torch.randn(1, 2, 12, generator=generator), 1, 3), {}),
    ]


def check_zero_head(zero_head: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """``zero_head(concat (B, T, H*d), head, num_heads)``: a copy with that head's slice zeroed."""

    def diagnose(got, expected, args, kwargs):
        concat, head, num_heads = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (unchanged)"
        if got.data_ptr() == concat.data_ptr() or torch.equal(concat, expected):
            return "you modified the input in place (or returned it): work on concat.clone()"
        if torch.equal(got, expected):
            return None
        d_head = concat.shape[-1] // num_heads
        zero_cols = (got == 0).all(0).all(0).nonzero().flatten().tolist()
        if zero_cols == list(range(head, concat.shape[-1], num_heads)):
            return ("you zeroed every num_heads-th column: the heads are contiguous blocks of "
                    "d_head columns, head h = columns h*d_head … (h+1)*d_head - 1")
        if zero_cols and len(zero_cols) != d_head:
            return f"zeroed {len(zero_cols)} columns, expected d_head = {d_head}"
        return f"head {head}: wrong columns zeroed ({zero_cols}), expected {head * d_head}..{(head + 1) * d_head - 1}"

    return run_check(
        "zero_head", zero_head, solutions.zero_head, _zero_cases(), diagnose,
        hint="d = concat.shape[-1] // num_heads; out = concat.clone(); out[..., head*d:(head+1)*d] = 0",
    )

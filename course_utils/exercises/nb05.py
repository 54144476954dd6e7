"""Checkers for notebook 05 (multi-head attention)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb05 as solutions


def _split_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 3, 4, 2), (2, 5, 12, 3), (2, 4, 384, 12), (3, 1, 8, 8)]  # (B, T, d, H)
    return [
        ((torch.randn(b, t, d, generator=generator), h), {}) for b, t, d, h in shapes
    ]


def check_split_heads(split_heads: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """``split_heads(x, num_heads)``: (B, T, H*d) -> (B, H, T, d), head h = slice h of d_model."""

    def diagnose(got, expected, args, kwargs):
        x, heads = args
        batch, seq_len, width = x.shape
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if tuple(got.shape) == (batch, seq_len, heads, width // heads) and heads != seq_len:
            return (f"shape {tuple(got.shape)} is (B, T, H, d): transpose the T and H axes "
                    "so each head sees all positions")
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, H, T, d) = {tuple(expected.shape)}"
        if torch.equal(got, expected):
            return None
        if torch.equal(got, x.reshape(batch, heads, seq_len, width // heads)):
            return ("right shape, wrong values: reshaping straight to (B, H, T, d) mixes "
                    "positions into heads; view as (B, T, H, d) first, then transpose(1, 2)")
        return "right shape, wrong values: head h should hold x[..., h*d:(h+1)*d] for every position"

    return run_check(
        "split_heads", split_heads, solutions.split_heads, _split_cases(), diagnose,
        hint="x.view(B, T, H, d_model // H).transpose(1, 2)",
    )


def _repeat_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    shapes = [(1, 3, 4, 2, 9), (2, 2, 5, 4, 8), (1, 4, 3, 2, 4), (2, 1, 3, 2, 3)]
    return [
        ((torch.randn(b, hkv, t, d, generator=generator), heads), {})
        for b, hkv, t, d, heads in shapes
    ]


def check_repeat_kv_heads(
    repeat_kv_heads: Callable[[torch.Tensor, int], torch.Tensor],
) -> CheckResult:
    """``repeat_kv_heads(kv, num_heads)``: (B, Hkv, T, d) -> (B, H, T, d), head h reads h // group."""

    def diagnose(got, expected, args, kwargs):
        kv, heads = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.shape != expected.shape:
            return (f"shape {tuple(got.shape)}, expected (B, num_heads, T, d) = "
                    f"{tuple(expected.shape)}")
        if torch.equal(got, expected):
            return None
        group = heads // kv.shape[1]
        if torch.equal(got, kv.repeat(1, group, 1, 1)):
            return ("query head h got KV head h % Hkv (you tiled with .repeat): Llama groups "
                    "*consecutive* query heads, so head h reads KV head h // group "
                    "(repeat_interleave)")
        return "right shape, wrong values: query head h should read KV head h // (H // Hkv)"

    return run_check(
        "repeat_kv_heads", repeat_kv_heads, solutions.repeat_kv_heads, _repeat_cases(),
        diagnose, hint="kv.repeat_interleave(num_heads // kv.shape[1], dim=1)",
    )

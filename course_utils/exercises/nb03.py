"""Checkers for notebook 03 (positional encoding): the sinusoidal table and RoPE."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.positional import apply_rope_adjacent_pairs
from course_utils.solutions import nb03 as solutions

TOLERANCE = 1e-5


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and torch.allclose(got.float(), expected.float(), atol=TOLERANCE)


def check_sinusoidal_encoding(sinusoidal_encoding: Callable[[int, int], torch.Tensor]) -> CheckResult:
    """``sinusoidal_encoding(seq_len, d_model)``: sin in even columns, cos in odd ones."""

    def diagnose(got, expected, args, kwargs):
        seq_len, d_model = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (seq_len, d_model) = {tuple(expected.shape)}"
        if _close(got, expected):
            return None
        swapped = torch.empty_like(expected)
        swapped[:, 0::2], swapped[:, 1::2] = expected[:, 1::2], expected[:, 0::2]
        if _close(got, swapped):
            return "sin and cos are swapped: sin goes in the even columns 0, 2, 4, ..."
        if _close(got, torch.cat((expected[:, 0::2], expected[:, 1::2]), dim=1)):
            return ("you put all sines first, then all cosines: interleave them "
                    "(column 2i = sin, column 2i+1 = cos)")
        positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
        i = torch.arange(d_model // 2, dtype=torch.float64)
        wrong = positions / 10000.0 ** (i / d_model)  # i instead of 2i
        if _close(got[:, 0::2], torch.sin(wrong)):
            return "the frequency exponent should be 2i / d_model (column index 2i), not i / d_model"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    cases = [((seq_len, d_model), {}) for seq_len, d_model in ((4, 8), (50, 16), (128, 64), (1, 2))]
    return run_check(
        "sinusoidal_encoding", sinusoidal_encoding, solutions.sinusoidal_encoding, cases,
        diagnose, hint="angles = p / 10000 ** (arange(0, d, 2) / d); PE[:, 0::2] = sin, PE[:, 1::2] = cos",
    )


def _rope_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(3)
    cases = []
    for shape, base in (((5, 8), 10000.0), ((3, 6, 16), 10000.0), ((2, 7, 64), 100000.0)):
        x = torch.randn(*shape, generator=generator)
        positions = torch.arange(shape[-2]) * 3 + 1  # not 0..T-1, so position ≠ index
        cases.append(((x, positions, base), {}))
    return cases


def check_apply_rope(apply_rope: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """``apply_rope(x (..., T, d), positions (T,), base)`` in Llama's rotate-half layout."""

    def diagnose(got, expected, args, kwargs):
        x, positions, base = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != x.shape:
            return f"shape {tuple(got.shape)}, expected x's shape {tuple(x.shape)}"
        if _close(got, expected):
            return None
        if _close(got, x):
            return "the output equals the input: nothing was rotated"
        if _close(got, apply_rope_adjacent_pairs(x, positions, base)):
            return ("you rotated adjacent pairs (x[2i], x[2i+1]), the RoFormer / Meta layout; "
                    "Hugging Face's Llama (SmolLM2) pairs x[i] with x[i + d/2] (rotate_half)")
        if _close(got, solutions.apply_rope(x, -positions, base)):
            return "the rotation goes the wrong way: rotate_half(x) = [-x2, x1], times +sin"
        if _close(got, solutions.apply_rope(x, torch.arange(x.shape[-2]), base)):
            return "you used 0..T-1 instead of the given positions"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    return run_check(
        "apply_rope", apply_rope, solutions.apply_rope, _rope_cases(), diagnose,
        hint="x * cos(angles) + rotate_half(x) * sin(angles), angles = positions ⊗ base^(-2i/d), repeated twice",
    )

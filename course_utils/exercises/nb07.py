"""Checkers for notebook 07 (the forward pass)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb07 as solutions


def _close(a, b, atol: float = 1e-5) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and bool(
        torch.allclose(a, b, atol=atol, rtol=0))


def _layer_norm_cases() -> list[tuple[tuple, dict]]:
    gen = torch.Generator().manual_seed(0)
    cases = []
    for shape, scale, eps in (((4, 8), 1.0, 1e-5), ((2, 3, 16), 5.0, 1e-5), ((1, 5, 6), 0.01, 1e-2)):
        c = shape[-1]
        x = torch.randn(shape, generator=gen) * scale + 3.0
        weight = torch.rand(c, generator=gen) + 0.5
        bias = torch.randn(c, generator=gen)
        cases.append(((x, weight, bias), {"eps": eps}))
    return cases


def check_layer_norm(layer_norm: Callable) -> CheckResult:
    """``layer_norm(x, weight, bias, eps)`` = torch.nn.functional.layer_norm over the last dim."""

    def diagnose(got, expected, args, kwargs):
        x, weight, bias = args
        eps = kwargs["eps"]
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (the input's)"
        if _close(got, expected):
            return None
        mean = x.mean(-1, keepdim=True)
        unbiased = (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias
        if _close(got, unbiased):
            return ("you used the unbiased variance (torch.var divides by C - 1 by default); "
                    "LayerNorm divides by C: var(..., unbiased=False)")
        var = x.var(-1, keepdim=True, unbiased=False)
        if _close(got, (x - mean) / (torch.sqrt(var) + eps) * weight + bias):
            return "eps goes inside the square root: sqrt(var + eps)"
        if _close(got, (x - mean) / torch.sqrt(var + eps)):
            return "normalised correctly, but forgot to scale by weight and shift by bias"
        if _close(got, (x - mean) / torch.sqrt(var + eps) * weight):
            return "forgot to add bias"
        if _close(got, x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias):
            return "that's RMSNorm (no mean subtracted): LayerNorm centres x first"
        whole = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * weight + bias
        if _close(got, whole):
            return "statistics over the whole tensor: LayerNorm averages each token's vector " \
                   "separately (dim=-1, keepdim=True)"
        return (f"values differ from torch's layer_norm by up to "
                f"{(got - expected).abs().max().item():.3g}")

    return run_check(
        "layer_norm", layer_norm, solutions.layer_norm, _layer_norm_cases(), diagnose,
        hint="mean and var over dim=-1 (keepdim=True, unbiased=False), then "
             "(x - mean) / torch.sqrt(var + eps) * weight + bias",
    )


def _block_cases() -> list[tuple[tuple, dict]]:
    gen = torch.Generator().manual_seed(1)
    w_attn = torch.randn(6, 6, generator=gen) * 0.5
    w_ffn = torch.randn(6, 6, generator=gen) * 0.5
    cases = []
    for shape in ((2, 3, 6), (1, 5, 6)):
        x = torch.randn(shape, generator=gen)
        # Distinct, easily told apart stand-ins for the four sublayers.
        cases.append(((x, lambda h: torch.tanh(h @ w_attn), lambda h: torch.relu(h @ w_ffn),
                       lambda h: 2.0 * h + 1.0, lambda h: 0.5 * h - 1.0), {}))
    return cases


def check_pre_norm_block(pre_norm_block: Callable) -> CheckResult:
    """``pre_norm_block(x, attention, ffn, norm1, norm2)``: the GPT-style residual wiring."""

    def diagnose(got, expected, args, kwargs):
        x, attn, ffn, n1, n2 = args
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return f"expected a tensor of shape {tuple(expected.shape)} (the input's)"
        if _close(got, expected):
            return None
        h = n1(x + attn(x))
        if _close(got, n2(h + ffn(h))):
            return "that's the post-norm (BERT) wiring norm(x + sublayer(x)); pre-norm is " \
                   "x + sublayer(norm(x))"
        h = attn(n1(x))
        if _close(got, ffn(n2(h))):
            return "no residual connections: add each sublayer's output back to x"
        h = x + attn(n1(x))
        if _close(got, h + ffn(n1(h))) or _close(got, h + ffn(n2(x))):
            return "the FFN must read norm2 of the *updated* stream x + attention(norm1(x))"
        if _close(got, x + attn(n1(x)) + ffn(n2(x))):
            return "the sublayers run in sequence: the FFN sees the stream after attention"
        return "values differ from x1 = x + attention(norm1(x)); x1 + ffn(norm2(x1))"

    return run_check(
        "pre_norm_block", pre_norm_block, solutions.pre_norm_block, _block_cases(), diagnose,
        hint="x = x + attention(norm1(x)); return x + ffn(norm2(x))",
    )


def check_block_parameters(block_parameters: Callable[[int, int], int]) -> CheckResult:
    """``block_parameters(d_model, d_ff)``: parameters of one BERT block, biases included."""

    def diagnose(got, expected, args, kwargs):
        c, f = args
        if isinstance(got, torch.Tensor):
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        no_bias = 4 * c * c + 2 * c * f
        if got == no_bias:
            return "you counted the weight matrices only: every Linear also has a bias vector"
        if got == expected - 4 * c:
            return "missing the two LayerNorms (each has a weight and a bias of size d_model)"
        if got == expected - 2 * c:
            return "each LayerNorm has two vectors (weight and bias): 2 · 2 · d_model"
        if got == expected - 4 * (c * c + c) + (c * c + c):
            return "attention has four projections (Q, K, V and the output W_O), not one"
        if got == expected - 4 * (c * c + c) + 3 * (c * c + c):
            return "don't forget the output projection W_O: attention has 4 Linear layers"
        return f"got {got} for d_model={c}, d_ff={f}, expected {expected}"

    cases = [((384, 1536), {}), ((64, 256), {}), ((768, 3072), {}), ((10, 7), {})]
    return run_check(
        "block_parameters", block_parameters, solutions.block_parameters, cases, diagnose,
        hint="attention 4·(C·C + C); FFN (C·F + F) + (F·C + C); norms 2·(2·C)",
    )

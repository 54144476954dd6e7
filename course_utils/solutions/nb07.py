"""Reference solutions for notebook 07 (the forward pass)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension: ``(x - mean) / sqrt(var + eps) * weight + bias``,
    with the biased variance (divide by C). x ``(..., C)``; weight, bias ``(C,)``."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def pre_norm_block(x: torch.Tensor, attention: Callable, ffn: Callable,
                   norm1: Callable, norm2: Callable) -> torch.Tensor:
    """A pre-norm (GPT) block: each sublayer reads a normalised copy of the stream and adds
    its output back: ``x + attention(norm1(x))``, then ``x + ffn(norm2(x))``."""
    x = x + attention(norm1(x))
    return x + ffn(norm2(x))


def block_parameters(d_model: int, d_ff: int) -> int:
    """Parameters of one BERT-style block (all Linear layers and LayerNorms have biases):
    attention 4·(C² + C), FFN C·F + F + F·C + C, two LayerNorms 2·2C."""
    attention = 4 * (d_model * d_model + d_model)
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model
    norms = 2 * 2 * d_model
    return attention + ffn + norms

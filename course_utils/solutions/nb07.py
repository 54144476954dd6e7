"""Reference solutions for notebook 07 (the forward pass); 07.1 builds on the ``attention`` piece."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.solutions.nb04 import SelfAttention  # the piece `attention` (notebook 04)


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


# --- Exercise 07.1: a post-norm encoder block and the stack, on MiniLM's weights ----------


class PostNormBlock(nn.Module):
    """A BERT (post-norm) encoder block: ``x = LN(x + attn(x))``, then ``LN(x + ffn(x))``.

    Submodules: ``attn`` (``SelfAttention``), ``attn_norm``, ``ffn_up`` (C -> F), ``ffn_down``
    (F -> C), ``ffn_norm``; the FFN uses the exact (erf) GELU. ``forward(x (B, T, C), mask)``
    with mask boolean, True = may attend, broadcastable to ``(B, H, T, T)``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads)
        self.attn_norm = nn.LayerNorm(d_model, eps=eps)
        self.ffn_up = nn.Linear(d_model, d_ff)
        self.ffn_down = nn.Linear(d_ff, d_model)
        self.ffn_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, mask))  # residual, then the norm
        return self.ffn_norm(x + self.ffn_down(F.gelu(self.ffn_up(x))))


class PostNormEncoder(nn.Module):
    """Embeddings (token + position [+ token type], then LayerNorm) and ``n_layers`` blocks.

    ``forward(input_ids (B, T), attention_mask (B, T) 1/0, token_type_ids (B, T) or None)``
    returns the last hidden state ``(B, T, C)``. ``type_vocab_size=0``: no token types
    (DistilBERT).
    """

    def __init__(self, vocab_size: int, max_positions: int, d_model: int, n_heads: int, d_ff: int,
                 n_layers: int, eps: float = 1e-12, type_vocab_size: int = 2) -> None:
        super().__init__()
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_positions, d_model)
        self.type_emb = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.emb_norm = nn.LayerNorm(d_model, eps=eps)
        self.blocks = nn.ModuleList(PostNormBlock(d_model, n_heads, d_ff, eps) for _ in range(n_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.token_emb(input_ids) + self.pos_emb(torch.arange(T))  # (B, T, C)
        if self.type_emb is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.type_emb(types)
        x = self.emb_norm(x)
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): padding keys blocked
        for block in self.blocks:
            x = block(x, mask)
        return x

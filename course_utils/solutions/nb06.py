"""Reference solutions for notebook 06 (masks)."""

from __future__ import annotations

import torch


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A tokenizer's ``(B, T)`` 1/0 mask -> boolean ``(B, 1, T, T)`` (True = may attend).

    Query i may attend to key j when j <= i (causal) and key j is a real token (padding).
    The size-1 axis broadcasts over heads of ``(B, H, T, T)`` scores.
    """
    seq_len = attention_mask.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()  # (T, T)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return causal & keys  # (B, 1, T, T)


def sliding_window(n: int, window: int) -> torch.Tensor:
    """Boolean ``(n, n)``: query i may attend to the ``window`` keys i - window + 1 .. i."""
    i = torch.arange(n).unsqueeze(1)  # (n, 1) queries
    j = torch.arange(n).unsqueeze(0)  # (1, n) keys
    return (j <= i) & (j > i - window)

"""Reference solution for notebook 14 (inside a real Llama)."""

from __future__ import annotations

import torch


def head_logit_contributions(z: torch.Tensor, w_o: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """Each head's direct contribution: head h's output through its block of ``o_proj``,
    projected onto ``readout``. z (H, d_head), w_o (C, H * d_head), readout (C,) -> (H,)."""
    n_heads, d_head = z.shape
    per_head = torch.einsum("chd,hd->hc", w_o.reshape(w_o.shape[0], n_heads, d_head), z)  # (H, C)
    return per_head @ readout

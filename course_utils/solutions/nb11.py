"""Reference solutions for notebook 11 (attention analysis)."""

from __future__ import annotations

import torch


def head_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean row entropy in nats of each head: ``(H, T, T) -> (H,)``; 0 · log 0 = 0."""
    plogp = torch.where(weights > 0, weights * weights.clamp_min(1e-30).log(), 0.0)
    return -plogp.sum(-1).mean(-1)


def zero_head(concat: torch.Tensor, head: int, num_heads: int) -> torch.Tensor:
    """A copy of ``concat (B, T, H * d_head)`` with head ``head``'s ``d_head`` columns zeroed."""
    d_head = concat.shape[-1] // num_heads
    out = concat.clone()
    out[..., head * d_head : (head + 1) * d_head] = 0
    return out


def head_importance(model, inputs: dict, out_proj: torch.nn.Module, head: int, num_heads: int) -> float:
    """Importance of one head: mean over the sentences of 1 - cosine between the sentence
    embedding with the head zeroed and the intact one.

    ``inputs``: the tokenised batch (``input_ids``, ``attention_mask``, …; padded), ``out_proj``:
    the layer's output projection W_O, whose input is the concatenated heads
    ``(B, T, H * d_head)``. A forward pre-hook on W_O zeroes head ``head``'s ``d_head`` columns
    of that input (before the projection mixes the heads); the hook is removed afterwards.
    Sentence embedding: mean of the last hidden states over real tokens, L2-normalised.
    """
    from course_utils.embeddings import l2_normalize, mean_pool

    def embed() -> torch.Tensor:  # (N, C) unit vectors
        hidden = model(**inputs).last_hidden_state  # (N, T, C)
        return l2_normalize(mean_pool(hidden, inputs["attention_mask"]))

    def zero_this_head(module, args):
        concat = args[0].clone()  # (B, T, H * d_head)
        d_head = concat.shape[-1] // num_heads
        concat[..., head * d_head : (head + 1) * d_head] = 0
        return (concat, *args[1:])

    with torch.no_grad():
        intact = embed()
        handle = out_proj.register_forward_pre_hook(zero_this_head)
        try:
            ablated = embed()
        finally:
            handle.remove()  # the model is intact again, whatever happened
    return 1.0 - (intact * ablated).sum(-1).mean().item()

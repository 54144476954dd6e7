"""Reference solutions for notebook 08."""

from __future__ import annotations

import torch

# The reference for the kv_cache_bytes exercise is the course's one implementation.
from course_utils.kv_cache import kv_cache_bytes  # noqa: F401


def llama_param_count(config) -> int:
    """Parameters of a ``LlamaForCausalLM`` from its config alone (no weights).

    embeddings V·d; per layer q (d·H·hd), k and v (d·Hkv·hd each), o (H·hd·d), gate/up/down
    (3·d·ff), two RMSNorm weights (2·d); final norm d; LM head V·d unless tied.
    """
    d, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    attention = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    per_layer = attention + 3 * d * ff + 2 * d
    total = vocab * d + config.num_hidden_layers * per_layer + d
    if not config.tie_word_embeddings:
        total += vocab * d
    return total


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, C·p·p)`` with reshape/permute (no unfold).

    Patches in row-major order (left to right, then top to bottom); inside each row of the
    result, channel 0's p×p pixels first, then channel 1's, … (the Conv2d weight order).
    """
    B, C, H, W = images.shape
    p = patch_size
    grid = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, rows, p, cols, p)
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return grid.reshape(B, (H // p) * (W // p), C * p * p)

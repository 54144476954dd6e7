"""Reference solutions for notebook 08."""

from __future__ import annotations

import torch


def kv_cache_bytes(config, seq_len: int, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes a KV cache holds for ``seq_len`` positions of a decoder with ``config``.

    Per layer and position, the cache keeps one key and one value vector per *KV* head
    (grouped-query attention shares them between query heads):
    2 × layers × batch × kv_heads × seq_len × head_dim × bytes.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * batch_size * kv_heads * seq_len * head_dim * bytes_per_value


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

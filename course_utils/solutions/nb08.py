"""Reference solutions for notebook 08.

The ``llama`` piece (exercise 08.2): ``RMSNorm``, ``SwiGLU``, ``LlamaBlock`` and
``generate_greedy``, with the names and signatures of the piece contract (HF Llama's
submodule names, so ``load_state_dict(hf_decoder_layer.state_dict())`` works). The block
uses the ``gqa`` piece's ``GroupedQueryAttention`` (notebook 05), which calls the ``rope``
piece's ``apply_rope`` (notebook 03).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The reference for the kv_cache_bytes exercise is the course's one implementation.
from course_utils.kv_cache import kv_cache_bytes  # noqa: F401
from course_utils.solutions.nb05 import GroupedQueryAttention  # the gqa piece (notebook 05)


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


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last dimension. x ``(..., C)`` -> ``(..., C)``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(dim=-1, keepdim=True)  # (..., 1): no mean subtracted
        return x * torch.rsqrt(mean_square + self.eps) * self.weight


class SwiGLU(nn.Module):
    """Llama's MLP: ``down(silu(gate(x)) * up(x))``, no biases. x ``(B, T, C)`` -> ``(B, T, C)``."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, F) -> (B, T, C)


class LlamaBlock(nn.Module):
    """A pre-norm Llama decoder block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    ``forward(x (B, T, C), positions (T,), mask (T, T_total) or None, past_kv)`` returns the
    new stream ``(B, T, C)`` and the layer's KV cache ``(k, v)``, each ``(B, KV, T_total, hd)``.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, d_ff: int,
                 eps: float = 1e-5, rope_base: float = 10000.0) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d_model, eps)
        self.self_attn = GroupedQueryAttention(d_model, n_heads, n_kv_heads, rope_base=rope_base, bias=False)
        self.post_attention_layernorm = RMSNorm(d_model, eps)
        self.mlp = SwiGLU(d_model, d_ff)

    def forward(self, x, positions, mask=None, past_kv=None):
        attended, kv = self.self_attn(self.input_layernorm(x), positions, mask, past_kv)
        x = x + attended  # residual around attention
        x = x + self.mlp(self.post_attention_layernorm(x))  # residual around the MLP
        return x, kv


def generate_greedy(step, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None = None) -> list[int]:
    """Greedy decoding with a KV cache: prefill the prompt once, then one token per step.

    ``step(ids (1, T), positions (T,), past) -> (logits (1, T, V), past)``. Returns only the
    new ids (stops right after ``eos_id`` when given).
    """
    n = len(prompt_ids)
    logits, past = step(torch.tensor([prompt_ids]), torch.arange(n), None)  # prefill
    new: list[int] = []
    for i in range(max_new_tokens):
        next_id = int(logits[0, -1].argmax())
        new.append(next_id)
        if (eos_id is not None and next_id == eos_id) or i == max_new_tokens - 1:
            break
        logits, past = step(torch.tensor([[next_id]]), torch.tensor([n + i]), past)  # one token
    return new


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

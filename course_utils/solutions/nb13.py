"""Reference solution for notebook 13 (the capstone): ``MySmolLM2``, the ``model`` piece.

A full SmolLM2 (``LlamaForCausalLM``) forward pass assembled from the earlier pieces: the
``llama`` piece's ``LlamaBlock`` and ``RMSNorm`` (notebook 08, which use the ``gqa`` piece of
05 and the ``rope`` piece of 03) and the ``masks`` piece's ``causal_mask`` (06). Submodule
names follow Hugging Face's (``embed_tokens``, ``layers.i.…``, ``norm``), so SmolLM2's
checkpoint loads by stripping the ``model.`` prefix; the head is tied to the embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from course_utils.solutions.nb06 import causal_mask
from course_utils.solutions.nb08 import LlamaBlock, RMSNorm


class MySmolLM2(nn.Module):
    """SmolLM2 from the course's pieces. ``forward(ids (1, T), positions (T,), past=None)``
    returns logits ``(1, T, V)`` and the new cache: one ``(k, v)`` per layer, each
    ``(1, KV, T_total, head_dim)``."""

    def __init__(self, config) -> None:
        super().__init__()
        d_model = config.hidden_size
        rope_base = config.rope_parameters["rope_theta"]
        self.embed_tokens = nn.Embedding(config.vocab_size, d_model)
        self.layers = nn.ModuleList(
            LlamaBlock(d_model, config.num_attention_heads, config.num_key_value_heads,
                       config.intermediate_size, config.rms_norm_eps, rope_base)
            for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(d_model, config.rms_norm_eps)
        self.lm_head = nn.Linear(d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied: one matrix in and out

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, past: list | None = None):
        T = ids.shape[1]
        cached = 0 if past is None else past[0][0].shape[2]  # tokens already in the cache
        # (T, cached + T): query i sits at position cached + i and sees keys 0 … cached + i
        mask = causal_mask(cached + T)[cached:]
        x = self.embed_tokens(ids)  # (1, T, C)
        new_past = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, positions, mask, None if past is None else past[i])
            new_past.append(kv)
        return self.lm_head(self.norm(x)), new_past  # (1, T, V)

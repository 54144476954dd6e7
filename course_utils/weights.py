"""Used in notebooks 05, 06: copy real attention weights into the scratch ``MultiHeadAttention``.

Three sources, one target:

- ``torch.nn.MultiheadAttention`` keeps Q, K, V stacked in one ``in_proj_weight (3d, d)``;
- a BERT layer (MiniLM) keeps them in ``attention.self.{query,key,value}`` and the output
  projection in ``attention.output.dense`` (its LayerNorm and residual come after: not
  part of attention);
- a Llama attention module (SmolLM2) has ``q_proj/k_proj/v_proj/o_proj``, fewer K/V heads
  than query heads (grouped-query attention) and RoPE, no biases.

Each function returns a new ``MultiHeadAttention`` in eval mode whose forward pass
reproduces the source's attention (tests/test_multihead.py proves it).
"""

from __future__ import annotations

import torch
from torch import nn

from course_utils.attention import MultiHeadAttention

# The KV-cache byte count lives in kv_cache.py; re-exported for the old import path.
from course_utils.kv_cache import kv_cache_bytes  # noqa: F401


def _copy_linear(source: nn.Linear, target: nn.Linear) -> None:
    if source.weight.shape != target.weight.shape:
        raise ValueError(
            f"weight shapes differ: source {tuple(source.weight.shape)}, "
            f"target {tuple(target.weight.shape)}"
        )
    if (source.bias is None) != (target.bias is None):
        raise ValueError(
            f"bias mismatch: source has {'no ' if source.bias is None else ''}bias, target has "
            f"{'no ' if target.bias is None else ''}bias"
        )
    with torch.no_grad():
        target.weight.copy_(source.weight)
        if source.bias is not None:
            target.bias.copy_(source.bias)


def mha_from_torch(module: nn.MultiheadAttention) -> MultiHeadAttention:
    """A scratch copy of ``nn.MultiheadAttention`` (same embed dim for q, k and v)."""
    if not isinstance(module, nn.MultiheadAttention):
        raise ValueError(f"expected torch.nn.MultiheadAttention, got {type(module).__name__}")
    if module.in_proj_weight is None:
        raise ValueError("only nn.MultiheadAttention with kdim == vdim == embed_dim is supported")
    d = module.embed_dim
    has_bias = module.in_proj_bias is not None
    mha = MultiHeadAttention(d, module.num_heads, bias=has_bias)
    with torch.no_grad():
        # in_proj_weight stacks [W_q; W_k; W_v], each (d, d).
        for index, proj in enumerate((mha.q_proj, mha.k_proj, mha.v_proj)):
            proj.weight.copy_(module.in_proj_weight[index * d : (index + 1) * d])
            if has_bias:
                proj.bias.copy_(module.in_proj_bias[index * d : (index + 1) * d])
    _copy_linear(module.out_proj, mha.out_proj)
    return mha.eval()


def mha_from_bert(layer: nn.Module) -> MultiHeadAttention:
    """A scratch copy of a BERT layer's attention sublayer: Q/K/V projections + output dense.

    ``layer`` is a ``BertLayer`` (``model.encoder.layer[i]``) or its ``.attention``. The
    copy's output equals ``attention.output.dense(attention.self(x)[0])``: the sublayer
    before its dropout, residual and LayerNorm.
    """
    attention = getattr(layer, "attention", layer)
    if not (hasattr(attention, "self") and hasattr(attention, "output")):
        raise ValueError(
            f"expected a BertLayer or BertAttention, got {type(layer).__name__}"
        )
    self_attention = attention.self
    d_model = self_attention.query.in_features
    mha = MultiHeadAttention(d_model, self_attention.num_attention_heads, bias=True)
    for source, target in (
        (self_attention.query, mha.q_proj),
        (self_attention.key, mha.k_proj),
        (self_attention.value, mha.v_proj),
        (attention.output.dense, mha.out_proj),
    ):
        _copy_linear(source, target)
    return mha.eval()


def mha_from_llama(attention: nn.Module, config) -> MultiHeadAttention:
    """A scratch copy of a Llama attention module (``model.model.layers[i].self_attn``).

    Grouped-query attention (``config.num_key_value_heads`` K/V heads) and RoPE with the
    config's base (``rope_parameters["rope_theta"]`` in transformers 5, ``rope_theta``
    before). Its input is the *normalised* hidden state (after ``input_layernorm``).
    """
    rope = getattr(config, "rope_parameters", None) or {}
    rope_base = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if rope_base is None:
        raise ValueError("config has neither rope_parameters['rope_theta'] nor rope_theta")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    mha = MultiHeadAttention(
        config.hidden_size,
        config.num_attention_heads,
        bias=bool(getattr(config, "attention_bias", False)),
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        rope_base=float(rope_base),
    )
    for source, target in (
        (attention.q_proj, mha.q_proj),
        (attention.k_proj, mha.k_proj),
        (attention.v_proj, mha.v_proj),
        (attention.o_proj, mha.out_proj),
    ):
        _copy_linear(source, target)
    return mha.eval()

"""Used in notebooks 03, 04, 05, 06: load real weights into the course's own modules.

The one home for "copy a pretrained model's weights into our from-scratch modules", so a
notebook can prove its module equals the real one. Targets are the course's
``course_utils.attention.MultiHeadAttention`` and ``course_utils.blocks`` (``EncoderBlock``,
``Encoder``); sources are any family ``course_utils.families`` reads (BERT, DistilBERT,
RoBERTa, GPT-2, Llama, Qwen2, Mistral) plus ``torch.nn.MultiheadAttention`` /
``torch.nn.TransformerEncoderLayer``::

    mha_from_layer(model, i)             -> MultiHeadAttention  (= layer i's attention sublayer)
    block_from_layer(model, i)           -> EncoderBlock        (= layer i, norms and FFN too)
    encoder_config(model)                -> TransformerConfig   (the whole model's sizes)
    load_encoder_weights(encoder, model) -> Encoder             (every weight, in place)
    encoder_from_model(model)            -> Encoder             (the two above)
    mha_from_torch(nn.MultiheadAttention), copy_torch_encoder_layer(block, torch layer)

Older names stay as thin wrappers: ``mha_from_bert(layer)``, ``mha_from_llama(attn, config)``,
``load_bert_weights(encoder, bert)``, ``config_from_torch_layer(layer)``.

Each copy is a new module in eval mode (or the given one, filled in place) whose forward
pass reproduces the source; ``tests/test_families.py``, ``tests/test_multihead.py`` and
``tests/test_blocks.py`` prove it. Shapes are checked one tensor at a time, with the name
of the tensor in the error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import families
from course_utils.attention import MultiHeadAttention
from course_utils.families import Projection

# The KV-cache byte count lives in kv_cache.py; re-exported for the old import path.
from course_utils.kv_cache import kv_cache_bytes  # noqa: F401


# --------------------------------------------------------------------------- primitives
def _copy(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    """``target.copy_(source)`` after checking the shapes (the error names the tensor)."""
    if tuple(target.shape) != tuple(source.shape):
        raise ValueError(
            f"{name}: shape mismatch, scratch model has {tuple(target.shape)}, "
            f"source has {tuple(source.shape)}"
        )
    with torch.no_grad():
        target.copy_(source)


def _copy_linear(target: nn.Linear, source: nn.Linear, name: str) -> None:
    """Copy an ``nn.Linear`` (weight and bias; both must have a bias or neither)."""
    _copy(target.weight, source.weight, f"{name}.weight")
    if (target.bias is None) != (source.bias is None):
        raise ValueError(
            f"{name}: bias mismatch, scratch has {'no ' if target.bias is None else ''}bias, "
            f"source has {'no ' if source.bias is None else ''}bias"
        )
    if target.bias is not None:
        _copy(target.bias, source.bias, f"{name}.bias")


def _copy_projection(target: nn.Linear, source: Projection, name: str,
                     zero_missing_bias: bool = False) -> None:
    """Copy a ``families.Projection`` (weight ``(out, in)``, bias) into an ``nn.Linear``.

    ``zero_missing_bias``: a source without bias sets the target's bias to 0 (the same map),
    for modules whose bias flag is shared by projections that differ (Qwen2: q/k/v biased,
    o not).
    """
    _copy(target.weight, source.weight, f"{name}.weight")
    if source.bias is None:
        if target.bias is not None:
            if not zero_missing_bias:
                raise ValueError(f"{name}: bias mismatch, scratch has bias, source has none")
            with torch.no_grad():
                target.bias.zero_()
        return
    if target.bias is None:
        raise ValueError(f"{name}: bias mismatch, scratch has no bias, source has bias")
    _copy(target.bias, source.bias, f"{name}.bias")


def _copy_norm(target: nn.Module, source: nn.Module, name: str) -> None:
    """Copy a LayerNorm / RMSNorm (any implementation with ``weight``, optional ``bias``)."""
    from course_utils.blocks import LayerNorm, RMSNorm

    if isinstance(target, nn.Identity):
        raise ValueError(f"{name}: the scratch model has no norm here (norm='none')")
    source_eps = getattr(source, "eps", getattr(source, "variance_epsilon", None))
    if isinstance(target, (LayerNorm, RMSNorm)) and source_eps is not None \
            and target.eps != source_eps:
        raise ValueError(f"{name}: eps differs (scratch {target.eps}, source {source_eps})")
    _copy(target.weight, source.weight, f"{name}.weight")
    target_bias, source_bias = getattr(target, "bias", None), getattr(source, "bias", None)
    if (target_bias is None) != (source_bias is None):
        raise ValueError(f"{name}: one of the two norms has a bias and the other has not")
    if target_bias is not None:
        _copy(target_bias, source_bias, f"{name}.bias")


# --------------------------------------------------------------------------- any family
_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu", "swiglu": "swiglu"}


def _check_copyable(view: families.ModelView) -> None:
    if view.positions == "relative":
        raise ValueError(
            f"{view.model_class} ({view.family}) adds a relative position bias and does not "
            "scale q·k by 1/√d, which MultiHeadAttention does not model: use "
            "families.attention_weights with families.relative_position_bias instead"
        )
    if view.positions == "rope" and view.rope_type != "default":
        raise ValueError(
            f"{view.model_class} uses RoPE scaling {view.rope_type!r}; the course's RoPE "
            "(course_utils.positional.apply_rope) is the unscaled one (rope_type 'default')"
        )


def mha_from_layer(model: nn.Module, layer: int) -> MultiHeadAttention:
    """A ``MultiHeadAttention`` holding layer ``layer``'s attention weights (any family).

    Its output equals the model's attention sublayer (q/k/v projections, RoPE for Llama-like
    models, grouped-query sharing, softmax, output projection) before the residual add and
    dropout. Input: the layer's input for post-norm models (BERT family), the *normalised*
    input (``layer_norms(model, i)[0](x)``) for pre-norm ones. The mask is
    ``families.attention_mask_for(model, i, T)`` (causal, sliding window).
    """
    view = families.describe(model)
    _check_copyable(view)
    w = families.attention_weights(model, layer)
    biased = view.qkv_bias or view.out_bias
    mha = MultiHeadAttention(
        view.d_model, view.n_heads, bias=biased, num_kv_heads=view.n_kv_heads,
        head_dim=view.head_dim, rope_base=view.rope_base if view.positions == "rope" else None,
    )
    for source, target, name in ((w.q, mha.q_proj, "q_proj"), (w.k, mha.k_proj, "k_proj"),
                                 (w.v, mha.v_proj, "v_proj"), (w.o, mha.out_proj, "out_proj")):
        _copy_projection(target, source, f"layers.{layer}.attn.{name}", zero_missing_bias=True)
    return mha.eval()


def _block_config(view: families.ModelView, num_layers: int = 1, **overrides):
    from course_utils.blocks import TransformerConfig

    if view.ffn not in _ACTIVATION:
        raise ValueError(f"{view.model_class}: FFN activation {view.ffn!r} has no scratch "
                         f"equivalent; expected one of {sorted(_ACTIVATION)}")
    fields = dict(
        vocab_size=view.vocab_size, max_seq_len=view.max_positions or 2048,
        d_model=view.d_model, num_heads=view.n_heads, num_layers=num_layers, d_ff=view.d_ff,
        num_kv_heads=view.n_kv_heads if view.is_gqa else None,
        norm_first=view.norm_placement == "pre", norm=view.norm,
        activation=_ACTIVATION[view.ffn], eps=view.norm_eps, bias=view.ffn_bias, dropout=0.0,
        causal=view.causal, positional="rope" if view.positions == "rope" else "learned",
        rope_base=view.rope_base or 10000.0, type_vocab_size=view.type_vocab_size,
        embedding_norm=view.embedding_norm, final_norm=view.has_final_norm,
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def _fill_block(block: nn.Module, model: nn.Module, layer: int, prefix: str) -> None:
    """Copy layer ``layer`` of ``model`` into a scratch ``EncoderBlock`` (in place)."""
    block.attn = mha_from_layer(model, layer)  # its own bias flags and head_dim
    attn_norm, ffn_norm = families.layer_norms(model, layer)
    _copy_norm(block.attn_norm, attn_norm, f"{prefix}.attn_norm")
    _copy_norm(block.ffn_norm, ffn_norm, f"{prefix}.ffn_norm")
    ffn = families.ffn_weights(model, layer)
    _copy_projection(block.ffn.up_proj, ffn.up, f"{prefix}.ffn.up_proj")
    _copy_projection(block.ffn.down_proj, ffn.down, f"{prefix}.ffn.down_proj")
    if (block.ffn.gate_proj is None) != (ffn.gate is None):
        raise ValueError(f"{prefix}.ffn: gated FFN mismatch between scratch and source")
    if ffn.gate is not None:
        _copy_projection(block.ffn.gate_proj, ffn.gate, f"{prefix}.ffn.gate_proj")


def block_from_layer(model: nn.Module, layer: int):
    """A scratch ``blocks.EncoderBlock`` equal to layer ``layer`` (attention, norms, FFN).

    ``block(hidden_states[i], mask=families.attention_mask_for(model, i, T))`` equals the
    model's ``hidden_states[i + 1]`` (the last layer's output before the final norm).
    The block's own causal flag is off: the mask you pass is the whole mask.
    """
    from course_utils.blocks import EncoderBlock

    view = families.describe(model)
    _check_copyable(view)
    block = EncoderBlock(_block_config(view, causal=False))
    _fill_block(block, model, layer, f"layers.{layer}")
    return block.eval()


def encoder_config(model: nn.Module):
    """The ``blocks.TransformerConfig`` of a whole model (BERT, DistilBERT, RoBERTa; also
    GPT-2 and Llama/Qwen2 as causal pre-norm stacks). Sliding-window models are refused
    (the scratch ``Encoder`` has no sliding-window layers)."""
    view = families.describe(model)
    _check_copyable(view)
    if view.sliding_window:
        raise ValueError(f"{view.model_class} uses a sliding window ({view.sliding_window}); "
                         "the scratch Encoder attends to every earlier token")
    return _block_config(view, num_layers=view.n_layers)


def load_encoder_weights(encoder, model: nn.Module):
    """Copy every weight of ``model`` into a scratch ``blocks.Encoder`` (in place).

    Build the encoder with ``Encoder(encoder_config(model))``. Embeddings: token table ->
    ``token_emb``, position table (RoBERTa's two reserved rows dropped, so scratch position
    0 is RoBERTa's position 2: equal outputs without left padding) -> ``pos_emb``, token
    types -> ``type_emb``, the embedding LayerNorm -> ``emb_norm``; each layer as
    ``block_from_layer``; the final norm (GPT-2, Llama) -> ``final_norm``. Task heads and
    BERT's pooler are not copied.
    """
    view = families.describe(model)
    _check_copyable(view)
    config = encoder.config
    expected = _block_config(view, num_layers=view.n_layers,
                             max_seq_len=config.max_seq_len)
    for field in ("d_model", "num_heads", "num_layers", "d_ff", "norm_first", "norm",
                  "activation", "positional", "type_vocab_size", "embedding_norm",
                  "final_norm"):
        if getattr(config, field) != getattr(expected, field):
            raise ValueError(
                f"the scratch encoder's {field} is {getattr(config, field)!r}, the "
                f"{view.model_class} needs {getattr(expected, field)!r}: build it with "
                "Encoder(encoder_config(model))"
            )
    base = families._base(model)
    _copy(encoder.token_emb.weight, families.token_embedding_matrix(model), "token_emb.weight")
    table = families.position_embedding_matrix(model)
    if encoder.pos_emb is not None:
        if table is None or table.shape[0] < config.max_seq_len:
            raise ValueError(f"the model has no position table of {config.max_seq_len} rows")
        _copy(encoder.pos_emb.weight, table[: config.max_seq_len], "pos_emb.weight")
    if encoder.type_emb is not None:
        _copy(encoder.type_emb.weight, base.embeddings.token_type_embeddings.weight,
              "type_emb.weight")
    if encoder.emb_norm is not None:
        _copy_norm(encoder.emb_norm, base.embeddings.LayerNorm, "emb_norm")
    for i, block in enumerate(encoder.blocks):
        _fill_block(block, model, i, f"blocks.{i}")
    if encoder.final_norm is not None:
        _copy_norm(encoder.final_norm, families.final_norm(model), "final_norm")
    return encoder


def encoder_from_model(model: nn.Module):
    """A scratch ``blocks.Encoder`` holding a copy of ``model`` (see ``load_encoder_weights``)."""
    from course_utils.blocks import Encoder

    return load_encoder_weights(Encoder(encoder_config(model)), model).eval()


# --------------------------------------------------------------------------- torch modules
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
    _copy_linear(mha.out_proj, module.out_proj, "out_proj")
    return mha.eval()


def config_from_torch_layer(layer: nn.TransformerEncoderLayer):
    """The single-block ``TransformerConfig`` matching a ``torch.nn.TransformerEncoderLayer``."""
    from course_utils.blocks import TransformerConfig

    attn = layer.self_attn
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        activation = "relu"
    elif act is F.gelu or isinstance(act, nn.GELU):
        activation = "gelu"
    else:
        raise ValueError(f"unsupported activation {act!r}: expected relu or gelu")
    return TransformerConfig(
        d_model=attn.embed_dim,
        num_heads=attn.num_heads,
        num_layers=1,
        d_ff=layer.linear1.out_features,
        norm_first=layer.norm_first,
        norm="layernorm",
        activation=activation,
        eps=layer.norm1.eps,
        bias=layer.linear1.bias is not None,
    )


def copy_torch_encoder_layer(block, layer: nn.TransformerEncoderLayer):
    """Copy a ``torch.nn.TransformerEncoderLayer`` into a scratch ``EncoderBlock`` (in place).

    torch packs Q, K and V into one ``in_proj_weight`` ``(3C, C)``: rows ``[0, C)`` are W_Q,
    ``[C, 2C)`` W_K, ``[2C, 3C)`` W_V. norm1 belongs to attention, norm2 to the FFN, in both
    norm orders. Needs ``batch_first=True`` semantics on the torch side when you compare.
    """
    if block.config.norm_first != layer.norm_first:
        raise ValueError(
            f"norm order differs: block norm_first={block.config.norm_first}, "
            f"torch layer norm_first={layer.norm_first}"
        )
    attn = layer.self_attn
    d = attn.embed_dim
    w_q, w_k, w_v = attn.in_proj_weight.split(d, dim=0)
    _copy(block.attn.q_proj.weight, w_q, "attn.q_proj.weight")
    _copy(block.attn.k_proj.weight, w_k, "attn.k_proj.weight")
    _copy(block.attn.v_proj.weight, w_v, "attn.v_proj.weight")
    if attn.in_proj_bias is not None:
        b_q, b_k, b_v = attn.in_proj_bias.split(d)
        _copy(block.attn.q_proj.bias, b_q, "attn.q_proj.bias")
        _copy(block.attn.k_proj.bias, b_k, "attn.k_proj.bias")
        _copy(block.attn.v_proj.bias, b_v, "attn.v_proj.bias")
    _copy_linear(block.attn.out_proj, attn.out_proj, "attn.out_proj")
    _copy_linear(block.ffn.up_proj, layer.linear1, "ffn.up_proj")
    _copy_linear(block.ffn.down_proj, layer.linear2, "ffn.down_proj")
    _copy_norm(block.attn_norm, layer.norm1, "attn_norm")
    _copy_norm(block.ffn_norm, layer.norm2, "ffn_norm")
    return block


# --------------------------------------------------------------------------- old names
def mha_from_bert(layer: nn.Module) -> MultiHeadAttention:
    """A scratch copy of a BERT layer's attention sublayer: Q/K/V projections + output dense.

    ``layer`` is a ``BertLayer`` (``model.encoder.layer[i]``) or its ``.attention``. The
    copy's output equals ``attention.output.dense(attention.self(x)[0])``: the sublayer
    before its dropout, residual and LayerNorm. (For any family: ``mha_from_layer``.)
    """
    attention = getattr(layer, "attention", layer)
    if not (hasattr(attention, "self") and hasattr(attention, "output")):
        raise ValueError(
            f"expected a BertLayer or BertAttention, got {type(layer).__name__}"
        )
    self_attention = attention.self
    d_model = self_attention.query.in_features
    mha = MultiHeadAttention(d_model, self_attention.num_attention_heads, bias=True)
    for source, target, name in (
        (self_attention.query, mha.q_proj, "q_proj"),
        (self_attention.key, mha.k_proj, "k_proj"),
        (self_attention.value, mha.v_proj, "v_proj"),
        (attention.output.dense, mha.out_proj, "out_proj"),
    ):
        _copy_linear(target, source, name)
    return mha.eval()


def mha_from_llama(attention: nn.Module, config) -> MultiHeadAttention:
    """A scratch copy of a Llama attention module (``model.model.layers[i].self_attn``).

    Grouped-query attention (``config.num_key_value_heads`` K/V heads) and RoPE with the
    config's base. Its input is the *normalised* hidden state (after ``input_layernorm``).
    Qwen2's q/k/v biases are copied (its missing output bias becomes zeros). For a whole
    model of any family: ``mha_from_layer(model, i)``.
    """
    rope_base, rope_type = families._rope(config)
    if rope_type != "default":
        raise ValueError(f"RoPE scaling {rope_type!r} is not the course's unscaled RoPE")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    q_bias = attention.q_proj.bias is not None
    mha = MultiHeadAttention(
        config.hidden_size,
        config.num_attention_heads,
        bias=q_bias or attention.o_proj.bias is not None,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        rope_base=rope_base,
    )
    for source, target, name in (
        (attention.q_proj, mha.q_proj, "q_proj"),
        (attention.k_proj, mha.k_proj, "k_proj"),
        (attention.v_proj, mha.v_proj, "v_proj"),
        (attention.o_proj, mha.out_proj, "out_proj"),
    ):
        _copy_projection(target, families._linear(source), name, zero_missing_bias=True)
    return mha.eval()


def load_bert_weights(encoder, bert):
    """Copy a transformers ``BertModel``'s weights into a scratch ``Encoder`` (in place).

    The encoder's config must match (``TransformerConfig.from_bert`` or ``encoder_config``).
    The name map, BERT -> scratch::

        embeddings.word_embeddings / position_embeddings / token_type_embeddings / LayerNorm
            -> token_emb / pos_emb / type_emb / emb_norm
        encoder.layer[i].attention.self.query / key / value  -> blocks[i].attn.q_proj / k_proj / v_proj
        encoder.layer[i].attention.output.dense / LayerNorm  -> blocks[i].attn.out_proj / attn_norm
        encoder.layer[i].intermediate.dense                  -> blocks[i].ffn.up_proj
        encoder.layer[i].output.dense / LayerNorm            -> blocks[i].ffn.down_proj / ffn_norm

    BERT's pooler is not copied. DistilBERT and RoBERTa work too (``load_encoder_weights``).
    """
    config = encoder.config
    if config.norm_first or config.positional != "learned" or encoder.emb_norm is None:
        raise ValueError(
            "a BERT copy needs a post-norm encoder with learned positions and an "
            "embedding norm: build it with Encoder(TransformerConfig.from_bert(bert.config))"
        )
    n_layers = len(families.layers(bert))
    if n_layers != len(encoder.blocks):
        raise ValueError(f"BERT has {n_layers} layers, the scratch encoder {len(encoder.blocks)}")
    return load_encoder_weights(encoder, bert)


__all__ = [
    "mha_from_layer",
    "block_from_layer",
    "encoder_config",
    "load_encoder_weights",
    "encoder_from_model",
    "mha_from_torch",
    "mha_from_bert",
    "mha_from_llama",
    "load_bert_weights",
    "config_from_torch_layer",
    "copy_torch_encoder_layer",
    "kv_cache_bytes",
]

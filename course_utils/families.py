"""Used in notebooks 02, 03, 04, 05, 06, 07, 11: one view of a pretrained model, whatever its family.

The notebooks teach with MiniLM (a BERT) and SmolLM2 (a Llama), but every idea applies to the
models learners reach for: this module reads the same pieces out of each supported family,
so a notebook can say "layer 2's query projection" without knowing where the family keeps it.

Supported families (``config.model_type``)::

    encoders          bert, distilbert, roberta
    decoders          gpt2, llama, qwen2 (q/k/v biases), mistral (sliding window)
    encoder-decoder   t5 (the encoder stack by default; ``stack="decoder"`` for the other)

Anything else raises ``UnsupportedModelError`` (a ``ValueError``) naming the model's class
and these families — in the cell that loads the model (``course_utils.models`` calls
``describe`` right after loading), never as an ``AttributeError`` later.

The API::

    describe(model, tokenizer=None) -> ModelView          sizes, norms, positions, FFN, ...
    position_offset(config) -> int                         reserved rows of RoBERTa's position table
    layers(model) -> list[nn.Module]                       the transformer layers, in order
    attention_weights(model, i) -> AttentionWeights        q, k, v, o: (weight (out, in), bias)
    ffn_weights(model, i) -> FFNWeights                    up, down (, gate): same convention
    output_projection(model, i) -> nn.Module               W_O, the module reading the heads
    layer_norms(model, i) -> (attn_norm, ffn_norm)         the layer's two norm modules
    final_norm(model) -> nn.Module | None                  the norm after the last layer
    encoder_modules(model, i) -> EncoderModules            an encoder layer's modules, by role
    embed(model, input_ids, token_type_ids=None)           (B, T, C): the input to layer 0
    token_embedding_matrix(model) -> (V, C)
    position_embedding_matrix(model) -> (P, C) | None      rows in position order (offset removed)
    attention_mask_for(model, i, seq_len, attention_mask)  the boolean mask layer i applies
    relative_position_bias(model, q_len, k_len)            T5's additive bias (1, H, Tq, Tk)
    model_inputs(tokenizer, model, texts, **kw)            tokenizer output the model accepts
    find_word(tokenizer, text, word, occurrence=1) -> int  token index by character offsets
    word_token_ids(tokenizer, word) -> list[int]           a word's ids inside a sentence

Copying these weights into the course's own modules (``mha_from_layer``, ``block_from_layer``,
``load_encoder_weights``) lives in ``course_utils.weights``; the three names are importable
from here too. ``tests/test_families.py`` proves, for a random-weight model of every family,
that attention maps and per-layer outputs recomputed from this view equal the model's own
(``output_attentions`` / ``output_hidden_states``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

ENCODER_FAMILIES = ("bert", "distilbert", "roberta")
DECODER_FAMILIES = ("gpt2", "llama", "qwen2", "mistral")
ENCODER_DECODER_FAMILIES = ("t5",)
SUPPORTED_FAMILIES = ENCODER_FAMILIES + DECODER_FAMILIES + ENCODER_DECODER_FAMILIES
_LLAMA_LIKE = ("llama", "qwen2", "mistral")


class UnsupportedModelError(ValueError):
    """The model's family is not one the course reads (the message names class and families)."""


def _unsupported(model: object, why: str = "") -> UnsupportedModelError:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    kind = f" (model_type {model_type!r})" if model_type else ""
    reason = f": {why}" if why else ""
    return UnsupportedModelError(
        f"{type(model).__name__}{kind} is not supported by the course's model view{reason}. "
        f"Supported families: encoders {', '.join(ENCODER_FAMILIES)}; decoders "
        f"{', '.join(DECODER_FAMILIES)}; encoder-decoder {', '.join(ENCODER_DECODER_FAMILIES)}."
    )


class Projection(NamedTuple):
    """A linear map as plain tensors: ``y = x @ weight.T + bias``; weight ``(out, in)``."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class AttentionWeights(NamedTuple):
    """One layer's attention projections; q ``(H·d, C)``, k and v ``(KV·d, C)``, o ``(C, H·d)``."""

    q: Projection
    k: Projection
    v: Projection
    o: Projection


class FFNWeights(NamedTuple):
    """One layer's feed-forward projections; up/gate ``(F, C)``, down ``(C, F)``; gate None
    unless the FFN is gated (SwiGLU, T5's gated-gelu)."""

    up: Projection
    down: Projection
    gate: Projection | None


@dataclass(frozen=True)
class ModelView:
    """What a notebook needs to know about a model's architecture, family-independently.

    - ``kind``: ``"encoder"``, ``"decoder"`` or ``"encoder-decoder"``.
    - ``norm``: ``"layernorm"`` or ``"rmsnorm"``; ``norm_placement``: ``"post"``
      (x = norm(x + f(x)): BERT family) or ``"pre"`` (x = x + f(norm(x)): GPT-2, Llama, T5).
    - ``positions``: ``"learned"`` (a table added to the token embeddings; ``position_offset``
      rows skipped, 2 for RoBERTa), ``"sinusoidal"`` (DistilBERT's option, still a table),
      ``"rope"`` (q and k rotated; ``rope_base``, ``rope_layout`` ``"rotate_half"``,
      ``rope_type`` ``"default"`` unless scaled) or ``"relative"`` (T5's bucketed bias).
    - ``ffn``: ``"gelu"`` (exact), ``"gelu_new"`` (tanh approximation), ``"relu"``,
      ``"swiglu"`` (down(silu(gate(x)) * up(x))) or ``"gated-gelu"`` (T5 v1.1).
    - ``attention_scale``: what q·k is multiplied by (1/√head_dim; 1.0 for T5).
    - ``sliding_window``: keys a query may see (None = all); ``layer_types`` says per layer
      whether it applies (``"sliding_attention"`` / ``"full_attention"``).
    - ``word_start``: how the tokenizer marks word boundaries: ``"##"`` (WordPiece marks the
      continuation), ``"Ġ"`` (byte-level BPE marks a leading space), ``"▁"`` (SentencePiece
      marks a word start), or None when no tokenizer was given.
    """

    family: str
    model_class: str
    kind: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    d_ff: int
    vocab_size: int
    norm: str
    norm_eps: float
    norm_placement: str
    embedding_norm: bool
    has_final_norm: bool
    positions: str
    max_positions: int | None
    position_offset: int
    rope_base: float | None
    rope_layout: str | None
    rope_type: str | None
    ffn: str
    qkv_bias: bool
    out_bias: bool
    ffn_bias: bool
    attention_scale: float
    has_token_type_embeddings: bool
    type_vocab_size: int
    sliding_window: int | None
    layer_types: tuple[str, ...]
    causal: bool
    tied_embeddings: bool
    word_start: str | None = None

    @property
    def is_gqa(self) -> bool:
        """True when K/V heads are shared (grouped-query or multi-query attention)."""
        return self.n_kv_heads < self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line per aspect, for a notebook to print."""
        pos = self.positions
        if self.positions == "rope":
            pos = f"rope (base {self.rope_base:g}, {self.rope_layout}, {self.rope_type})"
        heads = f"{self.n_heads} query heads / {self.n_kv_heads} KV heads × {self.head_dim}"
        return "\n".join([
            f"{self.model_class}: {self.family} {self.kind}, {self.n_layers} layers, "
            f"d_model {self.d_model}, d_ff {self.d_ff}, vocab {self.vocab_size}",
            f"attention: {heads}; biases q/k/v {self.qkv_bias}, out {self.out_bias}"
            + (f"; sliding window {self.sliding_window}" if self.sliding_window else ""),
            f"norm: {self.norm} (eps {self.norm_eps:g}), {self.norm_placement}-norm; "
            f"FFN {self.ffn}; positions {pos}",
            f"token types: {self.has_token_type_embeddings}; tied embeddings: "
            f"{self.tied_embeddings}; word start: {self.word_start}",
        ])


# --------------------------------------------------------------------------- helpers
def _family(model: object) -> str:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ValueError(
            f"expected a transformers model (an nn.Module with a .config), got "
            f"{type(model).__name__}"
        )
    family = getattr(model.config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise _unsupported(model)
    return family


def _base(model: nn.Module) -> nn.Module:
    """The bare transformer under any task head (``BertForMaskedLM.bert``, ``….model``, …)."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


def _t5_stack(model: nn.Module, stack: str) -> nn.Module:
    if stack not in ("encoder", "decoder"):
        raise ValueError(f"stack must be 'encoder' or 'decoder', got {stack!r}")
    base = _base(model)
    part = getattr(base, stack, None)
    if part is None:  # T5EncoderModel has no decoder
        raise ValueError(f"{type(model).__name__} has no {stack} stack")
    return part


def _eps(module: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise ValueError(f"cannot read eps from {type(module).__name__}")


def _rope(config) -> tuple[float, str]:
    params = getattr(config, "rope_parameters", None) or {}
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    if base is None:
        raise ValueError("config has neither rope_parameters['rope_theta'] nor rope_theta")
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    return float(base), str(rope_type)


_WORD_START_BY_DECODER = {"WordPiece": "##", "ByteLevel": "Ġ", "Metaspace": "▁"}


def word_start_convention(tokenizer) -> str | None:
    """``"##"``, ``"Ġ"`` or ``"▁"``: read from a fast tokenizer's decoder (None if unknown)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return None
    import json

    def find(node) -> str | None:
        if isinstance(node, dict):
            if node.get("type") in _WORD_START_BY_DECODER:
                return _WORD_START_BY_DECODER[node["type"]]
            for key in ("decoders", "pretokenizers"):
                for child in node.get(key) or []:
                    found = find(child)
                    if found:
                        return found
        return None

    state = json.loads(backend.to_str())
    return find(state.get("decoder")) or find(state.get("pre_tokenizer"))


# --------------------------------------------------------------------------- describe
def position_offset(config) -> int:
    """How many rows at the start of a learned position table are not positions: RoBERTa
    reserves ``pad_token_id + 1`` of them (padding gets row ``pad_token_id``), the other
    families none. Reads a transformers config, so a notebook can size its parameters
    before loading the model; ``max_position_embeddings - position_offset(config)`` tokens fit."""
    return int(config.pad_token_id) + 1 if getattr(config, "model_type", None) == "roberta" else 0


def describe(model: nn.Module, tokenizer=None) -> ModelView:
    """The ``ModelView`` of a transformers model (any head), or ``UnsupportedModelError``.

    Pass the tokenizer to fill ``word_start``. Values are read from the modules where the
    config can lie (DistilBERT's LayerNorm eps is 1e-12 whatever the config says).
    """
    family = _family(model)
    config = model.config
    base = _base(model)
    lay = layers(model)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    common = dict(family=family, model_class=type(model).__name__, n_layers=len(lay),
                  vocab_size=int(config.vocab_size), tied_embeddings=tied,
                  word_start=word_start_convention(tokenizer) if tokenizer is not None else None)
    if family in ("bert", "roberta"):
        if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise _unsupported(model, f"position_embedding_type "
                                      f"{config.position_embedding_type!r} (only 'absolute')")
        if getattr(config, "is_decoder", False):
            raise _unsupported(model, "a BERT-family model configured as a decoder")
        d = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        offset = position_offset(config)
        return ModelView(
            **common, kind="encoder", n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
            d_model=d, d_ff=int(config.intermediate_size), norm="layernorm",
            norm_eps=_eps(lay[0].attention.output.LayerNorm), norm_placement="post",
            embedding_norm=True, has_final_norm=False, positions="learned",
            max_positions=int(config.max_position_embeddings) - offset, position_offset=offset,
            rope_base=None, rope_layout=None, rope_type=None, ffn=str(config.hidden_act),
            qkv_bias=True, out_bias=True, ffn_bias=True, attention_scale=1 / math.sqrt(d // heads),
            has_token_type_embeddings=int(config.type_vocab_size) > 0,
            type_vocab_size=int(config.type_vocab_size), sliding_window=None,
            layer_types=("full_attention",) * len(lay), causal=False)
    if family == "distilbert":
        d, heads = int(config.dim), int(config.n_heads)
        return ModelView(
            **common, kind="encoder", n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
            d_model=d, d_ff=int(config.hidden_dim), norm="layernorm",
            norm_eps=_eps(lay[0].sa_layer_norm), norm_placement="post", embedding_norm=True,
            has_final_norm=False,
            positions="sinusoidal" if config.sinusoidal_pos_embds else "learned",
            max_positions=int(config.max_position_embeddings), position_offset=0,
            rope_base=None, rope_layout=None, rope_type=None, ffn=str(config.activation),
            qkv_bias=True, out_bias=True, ffn_bias=True, attention_scale=1 / math.sqrt(d // heads),
            has_token_type_embeddings=False, type_vocab_size=0, sliding_window=None,
            layer_types=("full_attention",) * len(lay), causal=False)
    if family == "gpt2":
        if config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn:
            raise _unsupported(model, "GPT-2 with scale_attn_by_inverse_layer_idx or "
                                      "reorder_and_upcast_attn")
        d, heads = int(config.n_embd), int(config.n_head)
        return ModelView(
            **common, kind="decoder", n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
            d_model=d, d_ff=int(config.n_inner or 4 * d), norm="layernorm",
            norm_eps=_eps(lay[0].ln_1), norm_placement="pre", embedding_norm=False,
            has_final_norm=True, positions="learned", max_positions=int(config.n_positions),
            position_offset=0, rope_base=None, rope_layout=None, rope_type=None,
            ffn=str(config.activation_function), qkv_bias=True, out_bias=True, ffn_bias=True,
            attention_scale=1 / math.sqrt(d // heads) if config.scale_attn_weights else 1.0,
            has_token_type_embeddings=False, type_vocab_size=0, sliding_window=None,
            layer_types=("full_attention",) * len(lay), causal=True)
    if family in _LLAMA_LIKE:
        d, heads = int(config.hidden_size), int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or d // heads)
        base_theta, rope_type = _rope(config)
        attn = lay[0].self_attn
        if config.hidden_act != "silu":
            raise _unsupported(model, f"hidden_act {config.hidden_act!r} (expected silu: SwiGLU)")
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None)
        if types is None:
            types = ["sliding_attention" if window else "full_attention"] * len(lay)
        if not any(t == "sliding_attention" for t in types):
            window = None
        return ModelView(
            **common, kind="decoder", n_heads=heads,
            n_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=head_dim, d_model=d, d_ff=int(config.intermediate_size), norm="rmsnorm",
            norm_eps=_eps(lay[0].input_layernorm), norm_placement="pre", embedding_norm=False,
            has_final_norm=True, positions="rope",
            max_positions=int(getattr(config, "max_position_embeddings", 0)) or None,
            position_offset=0, rope_base=base_theta, rope_layout="rotate_half",
            rope_type=rope_type, ffn="swiglu", qkv_bias=attn.q_proj.bias is not None,
            out_bias=attn.o_proj.bias is not None, ffn_bias=lay[0].mlp.up_proj.bias is not None,
            attention_scale=1 / math.sqrt(head_dim), has_token_type_embeddings=False,
            type_vocab_size=0, sliding_window=int(window) if window else None,
            layer_types=tuple(types), causal=True)
    # t5
    heads, head_dim = int(config.num_heads), int(config.d_kv)
    ff = "gated-gelu" if config.is_gated_act else str(config.dense_act_fn)
    if ff not in ("relu", "gated-gelu"):
        raise _unsupported(model, f"T5 feed_forward_proj {config.feed_forward_proj!r}")
    kind = "encoder-decoder" if getattr(base, "decoder", None) is not None else "encoder"
    return ModelView(
        **common, kind=kind, n_heads=heads,
        n_kv_heads=heads, head_dim=head_dim, d_model=int(config.d_model), d_ff=int(config.d_ff),
        norm="rmsnorm", norm_eps=_eps(lay[0].layer[0].layer_norm), norm_placement="pre",
        embedding_norm=False, has_final_norm=True, positions="relative", max_positions=None,
        position_offset=0, rope_base=None, rope_layout=None, rope_type=None, ffn=ff,
        qkv_bias=False, out_bias=False, ffn_bias=False, attention_scale=1.0,
        has_token_type_embeddings=False, type_vocab_size=0, sliding_window=None,
        layer_types=("full_attention",) * len(lay), causal=False)


# --------------------------------------------------------------------------- layers
def layers(model: nn.Module, stack: str = "encoder") -> list[nn.Module]:
    """The model's transformer layers, first to last (T5: the ``stack`` given)."""
    family = _family(model)
    base = _base(model)
    if family in ("bert", "roberta"):
        return list(base.encoder.layer)
    if family == "distilbert":
        return list(base.transformer.layer)
    if family == "gpt2":
        return list(base.h)
    if family in _LLAMA_LIKE:
        return list(base.layers)
    return list(_t5_stack(model, stack).block)


def _layer(model: nn.Module, layer: int, stack: str = "encoder") -> nn.Module:
    all_layers = layers(model, stack)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(all_layers):
        raise ValueError(f"layer must be an int in 0..{len(all_layers) - 1}, got {layer!r}")
    return all_layers[layer]


def _linear(module: nn.Module) -> Projection:
    return Projection(module.weight.detach(), None if module.bias is None else module.bias.detach())


def _conv1d(module: nn.Module) -> Projection:
    """GPT-2's Conv1D keeps weight as (in, out): transpose to the (out, in) convention."""
    return Projection(module.weight.detach().T, module.bias.detach())


def attention_weights(model: nn.Module, layer: int, stack: str = "encoder") -> AttentionWeights:
    """Layer ``layer``'s q, k, v, o projections as ``(weight (out, in), bias or None)``.

    GPT-2's fused ``c_attn`` (Conv1D, ``(C, 3C)``) is split into q, k, v and transposed;
    DistilBERT's ``q_lin``… and T5's ``q``… are renamed; Qwen2's q/k/v carry biases.
    """
    family = _family(model)
    lay = _layer(model, layer, stack)
    if family in ("bert", "roberta"):
        s = lay.attention.self
        return AttentionWeights(_linear(s.query), _linear(s.key), _linear(s.value),
                                _linear(lay.attention.output.dense))
    if family == "distilbert":
        a = lay.attention
        return AttentionWeights(_linear(a.q_lin), _linear(a.k_lin), _linear(a.v_lin),
                                _linear(a.out_lin))
    if family == "gpt2":
        fused = _conv1d(lay.attn.c_attn)  # (3C, C)
        d = fused.weight.shape[1]
        ws, bs = fused.weight.split(d, dim=0), fused.bias.split(d)
        return AttentionWeights(*(Projection(w, b) for w, b in zip(ws, bs, strict=True)),
                                _conv1d(lay.attn.c_proj))
    if family in _LLAMA_LIKE:
        a = lay.self_attn
        return AttentionWeights(_linear(a.q_proj), _linear(a.k_proj), _linear(a.v_proj),
                                _linear(a.o_proj))
    a = lay.layer[0].SelfAttention
    return AttentionWeights(_linear(a.q), _linear(a.k), _linear(a.v), _linear(a.o))


def output_projection(model: nn.Module, layer: int, stack: str = "encoder") -> nn.Module:
    """The module that reads layer ``layer``'s concatenated heads ``[head_0 | head_1 | …]``
    (W_O: BERT ``attention.output.dense``, DistilBERT ``out_lin``, GPT-2 ``c_proj``, Llama
    ``o_proj``, T5 ``o``). A forward pre-hook on it sees every head's output, ``(B, T, H·d)``."""
    family = _family(model)
    lay = _layer(model, layer, stack)
    if family in ("bert", "roberta"):
        return lay.attention.output.dense
    if family == "distilbert":
        return lay.attention.out_lin
    if family == "gpt2":
        return lay.attn.c_proj
    if family in _LLAMA_LIKE:
        return lay.self_attn.o_proj
    return lay.layer[0].SelfAttention.o


def ffn_weights(model: nn.Module, layer: int, stack: str = "encoder") -> FFNWeights:
    """Layer ``layer``'s feed-forward projections (``gate`` only for gated FFNs)."""
    family = _family(model)
    lay = _layer(model, layer, stack)
    if family in ("bert", "roberta"):
        return FFNWeights(_linear(lay.intermediate.dense), _linear(lay.output.dense), None)
    if family == "distilbert":
        return FFNWeights(_linear(lay.ffn.lin1), _linear(lay.ffn.lin2), None)
    if family == "gpt2":
        return FFNWeights(_conv1d(lay.mlp.c_fc), _conv1d(lay.mlp.c_proj), None)
    if family in _LLAMA_LIKE:
        m = lay.mlp
        return FFNWeights(_linear(m.up_proj), _linear(m.down_proj), _linear(m.gate_proj))
    ff = lay.layer[-1].DenseReluDense
    if hasattr(ff, "wi_0"):  # gated-gelu: gelu(wi_0 x) * wi_1 x
        return FFNWeights(_linear(ff.wi_1), _linear(ff.wo), _linear(ff.wi_0))
    return FFNWeights(_linear(ff.wi), _linear(ff.wo), None)


def layer_norms(model: nn.Module, layer: int, stack: str = "encoder") -> tuple[nn.Module, nn.Module]:
    """``(attn_norm, ffn_norm)``: the norm modules around layer ``layer``'s two sublayers.

    Post-norm (BERT family): applied after each residual add; pre-norm: before each
    sublayer. (A T5 decoder layer's cross-attention norm is ``layer.layer[1].layer_norm``.)
    """
    family = _family(model)
    lay = _layer(model, layer, stack)
    if family in ("bert", "roberta"):
        return lay.attention.output.LayerNorm, lay.output.LayerNorm
    if family == "distilbert":
        return lay.sa_layer_norm, lay.output_layer_norm
    if family == "gpt2":
        return lay.ln_1, lay.ln_2
    if family in _LLAMA_LIKE:
        return lay.input_layernorm, lay.post_attention_layernorm
    return lay.layer[0].layer_norm, lay.layer[-1].layer_norm


def final_norm(model: nn.Module, stack: str = "encoder") -> nn.Module | None:
    """The norm after the last layer (GPT-2 ``ln_f``, Llama ``norm``, T5 ``final_layer_norm``)."""
    family = _family(model)
    base = _base(model)
    if family == "gpt2":
        return base.ln_f
    if family in _LLAMA_LIKE:
        return base.norm
    if family == "t5":
        return _t5_stack(model, stack).final_layer_norm
    return None


class EncoderModules(NamedTuple):
    """Where an encoder family keeps the modules of one layer (and of its embeddings).

    The modules a forward hook can catch each stage at: ``attention`` returns
    ``(output, attention weights)``; the input of ``out`` is the heads' concatenated
    context; the input of ``ffn_down`` is the FFN's activation. ``token_type`` is None for
    a family without token types (DistilBERT).
    """

    word: nn.Module
    position: nn.Module
    token_type: nn.Module | None
    embedding_norm: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    attention: nn.Module
    out: nn.Module
    attn_norm: nn.Module
    ffn_up: nn.Module
    ffn_down: nn.Module
    ffn_norm: nn.Module


def encoder_modules(model: nn.Module, layer: int) -> EncoderModules:
    """The modules of layer ``layer`` of a BERT, RoBERTa or DistilBERT model, by role.

    For hooks (notebook 07 catches every stage of a block with them) and for counting
    parameters per component; any other family raises ``ValueError``.
    """
    family = _family(model)
    if family not in ENCODER_FAMILIES:
        raise ValueError(f"encoder_modules reads the encoder families "
                         f"{', '.join(ENCODER_FAMILIES)}; {type(model).__name__} is a {family} model")
    lay, emb = _layer(model, layer), _base(model).embeddings
    if family == "distilbert":
        a, f = lay.attention, lay.ffn
        return EncoderModules(emb.word_embeddings, emb.position_embeddings, None, emb.LayerNorm,
                              a.q_lin, a.k_lin, a.v_lin, a, a.out_lin, lay.sa_layer_norm,
                              f.lin1, f.lin2, lay.output_layer_norm)
    s = lay.attention.self
    return EncoderModules(emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings,
                          emb.LayerNorm, s.query, s.key, s.value, s,
                          lay.attention.output.dense, lay.attention.output.LayerNorm,
                          lay.intermediate.dense, lay.output.dense, lay.output.LayerNorm)


# --------------------------------------------------------------------------- embeddings
def token_embedding_matrix(model: nn.Module) -> torch.Tensor:
    """The token embedding table ``(V, C)`` (row i = token id i)."""
    family = _family(model)
    base = _base(model)
    if family in ENCODER_FAMILIES:
        return base.embeddings.word_embeddings.weight.detach()
    if family == "gpt2":
        return base.wte.weight.detach()
    if family in _LLAMA_LIKE:
        return base.embed_tokens.weight.detach()
    return base.get_input_embeddings().weight.detach()


def position_embedding_matrix(model: nn.Module) -> torch.Tensor | None:
    """The absolute position table ``(P, C)``, row p = position p (RoBERTa's two reserved
    rows removed), or None for models without one (RoPE, T5's relative bias)."""
    family = _family(model)
    base = _base(model)
    if family in ENCODER_FAMILIES:
        offset = describe(model).position_offset
        return base.embeddings.position_embeddings.weight.detach()[offset:]
    if family == "gpt2":
        return base.wpe.weight.detach()
    return None


def position_ids(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The position ids ``(B, T)`` the model uses to look up its position table.

    0..T-1 for most; RoBERTa counts only non-padding tokens and starts at ``pad_id + 1``
    (padding tokens get ``pad_id``), as ``create_position_ids_from_input_ids`` does.
    """
    family = _family(model)
    batch, seq_len = input_ids.shape
    if family == "roberta":
        pad = int(model.config.pad_token_id)
        keep = input_ids.ne(pad).long()
        return torch.cumsum(keep, dim=1) * keep + pad
    return torch.arange(seq_len, device=input_ids.device).expand(batch, seq_len)


def embed(
    model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, T)`` ids -> ``(B, T, C)``: the input to layer 0, computed from the tables as the
    model does (eval mode, no dropout).

    BERT: word + position + token type, then LayerNorm; RoBERTa: the same with positions from
    ``pad_id + 1``; DistilBERT: word + position, LayerNorm; GPT-2: wte + wpe; Llama / Qwen2 /
    Mistral / T5: the token embedding only (positions act inside attention).
    """
    family = _family(model)
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be an integer tensor (batch, seq_len), got "
                         f"{input_ids.dtype} of shape {tuple(input_ids.shape)}")
    base = _base(model)
    with torch.no_grad():
        x = nn.functional.embedding(input_ids, token_embedding_matrix(model))  # (B, T, C)
        if family in ENCODER_FAMILIES or family == "gpt2":
            table = (base.wpe.weight if family == "gpt2"
                     else base.embeddings.position_embeddings.weight)
            x = x + table[position_ids(model, input_ids)]
        if family in ("bert", "roberta"):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + base.embeddings.token_type_embeddings.weight[token_type_ids]
        elif token_type_ids is not None:  # (GPT-2 would embed them with wte: not types)
            raise ValueError(f"{type(model).__name__} has no token type embeddings; "
                             "pass token_type_ids=None")
        if family in ENCODER_FAMILIES:
            x = base.embeddings.LayerNorm(x)
    return x


# --------------------------------------------------------------------------- masks
def attention_mask_for(
    model: nn.Module, layer: int, seq_len: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The boolean mask (True = may attend) layer ``layer`` applies, ``(B or 1, 1, T, T)``.

    Causal for decoders, banded for sliding-window layers (query i sees keys i-w+1..i),
    padding from ``attention_mask`` ``(B, T)`` (1 = token, 0 = padding) if given.
    """
    from course_utils.masks import causal_mask, padding_mask, sliding_window_mask

    view = describe(model)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool)
    if view.causal:
        mask = causal_mask(seq_len)
    if view.sliding_window and view.layer_types[layer] == "sliding_attention":
        mask = sliding_window_mask(seq_len, view.sliding_window)
    mask = mask[None, None]  # (1, 1, T, T)
    if attention_mask is not None:
        mask = mask & padding_mask(attention_mask)  # (B, 1, T, T)
    return mask


def _t5_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int,
               max_distance: int) -> torch.Tensor:
    """T5's bucket of each key-minus-query distance: exact for small ones, log-spaced after."""
    bucket = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket += (relative > 0).long() * num_buckets  # keys to the right use the upper half
        distance = relative.abs()
    else:
        distance = -torch.clamp(relative, max=0)
    exact = num_buckets // 2
    is_small = distance < exact
    log_bucket = exact + (
        torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
        * (num_buckets - exact)
    ).long()
    log_bucket = torch.clamp(log_bucket, max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, log_bucket)


def relative_position_bias(
    model: nn.Module, q_len: int, k_len: int | None = None, stack: str = "encoder"
) -> torch.Tensor:
    """T5's additive attention bias ``(1, H, Tq, Tk)`` (shared by all layers of a stack).

    Each distance ``key - query`` falls in a bucket (exact up to ``num_buckets/4``, then
    logarithmic up to ``max_distance``; the encoder's buckets tell left from right); each
    head learns one scalar per bucket (``relative_attention_bias`` of layer 0).
    """
    if _family(model) != "t5":
        raise ValueError(f"relative_position_bias is T5's; {type(model).__name__} has none")
    k_len = q_len if k_len is None else k_len
    config = model.config
    table = _layer(model, 0, stack).layer[0].SelfAttention.relative_attention_bias.weight
    relative = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]  # (Tq, Tk)
    buckets = _t5_bucket(relative, stack == "encoder", config.relative_attention_num_buckets,
                         config.relative_attention_max_distance)
    return table.detach()[buckets].permute(2, 0, 1)[None]  # (1, H, Tq, Tk)


# --------------------------------------------------------------------------- tokenizer side
def model_inputs(tokenizer, model: nn.Module, texts, **kwargs) -> dict:
    """``tokenizer(texts, return_tensors="pt", padding=True, **kwargs)`` made to fit ``model``.

    Drops ``token_type_ids`` for models without token type embeddings (DistilBERT, GPT-2,
    Llama…: passing them is an error there) and adds zeros for models that have them when the
    tokenizer returned none (RoBERTa's tokenizer does not). A tokenizer without a pad token
    (GPT-2's) pads with its EOS token.
    """
    view = describe(model)
    kwargs.setdefault("return_tensors", "pt")
    kwargs.setdefault("padding", True)
    if kwargs["padding"] and getattr(tokenizer, "pad_token", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    encoded = dict(tokenizer(texts, **kwargs))
    encoded.pop("offset_mapping", None)
    if view.has_token_type_embeddings:
        if "token_type_ids" not in encoded:
            encoded["token_type_ids"] = torch.zeros_like(torch.as_tensor(encoded["input_ids"]))
    else:
        encoded.pop("token_type_ids", None)
    return encoded


def find_word(tokenizer, text: str, word: str, occurrence: int = 1) -> int:
    """Index of the token whose character span covers the first character of ``word``.

    The ``occurrence``-th whole-word, case-insensitive match of ``word`` in ``text`` is found
    in the text, then the token covering its first character in the fast tokenizer's
    ``offset_mapping``: so it works with WordPiece (``##``), byte-level BPE (``Ġ``) and
    SentencePiece (``▁``) alike. The index counts special tokens (``[CLS]``/``<s>`` is 0),
    so it indexes the rows of the model's attention maps. A word split into pieces gives
    its first piece.
    """
    if not isinstance(text, str) or not isinstance(word, str) or not word.strip():
        raise ValueError(f"text and word must be strings, word non-empty; got {text!r}, {word!r}")
    if isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 1:
        raise ValueError(f"occurrence must be a positive integer (1 = first), got {occurrence!r}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("find_word needs a fast tokenizer (it reads offset_mapping)")
    matches = list(re.finditer(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text,
                               flags=re.IGNORECASE))
    if len(matches) < occurrence:
        found = "does not occur" if not matches else f"occurs only {len(matches)} time(s)"
        raise ValueError(f"the word {word!r} {found} in {text!r} (asked for occurrence "
                         f"{occurrence})")
    start = matches[occurrence - 1].start()
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    for index, (begin, end) in enumerate(offsets):
        # SentencePiece / byte-level spans may include the leading space: strip it.
        while begin < end and text[begin].isspace():
            begin += 1
        if begin <= start < end:
            return index
    raise ValueError(f"no token of {text!r} covers the word {word!r} (truncated?)")


def word_token_ids(tokenizer, word: str) -> list[int]:
    """The ids of ``word`` as the tokenizer writes it inside a sentence, after a space.

    WordPiece gives ``bank`` the id of ``bank``; byte-level BPE (RoBERTa, GPT-2) the id of
    ``Ġbank`` (a word with its leading space is another token than the bare word at the
    start of a text); SentencePiece that of ``▁bank``. Found by character offsets in
    ``"the " + word``, so all three conventions need no special case. One id: the word is
    one row of the embedding table; more: it is split into pieces.
    """
    if not isinstance(word, str) or not word.strip() or word != word.strip():
        raise ValueError(f"word must be a non-empty string without surrounding spaces, got {word!r}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("word_token_ids needs a fast tokenizer (it reads offset_mapping)")
    text = "the " + word
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = len("the ")
    return [i for i, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
            if end > start]


def __getattr__(name: str):
    """``mha_from_layer``, ``block_from_layer``, ``load_encoder_weights`` live in weights."""
    if name in ("mha_from_layer", "block_from_layer", "load_encoder_weights",
                "encoder_config", "encoder_from_model"):
        from course_utils import weights

        return getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUPPORTED_FAMILIES",
    "UnsupportedModelError",
    "ModelView",
    "Projection",
    "AttentionWeights",
    "FFNWeights",
    "describe",
    "position_offset",
    "layers",
    "attention_weights",
    "ffn_weights",
    "output_projection",
    "layer_norms",
    "final_norm",
    "EncoderModules",
    "encoder_modules",
    "token_embedding_matrix",
    "position_embedding_matrix",
    "position_ids",
    "embed",
    "attention_mask_for",
    "relative_position_bias",
    "model_inputs",
    "find_word",
    "word_token_ids",
    "word_start_convention",
]

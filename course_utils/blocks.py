"""Used in notebooks 07, 12: a whole transformer from scratch, in the style of nanoGPT's model.py.

One config dataclass, small named modules, every intermediate state available::

    TransformerConfig   sizes and architecture switches (validated on creation)
    LayerNorm, RMSNorm  normalisation from scratch (= torch.nn.LayerNorm / torch.nn.RMSNorm)
    FeedForward         up-projection -> activation (or SwiGLU gate) -> down-projection
    Block               attention (+ FFN) sublayers, each with a residual and a norm;
                        post-norm (2017 paper, BERT) or pre-norm (GPT, Llama)
    Transformer         the body: token (+ token-type) embeddings + positions + blocks
                        (+ final norm); (B, T) ids -> (B, T, C). An encoder (BERT) as is,
                        a decoder body with ``causal=True``
    CausalLM            a causal Transformer + a linear LM head (optionally tied to the
                        token embeddings, as GPT-2 and SmolLM2): (B, T) ids -> (B, T, V)

The same family covers every model of the course: BERT/MiniLM (``Transformer``,
post-norm), GPT-2 and Llama-style decoders (``CausalLM``, pre-norm, ``positional="rope"``,
``norm="rmsnorm"``, ``activation="swiglu"``), and the attention-only toy model of the
induction-head experiment (``attention_only=True``). The older names ``Encoder`` and
``EncoderBlock`` still import (aliases of ``Transformer`` and ``Block``).

Attention is ``course_utils.attention.MultiHeadAttention`` (masks boolean, **True = may
attend**; see ``course_utils.masks``); positions come from ``course_utils.positional``.

**Proofs.** ``Transformer.from_bert(bert_model)`` copies a transformers ``BertModel`` (e.g.
the bundled MiniLM) into a scratch ``Transformer`` whose outputs equal
``last_hidden_state``; ``course_utils.weights`` copies other families and a
``torch.nn.TransformerEncoderLayer`` into a ``Block`` (both norm orders).
``tests/test_blocks.py`` pins them.

**Intermediate states.** ``block(x, return_states=True)`` returns ``(y, states)`` where
``states`` is an ordered dict of named stage tensors in computation order (``"q"``,
``"scores"``, ``"attn_weights"``, ``"attn_out"``, ``"ffn_up"`` …, see ``Block``);
``model(ids, return_states=True)`` returns ``(hidden, states)`` with the embedding
stages, ``states["layers"]`` (one block dict per layer) and ``states["hidden_states"]``
(embeddings output + every layer's output, like transformers' ``hidden_states``).

**A decoder-only language model (GPT, Llama)**::

    config = TransformerConfig(vocab_size=V, max_seq_len=64, d_model=128, num_heads=4,
                               num_layers=2, causal=True, norm_first=True,
                               positional="learned")        # or "rope" (Llama), "sinusoidal"
    model = CausalLM(config, tie_weights=True)               # GPT-2 ties lm_head to token_emb
    logits = model(ids)                                      # (B, T, V); next-token loss:
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))

``causal=True`` makes every block add the causal mask itself, so position t never sees
t+1.. (tested). With ``init="gpt2"`` (default) weights start GPT-2 style (normal, std
0.02; residual output projections scaled by 1/sqrt(2 * num_layers)) so the model trains
from scratch; ``from_bert`` then overwrites them with pretrained weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.attention import MultiHeadAttention
from course_utils.masks import causal_mask, combine, padding_mask
from course_utils.positional import sinusoidal_encoding

NORMS = ("layernorm", "rmsnorm", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swiglu")
POSITIONALS = ("learned", "sinusoidal", "rope", "none")
INITS = ("gpt2", "torch")

States = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- config
@dataclass
class TransformerConfig:
    """Every size and switch of the model.

    The defaults are neutral (a small post-norm encoder with torch's LayerNorm eps 1e-5);
    a real model's values come with it: ``TransformerConfig.from_bert(hf_config)`` (or
    ``course_utils.weights.encoder_config(model)`` for any supported family), and
    ``TransformerConfig.minilm()`` for the bundled all-MiniLM-L6-v2 (eps 1e-12).

    - ``norm_first``: False = post-norm ``x = norm(x + sublayer(x))`` (2017 paper, BERT);
      True = pre-norm ``x = x + sublayer(norm(x))`` (GPT-2, Llama), which also adds a final
      norm after the last block (``final_norm=None`` follows ``norm_first``).
    - ``norm``: ``"layernorm"`` (BERT, GPT-2), ``"rmsnorm"`` (Llama) or ``"none"`` (ablation).
    - ``activation``: ``"gelu"`` (exact, erf: BERT), ``"gelu_tanh"`` (GPT-2), ``"relu"`` (2017),
      ``"silu"``, or ``"swiglu"`` (Llama: ``down(silu(gate(x)) * up(x))``).
    - ``positional``: ``"learned"`` (BERT, GPT-2), ``"sinusoidal"`` (2017), ``"rope"`` (Llama:
      rotates q and k inside attention, base ``rope_base``) or ``"none"``.
    - ``type_vocab_size``: > 0 adds BERT's token-type (segment) embeddings.
    - ``embedding_norm``: a norm on the summed embeddings (BERT has one; GPT does not).
    - ``num_kv_heads``: grouped-query attention (None = ``num_heads``).
    - ``residual``: False removes the residual connections (only for the ablation in
      notebook 07: such a stack trains badly, which is the point).
    - ``dropout``: on the embeddings and on each sublayer's output before the residual add
      (not on the attention weights: ``MultiHeadAttention`` has no attention dropout).
    - ``attention_only``: blocks without the FFN sublayer (the induction-head toy model of
      notebook 12, ``analysis.AttentionOnlyTransformer``).
    - ``init``: ``"gpt2"`` (normal, std 0.02; residual output projections scaled by
      1/sqrt(2L)) or ``"torch"`` (each layer's own PyTorch default initialisation).
    """

    vocab_size: int = 30522
    max_seq_len: int = 512
    d_model: int = 384
    num_heads: int = 12
    num_layers: int = 6
    d_ff: int | None = None  # None -> 4 * d_model
    num_kv_heads: int | None = None
    norm_first: bool = False
    norm: str = "layernorm"
    activation: str = "gelu"
    eps: float = 1e-5
    bias: bool = True
    dropout: float = 0.0
    causal: bool = False
    positional: str = "learned"
    rope_base: float = 10000.0
    type_vocab_size: int = 0
    embedding_norm: bool = False
    final_norm: bool | None = None  # None -> norm_first
    residual: bool = True
    attention_only: bool = False
    init: str = "gpt2"

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.final_norm is None:
            self.final_norm = self.norm_first
        for name in ("vocab_size", "max_seq_len", "d_model", "num_heads", "num_layers", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}): "
                f"each head gets d_model / num_heads dimensions"
            )
        if self.num_kv_heads is not None and (
            isinstance(self.num_kv_heads, bool)
            or not isinstance(self.num_kv_heads, int)
            or self.num_kv_heads <= 0
            or self.num_heads % self.num_kv_heads
        ):
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads!r})"
            )
        for name, allowed in (
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
            ("positional", POSITIONALS),
            ("init", INITS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if isinstance(self.type_vocab_size, bool) or not isinstance(self.type_vocab_size, int) \
                or self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size must be an int >= 0, got {self.type_vocab_size!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def minilm(cls) -> TransformerConfig:
        """all-MiniLM-L6-v2, the course's bundled encoder (a 6-layer post-norm BERT): the
        values of its ``config.json`` (``from_bert(load_encoder().config)`` gives the same)."""
        return cls(vocab_size=30522, max_seq_len=512, d_model=384, num_heads=12, num_layers=6,
                   d_ff=1536, norm_first=False, activation="gelu", eps=1e-12,
                   type_vocab_size=2, embedding_norm=True, final_norm=False)

    @classmethod
    def from_bert(cls, hf_config) -> TransformerConfig:
        """The config of a transformers ``BertConfig`` (post-norm, learned positions)."""
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                "only absolute (learned) BERT position embeddings are supported, got "
                f"{hf_config.position_embedding_type!r}"
            )
        act = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "silu": "silu"}
        if hf_config.hidden_act not in act:
            raise ValueError(f"unsupported hidden_act {hf_config.hidden_act!r}; expected one of "
                             f"{sorted(act)}")
        return cls(
            vocab_size=hf_config.vocab_size,
            max_seq_len=hf_config.max_position_embeddings,
            d_model=hf_config.hidden_size,
            num_heads=hf_config.num_attention_heads,
            num_layers=hf_config.num_hidden_layers,
            d_ff=hf_config.intermediate_size,
            norm_first=False,
            norm="layernorm",
            activation=act[hf_config.hidden_act],
            eps=hf_config.layer_norm_eps,
            bias=True,
            dropout=0.0,
            causal=False,
            positional="learned",
            type_vocab_size=hf_config.type_vocab_size,
            embedding_norm=True,
            final_norm=False,
        )


# --------------------------------------------------------------------------- norms
class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension.

    The variance is the biased one (divide by C, not C - 1), as in torch.nn.LayerNorm.
    x ``(..., C)`` -> ``(..., C)``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expects last dimension {self.dim}, got shape {tuple(x.shape)}")
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1) biased variance
        out = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight``: LayerNorm without the centring or the bias.

    Cheaper than LayerNorm (one reduction instead of two); Llama's choice.
    x ``(..., C)`` -> ``(..., C)``.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"RMSNorm expects last dimension {self.dim}, got shape {tuple(x.shape)}")
        mean_square = x.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        return x * torch.rsqrt(mean_square + self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def make_norm(config: TransformerConfig) -> nn.Module:
    """The norm the config asks for (``nn.Identity`` for ``norm="none"``)."""
    if config.norm == "layernorm":
        return LayerNorm(config.d_model, eps=config.eps, bias=config.bias)
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.eps)
    return nn.Identity()


# --------------------------------------------------------------------------- FFN
_ACTIVATION_FNS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """The position-wise MLP: ``down_proj(act(up_proj(x)))``, C -> d_ff -> C.

    With ``activation="swiglu"``: ``down_proj(silu(gate_proj(x)) * up_proj(x))`` (Llama).
    Each token is transformed on its own: no mixing across positions happens here.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.activation = config.activation
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.gate_proj = (
            nn.Linear(config.d_model, config.d_ff, bias=config.bias)
            if config.activation == "swiglu"
            else None
        )
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(
        self, x: torch.Tensor, return_states: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, States]:
        """x ``(B, T, C)`` -> ``(B, T, C)``; states ``ffn_up``/``ffn_act`` ``(B, T, d_ff)``,
        ``ffn_down`` ``(B, T, C)`` (and ``ffn_gate`` for SwiGLU)."""
        states: States = OrderedDict()
        up = self.up_proj(x)  # (B, T, d_ff)
        states["ffn_up"] = up
        if self.gate_proj is not None:
            gate = self.gate_proj(x)  # (B, T, d_ff)
            states["ffn_gate"] = gate
            act = F.silu(gate) * up
        else:
            act = _ACTIVATION_FNS[self.activation](up)
        states["ffn_act"] = act
        out = self.down_proj(act)  # (B, T, C)
        states["ffn_down"] = out
        return (out, states) if return_states else out


# --------------------------------------------------------------------------- attention
def attention_states(
    attn: MultiHeadAttention,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, States]:
    """``attn(x, mask=mask, positions=positions, return_states=True)``: ``(out (B, T, C),
    weights (B, H, T, T), states)``, the stages ``q``, ``k``, ``v``, ``scores``,
    ``attn_weights``, ``context``, ``attn_out`` (see ``MultiHeadAttention.forward``)."""
    if x.dim() != 3 or x.shape[-1] != attn.d_model:
        raise ValueError(f"x must have shape (batch, seq_len, {attn.d_model}), got {tuple(x.shape)}")
    out, weights, states = attn(x, mask=mask, positions=positions, return_states=True)
    return out, weights, OrderedDict(states)


# --------------------------------------------------------------------------- block
class Block(nn.Module):
    """One transformer block: self-attention then FFN, each with a residual and a norm.

    post-norm (``norm_first=False``; 2017 paper, BERT)::

        x = attn_norm(x + attn(x));   x = ffn_norm(x + ffn(x))

    pre-norm (``norm_first=True``; GPT-2, Llama)::

        x = x + attn(attn_norm(x));   x = x + ffn(ffn_norm(x))

    ``config.causal`` makes the block AND a causal mask into any mask it is given.
    ``forward(x, return_states=True)`` returns ``(y, states)``, states in computation order:
    ``input``, [``attn_norm`` if pre-norm], ``q``, ``k``, ``v``, ``scores``, ``attn_weights``,
    ``context``, ``attn_out``, ``attn_residual``, [``attn_norm`` if post-norm],
    [``ffn_norm`` if pre-norm], ``ffn_up``, ``ffn_act``, ``ffn_down``, ``ffn_residual``,
    [``ffn_norm`` if post-norm], ``output``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.attn = MultiHeadAttention(
            config.d_model,
            config.num_heads,
            bias=config.bias,
            num_kv_heads=config.num_kv_heads,
            rope_base=config.rope_base if config.positional == "rope" else None,
        )
        self.attn_norm = make_norm(config)
        # attention_only: no FFN sublayer (None, so no parameters and nothing to call)
        self.ffn = None if config.attention_only else FeedForward(config)
        self.ffn_norm = None if config.attention_only else make_norm(config)
        self.dropout = nn.Dropout(config.dropout)

    def _mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The caller's boolean mask, ANDed with the causal mask when the config is causal.

        Mask validation (boolean, broadcastable) is done by ``masks.combine`` and by
        ``scaled_dot_product_attention``, with their error messages.
        """
        if not self.config.causal:
            return mask
        causal = causal_mask(x.shape[1], device=x.device)  # (T, T)
        return causal if mask is None else combine(mask, causal)

    def _attend(self, h, mask, positions, states: States | None) -> torch.Tensor:
        if states is None:
            out, _ = self.attn(h, mask=mask, positions=positions)
            return out
        out, _, attn_states = attention_states(self.attn, h, mask=mask, positions=positions)
        states.update(attn_states)
        return out

    def _feed_forward(self, h, states: States | None) -> torch.Tensor:
        if states is None:
            return self.ffn(h)
        out, ffn_states = self.ffn(h, return_states=True)
        states.update(ffn_states)
        return out

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        return_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, States]:
        """x ``(B, T, C)``; mask boolean (True = may attend) broadcastable to ``(B, H, T, T)``,
        e.g. ``padding_mask(attention_mask)`` ``(B, 1, 1, T)``; positions ``(T,)``/``(B, T)``
        for RoPE. Returns ``(B, T, C)``, or ``(y, states)`` with ``return_states=True``."""
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"x must have shape (batch, seq_len, d_model={self.config.d_model}), "
                f"got {tuple(x.shape)}"
            )
        mask = self._mask(x, mask)
        states: States | None = OrderedDict(input=x) if return_states else None
        keep = self.config.residual

        def record(name: str, value: torch.Tensor) -> torch.Tensor:
            if states is not None:
                states[name] = value
            return value

        if self.config.norm_first:
            h = record("attn_norm", self.attn_norm(x))
            a = self.dropout(self._attend(h, mask, positions, states))
            x = record("attn_residual", x + a if keep else a)
            if self.ffn is not None:
                h = record("ffn_norm", self.ffn_norm(x))
                f = self.dropout(self._feed_forward(h, states))
                x = record("ffn_residual", x + f if keep else f)
        else:
            a = self.dropout(self._attend(x, mask, positions, states))
            x = self.attn_norm(record("attn_residual", x + a if keep else a))
            record("attn_norm", x)
            if self.ffn is not None:
                f = self.dropout(self._feed_forward(x, states))
                x = self.ffn_norm(record("ffn_residual", x + f if keep else f))
                record("ffn_norm", x)
        if states is None:
            return x
        states["output"] = x
        return x, states


# --------------------------------------------------------------------------- encoder
class Transformer(nn.Module):
    """Token embeddings (+ token types) + positions -> blocks -> (final norm if pre-norm).

    ``forward(input_ids (B, T), attention_mask (B, T) 1/0) -> (B, T, C)``. Modules:
    ``token_emb``, ``pos_emb`` (learned) or the ``sinusoidal`` buffer, ``type_emb`` (if
    ``type_vocab_size``), ``emb_norm`` (if ``embedding_norm``), ``blocks``, ``final_norm``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = (
            nn.Embedding(config.max_seq_len, config.d_model)
            if config.positional == "learned"
            else None
        )
        if config.positional == "sinusoidal":
            self.register_buffer(
                "sinusoidal", sinusoidal_encoding(config.max_seq_len, config.d_model), persistent=False
            )
        else:
            self.sinusoidal = None
        self.type_emb = (
            nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        )
        self.emb_norm = make_norm(config) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = make_norm(config) if config.final_norm else None
        if config.init == "gpt2":
            init_gpt2(self)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            params -= sum(
                m.weight.numel() for m in (self.token_emb, self.pos_emb, self.type_emb) if m is not None
            )
        return params

    def embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        states: States | None = None,
    ) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, T, C)`` embeddings (token + type + position, normed)."""
        seq_len = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(seq_len, device=input_ids.device)  # (T,)
        x = self.token_emb(input_ids)  # (B, T, C)
        if states is not None:
            states["token_embedding"] = x
        if self.type_emb is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            types = self.type_emb(token_type_ids)  # (B, T, C)
            x = x + types
            if states is not None:
                states["type_embedding"] = types
        if self.pos_emb is not None or self.sinusoidal is not None:
            pos = self.pos_emb(positions) if self.pos_emb is not None else self.sinusoidal[positions]
            x = x + pos  # (T, C) or (B, T, C) broadcasts
            if states is not None:
                states["position_embedding"] = pos
        if states is not None:
            states["embeddings"] = x
        if self.emb_norm is not None:
            x = self.emb_norm(x)
            if states is not None:
                states["embedding_norm"] = x
        return self.dropout(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        return_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """input_ids ``(B, T)``; attention_mask ``(B, T)`` (1 = real token, 0 = padding);
        token_type_ids ``(B, T)``; positions ``(T,)``/``(B, T)`` (default 0..T-1).

        Returns hidden states ``(B, T, C)``, or ``(hidden, states)`` with ``return_states``:
        states holds the embedding stages, ``layers`` (one dict per block, see
        ``Block``), ``hidden_states`` (L + 1 tensors: embeddings output, then each
        block's output) and ``final_norm`` when there is one.
        """
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (batch, seq_len), got "
                f"{input_ids.dtype} of shape {tuple(input_ids.shape)}"
            )
        seq_len = input_ids.shape[1]
        if self.config.positional in ("learned", "sinusoidal") and positions is None \
                and seq_len > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_seq_len={self.config.max_seq_len} "
                f"({self.config.positional} positions have only that many rows)"
            )
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            mask = padding_mask(attention_mask)  # (B, 1, 1, T); blocks add causal themselves
        states: dict | None = OrderedDict() if return_states else None
        x = self.embed(input_ids, token_type_ids, positions, states)
        hidden_states, layers = [x], []
        for block in self.blocks:
            if states is None:
                x = block(x, mask=mask, positions=positions)
            else:
                x, block_states = block(x, mask=mask, positions=positions, return_states=True)
                layers.append(block_states)
                hidden_states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if states is None:
            return x
        states["layers"] = layers
        states["hidden_states"] = tuple(hidden_states)
        if self.final_norm is not None:
            states["final_norm"] = x
        states["output"] = x
        return x, states

    @classmethod
    def from_bert(cls, bert) -> Transformer:
        """A scratch ``Transformer`` holding a copy of a transformers ``BertModel``'s weights.

        Any family ``course_utils.families`` supports works (DistilBERT, RoBERTa, GPT-2, …):
        this is ``course_utils.weights.encoder_from_model``; for BERT the config equals
        ``TransformerConfig.from_bert(bert.config)``.
        """
        from course_utils.weights import encoder_from_model

        return encoder_from_model(bert)


class CausalLM(nn.Module):
    """A causal ``Transformer`` body plus a linear language-model head.

    ``forward(input_ids (B, T)) -> logits (B, T, V)``; ``forward_with_attention`` also
    returns each layer's attention weights ``(B, H, T, T)``. ``tie_weights=True`` shares
    the head's weight with the token embedding (GPT-2, SmolLM2), so the output side reads
    the same table the input side looks tokens up in. The config must be causal (else
    every position could read the token it is asked to predict).
    """

    def __init__(self, config: TransformerConfig, tie_weights: bool = False) -> None:
        super().__init__()
        if not config.causal:
            raise ValueError("CausalLM needs TransformerConfig(causal=True, ...): a "
                             "language model must not see the tokens it predicts")
        self.config, self.tie_weights = config, tie_weights
        self.transformer = Transformer(config)  # (B, T) -> (B, T, C)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.init == "gpt2":
            init_weights(self.lm_head)
        if tie_weights:
            self.lm_head.weight = self.transformer.token_emb.weight

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """input_ids ``(B, T)`` (keyword arguments go to ``Transformer.forward``) ->
        logits ``(B, T, V)``."""
        return self.lm_head(self.transformer(input_ids, **kwargs))

    def forward_with_attention(
        self, input_ids: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits (B, T, V), [attention weights (B, H, T, T) per layer])``."""
        hidden, states = self.transformer(input_ids, return_states=True, **kwargs)
        return self.lm_head(hidden), [layer["attn_weights"] for layer in states["layers"]]


def init_gpt2(model: nn.Module) -> None:
    """GPT-2 initialisation of a ``Transformer`` (or ``CausalLM``) in place: ``init_weights``
    on every module, then the projections that write into the residual stream scaled by
    1/sqrt(2L), so the stream's variance does not grow with depth at initialisation."""
    model.apply(init_weights)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        for proj in (block.attn.out_proj, None if block.ffn is None else block.ffn.down_proj):
            if proj is not None:
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * block.config.num_layers))


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: Linear/Embedding weights ~ N(0, 0.02²), biases 0, norms 1."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


# --------------------------------------------------------------------------- weight loading
# Copying real models' weights into these modules lives in course_utils.weights (one home for
# "load real weights into our modules"). The old names still import from here, lazily.
_MOVED_TO_WEIGHTS = ("_copy", "_copy_linear", "_copy_norm", "load_bert_weights",
                     "config_from_torch_layer", "copy_torch_encoder_layer")


def __getattr__(name: str):
    if name in _MOVED_TO_WEIGHTS:
        from course_utils import weights

        return getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- accounting
def parameter_formula(config: TransformerConfig) -> dict[str, int]:
    """Parameter counts per component from the config alone (no model built).

    C = d_model, F = d_ff, L = num_layers, d_kv = num_kv_heads * head_dim; b = 1 with biases:
    attention = C·C + 2·C·d_kv + C·C (+ C + 2·d_kv + C biases) per layer;
    FFN = 2·C·F (3·C·F for SwiGLU) (+ F + C biases); LayerNorm = 2C (C without bias),
    RMSNorm = C; embeddings = V·C (+ max_seq_len·C learned, + types·C).
    """
    c, f, L = config.d_model, config.d_ff, config.num_layers
    d_kv = (config.num_kv_heads or config.num_heads) * config.head_dim
    b = 1 if config.bias else 0
    attention = (2 * c * c + 2 * c * d_kv) + b * (2 * c + 2 * d_kv)
    if config.attention_only:
        ffn = 0
    elif config.activation == "swiglu":
        ffn = 3 * c * f + b * (2 * f + c)
    else:
        ffn = 2 * c * f + b * (f + c)
    norm = {"layernorm": (1 + b) * c, "rmsnorm": c, "none": 0}[config.norm]
    embeddings = config.vocab_size * c
    if config.positional == "learned":
        embeddings += config.max_seq_len * c
    embeddings += config.type_vocab_size * c
    counts = {
        "embeddings": embeddings,
        "attention": L * attention,
        "ffn": L * ffn,
        "norms": L * (1 if config.attention_only else 2) * norm
        + norm * (config.embedding_norm + bool(config.final_norm)),
    }
    counts["total"] = sum(counts.values())
    return counts


def parameter_breakdown(encoder: Transformer) -> dict[str, int]:
    """The same components as ``parameter_formula``, counted on a built ``Transformer``."""

    def count(modules) -> int:
        return sum(p.numel() for m in modules if m is not None for p in m.parameters())

    blocks = encoder.blocks
    counts = {
        "embeddings": count([encoder.token_emb, encoder.pos_emb, encoder.type_emb]),
        "attention": count([b.attn for b in blocks]),
        "ffn": count([b.ffn for b in blocks]),
        "norms": count([b.attn_norm for b in blocks] + [b.ffn_norm for b in blocks]
                       + [encoder.emb_norm, encoder.final_norm]),
    }
    counts["total"] = sum(p.numel() for p in encoder.parameters())
    return counts


# The names notebooks and older code use (a body that is an encoder, or a decoder's body).
Encoder = Transformer
EncoderBlock = Block

__all__ = [
    "TransformerConfig",
    "LayerNorm",
    "RMSNorm",
    "FeedForward",
    "Block",
    "Transformer",
    "CausalLM",
    "EncoderBlock",
    "Encoder",
    "init_gpt2",
    "attention_states",
    "make_norm",
    "init_weights",
    "parameter_formula",
    "parameter_breakdown",
]

"""A whole transformer from scratch (notebook 07), in the style of nanoGPT's model.py.

One config dataclass, small named modules, every intermediate state available::

    TransformerConfig   sizes and architecture switches (validated on creation)
    LayerNorm, RMSNorm  normalisation from scratch (= torch.nn.LayerNorm / torch.nn.RMSNorm)
    FeedForward         up-projection -> activation (or SwiGLU gate) -> down-projection
    EncoderBlock        attention + FFN sublayers, each with a residual and a norm;
                        post-norm (2017 paper, BERT) or pre-norm (GPT, Llama)
    Encoder             token (+ token-type) embeddings + positions + blocks (+ final norm)

Attention is ``course_utils.attention.MultiHeadAttention`` (masks boolean, **True = may
attend**; see ``course_utils.masks``); positions come from ``course_utils.positional``.

**Proofs.** ``Encoder.from_bert(bert_model)`` copies a transformers ``BertModel`` (e.g. the
bundled MiniLM) into a scratch ``Encoder`` whose outputs equal ``last_hidden_state``;
``copy_torch_encoder_layer`` copies a ``torch.nn.TransformerEncoderLayer`` into an
``EncoderBlock`` (both norm orders). ``tests/test_blocks.py`` pins both.

**Intermediate states.** ``block(x, return_states=True)`` returns ``(y, states)`` where
``states`` is an ordered dict of named stage tensors in computation order (``"q"``,
``"scores"``, ``"attn_weights"``, ``"attn_out"``, ``"ffn_up"`` …, see ``EncoderBlock``);
``encoder(ids, return_states=True)`` returns ``(hidden, states)`` with the embedding
stages, ``states["layers"]`` (one block dict per layer) and ``states["hidden_states"]``
(embeddings output + every layer's output, like transformers' ``hidden_states``).

**A decoder-only language model (GPT, Llama) is this encoder made causal and pre-norm,
plus a linear head**::

    config = TransformerConfig(vocab_size=V, max_seq_len=64, d_model=128, num_heads=4,
                               num_layers=2, causal=True, norm_first=True,
                               positional="learned")        # or "rope" (Llama), "sinusoidal"
    body = Encoder(config)                                   # (B, T) ids -> (B, T, C)
    lm_head = nn.Linear(config.d_model, V, bias=False)
    lm_head.weight = body.token_emb.weight                   # optional weight tying (GPT-2)
    logits = lm_head(body(ids))                              # (B, T, V); next-token loss:
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))

``causal=True`` makes every block add the causal mask itself, so position t never sees
t+1.. (tested). ``Encoder`` initialises its weights GPT-2 style (normal, std 0.02; residual
output projections scaled by 1/sqrt(2 * num_layers)) so it trains from scratch;
``from_bert`` then overwrites them with pretrained weights.
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
from course_utils.positional import apply_rope, sinusoidal_encoding

NORMS = ("layernorm", "rmsnorm", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swiglu")
POSITIONALS = ("learned", "sinusoidal", "rope", "none")

States = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- config
@dataclass
class TransformerConfig:
    """Every size and switch of the model. Defaults are all-MiniLM-L6-v2 (a small BERT).

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
    eps: float = 1e-12
    bias: bool = True
    dropout: float = 0.0
    causal: bool = False
    positional: str = "learned"
    rope_base: float = 10000.0
    type_vocab_size: int = 0
    embedding_norm: bool = False
    final_norm: bool | None = None  # None -> norm_first
    residual: bool = True

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
    """``attn(x, mask=mask)`` computed stage by stage, keeping every stage.

    Same arithmetic as ``MultiHeadAttention.forward`` (tests check the outputs are equal).
    Returns ``(out (B, T, C), weights (B, H, T, T), states)`` with states ``q``, ``k``, ``v``
    ``(B, H, T, d_head)`` (after RoPE if any; K/V already repeated for grouped-query),
    ``scores`` ``(B, H, T, T)`` = q kᵀ/√d before masking, ``attn_weights`` (softmax, masked),
    ``context`` ``(B, T, C)`` (heads concatenated, before W_O) and ``attn_out`` (after W_O).
    """
    if x.dim() != 3 or x.shape[-1] != attn.d_model:
        raise ValueError(f"x must have shape (batch, seq_len, {attn.d_model}), got {tuple(x.shape)}")
    batch, seq_len, _ = x.shape
    q = attn.split_heads(attn.q_proj(x), attn.num_heads)  # (B, H, T, d)
    k = attn.split_heads(attn.k_proj(x), attn.num_kv_heads)  # (B, Hkv, T, d)
    v = attn.split_heads(attn.v_proj(x), attn.num_kv_heads)  # (B, Hkv, T, d)
    if attn.rope_base is not None:
        positions = torch.arange(seq_len, device=x.device) if positions is None else positions
        q = apply_rope(q, positions, attn.rope_base)
        k = apply_rope(k, positions, attn.rope_base)
    group = attn.num_heads // attn.num_kv_heads
    if group > 1:
        k = k.repeat_interleave(group, dim=1)  # (B, H, T, d)
        v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(masked, dim=-1)
    if mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows -> 0, as attention.py
    context = (weights @ v).transpose(1, 2).reshape(batch, seq_len, -1)  # (B, T, H*d)
    out = attn.out_proj(context)  # (B, T, C)
    states: States = OrderedDict(
        q=q, k=k, v=v, scores=scores, attn_weights=weights, context=context, attn_out=out
    )
    return out, weights, states


# --------------------------------------------------------------------------- block
class EncoderBlock(nn.Module):
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
        self.ffn = FeedForward(config)
        self.ffn_norm = make_norm(config)
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
            h = record("ffn_norm", self.ffn_norm(x))
            f = self.dropout(self._feed_forward(h, states))
            x = record("ffn_residual", x + f if keep else f)
        else:
            a = self.dropout(self._attend(x, mask, positions, states))
            x = self.attn_norm(record("attn_residual", x + a if keep else a))
            record("attn_norm", x)
            f = self.dropout(self._feed_forward(x, states))
            x = self.ffn_norm(record("ffn_residual", x + f if keep else f))
            record("ffn_norm", x)
        if states is None:
            return x
        states["output"] = x
        return x, states


# --------------------------------------------------------------------------- encoder
class Encoder(nn.Module):
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
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.final_norm = make_norm(config) if config.final_norm else None
        self.apply(init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2L),
        # so the stream's variance does not grow with depth at initialisation.
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.ffn.down_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.num_layers))

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
        ``EncoderBlock``), ``hidden_states`` (L + 1 tensors: embeddings output, then each
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
    def from_bert(cls, bert) -> Encoder:
        """A scratch ``Encoder`` holding a copy of a transformers ``BertModel``'s weights."""
        encoder = cls(TransformerConfig.from_bert(bert.config))
        load_bert_weights(encoder, bert)
        return encoder.eval()


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: Linear/Embedding weights ~ N(0, 0.02²), biases 0, norms 1."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


# --------------------------------------------------------------------------- weight loading
def _copy(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if tuple(target.shape) != tuple(source.shape):
        raise ValueError(
            f"{name}: shape mismatch, scratch model has {tuple(target.shape)}, "
            f"source has {tuple(source.shape)}"
        )
    with torch.no_grad():
        target.copy_(source)


def _copy_linear(target: nn.Linear, source: nn.Linear, name: str) -> None:
    _copy(target.weight, source.weight, f"{name}.weight")
    if (target.bias is None) != (source.bias is None):
        raise ValueError(f"{name}: one of the two Linear layers has a bias and the other has not")
    if target.bias is not None:
        _copy(target.bias, source.bias, f"{name}.bias")


def _copy_norm(target: nn.Module, source: nn.Module, name: str) -> None:
    if isinstance(target, nn.Identity):
        raise ValueError(f"{name}: the scratch model has no norm here (norm='none')")
    if isinstance(target, LayerNorm) and target.eps != source.eps:
        raise ValueError(f"{name}: eps differs (scratch {target.eps}, source {source.eps})")
    _copy(target.weight, source.weight, f"{name}.weight")
    if getattr(target, "bias", None) is not None:
        _copy(target.bias, source.bias, f"{name}.bias")


def load_bert_weights(encoder: Encoder, bert) -> Encoder:
    """Copy a transformers ``BertModel``'s weights into a scratch ``Encoder`` (in place).

    The encoder's config must match the BERT config (``TransformerConfig.from_bert``).
    The name map, BERT -> scratch::

        embeddings.word_embeddings / position_embeddings / token_type_embeddings / LayerNorm
            -> token_emb / pos_emb / type_emb / emb_norm
        encoder.layer[i].attention.self.query / key / value  -> blocks[i].attn.q_proj / k_proj / v_proj
        encoder.layer[i].attention.output.dense / LayerNorm  -> blocks[i].attn.out_proj / attn_norm
        encoder.layer[i].intermediate.dense                  -> blocks[i].ffn.up_proj
        encoder.layer[i].output.dense / LayerNorm            -> blocks[i].ffn.down_proj / ffn_norm

    BERT's pooler is not part of the encoder and is not copied.
    """
    config = encoder.config
    if config.norm_first or config.positional != "learned" or encoder.type_emb is None \
            or encoder.emb_norm is None:
        raise ValueError(
            "a BERT copy needs a post-norm encoder with learned positions, token types and an "
            "embedding norm: build it with Encoder(TransformerConfig.from_bert(bert.config))"
        )
    layers = bert.encoder.layer
    if len(layers) != len(encoder.blocks):
        raise ValueError(f"BERT has {len(layers)} layers, the scratch encoder {len(encoder.blocks)}")
    emb = bert.embeddings
    _copy(encoder.token_emb.weight, emb.word_embeddings.weight, "token_emb")
    _copy(encoder.pos_emb.weight, emb.position_embeddings.weight, "pos_emb")
    _copy(encoder.type_emb.weight, emb.token_type_embeddings.weight, "type_emb")
    _copy_norm(encoder.emb_norm, emb.LayerNorm, "emb_norm")
    for i, (block, layer) in enumerate(zip(encoder.blocks, layers, strict=True)):
        attn = layer.attention
        _copy_linear(block.attn.q_proj, attn.self.query, f"blocks.{i}.attn.q_proj")
        _copy_linear(block.attn.k_proj, attn.self.key, f"blocks.{i}.attn.k_proj")
        _copy_linear(block.attn.v_proj, attn.self.value, f"blocks.{i}.attn.v_proj")
        _copy_linear(block.attn.out_proj, attn.output.dense, f"blocks.{i}.attn.out_proj")
        _copy_norm(block.attn_norm, attn.output.LayerNorm, f"blocks.{i}.attn_norm")
        _copy_linear(block.ffn.up_proj, layer.intermediate.dense, f"blocks.{i}.ffn.up_proj")
        _copy_linear(block.ffn.down_proj, layer.output.dense, f"blocks.{i}.ffn.down_proj")
        _copy_norm(block.ffn_norm, layer.output.LayerNorm, f"blocks.{i}.ffn_norm")
    return encoder


def config_from_torch_layer(layer: nn.TransformerEncoderLayer) -> TransformerConfig:
    """The single-block config matching a ``torch.nn.TransformerEncoderLayer``."""
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


def copy_torch_encoder_layer(block: EncoderBlock, layer: nn.TransformerEncoderLayer) -> EncoderBlock:
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
    if config.activation == "swiglu":
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
        "norms": L * 2 * norm
        + norm * (config.embedding_norm + bool(config.final_norm)),
    }
    counts["total"] = sum(counts.values())
    return counts


def parameter_breakdown(encoder: Encoder) -> dict[str, int]:
    """The same components as ``parameter_formula``, counted on a built ``Encoder``."""

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


__all__ = [
    "TransformerConfig",
    "LayerNorm",
    "RMSNorm",
    "FeedForward",
    "EncoderBlock",
    "Encoder",
    "attention_states",
    "make_norm",
    "init_weights",
    "load_bert_weights",
    "copy_torch_encoder_layer",
    "config_from_torch_layer",
    "parameter_formula",
    "parameter_breakdown",
]

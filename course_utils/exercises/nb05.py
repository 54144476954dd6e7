"""Checkers for notebook 05 (multi-head attention).

- ``check_split_heads`` and ``check_repeat_kv_heads``: the two reshapes of multi-head and
  grouped-query attention, checked case by case.
- ``check_gqa``: the learner's ``GroupedQueryAttention`` class (the ``gqa`` piece), built,
  loaded with real weights and run: in its multi-head case (as many KV heads as query heads,
  no RoPE, biases) against MiniLM's attention sublayer, with SmolLM2's weights (9 query / 3
  KV heads, RoPE) against transformers' own ``LlamaAttention`` output and the KV cache it
  stores (``DynamicCache``), and one decoding step with ``past_kv`` against the full
  sequence's last row; plus a random-weight ``LlamaAttention`` with biases and a batch of 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch

from course_utils.exercises import CheckResult, CheckTimeout, run_check
from course_utils.solutions import nb05 as solutions

GQA_TOLERANCE = 1e-5
"""Largest difference from the model's attention output (and cache) that passes."""


def _split_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 3, 4, 2), (2, 5, 12, 3), (2, 4, 384, 12), (3, 1, 8, 8)]  # (B, T, d, H)
    return [
        ((torch.randn(b, t, d, generator=generator), h), {}) for b, t, d, h in shapes
    ]


def check_split_heads(split_heads: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """``split_heads(x, num_heads)``: (B, T, H*d) -> (B, H, T, d), head h = slice h of d_model.

    Compared with the vectors cut into H pieces by ``torch.split`` and stacked as heads.
    """

    def diagnose(got, expected, args, kwargs):
        x, heads = args
        batch, seq_len, width = x.shape
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if tuple(got.shape) == (batch, seq_len, heads, width // heads) and heads != seq_len:
            return (f"shape {tuple(got.shape)} is (B, T, H, d): the head axis must come before "
                    "the time axis, so that each head sees all positions")
        # independent of the reference: cut each vector into H pieces, stack them as heads
        expected = torch.stack(x.split(width // heads, dim=-1), dim=1)  # (B, H, T, d)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, H, T, d) = {tuple(expected.shape)}"
        if torch.equal(got, expected):
            return None
        if torch.equal(got, x.reshape(batch, heads, seq_len, width // heads)):
            return ("right shape, wrong values: reshaping straight to (B, H, T, d) mixes "
                    "positions into heads; each token's vector must be cut into H pieces first")
        return "right shape, wrong values: head h should hold x[..., h*d:(h+1)*d] for every position"

    return run_check("split_heads", split_heads, solutions.split_heads, _split_cases(), diagnose,
                     hint=True)


def _repeat_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    shapes = [(1, 3, 4, 2, 9), (2, 2, 5, 4, 8), (1, 4, 3, 2, 4), (2, 1, 3, 2, 3)]
    return [
        ((torch.randn(b, hkv, t, d, generator=generator), heads), {})
        for b, hkv, t, d, heads in shapes
    ]


def check_repeat_kv_heads(
    repeat_kv_heads: Callable[[torch.Tensor, int], torch.Tensor],
) -> CheckResult:
    """``repeat_kv_heads(kv, num_heads)``: (B, Hkv, T, d) -> (B, H, T, d), head h reads h // group.

    Compared with transformers' ``repeat_kv`` (the function its Llama attention uses).
    """

    def diagnose(got, expected, args, kwargs):
        from transformers.models.llama.modeling_llama import repeat_kv

        kv, heads = args
        expected = repeat_kv(kv, heads // kv.shape[1])  # transformers' own Llama code
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.shape != expected.shape:
            return (f"shape {tuple(got.shape)}, expected (B, num_heads, T, d) = "
                    f"{tuple(expected.shape)}")
        if torch.equal(got, expected):
            return None
        group = heads // kv.shape[1]
        if torch.equal(got, kv.repeat(1, group, 1, 1)):
            return ("query head h got KV head h % Hkv (the KV heads were tiled as a block): "
                    "Llama groups *consecutive* query heads, so head h reads KV head h // group")
        return "right shape, wrong values: query head h should read KV head h // (H // Hkv)"

    return run_check("repeat_kv_heads", repeat_kv_heads, solutions.repeat_kv_heads,
                     _repeat_cases(), diagnose, hint=True)


# --------------------------------------------------------------------------------------
# check_gqa: the learner's GroupedQueryAttention against real models
# --------------------------------------------------------------------------------------


@cache
def _bundled_encoder():
    from course_utils.models import load_encoder

    return load_encoder().model


@cache
def _bundled_decoder():
    from course_utils.models import load_decoder

    return load_decoder().model


@dataclass
class _GQACase:
    """One construction + one forward call, with what the real model computed."""

    label: str
    d_model: int
    n_heads: int
    n_kv_heads: int
    rope_base: float | None
    bias: bool
    state: dict[str, torch.Tensor]  # HF Llama names: q_proj.weight, ..., o_proj.weight
    x: torch.Tensor  # (B, T, C)
    positions: torch.Tensor  # (T,)
    mask: torch.Tensor | None  # (T, T_total) boolean or None
    past_kv: tuple[torch.Tensor, torch.Tensor] | None
    out: torch.Tensor  # expected (B, T, C), from the real module
    k: torch.Tensor  # expected cache (B, KV, T_total, hd)
    v: torch.Tensor
    unrotated_k: torch.Tensor | None = None  # the cache's keys before RoPE (a typical slip)
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.head_dim = self.d_model // self.n_heads

    def __repr__(self) -> str:  # run_check may print a case: keep it short
        return f"<{self.label}>"


@dataclass
class _Outcome:
    out: object = None
    kv: object = None
    error: str | None = None


def _runner(cls: type) -> Callable[[_GQACase], _Outcome]:
    """Build ``cls`` for a case, load the case's weights, call it; errors become outcomes."""

    def run(case: _GQACase) -> _Outcome:
        call = (f"{getattr(cls, '__name__', 'GroupedQueryAttention')}({case.d_model}, "
                f"{case.n_heads}, {case.n_kv_heads}, rope_base={case.rope_base}, bias={case.bias})")
        try:
            module = cls(case.d_model, case.n_heads, case.n_kv_heads, rope_base=case.rope_base,
                         bias=case.bias)
        except (NotImplementedError, CheckTimeout):
            raise
        except Exception as error:  # the learner's code: report in words
            return _Outcome(error=f"{call} raised {type(error).__name__}: {error}")
        try:
            module.load_state_dict(case.state)
        except Exception as error:
            message = str(error).split("\n\t")[0]
            return _Outcome(error=(
                f"could not load the model's attention weights into {call}: {message}; the "
                "projections must be nn.Linear submodules named q_proj, k_proj, v_proj, o_proj "
                f"(HF Llama's names), bias only when bias=True, shapes {_shapes(case)}"))
        module.eval()
        try:
            with torch.no_grad():
                result = module(case.x, case.positions, case.mask, case.past_kv)
        except (NotImplementedError, CheckTimeout):
            raise
        except Exception as error:
            where = ("when given past_kv (the keys and values of earlier positions)"
                     if case.past_kv is not None else "in forward")
            advice = (": the cache (B, n_kv_heads, T, head_dim) grows along the time axis (dim 2); "
                      "past and new keys are joined there" if case.past_kv is not None else "")
            return _Outcome(error=f"raised {type(error).__name__} {where}: {error}{advice}")
        if not (isinstance(result, tuple) and len(result) == 2):
            return _Outcome(error=(f"forward returned {type(result).__name__}; it must return "
                                   "(output, (k, v)): the output and the layer's new KV cache"))
        return _Outcome(out=result[0], kv=result[1])

    return run


def _shapes(case: _GQACase) -> str:
    return ", ".join(f"{name} {tuple(value.shape)}" for name, value in case.state.items()
                     if name.endswith("weight"))


def _variant(case: _GQACase, *, interleave: bool = True, rope_q: bool = True, rope_k: bool = True,
             rope_v: bool = False, scale: bool = True, use_mask: bool = True, softmax_dim: int = -1,
             given_positions: bool = True, use_past: bool = True, out_proj: bool = True) -> torch.Tensor:
    """The attention output with one typical slip switched on (for diagnoses only)."""
    s = case.state
    B, T, _ = case.x.shape
    hd, H, KV = case.head_dim, case.n_heads, case.n_kv_heads

    def linear(name: str, x: torch.Tensor) -> torch.Tensor:
        bias = s.get(f"{name}.bias")
        return x @ s[f"{name}.weight"].T + (0 if bias is None else bias)

    q = linear("q_proj", case.x).view(B, T, H, hd).transpose(1, 2)
    k = linear("k_proj", case.x).view(B, T, KV, hd).transpose(1, 2)
    v = linear("v_proj", case.x).view(B, T, KV, hd).transpose(1, 2)
    positions = case.positions if given_positions else torch.arange(T)
    if case.rope_base is not None:
        q = solutions.apply_rope(q, positions, case.rope_base) if rope_q else q
        k = solutions.apply_rope(k, positions, case.rope_base) if rope_k else k
        v = solutions.apply_rope(v, positions, case.rope_base) if rope_v else v
    if case.past_kv is not None and use_past:
        past_k, past_v = case.past_kv
        if not rope_k and case.unrotated_k is not None:
            past_k = case.unrotated_k[:, :, : past_k.shape[2]]
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    group = H // KV
    if interleave:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    else:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(hd) if scale else 1.0)
    if case.mask is not None and use_mask and (case.past_kv is None or use_past):
        scores = scores.masked_fill(~case.mask, float("-inf"))
    out = (scores.softmax(dim=softmax_dim) @ v).transpose(1, 2).reshape(B, T, H * hd)
    return linear("o_proj", out) if out_proj else out


def _slips(case: _GQACase) -> list[tuple[dict, str]]:
    """(variant switches, diagnosis) for the slips that can show in this case."""
    slips: list[tuple[dict, str]] = []
    if 1 < case.n_kv_heads < case.n_heads:
        slips.append(({"interleave": False}, (
            "query head h read KV head h % n_kv_heads (the KV heads were tiled as a block, "
            ".repeat-style): Llama groups consecutive query heads, head h reads KV head "
            "h // (n_heads // n_kv_heads)")))
    if case.rope_base is not None:
        slips += [
            ({"rope_q": False, "rope_k": False}, "RoPE is missing: rotate q and k by their positions "
             "(apply_rope with rope_base) before the scores"),
            ({"rope_q": False}, "RoPE is applied to k but not to q: rotate both"),
            ({"rope_k": False}, "RoPE is applied to q but not to k: rotate both"),
            ({"rope_v": True}, "RoPE was applied to v too: only q and k are rotated (positions "
             "enter the scores, not the values)"),
        ]
        if case.past_kv is not None:
            slips.append(({"given_positions": False}, (
                "RoPE used positions 0..T-1 instead of the `positions` argument: with a cache "
                "the new token sits at position T_past, not 0")))
    slips += [
        ({"scale": False}, "the scores are not divided by √head_dim"),
        ({"softmax_dim": -2}, "softmax over the wrong axis: each query's weights over the keys "
         "(the last axis) must sum to 1"),
        ({"out_proj": False}, "the output projection o_proj is missing (it mixes the "
         "concatenated heads)"),
    ]
    if case.mask is not None and not bool(case.mask.all()):
        slips.append(({"use_mask": False}, (
            "the mask is not applied: future keys are visible (fill the scores where the mask "
            "is False with -inf before the softmax)")))
    if case.past_kv is not None:
        slips.append(({"use_past": False}, (
            "past_kv is ignored: the new token attended only to itself; join the past keys "
            "and values in front of the new ones")))
    return slips


def _close(a: object, b: torch.Tensor, tolerance: float = 1e-4) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.isfinite(a).all()) and (a - b).abs().max().item() < tolerance)


def _diagnose_gqa(got: _Outcome, expected: _Outcome, args: tuple, kwargs: dict) -> str | None:
    (case,) = args
    where = case.label
    if got.error:
        return f"{where}: {got.error}"
    out = got.out
    if not isinstance(out, torch.Tensor):
        return f"{where}: the output is {type(out).__name__}, expected a tensor (B, T, C)"
    if tuple(out.shape) != tuple(case.out.shape):
        return (f"{where}: output shape {tuple(out.shape)}, expected (B, T, C) = "
                f"{tuple(case.out.shape)}")
    if not bool(torch.isfinite(out).all()):
        return (f"{where}: NaN or inf in the output: is the mask inverted? True = may attend, "
                "so the blocked scores are where the mask is False")
    diff = (out - case.out).abs().max().item()
    if diff > GQA_TOLERANCE:
        for switches, message in _slips(case):
            if _close(out, _variant(case, **switches)):
                return f"{where}: {message}"
        return (f"{where}: the output differs from the model's attention by {diff:.2g} "
                f"(tolerance {GQA_TOLERANCE:g})")
    kv = got.kv
    if not (isinstance(kv, tuple | list) and len(kv) == 2
            and all(isinstance(t, torch.Tensor) for t in kv)):
        return f"{where}: the second value returned must be the cache (k, v), two tensors"
    k, v = kv
    expected_shape = tuple(case.k.shape)
    if tuple(k.shape) != expected_shape or tuple(v.shape) != expected_shape:
        B, KV, total, hd = expected_shape
        if k.shape[1:2] == (case.n_heads,) and case.n_heads != KV:
            return (f"{where}: the returned k/v have {case.n_heads} heads: return the cache "
                    f"before sharing, (B, n_kv_heads={KV}, T_total, head_dim)")
        if k.dim() == 4 and k.shape[2] != total:
            return (f"{where}: the returned k covers {k.shape[2]} positions, expected T_total = "
                    f"{total} (the past and the new ones)")
        return (f"{where}: returned k {tuple(k.shape)}, v {tuple(v.shape)}; expected "
                f"(B, n_kv_heads, T_total, head_dim) = {expected_shape}")
    if case.unrotated_k is not None and _close(k, case.unrotated_k, 1e-5):
        return (f"{where}: the returned k is not rotated: cache the keys after RoPE (as "
                "transformers does), so later steps never rotate them again")
    k_diff, v_diff = (k - case.k).abs().max().item(), (v - case.v).abs().max().item()
    if max(k_diff, v_diff) > GQA_TOLERANCE:
        if _close(k, case.v, 1e-5) and _close(v, case.k, 1e-5):
            return f"{where}: k and v are swapped in the returned cache"
        return (f"{where}: the returned cache differs from the model's (k by {k_diff:.2g}, v by "
                f"{v_diff:.2g}; tolerance {GQA_TOLERANCE:g})")
    return None


def _bert_case(encoder, seq_len: int = 9) -> _GQACase:
    """The multi-head case: MiniLM's layer 0, as many KV heads as query heads, biases, no RoPE."""
    layer_index = 0
    layer = encoder.encoder.layer[layer_index]
    attention = layer.attention.self
    heads = attention.num_attention_heads
    d_model = attention.query.in_features
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1000, encoder.config.vocab_size, (1, seq_len), generator=generator)
    with torch.no_grad():
        x = encoder.embeddings(input_ids=ids)  # (1, T, C): layer 0's input
        out = layer.attention.output.dense(attention(x)[0])
        k = attention.key(x).view(1, seq_len, heads, -1).transpose(1, 2)
        v = attention.value(x).view(1, seq_len, heads, -1).transpose(1, 2)
    state = {}
    for ours, theirs in (("q_proj", attention.query), ("k_proj", attention.key),
                         ("v_proj", attention.value), ("o_proj", layer.attention.output.dense)):
        state[f"{ours}.weight"], state[f"{ours}.bias"] = theirs.weight.detach(), theirs.bias.detach()
    return _GQACase(f"MiniLM layer {layer_index} (multi-head: {heads} KV heads, biases, no RoPE)",
                    d_model, heads, heads, None, True, state, x, torch.arange(seq_len), None, None,
                    out, k, v)


def _rope_base(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layers a check needs have run."""


def record_llama_attention(decoder, ids: torch.Tensor, layers: tuple[int, ...]):
    """Run ``decoder`` on ``ids`` (1, T) up to the last of ``layers``, recording attention.

    Returns ``{layer: (input, output)}`` of each listed layer's ``self_attn`` (the normed
    hidden state it received, the output it returned, both (1, T, C)) and the
    ``DynamicCache`` the pass filled (it holds the layers that ran). The pass stops after
    the last layer needed.
    """
    from transformers import DynamicCache

    last = max(layers)
    records: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for index in layers:
        def hook(module, args, kwargs, output, index=index):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            records[index] = (hidden.detach().clone(), output[0].detach().clone())
            if index == last:
                raise _Stop

        handles.append(decoder.model.layers[index].self_attn.register_forward_hook(hook, with_kwargs=True))
    kv_cache = DynamicCache(config=decoder.config)
    try:
        with torch.no_grad():
            decoder(input_ids=ids, use_cache=True, past_key_values=kv_cache)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return records, kv_cache


def _llama_cases(decoder, layers: tuple[int, ...] = (0,), seq_len: int = 10) -> list[_GQACase]:
    """SmolLM2's attention modules, recorded inside a real forward pass with a DynamicCache."""
    config = decoder.config
    layers = tuple(sorted({min(i, config.num_hidden_layers - 1) for i in layers}))
    generator = torch.Generator().manual_seed(6)
    ids = torch.randint(0, config.vocab_size, (1, seq_len), generator=generator)
    records, cache_ = record_llama_attention(decoder, ids, layers)
    base = _rope_base(config)
    positions = torch.arange(seq_len)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    cases = []
    for index in layers:
        attention = decoder.model.layers[index].self_attn
        state = {name: value.detach() for name, value in attention.state_dict().items()}
        x, out = records[index]
        k, v = cache_.layers[index].keys, cache_.layers[index].values
        with torch.no_grad():
            unrotated = attention.k_proj(x).view(1, seq_len, kv_heads, -1).transpose(1, 2)
        shape = f"{heads} query / {kv_heads} KV heads, RoPE θ={base:g}"
        cases.append(_GQACase(f"SmolLM2 layer {index} ({shape}), {seq_len} tokens, causal mask",
                              config.hidden_size, heads, kv_heads, base, False, state, x, positions,
                              causal, None, out, k, v, unrotated))
        if index == layers[-1]:  # one decoding step: the last token with the cache of the others
            past = (k[:, :, :-1], v[:, :, :-1])
            cases.append(_GQACase(
                f"SmolLM2 layer {index}, one decoding step (token {seq_len - 1} with past_kv of "
                f"{seq_len - 1} positions, mask None)", config.hidden_size, heads, kv_heads, base,
                False, state, x[:, -1:], positions[-1:], None, past, out[:, -1:], k, v, unrotated))
    return cases


def _random_llama_case() -> _GQACase:
    """A random-weight transformers LlamaAttention with biases, batch 2 (an independent oracle)."""
    from transformers import DynamicCache, LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                         head_dim=8, attention_bias=True, rope_theta=10000.0,
                         intermediate_size=64, num_hidden_layers=1)
    config._attn_implementation = "eager"
    generator = torch.Generator().manual_seed(7)
    attention = LlamaAttention(config, layer_idx=0).eval()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    x = torch.randn(2, 6, 48, generator=generator)
    positions = torch.arange(6)
    cos_sin = LlamaRotaryEmbedding(config)(x, positions[None])
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    additive = torch.zeros(6, 6).masked_fill(~causal, float("-inf"))[None, None]
    kv_cache = DynamicCache(config=config)
    with torch.no_grad():
        out = attention(x, cos_sin, additive, past_key_values=kv_cache)[0]
        unrotated = attention.k_proj(x).view(2, 6, 2, 8).transpose(1, 2)
    state = {name: value.detach() for name, value in attention.state_dict().items()}
    return _GQACase("random-weight LlamaAttention (6 query / 2 KV heads, biases, batch 2)", 48, 6, 2,
                    10000.0, True, state, x, positions, causal, None, out,
                    kv_cache.layers[0].keys, kv_cache.layers[0].values, unrotated)


def gqa_cases(decoder=None, encoder=None) -> list[_GQACase]:
    """The cases ``check_gqa`` runs (the bundled models when none are given)."""
    decoder = _bundled_decoder() if decoder is None else decoder
    encoder = _bundled_encoder() if encoder is None else encoder
    return [_bert_case(encoder), *_llama_cases(decoder, layers=(0, 2)), _random_llama_case()]


def check_gqa(GroupedQueryAttention: type, decoder=None, encoder=None) -> CheckResult:  # noqa: N803
    """The ``gqa`` piece: build it, load real weights, compare with transformers' modules.

    ``decoder`` / ``encoder``: already loaded ``LlamaForCausalLM`` / ``BertModel`` (the
    bundled SmolLM2 / MiniLM when None). Tolerance ``GQA_TOLERANCE`` on outputs and cache.
    """
    cases = [((case,), {}) for case in gqa_cases(decoder, encoder)]
    return run_check("GroupedQueryAttention", _runner(GroupedQueryAttention),
                     _runner(solutions.GroupedQueryAttention), cases, _diagnose_gqa, hint=True)

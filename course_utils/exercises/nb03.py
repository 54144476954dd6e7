"""Checkers for notebook 03 (positional encoding).

- ``check_sinusoidal_encoding`` (03.1): the learner's ``sinusoidal_encoding(seq_len, d_model,
  base)`` against ``course_utils.positional.sinusoidal_encoding`` and against values of the
  formula computed one by one with ``math.sin`` / ``math.cos`` (including the sin/cos
  interleaving: column 2i is a sine, column 2i+1 a cosine).
- ``check_apply_rope`` (03.2, piece ``rope``): the learner's ``apply_rope(x, positions, base)``
  applied to SmolLM2's real layer-0 queries and keys (from its own ``q_proj`` / ``k_proj``,
  base θ from its config) must equal what the model itself computes — its
  ``rotary_emb`` cos/sin tables and transformers' ``apply_rotary_pos_emb`` — to ≤ 1e-5, at
  positions from 0 and from 1000; and on random tensors of other shapes and bases, equal the
  same transformers code. Tolerance: ≤ 1e-5 plus the float32 rounding of the angles
  (``_rope_tolerance``: ≤ 6e-5 at positions 0…10, a few 1e-3 near position 1000, where
  equally correct formulas differ by ~1e-4).

Wrong answers are diagnosed by comparing with the typical slips computed on the same input
(sin and cos swapped, all sines then all cosines, exponent i/d instead of 2i/d, the base
ignored, positions off by one, adjacent pairs instead of rotate-half, the rotate_half sign
flipped, ...). Nothing here prints a solution.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch

from course_utils import positional
from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb03 as solutions

TOLERANCE = 1e-5
ROPE_SENTENCE = "Rotary embeddings rotate queries and keys by their position."
ROPE_OFFSET = 1000


def _max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).abs().max())


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float = TOLERANCE) -> bool:
    return got.shape == expected.shape and bool(torch.isfinite(got).all()) and _max_diff(got, expected) <= tolerance


def _rope_tolerance(x: torch.Tensor, positions: torch.Tensor) -> float:
    """1e-5 plus what float32 angles can be off by at these positions, whatever the formula's order.

    An angle p·θ near p radians is rounded to ~p·2⁻²³ in float32 (a few operations: 4×), and
    an error δ in the angle moves a pair of length r by up to r·δ. At positions 0…10 this is
    ≤ 1e-5 + 5e-5; at positions near 1000 (angles of ~1000 rad) a few 1e-3: equally correct
    formulas (p / base^(2i/d), p · base^(-2i/d), float64 angles) differ by ~1e-4 there.
    """
    d = x.shape[-1]
    pair_norm = float(torch.sqrt(x[..., : d // 2].double() ** 2 + x[..., d // 2:].double() ** 2).max())
    return TOLERANCE + 4 * 2.0 ** -23 * float(positions.max()) * pair_norm


def _safe(diagnose: Callable) -> Callable:
    """A diagnosis that cannot crash the notebook on a strange output (checkers never raise)."""

    def wrapped(got, expected, args, kwargs):
        try:
            return diagnose(got, expected, args, kwargs)
        except Exception as error:  # the learner's output: report, don't raise
            return f"could not compare your output ({type(error).__name__}: {error})"

    return wrapped


# --- 03.1 sinusoidal table -------------------------------------------------------------------


def _sinusoid_variant(seq_len: int, d_model: int, base: float, *, swap: bool = False, blocks: bool = False,
                      exponent_i: bool = False, start: int = 0) -> torch.Tensor:
    """A (possibly wrong) sinusoidal table, for naming a slip."""
    positions = torch.arange(start, start + seq_len, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = positions / base ** ((i if exponent_i else 2 * i) / d_model)
    first, second = (torch.cos(angles), torch.sin(angles)) if swap else (torch.sin(angles), torch.cos(angles))
    if blocks:
        return torch.cat((first, second), dim=1)
    return torch.stack((first, second), dim=-1).reshape(seq_len, d_model)


def _formula_spots(seq_len: int, d_model: int, base: float) -> list[tuple[int, int, float]]:
    """(p, column, value) of the formula, computed one entry at a time with math."""
    spots = []
    for p in sorted({0, min(1, seq_len - 1), seq_len // 2, seq_len - 1}):
        for i in sorted({0, 1, d_model // 4, d_model // 2 - 1}):
            if 2 * i + 1 >= d_model:
                continue
            angle = p / base ** (2 * i / d_model)
            spots += [(p, 2 * i, math.sin(angle)), (p, 2 * i + 1, math.cos(angle))]
    return spots


def check_sinusoidal_encoding(sinusoidal_encoding: Callable[..., torch.Tensor]) -> CheckResult:
    """``sinusoidal_encoding(seq_len, d_model, base)``: sin in even columns, cos in odd ones."""

    def diagnose(got, expected, args, kwargs):
        seq_len, d_model, base = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != (seq_len, d_model):
            return f"shape {tuple(got.shape)}, expected (seq_len, d_model) = {(seq_len, d_model)}"
        if not got.dtype.is_floating_point:
            return f"dtype {got.dtype}: expected floating-point values"
        library = positional.sinusoidal_encoding(seq_len, d_model, base)
        spots_ok = all(abs(float(got[p, j]) - value) <= TOLERANCE for p, j, value in _formula_spots(seq_len, d_model, base))
        if _close(got, library) and spots_ok:
            return None
        slips = [
            (dict(swap=True), "sin and cos are swapped: the sine goes in the even columns 0, 2, 4, …"),
            (dict(blocks=True), "all sines first, then all cosines: interleave them "
                                "(column 2i is a sine, column 2i+1 the cosine of the same angle)"),
            (dict(exponent_i=True), "the frequency exponent is off: pair i (columns 2i, 2i+1) uses "
                                    "base^(2i / d_model), not base^(i / d_model)"),
            (dict(start=1), "positions are off by one: the first row is position 0 (all sines 0, all cosines 1)"),
        ]
        for variant, message in slips:
            if _close(got, _sinusoid_variant(seq_len, d_model, base, **variant).float()):
                return message
        if base != 10000.0 and _close(got, positional.sinusoidal_encoding(seq_len, d_model)):
            return f"the base argument is ignored: with base={base:g} the table must change (you used 10000)"
        p, j, value = next((p, j, v) for p, j, v in _formula_spots(seq_len, d_model, base)
                           if abs(float(got[p, j]) - v) > TOLERANCE)
        return (f"PE[{p}, {j}] = {float(got[p, j]):.5f}, but the formula gives {value:.5f} "
                f"(largest difference over the table: {_max_diff(got, library):.3g})")

    cases = [((seq_len, d_model, base), {}) for seq_len, d_model, base in
             ((4, 8, 10000.0), (50, 16, 10000.0), (128, 64, 10000.0), (1, 2, 10000.0), (30, 12, 100.0))]
    return run_check("sinusoidal_encoding", sinusoidal_encoding, solutions.sinusoidal_encoding, cases,
                     _safe(diagnose), hint=True)


# --- 03.2 RoPE against SmolLM2 ---------------------------------------------------------------

_DEFAULT_DECODER: list = []
_MODEL_CASES: dict[int, list] = {}


def _has_rope(model) -> bool:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return (getattr(inner, "rotary_emb", None) is not None and layers is not None
            and hasattr(layers[0], "self_attn") and hasattr(layers[0].self_attn, "q_proj")
            and getattr(model.config, "rope_parameters", None) is not None
            and model.config.rope_parameters.get("rope_type", "default") == "default"
            and model.config.rope_parameters.get("partial_rotary_factor", 1.0) == 1.0)


def _rope_model(model):
    """``(model, tokenizer)`` of a Llama-style decoder with plain RoPE; the bundled SmolLM2 otherwise."""
    if model is not None and _has_rope(model):
        return model, None
    if not _DEFAULT_DECODER:
        from course_utils.models import load_decoder

        _DEFAULT_DECODER.extend(load_decoder())
    return _DEFAULT_DECODER[0], _DEFAULT_DECODER[1]


def _model_rope_cases(model, tokenizer) -> list[tuple[tuple, torch.Tensor]]:
    """SmolLM2's layer-0 q and k for a sentence, and the model's own rotated versions."""
    if id(model) in _MODEL_CASES:
        return _MODEL_CASES[id(model)]
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path or model.name_or_path)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    base = float(config.rope_parameters["rope_theta"])
    apply_rotary_pos_emb = sys.modules[type(model.model.layers[0].self_attn).__module__].apply_rotary_pos_emb
    ids = tokenizer(ROPE_SENTENCE, return_tensors="pt")["input_ids"]  # (1, T)
    T = ids.shape[1]
    layer0 = model.model.layers[0]
    cases = []
    with torch.no_grad():
        hidden = layer0.input_layernorm(model.model.embed_tokens(ids))  # (1, T, C)
        q = layer0.self_attn.q_proj(hidden).view(1, T, heads, head_dim).transpose(1, 2)  # (1, H, T, d)
        k = layer0.self_attn.k_proj(hidden).view(1, T, kv_heads, head_dim).transpose(1, 2)  # (1, KV, T, d)
        for offset in (0, ROPE_OFFSET):
            positions = torch.arange(T) + offset  # (T,)
            cos, sin = model.model.rotary_emb(hidden, positions[None])  # the model's own tables
            q_model, k_model = apply_rotary_pos_emb(q, k, cos, sin)
            cases += [((q.clone(), positions, base), q_model), ((k.clone(), positions, base), k_model)]
    _MODEL_CASES[id(model)] = cases
    return cases


def _transformers_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """transformers' own Llama RoPE (rotary embedding module + apply_rotary_pos_emb) on any x."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    head_dim = x.shape[-1]
    config = LlamaConfig(hidden_size=head_dim, num_attention_heads=1, head_dim=head_dim,
                         rope_parameters={"rope_type": "default", "rope_theta": base})
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None])  # (1, T, d)
    rotated, _ = apply_rotary_pos_emb(x, x, cos[0], sin[0], unsqueeze_dim=0)
    return rotated.reshape(x.shape)


def _rope_variant(x: torch.Tensor, positions: torch.Tensor, base: float, *, swap: bool = False,
                  exponent_i: bool = False, sign: float = 1.0) -> torch.Tensor:
    """Rotate-half RoPE with one typical slip, for naming it."""
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    inv_freq = base ** (-(i if exponent_i else 2 * i) / d)
    angles = positions.double().unsqueeze(-1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    x1, x2 = x[..., : d // 2].double(), x[..., d // 2:].double()
    rotated_half = sign * torch.cat((-x2, x1), dim=-1)
    cos, sin = (angles.sin(), angles.cos()) if swap else (angles.cos(), angles.sin())
    return x.double() * cos + rotated_half * sin


def check_apply_rope(apply_rope: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
                     model=None) -> CheckResult:
    """``apply_rope(x (..., T, d), positions (T,), base)`` = SmolLM2's own rotation of its q and k.

    ``model``: a Llama-family decoder with plain RoPE (Llama, Qwen2, Mistral); by default, or
    when the given model has no RoPE, the bundled SmolLM2 is loaded.
    """
    model, tokenizer = _rope_model(model)
    model_cases = _model_rope_cases(model, tokenizer)
    generator = torch.Generator().manual_seed(3)
    random_cases = []
    for shape, base in (((5, 8), 10000.0), ((3, 6, 16), 10000.0), ((2, 3, 7, 64), 500000.0)):
        x = torch.randn(*shape, generator=generator)
        positions = torch.arange(shape[-2]) * 3 + 1  # not 0..T-1, so position ≠ index
        random_cases.append(((x, positions, base), _transformers_rope(x, positions, base)))
    # fresh copies each time: a learner's in-place edit of x must not corrupt the cached cases
    model_cases = [((x.clone(), positions.clone(), base), expected) for (x, positions, base), expected in model_cases]
    oracle = {id(args[0]): expected for args, expected in model_cases + random_cases}
    from_model = {id(args[0]) for args, _ in model_cases}

    def diagnose(got, expected, args, kwargs):
        x, positions, base = args
        truth = oracle[id(x)]  # what the model / transformers computes, not the reference solution
        where = "SmolLM2's q/k" if id(x) in from_model else f"a random x {tuple(x.shape)}"
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != x.shape:
            return f"on {where}: shape {tuple(got.shape)}, expected x's shape {tuple(x.shape)}"
        tolerance = _rope_tolerance(x, positions)
        if _close(got, truth, tolerance):
            return None
        if not torch.isfinite(got).all():
            return f"on {where}: the output has NaN or inf values"
        if _close(got, x, tolerance):
            return f"on {where}: the output equals the input: nothing was rotated"
        slips = [
            (lambda: positional.apply_rope_adjacent_pairs(x, positions, base),
             "you rotated adjacent pairs (x[2i], x[2i+1]) (the RoFormer / Meta layout); Hugging Face's "
             "Llama (SmolLM2) pairs x[i] with x[i + d/2]: the rotate-half layout"),
            (lambda: _rope_variant(x, positions, base, swap=True),
             "cos and sin are swapped: x is multiplied by the cosine, rotate_half(x) by the sine"),
            (lambda: _rope_variant(x, positions, base, sign=-1.0),
             "the rotation goes the wrong way: check the sign in rotate_half (which half is negated)"),
            (lambda: _rope_variant(x, positions, base, exponent_i=True),
             "the frequencies are off: pair i turns by base^(-2i/d) per position, not base^(-i/d)"),
            (lambda: _rope_variant(x, positions + 1, base), "positions are off by one (you rotated by p + 1)"),
            (lambda: _rope_variant(x, (positions - 1).clamp(min=0), base), "positions are off by one (you rotated by p - 1)"),
            (lambda: _rope_variant(x, torch.arange(x.shape[-2]), base),
             "you used 0..T-1 instead of the given positions"),
            (lambda: _rope_variant(x, positions, 10000.0),
             f"the base argument is ignored: this case uses base={base:g}, you rotated with 10000"),
        ]
        for variant, message in slips:
            candidate = variant()
            if _close(got, candidate, tolerance) and not _close(candidate, truth, tolerance):
                return f"on {where}: {message}"
        return f"on {where}: values differ from the model's rotation by up to {_max_diff(got, truth):.3g}"

    cases = [(args, {}) for args, _ in model_cases + random_cases]
    return run_check("apply_rope", apply_rope, solutions.apply_rope, cases, _safe(diagnose), hint=True)

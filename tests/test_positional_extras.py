"""course_utils.positional's ALiBi, T5 buckets, RoPE decay bound and context extension, each
checked against transformers' own code (Bloom's ALiBi, T5Attention, the RoPE init functions)
or against the paper's closed form."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.t5.modeling_t5 import T5Attention

from course_utils.positional import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_decay_bound,
    rope_extended_frequencies,
    t5_relative_position_bucket,
)

# --- ALiBi -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [1, 2, 4, 8, 16, 32, 64])
def test_alibi_slopes_closed_form_for_powers_of_two(n_heads):
    expected = torch.tensor([2.0 ** (-8 * h / n_heads) for h in range(1, n_heads + 1)])
    assert torch.allclose(alibi_slopes(n_heads), expected, rtol=1e-7, atol=0)


def test_alibi_slopes_paper_examples():
    """The paper (§3): 8 heads -> 1/2, 1/4, ..., 1/256; 16 heads interleave 1/√2 between them."""
    assert torch.equal(alibi_slopes(8), torch.tensor([1 / 2 ** h for h in range(1, 9)]))
    assert torch.allclose(alibi_slopes(16)[:2], torch.tensor([2 ** -0.5, 2 ** -1.0]))


@pytest.mark.parametrize("n_heads", [1, 3, 5, 6, 8, 12, 20, 24, 40, 80, 112])
def test_alibi_slopes_equal_bloom(n_heads):
    """Non-powers of 2 use the interpolation rule; Bloom computes it in float32 (1-ulp gaps)."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    bloom = _get_alibi_slopes(n_heads, torch.device("cpu"))
    assert torch.allclose(alibi_slopes(n_heads), bloom, rtol=1e-6, atol=0)


def test_alibi_slopes_interpolation_rule():
    """12 heads = the 8 slopes of 8 heads, then the odd-indexed slopes of 16 heads."""
    assert torch.equal(alibi_slopes(12)[:8], alibi_slopes(8))
    assert torch.allclose(alibi_slopes(12)[8:], alibi_slopes(16)[0::2][:4])


@pytest.mark.parametrize("n_heads", [4, 6, 12])
def test_alibi_bias_gives_bloom_attention(n_heads):
    """Bloom adds slope·j (key position) and relies on softmax ignoring a per-row constant;
    our -slope·(i - j) with the causal mask gives the same attention weights."""
    n = 9
    scores = torch.randn(n_heads, n, n, generator=torch.Generator().manual_seed(0))
    ours = torch.softmax(scores + alibi_bias(n, n_heads), dim=-1)
    bloom_bias = build_alibi_tensor(torch.ones(1, n, dtype=torch.long), n_heads, torch.float32)  # (H, 1, n)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    theirs = torch.softmax((scores + bloom_bias).masked_fill(~causal, float("-inf")), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_alibi_bias_values_and_shift_invariance():
    bias = alibi_bias(5, 2)
    assert bias.shape == (2, 5, 5)
    assert bias[0, 4, 1].item() == pytest.approx(-alibi_slopes(2)[0].item() * 3)
    assert torch.isinf(bias[:, 1, 2]).all() and (bias.diagonal(dim1=-2, dim2=-1) == 0).all()
    big = alibi_bias(12, 2)
    assert torch.equal(big[:, 7:12, 7:12], bias)  # depends on i - j only


@pytest.mark.parametrize(("args", "message"), [((0, 4), "n must be a positive integer"),
                                               ((4, 0), "n_heads must be a positive integer")])
def test_alibi_bad_input(args, message):
    with pytest.raises(ValueError, match=f"^alibi_bias: {message}"):
        alibi_bias(*args)


# --- T5 buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (16, 64), (8, 20), (64, 512), (4, 10)])
def test_t5_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-600, 601)
    grid = relative[None, :] - relative[::7, None]  # a 2-D grid of key - query positions too
    for rel in (relative, grid):
        ours = t5_relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
        theirs = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
        assert ours.shape == rel.shape and torch.equal(ours, theirs)


def test_t5_buckets_structure():
    rel = torch.arange(-200, 201)
    buckets = t5_relative_position_bucket(rel)  # bidirectional, 32 buckets, max distance 128
    assert torch.equal(buckets[193:201].flip(0), torch.arange(8))  # keys at or before: distances 0..7 exact
    assert torch.equal(buckets[201:208], torch.arange(17, 24))  # keys after the query: upper half
    assert buckets.max() == 31 and buckets.min() == 0
    assert (buckets[rel <= -128] == 15).all() and (buckets[rel >= 128] == 31).all()
    causal = t5_relative_position_bucket(rel, bidirectional=False)
    assert (causal[rel > 0] == 0).all()


def test_t5_buckets_bad_input():
    with pytest.raises(ValueError, match="^t5_relative_position_bucket: relative_position must be an integer"):
        t5_relative_position_bucket(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="^t5_relative_position_bucket: num_buckets must be even"):
        t5_relative_position_bucket(torch.tensor([1]), num_buckets=7)


# --- RoPE decay bound ----------------------------------------------------------------------


def test_rope_decay_bound_bounds_real_scores():
    """|RoPE(q, m)·RoPE(k, n)| ≤ max|h_{i+1} - h_i| · Σ_j |S_j(m - n)| for random q, k (Abel)."""
    d, base = 64, 10000.0
    generator = torch.Generator().manual_seed(0)
    distances = torch.arange(0, 300, 7)
    bound_mean = rope_decay_bound(d, base, distances)  # mean_j |S_j|
    for _ in range(5):
        q, k = torch.randn(2, d, generator=generator, dtype=torch.float64)
        h = torch.complex(q[: d // 2], q[d // 2:]) * torch.complex(k[: d // 2], -k[d // 2:])  # rotate-half pairs
        h_step = (torch.cat((h, h.new_zeros(1)))[1:] - h).abs().max()  # with h_{d/2} = 0
        for r, mean_s in zip(distances.tolist(), bound_mean.tolist(), strict=True):
            score = float(apply_rope(q[None], torch.tensor([r]), base) @ apply_rope(k[None], torch.tensor([0]), base).T)
            assert abs(score) <= h_step * mean_s * (d // 2) + 1e-9


def test_rope_decay_bound_decays_and_starts_at_its_maximum():
    bound = rope_decay_bound(128, 10000.0, torch.arange(0, 257))
    assert bound[0] == pytest.approx((64 + 1) / 2)  # |S_j(0)| = j: mean of 1..64
    assert bound[128:].max() < 0.4 * bound[0]


# --- context extension ---------------------------------------------------------------------


def _transformers_inv_freq(rope_type: str, head_dim: int, base: float, factor: float, context: int):
    params = {"rope_type": rope_type, "rope_theta": base, "factor": factor}
    max_positions = int(context * factor)
    kwargs = {}
    if rope_type == "yarn":
        params["original_max_position_embeddings"] = context
    if rope_type == "dynamic":  # dynamic NTK at length factor·L with factor 1 = static NTK-aware base
        params["factor"], max_positions, kwargs = 1.0, context, {"seq_len": int(context * factor)}
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=max_positions,
                         rope_parameters=params)
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, **kwargs)


@pytest.mark.parametrize(("head_dim", "base", "context", "factor"),
                         [(64, 100000.0, 8192, 4.0), (128, 10000.0, 4096, 8.0), (64, 500000.0, 2048, 2.0)])
@pytest.mark.parametrize(("method", "rope_type"),
                         [("position_interpolation", "linear"), ("ntk", "dynamic"), ("yarn", "yarn")])
def test_context_extension_equals_transformers(head_dim, base, context, factor, method, rope_type):
    ours, our_scale = rope_extended_frequencies(head_dim, base, factor, method, context)
    theirs, their_scale = _transformers_inv_freq(rope_type, head_dim, base, factor, context)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    assert our_scale == pytest.approx(their_scale)


def test_context_extension_properties():
    d, base, factor = 64, 100000.0, 4.0
    plain, _ = rope_extended_frequencies(d, base, factor, "none", 8192)
    pi, _ = rope_extended_frequencies(d, base, factor, "position_interpolation", 8192)
    ntk, _ = rope_extended_frequencies(d, base, factor, "ntk", 8192)
    yarn, scale = rope_extended_frequencies(d, base, factor, "yarn", 8192)
    assert torch.allclose(pi, plain / factor)
    assert ntk[0] == plain[0] and ntk[-1] == pytest.approx(plain[-1].item() / factor, rel=1e-5)
    assert yarn[0] == plain[0] and yarn[-1] == pytest.approx(plain[-1].item() / factor, rel=1e-6)
    assert scale == pytest.approx(0.1 * math.log(factor) + 1)
    with pytest.raises(ValueError, match="^rope_extended_frequencies: method must be one of"):
        rope_extended_frequencies(d, base, factor, "longrope", 8192)
    with pytest.raises(ValueError, match="^rope_extended_frequencies: factor must be"):
        rope_extended_frequencies(d, base, 0.5, "ntk", 8192)

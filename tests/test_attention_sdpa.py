"""scaled_dot_product_attention (torch and NumPy) = torch's SDPA and MiniLM's own maps.

Tolerances: float32 sums in a different order than torch's fused kernel, so 1e-6 absolute
on unit-scale random inputs; the NumPy twin runs in float64 against a float64 torch
reference at 1e-12; MiniLM's attention probabilities are recomputed to 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PADDED_PAIR
from course_utils.attention import scaled_dot_product_attention, scaled_dot_product_attention_numpy

TOL32 = 1e-6


def _qkv(*shape_qk, tk=None, dv=None, seed=0, dtype=torch.float32):
    """q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv) with a fixed seed."""
    *lead, tq, d = shape_qk
    tk = tq if tk is None else tk
    dv = d if dv is None else dv
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, tq, d, generator=g, dtype=dtype)
    k = torch.randn(*lead, tk, d, generator=g, dtype=dtype)
    v = torch.randn(*lead, tk, dv, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize(
    "shape, tk, dv",
    [((5, 8), None, None), ((2, 3, 7, 16), 4, 5), ((1, 12, 13, 32), None, None), ((3, 1, 2), 6, 3)],
)
def test_equals_torch_sdpa(shape, tk, dv):
    q, k, v = _qkv(*shape, tk=tk, dv=dv)
    out, weights = scaled_dot_product_attention(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=TOL32, rtol=0)
    manual = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    assert torch.allclose(weights, manual, atol=TOL32, rtol=0)


def test_equals_torch_sdpa_with_boolean_mask():
    q, k, v = _qkv(2, 4, 6, 8, tk=7)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 1, 6, 7, generator=g) > 0.3
    mask[..., 0] = True  # every query keeps at least one key (SDPA gives NaN otherwise)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, expected, atol=TOL32, rtol=0)
    assert torch.all(weights[~mask.expand_as(weights)] == 0)


def test_causal_mask_equals_is_causal():
    q, k, v = _qkv(2, 9, 8)
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=TOL32)


def test_numpy_twin_equals_torch_in_float64():
    q, k, v = _qkv(2, 3, 5, 4, tk=6, dv=3, dtype=torch.float64)
    mask = torch.ones(5, 6, dtype=torch.bool).tril(1)
    for m in (None, mask):
        out_t, w_t = scaled_dot_product_attention(q, k, v, m)
        out_n, w_n = scaled_dot_product_attention_numpy(
            q.numpy(), k.numpy(), v.numpy(), None if m is None else m.numpy()
        )
        assert np.abs(out_n - out_t.numpy()).max() < 1e-12
        assert np.abs(w_n - w_t.numpy()).max() < 1e-12


def test_numpy_twin_is_stable_for_large_scores():
    q = np.full((1, 4), 1000.0)
    k = np.array([[1000.0, 0, 0, 0], [999.0, 0, 0, 0]])
    v = np.eye(2)
    out, weights = scaled_dot_product_attention_numpy(q, k, v)
    assert np.all(np.isfinite(weights))
    expected = np.exp([0.0, -500.0])  # scores 500000 and 499500 after / sqrt(4)
    assert np.allclose(weights[0], expected / expected.sum())


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fully_masked_row_gives_zeros_not_nan(backend):
    q, k, v = _qkv(3, 4, tk=5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False  # query 1 may attend to nothing
    if backend == "torch":
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        out, weights = out.numpy(), weights.numpy()
    else:
        out, weights = scaled_dot_product_attention_numpy(q.numpy(), k.numpy(), v.numpy(), mask.numpy())
    assert not np.isnan(out).any() and not np.isnan(weights).any()
    assert np.all(weights[1] == 0) and np.all(out[1] == 0)
    assert np.allclose(weights[[0, 2]].sum(-1), 1.0)


def test_fully_masked_row_has_finite_gradients():
    q, k, v = _qkv(3, 4, tk=5)
    q.requires_grad_(True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("backend", [scaled_dot_product_attention, scaled_dot_product_attention_numpy])
@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, needle",
    [
        ((4, 8), (4, 7), (4, 7), "last dimension"),
        ((4, 8), (5, 8), (4, 3), "number of keys"),
        ((8,), (4, 8), (4, 8), "shapes"),
        ((2, 4, 8), (3, 4, 8), (3, 4, 8), "broadcast"),
    ],
)
def test_shape_errors_name_the_shapes(backend, q_shape, k_shape, v_shape, needle):
    def make(shape):
        return np.zeros(shape, np.float32) if backend is scaled_dot_product_attention_numpy else torch.zeros(shape)

    with pytest.raises(ValueError, match=needle) as info:
        backend(make(q_shape), make(k_shape), make(v_shape))
    assert str(q_shape).replace(",)", ")") in str(info.value) or str(k_shape) in str(info.value)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_mask_errors(backend):
    q, k, v = _qkv(3, 4, tk=5)
    bad_shape = torch.ones(4, 5, dtype=torch.bool)
    bad_dtype = torch.ones(3, 5)
    if backend == "numpy":
        q, k, v, bad_shape, bad_dtype = (t.numpy() for t in (q, k, v, bad_shape, bad_dtype))
        fn = scaled_dot_product_attention_numpy
    else:
        fn = scaled_dot_product_attention
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(3, 5\)"):
        fn(q, k, v, bad_shape)
    with pytest.raises(ValueError, match="boolean"):
        fn(q, k, v, bad_dtype)


@settings(max_examples=60, deadline=None)
@given(
    tq=st.integers(1, 6), tk=st.integers(1, 6), d=st.integers(1, 16),
    scale=st.floats(0.01, 30.0), seed=st.integers(0, 10_000),
)
def test_property_rows_sum_to_one_and_output_is_convex(tq, tk, d, scale, seed):
    q, k, v = _qkv(tq, d, tk=tk, seed=seed)
    out, weights = scaled_dot_product_attention(q * scale, k * scale, v)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(-1), torch.ones(tq), atol=1e-5)
    # each output row is a weighted average of the value rows: inside their bounding box
    assert torch.all(out <= v.max(0).values + 1e-5) and torch.all(out >= v.min(0).values - 1e-5)
    _, weights_np = scaled_dot_product_attention_numpy(
        (q * scale).double().numpy(), (k * scale).double().numpy(), v.double().numpy()
    )
    assert np.allclose(weights_np.sum(-1), 1.0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_property_permuting_keys_and_values_together_changes_nothing(t, seed):
    q, k, v = _qkv(t, 8, seed=seed)
    perm = torch.randperm(t, generator=torch.Generator().manual_seed(seed))
    out, weights = scaled_dot_product_attention(q, k, v)
    out_p, weights_p = scaled_dot_product_attention(q, k[perm], v[perm])
    assert torch.allclose(out, out_p, atol=1e-5)
    assert torch.allclose(weights[:, perm], weights_p, atol=1e-6)


@pytest.mark.slow
def test_recomputes_minilm_attention_from_its_own_weights(encoder):
    """Every layer of MiniLM: softmax(Q Kᵀ/√d) from the layer's own Q/K weights."""
    model, tokenizer = encoder
    batch = tokenizer(
        PADDED_PAIR, return_tensors="pt", padding=True,
    )
    with torch.no_grad():
        outputs = model(**batch, output_attentions=True, output_hidden_states=True)
    heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    mask = batch["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, Tk)
    worst = 0.0
    for layer_index, layer in enumerate(model.encoder.layer):
        x = outputs.hidden_states[layer_index]  # (B, T, C): the input of this layer
        batch_size, seq_len, _ = x.shape

        def project(linear, x=x, batch_size=batch_size, seq_len=seq_len):
            return linear(x).view(batch_size, seq_len, heads, head_dim).transpose(1, 2)

        with torch.no_grad():
            q = project(layer.attention.self.query)
            k = project(layer.attention.self.key)
            v = project(layer.attention.self.value)
            _, weights = scaled_dot_product_attention(q, k, v, mask)
        reference = outputs.attentions[layer_index]
        valid = batch["attention_mask"].bool()[:, None, :, None]  # padded queries are junk
        worst = max(worst, (weights - reference).abs().masked_fill(~valid, 0).max().item())
    assert worst < 1e-5, f"max abs difference {worst:.2e}"

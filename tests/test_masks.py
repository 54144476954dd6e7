"""course_utils.masks: shapes, values, errors; and the proofs notebook 06 shows.

Convention: boolean, True = may attend.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.attention import MultiHeadAttention, scaled_dot_product_attention
from course_utils.masks import (
    causal_mask,
    combine,
    padding_mask,
    sliding_window_mask,
    to_additive,
)


def test_causal_mask_values():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3), expected)
    assert causal_mask(1).shape == (1, 1) and causal_mask(1).item()


def test_sliding_window_values():
    causal = sliding_window_mask(5, 2)
    assert causal.dtype == torch.bool and causal.shape == (5, 5)
    assert causal.sum(-1).tolist() == [1, 2, 2, 2, 2]
    assert causal[4].tolist() == [False, False, False, True, True]
    symmetric = sliding_window_mask(5, 2, causal=False)
    assert symmetric[2].tolist() == [False, True, True, True, False]
    assert torch.equal(symmetric, symmetric.T)
    # a window as long as the sequence is plain causal attention
    assert torch.equal(sliding_window_mask(6, 6), causal_mask(6))
    assert torch.equal(sliding_window_mask(6, 100), causal_mask(6))


def test_padding_mask_shape_and_values():
    attention_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    mask = padding_mask(attention_mask)
    assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.bool
    assert mask[1, 0, 0].tolist() == [True, True, False, False]
    assert padding_mask([[1, 0]]).shape == (1, 1, 1, 2)  # lists are accepted


def test_combine_broadcasts_causal_and_padding():
    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mask = combine(causal_mask(3), padding_mask(attention_mask))
    assert mask.shape == (2, 1, 3, 3)
    assert torch.equal(mask[0, 0], causal_mask(3))
    assert mask[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_to_additive():
    mask = causal_mask(3)
    additive = to_additive(mask)
    assert additive.dtype == torch.float32
    assert (additive[mask] == 0).all()
    assert (additive[~mask] == torch.finfo(torch.float32).min).all()
    assert to_additive(mask, torch.float16)[0, 1] == torch.finfo(torch.float16).min
    scores = torch.randn(2, 3, 3)
    assert torch.equal(
        torch.softmax(scores + additive, -1),
        torch.softmax(scores.masked_fill(~mask, -torch.inf), -1),
    )


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_size_errors_name_the_value(bad):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        causal_mask(bad)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        sliding_window_mask(4, bad)


def test_other_errors():
    with pytest.raises(ValueError, match=r"\(batch, seq_len\).*\(4,\)"):
        padding_mask(torch.ones(4))
    with pytest.raises(ValueError, match="at least one"):
        combine()
    with pytest.raises(ValueError, match="mask 1 has dtype torch.int64"):
        combine(causal_mask(3), torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask 1 of shape \(4, 4\).*\(3, 3\)"):
        combine(causal_mask(3), causal_mask(4))
    with pytest.raises(ValueError, match="boolean"):
        to_additive(torch.ones(2, 2))


def test_batch_first_mask_over_heads_is_rejected_not_silently_broadcast():
    """A (B, T, T) mask against (B, H, T, T) scores with B != H must raise, not broadcast."""
    q = torch.randn(2, 4, 5, 8)  # (B=2, H=4, T, d)
    per_example = torch.ones(2, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(2, 5, 5\).*\(2, 4, 5, 5\)"):
        scaled_dot_product_attention(q, q, q, per_example)
    scaled_dot_product_attention(q, q, q, per_example[:, None])  # (B, 1, T, T) is right


def test_fully_masked_row_gives_zeros_not_nan():
    q = torch.randn(1, 2, 4, 8)
    mask = causal_mask(4).clone()
    mask[2] = False  # query 2 may attend to nothing
    out, weights = scaled_dot_product_attention(q, q, q, mask)
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    assert (weights[..., 2, :] == 0).all() and (out[..., 2, :] == 0).all()
    assert torch.allclose(weights[..., [0, 1, 3], :].sum(-1), torch.ones(1, 2, 3))
    # the naive recipe does produce NaN: the guard is needed
    naive = torch.softmax((q @ q.transpose(-1, -2)).masked_fill(~mask, -torch.inf), -1)
    assert torch.isnan(naive[..., 2, :]).all()
    mha = MultiHeadAttention(8, 2)
    with torch.no_grad():
        out, _ = mha(torch.randn(1, 4, 8), mask=mask)
    assert not torch.isnan(out).any()


def test_sdpa_agrees_with_our_boolean_convention():
    """F.scaled_dot_product_attention's boolean attn_mask also means True = may attend."""
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = combine(causal_mask(5), padding_mask(torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])))
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    assert (F.scaled_dot_product_attention(q, k, v, attn_mask=mask) - ours).abs().max() < 1e-5
    additive = to_additive(mask)
    assert (F.scaled_dot_product_attention(q, k, v, attn_mask=additive) - ours).abs().max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12))
def test_property_sliding_window_counts(n, window):
    mask = sliding_window_mask(n, window)
    assert mask.sum(-1).tolist() == [min(i + 1, window) for i in range(n)]
    assert not mask.triu(diagonal=1).any()  # never the future


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(0, 100), st.integers(0, 2**16))
def test_property_causal_no_leak_in_attention(seq_len, cut, seed):
    """Changing keys/values at positions >= cut never changes outputs before cut."""
    cut = 1 + cut % (seq_len - 1)
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, seq_len, 4, generator=generator) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[..., cut:, :] += 3 * torch.randn(1, 2, seq_len - cut, 4, generator=generator)
    v2[..., cut:, :] += 3 * torch.randn(1, 2, seq_len - cut, 4, generator=generator)
    out, _ = scaled_dot_product_attention(q, k, v, causal_mask(seq_len))
    out2, _ = scaled_dot_product_attention(q, k2, v2, causal_mask(seq_len))
    assert (out[..., :cut, :] - out2[..., :cut, :]).abs().max() < 1e-6
    # without the mask, the change does leak backwards: the property is not vacuous
    leaky, _ = scaled_dot_product_attention(q, k2, v2)
    assert (scaled_dot_product_attention(q, k, v)[0] - leaky)[..., :cut, :].abs().max() > 1e-4


@pytest.mark.slow
def test_padding_proof_on_minilm(encoder):
    """A sentence's outputs are the same alone and padded in a batch, and differ when the
    padding mask is dropped."""
    model, tokenizer = encoder
    short, long = "Cats sleep.", "The committee postponed the vote until the next meeting in May."
    with torch.no_grad():
        alone = tokenizer(short, return_tensors="pt")
        alone_out = model(**alone).last_hidden_state[0]  # (T_short, d)
        batch = tokenizer([short, long], return_tensors="pt", padding=True)
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # padded
        batched_out = model(**batch).last_hidden_state[0, : alone_out.shape[0]]
        unmasked = {**batch, "attention_mask": torch.ones_like(batch["attention_mask"])}
        unmasked_out = model(**unmasked).last_hidden_state[0, : alone_out.shape[0]]
    assert (batched_out - alone_out).abs().max() < 1e-5
    assert (unmasked_out - alone_out).abs().max() > 1e-2

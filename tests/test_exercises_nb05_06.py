"""Checkers of notebooks 05–06 pass the references and diagnose the typical mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import repeat_kv

from course_utils.exercises import nb05, nb06
from course_utils.solutions import nb05 as sol05
from course_utils.solutions import nb06 as sol06

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def test_references_pass_their_checkers():
    assert nb05.check_split_heads(sol05.split_heads).passed
    assert nb05.check_repeat_kv_heads(sol05.repeat_kv_heads).passed
    assert nb06.check_causal_padding_mask(sol06.causal_padding_mask).passed
    assert nb06.check_sliding_window(sol06.sliding_window).passed


def test_split_heads_rebuilds_nn_multihead_attention():
    """Attention per head on split_heads' slices, concatenated and projected = torch's module."""
    torch.manual_seed(0)
    d_model, heads = 16, 4
    reference = nn.MultiheadAttention(d_model, heads, batch_first=True).eval()
    x = torch.randn(2, 5, d_model)
    w_q, w_k, w_v = reference.in_proj_weight.chunk(3)
    b_q, b_k, b_v = reference.in_proj_bias.chunk(3)
    with torch.no_grad():
        q, k, v = (sol05.split_heads(x @ w.T + b, heads) for w, b in ((w_q, b_q), (w_k, b_k), (w_v, b_v)))
        per_head = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d_head)
        ours = reference.out_proj(per_head.transpose(1, 2).reshape(2, 5, d_model))
        expected, _ = reference(x, x, x)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_repeat_kv_heads_matches_transformers_and_sdpa_gqa():
    kv = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(sol05.repeat_kv_heads(kv, 9), repeat_kv(kv, 3), atol=0, rtol=0)
    q = torch.randn(2, 9, 5, 4)
    gqa = F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    repeated = sol05.repeat_kv_heads(kv, 9)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, repeated, repeated), gqa, atol=1e-6, rtol=1e-5)


def test_causal_padding_mask_matches_sdpa_on_unpadded_sequences():
    """With the mask, each padded sequence's real rows equal causal SDPA on that sequence alone."""
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    mask = sol06.causal_padding_mask(attention_mask)
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for b, length in enumerate(attention_mask.sum(-1).tolist()):
        alone = F.scaled_dot_product_attention(q[b:b + 1, :, :length], k[b:b + 1, :, :length],
                                               v[b:b + 1, :, :length], is_causal=True)
        torch.testing.assert_close(ours[b:b + 1, :, :length], alone, atol=1e-6, rtol=1e-5)


def test_sliding_window_matches_a_band_matrix():
    for n, window in ((6, 1), (6, 3), (5, 5), (4, 9)):
        band = torch.ones(n, n).tril().triu(-(window - 1)).bool()  # diagonals 0 .. -(window - 1)
        assert torch.equal(sol06.sliding_window(n, window), band)


def test_split_heads_mistakes():
    no_transpose = nb05.check_split_heads(lambda x, h: x.view(x.shape[0], x.shape[1], h, -1))
    assert not no_transpose.passed and "transpose" in no_transpose.message
    direct = nb05.check_split_heads(lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1))
    assert not direct.passed and "mixes positions" in direct.message


def test_repeat_kv_heads_mistakes():
    tiled = nb05.check_repeat_kv_heads(lambda kv, h: kv.repeat(1, h // kv.shape[1], 1, 1))
    assert not tiled.passed and "h // group" in tiled.message
    unchanged = nb05.check_repeat_kv_heads(lambda kv, h: kv)
    assert not unchanged.passed and "shape" in unchanged.message


def test_causal_padding_mask_mistakes():
    def no_head_axis(attention_mask):
        return sol06.causal_padding_mask(attention_mask)[:, 0]

    def no_causal(attention_mask):
        t = attention_mask.shape[1]
        return attention_mask.bool()[:, None, None, :].expand(-1, 1, t, t)

    def no_padding(attention_mask):
        b, t = attention_mask.shape
        return torch.ones(t, t, dtype=torch.bool).tril().expand(b, 1, t, t)

    for wrong, words in ((no_head_axis, "head axis"), (no_causal, "later key"),
                         (no_padding, "padding key")):
        result = nb06.check_causal_padding_mask(wrong)
        assert not result.passed and words in result.message, result.message
    as_int = nb06.check_causal_padding_mask(lambda m: sol06.causal_padding_mask(m).long())
    assert not as_int.passed and "boolean" in as_int.message


def test_sliding_window_mistakes():
    def off_by_one(n, window):
        i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        return (j <= i) & (j >= i - window)

    def symmetric(n, window):
        i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        return (i - j).abs() < window

    result = nb06.check_sliding_window(off_by_one)
    assert not result.passed and "off-by-one" in result.message
    result = nb06.check_sliding_window(symmetric)
    assert not result.passed and "later key" in result.message


def test_not_attempted_is_reported():
    def stub(*args):
        raise NotImplementedError

    for check in (nb05.check_split_heads, nb05.check_repeat_kv_heads,
                  nb06.check_causal_padding_mask, nb06.check_sliding_window):
        result = check(stub)
        assert not result.passed and "not attempted" in result.message

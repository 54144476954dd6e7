"""Prefix-LM and packed-sequence (block-diagonal) masks, against independent constructions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.masks import causal_mask, packed_mask, prefix_lm_mask


@pytest.mark.parametrize(("n", "prefix_len"), [(1, 0), (1, 1), (6, 0), (6, 3), (6, 6), (9, 4)])
def test_prefix_lm_mask_matches_its_definition(n, prefix_len):
    expected = torch.tensor([[j < prefix_len or j <= i for j in range(n)] for i in range(n)])
    assert torch.equal(prefix_lm_mask(n, prefix_len), expected)


def test_prefix_lm_mask_limits():
    assert torch.equal(prefix_lm_mask(7, 0), causal_mask(7))
    assert bool(prefix_lm_mask(7, 7).all())


def test_prefix_lm_attention_reads_the_prefix_as_an_encoder_and_the_rest_as_a_decoder():
    torch.manual_seed(0)
    n, prefix = 8, 3
    q, k, v = (torch.randn(1, 2, n, 4) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_lm_mask(n, prefix))
    # the prefix attends bidirectionally within the prefix only
    prefix_alone = F.scaled_dot_product_attention(q[:, :, :prefix], k[:, :, :prefix], v[:, :, :prefix])
    torch.testing.assert_close(out[:, :, :prefix], prefix_alone, atol=1e-6, rtol=1e-5)
    # a later query i sees keys 0..i: the same as attention over that many keys, unmasked
    for i in range(prefix, n):
        row = F.scaled_dot_product_attention(q[:, :, i:i + 1], k[:, :, :i + 1], v[:, :, :i + 1])
        torch.testing.assert_close(out[:, :, i:i + 1], row, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("lengths", [(3, 2, 4), (1,), (5, 1, 1, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_packed_mask_is_block_diagonal(lengths, causal):
    segment_ids = torch.cat([torch.full((n,), s) for s, n in enumerate(lengths)])
    block = (lambda n: torch.ones(n, n).tril()) if causal else (lambda n: torch.ones(n, n))
    expected = torch.block_diag(*[block(n) for n in lengths]).bool()
    assert torch.equal(packed_mask(segment_ids, causal=causal), expected)
    batched = packed_mask(torch.stack([segment_ids, segment_ids.flip(0)]), causal=causal)
    assert batched.shape == (2, 1, len(segment_ids), len(segment_ids))
    assert torch.equal(batched[0, 0], expected)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_attention_equals_each_sequence_alone(causal):
    torch.manual_seed(1)
    lengths = (4, 2, 5)
    segment_ids = torch.cat([torch.full((n,), s) for s, n in enumerate(lengths)])
    T = len(segment_ids)
    q, k, v = (torch.randn(1, 3, T, 8) for _ in range(3))
    packed = F.scaled_dot_product_attention(q, k, v, attn_mask=packed_mask(segment_ids, causal=causal))
    start = 0
    for n in lengths:
        part = slice(start, start + n)
        alone = F.scaled_dot_product_attention(q[:, :, part], k[:, :, part], v[:, :, part], is_causal=causal)
        torch.testing.assert_close(packed[:, :, part], alone, atol=1e-6, rtol=1e-5)
        start += n


@pytest.mark.parametrize("bad", [-1, 4, 2.0, True, None])
def test_prefix_lm_mask_refuses_a_bad_prefix(bad):
    with pytest.raises(ValueError, match="prefix_len"):
        prefix_lm_mask(3, bad)


@pytest.mark.parametrize("bad", [torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                 torch.zeros(3), torch.ones(3, dtype=torch.bool), "abc"])
def test_packed_mask_refuses_bad_segment_ids(bad):
    with pytest.raises(ValueError, match="segment_ids"):
        packed_mask(bad)


def test_packed_mask_refuses_a_non_boolean_causal_flag():
    with pytest.raises(ValueError, match="causal"):
        packed_mask(torch.zeros(3, dtype=torch.long), causal=1)

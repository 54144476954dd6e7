"""Checkers of notebooks 05–06 pass the references and diagnose the typical mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import repeat_kv

from course_utils import masks
from course_utils.exercises import nb05, nb06
from course_utils.solutions import nb05 as sol05
from course_utils.solutions import nb06 as sol06

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def test_references_pass_their_checkers():
    """The fast checkers; check_gqa and the model-backed mask checks are in the mutation tests."""
    assert nb05.check_split_heads(sol05.split_heads).passed
    assert nb05.check_repeat_kv_heads(sol05.repeat_kv_heads).passed
    assert nb06.check_causal_padding_mask(sol06.causal_padding_mask).passed
    assert nb06.check_sliding_window_mask(sol06.sliding_window_mask).passed


def _random_llama_attention(heads=6, kv_heads=2, head_dim=8, bias=True, seed=0):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=head_dim, attention_bias=bias, rope_theta=10000.0, intermediate_size=32,
                         num_hidden_layers=1)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    attention = LlamaAttention(config, layer_idx=0).eval()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0, 0.3)
    return config, attention, LlamaRotaryEmbedding(config)


@pytest.mark.parametrize(("heads", "kv_heads", "bias"), [(6, 2, True), (4, 4, False), (4, 1, False)])
def test_grouped_query_attention_equals_transformers_llama_attention(heads, kv_heads, bias):
    """GQA, MHA (kv = heads) and MQA (kv = 1) against transformers' LlamaAttention and its cache."""
    from transformers import DynamicCache

    config, attention, rotary = _random_llama_attention(heads, kv_heads, bias=bias)
    ours = sol05.GroupedQueryAttention(config.hidden_size, heads, kv_heads, rope_base=10000.0, bias=bias).eval()
    ours.load_state_dict(attention.state_dict())
    x = torch.randn(2, 7, config.hidden_size)
    positions = torch.arange(7)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    additive = torch.zeros(7, 7).masked_fill(~causal, float("-inf"))[None, None]
    cache = DynamicCache(config=config)
    with torch.no_grad():
        expected = attention(x, rotary(x, positions[None]), additive, past_key_values=cache)[0]
        got, (k, v) = ours(x, positions, causal)
        # one decoding step with the cache of the first 6 positions = the full sequence's last row
        step, (k_step, _) = ours(x[:, -1:], positions[-1:], None, (k[:, :, :-1], v[:, :, :-1]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, cache.layers[0].keys, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(v, cache.layers[0].values, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(step, expected[:, -1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_step, k, atol=1e-6, rtol=1e-5)


def test_mask_piece_equals_course_masks_and_torch():
    for n in (1, 4, 9):
        assert torch.equal(sol06.causal_mask(n), torch.ones(n, n).tril().bool())
        for window in (1, 2, n):
            assert torch.equal(sol06.sliding_window_mask(n, window), masks.sliding_window_mask(n, window))
    attention_mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    got = sol06.padding_mask(attention_mask)
    assert got.shape == (2, 1, 1, 3) and torch.equal(got, masks.padding_mask(attention_mask))


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


def test_sliding_window_mask_matches_a_band_matrix():
    for n, window in ((6, 1), (6, 3), (5, 5), (4, 9)):
        band = torch.ones(n, n).tril().triu(-(window - 1)).bool()  # diagonals 0 .. -(window - 1)
        assert torch.equal(sol06.sliding_window_mask(n, window), band)


def test_not_attempted_is_reported():
    def stub(*args):
        raise NotImplementedError

    for check in (nb05.check_split_heads, nb05.check_repeat_kv_heads,
                  nb06.check_causal_padding_mask, nb06.check_sliding_window_mask):
        result = check(stub)
        assert not result.passed and "not attempted" in result.message


@pytest.mark.slow
def test_gqa_and_mask_checkers_report_not_attempted_for_stubs():
    class Stub(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()
            raise NotImplementedError

    def stub(*args):
        raise NotImplementedError

    for result in (nb05.check_gqa(Stub), nb06.check_causal_mask(stub), nb06.check_padding_mask(stub)):
        assert not result.passed and "not attempted" in result.message

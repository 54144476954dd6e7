"""MultiHeadAttention (course_utils.attention) = torch and real models, on the same weights.

Tolerances: against nn.MultiheadAttention and MiniLM the float sums run in a different
order, so 1e-5 absolute; SmolLM2's layer-0 probabilities come out bit-identical (0.0) and
are tested at 1e-6 so that a future BLAS change does not break the build.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import PADDED_PAIR
from course_utils.attention import MultiHeadAttention
from course_utils.masks import causal_mask, padding_mask
from course_utils.positional import apply_rope
from course_utils.weights import kv_cache_bytes, mha_from_bert, mha_from_llama, mha_from_torch

TOL = 1e-5


def _torch_mha(d_model: int, heads: int, bias: bool, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True).eval()
    if bias:  # torch initialises biases to 0: randomise them so a dropped bias is caught
        with torch.no_grad():
            module.in_proj_bias.normal_()
            module.out_proj.bias.normal_()
    return module


@pytest.mark.parametrize("bias", [True, False])
def test_equals_nn_multihead_attention(bias):
    reference = _torch_mha(16, 4, bias)
    mha = mha_from_torch(reference)
    x = torch.randn(3, 7, 16)
    with torch.no_grad():
        expected, expected_weights = reference(x, x, x, average_attn_weights=False)
        out, weights = mha(x)
    assert out.shape == (3, 7, 16) and weights.shape == (3, 4, 7, 7)
    assert (out - expected).abs().max() < TOL
    assert (weights - expected_weights).abs().max() < TOL


def test_dropping_the_bias_is_detected():
    reference = _torch_mha(16, 4, bias=True)
    mha = mha_from_torch(reference)
    with torch.no_grad():
        mha.v_proj.bias.zero_()
        x = torch.randn(2, 5, 16)
        assert (mha(x)[0] - reference(x, x, x)[0]).abs().max() > 1e-2


def test_equals_nn_multihead_attention_with_causal_and_padding_masks():
    reference = _torch_mha(24, 3, bias=True, seed=1)
    mha = mha_from_torch(reference)
    x = torch.randn(2, 6, 24)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    causal = causal_mask(6)
    with torch.no_grad():
        # nn.MultiheadAttention's masks mean the opposite: True = *blocked*.
        expected, expected_weights = reference(
            x, x, x, attn_mask=~causal, key_padding_mask=~attention_mask.bool(),
            average_attn_weights=False,
        )
        out, weights = mha(x, mask=causal & padding_mask(attention_mask))
    assert (out - expected).abs().max() < TOL
    assert (weights - expected_weights).abs().max() < TOL
    assert weights[1, :, :, 4:].abs().max() == 0  # padding keys get exactly zero weight


def test_cross_attention_equals_nn_multihead_attention():
    reference = _torch_mha(16, 2, bias=True, seed=2)
    mha = mha_from_torch(reference)
    queries, context = torch.randn(2, 3, 16), torch.randn(2, 8, 16)
    keep = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.no_grad():
        expected, expected_weights = reference(
            queries, context, context, key_padding_mask=~keep.bool(), average_attn_weights=False
        )
        out, weights = mha(queries, context=context, mask=padding_mask(keep))
    assert out.shape == (2, 3, 16) and weights.shape == (2, 2, 3, 8)
    assert (out - expected).abs().max() < TOL
    assert (weights - expected_weights).abs().max() < TOL


@pytest.mark.parametrize("d_model,heads", [(10, 3), (384, 5), (7, 2)])
def test_d_model_not_divisible_raises(d_model, heads):
    with pytest.raises(ValueError, match=rf"d_model \({d_model}\).*num_heads \({heads}\)"):
        MultiHeadAttention(d_model, heads)


@pytest.mark.parametrize("kwargs", [dict(num_kv_heads=4), dict(num_kv_heads=0)])
def test_bad_kv_head_count_raises(kwargs):
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadAttention(18, 6, **kwargs)


def test_wrong_input_shapes_raise():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"d_model=8.*\(2, 3, 9\)"):
        mha(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="context"):
        mha(torch.randn(2, 3, 8), context=torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="broadcast"):
        mha(torch.randn(2, 3, 8), mask=torch.ones(4, 4, dtype=torch.bool))


def test_grouped_query_heads_share_kv_as_h_floor_div_group():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(24, 6, num_kv_heads=2).eval()
    x = torch.randn(1, 5, 24)
    with torch.no_grad():
        _, weights = gqa(x)
        q = gqa.split_heads(gqa.q_proj(x), 6)  # (1, 6, 5, 4)
        k = gqa.split_heads(gqa.k_proj(x), 2)  # (1, 2, 5, 4)
    for head in range(6):
        own = torch.softmax(q[:, head] @ k[:, head // 3].transpose(-1, -2) / 2.0, dim=-1)
        assert (weights[:, head] - own).abs().max() < 1e-6
    # and a GQA layer with 1 query head per KV head is plain multi-head attention
    assert gqa.k_proj.weight.shape == (8, 24)


def test_kv_cache_bytes():
    # One signature since issue 14: kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=4).
    from types import SimpleNamespace

    def shape(kv_heads):
        return SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=kv_heads,
                               head_dim=64, hidden_size=576)

    # SmolLM2: 30 layers, 3 KV heads of 64 dims, fp16 -> 2*30*3*64*2 = 23 040 bytes per token.
    assert kv_cache_bytes(shape(3), 1, bytes_per_value=2) == 23_040
    assert kv_cache_bytes(shape(9), 2048) == 3 * kv_cache_bytes(shape(3), 2048)
    with pytest.raises(ValueError, match="seq_len"):
        kv_cache_bytes(shape(3), 0)


# ---------------------------------------------------------------- property tests
shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 7),  # seq_len
    st.sampled_from([(8, 1), (8, 2), (12, 3), (16, 4)]),  # (d_model, heads)
    st.integers(0, 2**16),  # seed
)


@settings(max_examples=25, deadline=None)
@given(shapes)
def test_property_weight_rows_sum_to_one(shape):
    batch, seq_len, (d_model, heads), seed = shape
    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_model, heads)
    with torch.no_grad():
        _, weights = mha(torch.randn(batch, seq_len, d_model) * 3)
    assert weights.shape == (batch, heads, seq_len, seq_len)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(batch, heads, seq_len), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shapes)
def test_property_permutation_equivariance_without_mask(shape):
    """No mask and no positions: permuting the tokens permutes the outputs, nothing else."""
    batch, seq_len, (d_model, heads), seed = shape
    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_model, heads)
    x = torch.randn(batch, seq_len, d_model)
    perm = torch.randperm(seq_len)
    with torch.no_grad():
        out, weights = mha(x)
        out_p, weights_p = mha(x[:, perm])
    assert (out_p - out[:, perm]).abs().max() < 1e-5
    assert (weights_p - weights[:, :, perm][:, :, :, perm]).abs().max() < 1e-5


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 6), st.booleans())
def test_property_causal_no_leak(shape, cut, use_rope):
    """With a causal mask, changing tokens at positions >= cut never changes outputs < cut."""
    batch, seq_len, (d_model, heads), seed = shape
    seq_len += 1  # at least 2 tokens: one before the cut, one after
    cut = 1 + cut % (seq_len - 1)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_model, heads, rope_base=10000.0 if use_rope else None)
    x = torch.randn(batch, seq_len, d_model)
    changed = x.clone()
    changed[:, cut:] = torch.randn(batch, seq_len - cut, d_model) * 5
    with torch.no_grad():
        out = mha(x, mask=causal_mask(seq_len))[0]
        out_changed = mha(changed, mask=causal_mask(seq_len))[0]
    assert (out[:, :cut] - out_changed[:, :cut]).abs().max() < 1e-5
    assert (out[:, cut:] - out_changed[:, cut:]).abs().max() > 1e-3  # the test can fail


# ---------------------------------------------------------------- real models
@pytest.mark.slow
def test_equals_minilm_attention_sublayer_on_real_weights(encoder):
    model, tokenizer = encoder
    batch = tokenizer(
        PADDED_PAIR, return_tensors="pt", padding=True,
    )
    with torch.no_grad():
        outputs = model(**batch, output_attentions=True, output_hidden_states=True)
        additive = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(
            torch.float32
        ).min
        real = batch["attention_mask"].bool()
        for index, layer in enumerate(model.encoder.layer):
            x = outputs.hidden_states[index]
            mha = mha_from_bert(layer)
            out, weights = mha(x, mask=padding_mask(batch["attention_mask"]))
            expected = layer.attention.output.dense(
                layer.attention.self(x, attention_mask=additive)[0]
            )
            assert (weights - outputs.attentions[index]).abs().max() < TOL, index
            assert (out - expected)[real].abs().max() < TOL, index


@pytest.mark.slow
def test_gqa_with_rope_equals_smollm2_layer0(decoder):
    model, tokenizer = decoder
    ids = tokenizer("The cat sat on the mat because it was warm.", return_tensors="pt")
    layer = model.model.layers[0]
    with torch.no_grad():
        outputs = model(**ids, output_attentions=True, output_hidden_states=True)
        normed = layer.input_layernorm(outputs.hidden_states[0])  # RMSNorm
        gqa = mha_from_llama(layer.self_attn, model.config)
        seq_len = normed.shape[1]
        out, weights = gqa(normed, mask=causal_mask(seq_len))
        assert (weights - outputs.attentions[0]).abs().max() < 1e-6
        # the whole attention sublayer output too (o_proj included)
        cos_sin = model.model.rotary_emb(normed, torch.arange(seq_len)[None])
        additive = torch.zeros(seq_len, seq_len).masked_fill(~causal_mask(seq_len), float("-inf"))
        expected = layer.self_attn(normed, cos_sin, additive[None, None])[0]
        assert (out - expected).abs().max() < 1e-6

        # The two tempting mistakes are caught by the same comparison:
        q = gqa.split_heads(gqa.q_proj(normed), 9)
        k = gqa.split_heads(gqa.k_proj(normed), 3)
        scores_no_rope = (q @ k.repeat_interleave(3, dim=1).transpose(-1, -2)) / 8.0
        no_rope = torch.softmax(scores_no_rope.masked_fill(~causal_mask(seq_len), -torch.inf), -1)
        assert (no_rope - outputs.attentions[0]).abs().max() > 0.05
        positions = torch.arange(seq_len)
        q_r, k_r = apply_rope(q, positions, 100000.0), apply_rope(k, positions, 100000.0)
        tiled = torch.softmax(
            (q_r @ k_r.repeat(1, 3, 1, 1).transpose(-1, -2) / 8.0).masked_fill(
                ~causal_mask(seq_len), -torch.inf
            ), -1,
        )
        assert (tiled - outputs.attentions[0]).abs().max() > 0.05


def test_weight_copy_helpers_reject_wrong_modules():
    with pytest.raises(ValueError, match="nn.MultiheadAttention, got Linear"):
        mha_from_torch(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="BertLayer or BertAttention, got Linear"):
        mha_from_bert(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="kdim == vdim"):
        mha_from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))

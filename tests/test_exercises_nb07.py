"""Notebook 07's checkers pass the references and name typical mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.exercises.nb07 import (
    check_block_parameters,
    check_layer_norm,
    check_pre_norm_block,
)
from course_utils.solutions import nb07 as solutions


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")


def test_layer_norm_reference_equals_torch():
    x, w, b = torch.randn(3, 5, 8), torch.rand(8), torch.randn(8)
    torch.testing.assert_close(solutions.layer_norm(x, w, b, eps=1e-5),
                               F.layer_norm(x, (8,), w, b, eps=1e-5))


def test_layer_norm_checker():
    assert check_layer_norm(solutions.layer_norm).passed
    assert check_layer_norm(lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps)).passed

    def unbiased(x, w, b, eps=1e-5):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b

    def eps_outside(x, w, b, eps=1e-5):
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - x.mean(-1, keepdim=True)) / (torch.sqrt(var) + eps) * w + b

    def no_affine(x, w, b, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], eps=eps)

    def rms(x, w, b, eps=1e-5):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w + b

    for wrong, words in ((unbiased, "unbiased variance"), (eps_outside, "inside the square root"),
                         (no_affine, "forgot to scale"), (rms, "RMSNorm")):
        result = check_layer_norm(wrong)
        assert not result.passed and words in result.message, result.message


def test_layer_norm_not_attempted():
    def stub(x, w, b, eps=1e-5):
        raise NotImplementedError

    result = check_layer_norm(stub)
    assert not result.passed and "not attempted" in result.message


def test_pre_norm_block_checker():
    assert check_pre_norm_block(solutions.pre_norm_block).passed

    def post_norm(x, attention, ffn, norm1, norm2):
        x = norm1(x + attention(x))
        return norm2(x + ffn(x))

    def no_residual(x, attention, ffn, norm1, norm2):
        return ffn(norm2(attention(norm1(x))))

    def parallel(x, attention, ffn, norm1, norm2):
        return x + attention(norm1(x)) + ffn(norm2(x))

    for wrong, words in ((post_norm, "post-norm"), (no_residual, "no residual"),
                         (parallel, "updated")):
        result = check_pre_norm_block(wrong)
        assert not result.passed and words in result.message, result.message


def test_pre_norm_block_reference_matches_scratch_block():
    from course_utils.blocks import EncoderBlock, TransformerConfig

    torch.manual_seed(0)
    block = EncoderBlock(TransformerConfig(d_model=16, num_heads=2, num_layers=1, norm_first=True,
                                           eps=1e-5)).eval()
    x = torch.randn(2, 4, 16)
    got = solutions.pre_norm_block(x, lambda h: block.attn(h)[0], block.ffn, block.attn_norm,
                                   block.ffn_norm)
    torch.testing.assert_close(got, block(x))


def test_block_parameters_checker():
    from course_utils.blocks import EncoderBlock, TransformerConfig

    block = EncoderBlock(TransformerConfig(d_model=384, num_heads=12, num_layers=1, d_ff=1536))
    assert solutions.block_parameters(384, 1536) == sum(p.numel() for p in block.parameters())
    assert check_block_parameters(solutions.block_parameters).passed
    for wrong, words in (
        (lambda c, f: 4 * c * c + 2 * c * f, "weight matrices only"),
        (lambda c, f: solutions.block_parameters(c, f) - 4 * c, "missing the two LayerNorms"),
        (lambda c, f: solutions.block_parameters(c, f) - 3 * (c * c + c), "four projections"),
        (lambda c, f: 1.5, "expected an int"),
    ):
        result = check_block_parameters(wrong)
        assert not result.passed and words in result.message, result.message


def test_post_norm_block_reference_equals_torch_encoder_layer():
    """The 07.1 reference block = torch's post-norm TransformerEncoderLayer (GELU, same weights)."""
    torch.manual_seed(0)
    d, h, f = 32, 4, 64
    layer = torch.nn.TransformerEncoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True,
                                             norm_first=False, layer_norm_eps=1e-12).eval()
    block = solutions.PostNormBlock(d, h, f, eps=1e-12).eval()
    with torch.no_grad():
        q, k, v = layer.self_attn.in_proj_weight.chunk(3)
        qb, kb, vb = layer.self_attn.in_proj_bias.chunk(3)
        for target, w, b in ((block.attn.query, q, qb), (block.attn.key, k, kb), (block.attn.value, v, vb),
                             (block.attn.out, layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias),
                             (block.ffn_up, layer.linear1.weight, layer.linear1.bias),
                             (block.ffn_down, layer.linear2.weight, layer.linear2.bias),
                             (block.attn_norm, layer.norm1.weight, layer.norm1.bias),
                             (block.ffn_norm, layer.norm2.weight, layer.norm2.bias)):
            target.weight.copy_(w)
            target.bias.copy_(b)
        x = torch.randn(2, 5, d)
        keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        ours = block(x, keep.bool()[:, None, None, :])
        theirs = layer(x, src_key_padding_mask=~keep.bool())
    real = keep.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)


def test_post_norm_encoder_reference_equals_a_random_bert():
    from transformers import BertConfig, BertModel

    from course_utils.exercises.nb07 import _fill_encoder

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=16), add_pooling_layer=False).eval()
    encoder = solutions.PostNormEncoder(50, 16, 32, 4, 64, 2, eps=bert.config.layer_norm_eps)
    _fill_encoder(encoder, bert)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        ours = encoder.eval()(ids, mask)
        theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)

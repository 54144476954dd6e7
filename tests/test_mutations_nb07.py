"""Notebook 07's checkers catch the typical slips, each with its own diagnosis (see mutation.py).

The 07.1 checkers load the bundled MiniLM (slow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb07 as solutions

MODULE = "nb07"
SLOW = {"check_post_norm_block", "check_encoder"}


# --- layer_norm, pre_norm_block, block_parameters -------------------------------------------

def ln_unbiased(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b


def ln_eps_outside(x, w, b, eps=1e-5):
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - x.mean(-1, keepdim=True)) / (torch.sqrt(var) + eps) * w + b


def ln_no_affine(x, w, b, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def ln_rms(x, w, b, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w + b


def pre_post_norm(x, attention, ffn, norm1, norm2):
    x = norm1(x + attention(x))
    return norm2(x + ffn(x))


def pre_no_residual(x, attention, ffn, norm1, norm2):
    return ffn(norm2(attention(norm1(x))))


def pre_parallel(x, attention, ffn, norm1, norm2):
    return x + attention(norm1(x)) + ffn(norm2(x))


def params_weights_only(c, f):
    return 4 * c * c + 2 * c * f


def params_no_norms(c, f):
    return solutions.block_parameters(c, f) - 4 * c


def params_one_projection(c, f):
    return solutions.block_parameters(c, f) - 3 * (c * c + c)


# --- PostNormBlock ---------------------------------------------------------------------------

class PreNormBlock(solutions.PostNormBlock):
    def forward(self, x, mask=None):
        x = x + self.attn(self.attn_norm(x), mask)
        return x + self.ffn_down(F.gelu(self.ffn_up(self.ffn_norm(x))))


class NoResidualBlock(solutions.PostNormBlock):
    def forward(self, x, mask=None):
        x = self.attn_norm(self.attn(x, mask))
        return self.ffn_norm(self.ffn_down(F.gelu(self.ffn_up(x))))


class TanhGeluBlock(solutions.PostNormBlock):
    def forward(self, x, mask=None):
        x = self.attn_norm(x + self.attn(x, mask))
        return self.ffn_norm(x + self.ffn_down(F.gelu(self.ffn_up(x), approximate="tanh")))


class DefaultEpsBlock(solutions.PostNormBlock):
    def __init__(self, d_model, n_heads, d_ff, eps=1e-12):
        super().__init__(d_model, n_heads, d_ff, eps=1e-5)  # torch's default, not the model's


class NoMaskBlock(solutions.PostNormBlock):
    def forward(self, x, mask=None):
        return super().forward(x, None)


class ReluBlock(solutions.PostNormBlock):
    def forward(self, x, mask=None):
        x = self.attn_norm(x + self.attn(x, mask))
        return self.ffn_norm(x + self.ffn_down(F.relu(self.ffn_up(x))))


# --- PostNormEncoder -------------------------------------------------------------------------

class NoEmbeddingNorm(solutions.PostNormEncoder):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        x = self.token_emb(input_ids) + self.pos_emb(torch.arange(input_ids.shape[1]))
        if self.type_emb is not None:
            x = x + self.type_emb(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        for block in self.blocks:
            x = block(x, attention_mask.bool()[:, None, None, :])
        return x


class NoPositions(solutions.PostNormEncoder):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        x = self.token_emb(input_ids)
        if self.type_emb is not None:
            x = x + self.type_emb(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        x = self.emb_norm(x)
        for block in self.blocks:
            x = block(x, attention_mask.bool()[:, None, None, :])
        return x


class NoPaddingMask(solutions.PostNormEncoder):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return super().forward(input_ids, torch.ones_like(attention_mask), token_type_ids)


class NoTokenTypes(solutions.PostNormEncoder):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        x = self.emb_norm(self.token_emb(input_ids) + self.pos_emb(torch.arange(input_ids.shape[1])))
        for block in self.blocks:
            x = block(x, attention_mask.bool()[:, None, None, :])
        return x


MUTANTS = [
    Mutant("check_layer_norm", "unbiased variance", ln_unbiased, expect="unbiased variance"),
    Mutant("check_layer_norm", "eps outside the root", ln_eps_outside, expect="inside the square root"),
    Mutant("check_layer_norm", "no weight and bias", ln_no_affine, expect="forgot to scale"),
    Mutant("check_layer_norm", "RMSNorm", ln_rms, expect="RMSNorm"),
    Mutant("check_pre_norm_block", "post-norm wiring", pre_post_norm, expect="post-norm"),
    Mutant("check_pre_norm_block", "no residual", pre_no_residual, expect="no residual"),
    Mutant("check_pre_norm_block", "parallel sublayers", pre_parallel, expect="updated"),
    Mutant("check_block_parameters", "weights only", params_weights_only, expect="weight matrices only"),
    Mutant("check_block_parameters", "no LayerNorms", params_no_norms, expect="missing the two LayerNorms"),
    Mutant("check_block_parameters", "one attention projection", params_one_projection, expect="four projections"),
    Mutant("check_post_norm_block", "pre-norm wiring", PreNormBlock, expect="pre-norm wiring"),
    Mutant("check_post_norm_block", "no residual", NoResidualBlock, expect="no residual"),
    Mutant("check_post_norm_block", "tanh GELU", TanhGeluBlock, expect="tanh approximation"),
    Mutant("check_post_norm_block", "LayerNorm eps 1e-5", DefaultEpsBlock, expect="LayerNorm eps"),
    Mutant("check_post_norm_block", "padding mask ignored", NoMaskBlock, expect="padding mask not applied"),
    Mutant("check_post_norm_block", "ReLU FFN", ReluBlock, expect="ReLU"),
    Mutant("check_encoder", "embedding LayerNorm forgotten", NoEmbeddingNorm, expect="embeddings' LayerNorm"),
    Mutant("check_encoder", "no position embeddings", NoPositions, expect="no position embeddings"),
    Mutant("check_encoder", "padding mask not built", NoPaddingMask, expect="padding mask not applied"),
    Mutant("check_encoder", "token types missing", NoTokenTypes, expect="token-type embeddings"),
]

REFERENCES = {
    "check_layer_norm": solutions.layer_norm,
    "check_pre_norm_block": solutions.pre_norm_block,
    "check_block_parameters": solutions.block_parameters,
    "check_post_norm_block": solutions.PostNormBlock,
    "check_encoder": solutions.PostNormEncoder,
}


def _slow_if_model(name: str):
    return pytest.mark.slow if name in SLOW else ()


@pytest.mark.parametrize("mutant", [pytest.param(m, marks=_slow_if_model(m.checker)) for m in MUTANTS], ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", [pytest.param(n, marks=_slow_if_model(n)) for n in sorted(REFERENCES)])
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])

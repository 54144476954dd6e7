"""Notebook 08's checkers catch the typical slips, each with its own diagnosis (see mutation.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb08 as solutions

MODULE = "nb08"


# --- kv_cache_bytes, llama_param_count, patchify ----------------------------------------

def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_only_keys(config, seq_len, batch=1, bytes_per_value=4):
    return solutions.kv_cache_bytes(config, seq_len, batch, bytes_per_value) // 2


def kv_query_heads(config, seq_len, batch=1, bytes_per_value=4):
    return (2 * config.num_hidden_layers * batch * config.num_attention_heads * seq_len
            * _head_dim(config) * bytes_per_value)


def kv_one_layer(config, seq_len, batch=1, bytes_per_value=4):
    return solutions.kv_cache_bytes(config, seq_len, batch, bytes_per_value) // config.num_hidden_layers


def params_untied_always(config):
    tied = config.vocab_size * config.hidden_size if config.tie_word_embeddings else 0
    return solutions.llama_param_count(config) + tied


def params_no_norms(config):
    return solutions.llama_param_count(config) - (2 * config.num_hidden_layers + 1) * config.hidden_size


def params_kv_as_query_heads(config):
    extra = 2 * config.hidden_size * (config.num_attention_heads - config.num_key_value_heads) * _head_dim(config)
    return solutions.llama_param_count(config) + config.num_hidden_layers * extra


def patch_channels_last(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)


def patch_column_major(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)


def patch_naive_reshape(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, -1, C * p * p)


# --- RMSNorm ------------------------------------------------------------------------------

class NormCentred(solutions.RMSNorm):
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight


class NormEpsOutside(solutions.RMSNorm):
    def forward(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * self.weight


class NormNoWeight(solutions.RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class NormL2(solutions.RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + self.eps) * self.weight


class NormFixedEps(solutions.RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


# --- SwiGLU -------------------------------------------------------------------------------

class SiluOnUp(solutions.SwiGLU):
    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * F.silu(self.up_proj(x)))


class NoActivation(solutions.SwiGLU):
    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * self.up_proj(x))


class GeluGate(solutions.SwiGLU):
    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class AddedBranches(solutions.SwiGLU):
    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) + self.up_proj(x))


class BiasedSwiGLU(torch.nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_proj = torch.nn.Linear(d_model, d_ff)
        self.up_proj = torch.nn.Linear(d_model, d_ff)
        self.down_proj = torch.nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# --- LlamaBlock ---------------------------------------------------------------------------

class PostNormBlock(solutions.LlamaBlock):
    def forward(self, x, positions, mask=None, past_kv=None):
        attended, kv = self.self_attn(x, positions, mask, past_kv)
        x = self.input_layernorm(x + attended)
        return self.post_attention_layernorm(x + self.mlp(x)), kv


class NoResidualBlock(solutions.LlamaBlock):
    def forward(self, x, positions, mask=None, past_kv=None):
        attended, kv = self.self_attn(self.input_layernorm(x), positions, mask, past_kv)
        return self.mlp(self.post_attention_layernorm(attended)), kv


class ParallelBlock(solutions.LlamaBlock):
    def forward(self, x, positions, mask=None, past_kv=None):
        attended, kv = self.self_attn(self.input_layernorm(x), positions, mask, past_kv)
        return x + attended + self.mlp(self.post_attention_layernorm(x)), kv


class OneNormBlock(solutions.LlamaBlock):
    def forward(self, x, positions, mask=None, past_kv=None):
        attended, kv = self.self_attn(self.input_layernorm(x), positions, mask, past_kv)
        x = x + attended
        return x + self.mlp(self.input_layernorm(x)), kv


class IgnoresPastBlock(solutions.LlamaBlock):
    def forward(self, x, positions, mask=None, past_kv=None):
        seen = 0 if past_kv is None else past_kv[0].shape[2]
        own_mask = None if mask is None else mask[:, seen:]
        attended, kv = self.self_attn(self.input_layernorm(x), positions, own_mask, None)
        if past_kv is not None:
            kv = (torch.cat([past_kv[0], kv[0]], 2), torch.cat([past_kv[1], kv[1]], 2))
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class NoRopeBlock(solutions.LlamaBlock):
    def __init__(self, d_model, n_heads, n_kv_heads, d_ff, eps, rope_base):
        super().__init__(d_model, n_heads, n_kv_heads, d_ff, eps, rope_base)
        self.self_attn.rope_base = None


# --- generate_greedy ------------------------------------------------------------------------

def gen_positions_reset(step, prompt_ids, max_new_tokens, eos_id=None):
    logits, past = step(torch.tensor([prompt_ids]), torch.arange(len(prompt_ids)), None)
    new = []
    for _ in range(max_new_tokens):
        new.append(int(logits[0, -1].argmax()))
        if eos_id is not None and new[-1] == eos_id:
            break
        logits, past = step(torch.tensor([[new[-1]]]), torch.tensor([0]), past)
    return new


def gen_prompt_refed(step, prompt_ids, max_new_tokens, eos_id=None):
    ids = list(prompt_ids)
    logits, past = step(torch.tensor([ids]), torch.arange(len(ids)), None)
    new = []
    for _ in range(max_new_tokens):
        new.append(int(logits[0, -1].argmax()))
        if eos_id is not None and new[-1] == eos_id:
            break
        ids = ids + [new[-1]]
        logits, past = step(torch.tensor([ids]), torch.arange(len(ids)), past)
    return new


def gen_no_cache_last_token(step, prompt_ids, max_new_tokens, eos_id=None):
    logits, _ = step(torch.tensor([prompt_ids]), torch.arange(len(prompt_ids)), None)
    new = []
    for i in range(max_new_tokens):
        new.append(int(logits[0, -1].argmax()))
        if eos_id is not None and new[-1] == eos_id:
            break
        logits, _ = step(torch.tensor([[new[-1]]]), torch.tensor([len(prompt_ids) + i]), None)
    return new


def gen_with_prompt(step, prompt_ids, max_new_tokens, eos_id=None):
    return list(prompt_ids) + solutions.generate_greedy(step, prompt_ids, max_new_tokens, eos_id)


def gen_ignores_eos(step, prompt_ids, max_new_tokens, eos_id=None):
    return solutions.generate_greedy(step, prompt_ids, max_new_tokens, None)


def pieces(**overrides):
    names = {"RMSNorm": solutions.RMSNorm, "SwiGLU": solutions.SwiGLU, "LlamaBlock": solutions.LlamaBlock,
             "generate_greedy": solutions.generate_greedy}
    return names | overrides


MUTANTS = [
    Mutant("check_kv_cache_bytes", "keys only", kv_only_keys, expect="keys AND values"),
    Mutant("check_kv_cache_bytes", "query heads cached", kv_query_heads, expect="num_key_value_heads"),
    Mutant("check_kv_cache_bytes", "one layer", kv_one_layer, expect="every layer"),
    Mutant("check_llama_param_count", "head counted though tied", params_untied_always, expect="tied"),
    Mutant("check_llama_param_count", "RMSNorm weights forgotten", params_no_norms, expect="RMSNorm"),
    Mutant("check_llama_param_count", "k/v with query heads", params_kv_as_query_heads,
           expect="not num_attention_heads"),
    Mutant("check_patchify", "channels last", patch_channels_last, expect="(p, p, C) order"),
    Mutant("check_patchify", "column-major patches", patch_column_major, expect="column by column"),
    Mutant("check_patchify", "plain reshape", patch_naive_reshape, expect="not the image's"),
    Mutant("check_rms_norm", "mean subtracted (LayerNorm)", NormCentred, expect="subtracted the mean"),
    Mutant("check_rms_norm", "eps outside the root", NormEpsOutside, expect="inside the square root"),
    Mutant("check_rms_norm", "no weight", NormNoWeight, expect="multiply by weight"),
    Mutant("check_rms_norm", "L2 norm instead of RMS", NormL2, expect="L2 norm"),
    Mutant("check_rms_norm", "eps argument ignored", NormFixedEps, expect="eps argument"),
    Mutant("check_swiglu", "SiLU on the up branch", SiluOnUp, expect="wrong branch"),
    Mutant("check_swiglu", "no activation", NoActivation, expect="no activation"),
    Mutant("check_swiglu", "GELU gate", GeluGate, expect="that's GELU"),
    Mutant("check_swiglu", "branches added", AddedBranches, expect="multiplied element-wise"),
    Mutant("check_swiglu", "projections with bias", BiasedSwiGLU, expect="could not load"),
    Mutant("check_llama_block", "post-norm wiring", PostNormBlock, expect="norm after the add"),
    Mutant("check_llama_block", "no residual", NoResidualBlock, expect="no residual"),
    Mutant("check_llama_block", "parallel sublayers", ParallelBlock, expect="the attention update"),
    Mutant("check_llama_block", "one norm for both", OneNormBlock, expect="post_attention_layernorm, not"),
    Mutant("check_llama_block", "past_kv ignored", IgnoresPastBlock, expect="cached step"),
    Mutant("check_llama_block", "RoPE dropped", NoRopeBlock, expect="GroupedQueryAttention"),
    Mutant("check_generate_greedy", "positions reset to 0", gen_positions_reset, expect="positions reset to 0"),
    Mutant("check_generate_greedy", "prompt re-fed each step", gen_prompt_refed, expect="feed only the newest"),
    Mutant("check_generate_greedy", "cache not used", gen_no_cache_last_token, expect="cache is not used"),
    Mutant("check_generate_greedy", "prompt returned too", gen_with_prompt, expect="prompt too"),
    Mutant("check_generate_greedy", "eos ignored", gen_ignores_eos, expect="did not stop at eos_id"),
    # check_llama reports its parts' diagnoses (and stops before loading SmolLM2)
    Mutant("check_llama", "RMSNorm centred", pieces(RMSNorm=NormCentred), expect="subtracted the mean"),
    Mutant("check_llama", "post-norm block", pieces(LlamaBlock=PostNormBlock), expect="norm after the add"),
    Mutant("check_llama", "positions reset", pieces(generate_greedy=gen_positions_reset),
           expect="positions not advanced"),
]

REFERENCES = {
    "check_kv_cache_bytes": solutions.kv_cache_bytes,
    "check_llama_param_count": solutions.llama_param_count,
    "check_patchify": solutions.patchify,
    "check_rms_norm": solutions.RMSNorm,
    "check_swiglu": solutions.SwiGLU,
    "check_llama_block": solutions.LlamaBlock,
    "check_generate_greedy": solutions.generate_greedy,
    "check_llama": pieces(),
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    result = run_mutant(MODULE, mutant)
    if mutant.checker == "check_llama":
        assert "waits until the four parts above pass" in result.message


@pytest.mark.parametrize("checker", [
    pytest.param(name, marks=pytest.mark.slow) if name == "check_llama" else name for name in sorted(REFERENCES)])
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])

"""Checkers for notebook 08's exercises."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LlamaConfig

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb08 as solutions


def _llama_configs() -> list[LlamaConfig]:
    """SmolLM2-135M, a Llama-2-7B-like shape, and a tiny untied config."""
    return [
        LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True),
        LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
        LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False),
    ]


def check_kv_cache_bytes(kv_cache_bytes: Callable[..., int]) -> CheckResult:
    """``kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=4)`` -> int bytes."""
    configs = _llama_configs()
    cases = [((configs[0], 256), {}), ((configs[1], 4096), {"bytes_per_value": 2}),
             ((configs[2], 10), {"batch": 3})]

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int number of bytes"
        if got == expected:
            return None
        config = args[0]
        if got * 2 == expected:
            return f"got {got}, expected {expected}: half: the cache holds keys AND values"
        ratio = config.num_attention_heads // config.num_key_value_heads
        if ratio > 1 and got == expected * ratio:
            return (f"got {got}, expected {expected}: {ratio}× too big: with grouped-query "
                    "attention only num_key_value_heads heads are cached")
        if got * config.num_hidden_layers == expected:
            return f"got {got}, expected {expected}: every layer has its own cache"
        return f"got {got}, expected {expected}"

    return run_check("kv_cache_bytes", kv_cache_bytes, solutions.kv_cache_bytes, cases, diagnose,
                     hint="2 (K and V) × layers × batch × kv_heads × seq_len × head_dim × bytes")


def check_llama_param_count(llama_param_count: Callable[[LlamaConfig], int]) -> CheckResult:
    """``llama_param_count(config)`` -> parameters of ``LlamaForCausalLM(config)``."""
    configs = _llama_configs()

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        config = args[0]
        d, vocab = config.hidden_size, config.vocab_size
        if config.tie_word_embeddings and got == expected + vocab * d:
            return f"got {got:,}, expected {expected:,}: the LM head is tied to the embeddings"
        if not config.tie_word_embeddings and got == expected - vocab * d:
            return f"got {got:,}, expected {expected:,}: this config does not tie the LM head"
        head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
        extra_kv = 2 * d * (config.num_attention_heads - config.num_key_value_heads) * head_dim
        if extra_kv and got == expected + config.num_hidden_layers * extra_kv:
            return (f"got {got:,}, expected {expected:,}: k_proj and v_proj have "
                    "num_key_value_heads heads, not num_attention_heads")
        norms = (2 * config.num_hidden_layers + 1) * d
        if got == expected - norms:
            return f"got {got:,}, expected {expected:,}: {norms:,} short: the RMSNorm weights"
        return f"got {got:,}, expected {expected:,} (off by {got - expected:+,})"

    return run_check("llama_param_count", llama_param_count, solutions.llama_param_count,
                     [((c,), {}) for c in configs], diagnose,
                     hint="embeddings + layers × (attention + 3·d·ff + 2·d) + d, + LM head if untied")


def check_patchify(patchify: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """``patchify(images, patch_size)`` -> ``(B, N, C·p·p)`` in Conv2d weight order."""
    generator = torch.Generator().manual_seed(0)
    cases = [((torch.rand(2, 3, 8, 8, generator=generator), 4), {}),
             ((torch.rand(1, 3, 6, 12, generator=generator), 3), {}),
             ((torch.rand(1, 1, 4, 4, generator=generator), 2), {})]

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (B, N, C·p·p)"
        if torch.equal(got, expected):
            return None
        images, p = args
        B, C, H, W = images.shape
        channels_last = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        if torch.equal(got, channels_last.reshape(B, -1, C * p * p)):
            return "the values are in (p, p, C) order; Conv2d weights flatten as (C, p, p)"
        column_major = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)
        if torch.equal(got, column_major.reshape(B, -1, C * p * p)):
            return "patches go column by column; expected row-major (left to right, then down)"
        if torch.equal(got.sort(-1).values, expected.sort(-1).values):
            return "each row has the right pixels in the wrong order inside the patch"
        return "the rows are not the image's p×p patches in row-major order"

    return run_check("patchify", patchify, solutions.patchify, cases, diagnose,
                     hint="reshape to (B, C, H/p, p, W/p, p), permute to (B, H/p, W/p, C, p, p)")

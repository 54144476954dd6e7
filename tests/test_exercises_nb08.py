"""Notebook 08's checkers pass the references and diagnose typical wrong answers."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from course_utils.exercises import nb08 as checks
from course_utils.solutions import nb08 as solutions

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize(
    ("checker", "reference"),
    [(checks.check_kv_cache_bytes, solutions.kv_cache_bytes),
     (checks.check_llama_param_count, solutions.llama_param_count),
     (checks.check_patchify, solutions.patchify)],
)
def test_reference_passes_and_stub_is_not_attempted(checker, reference):
    assert checker(reference).passed
    result = checker(stub)
    assert not result.passed and "not attempted" in result.message


def test_llama_param_count_reference_equals_the_meta_device_count():
    for config in checks._llama_configs():
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        assert solutions.llama_param_count(config) == sum(p.numel() for p in model.parameters())


def test_kv_cache_bytes_diagnoses_typical_mistakes():
    def only_keys(config, seq_len, batch=1, bytes_per_value=4):
        return solutions.kv_cache_bytes(config, seq_len, batch, bytes_per_value) // 2

    def query_heads(config, seq_len, batch=1, bytes_per_value=4):
        head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
        return (2 * config.num_hidden_layers * batch * config.num_attention_heads * seq_len
                * head_dim * bytes_per_value)

    def one_layer(config, seq_len, batch=1, bytes_per_value=4):
        return solutions.kv_cache_bytes(config, seq_len, batch, bytes_per_value) // config.num_hidden_layers

    for wrong, words in ((only_keys, "keys AND values"), (query_heads, "num_key_value_heads"),
                         (one_layer, "every layer")):
        result = checks.check_kv_cache_bytes(wrong)
        assert not result.passed and words in result.message, result.message


def test_llama_param_count_diagnoses_typical_mistakes():
    def untied_always(config):
        return solutions.llama_param_count(config) + (
            config.vocab_size * config.hidden_size if config.tie_word_embeddings else 0)

    def no_norms(config):
        return solutions.llama_param_count(config) - (2 * config.num_hidden_layers + 1) * config.hidden_size

    def kv_as_query_heads(config):
        head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
        extra = 2 * config.hidden_size * (config.num_attention_heads - config.num_key_value_heads) * head_dim
        return solutions.llama_param_count(config) + config.num_hidden_layers * extra

    for wrong, words in ((untied_always, "tied"), (no_norms, "RMSNorm"),
                         (kv_as_query_heads, "num_key_value_heads")):
        result = checks.check_llama_param_count(wrong)
        assert not result.passed and words in result.message, result.message
    assert not checks.check_llama_param_count(lambda config: 1.0).passed


def test_patchify_diagnoses_typical_mistakes():
    def channels_last(images, p):
        B, C, H, W = images.shape
        grid = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return grid.reshape(B, -1, C * p * p)

    def column_major(images, p):
        B, C, H, W = images.shape
        grid = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)
        return grid.reshape(B, -1, C * p * p)

    def naive_reshape(images, p):
        B, C, H, W = images.shape
        return images.reshape(B, -1, C * p * p)

    for wrong, words in ((channels_last, "(p, p, C) order"), (column_major, "column by column"),
                         (naive_reshape, "not the image's")):
        result = checks.check_patchify(wrong)
        assert not result.passed and words in result.message, result.message
    result = checks.check_patchify(lambda images, p: images)
    assert not result.passed and "shape" in result.message


def _tiny_llama():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                         eos_token_id=95, bos_token_id=0, pad_token_id=95)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_llama_references_reproduce_a_random_llama_and_generate():
    """check_llama on a random 2-layer Llama: logits, cache and greedy ids vs the model."""
    model = _tiny_llama()
    pieces = {"RMSNorm": solutions.RMSNorm, "SwiGLU": solutions.SwiGLU, "LlamaBlock": solutions.LlamaBlock,
              "generate_greedy": solutions.generate_greedy}
    result = checks.check_llama(pieces, model=model, prompt_ids=[3, 17, 42, 8, 60], max_new_tokens=12)
    assert result.passed, result.message


def test_llama_check_names_a_loop_that_resets_positions():
    def reset(step, prompt_ids, max_new_tokens, eos_id=None):
        logits, past = step(torch.tensor([prompt_ids]), torch.arange(len(prompt_ids)), None)
        new = []
        for _ in range(max_new_tokens):
            new.append(int(logits[0, -1].argmax()))
            logits, past = step(torch.tensor([[new[-1]]]), torch.tensor([0]), past)
        return new

    pieces = {"RMSNorm": solutions.RMSNorm, "SwiGLU": solutions.SwiGLU, "LlamaBlock": solutions.LlamaBlock,
              "generate_greedy": reset}
    result = checks.check_llama(pieces, model=_tiny_llama(), prompt_ids=[3, 17, 42], max_new_tokens=6)
    assert not result.passed and "positions" in "\n".join(result.failures)

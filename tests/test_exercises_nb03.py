"""Notebook 03's references against independent oracles, and its checkers' contract.

The sinusoidal reference is checked against the formula computed entry by entry with
``math``; the RoPE reference against transformers' own Llama rotation (``LlamaRotaryEmbedding``
+ ``apply_rotary_pos_emb``) on random tensors and, in the slow test, on SmolLM2's real
queries and keys. Typical slips are in ``tests/test_mutations_nb03.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from course_utils.exercises import nb03
from course_utils.positional import apply_rope, sinusoidal_encoding
from course_utils.solutions import nb03 as sol03

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


@pytest.mark.parametrize(("seq_len", "d_model", "base"), [(7, 8, 10000.0), (40, 16, 100.0), (3, 2, 10000.0)])
def test_sinusoidal_reference_equals_the_formula(seq_len, d_model, base):
    table = sol03.sinusoidal_encoding(seq_len, d_model, base)
    assert table.shape == (seq_len, d_model)
    for p in range(seq_len):
        for i in range(d_model // 2):
            angle = p / base ** (2 * i / d_model)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.allclose(table, sinusoidal_encoding(seq_len, d_model, base))


def _transformers_rope(x, positions, base):
    d = x.shape[-1]
    config = LlamaConfig(hidden_size=d, num_attention_heads=1, head_dim=d,
                         rope_parameters={"rope_type": "default", "rope_theta": base})
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None])  # (1, T, d)
    return apply_rotary_pos_emb(x, x, cos, sin)[0]  # x (1, H, T, d): cos/sin unsqueezed on the head axis


@pytest.mark.parametrize(("shape", "base"), [((1, 3, 5, 8), 10000.0), ((2, 4, 9, 64), 100000.0), ((1, 1, 4, 2), 500.0)])
def test_rope_reference_equals_transformers(shape, base):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(shape[-2]) * 5 + 2
    expected = _transformers_rope(x, positions, base)
    assert torch.allclose(sol03.apply_rope(x, positions, base), expected, atol=1e-6)
    assert torch.allclose(apply_rope(x, positions, base), expected, atol=1e-6)


def test_sinusoidal_checker_passes_the_reference_and_reports_a_stub():
    assert nb03.check_sinusoidal_encoding(sol03.sinusoidal_encoding).passed

    def stub(seq_len, d_model, base=10000.0):
        raise NotImplementedError

    result = nb03.check_sinusoidal_encoding(stub)
    assert not result.passed and "not attempted" in result.message


def test_sinusoidal_checker_never_raises_on_strange_output():
    result = nb03.check_sinusoidal_encoding(lambda seq_len, d_model, base=10000.0: torch.zeros(seq_len, d_model, 2))
    assert not result.passed and "shape" in result.message
    result = nb03.check_sinusoidal_encoding(lambda seq_len, d_model, base=10000.0: "a table")
    assert not result.passed and "expected a torch.Tensor" in result.message


@pytest.mark.slow
def test_rope_checker_compares_with_smollm2(decoder):
    """The model cases are SmolLM2's own rotation; the reference passes, a stub is not attempted."""
    model, tokenizer = decoder
    cases = nb03._model_rope_cases(model, tokenizer)
    assert len(cases) == 4
    for (x, positions, base), expected in cases:
        assert base == model.config.rope_parameters["rope_theta"]
        assert (sol03.apply_rope(x, positions, base) - expected).abs().max() <= nb03._rope_tolerance(x, positions)
    assert nb03.check_apply_rope(sol03.apply_rope, model=model).passed

    def stub(x, positions, base=10000.0):
        raise NotImplementedError

    assert "not attempted" in nb03.check_apply_rope(stub, model=model).message

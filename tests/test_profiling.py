"""course_utils.profiling: results are well formed (shapes, keys, consistency), not speed.

The stopwatch, the matmul peak and the FLOP formulas are tested in test_measurement.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.blocks import Encoder, EncoderBlock, TransformerConfig
from course_utils.profiling import (
    LayerProfile,
    find_crossover,
    length_sweep,
    model_groups,
    profile_model,
    top_ops,
)


def tiny_config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=50, max_seq_len=32, d_model=32, num_heads=4, num_layers=3, d_ff=64,
                eps=1e-5)
    base.update(overrides)
    return TransformerConfig(**base)


@pytest.mark.parametrize("detail", [False, True])
def test_profile_scratch_encoder_is_well_formed(detail):
    torch.manual_seed(0)
    model = Encoder(tiny_config(norm_first=True)).train()
    ids = torch.randint(0, 50, (2, 16))
    profile = profile_model(model, (ids,), warmup=1, repeats=3, detail=detail)
    assert isinstance(profile, LayerProfile) and profile.repeats == 3
    assert profile.unhooked_s > 0
    assert model.training, "profile_model must restore the training flag"
    names = {"block", "attn_norm", "attention", "ffn_norm", "ffn", "other"}
    if detail:
        names |= {"qkv_proj", "out_proj", "ffn_up", "ffn_down", "attn_core", "ffn_act"}
    for layer in range(3):
        assert {row.name for row in profile.layer_rows(layer)} == names
    assert {row.name for row in profile.rows if row.layer is None} == {"embeddings", "final_norm"}
    for row in profile.rows:
        assert len(profile.samples[(row.layer, row.name)]) == 3
        if row.name not in ("other", "attn_core", "ffn_act"):  # measured, not derived
            assert 0 < row.min_s <= row.median_s
    # sublayers + other add up to the block, repeat by repeat
    for layer in range(3):
        parts = sum(profile.samples[(layer, n)][0] for n in
                    ("attn_norm", "attention", "ffn_norm", "ffn", "other"))
        assert parts == pytest.approx(profile.samples[(layer, "block")][0], rel=1e-9)
        assert profile.get(layer, "block") <= profile.total_s
    assert set(profile.by_sublayer()) >= {"attention", "ffn", "attn_norm", "ffn_norm"}
    table = profile.table()
    assert len(table.splitlines()) == 1 + 3 + 2 + 1  # header, 3 layers, 2 extras, total
    assert "attention" in table and "without hooks" in table
    with pytest.raises(KeyError, match="sublayer 'nope'"):
        profile.get(0, "nope")
    with pytest.raises(ValueError, match="stat must be"):
        profile.table(stat="mean")


def test_hooks_are_removed_and_outputs_unchanged():
    torch.manual_seed(0)
    model = Encoder(tiny_config()).eval()
    ids = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        before = model(ids)
    profile_model(model, ids, warmup=0, repeats=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(ids), before)


@pytest.mark.slow
def test_profile_bert_like_and_block(encoder):
    model, tokenizer = encoder
    batch = tokenizer(["a short sentence", "another"], padding=True, return_tensors="pt")
    profile = profile_model(model, dict(batch), warmup=0, repeats=2, detail=True)
    assert {row.layer for row in profile.rows} == {None, 0, 1, 2, 3, 4, 5}
    assert profile.get(5, "attention") > 0 and profile.get(5, "ffn_up") > 0
    block_profile = profile_model(EncoderBlock(tiny_config()), torch.randn(1, 8, 32), repeats=2,
                                  time_unhooked=False)
    assert {row.layer for row in block_profile.rows} == {0}
    assert block_profile.unhooked_s != block_profile.unhooked_s  # NaN: not measured


def test_model_groups_rejects_unknown_models():
    with pytest.raises(ValueError, match="don't know the layers of Linear"):
        model_groups(nn.Linear(2, 2))


def test_length_sweep_and_crossover():
    block = EncoderBlock(tiny_config())
    points = length_sweep(block, [4, 8], warmup=0, repeats=1)
    assert [p.seq_len for p in points] == [4, 8]
    for p in points:
        assert p.attention_s > 0 and p.ffn_s > 0 and p.block_s >= p.attention_s
    with pytest.raises(ValueError, match=r"lengths\[i\]: expected an integer ≥ 1"):
        length_sweep(block, [4, 0])
    assert find_crossover([1, 2, 3], [0, 1, 5], [2, 2, 2]) == pytest.approx(2.25)
    assert find_crossover([1, 2], [0, 1], [2, 2]) is None
    assert find_crossover([1, 2], [3, 4], [2, 2]) == 1.0
    with pytest.raises(ValueError, match="equally long"):
        find_crossover([1, 2], [1], [1, 2])


def test_top_ops_lists_matmul():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    ops = top_ops(lambda: a @ b, limit=3)
    assert 1 <= len(ops) <= 3
    assert any("mm" in op.name for op in ops)
    assert all(op.calls >= 1 and op.self_cpu_ms >= 0 for op in ops)


@pytest.mark.slow
def test_profile_llama_style_model():
    """Llama layout (input_layernorm, self_attn, post_attention_layernorm, mlp), tiny random."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(config).eval()
    profile = profile_model(model, torch.randint(0, 64, (1, 8)), warmup=0, repeats=2, detail=True)
    assert {row.layer for row in profile.rows} == {None, 0, 1}
    assert {row.name for row in profile.rows if row.layer is None} == {"embeddings", "final_norm"}
    assert profile.get(1, "ffn_up") > 0 and profile.get(1, "qkv_proj") > 0

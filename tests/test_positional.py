"""course_utils.positional: sinusoidal table, RoPE = SmolLM2's own rotary embedding, and
permutation equivariance of attention without positions on MiniLM's real weights."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.positional import (
    apply_rope,
    apply_rope_adjacent_pairs,
    rope_adjacent_permutation,
    rope_frequencies,
    rope_wavelengths,
    rotate_half,
    sinusoidal_encoding,
)


def test_sinusoidal_shape_and_worked_values():
    pe = sinusoidal_encoding(101, 8)
    assert pe.shape == (101, 8) and pe.dtype == torch.float32
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4))
    for p in (1, 100):
        for i in range(4):
            angle = p / 10000 ** (2 * i / 8)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-7)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-7)


def test_sinusoidal_dot_product_depends_on_offset_only():
    pe = sinusoidal_encoding(200, 64).double()
    for k in (0, 1, 5, 30):
        dots = (pe[: 200 - k] * pe[k:]).sum(dim=1)  # PE[p] . PE[p + k] for every p
        assert dots.max() - dots.min() < 1e-5
    # ... and it is not constant across offsets (so it carries information).
    assert (pe[0] @ pe[1]) - (pe[0] @ pe[30]) > 1


def test_sinusoidal_offset_is_a_linear_map():
    """PE[p + k] = M_k PE[p] with M_k a rotation that does not depend on p."""
    pe = sinusoidal_encoding(50, 16).double()
    k = 7
    solution = torch.linalg.lstsq(pe[:40], pe[k : 40 + k]).solution  # (16, 16)
    assert torch.allclose(pe[:43] @ solution, pe[k : 43 + k], atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 8), "seq_len must be a positive integer"), ((4, 7), "d_model must be even"),
     ((4, -2), "d_model must be a positive even integer"), ((2.5, 8), "seq_len must be a positive"),
     ((True, 8), "seq_len must be a positive"), ((4, 8, 0.5), "base must be a finite number > 1"),
     ((4, 8, float("nan")), "base must be a finite number > 1")],
)
def test_sinusoidal_bad_sizes(args, message):
    with pytest.raises(ValueError, match=f"^sinusoidal_encoding: {message}"):
        sinusoidal_encoding(*args)


def test_rope_frequencies_and_rotate_half():
    freqs = rope_frequencies(8, base=100.0)
    assert torch.allclose(freqs, torch.tensor([1.0, 100 ** -0.25, 100 ** -0.5, 100 ** -0.75]))
    assert torch.equal(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_frequencies(7)


def test_rope_rotates_pairs_i_and_i_plus_half():
    x = torch.zeros(1, 4)
    x[0, 0] = 1.0  # the pair (x[0], x[2]) = (1, 0), frequency 1
    out = apply_rope(x, torch.tensor([3]), base=10000.0)
    assert torch.allclose(out[0], torch.tensor([math.cos(3), 0.0, math.sin(3), 0.0]), atol=1e-6)
    assert torch.equal(apply_rope(x, torch.tensor([0])), x)  # position 0: no rotation


def test_rope_preserves_norms_and_depends_on_relative_offset():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 64, generator=generator).double()
    scores = []
    for m, n in ((5, 2), (13, 10), (103, 100), (1003, 1000)):
        qm = apply_rope(q, torch.tensor([m]), base=100000.0)
        kn = apply_rope(k, torch.tensor([n]), base=100000.0)
        assert torch.allclose(qm.norm(), q.norm())
        scores.append((qm @ kn.T).item())
    # All offsets are 3. Angles are computed in float32, like transformers does, so an
    # angle of ~1000 rad carries ~1e-4 absolute error: the spread grows with position.
    assert max(scores) - min(scores) < 1e-4
    other = (apply_rope(q, torch.tensor([9])) @ apply_rope(k, torch.tensor([0])).T).item()
    assert abs(other - scores[0]) > 1e-3  # a different offset gives a different score


def test_rope_batched_positions_and_bad_shapes():
    x = torch.randn(2, 3, 5, 8)  # (B, H, T, d)
    positions = torch.stack([torch.arange(5), torch.arange(5) + 7])  # (B, T)
    out = apply_rope(x, positions)
    assert torch.allclose(out[1], apply_rope(x[1], torch.arange(5) + 7))
    with pytest.raises(ValueError, match="positions must have shape .* end in T=5"):
        apply_rope(x, torch.arange(4))
    with pytest.raises(ValueError, match=r"^apply_rope: x must have shape \(\.\.\., T, head_dim\)"):
        apply_rope(torch.randn(8), torch.arange(8))


@pytest.mark.parametrize("function", [apply_rope, apply_rope_adjacent_pairs])
@pytest.mark.parametrize(
    ("x", "positions", "base", "message"),
    [
        ([[1.0, 2.0]], [0], 10000.0, "x must be a torch.Tensor"),
        (torch.ones(3, 4, dtype=torch.long), torch.arange(3), 10000.0, "x must be a floating-point"),
        (torch.ones(3, 5), torch.arange(3), 10000.0, "head_dim.* must be even"),
        (torch.ones(3, 4), torch.arange(3).float(), 10000.0, "positions must hold integers"),
        (torch.ones(3, 4), torch.tensor([True, False, True]), 10000.0, "positions must hold integers"),
        (torch.ones(3, 4), torch.tensor([0, -1, 2]), 10000.0, "positions must be ≥ 0"),
        (torch.ones(3, 4), torch.tensor(2), 10000.0, "positions must have shape"),
        (torch.ones(3, 4), torch.zeros(1, 1, 3, dtype=torch.long), 10000.0, "positions must have shape"),
        (torch.ones(2, 1, 3, 4), torch.zeros(3, 3, dtype=torch.long), 10000.0, "do not broadcast"),
        (torch.ones(3, 4), torch.arange(3), 0.0, "base must be a finite number > 1"),
        (torch.ones(3, 4), torch.arange(3), float("inf"), "base must be a finite number > 1"),
        (torch.ones(3, 4), torch.arange(3), "10000", "base must be a finite number > 1"),
    ],
)
def test_rope_bad_inputs_name_the_argument(function, x, positions, base, message):
    with pytest.raises(ValueError, match=f"^{function.__name__}: .*{message}"):
        function(x, positions, base)


def test_other_bad_inputs_name_the_argument():
    for function in (rope_frequencies, rope_wavelengths, rope_adjacent_permutation):
        with pytest.raises(ValueError, match=f"^{function.__name__}: head_dim must be even"):
            function(6 + 1)
        with pytest.raises(ValueError, match=f"^{function.__name__}: head_dim must be a positive"):
            function(0)
    with pytest.raises(ValueError, match="^rotate_half: x's last dimension must be even"):
        rotate_half(torch.ones(2, 3))


def test_float64_input_gets_float64_angles():
    """A float64 x is rotated with float64 angles: scores are offset-only to ~1e-12."""
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 1, 64, generator=generator, dtype=torch.float64)
    scores = [(apply_rope(q, torch.tensor([m + 3]), 1e5) @ apply_rope(k, torch.tensor([m]), 1e5).T).item()
              for m in (0, 10, 1000, 100_000)]
    assert max(scores) - min(scores) < 1e-9
    # float32 input: float32 angles, the error grows with the position (what the model does)
    q32, k32 = q.float(), k.float()
    scores32 = [(apply_rope(q32, torch.tensor([m + 3]), 1e5) @ apply_rope(k32, torch.tensor([m]), 1e5).T).item()
                for m in (0, 100_000)]
    assert abs(scores32[0] - scores32[1]) > 1e-6


def test_adjacent_pairs_is_rotate_half_up_to_a_permutation():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 16, generator=generator, dtype=torch.float64)  # (B, H, T, d)
    positions = torch.arange(7) * 5 + 2
    perm = rope_adjacent_permutation(16)
    assert perm.tolist() == [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15]
    half = apply_rope(x, positions, 1e4)
    adjacent = apply_rope_adjacent_pairs(x[..., perm], positions, 1e4)
    assert (adjacent - half[..., perm]).abs().max() < 1e-12
    # Without the permutation the two layouts disagree: the test can fail.
    assert (apply_rope_adjacent_pairs(x, positions, 1e4) - half).abs().max() > 0.1
    # Pair (x[0], x[1]) with frequency 1: a plain 2-D rotation by the position.
    e0 = torch.zeros(1, 4, dtype=torch.float64)
    e0[0, 0] = 1.0
    out = apply_rope_adjacent_pairs(e0, torch.tensor([2]))
    assert torch.allclose(out[0], torch.tensor([math.cos(2), math.sin(2), 0, 0], dtype=torch.float64))


def test_adjacent_permutation_is_what_transformers_undoes_when_loading_gguf():
    """llama.cpp writes W_Q/W_K in adjacent-pair order; transformers' GGUF loader permutes back."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    heads, head_dim, width = 3, 8, 5
    hf_weight = torch.randn(heads * head_dim, width, generator=torch.Generator().manual_seed(3))
    perm = rope_adjacent_permutation(head_dim)
    gguf_weight = hf_weight.view(heads, head_dim, width)[:, perm].reshape(heads * head_dim, width)
    restored = LlamaTensorProcessor()._reverse_permute_weights(gguf_weight.numpy(), heads)
    assert torch.equal(torch.from_numpy(restored), hf_weight)


def test_rope_wavelengths():
    wavelengths = rope_wavelengths(64, 100000.0)
    assert wavelengths.shape == (32,)
    assert torch.allclose(wavelengths, 2 * math.pi / rope_frequencies(64, 100000.0).double(), rtol=1e-6)
    assert wavelengths[0].item() == pytest.approx(2 * math.pi)
    assert wavelengths[-1].item() == pytest.approx(2 * math.pi * 100000 ** (62 / 64))


@pytest.mark.slow
def test_apply_rope_equals_smollm2_rotary_embedding(decoder):
    """Our apply_rope = the model's own LlamaRotaryEmbedding + apply_rotary_pos_emb."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model, tokenizer = decoder
    config = model.config
    base = config.rope_parameters["rope_theta"]
    assert base == 100000.0
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    ids = tokenizer("Rotary embeddings rotate queries and keys by position.", return_tensors="pt")["input_ids"]
    seq_len = ids.shape[1]
    attention = model.model.layers[0].self_attn
    with torch.no_grad():
        hidden = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))  # (1, T, C)
        q = attention.q_proj(hidden).view(1, seq_len, heads, head_dim).transpose(1, 2)  # (1, H, T, d)
        k = attention.k_proj(hidden).view(1, seq_len, kv_heads, head_dim).transpose(1, 2)
        for offset in (0, 500):  # a continuation deep into the context, too
            position_ids = torch.arange(seq_len).unsqueeze(0) + offset  # (1, T)
            cos, sin = model.model.rotary_emb(hidden, position_ids)
            q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
            q_ours = apply_rope(q, position_ids, base=base)
            k_ours = apply_rope(k, position_ids[0], base=base)
            assert (q_ours - q_ref).abs().max() < 1e-5
            assert (k_ours - k_ref).abs().max() < 1e-5
            assert (q_ref - q).abs().max() > 0.1 or offset == 0  # rotation really happened
        # A wrong base is caught: the test can fail.
        assert (apply_rope(q, position_ids, base=10000.0) - q_ref).abs().max() > 1e-2


def _embeddings_without_positions(model, ids: torch.Tensor) -> torch.Tensor:
    """MiniLM's input vectors with the position embeddings left out: (B, T, C)."""
    emb = model.embeddings
    return emb.LayerNorm(emb.word_embeddings(ids) + emb.token_type_embeddings(torch.zeros_like(ids)))


@pytest.mark.slow
def test_attention_without_positions_is_permutation_equivariant(encoder):
    model, tokenizer = encoder
    ids = tokenizer("the dog chased the cat up a tall tree", return_tensors="pt")["input_ids"]
    permutation = torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))
    layer = model.encoder.layer[0]
    with torch.no_grad():
        x = _embeddings_without_positions(model, ids)
        out, _ = layer.attention(x)  # (1, T, C)
        out_shuffled, _ = layer.attention(x[:, permutation])
        assert (out_shuffled - out[:, permutation]).abs().max() < 1e-5
        # With positions (the full model), shuffling the input changes the outputs.
        full = model(input_ids=ids).last_hidden_state
        full_shuffled = model(input_ids=ids[:, permutation]).last_hidden_state
        assert (full_shuffled - full[:, permutation]).abs().max() > 0.1

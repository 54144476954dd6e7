"""Logit lens, activation patching, direct logit attribution and circuits (course_utils.interp).

Fast tests use a random-weight Llama (the same code paths as SmolLM2); one slow test runs on
the bundled SmolLM2.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils import interp
from course_utils.attention import MultiHeadAttention


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    return model


def ids(*values):
    return torch.tensor([values], dtype=torch.long)


def check_model(model, clean_ids, corrupted_ids, tol):
    """Recorded stream = the model's; lens(last) = logits; stream = sum of parts (relative tol)."""
    clean = interp.record(model, clean_ids)
    with torch.no_grad():
        out = model(clean_ids, output_hidden_states=True)
    # the recorded stream is the model's: layer inputs = hidden_states[:-1]
    hidden = torch.stack(out.hidden_states[:-1])[:, 0]
    assert (clean.resid[:-1] - hidden).abs().max() < tol * hidden.abs().max()
    # logit lens on the last layer's output is the model's own logits
    lens = interp.logit_lens(model, clean.resid)
    assert (lens[-1] - out.logits[0]).abs().max() < tol * out.logits.abs().max()
    # the stream is embedding + Σ attention + Σ MLP; attention = Σ heads through o_proj
    rebuilt = clean.resid[0] + clean.attn_out.sum(0) + clean.mlp_out.sum(0)
    assert (rebuilt - clean.resid[-1]).abs().max() < tol * clean.resid[-1].abs().max()
    return clean


def test_record_and_logit_lens_match_the_model(tiny):
    check_model(tiny, ids(5, 9, 13, 2, 7), ids(5, 9, 14, 2, 7), tol=1e-5)


def test_patching_everything_recovers_clean_and_nothing_gives_corrupted(tiny):
    clean_ids, corrupted_ids = ids(5, 9, 13, 2, 7), ids(5, 9, 14, 2, 7)
    clean, corrupted = interp.record(tiny, clean_ids), interp.record(tiny, corrupted_ids)
    n_layers, T = tiny.config.num_hidden_layers, 5
    # running from layer l on the recorded stream reproduces the model, for every l
    for layer in range(n_layers + 1):
        assert (interp.run_from(tiny, layer, corrupted.resid[layer][None])[0] - corrupted.logits[-1]).abs().max() < 1e-5
    # the only differing position is 2: patching layer 0's input there makes the run clean
    patched = interp.patch_residual(tiny, corrupted, clean, [0, 0, n_layers], [2, 0, 4])
    assert (patched[0] - clean.logits[-1]).abs().max() < 1e-5
    # patching a position that does not differ changes nothing
    assert (patched[1] - corrupted.logits[-1]).abs().max() < 1e-5
    # the last layer's output at the last position carries the whole answer
    assert (patched[2] - clean.logits[-1]).abs().max() < 1e-5
    # patching every head's output at every position in every layer, in one run, would not
    # give clean (the MLPs read the corrupted stream); per head, a run patched with the
    # corrupted values is the corrupted run, and a real patch changes the answer
    heads = [(layer, head) for layer in range(n_layers) for head in range(tiny.config.num_attention_heads)]
    same = interp.patch_heads(tiny, corrupted, corrupted, heads)
    assert (same - corrupted.logits[-1]).abs().max() < 1e-5
    moved = interp.patch_heads(tiny, corrupted, clean, heads)
    assert (moved - corrupted.logits[-1]).abs().amax(-1).max() > 1e-3
    assert T == corrupted_ids.shape[1]


def test_direct_logit_attribution_sums_to_the_logit(tiny):
    run = interp.record(tiny, ids(3, 1, 4, 1, 5, 9))
    unembed = tiny.get_output_embeddings().weight
    for token in (0, 17, 96):
        attribution = interp.direct_logit_attribution(tiny, run, unembed[token])
        assert abs(attribution.total - float(run.logits[-1, token])) < 1e-4
        assert abs(attribution.summed() - attribution.total) < 1e-4
    difference = interp.direct_logit_attribution(tiny, run, unembed[17] - unembed[0])
    assert abs(difference.summed() - float(run.logits[-1, 17] - run.logits[-1, 0])) < 1e-4


def test_bad_inputs_are_clear_errors(tiny):
    with pytest.raises(ValueError, match=r"LongTensor of shape \(1, T\)"):
        interp.record(tiny, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="Llama-layout"):
        interp.record(torch.nn.Linear(2, 2), ids(1, 2))


def test_k_composition_finds_a_planted_composition():
    torch.manual_seed(0)
    early, late = MultiHeadAttention(64, 8), MultiHeadAttention(64, 8)
    with torch.no_grad():
        # plant: late head 1's keys read exactly the subspace early head 0 writes to
        ov = interp.ov_circuit(interp.head_weights(early, 0))  # (C, C), rank 8
        written = torch.linalg.qr(ov.T)[0][:, :8]  # (C, 8): a basis of what x @ W_OV can be
        late.k_proj.weight[8:16] = written.T
    scores = interp.k_composition(early, late)
    assert scores.shape == (8, 8)
    others = torch.cat([scores[1, 1:], scores[0], scores[2:].flatten()])
    assert scores[1, 0] > 1.5 * others.max()
    assert 0 <= float(scores.min()) and float(scores.max()) <= 1
    assert ov.shape == (64, 64)


def test_composition_score_is_one_for_aligned_rank_one_maps():
    u = torch.randn(8, 1)
    assert abs(interp.composition_score(u @ u.T, u @ u.T) - 1.0) < 1e-5


@pytest.mark.slow
def test_on_smollm2(decoder):
    model, tokenizer = decoder.model, decoder.tokenizer
    clean_ids = tokenizer("The Eiffel Tower is in the city of", return_tensors="pt").input_ids
    check_model(model, clean_ids, clean_ids, tol=1e-5)
    run = interp.record(model, clean_ids)
    token = int(run.logits[-1].argmax())
    attribution = interp.direct_logit_attribution(model, run, model.get_output_embeddings().weight[token])
    assert abs(attribution.summed() - float(run.logits[-1, token])) < 1e-3


def test_copying_score_counts_diagonal_maxima():
    assert interp.copying_score(torch.eye(5)) == 1.0
    assert interp.copying_score(torch.eye(4).roll(1, dims=1)) == 0.0
    with pytest.raises(ValueError, match=r"square \(V, V\)"):
        interp.copying_score(torch.zeros(2, 3))


def test_full_ov_circuit_of_an_identity_head_copies():
    torch.manual_seed(0)
    embedding = torch.randn(20, 32)
    circuit = interp.full_ov_circuit(embedding, torch.eye(32), embedding)  # tied, OV = identity
    assert interp.copying_score(circuit) == 1.0

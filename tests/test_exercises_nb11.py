"""Notebook 11's references agree with independent oracles (torch.distributions' entropy, a
0/1 head mask, W_O with the head's weight columns zeroed) and with course_utils.analysis; its
checkers report stubs as not attempted. The typical wrong answers are in
tests/test_mutations_nb11.py."""

from __future__ import annotations

import pytest
import torch

from course_utils.analysis import attention_entropy, head_ablation_effects, head_output_projections
from course_utils.embeddings import l2_normalize, mean_pool
from course_utils.exercises import nb11
from course_utils.solutions import nb11 as sol11

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def test_references_agree_with_course_utils():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(3, 10, 10, generator=generator), -1)
    assert torch.allclose(sol11.head_entropy(weights), attention_entropy(weights))


def test_nb11_references_match_independent_oracles():
    """head_entropy = torch.distributions' entropy; zero_head = a 0/1 head mask on (B, T, H, d)."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.softmax(torch.randn(4, 6, 6, generator=generator), -1)
    weights[0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0])  # a one-hot row: 0 · log 0 = 0
    oracle = torch.distributions.Categorical(probs=weights).entropy().mean(-1)
    torch.testing.assert_close(sol11.head_entropy(weights), oracle, atol=1e-6, rtol=1e-5)
    concat = torch.randn(2, 3, 4 * 5, generator=generator)
    keep = torch.ones(4)
    keep[2] = 0
    expected = (concat.view(2, 3, 4, 5) * keep[:, None]).reshape(2, 3, 20)
    assert torch.equal(sol11.zero_head(concat, 2, 4), expected)


@pytest.mark.slow
def test_head_importance_equals_zeroed_weight_columns_and_the_course(encoder):
    """Zeroing head h's input slice of W_O = zeroing W_O's weight columns of head h (an oracle
    that touches no activation); and it equals analysis.head_ablation_effects' number."""
    model, tokenizer = encoder
    inputs = tokenizer(list(nb11.IMPORTANCE_SENTENCES), return_tensors="pt", padding=True)
    layer, head = 5, 3
    out_proj, num_heads = head_output_projections(model)[layer]
    ours = sol11.head_importance(model, inputs, out_proj, head, num_heads)

    def embed():
        return l2_normalize(mean_pool(model(**inputs).last_hidden_state, inputs["attention_mask"]))

    with torch.no_grad():
        intact = embed()
        d_head = out_proj.in_features // num_heads
        saved = out_proj.weight[:, head * d_head:(head + 1) * d_head].clone()
        out_proj.weight[:, head * d_head:(head + 1) * d_head] = 0
        try:
            zeroed = embed()
        finally:
            out_proj.weight[:, head * d_head:(head + 1) * d_head] = saved
        after = embed()
    assert ours == pytest.approx(1 - (intact * zeroed).sum(-1).mean().item(), abs=1e-6)
    assert torch.equal(after, intact)  # the model is intact again
    assert ours > 1e-4  # a last-layer head that matters: the test can fail

    def change():
        return 1 - (embed() * intact).sum(-1).mean().item()

    effects = head_ablation_effects(model, change, layers=[layer])
    assert ours == pytest.approx(effects[layer, head].item(), abs=1e-6)


@pytest.mark.parametrize("name", ["head_entropy", "zero_head"])
def test_stubs_are_not_attempted(name):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert "not attempted" in getattr(nb11, f"check_{name}")(stub).message

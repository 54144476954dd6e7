"""Notebook 04's checkers pass the references and name the typical mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax as scipy_softmax

from course_utils.exercises.nb04 import (
    check_antecedent_attention,
    check_attention,
    check_self_attention,
    check_softmax,
)
from course_utils.solutions import nb04 as solutions


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")


def _message(result):
    assert not result.passed
    return result.message


def test_softmax_reference_matches_scipy_and_passes():
    rng = np.random.default_rng(0)
    for scores in (rng.normal(size=(3, 7)), rng.normal(size=(2, 4, 5)) * 30 + 1000):
        np.testing.assert_allclose(solutions.softmax(scores), scipy_softmax(scores, axis=-1), rtol=1e-12, atol=1e-15)
    assert check_softmax(solutions.softmax).passed


def test_softmax_mistakes():
    naive = check_softmax(lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    assert "subtract each row's max" in _message(naive)
    wrong_axis = check_softmax(lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum(0, keepdims=True))
    assert "last axis" in _message(wrong_axis)


def test_softmax_stub_is_not_attempted():
    def stub(x):
        raise NotImplementedError

    assert "not attempted" in _message(check_softmax(stub))


def test_attention_reference_matches_torch_sdpa_and_passes():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(5, 8)), rng.normal(size=(7, 8)), rng.normal(size=(7, 3))
    expected = F.scaled_dot_product_attention(*(torch.from_numpy(m)[None] for m in (q, k, v)))[0]
    np.testing.assert_allclose(solutions.attention(q, k, v), expected.numpy(), rtol=1e-10, atol=1e-12)
    assert check_attention(solutions.attention).passed


@pytest.mark.parametrize(
    "wrong, needle",
    [
        (lambda q, k, v: solutions.softmax(q @ k.T) @ v, "√d"),
        (lambda q, k, v: solutions.softmax(q @ k.T / q.shape[-1]) @ v, "divided by d"),
        (lambda q, k, v: solutions.softmax(q @ k.T / np.sqrt(q.shape[-1])), "weights"),
        (lambda q, k, v: (q @ k.T / np.sqrt(q.shape[-1])) @ v, "no softmax"),
    ],
)
def test_attention_mistakes(wrong, needle):
    assert needle in _message(check_attention(wrong))


def test_antecedent_reference_matches_a_search_over_heads_and_passes():
    maps = torch.softmax(torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(2)), -1).numpy()
    query, key = 4, 1
    best = max(((layer, head) for layer in range(3) for head in range(4)), key=lambda lh: maps[lh[0], lh[1], query, key])
    layer, head, weight = solutions.antecedent_attention(maps, query, key)
    assert (layer, head) == best and weight == pytest.approx(float(maps[best[0], best[1], query, key]))
    assert check_antecedent_attention(solutions.antecedent_attention).passed


def test_antecedent_mistakes():
    def transposed(maps, query, key):
        return solutions.antecedent_attention(maps, key, query)

    assert "rows are queries" in _message(check_antecedent_attention(transposed))

    def flat_index(maps, query, key):
        weights = maps[:, :, query, key]
        return int(weights.argmax()), 0, float(weights.max())

    assert "unravel_index" in _message(check_antecedent_attention(flat_index))


@pytest.mark.slow
def test_self_attention_reference_equals_minilm_sublayer(encoder):
    """The reference SelfAttention, loaded with a MiniLM layer, = BertSelfAttention + output.dense."""
    from conftest import PADDED_PAIR

    model, tokenizer = encoder
    batch = tokenizer(PADDED_PAIR, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    for index in (0, 5):
        layer = model.encoder.layer[index].attention
        ours = solutions.SelfAttention(model.config.hidden_size, model.config.num_attention_heads)
        ours.load_state_dict({**{f"{n}.{p}": t for n in ("query", "key", "value")
                                 for p, t in getattr(layer.self, n).state_dict().items()},
                              **{f"out.{p}": t for p, t in layer.output.dense.state_dict().items()}})
        additive = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        with torch.no_grad():
            context, _ = layer.self(hidden[index], attention_mask=additive)  # transformers' own attention
            expected = layer.output.dense(context)
            got = ours(hidden[index], batch["attention_mask"].bool()[:, None, None, :])
        real = batch["attention_mask"].bool()  # padded query rows: both attend to the real keys only
        assert (got - expected)[real].abs().max() < 1e-5
    assert check_self_attention(solutions.SelfAttention, model=model).passed


@pytest.mark.slow
def test_self_attention_checker_reports_a_stub(encoder):
    class Stub(torch.nn.Module):
        def __init__(self, d_model, n_heads):
            super().__init__()
            raise NotImplementedError

    assert "not attempted" in _message(check_self_attention(Stub, model=encoder[0]))


@pytest.mark.slow
def test_self_attention_checker_on_a_distilbert_layout(tmp_path):
    """Another family (DistilBERT: q_lin/k_lin/v_lin/out_lin) is checked against its own sublayer."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from course_utils.models import encoder_dir

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(n_layers=2, n_heads=4, dim=64, hidden_dim=128,
                                             attn_implementation="eager")).eval()
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(encoder_dir()).save_pretrained(tmp_path)
    model.config._name_or_path = str(tmp_path)
    result = check_self_attention(solutions.SelfAttention, model=model)
    assert result.passed, result.message

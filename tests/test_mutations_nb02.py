"""Mutation tests for notebook 02's checkers: typical wrong embedding code fails, specifically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mutation import Mutant, run_mutant, run_reference

from course_utils.embeddings import l2_normalize
from course_utils.solutions import nb02 as solutions

pytestmark = pytest.mark.slow  # the embedding-layer and sentence checkers load MiniLM

MODULE = "nb02"


def _ln(x, weight, bias, eps):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def _no_layernorm(ids, pos_ids, types, word, position, token_type, weight, bias, eps):
    return word[ids] + position[pos_ids] + token_type[types]


def _no_positions(ids, pos_ids, types, word, position, token_type, weight, bias, eps):
    return _ln(word[ids] + token_type[types], weight, bias, eps)


def _no_token_types(ids, pos_ids, types, word, position, token_type, weight, bias, eps):
    return _ln(word[ids] + position[pos_ids], weight, bias, eps)


def _ln_without_affine(ids, pos_ids, types, word, position, token_type, weight, bias, eps):
    return _ln(word[ids] + position[pos_ids] + token_type[types], None, None, eps)


def _unbiased_std(ids, pos_ids, types, word, position, token_type, weight, bias, eps):
    x = word[ids] + position[pos_ids] + token_type[types]
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) * weight + bias


def _masked_mean(h, m):
    w = m[..., None].to(h.dtype)
    return (h * w).sum(1) / w.sum(1)


MUTANTS = [
    Mutant("check_cosine_similarity", "plain dot product", lambda a, b: a @ b.T, expect="plain dot product"),
    Mutant("check_cosine_similarity", "arguments swapped", lambda a, b: solutions.cosine_similarity(b, a),
           expect="transposed"),
    Mutant("check_cosine_similarity", "normalised over the wrong axis",
           lambda a, b: (a / a.norm(dim=0)) @ (b / b.norm(dim=0)).T, expect="outside [-1, 1]"),
    Mutant("check_mean_pool", "padding averaged in", lambda h, m: h.mean(dim=1), expect="averaged over padding"),
    Mutant("check_mean_pool", "divided by T", lambda h, m: (h * m[..., None]).sum(1) / h.shape[1], expect="divided by T"),
    Mutant("check_mean_pool", "sum, not mean", lambda h, m: (h * m[..., None]).sum(1), expect="did not divide"),
    Mutant("check_mean_pool", "mean over C", lambda h, m: h.mean(dim=2), expect="shape"),
    Mutant("check_bert_embeddings", "no LayerNorm", _no_layernorm, expect="raw sum"),
    Mutant("check_bert_embeddings", "no position embeddings", _no_positions, expect="position embeddings are missing"),
    Mutant("check_bert_embeddings", "no token types", _no_token_types, expect="token-type"),
    Mutant("check_bert_embeddings", "LayerNorm without weight and bias", _ln_without_affine, expect="learned weight"),
    Mutant("check_bert_embeddings", "unbiased std", _unbiased_std, expect="unbiased"),
    Mutant("check_sentence_embedding", "pooled over padding", lambda h, m: l2_normalize(h.mean(dim=1)),
           expect="padding tokens were averaged in"),
    Mutant("check_sentence_embedding", "not normalised", _masked_mean, expect="not normalised"),
    Mutant("check_sentence_embedding", "normalised before pooling", lambda h, m: l2_normalize(_masked_mean(l2_normalize(h), m)),
           expect="before pooling"),
    Mutant("check_sentence_embedding", "[CLS] pooling", lambda h, m: l2_normalize(h[:, 0]), expect="[CLS]"),
]
REFERENCES = {
    "check_cosine_similarity": solutions.cosine_similarity,
    "check_mean_pool": solutions.mean_pool,
    "check_bert_embeddings": solutions.bert_embeddings,
    "check_sentence_embedding": solutions.sentence_embedding,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])


def test_sentence_embedding_matches_the_library():
    """With sentence-transformers given, the reference equals the library on MiniLM."""
    from sentence_transformers import SentenceTransformer

    from course_utils.exercises.nb02 import check_sentence_embedding
    from course_utils.models import encoder_dir

    library = SentenceTransformer(str(encoder_dir()), device="cpu")
    from mutation import learner_mode

    with learner_mode():
        assert check_sentence_embedding(solutions.sentence_embedding, library=library).passed
        assert not check_sentence_embedding(_masked_mean, library=library).passed


def test_course_embedding_layer_equals_the_model():
    from course_utils import families
    from course_utils.embeddings import bert_embeddings, embedding_layer_weights
    from course_utils.models import load_encoder

    model, tokenizer = load_encoder()
    batch = families.model_inputs(tokenizer, model, ["A padded batch.", "Of two sentences, one longer."])
    tables = embedding_layer_weights(model)
    with torch.no_grad():
        ours = bert_embeddings(batch["input_ids"], families.position_ids(model, batch["input_ids"]),
                               batch["token_type_ids"], **tables)
        theirs = model(**batch, output_hidden_states=True).hidden_states[0]
    assert (ours - theirs).abs().max() < 1e-5

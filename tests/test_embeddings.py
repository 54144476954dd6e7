"""course_utils.embeddings: lookup = one-hot matmul, pooling, similarity, contextual vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.embeddings import (
    cosine_similarity,
    embed_sentences,
    l2_normalize,
    mean_pool,
    nearest_neighbours,
    one_hot_lookup,
    pca_2d,
    sense_gap,
    word_token_positions,
    word_vectors,
    word_vectors_batch,
)


def test_one_hot_lookup_equals_embedding():
    table = torch.randn(50, 6)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    assert torch.equal(one_hot_lookup(ids, table), torch.nn.functional.embedding(ids, table))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 50\)"):
        one_hot_lookup(torch.tensor([50]), table)
    with pytest.raises(ValueError, match="integer token ids"):
        one_hot_lookup(torch.tensor([1.0]), table)
    with pytest.raises(ValueError, match=r"table must have shape \(V, C\)"):
        one_hot_lookup(ids, torch.randn(50))


def test_mean_pool_ignores_padding():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    assert pooled.shape == (2, 3)
    assert torch.allclose(pooled[0], hidden[0, :2].mean(0))
    assert torch.allclose(pooled[1], hidden[1].mean(0))
    with pytest.raises(ValueError, match="no real token"):
        mean_pool(hidden, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, T\) = \(2, 4\)"):
        mean_pool(hidden, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"hidden_states must have shape \(B, T, C\)"):
        mean_pool(hidden[0], mask[0])


def test_cosine_similarity_matches_torch_and_shapes():
    a, b = torch.randn(3, 5), torch.randn(4, 5)
    expected = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    assert torch.allclose(cosine_similarity(a, b), expected, atol=1e-6)
    assert cosine_similarity(a[0], b).shape == (4,)
    assert cosine_similarity(a, b[0]).shape == (3,)
    assert cosine_similarity(a[0], a[0] * 7).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same vector size C"):
        cosine_similarity(a, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"a must have shape \(N, C\) or \(C,\)"):
        cosine_similarity(torch.randn(2, 2, 2), b)
    assert torch.allclose(l2_normalize(a).norm(dim=-1), torch.ones(3))


def test_nearest_neighbours():
    table = torch.eye(4) + 0.1
    values, indices = nearest_neighbours(table[2], table, k=2, exclude=[2])
    assert indices.tolist()[0] != 2 and values.shape == (2,)
    values, indices = nearest_neighbours(table[2], table, k=1)
    assert indices.tolist() == [2] and values.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\]"):
        nearest_neighbours(table[0], table, k=4, exclude=[0])


def test_pca_2d_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    x = torch.randn(20, 7, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 8)
    ours = pca_2d(x).numpy()
    theirs = PCA(n_components=2).fit_transform(x.numpy())
    for column in range(2):
        sign = np.sign(ours[:, column] @ theirs[:, column])
        assert np.allclose(ours[:, column], sign * theirs[:, column], atol=1e-4)
    # Fixed signs: the same points in another order project to the same places, and
    # mirrored points project to mirrored places (the axes themselves never flip).
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    assert np.allclose(pca_2d(x[order]).numpy(), ours[order.numpy()], atol=1e-4)
    assert np.allclose(pca_2d(-x).numpy(), -ours, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 points"):
        pca_2d(x[:1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: one_hot_lookup([[0.5]], torch.randn(3, 2)), "^one_hot_lookup: ids must be integer"),
        (lambda: one_hot_lookup(torch.tensor([1]), torch.ones(3, 2, dtype=torch.long)),
         "^one_hot_lookup: table must be a floating-point"),
        (lambda: mean_pool(torch.randn(1, 2, 3), torch.tensor([[1, 2]])),
         "^mean_pool: attention_mask must hold only 0"),
        (lambda: mean_pool([[1.0]], torch.ones(1, 1)), "^mean_pool: hidden_states must be a torch.Tensor"),
        (lambda: cosine_similarity(torch.randn(2, 0), torch.randn(2, 0)), "^cosine_similarity: a must have vectors"),
        (lambda: cosine_similarity(torch.ones(2, 3, dtype=torch.long), torch.randn(2, 3)),
         "^cosine_similarity: a must be a floating-point"),
        (lambda: l2_normalize(torch.tensor(3.0)), r"^l2_normalize: x must have shape \(\.\.\., C\)"),
        (lambda: nearest_neighbours(torch.randn(3), torch.randn(4, 5)), "^nearest_neighbours: query has size 3"),
        (lambda: nearest_neighbours(torch.randn(5), torch.randn(4, 5), exclude=[9]),
         r"^nearest_neighbours: exclude must hold row indices in \[0, 4\)"),
        (lambda: pca_2d(torch.ones(3, 2, dtype=torch.int32)), "^pca_2d: x must be a floating-point"),
        (lambda: sense_gap(torch.randn(6, 3), [0, 0, 0, 1, 1]), "^sense_gap: senses must be a list of 6"),
        (lambda: sense_gap(torch.randn(6, 3), [0, 0, 0, 1, 1, 2]), "^sense_gap: senses must hold exactly 2"),
        (lambda: sense_gap(torch.randn(6, 3), [0, 0, 0, 0, 1, 1]), "^sense_gap: senses: each sense needs"),
        (lambda: sense_gap(torch.full((6, 3), float("nan")), [0, 0, 0, 1, 1, 1]), "^sense_gap: vectors must be finite"),
        (lambda: sense_gap(torch.randn(6, 3), [0, 0, 0, 1, 1, 1], level=1.0), "^sense_gap: level must be"),
        (lambda: sense_gap(torch.randn(6, 3), [0, 0, 0, 1, 1, 1], n_boot=0), "^sense_gap: n_boot must be"),
    ],
)
def test_bad_inputs_name_the_function_and_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _direct_gap(vectors: torch.Tensor, senses: list) -> float:
    """Same-sense minus cross-sense mean cosine, by an explicit loop over pairs."""
    same, different = [], []
    for i in range(len(senses)):
        for j in range(i + 1, len(senses)):
            cos = torch.nn.functional.cosine_similarity(vectors[i].double(), vectors[j].double(), dim=0).item()
            (same if senses[i] == senses[j] else different).append(cos)
    return float(np.mean(same) - np.mean(different))


def test_sense_gap_equals_a_direct_count_and_detects_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 16, generator=generator)
    senses = ["river"] * 10 + ["money"] * 12
    clustered = centres[[0] * 10 + [1] * 12] + 0.8 * torch.randn(22, 16, generator=generator)
    result = sense_gap(clustered, senses)
    assert result.gap == pytest.approx(_direct_gap(clustered, senses), abs=1e-12)
    assert result.gap == pytest.approx(result.same - result.different, abs=1e-12)
    assert result.n_same_pairs == 45 + 66 and result.n_different_pairs == 120
    assert result.low > 0 and result.low < result.gap < result.high
    assert result.gap > result.null_high  # beats shuffled labels
    assert sense_gap(clustered, senses) == result  # deterministic for a seed
    # No sense structure: the interval straddles 0 and the gap does not beat the null.
    noise = torch.randn(22, 16, generator=generator)
    plain = sense_gap(noise, senses)
    assert plain.gap == pytest.approx(_direct_gap(noise, senses), abs=1e-12)
    assert plain.low < 0 < plain.high and plain.gap < plain.null_high


@pytest.mark.slow
def test_embed_sentences_equals_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    from course_utils.models import encoder_dir

    model, tokenizer = encoder
    sentences = ["A man is eating food.", "Stocks fell sharply today.", "x"]
    ours = embed_sentences(model, tokenizer, sentences, batch_size=2)  # padding in batch 1
    reference = SentenceTransformer(str(encoder_dir()), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    assert ours.shape == (3, 384)
    assert (ours - reference).abs().max() < 1e-5
    assert torch.allclose(ours.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        embed_sentences(model, tokenizer, "a single string")


@pytest.mark.slow
def test_word_vectors_are_contextual(encoder):
    model, tokenizer = encoder
    river = word_vectors(model, tokenizer, "We sat on the bank of the river.", "bank")
    river2 = word_vectors(model, tokenizer, "The river bank was muddy after the rain.", "bank")
    money = word_vectors(model, tokenizer, "I deposited my salary at the bank.", "bank")
    assert river.shape == (7, 384)  # embedding layer + 6 layers
    last = -1
    assert cosine_similarity(river[last], river2[last]) > cosine_similarity(river[last], money[last])
    # A multi-subword word gets the mean of its pieces; the occurrence index selects the match.
    sentence = "Unbelievably, tokenization works"
    positions = word_token_positions(tokenizer, sentence, "tokenization")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(sentence)["input_ids"])
    assert len(positions) == 2 and "".join(tokens[i] for i in positions).replace("#", "") == "tokenization"
    assert word_token_positions(tokenizer, "bank to bank", "bank", occurrence=1) == [3]
    with pytest.raises(ValueError, match="occurs 1 time"):
        word_vectors(model, tokenizer, "the bank", "bank", occurrence=1)


@pytest.mark.slow
def test_word_vectors_batch_equals_one_sentence_at_a_time(encoder):
    model, tokenizer = encoder
    sentences = ["The bank closed.", "We walked along the muddy river bank at dawn.", "Bank on it."]
    batched = word_vectors_batch(model, tokenizer, sentences, "bank")
    assert batched.shape == (3, 7, 384)
    for row, sentence in zip(batched, sentences, strict=True):
        assert (row - word_vectors(model, tokenizer, sentence, "bank")).abs().max() < 1e-4
    with pytest.raises(ValueError, match="^word_token_positions: word 'bank' occurs 0 time"):
        word_vectors_batch(model, tokenizer, ["no such word here"], "bank")
    with pytest.raises(ValueError, match=r"^word_vectors_batch: sentences\[1\] must be a non-empty string"):
        word_vectors_batch(model, tokenizer, ["bank", "  "], "bank")

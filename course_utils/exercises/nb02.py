"""Checkers for notebook 02 (embeddings).

- ``check_cosine_similarity`` / ``check_mean_pool``: warm-ups (02.2, 02.3) on random tensors.
- ``check_bert_embeddings`` (02.1): the learner's embedding layer, given the encoder's real
  tables, must equal the model's own layer-0 input (``hidden_states[0]``).
- ``check_sentence_embedding`` (02.4): mean-pooled, L2-normalised sentence vectors of the
  encoder's real last hidden states must equal sentence-transformers' output (or the course's
  ``embeddings.mean_pool`` + ``l2_normalize`` when the library is not given).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.exercises.nb01 import judge_against
from course_utils.solutions import nb02 as solutions

TOLERANCE = 1e-5


def _cosine_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    cases = []
    for n, m, c in ((3, 4, 8), (1, 5, 16), (6, 2, 384)):
        a = torch.randn(n, c, generator=generator) * 3
        b = torch.randn(m, c, generator=generator) * 0.5 + 1
        cases.append(((a, b), {}))
    same = torch.randn(2, 4, generator=generator)
    cases.append(((same, same * 10), {}))  # scaled copies: cosine 1 on the diagonal
    return cases


def _close(got, expected) -> bool:
    return got.shape == expected.shape and torch.allclose(got, expected, atol=TOLERANCE)


def check_cosine_similarity(cosine_similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """``cosine_similarity(a (N, C), b (M, C))`` must return the ``(N, M)`` cosine matrix."""

    def diagnose(got, expected, args, kwargs):
        a, b = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if _close(got, expected):
            return None
        if got.shape == expected.T.shape and got.shape != expected.shape:
            return f"shape {tuple(got.shape)} is transposed: rows should follow a, i.e. (N, M)"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (N, M) = {tuple(expected.shape)}"
        if _close(got, a @ b.T):
            return "that is the plain dot product: divide by both vectors' norms"
        if got.abs().max() > 1 + 1e-4:
            return "a value is outside [-1, 1]: normalise each row (norm over the last axis, C)"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    return run_check(
        "cosine_similarity", cosine_similarity, solutions.cosine_similarity, _cosine_cases(),
        diagnose, hint=True,
    )


def _pool_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    cases = []
    for lengths, total in (([3, 5], 5), ([1, 4, 2], 6), ([7], 7)):
        hidden = torch.randn(len(lengths), total, 8, generator=generator)
        mask = torch.zeros(len(lengths), total, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        cases.append(((hidden, mask), {}))
    return cases


def check_mean_pool(mean_pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """``mean_pool(hidden (B, T, C), mask (B, T))`` must average over the real tokens only."""

    def diagnose(got, expected, args, kwargs):
        hidden, mask = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, C) = {tuple(expected.shape)}"
        if _close(got, expected):
            return None
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if _close(got, hidden.mean(dim=1)):
            return ("you averaged over padding too: multiply by the mask and divide by the "
                    "number of real tokens")
        if _close(got, (hidden * weights).sum(dim=1) / hidden.shape[1]):
            return "padding is zeroed but you divided by T: divide by each row's number of real tokens"
        if _close(got, (hidden * weights).sum(dim=1)):
            return "you summed the real tokens but did not divide by their number"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    return run_check(
        "mean_pool", mean_pool, solutions.mean_pool, _pool_cases(), diagnose,
        hint=True,
    )


# --- 02.1: the embedding layer, on the encoder's real tables -------------------------------

EMBEDDING_TEXTS = [
    ["Embeddings turn token ids into vectors."],
    ["The bank raised its interest rates again.", "Reeds grew along the bank."],  # padded batch
]
PAIR_TEXT = ("Where is the bank?", "By the river.")  # a sentence pair: segment ids 0 and 1


@cache
def _bundled_encoder():
    from course_utils.models import load_encoder

    return load_encoder()


def _encoder(model, tokenizer):
    if model is None or tokenizer is None:
        return _bundled_encoder()
    return model, tokenizer


def _embedding_cases(model, tokenizer) -> list[tuple[tuple, dict]]:
    from course_utils import families
    from course_utils.embeddings import embedding_layer_weights

    tables = embedding_layer_weights(model)
    batches = [families.model_inputs(tokenizer, model, texts) for texts in EMBEDDING_TEXTS]
    batches.append(families.model_inputs(tokenizer, model, [PAIR_TEXT[0]], text_pair=[PAIR_TEXT[1]]))
    cases = []
    for batch in batches:
        ids = batch["input_ids"]
        token_types = batch.get("token_type_ids") if tables["token_type"] is not None else None
        args = (ids, families.position_ids(model, ids), token_types, tables["word"], tables["position"],
                tables["token_type"], tables["ln_weight"], tables["ln_bias"], tables["eps"])
        cases.append((args, {"batch": batch}))
    return cases


def _layer_norm(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)


def check_bert_embeddings(bert_embeddings: Callable, model=None, tokenizer=None) -> CheckResult:
    """``bert_embeddings(input_ids, position_ids, token_type_ids, word, position, token_type,
    ln_weight, ln_bias, eps) -> (B, T, C)`` must equal the encoder's own layer-0 input.

    ``model`` / ``tokenizer``: a BERT-family encoder (default: the bundled MiniLM)."""
    model, tokenizer = _encoder(model, tokenizer)
    cases = _embedding_cases(model, tokenizer)

    def model_layer0(*args, batch):
        with torch.no_grad():
            return model(**batch, output_hidden_states=True).hidden_states[0]  # (B, T, C)

    def drop_batch(fn):
        def call(*args, batch):
            with torch.no_grad():
                return fn(*args)
        return call

    def diagnose(got, expected, args, kwargs):
        ids, positions, segments, word, position, token_type, weight, bias, eps = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor (B, T, C)"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, T, C) = {tuple(expected.shape)}"
        if _close(got, expected):
            return None
        typed = token_type[torch.zeros_like(ids) if segments is None else segments] if token_type is not None else 0
        total = word[ids] + position[positions] + typed
        if _close(got, total):
            return "that is the raw sum: the embedding layer ends with a LayerNorm (weight, bias, eps)"
        if _close(got, _layer_norm(word[ids] + typed, weight, bias, eps)):
            return "the position embeddings are missing: add position[position_ids]"
        if token_type is not None and _close(got, _layer_norm(word[ids] + position[positions], weight, bias, eps)):
            return "the token-type (segment) embeddings are missing: add token_type[token_type_ids]"
        arange = torch.arange(ids.shape[1]).expand_as(ids)
        if not torch.equal(arange, positions) and _close(got, _layer_norm(word[ids] + position[arange] + typed, weight, bias, eps)):
            return "positions 0..T-1 were used: look positions up with the given position_ids"
        if _close(got, _layer_norm(total, None, None, eps)):
            return "LayerNorm without its learned weight (scale) and bias (shift)"
        if _close(got, (total - total.mean(-1, keepdim=True)) / (total.std(-1, keepdim=True) + eps) * weight + bias):
            return "LayerNorm divided by the unbiased std: use the biased variance, plus eps inside the square root"
        if _close(got, _layer_norm(total.transpose(-1, -2), None, None, eps).transpose(-1, -2) * weight + bias):
            return "normalised over the tokens (T): LayerNorm normalises each token's vector, over C"
        return f"values differ from the model's layer-0 input by up to {float((got - expected).abs().max()):.3g}"

    return judge_against("bert_embeddings", drop_batch(bert_embeddings), drop_batch(solutions.bert_embeddings),
                         model_layer0, cases, diagnose)


# --- 02.4: the sentence embedding, on the encoder's real hidden states --------------------

SENTENCE_BATCHES = [
    ["A man is playing a guitar.", "Someone is strumming a guitar on stage tonight, loudly."],
    ["Short.", "The stock market fell sharply today as investors panicked about rates.", "A cat."],
    ["One sentence on its own, no padding at all."],
]


def check_sentence_embedding(sentence_embedding: Callable, model=None, tokenizer=None,
                             library=None) -> CheckResult:
    """``sentence_embedding(last_hidden_state (B, T, C), attention_mask (B, T)) -> (B, C)``:
    mean over real tokens, then unit length. Compared with ``library`` (a
    ``sentence_transformers.SentenceTransformer`` on the same model files) when given, else
    with the course's ``embeddings.mean_pool`` + ``l2_normalize``."""
    from course_utils import families
    from course_utils.embeddings import l2_normalize, mean_pool

    model, tokenizer = _encoder(model, tokenizer)
    cases = []
    for texts in SENTENCE_BATCHES:
        batch = families.model_inputs(tokenizer, model, texts)
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state  # (B, T, C)
        cases.append(((hidden, batch["attention_mask"]), {"texts": texts}))

    def expected_fn(hidden, mask, texts):
        if library is not None:
            return library.encode(texts, convert_to_tensor=True).cpu()
        return l2_normalize(mean_pool(hidden, mask))

    def drop_texts(fn):
        def call(hidden, mask, texts):
            with torch.no_grad():
                return fn(hidden, mask)
        return call

    def diagnose(got, expected, args, kwargs):
        hidden, mask = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor (B, C)"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, C) = {tuple(expected.shape)}"
        if _close(got, expected):
            return None
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        if _close(got, pooled):
            return "the mean is right but not normalised: scale each sentence vector to length 1"
        if _close(got, l2_normalize(hidden.mean(dim=1))):
            return "the padding tokens were averaged in: average over real tokens only (mask 1)"
        if _close(got, l2_normalize((hidden * weights).sum(1) / hidden.shape[1])) and mask.min() == 0:
            return "padding is zeroed but the sum was divided by T: divide by the number of real tokens"
        unit_tokens = l2_normalize(hidden)
        if _close(got, (unit_tokens * weights).sum(1) / weights.sum(1)) or _close(
                got, l2_normalize((unit_tokens * weights).sum(1) / weights.sum(1))):
            return "the token vectors were normalised before pooling: pool first, then normalise the mean"
        if _close(got, l2_normalize(hidden[:, 0])):
            return "that is the first token's ([CLS]) vector: this model was trained with mean pooling"
        if (got.norm(dim=-1) - 1).abs().max() > 1e-4:
            return "the rows are not of unit length: L2-normalise the pooled vector"
        return f"values differ from the expected embeddings by up to {float((got - expected).abs().max()):.3g}"

    return judge_against("sentence_embedding", drop_texts(sentence_embedding),
                         drop_texts(solutions.sentence_embedding), expected_fn, cases, diagnose)

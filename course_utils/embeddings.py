"""Used in notebooks 02, 03, 11: embeddings — lookups, pooling, similarity, contextual word vectors.

Used in notebooks 02 and 09 (RAG reuses ``mean_pool`` / ``l2_normalize``).

- ``one_hot_lookup``: an embedding lookup written as ``one_hot(ids) @ E``.
- ``mean_pool`` / ``embed_sentences``: sentence vectors the way all-MiniLM-L6-v2 was trained
  (mean of the last hidden states over real tokens, then L2-normalised).
- ``cosine_similarity``: the ``(N, M)`` matrix of cosines between two sets of vectors.
- ``word_vectors`` / ``word_vectors_batch``: the contextual vectors of one word in one sentence
  (or in many, in one padded batch), at every layer.
- ``nearest_neighbours``: the rows of a table most similar to a query vector.
- ``sense_gap``: how much closer same-sense uses of a word are than cross-sense ones, with a
  bootstrap interval and a shuffled-labels null.
- ``pca_2d``: a deterministic 2-D PCA projection for plots.

Bad input raises a ``ValueError`` whose message starts with the function's name and names
the argument: ``"cosine_similarity: a must have shape (N, C) or (C,), got (2, 2, 2)"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def _fail(function: str, message: str) -> ValueError:
    return ValueError(f"{function}: {message}")


def _check_dims(
    function: str, name: str, tensor: object, dims: Sequence[int], shape_doc: str, *,
    floating: bool = True,
) -> torch.Tensor:
    """``tensor`` is a torch.Tensor with one of ``dims`` dimensions (floating point if asked)."""
    if not isinstance(tensor, torch.Tensor):
        raise _fail(function, f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(tensor).__name__}")
    if tensor.dim() not in dims:
        raise _fail(function, f"{name} must have shape {shape_doc}, got {tuple(tensor.shape)}")
    if floating and not tensor.dtype.is_floating_point:
        raise _fail(function, f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if floating and tensor.dim() and tensor.shape[-1] == 0:
        raise _fail(function, f"{name} must have vectors of size C ≥ 1, got shape {tuple(tensor.shape)}")
    return tensor


def _positive_int(function: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(function, f"{name} must be a positive integer, got {value!r}")
    return value


def _text(function: str, name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(function, f"{name} must be a non-empty string, got {value!r:.60}")
    return value


def one_hot_lookup(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``one_hot(ids) @ table``: what ``nn.Embedding`` computes, written as a matmul.

    ids: ``(...)`` integer token ids; table: ``(V, C)``. Returns ``(..., C)``.
    """
    _check_dims("one_hot_lookup", "table", table, (2,), "(V, C)")
    try:
        ids = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError) as error:
        raise _fail("one_hot_lookup", f"ids must be integer token ids, got {type(ids).__name__}") from error
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise _fail("one_hot_lookup", f"ids must be integer token ids, got dtype {ids.dtype}")
    vocab_size = table.shape[0]
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise _fail("one_hot_lookup",
            f"ids must lie in [0, {vocab_size}) for a table of {vocab_size} rows, "
            f"got min {int(ids.min())}, max {int(ids.max())}"
        )
    one_hot = torch.nn.functional.one_hot(ids.long(), vocab_size).to(table.dtype)  # (..., V)
    return one_hot @ table  # (..., V) @ (V, C) -> (..., C)


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over the real (unpadded) tokens of each sequence.

    hidden_states: ``(B, T, C)``; attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding.
    Returns ``(B, C)``. Padding positions get weight 0, so a padded batch gives the same
    vectors as each sentence on its own. A row with no real token is an error.
    """
    _check_dims("mean_pool", "hidden_states", hidden_states, (3,), "(B, T, C)")
    attention_mask = torch.as_tensor(attention_mask)
    if attention_mask.shape != hidden_states.shape[:2]:
        raise _fail("mean_pool",
            f"attention_mask must have shape (B, T) = {tuple(hidden_states.shape[:2])}, "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.numel() and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise _fail("mean_pool", "attention_mask must hold only 0 (padding) and 1 (real token)")
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
    counts = weights.sum(dim=1)  # (B, 1)
    if (counts == 0).any():
        raise _fail("mean_pool", "attention_mask has a row with no real token (all zeros): nothing to average")
    return (hidden_states * weights).sum(dim=1) / counts  # (B, C)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each vector (last axis) to unit length; ``(..., C) -> (..., C)``.

    A zero vector stays zero (its norm is clamped to ``eps``), never ``nan``.
    """
    _check_dims("l2_normalize", "x", x, range(1, 65), "(..., C)")
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between every row of ``a`` and every row of ``b``.

    a: ``(N, C)`` or ``(C,)``; b: ``(M, C)`` or ``(C,)``. Returns ``(N, M)``, with the axis of a
    1-D input dropped (two 1-D inputs give a 0-d tensor). Values lie in [-1, 1].
    """
    _check_dims("cosine_similarity", "a", a, (1, 2), "(N, C) or (C,)")
    _check_dims("cosine_similarity", "b", b, (1, 2), "(M, C) or (C,)")
    if a.shape[-1] != b.shape[-1]:
        raise _fail("cosine_similarity",
            f"a and b must have the same vector size C: got a {tuple(a.shape)}, b {tuple(b.shape)}"
        )
    if a.dtype != b.dtype:
        a, b = a.to(torch.promote_types(a.dtype, b.dtype)), b.to(torch.promote_types(a.dtype, b.dtype))
    sims = l2_normalize(a.reshape(-1, a.shape[-1])) @ l2_normalize(b.reshape(-1, b.shape[-1])).T
    if a.dim() == 1:
        sims = sims[0]
    if b.dim() == 1:
        sims = sims[..., 0]
    return sims


@torch.no_grad()
def embed_sentences(
    model, tokenizer, sentences: Sequence[str], normalize: bool = True, batch_size: int = 32
) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 is trained for: mean pool, then L2-normalise.

    Returns ``(N, C)`` for N sentences (C = 384 for MiniLM); equal to sentence-transformers'
    ``encode`` on the same model (a test checks it).
    """
    if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences:
        raise _fail("embed_sentences", f"sentences must be a non-empty list of strings, got {sentences!r:.60}")
    for index, sentence in enumerate(sentences):
        _text("embed_sentences", f"sentences[{index}]", sentence)
    _positive_int("embed_sentences", "batch_size", batch_size)
    chunks = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            list(sentences[start : start + batch_size]), padding=True, truncation=True,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state  # (B, T, C)
        chunks.append(mean_pool(hidden, batch["attention_mask"]))
    vectors = torch.cat(chunks)  # (N, C)
    return l2_normalize(vectors) if normalize else vectors


def word_token_positions(tokenizer, sentence: str, word: str, occurrence: int = 0) -> list[int]:
    """Indices (in the tokenized sentence, special tokens included) of ``word``'s subwords.

    Finds the ``occurrence``-th whole-word match of ``word`` (case-insensitive) and maps its
    characters to tokens with the tokenizer's offsets.
    """
    _text("word_token_positions", "sentence", sentence)
    _text("word_token_positions", "word", word)
    if isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 0:
        raise _fail("word_token_positions", f"occurrence must be an integer ≥ 0, got {occurrence!r}")
    matches = [m.span() for m in re.finditer(rf"\b{re.escape(word)}\b", sentence, re.IGNORECASE)]
    if len(matches) <= occurrence:
        raise _fail(
            "word_token_positions",
            f"word {word!r} occurs {len(matches)} time(s) in {sentence!r}; "
            f"occurrence={occurrence} asked for match number {occurrence + 1}"
        )
    start, end = matches[occurrence]
    offsets = tokenizer(sentence, return_offsets_mapping=True)["offset_mapping"]
    # Special tokens have empty (0, 0) spans and are skipped.
    positions = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not positions:  # e.g. the word was cut off by truncation
        raise _fail("word_token_positions", f"word {word!r} maps to no token of {sentence!r:.60}")
    return positions


@torch.no_grad()
def word_vectors(model, tokenizer, sentence: str, word: str, occurrence: int = 0) -> torch.Tensor:
    """Contextual vectors of ``word`` in ``sentence`` at every layer: ``(L + 1, C)``.

    Row 0 is the embedding layer's output (static lookup + position + LayerNorm), row ``l``
    the output of layer ``l``. A word split into several subwords gets their mean.
    """
    positions = word_token_positions(tokenizer, sentence, word, occurrence)
    batch = tokenizer(sentence, return_tensors="pt")
    hidden = model(**batch, output_hidden_states=True).hidden_states  # L+1 x (1, T, C)
    stacked = torch.stack(hidden)[:, 0]  # (L + 1, T, C)
    return stacked[:, positions].mean(dim=1)  # (L + 1, C)


@torch.no_grad()
def word_vectors_batch(
    model, tokenizer, sentences: Sequence[str], word: str, occurrence: int = 0
) -> torch.Tensor:
    """``word_vectors`` for many sentences in one padded forward pass: ``(N, L + 1, C)``.

    Row ``n`` equals ``word_vectors(model, tokenizer, sentences[n], word, occurrence)`` to
    float32 rounding (padding is masked out; a test checks it).
    """
    if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences:
        raise _fail("word_vectors_batch", f"sentences must be a non-empty list of strings, got {sentences!r:.60}")
    positions = []
    for index, sentence in enumerate(sentences):
        _text("word_vectors_batch", f"sentences[{index}]", sentence)
        positions.append(word_token_positions(tokenizer, sentence, word, occurrence))
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")
    hidden = torch.stack(model(**batch, output_hidden_states=True).hidden_states, dim=1)  # (N, L+1, T, C)
    return torch.stack([hidden[n][:, p].mean(dim=1) for n, p in enumerate(positions)])  # (N, L+1, C)


def nearest_neighbours(
    query: torch.Tensor, table: torch.Tensor, k: int = 5, exclude: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``table`` with the highest cosine similarity to ``query``.

    query: ``(C,)``; table: ``(V, C)``. Returns ``(similarities (k,), indices (k,))``, best
    first; rows in ``exclude`` (e.g. the query's own id) are skipped.
    """
    _check_dims("nearest_neighbours", "query", query, (1,), "(C,)")
    _check_dims("nearest_neighbours", "table", table, (2,), "(V, C)")
    if query.shape[0] != table.shape[1]:
        raise _fail("nearest_neighbours", f"query has size {query.shape[0]} but table rows have "
                                          f"size {table.shape[1]}")
    exclude = list(exclude)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < table.shape[0] for i in exclude):
        raise _fail("nearest_neighbours", f"exclude must hold row indices in [0, {table.shape[0]}), got {exclude!r:.60}")
    exclude = sorted(set(exclude))
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= table.shape[0] - len(exclude):
        raise _fail("nearest_neighbours", f"k must be an int in [1, {table.shape[0] - len(exclude)}], got {k!r}")
    sims = cosine_similarity(query, table)  # (V,)
    if exclude:
        sims = sims.clone()
        sims[exclude] = float("-inf")
    values, indices = sims.topk(k)
    return values, indices


@dataclass(frozen=True)
class SenseGap:
    """How much closer same-sense uses of a word are than cross-sense uses (cosines).

    ``same`` / ``different``: mean cosine over pairs of distinct sentences with the same /
    different sense; ``gap = same - different``. ``low``/``high``: bootstrap percentile
    interval of the gap (sentences resampled with replacement within each sense, pairs of a
    sentence with itself left out). ``null_high``: the ``level`` quantile of the gap when
    the sense labels are shuffled (what chance alone produces on these vectors).
    ``same_std`` / ``different_std``: spread of the individual pair cosines.
    """

    same: float
    different: float
    gap: float
    low: float
    high: float
    null_high: float
    same_std: float
    different_std: float
    n_same_pairs: int
    n_different_pairs: int
    level: float


def _weighted_gap(sims: torch.Tensor, weights_a: torch.Tensor, weights_b: torch.Tensor) -> torch.Tensor:
    """Gap per replicate from sentence weights: sims ``(N, N)``, weights ``(R, N)`` per sense.

    Weight = how many times a sentence is drawn (bootstrap) or 0/1 (a labelling). Same-sense
    pairs of a sentence with itself are left out (zero diagonal); pair (i, j) counts
    ``w_i · w_j`` times.
    """
    off_diagonal = sims - torch.diag(sims.diagonal())  # (N, N)

    def pairs(wa: torch.Tensor, wb: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return ((wa @ matrix) * wb).sum(-1)  # (R,): sum over i, j of wa_i matrix_ij wb_j

    ones = torch.ones_like(sims) - torch.eye(sims.shape[0], dtype=sims.dtype)
    same = (pairs(weights_a, weights_a, off_diagonal) + pairs(weights_b, weights_b, off_diagonal)) / (
        pairs(weights_a, weights_a, ones) + pairs(weights_b, weights_b, ones)
    )
    different = pairs(weights_a, weights_b, sims) / (weights_a.sum(-1) * weights_b.sum(-1))
    return same - different  # (R,); nan where a replicate has no same-sense pair


def sense_gap(
    vectors: torch.Tensor, senses: Sequence[object], *, n_boot: int = 2000,
    n_shuffles: int = 2000, level: float = 0.95, seed: int = 0,
) -> SenseGap:
    """Same-sense minus cross-sense mean cosine of one word's vectors, with its spread.

    vectors: ``(N, C)``, one vector of the word per sentence; senses: ``N`` labels with
    exactly two distinct values, each used by at least 3 sentences. Deterministic for a
    given ``seed``.
    """
    function = "sense_gap"
    _check_dims(function, "vectors", vectors, (2,), "(N, C)")
    if isinstance(senses, (str, bytes)) or not isinstance(senses, Sequence) or len(senses) != vectors.shape[0]:
        raise _fail(function, f"senses must be a list of {vectors.shape[0]} labels (one per row of "
                              f"vectors), got {senses!r:.60}")
    kinds = sorted(set(senses), key=repr)
    if len(kinds) != 2:
        raise _fail(function, f"senses must hold exactly 2 distinct labels, got {len(kinds)}: {kinds!r:.60}")
    counts = [sum(1 for s in senses if s == kind) for kind in kinds]
    if min(counts) < 3:
        raise _fail(function, f"senses: each sense needs at least 3 sentences, got {dict(zip(kinds, counts, strict=True))}")
    _positive_int(function, "n_boot", n_boot)
    _positive_int(function, "n_shuffles", n_shuffles)
    if isinstance(level, bool) or not isinstance(level, float) or not 0.5 <= level < 1:
        raise _fail(function, f"level must be a float in [0.5, 1), got {level!r}")
    if not torch.isfinite(vectors).all():
        raise _fail(function, "vectors must be finite (found nan or inf)")

    sims = cosine_similarity(vectors.double(), vectors.double())  # (N, N)
    labels = torch.tensor([kinds.index(s) for s in senses])  # (N,) in {0, 1}
    n = len(senses)
    ids = torch.arange(n)
    same_label = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    same_pairs, diff_pairs = sims[same_label & upper], sims[~same_label & upper]

    is_a = (labels == 0).double()  # (N,)
    gap = _weighted_gap(sims, is_a[None], 1 - is_a[None])[0].item()

    generator = torch.Generator().manual_seed(seed)
    draws = []
    for sense in (0, 1):  # resample each sense's sentences with replacement: draw counts (R, N)
        members = ids[labels == sense]
        picks = members[torch.randint(len(members), (n_boot, len(members)), generator=generator)]
        draws.append(torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(
            1, picks, torch.ones(n_boot, len(members), dtype=torch.float64)))
    boot = _weighted_gap(sims, draws[0], draws[1])
    boot = boot[~boot.isnan()]
    tail = (1 - level) / 2
    low, high = torch.quantile(boot, tail).item(), torch.quantile(boot, 1 - tail).item()

    shuffled = torch.stack([is_a[torch.randperm(n, generator=generator)] for _ in range(n_shuffles)])
    null = _weighted_gap(sims, shuffled, 1 - shuffled)  # (n_shuffles,)
    return SenseGap(
        same=same_pairs.mean().item(), different=diff_pairs.mean().item(), gap=gap, low=low, high=high,
        null_high=torch.quantile(null, level).item(), same_std=same_pairs.std().item(),
        different_std=diff_pairs.std().item(), n_same_pairs=len(same_pairs),
        n_different_pairs=len(diff_pairs), level=level,
    )


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project ``(N, C)`` points onto their top-2 principal components: ``(N, 2)``.

    Centres the points and uses the SVD. Each component's sign is fixed (its largest
    coefficient is positive) so plots do not flip between runs or machines.
    """
    _check_dims("pca_2d", "x", x, (2,), "(N, C)")
    if x.shape[0] < 2:
        raise _fail("pca_2d", f"x must hold at least 2 points, got {x.shape[0]}")
    x = x.double()
    centred = x - x.mean(dim=0)  # (N, C)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(N, C), C)
    components = vh[:2]  # (2, C)
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * signs
    return (centred @ components.T).float()  # (N, 2)


# --- the embedding layer of BERT-family encoders (notebook 02, exercise 02.1) ------------


def embedding_layer_weights(model) -> dict:
    """The tables of a BERT-family encoder's embedding layer, as plain tensors.

    Returns ``{"word": (V, C), "position": (P, C), "token_type": (S, C) or None,
    "ln_weight": (C,), "ln_bias": (C,), "eps": float}``. BERT and RoBERTa have all of them
    (RoBERTa's position table keeps its two reserved rows: index it with
    ``families.position_ids``); DistilBERT has no token-type table (``None``). Other families
    (GPT-2, Llama, T5: no LayerNorm in the embedding) raise a ``ValueError``. Used in notebook 02.
    """
    from course_utils import families

    family = families.describe(model).family
    if family not in ("bert", "roberta", "distilbert"):
        raise ValueError(
            f"embedding_layer_weights: expected a BERT-family encoder (bert, roberta, distilbert), "
            f"got {type(model).__name__} (family {family!r}), whose embedding layer has no LayerNorm"
        )
    layer = getattr(model, "embeddings", None) or model.base_model.embeddings
    token_type = getattr(layer, "token_type_embeddings", None)
    return {
        "word": layer.word_embeddings.weight.detach(),
        "position": layer.position_embeddings.weight.detach(),
        "token_type": None if token_type is None else token_type.weight.detach(),
        "ln_weight": layer.LayerNorm.weight.detach(),
        "ln_bias": layer.LayerNorm.bias.detach(),
        "eps": float(layer.LayerNorm.eps),
    }


def bert_embeddings(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    word: torch.Tensor,
    position: torch.Tensor,
    token_type: torch.Tensor | None,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``(B, T)`` ids -> ``(B, T, C)``: ``LayerNorm(word[ids] + position[position_ids] +
    token_type[token_type_ids])``, the BERT-family embedding layer in eval mode (no dropout).

    ``token_type`` / ``token_type_ids`` may be ``None`` (DistilBERT: no segments). Equal to the
    model's ``hidden_states[0]`` (tested in ``tests/test_embeddings.py``). Used in notebook 02.
    """
    ids = _check_dims("bert_embeddings", "input_ids", input_ids, (2,), "(B, T)", floating=False)
    x = word[ids] + position[position_ids]  # (B, T, C)
    if token_type is not None:
        segments = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
        x = x + token_type[segments]
    mean = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
    variance = x.var(dim=-1, keepdim=True, unbiased=False)  # (B, T, 1)
    return (x - mean) / torch.sqrt(variance + eps) * ln_weight + ln_bias  # (B, T, C)


def sentence_embedding(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, C), (B, T) -> (B, C)``: mean over real tokens, then L2-normalised (unit rows),
    as all-MiniLM-L6-v2 / sentence-transformers compute it. Used in notebooks 02, 09."""
    return l2_normalize(mean_pool(last_hidden_state, attention_mask))

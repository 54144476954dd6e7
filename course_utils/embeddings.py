"""Embeddings (notebook 02, reused by the RAG notebook 09): pooling, similarity, projections.

- ``one_hot_lookup``: an embedding lookup written as ``one_hot(ids) @ E``.
- ``mean_pool`` / ``embed_sentences``: sentence vectors the way all-MiniLM-L6-v2 was trained
  (mean of the last hidden states over real tokens, then L2-normalised).
- ``cosine_similarity``: the ``(N, M)`` matrix of cosines between two sets of vectors.
- ``word_vectors``: the contextual vectors of one word in one sentence, at every layer.
- ``nearest_neighbours``: the rows of a table most similar to a query vector.
- ``pca_2d``: a deterministic 2-D PCA projection for plots.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch


def _check_dims(name: str, tensor: torch.Tensor, dims: Sequence[int], shape_doc: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape_doc}, got {type(tensor).__name__}")
    if tensor.dim() not in dims:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(tensor.shape)}")


def one_hot_lookup(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``one_hot(ids) @ table``: what ``nn.Embedding`` computes, written as a matmul.

    ids: ``(...)`` integer token ids; table: ``(V, C)``. Returns ``(..., C)``.
    """
    _check_dims("table", table, (2,), "(V, C)")
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
    vocab_size = table.shape[0]
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
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
    _check_dims("hidden_states", hidden_states, (3,), "(B, T, C)")
    attention_mask = torch.as_tensor(attention_mask)
    if attention_mask.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"attention_mask must have shape (B, T) = {tuple(hidden_states.shape[:2])}, "
            f"got {tuple(attention_mask.shape)}"
        )
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
    counts = weights.sum(dim=1)  # (B, 1)
    if (counts == 0).any():
        raise ValueError("attention_mask has a row with no real token (all zeros): nothing to average")
    return (hidden_states * weights).sum(dim=1) / counts  # (B, C)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each vector (last axis) to unit length; ``(..., C) -> (..., C)``."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between every row of ``a`` and every row of ``b``.

    a: ``(N, C)`` or ``(C,)``; b: ``(M, C)`` or ``(C,)``. Returns ``(N, M)``, with the axis of a
    1-D input dropped (two 1-D inputs give a 0-d tensor). Values lie in [-1, 1].
    """
    _check_dims("a", a, (1, 2), "(N, C) or (C,)")
    _check_dims("b", b, (1, 2), "(M, C) or (C,)")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a and b must have the same vector size C: got a {tuple(a.shape)}, b {tuple(b.shape)}"
        )
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
    if isinstance(sentences, str) or not sentences:
        raise ValueError(f"sentences must be a non-empty list of strings, got {sentences!r:.60}")
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
    matches = [m.span() for m in re.finditer(rf"\b{re.escape(word)}\b", sentence, re.IGNORECASE)]
    if len(matches) <= occurrence:
        raise ValueError(
            f"word {word!r} occurs {len(matches)} time(s) in {sentence!r}; "
            f"occurrence={occurrence} asked for match number {occurrence + 1}"
        )
    start, end = matches[occurrence]
    offsets = tokenizer(sentence, return_offsets_mapping=True)["offset_mapping"]
    # Special tokens have empty (0, 0) spans and are skipped.
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


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


def nearest_neighbours(
    query: torch.Tensor, table: torch.Tensor, k: int = 5, exclude: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``table`` with the highest cosine similarity to ``query``.

    query: ``(C,)``; table: ``(V, C)``. Returns ``(similarities (k,), indices (k,))``, best
    first; rows in ``exclude`` (e.g. the query's own id) are skipped.
    """
    _check_dims("query", query, (1,), "(C,)")
    _check_dims("table", table, (2,), "(V, C)")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= table.shape[0] - len(exclude):
        raise ValueError(f"k must be an int in [1, {table.shape[0] - len(exclude)}], got {k!r}")
    sims = cosine_similarity(query, table)  # (V,)
    if exclude:
        sims = sims.clone()
        sims[list(exclude)] = float("-inf")
    values, indices = sims.topk(k)
    return values, indices


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project ``(N, C)`` points onto their top-2 principal components: ``(N, 2)``.

    Centres the points and uses the SVD. Each component's sign is fixed (its largest
    coefficient is positive) so plots do not flip between runs or machines.
    """
    _check_dims("x", x, (2,), "(N, C)")
    if x.shape[0] < 2:
        raise ValueError(f"pca_2d needs at least 2 points, got {x.shape[0]}")
    x = x.double()
    centred = x - x.mean(dim=0)  # (N, C)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(N, C), C)
    components = vh[:2]  # (2, C)
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * signs
    return (centred @ components.T).float()  # (N, 2)

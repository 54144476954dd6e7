"""Used in notebooks 04, 05, 11, 12: what attention heads do, measured.

Conventions: an attention map is a tensor ``(..., T, T)`` of weights, rows = queries, columns
= keys, each row summing to 1 (or 0 for a fully masked row). Leading dims are free: one
head ``(T, T)``, a layer ``(H, T, T)``, a batch ``(B, H, T, T)``. Every score below reduces
the last two axes and keeps the leading ones, so ``score(weights)`` of a ``(B, H, T, T)``
tensor is ``(B, H)``; average over the batch axis yourself.

- **Pattern features** (encoder heads): ``diagonal_score``, ``offset_score`` (previous /
  next token), ``key_mass`` ([CLS], [SEP], punctuation), ``mean_distance``,
  ``attention_entropy``; ``head_features`` stacks them for a whole model; ``rule_labels``
  names heads with transparent thresholds.
- **Circuit scores** (decoder heads): ``previous_token_score``, ``duplicate_token_score``,
  ``prefix_matching_score``, ``induction_score`` (+ ``uniform_induction_baseline``).
- **Ablations**: ``ablate_heads`` zeroes chosen heads' outputs, or sets them to their
  mean (``head_output_means``) (a pre-hook on the output
  projection, i.e. the concatenated heads are masked before W_O), ``skip_layers`` makes
  layers the identity; ``head_ablation_effects`` / ``layer_ablation_effects`` loop them.
- ``word_token_index``: where a word of a text sits in its tokens (by character offsets),
  ``antecedent_preference`` and ``flip_summary`` for pronoun experiments.
- ``AttentionOnlyTransformer``: the 2-layer, attention-only decoder of the induction-head
  experiment, and ``repeated_block_batch`` its data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from course_utils import families
from course_utils.attention import MultiHeadAttention
from course_utils.blocks import CausalLM, TransformerConfig

# ----------------------------------------------------------------------------------------
# input checks


def _check_weights(weights: torch.Tensor, square: bool = True) -> torch.Tensor:
    weights = torch.as_tensor(weights)
    if weights.dim() < 2:
        raise ValueError(
            f"attention weights must have shape (..., T_query, T_key), got {tuple(weights.shape)}"
        )
    if square and weights.shape[-1] != weights.shape[-2]:
        raise ValueError(
            "self-attention weights must be square (..., T, T), got "
            f"{tuple(weights.shape)}"
        )
    if not weights.is_floating_point():
        raise ValueError(f"attention weights must be floating point, got {weights.dtype}")
    return weights


def _check_tokens(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    seq_len = weights.shape[-1]
    if tokens.dim() not in (1, 2) or tokens.shape[-1] != seq_len:
        raise ValueError(
            f"tokens must have shape (T,) or (B, T) with T={seq_len} (weights "
            f"{tuple(weights.shape)}), got {tuple(tokens.shape)}"
        )
    if tokens.dim() == 2 and (weights.dim() < 3 or weights.shape[0] != tokens.shape[0]):
        raise ValueError(
            f"tokens of shape (B={tokens.shape[0]}, T) need weights (B, ..., T, T), got "
            f"{tuple(weights.shape)}"
        )
    return tokens


def _align(per_batch: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(T, T)`` or ``(B, T, T)`` key mask to broadcast against weights."""
    if per_batch.dim() == 2:
        return per_batch
    extra = weights.dim() - 3  # head axes between batch and (T, T)
    return per_batch.reshape(per_batch.shape[0], *([1] * extra), *per_batch.shape[1:])


def _masked_row_mean(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean over the query axis (-1 of ``values (..., T)``) of the rows where ``rows``."""
    rows = rows.to(values.dtype)
    count = rows.sum(-1)
    if torch.any(count == 0):
        raise ValueError("no query position qualifies for this score (sequence too short?)")
    return (values * rows).sum(-1) / count


# ----------------------------------------------------------------------------------------
# pattern features


def attention_entropy(weights: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """Mean row entropy in nats: ``-Σ_j a_ij log a_ij`` averaged over queries i.

    ``(..., T, T) -> (...)``. ``0 · log 0`` counts as 0. A one-hot row has entropy 0, a
    uniform row over n keys has ``log n``. ``normalise=True`` divides each row's entropy by
    ``log(number of keys it could see)`` (its non-zero count is not used: a causal row i
    sees i + 1 keys, a bidirectional row T), giving values in [0, 1] comparable across
    lengths. Rows with a single key (entropy 0 / log 1) are skipped when normalising.
    """
    weights = _check_weights(weights, square=False)
    plogp = torch.where(weights > 0, weights * weights.clamp_min(1e-30).log(), 0.0)
    row_entropy = -plogp.sum(-1)  # (..., T)
    if not normalise:
        return row_entropy.mean(-1)
    seq_len = weights.shape[-1]
    causal = bool(torch.all(weights.triu(1) == 0)) and weights.shape[-2] == seq_len
    keys = torch.arange(1, seq_len + 1) if causal else torch.full((weights.shape[-2],), seq_len)
    rows = keys > 1
    ratio = torch.where(rows, row_entropy / keys.clamp_min(2).log().to(weights.dtype), 0.0)
    return _masked_row_mean(ratio, rows)


def offset_score(weights: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean attention from each query i to key i + offset, over queries where it exists.

    ``offset=-1`` is the previous token, ``+1`` the next token, ``0`` the diagonal.
    ``(..., T, T) -> (...)``; a perfect previous-token head scores 1, uniform
    bidirectional attention over T keys scores 1/T.
    """
    weights = _check_weights(weights)
    seq_len = weights.shape[-1]
    if not isinstance(offset, int) or abs(offset) >= seq_len:
        raise ValueError(f"offset must be an int with |offset| < T={seq_len}, got {offset!r}")
    return torch.diagonal(weights, offset=offset, dim1=-2, dim2=-1).mean(-1)


def diagonal_score(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention of each token to itself, ``(..., T, T) -> (...)``."""
    return offset_score(weights, 0)


def previous_token_score(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention from token i to token i - 1 (queries 1..T-1), ``(..., T, T) -> (...)``."""
    return offset_score(weights, -1)


def key_mass(weights: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Mean (over queries) total attention on the keys where ``key_mask`` is True.

    ``key_mask``: ``(T,)`` or ``(B, T)`` boolean (e.g. "is [CLS]", "is [SEP] or
    punctuation"). ``(..., T, T) -> (...)``.
    """
    weights = _check_weights(weights, square=False)
    key_mask = torch.as_tensor(key_mask)
    if key_mask.dtype != torch.bool or key_mask.shape[-1] != weights.shape[-1]:
        raise ValueError(
            f"key_mask must be boolean with last dim T={weights.shape[-1]}, got dtype "
            f"{key_mask.dtype} and shape {tuple(key_mask.shape)}"
        )
    if key_mask.dim() == 2:
        key_mask = _align(key_mask[:, None, :], weights)  # (B, 1.., 1, T)
    return (weights * key_mask.to(weights.dtype)).sum(-1).mean(-1)


def mean_distance(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention-weighted distance ``Σ_j a_ij |i - j|`` in tokens, averaged over i."""
    weights = _check_weights(weights)
    seq_len = weights.shape[-1]
    positions = torch.arange(seq_len, dtype=weights.dtype)
    distance = (positions[:, None] - positions[None, :]).abs()  # (T, T)
    return (weights * distance).sum(-1).mean(-1)


FEATURE_NAMES = ("diagonal", "previous", "next", "cls", "sep_punct", "distance", "entropy")


def head_features(
    attentions: Sequence[torch.Tensor],
    cls_mask: torch.Tensor,
    delimiter_mask: torch.Tensor,
) -> torch.Tensor:
    """Pattern features of every head of one sequence: ``(L, H, len(FEATURE_NAMES))``.

    ``attentions``: one ``(H, T, T)`` (or ``(1, H, T, T)``) map per layer, for a sequence
    without padding. ``cls_mask`` / ``delimiter_mask``: ``(T,)`` booleans for [CLS] and for
    [SEP] + punctuation. Features, in ``FEATURE_NAMES`` order: mass on the diagonal, on the
    previous token, on the next token, on [CLS], on [SEP]/punctuation, the mean attention
    distance divided by T (so lengths compare), and the normalised entropy (0..1).
    """
    rows = []
    for layer in attentions:
        layer = _check_weights(layer)
        if layer.dim() == 4:
            if layer.shape[0] != 1:
                raise ValueError(f"one sequence at a time: got a batch of {layer.shape[0]}")
            layer = layer[0]
        seq_len = layer.shape[-1]
        rows.append(
            torch.stack(
                [
                    diagonal_score(layer),
                    offset_score(layer, -1),
                    offset_score(layer, 1),
                    key_mass(layer, cls_mask),
                    key_mass(layer, delimiter_mask),
                    mean_distance(layer) / seq_len,
                    attention_entropy(layer, normalise=True),
                ],
                dim=-1,
            )
        )
    return torch.stack(rows)  # (L, H, F)


RULE_LABELS = ("positional", "delimiter", "local", "broad")


@dataclass
class Rules:
    """Thresholds of ``rule_labels`` (applied in this order, first match wins).

    ``positional`` is tested before ``delimiter``: a sharp previous/next-token head usually
    also parks the rest of its attention on [CLS]/[SEP], and its fixed offset is what makes
    it distinctive (tested the other way round, next-token heads were labelled delimiter).
    """

    positional: float = 0.5  # previous, next or self mass at least this -> "positional"
    delimiter: float = 0.5  # [CLS] + [SEP]/punct mass at least this -> "delimiter"
    # self + previous + next mass at least this -> "local"; else "broad". Uniform attention
    # over T tokens gives about 3 / T here (0.375 for T = 8, 0.2 for T = 15), so the default
    # suits sentences of 8 tokens or more. (A threshold on the mean distance works poorly on
    # real models: a head that reads its neighbours but also parks attention on [CLS] and
    # [SEP] at the two ends of the sentence gets a large mean distance.)
    local: float = 0.4


def rule_labels(features: torch.Tensor, rules: Rules | None = None) -> list[str]:
    """Transparent labels for heads from their ``head_features`` rows ``(..., F)``.

    Tested in ``RULE_LABELS`` order, first match wins. positional: a large share goes to
    one fixed relative position (previous, next, self); delimiter: most attention goes to
    [CLS]/[SEP]/punctuation (a "no-op" sink); local: a large share on the token itself and
    its two neighbours together, no single one dominating; broad: everything else (spread
    over the sentence). Returns a flat list (row-major over the leading dims).
    """
    rules = rules or Rules()
    if features.shape[-1] != len(FEATURE_NAMES):
        raise ValueError(f"features must end in {len(FEATURE_NAMES)} columns, got {tuple(features.shape)}")
    f = {name: features[..., i].reshape(-1) for i, name in enumerate(FEATURE_NAMES)}
    labels = []
    for k in range(f["cls"].numel()):
        if max(f["previous"][k], f["next"][k], f["diagonal"][k]) >= rules.positional:
            labels.append("positional")
        elif f["cls"][k] + f["sep_punct"][k] >= rules.delimiter:
            labels.append("delimiter")
        elif f["diagonal"][k] + f["previous"][k] + f["next"][k] >= rules.local:
            labels.append("local")
        else:
            labels.append("broad")
    return labels


def best_matching_agreement(labels_a: Sequence, labels_b: Sequence) -> tuple[float, dict]:
    """Share of items on which two labelings agree under the best one-to-one matching of
    their label names (Hungarian algorithm). Returns ``(agreement, {a_label: b_label})``."""
    from scipy.optimize import linear_sum_assignment

    if len(labels_a) != len(labels_b) or not labels_a:
        raise ValueError(f"need two non-empty labelings of equal length, got {len(labels_a)} and {len(labels_b)}")
    names_a, names_b = sorted(set(labels_a), key=str), sorted(set(labels_b), key=str)
    table = np.zeros((len(names_a), len(names_b)), dtype=int)
    for a, b in zip(labels_a, labels_b, strict=True):
        table[names_a.index(a), names_b.index(b)] += 1
    rows, cols = linear_sum_assignment(-table)
    matched = int(table[rows, cols].sum())
    return matched / len(labels_a), {names_a[r]: names_b[c] for r, c in zip(rows, cols, strict=True)}


# ----------------------------------------------------------------------------------------
# circuit scores (decoders)


def duplicate_token_score(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Attention from token i to *earlier copies of the same token* (keys j < i with
    ``tokens[j] == tokens[i]``), averaged over the queries that have such a copy.

    weights ``(..., T, T)`` (or ``(B, ..., T, T)`` with tokens ``(B, T)``); tokens ``(T,)`` or
    ``(B, T)``. Returns ``(...)`` (batch axis averaged when tokens are batched).
    """
    weights = _check_weights(weights)
    tokens = _check_tokens(tokens, weights)
    seq_len = weights.shape[-1]
    earlier = torch.ones(seq_len, seq_len, dtype=torch.bool).tril(-1)
    same = tokens[..., :, None] == tokens[..., None, :]  # (..., Tq, Tk)
    return _token_set_score(weights, same & earlier)


def prefix_matching_score(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Attention from token i to keys j whose *previous* token equals token i
    (``tokens[j - 1] == tokens[i]``, j ≤ i): "find where I occurred before and look at what
    came next", the attention pattern of an induction head. Averaged over queries that
    have such a key. Shapes as ``duplicate_token_score``.
    """
    weights = _check_weights(weights)
    tokens = _check_tokens(tokens, weights)
    seq_len = weights.shape[-1]
    # key j qualifies when tokens[j-1] == tokens[i] and j-1 < i
    shifted_same = tokens[..., :, None] == tokens[..., None, :-1]  # (..., Tq, Tk-1): key j-1
    candidates = torch.zeros(*shifted_same.shape[:-1], seq_len, dtype=torch.bool)
    candidates[..., 1:] = shifted_same
    before = torch.ones(seq_len, seq_len, dtype=torch.bool).tril(0)
    return _token_set_score(weights, candidates & before)


def _token_set_score(weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean over queries with a non-empty key set of the attention mass on that set;
    batch-averaged when ``keys`` is ``(B, T, T)`` (then weights are ``(B, ..., T, T)``)."""
    batched = keys.dim() == 3
    keys = _align(keys, weights)
    mass = (weights * keys.to(weights.dtype)).sum(-1)  # (..., Tq)
    has = keys.any(-1).expand_as(mass)
    count = has.sum(-1)
    if torch.any(count == 0):
        raise ValueError("no query has a qualifying key (no repeated tokens in the sequence?)")
    score = (mass * has).sum(-1) / count
    return score.mean(0) if batched else score


def _as_batch(value, batch: int, name: str) -> torch.Tensor:
    value = torch.as_tensor(value)
    if value.dim() == 0:
        value = value.expand(batch)
    if value.shape != (batch,) or value.dtype.is_floating_point:
        raise ValueError(f"{name} must be an int or a (B={batch},) integer tensor, got {value!r}")
    return value.long()


def induction_score(
    weights: torch.Tensor, first_start: int | torch.Tensor, block_len: int | torch.Tensor,
    *, exclude_last: bool = False,
) -> torch.Tensor:
    """Induction score on ``[prefix, block, block]`` sequences.

    The first copy of the block starts at ``first_start`` and has ``block_len`` tokens; the
    second copy starts at ``first_start + block_len``. For each query i in the second copy,
    the token after the earlier occurrence of token i sits at ``i - block_len + 1``: the
    score is the mean attention on that key over the second copy.

    weights ``(B, ..., T, T)``; ``first_start``/``block_len`` ints or ``(B,)`` tensors (each
    sequence may have its own block). Returns ``(...)``, averaged over the batch. A perfect
    induction head scores 1; uniform causal attention scores
    ``uniform_induction_baseline(...)``.

    ``exclude_last=True`` leaves out the second copy's last query: the token after it is
    not part of the copy (at the end of a sequence it does not exist), so next-token
    training never rewards copying there, and a model trained on ``tokens[:, :-1]`` never
    even sees that position. Then ``first_start + 2 * block_len - 1 <= T`` suffices (the
    maps of ``tokens[:, :-1]`` qualify) and ``block_len >= 2``.
    """
    weights = _check_weights(weights)
    if weights.dim() < 3:
        weights = weights[None]
    batch, seq_len = weights.shape[0], weights.shape[-1]
    starts = _as_batch(first_start, batch, "first_start")
    lengths = _as_batch(block_len, batch, "block_len")
    drop = int(bool(exclude_last))
    if torch.any(lengths < 1 + drop) or torch.any(starts < 0) \
            or torch.any(starts + 2 * lengths - drop > seq_len):
        raise ValueError(
            f"each sequence needs 0 <= first_start, block_len >= {1 + drop} and "
            f"first_start + 2 * block_len{' - 1' if drop else ''} <= T={seq_len}; "
            f"got first_start {starts.tolist()} and block_len {lengths.tolist()}"
        )
    query = torch.arange(seq_len)
    scores = []
    for b in range(batch):
        second = starts[b] + lengths[b]
        rows = query[second : second + lengths[b] - drop]  # queries in the second copy
        keys = rows - lengths[b] + 1
        scores.append(weights[b][..., rows, keys].mean(-1))
    return torch.stack(scores).mean(0)


def uniform_induction_baseline(
    first_start: int | torch.Tensor, block_len: int | torch.Tensor, batch: int | None = None,
    *, exclude_last: bool = False,
) -> float:
    """``induction_score`` of uniform causal attention (query i spreads 1/(i+1) over keys
    0..i): the chance level the learned heads are compared with (same ``exclude_last``)."""
    starts, lengths = torch.as_tensor(first_start), torch.as_tensor(block_len)
    if batch is None:
        batch = max(starts.numel(), lengths.numel())
    starts, lengths = _as_batch(starts, batch, "first_start"), _as_batch(lengths, batch, "block_len")
    total = 0.0
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        rows = range(start + length, start + 2 * length - int(bool(exclude_last)))
        total += sum(1.0 / (i + 1) for i in rows) / len(rows)
    return total / batch


# ----------------------------------------------------------------------------------------
# ablations


def head_output_projections(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """``(output projection, number of heads)`` per layer, in layer order.

    The output projection W_O reads the concatenated heads ``[head_0 | head_1 | ...]``, so
    zeroing a slice of its *input* removes exactly one head's contribution. Supports
    course models (``course_utils.attention.MultiHeadAttention``) and every transformers
    family of ``course_utils.families`` (BERT, DistilBERT, RoBERTa, GPT-2, Llama, Qwen2,
    Mistral; T5's encoder), through ``families.output_projection``.
    """
    course = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if course:
        return [(m.out_proj, m.num_heads) for m in course]
    try:
        view = families.describe(model)
    except ValueError as error:
        raise ValueError(
            f"don't know where the heads of a {type(model).__name__} are: expected course "
            f"MultiHeadAttention modules or a supported transformers model ({error})"
        ) from None
    return [(families.output_projection(model, i), view.n_heads) for i in range(view.n_layers)]


def transformer_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The transformer blocks, in order: a course model's ``blocks``/``layers``, or the
    layers of any ``course_utils.families`` model (BERT ``encoder.layer``, GPT-2 ``h``, …)."""
    base = getattr(model, "base_model", model)
    if hasattr(model, "config") and getattr(model.config, "model_type", None) in families.SUPPORTED_FAMILIES:
        return families.layers(model)
    owners = (base, getattr(base, "encoder", None), getattr(base, "model", None),
              getattr(base, "transformer", None))
    for owner in owners:
        for name in ("layers", "blocks"):
            found = getattr(owner, name, None) if owner is not None else None
            if isinstance(found, nn.ModuleList):
                return found
    raise ValueError(f"can't find the transformer blocks of a {type(model).__name__}")


def _parse_heads(heads: Iterable[tuple[int, int]], projections) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for item in heads:
        try:
            layer, head = item
        except (TypeError, ValueError) as error:
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}") from error
        if not 0 <= layer < len(projections) or not 0 <= head < projections[layer][1]:
            raise ValueError(
                f"head ({layer}, {head}) out of range: the model has {len(projections)} layers "
                f"of {projections[0][1]} heads"
            )
        by_layer.setdefault(layer, []).append(head)
    return by_layer


@contextlib.contextmanager
def ablate_heads(
    model: nn.Module, heads: Iterable[tuple[int, int]],
    means: Sequence[torch.Tensor] | None = None,
) -> Iterator[None]:
    """Inside the ``with`` block, the given ``(layer, head)`` heads output zero, or, with
    ``means`` (from ``head_output_means``), their mean output (mean-ablation).

    Implemented as a forward pre-hook on each layer's output projection that replaces the
    head's slice of the concatenated head outputs (zero = what a "head mask" of 0 does).
    Zero is not a value a head normally outputs, so zero-ablation can push the model off
    its distribution (losses above the uniform guess); the mean keeps the head's average
    contribution and removes only what varies with the input.
    """
    projections = head_output_projections(model)
    by_layer = _parse_heads(heads, projections)
    if means is not None and len(means) != len(projections):
        raise ValueError(f"means must have one tensor per layer ({len(projections)}), got {len(means)}")
    handles = []

    def make_hook(head_list: list[int], num_heads: int, mean: torch.Tensor | None):
        def hook(module, args):
            concat = args[0]  # (B, T, H * d_head)
            d_head = concat.shape[-1] // num_heads
            keep = torch.ones(num_heads, d_head, dtype=concat.dtype, device=concat.device)
            keep[head_list] = 0
            keep = keep.reshape(-1)  # (H * d_head,)
            if mean is None:
                return (concat * keep, *args[1:])
            if mean.shape[-1] != concat.shape[-1] or (mean.dim() == 2 and mean.shape[0] < concat.shape[1]):
                raise ValueError(
                    f"mean of shape {tuple(mean.shape)} does not fit head outputs {tuple(concat.shape)}"
                )
            fill = mean[: concat.shape[1]] if mean.dim() == 2 else mean  # (T, C) or (C,)
            return (concat * keep + fill.to(concat.dtype) * (1 - keep), *args[1:])

        return hook

    try:
        for layer, head_list in by_layer.items():
            projection, num_heads = projections[layer]
            mean = None if means is None else means[layer]
            handles.append(projection.register_forward_pre_hook(make_hook(head_list, num_heads, mean)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def head_output_means(model: nn.Module, *inputs, per_position: bool = True, **kwargs) -> list[torch.Tensor]:
    """Each layer's concatenated head outputs (the input of its output projection),
    averaged over a reference batch: the values ``ablate_heads(..., means=...)`` puts in
    place of an ablated head. ``model(*inputs, **kwargs)`` runs once.

    Returns one tensor per layer: ``(T, H * d_head)`` averaged over the batch (each
    position keeps its own mean: ``per_position=True``), or ``(H * d_head,)`` averaged over
    batch and positions.
    """
    projections = head_output_projections(model)
    captured: list[torch.Tensor | None] = [None] * len(projections)
    handles = []

    def make_hook(layer: int):
        def hook(module, args):
            concat = args[0]  # (B, T, H * d_head)
            captured[layer] = concat.mean(0) if per_position else concat.mean((0, 1))

        return hook

    try:
        for layer, (projection, _) in enumerate(projections):
            handles.append(projection.register_forward_pre_hook(make_hook(layer)))
        model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if any(c is None for c in captured):
        raise ValueError("the model's forward did not run every layer's output projection")
    return captured


@contextlib.contextmanager
def skip_layers(model: nn.Module, layers: Iterable[int]) -> Iterator[None]:
    """Inside the ``with`` block, the given transformer blocks return their input unchanged
    (the residual stream flows past them)."""
    blocks = transformer_layers(model)
    layers = list(layers)
    for layer in layers:
        if not 0 <= layer < len(blocks):
            raise ValueError(f"layer {layer} out of range: the model has {len(blocks)} layers")

    def hook(module, args, kwargs, output):
        hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden

    handles = [blocks[i].register_forward_hook(hook, with_kwargs=True) for i in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_ablation_effects(
    model: nn.Module, metric: Callable[[], float], layers: Sequence[int] | None = None
) -> torch.Tensor:
    """``metric()`` with each head ablated, minus ``metric()`` of the intact model.

    Returns ``(L, H)``; layers not in ``layers`` (default all) are NaN. ``metric`` runs the
    model itself (e.g. a loss, or 1 - cosine to the intact output), so positive = the head
    mattered for it.
    """
    projections = head_output_projections(model)
    layers = list(range(len(projections))) if layers is None else list(layers)
    num_heads = projections[0][1]
    effects = torch.full((len(projections), num_heads), float("nan"))
    with torch.no_grad():
        clean = metric()
        for layer in layers:
            for head in range(num_heads):
                with ablate_heads(model, [(layer, head)]):
                    effects[layer, head] = metric() - clean
    return effects


def layer_ablation_effects(model: nn.Module, metric: Callable[[], float]) -> torch.Tensor:
    """``(L,)``: ``metric()`` with each block skipped, minus the intact ``metric()``."""
    blocks = transformer_layers(model)
    with torch.no_grad():
        clean = metric()
        effects = []
        for layer in range(len(blocks)):
            with skip_layers(model, [layer]):
                effects.append(metric() - clean)
    return torch.tensor(effects)


def word_token_index(tokenizer, text: str, word: str) -> int:
    """Token index of ``word``'s first whole-word occurrence in ``text``, by character offsets.

    Notebook 11's name for ``course_utils.families.find_word`` (its one implementation):
    the index counts special tokens, so it indexes the rows of the attention maps.
    """
    from course_utils.families import find_word

    return find_word(tokenizer, text, word)


def antecedent_preference(
    attention_rows: torch.Tensor, first: int, second: int
) -> torch.Tensor:
    """How much more a query attends to key ``first`` than to key ``second``:
    ``rows[..., first] - rows[..., second]``, for rows ``(..., T)`` (e.g. the "it" row of
    every head, ``(L, H, T)``). Positive = prefers ``first``."""
    if attention_rows.shape[-1] <= max(first, second):
        raise ValueError(f"key positions {first}, {second} out of range for rows of length {attention_rows.shape[-1]}")
    return attention_rows[..., first] - attention_rows[..., second]


def flip_summary(first: torch.Tensor, second: torch.Tensor) -> dict:
    """Heads whose preference flips sign from one input to the other.

    ``first``, ``second``: ``(L, H)`` preferences (``antecedent_preference``) of every head
    on two inputs. A head flips when its preference is positive on ``first`` and negative on
    ``second``. Returns ``count`` (heads that flip), ``change`` (the largest ``first -
    second`` among them, 0.0 if none) and ``layer`` / ``head`` of that head (``None`` if
    none), plus ``mean_abs_change`` over all heads. Apply the same function to control
    pairs (the same kind of edit, no change of referent) to get its null distribution.
    """
    if first.shape != second.shape or first.dim() != 2:
        raise ValueError(f"first and second must be (L, H) of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    change = first - second  # (L, H)
    flips = (first > 0) & (second < 0)
    summary = {"count": int(flips.sum()), "change": 0.0, "layer": None, "head": None,
               "mean_abs_change": float(change.abs().mean())}
    if flips.any():
        masked = torch.where(flips, change, torch.tensor(float("-inf"), dtype=change.dtype))
        layer, head = divmod(int(torch.argmax(masked)), change.shape[1])
        summary.update(change=float(change[layer, head]), layer=layer, head=head)
    return summary


# ----------------------------------------------------------------------------------------
# the induction-head experiment


def repeated_block_batch(
    batch: int,
    seq_len: int,
    vocab: int,
    min_block: int,
    max_block: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``[prefix, block, block]`` sequences of ``seq_len`` tokens.

    Each sequence gets its own block length in ``[min_block, max_block]``; the prefix
    (length ``seq_len - 2 * block_len``) and the block are uniform random tokens. Returns
    ``(tokens (B, T), first_start (B,), block_len (B,))``: the first copy starts at
    ``first_start`` = prefix length.
    """
    if not 1 <= min_block <= max_block or 2 * max_block > seq_len:
        raise ValueError(
            f"need 1 <= min_block <= max_block and 2 * max_block <= seq_len; got "
            f"min_block={min_block}, max_block={max_block}, seq_len={seq_len}"
        )
    lengths = torch.randint(min_block, max_block + 1, (batch,), generator=generator)
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=generator)
    starts = seq_len - 2 * lengths
    for b in range(batch):
        s, n = int(starts[b]), int(lengths[b])
        tokens[b, s + n : s + 2 * n] = tokens[b, s : s + n]
    return tokens, starts, lengths


def repeated_half_mask(seq_len: int, first_start: torch.Tensor, block_len: torch.Tensor) -> torch.Tensor:
    """``(B, T - 1)`` boolean: next-token targets that are predictable by copying (the
    tokens of the second copy after its first). Position p of the mask = predicting
    token p + 1 from tokens 0..p."""
    target = torch.arange(1, seq_len)  # target positions 1..T-1
    second = (first_start + block_len)[:, None]
    return (target > second) & (target < second + block_len[:, None])


@dataclass
class AttentionOnlyConfig:
    """The induction-head toy model's sizes (notebook 12); ``transformer_config()`` is the
    equivalent ``blocks.TransformerConfig(attention_only=True, ...)``."""

    vocab_size: int = 64
    seq_len: int = 48
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    positions: str = "learned"  # "learned" (added to the embeddings) or "rope" (rotary, in attention)

    def __post_init__(self) -> None:
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}")

    def transformer_config(self) -> TransformerConfig:
        """Causal, pre-norm, attention-only blocks, a final LayerNorm, PyTorch's default
        initialisation (the toy model trains from it)."""
        return TransformerConfig(
            vocab_size=self.vocab_size, max_seq_len=self.seq_len, d_model=self.d_model,
            num_heads=self.num_heads, num_layers=self.num_layers, causal=True,
            norm_first=True, final_norm=True, attention_only=True, positional=self.positions,
            init="torch",
        )


class AttentionOnlyTransformer(CausalLM):
    """A causal, attention-only decoder: ``blocks.CausalLM`` with ``attention_only=True``
    (embeddings + learned positions or RoPE, pre-norm attention blocks without MLPs, a
    final LayerNorm, an untied unembedding). Forward returns logits ``(B, T, V)``;
    ``forward_with_attention`` also returns each layer's ``(B, H, T, T)`` weights."""

    def __init__(self, config: AttentionOnlyConfig) -> None:
        super().__init__(config.transformer_config(), tie_weights=False)
        self.toy_config = config

    def forward_with_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if tokens.dim() != 2 or tokens.shape[1] > self.toy_config.seq_len:
            raise ValueError(
                f"tokens must be (B, T) with T <= {self.toy_config.seq_len}, got {tuple(tokens.shape)}"
            )
        return super().forward_with_attention(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(tokens)[0]

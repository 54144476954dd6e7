"""Used in notebooks 08b, 12: decoding strategies, each a small function over next-token logits.

A language model gives, at every step, one row of logits over the vocabulary; a decoding
strategy turns that row into the next token. Written here from scratch, in the order
``transformers`` applies them (so ``generate`` below reproduces ``model.generate()``):

1. ``apply_repetition_penalty``: tokens already in the sequence get their logit divided
   by the penalty (multiplied if negative): a logits *processor*, applied first.
2. ``filter_logits`` (the *warpers*, only when sampling): ``temperature`` divides the
   logits; ``top_k`` keeps the k largest; ``top_p`` keeps the smallest set of tokens
   whose probabilities sum past p (nucleus); ``min_p`` keeps tokens with probability at
   least ``min_p`` × the top token's. Removed entries become ``-inf``.
3. ``sample_next``: softmax of the filtered logits, one draw with ``torch.multinomial``
   (argmax when ``temperature == 0``: greedy decoding).
4. ``beam_search``: keep the ``num_beams`` best partial sequences by summed log-probability;
   a finished one is scored ``sum log p / length ** length_penalty``.

``generate(model, input_ids, ...)`` is the loop around them, with a KV cache. ``model`` is
a ``transformers`` causal LM (``DynamicCache``), a ``generation.ScratchLlama`` (its
``KVCache``) or any callable ``ids (B, T) -> logits (B, T, V)`` (re-run on the whole
prefix each step). Tests prove identical token ids to ``model.generate()`` on SmolLM2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# Argument checks (every bad value is refused with the argument's name)
# --------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_settings(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
) -> None:
    """Raise ``ValueError`` naming the first setting outside its allowed range."""
    if not _is_number(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    if min_p is not None and (not _is_number(min_p) or not 0 <= min_p <= 1):
        raise ValueError(f"min_p must be None or a number in [0, 1], got {min_p!r}")
    if repetition_penalty is not None and (not _is_number(repetition_penalty) or repetition_penalty <= 0):
        raise ValueError(f"repetition_penalty must be None or a number > 0, got {repetition_penalty!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if not _is_number(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a float tensor of shape (B, V), got {shape}")


# --------------------------------------------------------------------------------------
# The strategies, one function each: logits (B, V) -> logits (B, V)
# --------------------------------------------------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise every token that occurs in ``ids`` ``(B, T)``: logit / penalty (× if negative).

    Dividing a positive logit and multiplying a negative one both make the token less
    likely for ``penalty > 1`` (CTRL, Keskar et al. 2019). Each token counts once, however
    often it occurs. Returns a new ``(B, V)`` tensor.
    """
    _check_logits(logits)
    check_settings(repetition_penalty=penalty)
    if ids.dim() != 2 or ids.shape[0] != logits.shape[0]:
        raise ValueError(f"ids must be (B, T) with B = {logits.shape[0]}, got {tuple(ids.shape)}")
    seen = torch.gather(logits, 1, ids)  # (B, T): logits of the tokens already there
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, ids, seen)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``: < 1 sharpens the distribution, > 1 flattens it.

    ``temperature == 0`` is the greedy limit: only the argmax survives (the rest is -inf).
    """
    check_settings(temperature=temperature)
    if temperature == 0:
        keep = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).bool()  # (B, V)
        return logits.masked_fill(~keep, float("-inf"))
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row (ties with the k-th kept), -inf elsewhere."""
    check_settings(top_k=top_k)
    k = min(top_k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most probable tokens until their
    probabilities sum to ``top_p``; the token that crosses the line is kept too.

    Computed from the least probable token up (as transformers does): a token is removed
    when the cumulative probability of it and everything less probable is ``<= 1 - top_p``.
    The most probable token is always kept.
    """
    check_settings(top_p=top_p)
    sorted_logits, order = torch.sort(logits, descending=False)  # (B, V) least probable first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[:, -1:] = False  # the top token stays
    remove = remove_sorted.scatter(1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least ``min_p`` × the most probable token's.

    The cut scales with the model's confidence (Nguyen et al. 2024): a peaked distribution
    keeps few tokens, a flat one many. The top token is always kept.
    """
    check_settings(min_p=min_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Temperature, then top-k, then top-p, then min-p (transformers' warper order).

    ``logits`` ``(B, V)`` -> ``(B, V)``, removed entries ``-inf``; ``softmax`` of the result
    is the distribution sampling draws from. ``temperature == 0`` keeps only the argmax.
    """
    _check_logits(logits)
    check_settings(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def sample_next(
    logits: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    **filter_kwargs,
) -> torch.Tensor:
    """Next token ids ``(B,)`` from logits ``(B, V)``: filter, softmax, one multinomial draw.

    ``filter_kwargs`` are ``filter_logits``'s (temperature, top_k, top_p, min_p).
    ``temperature == 0`` is greedy (argmax, no random number drawn). With ``generator=None``
    the global torch generator is used, as ``model.generate(do_sample=True)`` does: after
    ``torch.manual_seed(s)`` both draw the same tokens.
    """
    _check_logits(logits)
    unknown = set(filter_kwargs) - {"temperature", "top_k", "top_p", "min_p"}
    if unknown:
        raise ValueError(f"unknown sampling settings {sorted(unknown)}; allowed: temperature, top_k, top_p, min_p")
    if filter_kwargs.get("temperature", 1.0) == 0:
        check_settings(**filter_kwargs)
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, **filter_kwargs).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# --------------------------------------------------------------------------------------
# Running a model step by step, with its cache
# --------------------------------------------------------------------------------------


class _Stepper:
    """Next-token logits of ``model`` for the newest tokens, keeping the model's own cache."""

    def __init__(self, model) -> None:
        from course_utils.generation import ScratchLlama

        self.model = model
        self.kind = ("scratch" if isinstance(model, ScratchLlama)
                     else "hf" if hasattr(model, "config") and hasattr(model, "generate") else "plain")
        self.cache = model.new_cache() if self.kind == "scratch" else None

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, n_new: int) -> torch.Tensor:
        """``ids`` ``(B, T)`` is the whole sequence; the last ``n_new`` are not cached yet."""
        if self.kind == "scratch":
            logits = self.model(ids[:, -n_new:], self.cache, last_only=True)
        elif self.kind == "hf":
            out = self.model(input_ids=ids[:, -n_new:], past_key_values=self.cache, use_cache=True)
            self.cache = out.past_key_values
            logits = out.logits
        else:
            logits = self.model(ids)
        return logits[:, -1].float()  # (B, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep cache rows ``index`` (beam search: each surviving beam's parent)."""
        if self.kind == "scratch":
            self.cache.reorder(index)
        elif self.kind == "hf":
            self.cache.reorder_cache(index)


def _check_ids(input_ids: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (1, T) tensor of token ids, got {shape}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: expected at least one prompt token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")


@dataclass
class DecodeOutput:
    """Prompt + generated ids ``(1, T + n)``; per step the scores the token was chosen from.

    ``scores[s]`` is ``(rows, V)``: for sampling and greedy the processed logits (softmax =
    the distribution drawn from), for beam search the processed log-probabilities per beam.
    ``beam_score`` is the winning hypothesis's length-penalised score (beam search only).
    """

    ids: torch.Tensor
    scores: list[torch.Tensor] = field(default_factory=list)
    beam_score: float | None = None


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Greedy, sampling or beam-search decoding from ``input_ids`` ``(1, T)``.

    Same settings and same meaning as ``model.generate()``: greedy when ``do_sample`` is
    False and ``num_beams == 1``; the sampling warpers only act when ``do_sample``; the
    repetition penalty acts always. Stops after ``max_new_tokens`` or right after
    ``eos_token_id``.
    """
    _check_ids(input_ids, max_new_tokens)
    check_settings(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                   repetition_penalty=repetition_penalty, num_beams=num_beams,
                   length_penalty=length_penalty)
    if num_beams > 1:
        if do_sample:
            raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not implemented")
        return beam_search(model, input_ids, max_new_tokens, num_beams=num_beams,
                           length_penalty=length_penalty, repetition_penalty=repetition_penalty,
                           eos_token_id=eos_token_id)
    step = _Stepper(model)
    ids, n_new, scores = input_ids, input_ids.shape[1], []
    for _ in range(max_new_tokens):
        logits = step(ids, n_new)  # (1, V)
        if repetition_penalty is not None and repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, ids, repetition_penalty)
        if do_sample:
            logits = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
            next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (1, 1)
        else:
            next_id = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
        scores.append(logits)
        ids, n_new = torch.cat([ids, next_id], dim=1), 1
        if eos_token_id is not None and next_id.item() == eos_token_id:
            break
    return DecodeOutput(ids, scores)


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    length_penalty: float = 1.0,
    repetition_penalty: float | None = None,
    eos_token_id: int | None = None,
) -> DecodeOutput:
    """Keep the ``num_beams`` most probable partial sequences; return the best finished one.

    Each step: log-softmax of every beam's logits, plus the beam's running sum -> ``K × V``
    candidates; the best ``2K`` are taken (so K survive even if some end with EOS). A
    candidate that ends (EOS, or the length limit) is *finished* and scored
    ``sum log p / generated_length ** length_penalty`` (> 0 favours longer outputs); the K
    best unfinished ones continue, and the KV cache rows are reordered to follow their
    parents. Stops when no running beam can beat the worst of the K kept finished ones
    (transformers' default ``early_stopping=False`` test) or at the length limit.
    """
    _check_ids(input_ids, max_new_tokens)
    check_settings(num_beams=num_beams, length_penalty=length_penalty, repetition_penalty=repetition_penalty)
    K, prompt_len = num_beams, input_ids.shape[1]
    max_len = prompt_len + max_new_tokens
    keep = 2 * K  # candidates per step: enough that K continue when some finish
    neg = -1.0e9  # "impossible" score (finite, as transformers uses, so sums stay ordered)
    running = input_ids.repeat(K, 1)  # (K, T): every beam starts as the prompt
    running_scores = torch.full((K,), neg)
    running_scores[0] = 0.0  # only the first copy counts at step 1 (the others are duplicates)
    finished = torch.zeros(K, max_len, dtype=torch.long)  # (K, max_len): best finished so far
    finished_len = torch.zeros(K, dtype=torch.long)
    finished_scores = torch.full((K,), neg)
    is_finished = torch.zeros(K, dtype=torch.bool)
    step, n_new, scores = _Stepper(model), prompt_len, []
    improvable = True
    for cur_len in range(prompt_len, max_len):
        log_probs = step(running, n_new).log_softmax(dim=-1)  # (K, V)
        if repetition_penalty is not None and repetition_penalty != 1.0:
            log_probs = apply_repetition_penalty(log_probs, running, repetition_penalty)
        scores.append(log_probs)
        vocab = log_probs.shape[-1]
        totals = (log_probs + running_scores[:, None]).reshape(-1)  # (K·V,) sequence log-probs
        top_scores, top_index = torch.topk(totals, keep)  # (2K,)
        parent, token = top_index // vocab, top_index % vocab
        candidates = torch.cat([running[parent], token[:, None]], dim=1)  # (2K, cur_len + 1)
        ends = torch.full((keep,), cur_len + 1 >= max_len)
        if eos_token_id is not None:
            ends |= token == eos_token_id
        # K best unfinished candidates continue.
        alive = torch.topk(top_scores + ends.float() * neg, K).indices
        running, running_scores = candidates[alive], (top_scores + ends.float() * neg)[alive]
        # Among the top K candidates, those that just ended compete for the K finished slots.
        penalised = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        just_ended = ends.clone()
        just_ended[K:] = False
        penalised = penalised + (~torch.tensor(improvable)).float() * neg + (~just_ended).float() * neg
        padded = torch.zeros(keep, max_len, dtype=torch.long)
        padded[:, : cur_len + 1] = candidates
        merged_scores = torch.cat([finished_scores, penalised])
        best = torch.topk(merged_scores, K).indices
        finished = torch.cat([finished, padded])[best]
        finished_len = torch.cat([finished_len, torch.full((keep,), cur_len + 1)])[best]
        finished_scores = merged_scores[best]
        is_finished = torch.cat([is_finished, just_ended])[best]
        step.reorder(parent[alive])
        n_new = 1
        # Could a running beam still beat the worst finished one? (transformers' heuristic)
        best_possible = running_scores[0] / ((cur_len + 1 - prompt_len) ** length_penalty)
        worst = torch.where(is_finished, finished_scores.min(), torch.tensor(neg))
        improvable = improvable and bool((best_possible > worst).any())
        if not improvable or bool(ends.all()):
            break
    return DecodeOutput(finished[:1, : finished_len[0]], scores, float(finished_scores[0]))

"""Checkers for notebook 11 (attention analysis): a head's entropy, zeroing one head's slice,
and a head's importance by ablation on MiniLM, checked against ``course_utils.analysis``."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb11 as solutions


def _entropy_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    random = torch.softmax(torch.randn(3, 5, 5, generator=generator) * 2, dim=-1)
    causal = torch.softmax(
        torch.randn(2, 4, 4, generator=generator).masked_fill(
            ~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf")
        ),
        dim=-1,
    )  # rows with exact zeros: 0 log 0 must count as 0
    one_hot = torch.eye(4).expand(2, 4, 4).clone()
    uniform = torch.full((1, 6, 6), 1 / 6)
    return [((w,), {}) for w in (random, causal, one_hot, uniform)]


def check_head_entropy(head_entropy: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """``head_entropy(weights (H, T, T)) -> (H,)``: mean row entropy in nats."""

    def diagnose(got, expected, args, kwargs):
        (weights,) = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            if got.dim() == 2 and got.shape == weights.shape[:2]:
                return (f"shape {tuple(got.shape)}: that is one entropy per query row; "
                        "average over the queries to get one number per head")
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one value per head)"
        if torch.isnan(got).any():
            return "NaN: a weight of 0 gives 0 * log(0) = 0 * -inf = NaN; treat those terms as 0"
        if torch.allclose(got, expected, atol=1e-5):
            return None
        if torch.allclose(got, expected / math.log(2), atol=1e-5):
            return "off by a factor 1/ln 2: that is bits (log2); use the natural log (nats)"
        if torch.allclose(got, -expected, atol=1e-5):
            return "wrong sign: entropy is -Σ p log p (log p ≤ 0, so entropy ≥ 0)"
        if torch.allclose(got, expected * weights.shape[-2], atol=1e-4):
            return "T times too large: you summed over the query rows instead of averaging"
        return f"got {got.tolist()}, expected {expected.tolist()}"

    return run_check(
        "head_entropy", head_entropy, solutions.head_entropy, _entropy_cases(), diagnose,
        hint=True,
    )


def _zero_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    return [
        ((torch.randn(2, 3, 12, generator=generator), 0, 4), {}),
        ((torch.randn(1, 5, 12, generator=generator), 2, 4), {}),
        ((torch.randn(2, 4, 18, generator=generator), 5, 6), {}),
        ((torch.randn(1, 2, 12, generator=generator), 1, 3), {}),
    ]


def check_zero_head(zero_head: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """``zero_head(concat (B, T, H*d), head, num_heads)``: a copy with that head's slice zeroed."""

    def diagnose(got, expected, args, kwargs):
        concat, head, num_heads = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (unchanged)"
        if got.data_ptr() == concat.data_ptr() or torch.equal(concat, expected):
            return "you modified the input in place (or returned it): work on concat.clone()"
        if torch.equal(got, expected):
            return None
        d_head = concat.shape[-1] // num_heads
        zero_cols = (got == 0).all(0).all(0).nonzero().flatten().tolist()
        if zero_cols == list(range(head, concat.shape[-1], num_heads)):
            return ("you zeroed every num_heads-th column: the heads are contiguous blocks of "
                    "d_head columns, head h = columns h*d_head … (h+1)*d_head - 1")
        if zero_cols and len(zero_cols) != d_head:
            return f"zeroed {len(zero_cols)} columns, expected d_head = {d_head}"
        return f"head {head}: wrong columns zeroed ({zero_cols}), expected {head * d_head}..{(head + 1) * d_head - 1}"

    return run_check(
        "zero_head", zero_head, solutions.zero_head, _zero_cases(), diagnose,
        hint=True,
    )


# ----------------------------------------------------------------------------- 11.3

IMPORTANCE_SENTENCES = (
    "The animal didn't cross the street because it was too tired.",
    "Paris is the capital of France.",
    "Birds fly south in winter because food becomes scarce.",
)
IMPORTANCE_HEADS = ((0, 0), (2, 7), (5, 3), (5, 11))  # (layer, head): early, middle, last-layer heads
IMPORTANCE_TOLERANCE = 1e-5


@lru_cache(maxsize=1)
def _default_encoder():
    from course_utils.models import load_encoder

    return load_encoder()


def _embedding(model, inputs, pool: str = "mean", normalise: bool = True) -> torch.Tensor:
    from course_utils.embeddings import l2_normalize, mean_pool

    hidden = model(**inputs).last_hidden_state  # (N, T, C)
    if pool == "mean":
        pooled = mean_pool(hidden, inputs["attention_mask"])
    elif pool == "all":  # padding included
        pooled = hidden.mean(1)
    else:  # the first token
        pooled = hidden[:, 0]
    return l2_normalize(pooled) if normalise else pooled


def _importance_variant(model, inputs, out_proj, head, num_heads, *, where="input", slice_="block",
                        pool="mean", normalise=True) -> float:
    """The course's importance with one thing changed, to recognise a slip."""

    def columns(width: int) -> slice | range:
        d_head = width // num_heads
        return slice(head * d_head, (head + 1) * d_head) if slice_ == "block" else slice(head, width, num_heads)

    def before(module, args):
        concat = args[0].clone()
        concat[..., columns(concat.shape[-1])] = 0
        return (concat, *args[1:])

    def after(module, args, output):
        output = output.clone()
        output[..., columns(output.shape[-1])] = 0
        return output

    with torch.no_grad():
        intact = _embedding(model, inputs, pool, normalise)
        handle = (out_proj.register_forward_pre_hook(before) if where == "input"
                  else out_proj.register_forward_hook(after))
        try:
            ablated = _embedding(model, inputs, pool, normalise)
        finally:
            handle.remove()
    return 1.0 - (intact * ablated).sum(-1).mean().item()


def _course_importance(model, inputs, layer: int, head: int) -> float:
    """What notebook 11 computes: ``analysis.ablate_heads`` + the sentence embedding."""
    from course_utils.analysis import ablate_heads

    with torch.no_grad():
        intact = _embedding(model, inputs)
        with ablate_heads(model, [(layer, head)]):
            ablated = _embedding(model, inputs)
    return 1.0 - (intact * ablated).sum(-1).mean().item()


def check_head_importance(head_importance: Callable[..., float], model=None, tokenizer=None) -> CheckResult:
    """``head_importance(model, inputs, out_proj, head, num_heads) -> float`` on MiniLM (or the
    given encoder): equal to the course's ablation (``analysis.ablate_heads``, the sentence
    embedding of notebook 02: mean over real tokens, normalised; 1 - cosine averaged over a
    padded batch of 3 sentences) for 4 heads, to 1e-5; and the model must be intact after
    each call (no hook left behind)."""
    from course_utils.analysis import head_output_projections

    if model is None:
        model, tokenizer = _default_encoder()
    try:
        from course_utils.families import model_inputs

        inputs = model_inputs(tokenizer, model, list(IMPORTANCE_SENTENCES))
    except ImportError:  # pragma: no cover - older course_utils
        inputs = tokenizer(list(IMPORTANCE_SENTENCES), return_tensors="pt", padding=True)
    projections = head_output_projections(model)
    with torch.no_grad():
        reference_output = model(**inputs).last_hidden_state
    truth = {}
    cases = []
    # MiniLM's four heads; a smaller model gets the nearest ones it has (clipped, each once)
    heads = dict.fromkeys((min(layer, len(projections) - 1), min(head, projections[0][1] - 1))
                          for layer, head in IMPORTANCE_HEADS)
    for layer, head in heads:
        out_proj, num_heads = projections[layer]
        truth[(id(out_proj), head)] = (layer, _course_importance(model, inputs, layer, head))
        cases.append(((model, inputs, out_proj, head, num_heads), {}))

    def hooks(module) -> set:
        return set(module._forward_pre_hooks) | set(module._forward_hooks)

    def guarded(fn):
        """Run the learner's function; remove any hook it leaves behind, and remember it."""

        def run(model, inputs, out_proj, head, num_heads):
            before = {m: hooks(m) for m in model.modules()}
            try:
                value = fn(model, inputs, out_proj, head, num_heads)
            finally:
                left = [(m, h) for m in model.modules() for h in hooks(m) - before[m]]
                for module, key in left:
                    module._forward_pre_hooks.pop(key, None)
                    module._forward_hooks.pop(key, None)
            return value, bool(left)

        return run

    def diagnose(got, expected, args, kwargs):
        model_, inputs_, out_proj, head, num_heads = args
        value, left_hook = got
        layer, want = truth[(id(out_proj), head)]
        if left_hook:
            return ("a hook is still registered after your function returned: keep the handle "
                    "register_forward_pre_hook returns and call its .remove() (in a finally: block)")
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            return f"returned {value.numel()} values: average 1 - cosine over the sentences into one float"
        try:
            value = float(value)
        except (TypeError, ValueError):
            return f"returned {type(value).__name__}, expected a float"
        if math.isclose(value, want, rel_tol=0, abs_tol=IMPORTANCE_TOLERANCE):
            return None
        if math.isclose(value, 1 - want, rel_tol=0, abs_tol=IMPORTANCE_TOLERANCE):
            return "that is the cosine similarity; the importance is 1 - cosine (0 = the head changes nothing)"
        variant = dict(model=model_, inputs=inputs_, out_proj=out_proj, head=head, num_heads=num_heads)
        slips = [
            (dict(slice_="strided"), "you zeroed every num_heads-th column: head h is the contiguous block "
                                     "of d_head columns h*d_head … (h+1)*d_head - 1 of W_O's input"),
            (dict(where="output"), "you zeroed columns of W_O's output: the heads are separate only in its "
                                   "*input* (the concatenated heads); hook before the projection (a forward pre-hook)"),
            (dict(pool="all"), "the sentence embedding averaged the padding tokens too: mean over the real "
                               "tokens only (attention_mask)"),
            (dict(pool="first"), "the sentence embedding is the first token's vector: this model's embedding "
                                 "is the mean over the real tokens"),
            (dict(normalise=False), "the embeddings were not normalised to length 1, so the dot product is "
                                    "not the cosine"),
        ]
        for change, words in slips:
            if math.isclose(value, _importance_variant(**variant, **change), rel_tol=0, abs_tol=IMPORTANCE_TOLERANCE):
                return words
        return (f"layer {layer} head {head}: got {value:.5f}, the course's ablation gives {want:.5f}")

    result = run_check("head_importance", guarded(head_importance), guarded(solutions.head_importance),
                       cases, diagnose, hint=True, timeout_s=30)
    with torch.no_grad():  # whatever the learner did, the model must be the one it was
        if not torch.allclose(model(**inputs).last_hidden_state, reference_output, atol=1e-6):
            raise RuntimeError("the encoder changed during check_head_importance: re-load it (load_encoder)")
    return result

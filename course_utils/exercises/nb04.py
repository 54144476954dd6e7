"""Checkers for notebook 04 (attention from scratch).

- ``check_softmax`` (04.1): against ``scipy.special.softmax`` (overflow trap at scores ~1000).
- ``check_attention`` (04.2): NumPy attention against ``F.scaled_dot_product_attention``.
- ``check_self_attention`` (04.3, piece ``attention``): the learner's ``SelfAttention`` class,
  loaded with a BERT-family encoder's real weights (MiniLM by default), against the model's
  own attention sublayer output (forward hook on its output projection) on a padded batch,
  and its softmax weights against ``output_attentions``.
- ``check_antecedent_attention`` (04.4): against an exhaustive search over (layer, head).

Wrong answers are diagnosed by comparing with the typical slips computed on the same input
and weights (no √d, softmax over the queries, mask after the softmax or inverted, heads split
or merged without the transpose, no output projection, ...). Nothing here prints a solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax as scipy_softmax

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb04 as solutions


def _softmax_cases() -> list[tuple[tuple, dict]]:
    rng = np.random.default_rng(0)
    return [
        ((np.array([1.0, 2.0, 3.0]),), {}),
        ((rng.normal(size=(4, 5)),), {}),
        ((rng.normal(size=(2, 3, 6)) * 3,), {}),
        ((np.array([[1000.0, 999.0, 0.0], [-1000.0, -1001.0, -999.0]]),), {}),  # overflow trap
    ]


def check_softmax(softmax: Callable[[np.ndarray], np.ndarray]) -> CheckResult:
    """``softmax(scores)`` over the last axis, numerically stable."""

    def diagnose(got, expected, args, kwargs):
        (scores,) = args
        truth = scipy_softmax(scores, axis=-1)  # the library's softmax, not the reference solution
        got = np.asarray(got, dtype=float)
        if got.shape != truth.shape:
            return f"shape {got.shape}, expected {truth.shape} (same as the input)"
        if np.isnan(got).any() or np.isinf(got).any():
            return ("NaN/inf for large scores: exp(1000) overflows; subtract each row's max "
                    "before exponentiating (softmax does not change)")
        if np.allclose(got, truth, atol=1e-9):
            return None
        if not np.allclose(got.sum(-1), 1.0):
            if (scores.ndim > 1 and np.allclose(got.sum(0), 1.0)) or np.isclose(got.sum(), 1.0):
                return "rows don't sum to 1: normalise over the last axis (axis=-1, keepdims=True)"
            return "rows don't sum to 1: divide each row by its own sum"
        return "right shape and rows sum to 1, but the values differ: softmax is exp(x) / Σ exp(x)"

    def quiet_softmax(scores):  # the overflow trap case is meant to overflow a naive exp
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return softmax(scores)

    return run_check(
        "softmax", quiet_softmax, solutions.softmax, _softmax_cases(), diagnose,
        hint=True,
    )


def _attention_cases() -> list[tuple[tuple, dict]]:
    rng = np.random.default_rng(1)
    shapes = [(3, 3, 4, 4), (2, 5, 8, 3), (4, 6, 16, 16), (1, 1, 2, 2)]  # (Tq, Tk, d, dv)
    return [
        ((rng.normal(size=(tq, d)), rng.normal(size=(tk, d)), rng.normal(size=(tk, dv))), {})
        for tq, tk, d, dv in shapes
    ]


def check_attention(attention: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> CheckResult:
    """``attention(q, k, v)`` = softmax(q kᵀ / √d) v."""

    def diagnose(got, expected, args, kwargs):
        q, k, v = args
        expected = F.scaled_dot_product_attention(*(torch.from_numpy(m)[None] for m in (q, k, v)))[0].numpy()
        got = np.asarray(got)
        if got.shape == (q.shape[0], k.shape[0]) and got.shape != expected.shape:
            return (f"shape {got.shape} is (Tq, Tk): that's the weights; multiply them by v "
                    f"to get the output {expected.shape}")
        if got.shape != expected.shape:
            return f"shape {got.shape}, expected (Tq, dv) = {expected.shape}"
        if np.allclose(got, expected, atol=1e-9):
            return None
        unscaled = solutions.softmax(q @ k.T) @ v
        if np.allclose(got, unscaled, atol=1e-9):
            return "you forgot to divide the scores by √d (d = q.shape[-1])"
        if np.allclose(got, solutions.softmax(q @ k.T / q.shape[-1]) @ v, atol=1e-9):
            return "you divided by d; divide by √d"
        if np.allclose(got, (q @ k.T / np.sqrt(q.shape[-1])) @ v, atol=1e-9):
            return "no softmax: turn the scores into weights with softmax over the keys"
        scores = q @ k.T / np.sqrt(q.shape[-1])
        column = np.exp(scores) / np.exp(scores).sum(0, keepdims=True)
        if np.allclose(got, column @ v, atol=1e-9):
            return "softmax over the wrong axis: each query's weights over the keys must sum to 1"
        return "wrong values: compare each step (scores, scaling, softmax over the keys, weighted sum of v)"

    return run_check(
        "attention", attention, solutions.attention, _attention_cases(), diagnose,
        hint=True,
    )


def _antecedent_cases() -> list[tuple[tuple, dict]]:
    rng = np.random.default_rng(2)
    cases = []
    for layers, heads, tokens, query, key in [(6, 12, 10, 7, 2), (2, 3, 5, 4, 0), (4, 2, 6, 1, 5)]:
        maps = rng.random((layers, heads, tokens, tokens))
        maps /= maps.sum(-1, keepdims=True)
        cases.append(((maps, query, key), {}))
    return cases


def check_antecedent_attention(
    antecedent_attention: Callable[[np.ndarray, int, int], tuple[int, int, float]],
) -> CheckResult:
    """``antecedent_attention(attentions, query, key)`` -> (layer, head, weight) of the max."""

    def diagnose(got, expected, args, kwargs):
        maps, query, key = args
        try:
            layer, head, weight = got
        except (TypeError, ValueError):
            return f"returned {got!r}, expected a (layer, head, weight) tuple"
        if (int(layer), int(head)) == expected[:2] and np.isclose(weight, expected[2]):
            return None
        transposed = solutions.antecedent_attention(np.swapaxes(maps, -1, -2), query, key)
        if (int(layer), int(head)) == transposed[:2]:
            return ("you read attentions[..., key, query]: rows are queries (the token "
                    "attending, 'it'), columns are keys (the token attended to)")
        if np.isclose(weight, expected[2]):
            return (f"the weight is right but (layer, head) = ({layer}, {head}), expected "
                    f"{expected[:2]}: np.unravel_index turns a flat argmax into (layer, head)")
        return f"got {got}, expected {expected}"

    return run_check(
        "antecedent_attention", antecedent_attention, solutions.antecedent_attention,
        _antecedent_cases(), diagnose,
        hint=True,
    )


# --- 04.4 SelfAttention against MiniLM -------------------------------------------------------

ATTENTION_TOLERANCE = 1e-5
ATTENTION_SENTENCES = ["The animal didn't cross the street because it was too tired.", "Short one."]
ATTENTION_LAYERS = (0, 3)
_DEFAULT_ENCODER: list = []
_ENCODER_CASES: dict[int, dict] = {}


ENCODER_FAMILIES = ("bert", "distilbert", "roberta")


def _encoder_parts(model) -> tuple[int, Callable[[int], tuple]]:
    """Number of layers of a BERT-family encoder and, per layer, (q/k/v/o weights, output module)."""
    from torch import nn

    from course_utils import families

    view = families.describe(model)
    if view.family not in ENCODER_FAMILIES:
        raise ValueError(f"check_self_attention needs a {'/'.join(ENCODER_FAMILIES)} encoder, got {view.model_class}")
    layer_list = families.layers(model)

    def parts(i: int) -> tuple:
        weights = families.attention_weights(model, i)
        out_module = next(m for m in layer_list[i].modules() if isinstance(m, nn.Linear)
                          and m.weight.data_ptr() == weights.o.weight.data_ptr())
        return weights, out_module

    return view.n_layers, parts


def _encoder(model):
    if model is not None:
        try:
            _encoder_parts(model)
            return model, None
        except ValueError:  # another family (T5, a decoder): the bundled MiniLM instead
            pass
    if not _DEFAULT_ENCODER:
        from course_utils.models import load_encoder

        _DEFAULT_ENCODER.extend(load_encoder())
    return _DEFAULT_ENCODER[0], _DEFAULT_ENCODER[1]


def _encoder_cases(model, tokenizer) -> dict:
    """The encoder on a padded batch: each layer's input, output-projection output and attention maps."""
    from course_utils import families

    if id(model) in _ENCODER_CASES:
        return _ENCODER_CASES[id(model)]
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path or model.name_or_path)
    n_layers, parts = _encoder_parts(model)
    checked = sorted({0, min(ATTENTION_LAYERS[1], n_layers - 1)})
    captured: dict[int, torch.Tensor] = {}
    hooks = [parts(i)[1].register_forward_hook(lambda module, inputs, output, i=i: captured.__setitem__(i, output))
             for i in checked]
    cases = {}
    try:
        for name, texts in (("padded", ATTENTION_SENTENCES), ("single", ATTENTION_SENTENCES[:1])):
            batch = families.model_inputs(tokenizer, model, texts)
            with torch.no_grad():
                outputs = model(**batch, output_attentions=True, output_hidden_states=True)
            mask = batch["attention_mask"].bool()[:, None, None, :] if name == "padded" else None  # (B, 1, 1, T)
            for i in checked:
                cases[(name, i)] = dict(x=outputs.hidden_states[i], mask=mask, out=captured[i],
                                        weights=outputs.attentions[i])
    finally:
        for hook in hooks:
            hook.remove()
    view = families.describe(model)
    result = dict(cases=cases, layers=checked, d_model=view.d_model, n_heads=view.n_heads, parts=parts)
    _ENCODER_CASES[id(model)] = result
    return result


class _SoftmaxRecorder(torch.overrides.TorchFunctionMode):
    """Records every softmax output of shape (B, H, T, T) computed inside the block."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape, self.weights = shape, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name == "softmax" and isinstance(result, torch.Tensor) and tuple(result.shape) == self.shape:
            self.weights.append(result.detach().clone())
        return result


def _attention_variant(parts, x: torch.Tensor, mask, n_heads: int, *, scale: str = "sqrt", axis: int = -1,
                       mask_mode: str = "before", split: str = "transpose", merge: str = "transpose",
                       out_proj: bool = True) -> torch.Tensor:
    """MiniLM's attention with one typical slip (for naming it), from the layer's own weights."""
    proj, _ = parts
    B, T, C = x.shape
    d = C // n_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        if split == "view":  # (B, T, C) viewed as (B, H, T, d) without the transpose
            return t.reshape(B, n_heads, T, d)
        return t.view(B, T, n_heads, d).transpose(1, 2)

    with torch.no_grad():
        q, k, v = (heads(F.linear(x, *projection)) for projection in (proj.q, proj.k, proj.v))
        scores = q @ k.transpose(-2, -1)
        scores = scores / {"sqrt": math.sqrt(d), "none": 1.0, "d": float(d)}[scale]
        if mask is not None and mask_mode == "before":
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        elif mask is not None and mask_mode == "inverted":
            scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=axis)
        if mask is not None and mask_mode == "after":
            weights = weights.masked_fill(~mask, 0.0)
        context = weights @ v  # (B, H, T, d)
        if merge == "view":
            context = context.reshape(B, T, C)
        else:
            context = context.transpose(1, 2).reshape(B, T, C)
        return F.linear(context, *proj.o) if out_proj else context


def check_self_attention(SelfAttention: type, model=None) -> CheckResult:
    """``SelfAttention(d_model, n_heads)`` loaded with MiniLM's weights = MiniLM's attention sublayer.

    For layers 0 and 3 (or the last) of the encoder (``model``: BERT, DistilBERT or RoBERTa;
    by default, or for another family, the bundled MiniLM): the learner's class is built, its
    ``query``, ``key``, ``value`` get the layer's q/k/v projections and ``out`` the output
    projection (BERT: ``attention.self.*`` and ``attention.output.dense``); on a
    padded batch of two sentences (mask from the tokenizer's ``attention_mask``, shape
    ``(B, 1, 1, T)``) and on one sentence with ``mask=None``, its output must equal the
    output of the model's own output projection (before dropout, residual and LayerNorm),
    captured with a forward hook, to ≤ 1e-5; the softmax weights it computes (recorded when
    it calls a softmax) must equal ``output_attentions`` to ≤ 1e-5.
    """
    model, tokenizer = _encoder(model)
    data = _encoder_cases(model, tokenizer)
    d_model, n_heads, parts = data["d_model"], data["n_heads"], data["parts"]

    def build_and_run(cls: type, case: tuple[str, int]) -> tuple[torch.Tensor, list]:
        spec = data["cases"][case]
        module = cls(d_model, n_heads)
        weights, _ = parts(case[1])
        state = {f"{name}.{param}": tensor for name, projection in
                 (("query", weights.q), ("key", weights.k), ("value", weights.v), ("out", weights.o))
                 for param, tensor in (("weight", projection.weight), ("bias", projection.bias))}
        names = sorted(module.state_dict())
        if names != sorted(state):
            raise ValueError(f"SelfAttention's parameters must be exactly {sorted(state)} (nn.Linear "
                             f"submodules query, key, value, out, with bias); yours: {names}")
        module.load_state_dict(state)
        module.eval()
        recorder = _SoftmaxRecorder(tuple(spec["weights"].shape))
        with torch.no_grad(), recorder:
            output = module(spec["x"].clone(), None if spec["mask"] is None else spec["mask"].clone())
        return output, recorder.weights

    def diagnose(got, expected, args, kwargs):
        try:
            return _diagnose(got, args[0])
        except Exception as error:  # the learner's output: report, don't raise
            return f"could not compare your output ({type(error).__name__}: {error})"

    def _diagnose(got, case):
        output, recorded = got
        spec = data["cases"][case]
        where = f"layer {case[1]}, {'padded batch of 2 with a mask' if case[0] == 'padded' else 'one sentence, mask=None'}"
        truth = spec["out"]
        if not isinstance(output, torch.Tensor):
            return f"{where}: forward returned {type(output).__name__}, expected a tensor (B, T, C)"
        if output.shape != truth.shape:
            if output.shape == spec["weights"].shape:
                return f"{where}: forward returned the weights {tuple(output.shape)}; return the output (B, T, C)"
            return f"{where}: output shape {tuple(output.shape)}, expected (B, T, C) = {tuple(truth.shape)}"
        if not torch.isfinite(output).all():
            return (f"{where}: the output has NaN values: some softmax saw only -inf. Either a query's "
                    "keys are all masked (is the mask's polarity inverted? True = may attend) or the "
                    "softmax runs over the wrong axis (over the queries, a padding column is all -inf)")
        gap = float((output - truth).abs().max())
        if gap <= ATTENTION_TOLERANCE:
            if recorded:
                weight_gap = min(float((w - spec["weights"]).abs().max()) for w in recorded)
                if weight_gap > ATTENTION_TOLERANCE:
                    return (f"{where}: the output matches but your softmax weights differ from "
                            f"output_attentions by {weight_gap:.3g}")
            return None
        x, mask = spec["x"], spec["mask"]
        slips = [
            (dict(scale="none"), "the scores are not divided by √d_head (d_head = d_model / n_heads)"),
            (dict(scale="d"), "the scores are divided by d_head; divide by √d_head"),
            (dict(axis=-2), "softmax over the wrong axis: each query's weights over the keys (the last axis) must sum to 1"),
            (dict(mask_mode="after"), "the mask is applied after the softmax: masked keys must be set to -inf "
                                      "before it, so that the remaining weights sum to 1"),
            (dict(mask_mode="inverted"), "the mask's polarity is inverted: True means the key may be attended to"),
            (dict(mask_mode="ignored"), "the mask is ignored: padding keys must get no weight"),
            (dict(split="view"), "the heads are split wrongly: view (B, T, H, d) and then transpose to "
                                 "(B, H, T, d); a direct view as (B, H, T, d) mixes tokens and heads"),
            (dict(merge="view"), "the heads are merged back wrongly: transpose (B, H, T, d) to (B, T, H, d) "
                                 "before reshaping to (B, T, C)"),
            (dict(out_proj=False), "the output projection is missing: pass the concatenated heads through self.out"),
        ]
        for variant, message in slips:
            if mask is None and "mask_mode" in variant:
                continue
            candidate = _attention_variant(parts(case[1]), x, mask, n_heads, **variant)
            if (candidate - truth).abs().max() > ATTENTION_TOLERANCE and \
                    float((output - candidate).abs().max()) <= ATTENTION_TOLERANCE:
                return f"{where}: {message}"
        if recorded:
            weight_gap = min(float((w - spec["weights"]).abs().max()) for w in recorded)
            if weight_gap <= ATTENTION_TOLERANCE:
                return (f"{where}: your attention weights equal MiniLM's, but the output differs by "
                        f"{gap:.3g}: check the weighted sum of v, the merge of the heads and self.out")
            return f"{where}: output differs from MiniLM's by up to {gap:.3g}, weights by {weight_gap:.3g}"
        return f"{where}: output differs from MiniLM's attention sublayer by up to {gap:.3g}"

    cases = [((("padded", layer),), {}) for layer in data["layers"]] + [((("single", 0),), {})]
    return run_check(
        "SelfAttention", lambda case: build_and_run(SelfAttention, case),
        lambda case: build_and_run(solutions.SelfAttention, case), cases, diagnose, hint=True,
    )

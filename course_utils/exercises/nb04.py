"""Checkers for notebook 04 (attention from scratch)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
        got = np.asarray(got)
        if got.shape != expected.shape:
            return f"shape {got.shape}, expected {expected.shape} (same as the input)"
        if np.isnan(got).any() or np.isinf(got).any():
            return ("NaN/inf for large scores: exp(1000) overflows; subtract each row's max "
                    "before exponentiating (softmax does not change)")
        if np.allclose(got, expected, atol=1e-9):
            return None
        if scores.ndim > 1 and not np.allclose(got.sum(-1), 1.0):
            if np.allclose(got.sum(0), 1.0) or np.isclose(got.sum(), 1.0):
                return "rows don't sum to 1: normalise over the last axis (axis=-1, keepdims=True)"
            return "rows don't sum to 1"
        return "right shape and rows sum to 1, but the values differ: softmax is exp(x) / Σ exp(x)"

    def quiet_softmax(scores):  # the overflow trap case is meant to overflow a naive exp
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return softmax(scores)

    return run_check(
        "softmax", quiet_softmax, solutions.softmax, _softmax_cases(), diagnose,
        hint="e = np.exp(x - x.max(axis=-1, keepdims=True)); e / e.sum(axis=-1, keepdims=True)",
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
        return "wrong values: scores = q @ k.T / √d, weights = softmax(scores), output = weights @ v"

    return run_check(
        "attention", attention, solutions.attention, _attention_cases(), diagnose,
        hint="softmax(q @ k.T / np.sqrt(q.shape[-1])) @ v",
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
        hint="w = attentions[:, :, query, key]; np.unravel_index(w.argmax(), w.shape)",
    )

"""Checkers for notebook 06 (masks).

The ``masks`` piece (exercise 06.1) is checked one function at a time:

- ``check_causal_mask``: equal to ``course_utils.masks.causal_mask`` on many sizes; then used
  as the mask of SmolLM2's layer-0 attention (transformers' ``LlamaAttention``), it gives the
  output the model computes with its own causal mask, and changing the later tokens changes
  no earlier output;
- ``check_padding_mask``: equal to ``course_utils.masks.padding_mask`` on right- and
  left-padded batches; then used in MiniLM's layer 0 (transformers' ``BertLayer``), each
  sentence's outputs in a padded batch equal the sentence run alone;
- ``check_sliding_window_mask``: equal to ``course_utils.masks.sliding_window_mask``.

``check_causal_padding_mask`` (exercise 06.2) checks the combined ``(B, 1, T, T)`` mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from course_utils import masks as course_masks
from course_utils.exercises import CheckResult, CheckTimeout, run_check
from course_utils.exercises.nb05 import _bundled_decoder, _bundled_encoder, record_llama_attention
from course_utils.solutions import nb06 as solutions

ATTENTION_TOLERANCE = 1e-5
"""Largest difference between a model's outputs with the learner's mask and without it."""


# --------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------


@dataclass
class _Raised:
    """The learner's function raised (reported in words by the diagnosis)."""

    message: str


@dataclass
class _MaskCase:
    """One call of the learner's function; ``use`` optionally runs a model with the result."""

    label: str
    args: tuple
    expected: torch.Tensor | None  # the mask course_utils.masks returns (None for model cases)
    use: Callable[[torch.Tensor], object] | None = None  # mask -> outcome for model cases

    def __repr__(self) -> str:
        return f"<{self.label}>"


def _runner(fn: Callable[..., torch.Tensor]) -> Callable[[_MaskCase], object]:
    def run(case: _MaskCase) -> object:
        try:
            mask = fn(*case.args)
        except (NotImplementedError, CheckTimeout):
            raise
        except Exception as error:  # the learner's code: report, don't crash
            return _Raised(f"raised {type(error).__name__}: {error}")
        if case.use is None:
            return mask
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            return _Raised(f"returned {_describe(mask)}, expected a boolean tensor")
        try:
            return case.use(mask)
        except (NotImplementedError, CheckTimeout):
            raise
        except Exception as error:
            return _Raised(f"the mask could not be used in the model's attention "
                           f"({type(error).__name__}: {error})")

    return run


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _basic_problem(got: object, expected: torch.Tensor) -> str | None:
    """Type and dtype problems, shared by every mask."""
    if isinstance(got, _Raised):
        return got.message
    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a boolean tensor"
    if got.dtype != torch.bool:
        return (f"dtype {got.dtype}: return a boolean mask (True = may attend), not numbers: "
                "a 1/0 mask would be *added* to scores by some code and block nothing")
    return None


# --------------------------------------------------------------------------------------
# causal_mask
# --------------------------------------------------------------------------------------


def _diagnose_causal(got, expected, args, kwargs) -> str | None:
    (case,) = args
    if case.use is not None:
        return _diagnose_use(got, case)
    problem = _basic_problem(got, case.expected)
    if problem:
        return f"{case.label}: {problem}"
    want = case.expected
    (n,) = case.args
    if tuple(got.shape) != tuple(want.shape):
        return f"{case.label}: shape {tuple(got.shape)}, expected (n, n) = {tuple(want.shape)}"
    if torch.equal(got, want):
        return None
    if torch.equal(got, ~want):
        return (f"{case.label}: the mask is inverted (True where a key is blocked): here True "
                "means *may attend*, so query i may see keys j <= i")
    if torch.equal(got, want.tril(-1)):
        return (f"{case.label}: the diagonal is blocked (strict triangle, j < i): a query may "
                "attend to itself, so the triangle includes the diagonal (j <= i)")
    if torch.equal(got, want.T):
        return (f"{case.label}: the upper triangle: rows are queries and columns keys, so "
                "query i (row i) may see the keys to its left, j <= i (transposed?)")
    if n > 1 and torch.equal(got, torch.ones_like(want).tril(1)):
        return (f"{case.label}: off by one above the diagonal: query i also sees key i + 1 "
                "(the next token, which is what it must predict)")
    return f"{case.label}: wrong pattern: query i may attend exactly to keys 0..i"


def _causal_use_cases(decoder, seq_len: int = 9, cut: int = 5) -> list[_MaskCase]:
    """The learner's causal mask in SmolLM2's layer-0 attention (transformers' module)."""
    config = decoder.config
    generator = torch.Generator().manual_seed(8)
    ids = torch.randint(0, config.vocab_size, (1, seq_len), generator=generator)
    changed = ids.clone()
    changed[0, cut:] = torch.randint(0, config.vocab_size, (seq_len - cut,), generator=generator)
    attention = decoder.model.layers[0].self_attn
    recorded = {}
    for name, row in (("original", ids), ("changed", changed)):
        records, _ = record_llama_attention(decoder, row, (0,))
        recorded[name] = records[0]  # (input, output) of layer 0's attention
    positions = torch.arange(seq_len)[None]

    def attend(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        additive = course_masks.to_additive(mask)
        while additive.dim() < 4:
            additive = additive[None]
        cos_sin = decoder.model.rotary_emb(x, positions)
        with torch.no_grad():
            return attention(x, cos_sin, additive)[0]

    def same_as_model(mask: torch.Tensor) -> tuple[str, float, float]:
        x, model_out = recorded["original"]
        return "model", (attend(x, mask) - model_out).abs().max().item(), 0.0

    def no_leak(mask: torch.Tensor) -> tuple[str, float, float]:
        before = attend(recorded["original"][0], mask) - attend(recorded["changed"][0], mask)
        return "leak", before[:, :cut].abs().max().item(), before[:, cut:].abs().max().item()

    return [
        _MaskCase(f"SmolLM2 layer-0 attention with causal_mask({seq_len}) vs the model's own causal "
                  "attention", (seq_len,), None, same_as_model),
        _MaskCase(f"SmolLM2 layer 0, tokens from position {cut} on replaced", (seq_len,), None, no_leak),
    ]


def _diagnose_use(got, case: _MaskCase) -> str | None:
    if isinstance(got, _Raised):
        return f"{case.label}: {got.message}"
    kind, diff, other = got
    if diff <= ATTENTION_TOLERANCE:
        return None
    if kind == "model":
        return (f"{case.label}: the outputs differ by {diff:.2g} (tolerance "
                f"{ATTENTION_TOLERANCE:g}): the mask lets a query see other keys than the model's")
    if kind == "leak":
        return (f"{case.label}: outputs *before* the change moved by {diff:.2g}: the mask lets "
                "queries see future keys")
    return (f"{case.label}: a sentence's outputs in the padded batch differ from the sentence "
            f"alone by {diff:.2g} (tolerance {ATTENTION_TOLERANCE:g}): padding keys are not blocked "
            "(or real keys are)")


def check_causal_mask(causal_mask: Callable[[int], torch.Tensor], decoder=None) -> CheckResult:
    """``causal_mask(n)`` -> boolean ``(n, n)``, True on and below the diagonal; used in SmolLM2.

    ``decoder``: a loaded ``LlamaForCausalLM`` (the bundled SmolLM2 when None).
    """
    cases = [_MaskCase(f"causal_mask({n})", (n,), course_masks.causal_mask(n))
             for n in (1, 2, 5, 16, 33)]
    cases += _causal_use_cases(_bundled_decoder() if decoder is None else decoder)
    return run_check("causal_mask", _runner(causal_mask), _runner(solutions.causal_mask),
                     [((case,), {}) for case in cases], _diagnose_causal, hint=True)


# --------------------------------------------------------------------------------------
# padding_mask
# --------------------------------------------------------------------------------------

_PADDING = [
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],  # right padding
    [[1, 1, 0]],
    [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]],  # left padding
    [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]],
]


def _diagnose_padding(got, expected, args, kwargs) -> str | None:
    (case,) = args
    if case.use is not None:
        return _diagnose_use(got, case)
    problem = _basic_problem(got, case.expected)
    if problem:
        return f"{case.label}: {problem}"
    want = case.expected  # (B, 1, 1, T)
    (attention_mask,) = case.args
    B, T = attention_mask.shape
    if tuple(got.shape) != tuple(want.shape):
        keys = attention_mask.bool()
        if tuple(got.shape) == (B, 1, T, 1):
            return (f"{case.label}: shape (B, 1, T, 1) masks query *rows*, not keys: against "
                    "(B, H, T_query, T_key) scores the key axis is the last one, (B, 1, 1, T)")
        if tuple(got.shape) == (B, T):
            return (f"{case.label}: shape (B, T) has no axes for the heads and the queries: it "
                    "would not broadcast against (B, H, T, T) scores; expected (B, 1, 1, T)")
        if tuple(got.shape) == (B, 1, T) or (tuple(got.shape) == (B, T, T) and torch.equal(
                got, keys[:, None, :].expand(B, T, T))):
            return (f"{case.label}: shape {tuple(got.shape)} has no head axis: against "
                    "(B, H, T, T) scores its batch axis would land on the heads; expected (B, 1, 1, T)")
        return f"{case.label}: shape {tuple(got.shape)}, expected (B, 1, 1, T) = {tuple(want.shape)}"
    if torch.equal(got, want):
        return None
    if torch.equal(got, ~want):
        return (f"{case.label}: the mask is inverted: True must mark the *real* tokens "
                "(attention_mask == 1), the keys a query may attend to")
    return f"{case.label}: wrong values: key j of example b may be attended iff attention_mask[b, j] == 1"


def _padding_use_case(encoder, lengths: tuple[int, ...] = (8, 5, 3)) -> _MaskCase:
    """The learner's padding mask in MiniLM's layer 0 (transformers' BertLayer), a padded batch."""
    generator = torch.Generator().manual_seed(9)
    T = max(lengths)
    ids = torch.randint(1000, encoder.config.vocab_size, (len(lengths), T), generator=generator)
    attention_mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    ids = ids * attention_mask  # padding id 0 on the padded positions
    layer = encoder.encoder.layer[0]
    with torch.no_grad():
        x = encoder.embeddings(input_ids=ids)  # (B, T, C)
        alone = [layer(x[b:b + 1, :n]) for b, n in enumerate(lengths)]  # (1, n, C) each

    def padded_equals_alone(mask: torch.Tensor) -> tuple[str, float, float]:
        with torch.no_grad():
            out = layer(x, attention_mask=course_masks.to_additive(mask))  # (B, T, C)
        diff = max((out[b:b + 1, :n] - alone[b]).abs().max().item() for b, n in enumerate(lengths))
        return "padding", diff, 0.0

    return _MaskCase(f"MiniLM layer 0 on a batch of {len(lengths)} sequences (lengths "
                     f"{', '.join(map(str, lengths))}, right-padded) vs each sequence alone",
                     (attention_mask,), None, padded_equals_alone)


def check_padding_mask(padding_mask: Callable[[torch.Tensor], torch.Tensor], encoder=None) -> CheckResult:
    """``padding_mask(attention_mask (B, T))`` -> boolean ``(B, 1, 1, T)``; used in MiniLM.

    ``encoder``: a loaded ``BertModel`` (the bundled MiniLM when None).
    """
    cases = []
    for rows in _PADDING:
        attention_mask = torch.tensor(rows)
        cases.append(_MaskCase(f"padding_mask({rows})", (attention_mask,),
                               course_masks.padding_mask(attention_mask)))
    cases.append(_padding_use_case(_bundled_encoder() if encoder is None else encoder))
    return run_check("padding_mask", _runner(padding_mask), _runner(solutions.padding_mask),
                     [((case,), {}) for case in cases], _diagnose_padding, hint=True)


# --------------------------------------------------------------------------------------
# sliding_window_mask
# --------------------------------------------------------------------------------------


def _diagnose_window(got, expected, args, kwargs) -> str | None:
    (case,) = args
    problem = _basic_problem(got, case.expected)
    if problem:
        return f"{case.label}: {problem}"
    want = case.expected
    n, window = case.args
    if tuple(got.shape) != (n, n):
        return f"{case.label}: shape {tuple(got.shape)}, expected ({n}, {n})"
    if torch.equal(got, want):
        return None
    if torch.equal(got, ~want):
        return (f"{case.label}: the mask is inverted (True where a key is blocked): True means "
                "*may attend*")
    if got.triu(diagonal=1).any():
        return (f"{case.label}: a query may attend to a later key: the window is causal, it "
                "looks back only (j <= i)")
    seen = int(got[-1].sum())
    if seen != min(window, n):
        return (f"{case.label}: the last query sees {seen} keys, expected window = {window} "
                "(itself included): the window is off by one")
    return f"{case.label}: wrong pattern: query i may attend exactly to keys i - window + 1 .. i"


def check_sliding_window_mask(sliding_window_mask: Callable[[int, int], torch.Tensor]) -> CheckResult:
    """``sliding_window_mask(n, window)`` -> boolean ``(n, n)``: keys i-window+1 .. i."""
    cases = [_MaskCase(f"sliding_window_mask({n}, {w})", (n, w), course_masks.sliding_window_mask(n, w))
             for n, w in ((6, 3), (8, 1), (5, 5), (7, 2), (4, 9), (16, 4))]
    return run_check("sliding_window_mask", _runner(sliding_window_mask),
                     _runner(solutions.sliding_window_mask), [((case,), {}) for case in cases],
                     _diagnose_window, hint=True)


# --------------------------------------------------------------------------------------
# causal_padding_mask (exercise 06.2)
# --------------------------------------------------------------------------------------

_PADDING_CASES = [
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
    [[1, 1, 0]],
    [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]],
]


def check_causal_padding_mask(
    causal_padding_mask: Callable[[torch.Tensor], torch.Tensor],
) -> CheckResult:
    """``causal_padding_mask(attention_mask)``: (B, T) 1/0 -> boolean (B, 1, T, T)."""

    def diagnose(got, _reference, args, kwargs):
        (attention_mask,) = args
        batch, seq_len = attention_mask.shape
        expected = course_masks.combine(course_masks.causal_mask(seq_len),
                                        course_masks.padding_mask(attention_mask))  # (B, 1, T, T)
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.dtype != torch.bool:
            return f"dtype {got.dtype}: return a boolean mask (True = may attend)"
        if tuple(got.shape) == (batch, seq_len, seq_len):
            return ("shape (B, T, T) has no head axis: against (B, H, T, T) scores it would "
                    "broadcast the batch over the heads")
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, 1, T, T) = {tuple(expected.shape)}"
        if torch.equal(got, expected):
            return None
        future = ~torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        if got[..., future].any():
            return "a query may attend to a later key: the causal part is missing"
        if got[..., ~attention_mask.bool()[:, None, None, :].expand_as(got)].any():
            return "a query may attend to a padding key: the padding part is missing"
        return "some allowed (causal, non-padding) positions are blocked"

    cases = [((torch.tensor(rows),), {}) for rows in _PADDING_CASES]
    return run_check("causal_padding_mask", causal_padding_mask, solutions.causal_padding_mask,
                     cases, diagnose, hint=True)

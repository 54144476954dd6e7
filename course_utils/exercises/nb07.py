"""Checkers for notebook 07 (the forward pass).

Exercise 07.1 (``check_post_norm_block``, ``check_encoder``) loads the learner's modules
with a real encoder's weights through ``course_utils.families`` (BERT, DistilBERT and
RoBERTa alike) and compares with the model's own hidden states; a wrong answer is matched
against the typical slips (pre-norm wiring, no residual, tanh GELU, another LayerNorm eps,
no padding mask, no embedding LayerNorm) computed with the course's modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb07 as solutions


def _close(a, b, atol: float = 1e-5) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and bool(
        torch.allclose(a, b, atol=atol, rtol=0))


def _layer_norm_cases() -> list[tuple[tuple, dict]]:
    gen = torch.Generator().manual_seed(0)
    cases = []
    for shape, scale, eps in (((4, 8), 1.0, 1e-5), ((2, 3, 16), 5.0, 1e-5), ((1, 5, 6), 0.01, 1e-2)):
        c = shape[-1]
        x = torch.randn(shape, generator=gen) * scale + 3.0
        weight = torch.rand(c, generator=gen) + 0.5
        bias = torch.randn(c, generator=gen)
        cases.append(((x, weight, bias), {"eps": eps}))
    return cases


def check_layer_norm(layer_norm: Callable) -> CheckResult:
    """``layer_norm(x, weight, bias, eps)`` = torch.nn.functional.layer_norm over the last dim."""

    def diagnose(got, expected, args, kwargs):
        x, weight, bias = args
        eps = kwargs["eps"]
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (the input's)"
        if _close(got, expected):
            return None
        mean = x.mean(-1, keepdim=True)
        unbiased = (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias
        if _close(got, unbiased):
            return ("you used the unbiased variance (torch.var divides by C - 1 by default); "
                    "LayerNorm divides by C: var(..., unbiased=False)")
        var = x.var(-1, keepdim=True, unbiased=False)
        if _close(got, (x - mean) / (torch.sqrt(var) + eps) * weight + bias):
            return "eps goes inside the square root: sqrt(var + eps)"
        if _close(got, (x - mean) / torch.sqrt(var + eps)):
            return "normalised correctly, but forgot to scale by weight and shift by bias"
        if _close(got, (x - mean) / torch.sqrt(var + eps) * weight):
            return "forgot to add bias"
        if _close(got, x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias):
            return "that's RMSNorm (no mean subtracted): LayerNorm centres x first"
        whole = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * weight + bias
        if _close(got, whole):
            return "statistics over the whole tensor: LayerNorm averages each token's vector " \
                   "separately (dim=-1, keepdim=True)"
        return (f"values differ from torch's layer_norm by up to "
                f"{(got - expected).abs().max().item():.3g}")

    return run_check(
        "layer_norm", layer_norm, solutions.layer_norm, _layer_norm_cases(), diagnose, hint=True)


def _block_cases() -> list[tuple[tuple, dict]]:
    gen = torch.Generator().manual_seed(1)
    w_attn = torch.randn(6, 6, generator=gen) * 0.5
    w_ffn = torch.randn(6, 6, generator=gen) * 0.5
    cases = []
    for shape in ((2, 3, 6), (1, 5, 6)):
        x = torch.randn(shape, generator=gen)
        # Distinct, easily told apart stand-ins for the four sublayers.
        cases.append(((x, lambda h: torch.tanh(h @ w_attn), lambda h: torch.relu(h @ w_ffn),
                       lambda h: 2.0 * h + 1.0, lambda h: 0.5 * h - 1.0), {}))
    return cases


def check_pre_norm_block(pre_norm_block: Callable) -> CheckResult:
    """``pre_norm_block(x, attention, ffn, norm1, norm2)``: the GPT-style residual wiring."""

    def diagnose(got, expected, args, kwargs):
        x, attn, ffn, n1, n2 = args
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return f"expected a tensor of shape {tuple(expected.shape)} (the input's)"
        if _close(got, expected):
            return None
        h = n1(x + attn(x))
        if _close(got, n2(h + ffn(h))):
            return "that's the post-norm (BERT) wiring norm(x + sublayer(x)); pre-norm is " \
                   "x + sublayer(norm(x))"
        h = attn(n1(x))
        if _close(got, ffn(n2(h))):
            return "no residual connections: add each sublayer's output back to x"
        h = x + attn(n1(x))
        if _close(got, h + ffn(n1(h))) or _close(got, h + ffn(n2(x))):
            return "the FFN must read norm2 of the *updated* stream x + attention(norm1(x))"
        if _close(got, x + attn(n1(x)) + ffn(n2(x))):
            return "the sublayers run in sequence: the FFN sees the stream after attention"
        return "values differ from x1 = x + attention(norm1(x)); x1 + ffn(norm2(x1))"

    return run_check(
        "pre_norm_block", pre_norm_block, solutions.pre_norm_block, _block_cases(), diagnose, hint=True)


def check_block_parameters(block_parameters: Callable[[int, int], int]) -> CheckResult:
    """``block_parameters(d_model, d_ff)``: parameters of one BERT block, biases included."""

    def diagnose(got, expected, args, kwargs):
        c, f = args
        if isinstance(got, torch.Tensor):
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        no_bias = 4 * c * c + 2 * c * f
        if got == no_bias:
            return "you counted the weight matrices only: every Linear also has a bias vector"
        if got == expected - 4 * c:
            return "missing the two LayerNorms (each has a weight and a bias of size d_model)"
        if got == expected - 2 * c:
            return "each LayerNorm has two vectors (weight and bias): 2 · 2 · d_model"
        if got == expected - 4 * (c * c + c) + (c * c + c):
            return "attention has four projections (Q, K, V and the output W_O), not one"
        if got == expected - 4 * (c * c + c) + 3 * (c * c + c):
            return "don't forget the output projection W_O: attention has 4 Linear layers"
        return f"got {got} for d_model={c}, d_ff={f}, expected {expected}"

    cases = [((384, 1536), {}), ((64, 256), {}), ((768, 3072), {}), ((10, 7), {})]
    return run_check(
        "block_parameters", block_parameters, solutions.block_parameters, cases, diagnose, hint=True)


# --------------------------------------------------------------------------------------
# Exercise 07.1: the post-norm block and the stack, loaded with a real encoder's weights
# --------------------------------------------------------------------------------------

DEFAULT_TEXTS = ["The animal didn't cross the street because it was too tired.",
                 "Attention is all you need."]


@functools.cache
def _bundled_encoder():
    from course_utils.models import load_encoder

    return load_encoder()


def _encoder_and_inputs(model, inputs):
    """The bundled encoder (when none is given) and a padded batch for it."""
    from course_utils import families

    if model is None or inputs is None:
        loaded = _bundled_encoder()
        model = loaded.model if model is None else model
        if inputs is None:
            inputs = families.model_inputs(loaded.tokenizer, model, DEFAULT_TEXTS)
    return model, inputs


def _unsupported(model) -> str | None:
    from course_utils import families

    view = families.describe(model)
    if view.kind != "encoder" or view.norm_placement != "post" or view.ffn != "gelu" \
            or view.positions != "learned":
        return (f"{view.model_class} is a {view.norm_placement}-norm {view.kind} with {view.ffn} FFN and "
                f"{view.positions} positions; this exercise builds a post-norm GELU encoder with learned "
                "positions (BERT, DistilBERT, RoBERTa)")
    return None


def _skip(name: str, why: str, verbose: bool) -> CheckResult:
    message = f"– {name}: skipped: {why}."
    if verbose:
        print(message)
    return CheckResult(name, False, 0, message)


def _fill_block(block: torch.nn.Module, model, i: int) -> None:
    """Copy layer i's weights into the learner's block (names from the exercise)."""
    from course_utils import families

    attention, ffn = families.attention_weights(model, i), families.ffn_weights(model, i)
    attn_norm, ffn_norm = families.layer_norms(model, i)
    pairs = [("attn.query", attention.q), ("attn.key", attention.k), ("attn.value", attention.v),
             ("attn.out", attention.o), ("ffn_up", ffn.up), ("ffn_down", ffn.down)]
    with torch.no_grad():
        for name, projection in pairs:
            target = block.get_submodule(name) if _has(block, name) else None
            if not isinstance(target, torch.nn.Linear) or target.weight.shape != projection.weight.shape \
                    or target.bias is None:
                raise ValueError(f"expected `{name}` = nn.Linear({projection.weight.shape[1]}, "
                                 f"{projection.weight.shape[0]}) with bias in your block")
            target.weight.copy_(projection.weight)
            target.bias.copy_(projection.bias)
        for name, source in (("attn_norm", attn_norm), ("ffn_norm", ffn_norm)):
            target = getattr(block, name, None)
            if not isinstance(getattr(target, "weight", None), torch.Tensor) or getattr(target, "bias", None) is None:
                raise ValueError(f"expected `{name}` = a LayerNorm with weight and bias in your block")
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)


def _has(module: torch.nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


class _Run:
    """The learner's output and the module that produced it (for the diagnosis)."""

    def __init__(self, out, module=None) -> None:
        self.out, self.module = out, module


def _course_block_parts(model, i: int):
    """The course's sublayers of layer i (proven equal to the model in tests/test_families.py)."""
    from course_utils.weights import block_from_layer

    block = block_from_layer(model, i)
    return block


def _post_norm_variants(model, i: int, x: torch.Tensor, mask: torch.Tensor):
    """(output, diagnosis) for the typical slips, computed with layer i's real weights."""
    from course_utils import families

    ref = _course_block_parts(model, i)
    n1, n2 = families.layer_norms(model, i)
    ffn = families.ffn_weights(model, i)

    def attn(h, m=mask):
        return ref.attn(h, mask=m)[0]

    def feed(h, approximate="none", act=None):
        up = h @ ffn.up.weight.T + ffn.up.bias
        up = act(up) if act is not None else F.gelu(up, approximate=approximate)
        return up @ ffn.down.weight.T + ffn.down.bias

    def ln(h, norm, eps):
        return F.layer_norm(h, h.shape[-1:], norm.weight, norm.bias, eps)

    with torch.no_grad():
        h = x + attn(n1(x))
        out = [(h + feed(n2(h)), "pre-norm wiring (x + sublayer(norm(x))): this model is post-norm, "
                                 "norm(x + sublayer(x))")]
        h = n1(attn(x))
        out.append((n2(feed(h)), "no residual connections: add each sublayer's input back before its norm"))
        h = n1(x + attn(x))
        out.append((n2(h + feed(h, "tanh")), "GELU's tanh approximation: BERT-style FFNs use the exact "
                                             "(erf) GELU, F.gelu's default"))
        out.append((n2(h + feed(h, act=F.relu)), "ReLU in the FFN: this model uses GELU"))
        h = n1(x + attn(x, None))
        out.append((n2(h + feed(h)), "padding mask not applied: pass `mask` on to self.attn"))
        for eps in (1e-5, 1e-6, 1e-8):
            h = ln(x + attn(x), n1, eps)
            out.append((ln(h + feed(h), n2, eps), f"LayerNorm eps {eps:g}: use the eps passed to "
                                                  f"__init__ (this model's is {families.describe(model).norm_eps:g})"))
    return out


def check_post_norm_block(PostNormBlock: type, model=None, inputs=None, verbose: bool = True) -> CheckResult:
    """``PostNormBlock(d_model, n_heads, d_ff, eps)``, loaded with layer i's weights, gives ``hidden_states[i + 1]``.

    Cases on the padded batch ``inputs``: the first and the last layer on the model's own
    ``hidden_states[i]`` (the learner's block gets the boolean padding mask
    ``(B, 1, 1, T)``), and the first layer on that input scaled by 1e-3 (tiny variance: a
    wrong LayerNorm eps shows), against the course's block proven equal to the model.
    Compared at every position (padded ones too), tolerance 1e-4.
    """
    from course_utils.exercises.nb08 import _run_piece, _skip_default_init
    from course_utils.solutions import nb07 as references

    name = "PostNormBlock"
    model, inputs = _encoder_and_inputs(model, inputs)
    why = _unsupported(model)
    if why:
        return _skip(name, why, verbose)
    from course_utils import families
    from course_utils.weights import block_from_layer

    view = families.describe(model)
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    T = inputs["input_ids"].shape[1]
    last = view.n_layers - 1
    cases = [((0, states[0], states[1]), {}), ((last, states[last], states[last + 1]), {}),
             ((0, states[0] * 1e-3, None), {})]
    padding = inputs["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, T): the learner's mask

    def make(cls):
        def learner(i, x, expected):
            with _skip_default_init():  # the real weights overwrite the random ones
                block = cls(view.d_model, view.n_heads, view.d_ff, view.norm_eps)
            _fill_block(block, model, i)
            block.eval()
            with torch.no_grad():
                return _Run(block(x, padding), block)
        return learner

    def oracle(i, x, expected):
        if expected is None:  # the course's block, proven equal to the model's layer
            with torch.no_grad():
                expected = block_from_layer(model, i)(x, mask=families.attention_mask_for(
                    model, i, T, inputs["attention_mask"]))
        return _Run(expected)

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got.out, torch.Tensor) or got.out.shape != expected.out.shape:
            shape = tuple(got.out.shape) if isinstance(got.out, torch.Tensor) else type(got.out).__name__
            return f"returned {shape}, expected a tensor of shape {tuple(expected.out.shape)} (the input's)"
        if torch.allclose(got.out, expected.out, atol=1e-4, rtol=0):
            return None
        i, x, _ = args
        mask = families.attention_mask_for(model, i, T, inputs["attention_mask"])
        with torch.no_grad():
            mine = got.module.attn(x, padding)
            theirs = _course_block_parts(model, i).attn(x, mask=mask)[0]
        if not (isinstance(mine, torch.Tensor) and mine.shape == theirs.shape
                and torch.allclose(mine, theirs, atol=1e-4, rtol=0)):
            return ("your SelfAttention (piece `attention`, notebook 04) differs from the model's attention "
                    "sublayer on the same input: fix it there first")
        for value, words in _post_norm_variants(model, i, x, mask):
            if torch.allclose(got.out, value, atol=1e-4, rtol=0):
                return words
        return f"values differ from the model's layer {i} by up to {(got.out - expected.out).abs().max().item():.3g}"

    return _run_piece(name, PostNormBlock, references.PostNormBlock, make, oracle, cases, diagnose, verbose)


def _fill_encoder(encoder: torch.nn.Module, model) -> None:
    from course_utils import families

    base = families._base(model)
    tables = [("token_emb", families.token_embedding_matrix(model)),
              ("pos_emb", families.position_embedding_matrix(model))]
    view = families.describe(model)
    if view.has_token_type_embeddings:
        tables.append(("type_emb", base.embeddings.token_type_embeddings.weight))
    elif getattr(encoder, "type_emb", None) is not None:
        raise ValueError(f"{view.model_class} has no token-type embeddings: type_vocab_size=0 means type_emb = None")
    with torch.no_grad():
        for name, table in tables:
            target = getattr(encoder, name, None)
            weight = getattr(target, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.shape[1] != table.shape[1] \
                    or weight.shape[0] > table.shape[0]:
                raise ValueError(f"expected `{name}` = nn.Embedding(rows, {table.shape[1]}) in your encoder")
            weight.copy_(table[: weight.shape[0]])
        norm = getattr(encoder, "emb_norm", None)
        if not isinstance(getattr(norm, "weight", None), torch.Tensor):
            raise ValueError("expected `emb_norm` = a LayerNorm in your encoder")
        norm.weight.copy_(base.embeddings.LayerNorm.weight)
        norm.bias.copy_(base.embeddings.LayerNorm.bias)
        blocks = getattr(encoder, "blocks", None)
        if blocks is None or len(blocks) != view.n_layers:
            raise ValueError(f"expected `blocks` = an nn.ModuleList of {view.n_layers} PostNormBlocks")
        for i, block in enumerate(blocks):
            _fill_block(block, model, i)


def _encoder_variants(model, inputs) -> list[tuple[torch.Tensor, str]]:
    """Whole-stack outputs of the typical slips, with the course's blocks."""
    from course_utils import families
    from course_utils.weights import block_from_layer

    view = families.describe(model)
    base = families._base(model)
    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    T = ids.shape[1]
    tokens = families.token_embedding_matrix(model)[ids]
    positions = families.position_embedding_matrix(model)[torch.arange(T)]
    types = (base.embeddings.token_type_embeddings(inputs.get("token_type_ids", torch.zeros_like(ids)))
             if view.has_token_type_embeddings else 0)
    norm = base.embeddings.LayerNorm
    blocks = [block_from_layer(model, i) for i in range(view.n_layers)]

    def run(x, mask=attention):
        for i, block in enumerate(blocks):
            x = block(x, mask=families.attention_mask_for(model, i, T, mask))
        return x

    with torch.no_grad():
        variants = [(run(tokens + positions + types), "the embeddings' LayerNorm is missing: normalise "
                                                       "token + position (+ type) before the first block"),
                    (run(norm(tokens + types)), "no position embeddings: add pos_emb of 0 .. T-1"),
                    (run(norm(tokens + positions + types), torch.ones_like(attention)),
                     "padding mask not applied: turn attention_mask into a boolean (B, 1, 1, T) mask "
                     "and pass it to every block"),
                    (run(norm(tokens + positions + types)).flip(0), "batch order changed")]
        if view.has_token_type_embeddings:
            variants.append((run(norm(tokens + positions)), "token-type embeddings missing: add "
                                                            "type_emb(token_type_ids)"))
    return variants


def check_encoder(PostNormEncoder: type, model=None, inputs=None, verbose: bool = True) -> CheckResult:
    """``PostNormEncoder(...)`` loaded with the model's weights gives its ``last_hidden_state``.

    On the padded batch ``inputs``, at every real (non-padding) token, tolerance 1e-4.
    """
    from course_utils.exercises.nb08 import _run_piece, _skip_default_init
    from course_utils.solutions import nb07 as references

    name = "PostNormEncoder"
    model, inputs = _encoder_and_inputs(model, inputs)
    why = _unsupported(model)
    if why:
        return _skip(name, why, verbose)
    from course_utils import families

    view = families.describe(model)
    real = inputs["attention_mask"].bool()  # (B, T)
    with torch.no_grad():
        expected_hidden = model(**inputs).last_hidden_state
    single = {key: value[1:2, : int(real[1].sum())] for key, value in inputs.items()}
    with torch.no_grad():
        expected_single = model(**single).last_hidden_state
    cases = [((inputs, expected_hidden), {}), ((single, expected_single), {})]

    def make(cls):
        def learner(batch, expected):
            with _skip_default_init():  # the real weights overwrite the random ones
                encoder = cls(view.vocab_size, families.position_embedding_matrix(model).shape[0], view.d_model,
                              view.n_heads, view.d_ff, view.n_layers, view.norm_eps,
                              view.type_vocab_size if view.has_token_type_embeddings else 0)
            _fill_encoder(encoder, model)
            encoder.eval()
            with torch.no_grad():
                return _Run(encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")),
                            encoder)
        return learner

    def oracle(batch, expected):
        return _Run(expected)

    def diagnose(got, expected, args, kwargs):
        batch, _ = args
        if not isinstance(got.out, torch.Tensor) or got.out.shape != expected.out.shape:
            shape = tuple(got.out.shape) if isinstance(got.out, torch.Tensor) else type(got.out).__name__
            return f"returned {shape}, expected the last hidden state {tuple(expected.out.shape)} = (B, T, C)"
        keep = batch["attention_mask"].bool()
        gap = (got.out - expected.out)[keep].abs().max().item()
        if gap <= 1e-4:
            return None
        for value, words in _encoder_variants(model, batch):
            if torch.allclose(got.out[keep], value[keep], atol=1e-4, rtol=0):
                return words
        return f"the last hidden state differs from the model's by up to {gap:.3g} at real tokens"

    return _run_piece(name, PostNormEncoder, references.PostNormEncoder, make, oracle, cases, diagnose, verbose)

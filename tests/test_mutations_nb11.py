"""Notebook 11's checkers fail typical wrong answers with a specific diagnosis; the references pass."""

from __future__ import annotations

import math

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.embeddings import l2_normalize, mean_pool
from course_utils.solutions import nb11 as solutions

pytestmark = pytest.mark.slow  # check_head_importance loads MiniLM

MODULE = "nb11"


def _bits(w):
    return -(torch.where(w > 0, w * w.clamp_min(1e-30).log2(), 0.0)).sum(-1).mean(-1)


def _naive_log(w):
    return -(w * w.log()).sum(-1).mean(-1)  # 0 * log 0 = NaN


def _summed_rows(w):
    return solutions.head_entropy(w) * w.shape[-2]


def _per_row(w):
    return -(torch.where(w > 0, w * w.clamp_min(1e-30).log(), 0.0)).sum(-1)


def _in_place(concat, head, num_heads):
    d = concat.shape[-1] // num_heads
    concat[..., head * d:(head + 1) * d] = 0
    return concat


def _strided(concat, head, num_heads):
    out = concat.clone()
    out[..., head::num_heads] = 0
    return out


def _wrong_width(concat, head, num_heads):
    out = concat.clone()
    out[..., head * num_heads:(head + 1) * num_heads] = 0  # num_heads columns, not d_head
    return out


def _importance(where="input", slice_="block", pool="mean", normalise=True, remove=True, cosine=False):
    def head_importance(model, inputs, out_proj, head, num_heads):
        def embed():
            hidden = model(**inputs).last_hidden_state
            pooled = mean_pool(hidden, inputs["attention_mask"]) if pool == "mean" else hidden.mean(1)
            return l2_normalize(pooled) if normalise else pooled

        def cols(width):
            d = width // num_heads
            return slice(head * d, (head + 1) * d) if slice_ == "block" else slice(head, width, num_heads)

        def before(module, args):
            x = args[0].clone()
            x[..., cols(x.shape[-1])] = 0
            return (x, *args[1:])

        def after(module, args, output):
            output = output.clone()
            output[..., cols(output.shape[-1])] = 0
            return output

        with torch.no_grad():
            intact = embed()
            handle = out_proj.register_forward_pre_hook(before) if where == "input" else out_proj.register_forward_hook(after)
            ablated = embed()
            if remove:
                handle.remove()
        cos = (intact * ablated).sum(-1).mean().item()
        return cos if cosine else 1 - cos

    return head_importance


MUTANTS = [
    Mutant("check_head_entropy", "bits", _bits, expect="bits"),
    Mutant("check_head_entropy", "0 log 0", _naive_log, expect="NaN"),
    Mutant("check_head_entropy", "summed over queries", _summed_rows, expect="summed over the query rows"),
    Mutant("check_head_entropy", "one value per row", _per_row, expect="one entropy per query row"),
    Mutant("check_head_entropy", "wrong sign", lambda w: -solutions.head_entropy(w), expect="wrong sign"),
    Mutant("check_zero_head", "in place", _in_place, expect="in place"),
    Mutant("check_zero_head", "strided columns", _strided, expect="contiguous"),
    Mutant("check_zero_head", "num_heads columns", _wrong_width, expect="expected d_head"),
    Mutant("check_head_importance", "strided slice", _importance(slice_="strided"), expect="every num_heads-th column"),
    Mutant("check_head_importance", "after the output projection", _importance(where="output"), expect="W_O's output"),
    Mutant("check_head_importance", "hook not removed", _importance(remove=False), expect="still registered"),
    Mutant("check_head_importance", "padding in the mean", _importance(pool="all"), expect="padding tokens"),
    Mutant("check_head_importance", "not normalised", _importance(normalise=False), expect="not normalised"),
    Mutant("check_head_importance", "cosine, not 1 - cosine", _importance(cosine=True), expect="1 - cosine"),
]
REFERENCES = {
    "check_head_entropy": solutions.head_entropy,
    "check_zero_head": solutions.zero_head,
    "check_head_importance": solutions.head_importance,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])


def test_model_is_intact_after_a_leaky_mutant():
    from course_utils.exercises.nb11 import IMPORTANCE_SENTENCES, _default_encoder

    model, tokenizer = _default_encoder()
    batch = tokenizer(list(IMPORTANCE_SENTENCES), return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).last_hidden_state
        run_mutant(MODULE, next(m for m in MUTANTS if m.name == "hook not removed"))
        after = model(**batch).last_hidden_state
    assert math.isclose(float((before - after).abs().max()), 0.0, abs_tol=1e-7)

"""Mutation tests for notebook 05's checkers: typical wrong answers fail with a specific diagnosis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mutation import Mutant, run_mutant, run_reference
from torch import nn

from course_utils.solutions import nb05 as solutions
from course_utils.solutions.nb03 import apply_rope

pytestmark = pytest.mark.slow  # check_gqa loads MiniLM and SmolLM2

MODULE = "nb05"


def slip_gqa(*, tile: bool = False, rope: bool = True, rope_v: bool = False, scale: bool = True,
             use_mask: bool = True, invert_mask: bool = False, cat_dim: int = 2,
             return_shared: bool = False, cache_unrotated: bool = False, softmax_dim: int = -1,
             names: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> type:
    """A GroupedQueryAttention with one classic slip switched on."""

    class SlipGQA(nn.Module):
        def __init__(self, d_model, n_heads, n_kv_heads, rope_base=10000.0, bias=False):
            super().__init__()
            self.h, self.kv, self.hd, self.base = n_heads, n_kv_heads, d_model // n_heads, rope_base
            for name, (fan_in, fan_out) in zip(names, ((d_model, n_heads * self.hd), (d_model, n_kv_heads * self.hd),
                                                       (d_model, n_kv_heads * self.hd), (n_heads * self.hd, d_model)),
                                               strict=True):
                setattr(self, name, nn.Linear(fan_in, fan_out, bias=bias))

        def forward(self, x, positions, mask=None, past_kv=None):
            q_proj, k_proj, v_proj, o_proj = (getattr(self, name) for name in names)
            B, T, _ = x.shape
            q = q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)
            k = k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
            v = v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
            k_plain = k
            if self.base is not None and rope:
                q, k = apply_rope(q, positions, self.base), apply_rope(k, positions, self.base)
                if rope_v:
                    v = apply_rope(v, positions, self.base)
            if past_kv is not None:
                k = torch.cat([past_kv[0], k], dim=cat_dim)
                v = torch.cat([past_kv[1], v], dim=cat_dim)
                k_plain = torch.cat([past_kv[0], k_plain], dim=cat_dim)
            group = self.h // self.kv
            if tile:
                k_all, v_all = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
            else:
                k_all, v_all = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            scores = q @ k_all.transpose(-2, -1) / (math.sqrt(self.hd) if scale else 1.0)
            if mask is not None and use_mask:
                scores = scores.masked_fill(mask if invert_mask else ~mask, float("-inf"))
            out = (scores.softmax(dim=softmax_dim) @ v_all).transpose(1, 2).reshape(B, T, -1)
            cache = (k_all, v_all) if return_shared else ((k_plain if cache_unrotated else k), v)
            return o_proj(out), cache

    return SlipGQA


def _split_permuted(x, h):
    b, t, d = x.shape
    return x.view(b, t, d // h, h).permute(0, 3, 1, 2)  # head h takes every H-th dimension


MUTANTS = [
    # split_heads
    Mutant("check_split_heads", "view without transpose", lambda x, h: x.view(x.shape[0], x.shape[1], h, -1),
           expect="head axis must come before the time axis"),
    Mutant("check_split_heads", "reshape straight to (B, H, T, d)",
           lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), expect="mixes positions"),
    Mutant("check_split_heads", "strided heads", _split_permuted, expect="head h should hold"),
    Mutant("check_split_heads", "returns numpy", lambda x, h: solutions.split_heads(x, h).numpy(),
           expect="expected a tensor"),
    # repeat_kv_heads
    Mutant("check_repeat_kv_heads", ".repeat instead of repeat_interleave",
           lambda kv, h: kv.repeat(1, h // kv.shape[1], 1, 1), expect="tiled as a block"),
    Mutant("check_repeat_kv_heads", "no repetition", lambda kv, h: kv, expect="shape"),
    Mutant("check_repeat_kv_heads", "heads in reverse order",
           lambda kv, h: solutions.repeat_kv_heads(kv, h).flip(1), expect="should read KV head h // (H // Hkv)"),
    Mutant("check_repeat_kv_heads", "returns numpy", lambda kv, h: np.asarray(solutions.repeat_kv_heads(kv, h)),
           expect="expected a tensor"),
    # GroupedQueryAttention
    Mutant("check_gqa", ".repeat (h % 3) instead of repeat_interleave (h // 3)", slip_gqa(tile=True),
           expect="h % n_kv_heads"),
    Mutant("check_gqa", "RoPE forgotten", slip_gqa(rope=False), expect="RoPE is missing"),
    Mutant("check_gqa", "RoPE on v too", slip_gqa(rope_v=True), expect="applied to v too"),
    Mutant("check_gqa", "no √d", slip_gqa(scale=False), expect="not divided by √head_dim"),
    Mutant("check_gqa", "causal mask ignored", slip_gqa(use_mask=False), expect="mask is not applied"),
    Mutant("check_gqa", "mask polarity inverted", slip_gqa(invert_mask=True), expect="mask inverted"),
    Mutant("check_gqa", "past concatenated along the head axis", slip_gqa(cat_dim=1), expect="time axis (dim 2)"),
    Mutant("check_gqa", "returns the shared (repeated) k/v", slip_gqa(return_shared=True), expect="before sharing"),
    Mutant("check_gqa", "caches keys before RoPE", slip_gqa(cache_unrotated=True), expect="not rotated"),
    Mutant("check_gqa", "softmax over the query axis", slip_gqa(softmax_dim=-2), expect="wrong axis"),
    Mutant("check_gqa", "BERT-style names", slip_gqa(names=("query", "key", "value", "out")),
           expect="named q_proj, k_proj, v_proj, o_proj"),
]

REFERENCES = {
    "check_split_heads": solutions.split_heads,
    "check_repeat_kv_heads": solutions.repeat_kv_heads,
    "check_gqa": solutions.GroupedQueryAttention,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])


def test_the_slip_class_without_slips_passes():
    """The mutants' base class is right when no slip is switched on (so each failure is the slip's)."""
    run_reference(MODULE, "check_gqa", slip_gqa())

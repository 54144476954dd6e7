"""Mutation tests for notebook 03's checkers: typical wrong positional encodings fail, specifically."""

from __future__ import annotations

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.positional import apply_rope_adjacent_pairs
from course_utils.solutions import nb03 as solutions

pytestmark = pytest.mark.slow  # check_apply_rope loads SmolLM2

MODULE = "nb03"


def _table(seq_len, d_model, base=10000.0, *, exponent_i=False, start=0):
    positions = torch.arange(start, start + seq_len, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = positions / base ** ((i if exponent_i else 2 * i) / d_model)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(seq_len, d_model).float()


def sin_cos_swapped(seq_len, d_model, base=10000.0):
    pe = _table(seq_len, d_model, base)
    return torch.stack((pe[:, 1::2], pe[:, 0::2]), dim=-1).reshape(seq_len, d_model)


def sines_then_cosines(seq_len, d_model, base=10000.0):
    pe = _table(seq_len, d_model, base)
    return torch.cat((pe[:, 0::2], pe[:, 1::2]), dim=1)


def exponent_i_over_d(seq_len, d_model, base=10000.0):
    return _table(seq_len, d_model, base, exponent_i=True)


def positions_from_one(seq_len, d_model, base=10000.0):
    return _table(seq_len, d_model, base, start=1)


def base_ignored(seq_len, d_model, base=10000.0):
    return _table(seq_len, d_model)


def _rope(x, positions, base, *, swap=False, exponent_i=False, sign=1.0, shift=0):
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float32)
    inv_freq = 1.0 / base ** ((i if exponent_i else 2 * i) / d)
    angles = (positions + shift).float()[:, None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = sign * torch.cat((-x2, x1), dim=-1)
    cos, sin = (angles.sin(), angles.cos()) if swap else (angles.cos(), angles.sin())
    return x * cos + rotated * sin


def rope_sin_cos_swapped(x, positions, base=10000.0):
    return _rope(x, positions, base, swap=True)


def rope_exponent_i(x, positions, base=10000.0):
    return _rope(x, positions, base, exponent_i=True)


def rope_sign_flipped(x, positions, base=10000.0):
    return _rope(x, positions, base, sign=-1.0)


def rope_off_by_one(x, positions, base=10000.0):
    return _rope(x, positions, base, shift=1)


def rope_default_base(x, positions, base=10000.0):
    return _rope(x, positions, 10000.0)


def rope_identity(x, positions, base=10000.0):
    return x.clone()


MUTANTS = [
    Mutant("check_sinusoidal_encoding", "sin and cos swapped", sin_cos_swapped, expect="swapped"),
    Mutant("check_sinusoidal_encoding", "all sines, then all cosines", sines_then_cosines, expect="interleave"),
    Mutant("check_sinusoidal_encoding", "exponent i/d instead of 2i/d", exponent_i_over_d, expect="not base^(i / d_model)"),
    Mutant("check_sinusoidal_encoding", "positions start at 1", positions_from_one, expect="off by one"),
    Mutant("check_sinusoidal_encoding", "base ignored", base_ignored, expect="base argument is ignored"),
    Mutant("check_apply_rope", "adjacent pairs", apply_rope_adjacent_pairs, expect="adjacent pairs"),
    Mutant("check_apply_rope", "sin and cos swapped", rope_sin_cos_swapped, expect="cos and sin are swapped"),
    Mutant("check_apply_rope", "frequency exponent i/d", rope_exponent_i, expect="not base^(-i/d)"),
    Mutant("check_apply_rope", "rotate_half sign flipped", rope_sign_flipped, expect="wrong way"),
    Mutant("check_apply_rope", "positions off by one", rope_off_by_one, expect="off by one"),
    Mutant("check_apply_rope", "base ignored", rope_default_base, expect="base argument is ignored"),
    Mutant("check_apply_rope", "no rotation", rope_identity, expect="nothing was rotated"),
]
REFERENCES = {
    "check_sinusoidal_encoding": solutions.sinusoidal_encoding,
    "check_apply_rope": solutions.apply_rope,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])

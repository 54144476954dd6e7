"""Mutation tests for notebook 12's checkers: typical wrong answers fail with a specific diagnosis."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import Mutant, run_mutant, run_reference
from torch import nn

from course_utils.solutions import nb12 as solutions

MODULE = "nb12"


# --- lr_at -------------------------------------------------------------------------------

def _cosine(step, total, peak, warmup, low, denominator):
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / denominator))


def warmup_late(step, total, peak, warmup, low):
    return peak * step / warmup if step < warmup else solutions.lr_at(step, total, peak, warmup, low)


def warmup_inclusive(step, total, peak, warmup, low):
    if warmup and step <= warmup:
        return peak * (step + 1) / warmup
    return solutions.lr_at(step, total, peak, warmup, low)


def cosine_to_zero(step, total, peak, warmup, low):
    return solutions.lr_at(step, total, peak, warmup, 0.0)


def cosine_short(step, total, peak, warmup, low):
    if step < warmup:
        return peak * (step + 1) / warmup
    return _cosine(step, total, peak, warmup, low, max(1, total - warmup))


def no_floor_of_one(step, total, peak, warmup, low):
    if step < warmup:
        return peak * (step + 1) / warmup
    return _cosine(step, total, peak, warmup, low, total - warmup - 1)


def min_lr_as_ratio(step, total, peak, warmup, low):
    return solutions.lr_at(step, total, peak, warmup, low * peak)


def linear_decay(step, total, peak, warmup, low):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak + (low - peak) * (step - warmup) / max(1, total - warmup - 1)


# --- train_step --------------------------------------------------------------------------

def slip_step(*, set_lr=True, shift="right", zero="end", clip="before"):
    """A training step with one slip: ``zero`` in {"end", "start", "between", "never"},
    ``clip`` in {"before", "after", "never"}, ``shift`` in {"right", "none", "whole"}."""

    def train_step(model, optimizer, tokens, lr, grad_clip=1.0):
        if set_lr:
            for group in optimizer.param_groups:
                group["lr"] = lr
        inputs, targets = {"right": (tokens[:, :-1], tokens[:, 1:]),
                           "none": (tokens[:, :-1], tokens[:, :-1]),
                           "whole": (tokens, tokens)}[shift]
        if zero == "start":
            optimizer.zero_grad()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        if zero == "between":
            optimizer.zero_grad()
        if clip == "before":
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if clip == "after":
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if zero == "end":
            optimizer.zero_grad()
        return loss.item()

    return train_step


def summed_loss(model, optimizer, tokens, lr, grad_clip=1.0):
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="sum")
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


# --- induction score ---------------------------------------------------------------------

def _second_copy(start, length):
    return torch.arange(start + length, start + 2 * length)


def induction_duplicate(weights, start, length):
    q = _second_copy(start, length)
    return weights[:, q, q - length].mean(-1)


def induction_previous(weights, start, length):
    q = _second_copy(start, length)
    return weights[:, q, q - 1].mean(-1)


def induction_with_last(weights, start, length):
    q = _second_copy(start, length)
    return weights[:, q, q - length + 1].mean(-1)


def induction_first_copy(weights, start, length):
    q = torch.arange(start, start + length - 1)
    return weights[:, q, (q - length + 1).clamp_min(0)].mean(-1)


MUTANTS = [
    Mutant("check_lr_at", "warm-up starts at 0", warmup_late, expect="one step late"),
    Mutant("check_lr_at", "warm-up until step == warmup_steps", warmup_inclusive, expect="still warming up"),
    Mutant("check_lr_at", "cosine to 0 instead of min_lr", cosine_to_zero, expect="decays to 0 instead of to min_lr"),
    Mutant("check_lr_at", "cosine progress off by one", cosine_short, expect="does not reach min_lr at the last step"),
    Mutant("check_lr_at", "no max(1, …) in the denominator", no_floor_of_one, expect="division by zero"),
    Mutant("check_lr_at", "min_lr read as a ratio", min_lr_as_ratio, expect="not a fraction of peak_lr"),
    Mutant("check_lr_at", "linear decay", linear_decay, expect="decays linearly"),
    Mutant("check_train_step", "no zero_grad", slip_step(zero="never"), expect="gradients accumulate"),
    Mutant("check_train_step", "clip after step", slip_step(clip="after"), expect="unclipped gradients"),
    Mutant("check_train_step", "no clipping", slip_step(clip="never"), expect="unclipped gradients"),
    Mutant("check_train_step", "targets not shifted", slip_step(shift="none"), expect="targets are not shifted"),
    Mutant("check_train_step", "whole window as input and target", slip_step(shift="whole"),
           expect="nothing is shifted"),
    Mutant("check_train_step", "lr not set", slip_step(set_lr=False), expect="but lr ="),
    Mutant("check_train_step", "zero_grad between backward and step", slip_step(zero="between"),
           expect="cleared between backward() and step()"),
    Mutant("check_train_step", "summed loss", summed_loss, expect="summed"),
    Mutant("check_induction_score", "duplicate-token offset", induction_duplicate, expect="duplicate-token"),
    Mutant("check_induction_score", "previous-token offset", induction_previous, expect="previous-token score"),
    Mutant("check_induction_score", "last query included", induction_with_last, expect="last query"),
    Mutant("check_induction_score", "queries of the first copy", induction_first_copy, expect="not the first"),
]

REFERENCES = {
    "check_lr_at": solutions.lr_at,
    "check_train_step": solutions.train_step,
    "check_induction_score": solutions.induction_score,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])

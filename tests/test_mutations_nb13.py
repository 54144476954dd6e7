"""Mutation tests for notebook 13's checker: typical slips in assembling SmolLM2 fail with a
specific diagnosis (each mutant is the reference with one slip, built on the course's pieces)."""

from __future__ import annotations

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference
from torch import nn

from course_utils.solutions import nb13 as solutions
from course_utils.solutions.nb06 import causal_mask
from course_utils.solutions.nb08 import LlamaBlock

pytestmark = pytest.mark.slow  # the checker loads SmolLM2

MODULE = "nb13"


def slip_model(*, untied=False, offset=True, mask=True, positions=True, order=1, own_cache=True,
               use_cache=True, final_norm=True, rope_from_config=True) -> type:
    """MySmolLM2 with one classic slip switched on."""

    class SlipSmolLM2(solutions.MySmolLM2):
        def __init__(self, config):
            super().__init__(config)
            if untied:
                self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            if not rope_from_config:  # every block built with LlamaBlock's default base
                self.layers = nn.ModuleList(
                    LlamaBlock(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                               config.intermediate_size, config.rms_norm_eps)
                    for _ in range(config.num_hidden_layers))

        def forward(self, ids, positions_in, past=None):
            T = ids.shape[1]
            cached = 0 if past is None else past[0][0].shape[2]
            attend = (causal_mask(cached + T)[cached:] if offset else causal_mask(T)) if mask else None
            where = positions_in if positions else torch.arange(T)
            x = self.embed_tokens(ids)
            indices = list(range(len(self.layers)))[::order]
            new_past = [None] * len(self.layers)
            for i in indices:
                layer_past = None if past is None or not use_cache else past[i if own_cache else 0]
                x, new_past[i] = self.layers[i](x, where, attend, layer_past)
            return self.lm_head(self.norm(x) if final_norm else x), new_past

    return SlipSmolLM2


class NoLayersAttribute(nn.Module):
    """The blocks kept under another name (``blocks``)."""

    def __init__(self, config):
        super().__init__()
        reference = solutions.MySmolLM2(config)
        self.embed_tokens, self.norm, self.lm_head = reference.embed_tokens, reference.norm, reference.lm_head
        self.blocks = reference.layers

    def forward(self, ids, positions, past=None):
        raise AssertionError("never reached")


MUTANTS = [
    Mutant("check_my_smollm2", "lm_head not tied", slip_model(untied=True), expect="not tied"),
    Mutant("check_my_smollm2", "mask not offset for the cache", slip_model(offset=False), expect="must be (5, 12)"),
    Mutant("check_my_smollm2", "no causal mask", slip_model(mask=False), expect="mask=None"),
    Mutant("check_my_smollm2", "positions restarted at 0", slip_model(positions=False), expect="pass the positions through"),
    Mutant("check_my_smollm2", "layers in reverse order", slip_model(order=-1), expect="in the order [2, 1, 0]"),
    Mutant("check_my_smollm2", "cache not passed to the layers", slip_model(use_cache=False), expect="past_kv=None"),
    Mutant("check_my_smollm2", "every layer reads layer 0's cache", slip_model(own_cache=False),
           expect="got the cache of layer 0"),
    Mutant("check_my_smollm2", "final norm missing", slip_model(final_norm=False), expect="final norm"),
    Mutant("check_my_smollm2", "RoPE base not read from the config", slip_model(rope_from_config=False),
           expect="rope_theta"),
    Mutant("check_my_smollm2", "submodule under another name", NoLayersAttribute, expect="no attribute layers"),
]

REFERENCES = {"check_my_smollm2": solutions.MySmolLM2}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])

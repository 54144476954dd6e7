"""Notebook 13 (the capstone): the reference ``MySmolLM2``, loaded with SmolLM2's checkpoint,
equals Hugging Face's ``LlamaForCausalLM`` (logits, cached decoding, greedy tokens); the weight
loader refuses a model with the wrong names; the checker reports an unfilled stub."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.exercises import nb13
from course_utils.solutions import nb13 as sol13
from course_utils.solutions.nb08 import generate_greedy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("learner_mode")]  # loads SmolLM2


@pytest.fixture(scope="module")
def assembled(decoder):
    model = sol13.MySmolLM2(decoder.model.config)
    nb13.load_smollm2_weights(model, decoder.model)
    return model.eval()


def test_reference_equals_transformers(decoder, assembled):
    ids = torch.tensor([decoder.tokenizer("The capital of France is a city that")["input_ids"]])
    with torch.no_grad():
        mine, past = assembled(ids, torch.arange(ids.shape[1]))
        real = decoder.model(ids).logits
    torch.testing.assert_close(mine, real, atol=1e-4, rtol=0)
    assert nb13.is_tied(assembled)
    assert sum(p.numel() for p in assembled.parameters()) == sum(p.numel() for p in decoder.model.parameters())
    config = decoder.model.config
    assert len(past) == config.num_hidden_layers
    assert past[0][0].shape == (1, config.num_key_value_heads, ids.shape[1],
                                config.hidden_size // config.num_attention_heads)


def test_cached_decoding_equals_generate(decoder, assembled):
    prompt = decoder.tokenizer("Water boils at")["input_ids"]

    @torch.no_grad()
    def step(ids, positions, past):
        return assembled(ids, positions, past)

    mine = generate_greedy(step, prompt, 8)
    with torch.no_grad():
        out = decoder.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                     max_new_tokens=8, do_sample=False)
    assert mine == out[0, len(prompt):].tolist()


def test_loader_names_what_is_wrong(decoder):
    class Renamed(sol13.MySmolLM2):
        def __init__(self, config):
            super().__init__(config)
            self.final_norm = self.norm
            del self.norm

    config = nb13._cut_config(decoder.model.config, 1)
    with pytest.raises(nb13.WeightLoadError, match="final_norm.weight") as error:
        nb13.load_smollm2_weights(Renamed(config), decoder.model, 1)
    assert "norm.weight" in str(error.value)


def test_checker_stub_and_fill(decoder, monkeypatch):
    class Stub(nn.Module):
        def __init__(self, config):
            raise NotImplementedError

    result = nb13.check_my_smollm2(Stub, decoder.model)
    assert not result.passed and "not attempted" in result.message
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    result = nb13.check_my_smollm2(Stub, decoder.model)
    assert result.passed and result.used_reference

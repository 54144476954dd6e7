"""Decoding strategies from scratch (notebook 08b) = transformers' processors and generate().

Fast tests: each filter against the transformers warper it re-implements, on random
logits; every strategy against ``model.generate()`` on a tiny random Llama (several seeds,
EOS reachable). Slow tests: the same equalities on SmolLM2 with several prompts.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from course_utils import decoding as D
from course_utils.generation import ScratchLlama

EOS = 2


def random_logits(seed: int, batch: int = 4, vocab: int = 300, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * scale


# ------------------------------------------------------------ each filter = its warper
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filters_equal_transformers_warpers(seed):
    logits = random_logits(seed)
    ids = torch.randint(0, 300, (4, 9), generator=torch.Generator().manual_seed(seed))
    cases = [
        (D.apply_temperature(logits, 0.6), TemperatureLogitsWarper(0.6)(ids, logits)),
        (D.top_k_filter(logits, 7), TopKLogitsWarper(7)(ids, logits)),
        (D.top_p_filter(logits, 0.8), TopPLogitsWarper(0.8)(ids, logits)),
        (D.top_p_filter(logits, 1e-6), TopPLogitsWarper(1e-6)(ids, logits)),
        (D.min_p_filter(logits, 0.05), MinPLogitsWarper(0.05)(ids, logits)),
        (D.apply_repetition_penalty(logits, ids, 1.7),
         RepetitionPenaltyLogitsProcessor(1.7)(ids, logits.clone())),
    ]
    for mine, reference in cases:
        assert torch.equal(torch.isinf(mine), torch.isinf(reference))  # same tokens removed
        torch.testing.assert_close(mine, reference, atol=0, rtol=0)


def test_filters_keep_what_they_promise():
    logits = random_logits(5, batch=3, vocab=1000)
    kept = torch.isfinite(D.top_k_filter(logits, 10)).sum(dim=-1)
    assert kept.tolist() == [10, 10, 10]
    probs = logits.softmax(dim=-1)
    nucleus = torch.isfinite(D.top_p_filter(logits, 0.5))
    mass = (probs * nucleus).sum(dim=-1)
    assert (mass >= 0.5).all()  # the nucleus reaches p ...
    smallest_kept = probs.masked_fill(~nucleus, 2.0).amin(dim=-1)
    assert ((mass - smallest_kept) < 0.5).all()  # ... and is the smallest set that does
    minp = torch.isfinite(D.min_p_filter(logits, 0.2))
    assert torch.equal(minp, probs >= 0.2 * probs.amax(dim=-1, keepdim=True))
    greedy = D.filter_logits(logits, temperature=0)
    assert torch.equal(torch.isfinite(greedy).nonzero()[:, 1], logits.argmax(dim=-1))
    # top_p = 1 and min_p = 0 remove nothing; a filter never removes the top token.
    assert torch.equal(D.filter_logits(logits, top_p=1.0, min_p=0.0), logits)
    for filtered in (D.top_p_filter(logits, 1e-9), D.min_p_filter(logits, 1.0)):
        assert torch.isfinite(filtered.gather(1, logits.argmax(-1, keepdim=True))).all()


def test_filter_logits_chains_in_transformers_order():
    logits = random_logits(7)
    ids = torch.zeros(4, 1, dtype=torch.long)
    reference = logits
    for warper in (TemperatureLogitsWarper(1.5), TopKLogitsWarper(40), TopPLogitsWarper(0.7),
                   MinPLogitsWarper(0.1)):
        reference = warper(ids, reference)
    mine = D.filter_logits(logits, temperature=1.5, top_k=40, top_p=0.7, min_p=0.1)
    torch.testing.assert_close(mine, reference, atol=0, rtol=0)
    # A different order gives a different distribution: the order is part of the definition.
    swapped = D.top_k_filter(D.min_p_filter(D.top_p_filter(logits, 0.7), 0.1), 40) / 1.5
    assert not torch.equal(torch.isfinite(swapped), torch.isfinite(mine))


def test_sample_next_draws_from_the_filtered_distribution():
    logits = random_logits(3, batch=1, vocab=50)
    filtered = D.filter_logits(logits, top_k=5)
    draws = torch.stack([D.sample_next(logits, top_k=5, generator=torch.Generator().manual_seed(s))
                         for s in range(400)])  # (400, 1)
    assert torch.isfinite(filtered[0, draws[:, 0]]).all()  # only kept tokens are drawn
    frequencies = torch.bincount(draws[:, 0], minlength=50).float() / 400
    assert (frequencies - filtered.softmax(-1)[0]).abs().max() < 0.08
    # Same generator seed -> the same draw as multinomial on transformers' global RNG.
    torch.manual_seed(11)
    reference = torch.multinomial(TopKLogitsWarper(5)(None, logits).softmax(-1), 1).squeeze(1)
    assert torch.equal(D.sample_next(logits, top_k=5, generator=torch.Generator().manual_seed(11)), reference)
    assert torch.equal(D.sample_next(random_logits(1), temperature=0), random_logits(1).argmax(-1))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
     ({"top_k": 2.5}, "top_k"), ({"temperature": -0.1}, "temperature"),
     ({"temperature": float("nan")}, "temperature"), ({"min_p": 1.2}, "min_p"),
     ({"repetition_penalty": 0.0}, "repetition_penalty"), ({"num_beams": 0}, "num_beams"),
     ({"length_penalty": float("inf")}, "length_penalty")],
)
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        D.check_settings(**kwargs)
    model = tiny_llama()
    with pytest.raises(ValueError, match=name):
        D.generate(model, torch.tensor([[1, 5, 7]]), 3, do_sample=True, **kwargs)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        D.filter_logits(torch.randn(5), top_k=2)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        D.sample_next(torch.randn(1, 5), top_n=2)
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        D.generate(model, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        D.generate(model, torch.tensor([[1, 2]]), 0)
    with pytest.raises(ValueError, match="beam sampling"):
        D.generate(model, torch.tensor([[1, 2]]), 3, do_sample=True, num_beams=2)


# ---------------------------------------------- whole strategies = generate(), tiny model
def tiny_llama(seed: int = 0, eos_boost: float = 0.0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
        model.lm_head.weight[EOS] += eos_boost  # EOS reachable within a few steps
    return model


def reference_generate(model, ids, max_new_tokens, **kwargs):
    """``model.generate`` with every default that could differ stated explicitly."""
    settings = {"do_sample": False, "num_beams": 1, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
    settings.update(kwargs)
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                              eos_token_id=EOS, pad_token_id=0, output_scores=True,
                              return_dict_in_generate=True, **settings)


def as_mine(kwargs: dict) -> dict:
    return {key: (None if key == "top_k" and value == 0 else value) for key, value in kwargs.items()}


PROMPTS = [torch.tensor([[1, 17, 42, 5, 63, 8, 30]]), torch.tensor([[1, 90]]), torch.tensor([[4, 4, 4, 4]])]


@pytest.mark.parametrize("eos_boost", [0.0, 1.5])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_and_beam_search_equal_generate(prompt, eos_boost):
    model = tiny_llama(eos_boost=eos_boost)
    settings = [{}, {"repetition_penalty": 1.4}, {"num_beams": 3}, {"num_beams": 4, "length_penalty": 0.0},
                {"num_beams": 2, "length_penalty": 2.0}, {"num_beams": 3, "repetition_penalty": 1.2}]
    ended_early = stopped_early = 0
    for kwargs in settings:
        reference = reference_generate(model, prompt, 12, **kwargs).sequences
        mine = D.generate(model, prompt, 12, eos_token_id=EOS, **as_mine(kwargs))
        assert torch.equal(mine.ids, reference), kwargs
        ended_early += mine.ids.shape[1] < prompt.shape[1] + 12
        if kwargs.get("num_beams", 1) > 1:  # no running beam could win: stopped before the limit
            stopped_early += len(mine.scores) < 12
    if eos_boost:  # the EOS paths (finished beams, the early-stop test) were exercised
        assert ended_early > 0 and stopped_early > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_equals_generate_step_by_step(seed):
    model = tiny_llama(eos_boost=0.5)
    prompt = PROMPTS[seed % len(PROMPTS)]
    settings = [{"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.8, "temperature": 1.2},
                {"min_p": 0.15}, {"top_k": 20, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.3}]
    for kwargs in settings:
        torch.manual_seed(seed)
        reference = reference_generate(model, prompt, 10, do_sample=True, **kwargs)
        mine = D.generate(model, prompt, 10, do_sample=True, eos_token_id=EOS,
                          generator=torch.Generator().manual_seed(seed), **as_mine(kwargs))
        assert torch.equal(mine.ids, reference.sequences), kwargs
        assert len(mine.scores) == len(reference.scores)
        for ours, theirs in zip(mine.scores, reference.scores, strict=True):
            assert torch.equal(torch.isinf(ours), torch.isinf(theirs))  # same tokens removed
            torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=1e-6, rtol=0)


def test_scratch_llama_and_a_plain_callable_decode_like_the_model():
    model = tiny_llama(eos_boost=1.0)
    prompt = PROMPTS[0]
    for kwargs in ({}, {"num_beams": 3}):
        reference = reference_generate(model, prompt, 10, **kwargs).sequences
        assert torch.equal(D.generate(ScratchLlama(model), prompt, 10, eos_token_id=EOS, **kwargs).ids,
                           reference)

    def plain(ids):  # no cache: the whole prefix every step
        return model(ids).logits

    assert torch.equal(D.generate(plain, prompt, 10, eos_token_id=EOS).ids, reference_generate(model, prompt, 10).sequences)


def test_beam_search_beats_greedy_on_sequence_log_probability():
    model = tiny_llama(seed=4)
    prompt = PROMPTS[0]

    def log_prob(ids):
        with torch.no_grad():
            logp = model(ids).logits.log_softmax(-1)[0, prompt.shape[1] - 1:-1]
        return logp.gather(1, ids[0, prompt.shape[1]:, None]).sum().item()

    greedy = D.generate(model, prompt, 8).ids
    beam = D.generate(model, prompt, 8, num_beams=4, length_penalty=0.0)
    assert log_prob(beam.ids) >= log_prob(greedy) - 1e-5
    assert abs(beam.beam_score - log_prob(beam.ids)) < 1e-4  # its score is that log-probability


# ------------------------------------------------------------------ SmolLM2, slow
SMOL_PROMPTS = ["The capital of France is", "Once upon a time, a little robot", "def fibonacci(n):"]


@pytest.mark.slow
@pytest.mark.parametrize("text", SMOL_PROMPTS)
def test_every_strategy_equals_generate_on_smollm2(decoder, text):
    model, tokenizer = decoder
    prompt = tokenizer(text, return_tensors="pt").input_ids
    eos = tokenizer.eos_token_id
    deterministic = [{}, {"repetition_penalty": 1.3}, {"num_beams": 3}, {"num_beams": 2, "length_penalty": 0.0}]
    sampled = [{"temperature": 0.8}, {"top_k": 20}, {"top_p": 0.9}, {"min_p": 0.1, "temperature": 1.3}]
    for kwargs in deterministic + [dict(s, do_sample=True) for s in sampled]:
        torch.manual_seed(0)
        settings = {"do_sample": False, "num_beams": 1, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
        settings.update(kwargs)
        with torch.no_grad():
            reference = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                       eos_token_id=eos, pad_token_id=eos, output_scores=True,
                                       return_dict_in_generate=True, **settings)
        mine = D.generate(model, prompt, 6, eos_token_id=eos, generator=torch.Generator().manual_seed(0),
                          **as_mine(kwargs))
        assert torch.equal(mine.ids, reference.sequences), (text, kwargs)
        if kwargs.get("do_sample"):
            for ours, theirs in zip(mine.scores, reference.scores, strict=True):
                torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_beam_search_finishes_at_eos_like_generate_on_smollm2(decoder):
    model, tokenizer = decoder
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    prompt = prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        reference = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                   num_beams=3, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    mine = D.generate(model, prompt, 12, num_beams=3, eos_token_id=eos)
    assert torch.equal(mine.ids, reference)
    assert mine.ids[0, -1].item() == eos and mine.ids.shape[1] < prompt.shape[1] + 12


# ------------------------------------------------------------------- the exercise
def test_top_p_exercise_checker_passes_the_reference_and_names_typical_mistakes(monkeypatch):
    from course_utils.exercises.nb08b import check_top_p_filter

    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")  # judge the function given
    assert check_top_p_filter(D.top_p_filter).passed

    def stub(logits, top_p):
        raise NotImplementedError

    result = check_top_p_filter(stub)
    assert not result.passed and "not attempted" in result.message

    def one_short(logits, top_p):  # keeps only tokens whose running sum stays <= top_p
        probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
        keep_sorted = probs.cumsum(-1) <= top_p
        keep_sorted[:, 0] = True
        keep = keep_sorted.scatter(1, order, keep_sorted)
        return logits.masked_fill(~keep, float("-inf"))

    def nothing_removed(logits, top_p):
        return logits.clone()

    for wrong, words in ((one_short, "one token short"), (nothing_removed, "nothing was removed")):
        result = check_top_p_filter(wrong)
        assert not result.passed and words in result.message, result.message

"""Hand-written greedy decoding and KV cache (notebook 08) = transformers, on tiny models.

Also the notebook's hub parameters: a model *name* pointing at a local directory saved
from a small config loads through ``course_utils.models`` / ``load_seq2seq`` and runs the
notebook's code paths offline.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from course_utils.generation import ScratchLlama, greedy_generate, scratch_greedy
from course_utils.kv_cache import KVCache, kv_cache_bytes
from course_utils.solutions.nb08 import llama_param_count

EOS = 2


def tiny_llama(tie: bool = False, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        rope_theta=500.0, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=EOS,
        pad_token_id=0, attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger random weights: sharper logits, no near-ties in argmax
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture
def prompt() -> torch.Tensor:
    return torch.tensor([[1, 17, 42, 5, 63, 8, 30]])  # (1, 7)


def test_scratch_forward_equals_the_model(model):
    scratch = ScratchLlama(model)
    ids = torch.randint(3, 97, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scratch(ids), model(ids).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(scratch(ids, last_only=True), model(ids).logits[:, -1:],
                                   atol=1e-5, rtol=0)


def test_scratch_handles_tied_embeddings_and_the_real_head_count():
    tied = tiny_llama(tie=True, seed=1)
    assert sum(p.numel() for p in tied.parameters()) == llama_param_count(tied.config)
    ids = torch.tensor([[4, 9, 16, 25]])
    with torch.no_grad():
        torch.testing.assert_close(ScratchLlama(tied)(ids), tied(ids).logits, atol=1e-5, rtol=0)


def test_cached_forward_in_pieces_equals_one_full_forward(model, prompt):
    scratch = ScratchLlama(model)
    full = scratch(prompt)  # (1, 7, V)
    cache = scratch.new_cache()
    pieces = [scratch(prompt[:, :4], cache)] + [scratch(prompt[:, t:t + 1], cache) for t in range(4, 7)]
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_the_cache_is_actually_read(model, prompt):
    scratch = ScratchLlama(model)
    cache = scratch.new_cache()
    scratch(prompt[:, :-1], cache)
    cache.values = [torch.zeros_like(v) for v in cache.values]  # corrupt what was cached
    corrupted = scratch(prompt[:, -1:], cache)
    assert (corrupted - scratch(prompt)[:, -1:]).abs().max() > 1e-2


def test_hand_written_greedy_equals_generate(model, prompt):
    with torch.no_grad():
        reference = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                   do_sample=False, pad_token_id=0)
    assert reference.shape[1] > prompt.shape[1] + 5
    by_hand = greedy_generate(model, prompt, 20, eos_token_id=EOS)
    assert torch.equal(by_hand.ids, reference)
    assert len(by_hand.step_seconds) == reference.shape[1] - prompt.shape[1]
    for use_cache in (False, True):
        scratch = scratch_greedy(ScratchLlama(model), prompt, 20, use_cache=use_cache, eos_token_id=EOS)
        assert torch.equal(scratch.ids, reference), f"use_cache={use_cache}"


def test_greedy_stops_right_after_eos():
    model = tiny_llama(seed=3)
    with torch.no_grad():  # make EOS the most likely next token everywhere
        model.lm_head.weight[EOS] += 50.0
    prompt = torch.tensor([[5, 6, 7]])
    for result in (greedy_generate(model, prompt, 10, eos_token_id=EOS),
                   scratch_greedy(ScratchLlama(model), prompt, 10, eos_token_id=EOS)):
        assert result.ids.tolist() == [[5, 6, 7, EOS]]
    assert scratch_greedy(ScratchLlama(model), prompt, 4).ids.shape == (1, 7)  # no eos: runs on


def test_kv_cache_memory_matches_the_formula(model, prompt):
    scratch = ScratchLlama(model)
    cache = scratch.new_cache()
    scratch(prompt, cache)
    assert cache.nbytes() == kv_cache_bytes(model.config, prompt.shape[1]) == 2 * 2 * 2 * 7 * 8 * 4
    cache.reorder(torch.tensor([0, 0, 0]))  # beam search: three beams share one parent
    assert cache.length == 7 and cache.nbytes() == kv_cache_bytes(model.config, 7, batch=3)


def test_kv_cache_bytes_reads_any_config_and_refuses_bad_values(model):
    from types import SimpleNamespace

    # Fallbacks: no num_key_value_heads -> every head is cached; no head_dim -> hidden // heads.
    plain = SimpleNamespace(num_hidden_layers=3, num_attention_heads=4, hidden_size=32)
    assert kv_cache_bytes(plain, 10) == 2 * 3 * 4 * 10 * 8 * 4
    assert kv_cache_bytes(plain, 10, bytes_per_value=2) * 2 == kv_cache_bytes(plain, 10)
    assert kv_cache_bytes(model.config, 5) * 3 == kv_cache_bytes(model.config, 5 * 3)  # linear in T
    # Grouped-query attention: SmolLM2's 3 KV heads of 9 cost a third of full multi-head.
    from transformers import LlamaConfig as Config

    smol = Config(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  hidden_size=576, head_dim=64)
    full = Config(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=9,
                  hidden_size=576, head_dim=64)
    assert kv_cache_bytes(smol, 1, bytes_per_value=2) == 23_040 and kv_cache_bytes(full, 2048) == 3 * kv_cache_bytes(smol, 2048)
    for kwargs, name in (({"seq_len": 0}, "seq_len"), ({"seq_len": 4, "batch": 0}, "batch"),
                         ({"seq_len": 4, "bytes_per_value": 1.5}, "bytes_per_value")):
        with pytest.raises(ValueError, match=name):
            kv_cache_bytes(model.config, **kwargs)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        kv_cache_bytes(object(), 4)


def test_bad_inputs_raise(model, prompt):
    with pytest.raises(ValueError, match=r"\(1, T\) tensor"):
        greedy_generate(model, torch.tensor([1, 2, 3]), 5)
    with pytest.raises(ValueError, match=r"\(1, T\) tensor"):
        scratch_greedy(ScratchLlama(model), prompt.repeat(2, 1), 5)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        greedy_generate(model, prompt, 0)
    with pytest.raises(ValueError, match="empty"):
        greedy_generate(model, prompt[:, :0], 3)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32))
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        ScratchLlama(gpt2)
    with pytest.raises(ValueError, match="n_layers must be a positive integer, got 0"):
        KVCache(0)


def test_hand_written_greedy_is_architecture_agnostic(prompt):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=64,
                                      eos_token_id=EOS, bos_token_id=1)).eval()
    with torch.no_grad():
        reference = gpt2.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                  do_sample=False, pad_token_id=0)
    assert torch.equal(greedy_generate(gpt2, prompt, 12, eos_token_id=EOS).ids, reference)


# ------------------------------------------------------- hub parameters, offline
@pytest.mark.slow
def test_named_local_models_run_the_notebook_code_paths(tmp_path):
    """ENCODER_NAME / DECODER_NAME / SEQ2SEQ_NAME set to local directories saved from configs."""
    from course_utils.models import encoder_dir, load_decoder, load_encoder, prepare_decoder
    from course_utils.seq2seq import load_seq2seq

    bert_tokenizer = AutoTokenizer.from_pretrained(encoder_dir())
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(tmp_path / "bert")
    bert_tokenizer.save_pretrained(tmp_path / "bert")
    encoder, tokenizer = load_encoder(str(tmp_path / "bert"))
    batch = tokenizer(["March 5, 2024", "5 March 2024"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder(**batch, output_attentions=True)
    assert not encoder.training and len(out.attentions) == 2  # eager: attention maps returned
    torch.testing.assert_close(out.last_hidden_state, bert.eval()(**batch).last_hidden_state)

    llama_tokenizer = AutoTokenizer.from_pretrained(prepare_decoder())
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(llama_tokenizer), hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, tie_word_embeddings=True,
                                         eos_token_id=llama_tokenizer.eos_token_id))
    llama.save_pretrained(tmp_path / "llama")
    llama_tokenizer.save_pretrained(tmp_path / "llama")
    decoder, tokenizer = load_decoder(str(tmp_path / "llama"))
    prompt = tokenizer("March 5, 2024 in ISO 8601 format is", return_tensors="pt")
    with torch.no_grad():
        reference = decoder.generate(**prompt, max_new_tokens=8, do_sample=False,
                                     pad_token_id=tokenizer.eos_token_id)
        scratch = ScratchLlama(decoder)
        torch.testing.assert_close(scratch(prompt["input_ids"]), decoder(**prompt).logits, atol=1e-5, rtol=0)
    eos = tokenizer.eos_token_id
    assert torch.equal(greedy_generate(decoder, prompt["input_ids"], 8, eos_token_id=eos).ids, reference)
    assert torch.equal(scratch_greedy(scratch, prompt["input_ids"], 8, eos_token_id=eos).ids, reference)
    assert decoder(**prompt, output_attentions=True).attentions[0].shape[1] == 4

    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=bert_tokenizer.vocab_size, d_model=32, d_kv=8,
                                             d_ff=64, num_layers=1, num_heads=4,
                                             decoder_start_token_id=0, pad_token_id=0))
    t5.save_pretrained(tmp_path / "t5")
    bert_tokenizer.save_pretrained(tmp_path / "t5")
    seq2seq, tokenizer = load_seq2seq(str(tmp_path / "t5"))
    source = tokenizer("translate: March 5, 2024", return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        target = seq2seq.generate(**source, max_new_tokens=5, do_sample=False)
        out = seq2seq(**source, decoder_input_ids=target, output_attentions=True)
    assert out.cross_attentions[0].shape[-2:] == (target.shape[1], source["input_ids"].shape[1])


def test_missing_named_model_says_what_to_do(tmp_path):
    from course_utils.models import ModelNotAvailableError
    from course_utils.seq2seq import load_seq2seq

    with pytest.raises(ModelNotAvailableError, match="save_pretrained"):
        load_seq2seq(str(tmp_path / "nothing-here"))


def test_time_decode_steps_times_both_paths_and_restores_the_cache(model, prompt):
    from course_utils.kv_cache import decode_step_lower_bound, time_decode_steps

    steps = time_decode_steps(ScratchLlama(model), prompt, [2, 5, 7], repeats=2)
    assert [s.n for s in steps] == [2, 5, 7]
    assert all(s.cached > 0 and s.uncached > 0 for s in steps)
    with pytest.raises(ValueError, match="lengths"):
        time_decode_steps(ScratchLlama(model), prompt, [8])
    with pytest.raises(ValueError, match="repeats"):
        time_decode_steps(ScratchLlama(model), prompt, [3], repeats=0)
    assert decode_step_lower_bound(10**9, 0, 10**10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        decode_step_lower_bound(10**9, 0, float("nan"))

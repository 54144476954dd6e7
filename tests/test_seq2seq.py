"""Date data, character tokenizer, tiny T5 and its training/evaluation (notebook 08)."""

from __future__ import annotations

import datetime as dt

import pytest
import torch

from course_utils import seq2seq, training
from course_utils.seq2seq import (
    DATE_FORMATS,
    ISO_SPANS,
    MONTHS,
    CharTokenizer,
    DateExample,
    Seq2SeqConfig,
    alignment_shares,
    build_t5,
    cross_attention,
    date_batches,
    date_train_config,
    exact_match,
    field_shares,
    format_date,
    make_dates,
    seq2seq_loss,
    split_dates,
)


# ---------------------------------------------------------------- the date generator
def _month_number(piece: str) -> int:
    if piece.isdigit():
        return int(piece)
    return next(i + 1 for i, name in enumerate(MONTHS) if name.lower().startswith(piece.lower()))


@pytest.mark.parametrize("fmt", DATE_FORMATS)
def test_every_format_marks_the_right_spans(fmt):
    for date in (dt.date(1950, 1, 1), dt.date(2024, 3, 5), dt.date(2049, 12, 31), dt.date(1999, 9, 30)):
        example = format_date(date, fmt)
        assert example.iso == date.isoformat()
        piece = {name: example.text[a:b] for name, (a, b) in example.spans.items()}
        assert set(piece) == {"year", "month", "day"}
        assert int(piece["year"]) == date.year
        assert _month_number(piece["month"]) == date.month
        assert int(piece["day"]) == date.day


def test_formats_are_distinct_and_known():
    date = dt.date(2024, 3, 5)
    texts = {format_date(date, fmt).text for fmt in DATE_FORMATS}
    assert len(texts) == len(DATE_FORMATS) >= 5
    with pytest.raises(ValueError, match="unknown date format 'dd/mm'"):
        format_date(date, "dd/mm")


def test_make_dates_is_deterministic_and_covers_every_format():
    a, b = make_dates(300, seed=3), make_dates(300, seed=3)
    assert [(e.text, e.iso) for e in a] == [(e.text, e.iso) for e in b]
    assert [e.text for e in a] != [e.text for e in make_dates(300, seed=4)]
    assert {e.format for e in a} == set(DATE_FORMATS)
    tokenizer = CharTokenizer()
    for example in a:
        tokenizer.encode(example.text)  # every generated character is in the vocabulary


def test_held_out_dates_never_appear_in_training():
    train, test = split_dates(0)
    assert len(train) + len(test) == (dt.date(2049, 12, 31) - dt.date(1950, 1, 1)).days + 1
    assert not set(train) & set(test)
    train_isos = {d.isoformat() for d in train}
    assert not {e.iso for e in make_dates(500, seed=0, split="test")} & train_isos
    assert {e.iso for e in make_dates(500, seed=0, split="train")} <= train_isos


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": 0}, "positive integer"), ({"n": 5, "split": "val"}, "'train' or 'test'"),
     ({"n": 5, "formats": ["nope"]}, "subset"), ({"n": 5, "formats": []}, "subset")],
)
def test_make_dates_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dates(**kwargs)


# ---------------------------------------------------------------- the tokenizer
def test_tokenizer_round_trip_and_eos():
    tokenizer = CharTokenizer()
    ids = tokenizer.encode("March 5, 2024")
    assert len(ids) == len("March 5, 2024") + 1 and ids[-1] == CharTokenizer.EOS
    assert CharTokenizer.PAD not in ids
    assert tokenizer.decode(ids) == "March 5, 2024"
    assert tokenizer.decode(ids[:-1] + [CharTokenizer.EOS, 5, 6]) == "March 5, 2024"  # stops at </s>
    assert tokenizer.encode("ab", add_eos=False) == [tokenizer.char_to_id["a"], tokenizer.char_to_id["b"]]
    assert tokenizer.tokens("ab") == ["a", "b", "</s>"]
    assert len(set(tokenizer.char_to_id.values())) == tokenizer.vocab_size - 2


def test_tokenizer_errors_name_the_problem():
    tokenizer = CharTokenizer()
    with pytest.raises(ValueError, match=r"unknown character 'ä' at position 3 of '5 März'"):
        tokenizer.encode("5 März")
    with pytest.raises(ValueError, match="empty string"):
        tokenizer.encode("")
    with pytest.raises(ValueError, match="expected a string, got int"):
        tokenizer.encode(5)
    with pytest.raises(ValueError, match="unknown id 999"):
        tokenizer.decode([999])
    with pytest.raises(ValueError, match="empty batch"):
        tokenizer.batch([])
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer("aab")


def test_batch_pads_right_with_a_mask():
    tokenizer = CharTokenizer()
    batch = tokenizer.batch(["ab", "abcd"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][0, 3:].tolist() == [CharTokenizer.PAD] * 2
    assert tokenizer.decode(batch["input_ids"][0]) == "ab"


# ---------------------------------------------------------------- the model and training
def test_build_t5_matches_the_course_design():
    tokenizer = CharTokenizer()
    model = build_t5(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == 169_280  # ~169K (COURSE_DESIGN)
    assert model.config.decoder_start_token_id == CharTokenizer.PAD
    assert model.config.eos_token_id == CharTokenizer.EOS
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match=r"d_model \(66\) must be divisible by num_heads \(4\)"):
        build_t5(tokenizer, Seq2SeqConfig(d_model=66))


def test_the_config_is_the_course_training_config_with_the_date_defaults():
    config = date_train_config()
    assert type(config) is training.TrainConfig
    assert (config.steps, config.lr, config.warmup_steps, config.grad_clip, config.threads,
            config.betas, config.eval_every) == (700, 3e-3, 100, 1.0, 1, (0.9, 0.999), 100)
    assert date_train_config(steps=40).warmup_steps == 40  # all steps warm up when fewer than 100
    assert date_train_config(steps=40, warmup_steps=10, seed=3).seed == 3
    with pytest.raises(ValueError, match="batch_size"):
        date_batches(CharTokenizer(), batch_size=0)
    with pytest.raises(ValueError, match="examples"):
        date_batches(CharTokenizer(), examples=-3)


def test_date_batches_draw_from_the_generator_and_trim_padding():
    tokenizer = CharTokenizer()
    get_batch = date_batches(tokenizer, batch_size=4, examples=50, seed=0)
    inputs, targets = get_batch(torch.Generator().manual_seed(1))
    again, _ = get_batch(torch.Generator().manual_seed(1))
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    assert targets.shape == (4, 11) and inputs["input_ids"].shape[0] == 4
    assert inputs["attention_mask"][:, -1].any()  # no all-padding column left
    texts = [tokenizer.decode(row) for row in targets]
    assert all(len(t) == 10 and t[4] == t[7] == "-" for t in texts)


def test_seq2seq_loss_is_the_cross_entropy_of_the_logits():
    tokenizer = CharTokenizer()
    model = build_t5(tokenizer, seed=0)
    inputs = tokenizer.batch(["5 March 2024", "Mar 05 2024"])
    targets = torch.tensor([tokenizer.encode("2024-03-05")] * 2)
    decoder_input = torch.cat([torch.zeros(2, 1, dtype=torch.long), targets[:, :-1]], dim=1)
    logits = model(**inputs, decoder_input_ids=decoder_input).logits  # (B, 11, V)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    torch.testing.assert_close(seq2seq_loss(model, inputs, targets), expected)


@pytest.fixture(scope="module")
def short_training():
    torch.manual_seed(0)
    tokenizer = CharTokenizer()
    config = date_train_config(steps=40, warmup_steps=10, eval_every=20)
    batches = date_batches(tokenizer, batch_size=8, examples=300)
    lines: list[str] = []
    model = build_t5(tokenizer, seed=0)
    result = training.train(model, batches, config, loss_fn=seq2seq_loss, log=lines.append)
    return tokenizer, model, result, lines, config


def test_training_lowers_the_loss_and_logs_a_progress_bar(short_training):
    _, model, result, lines, config = short_training
    assert len(result.losses) == 40 and not model.training
    assert sum(result.losses[-5:]) / 5 < 0.7 * sum(result.losses[:5]) / 5
    assert result.lr == [config.lr_at(s) for s in range(40)]  # the course's one schedule
    assert len(lines) == 2
    assert lines[0].startswith("[##########..........] step 20/40 | train ")
    assert lines[1].startswith("[####################] step 40/40 | train ")


@pytest.mark.slow
def test_training_is_reproducible(short_training):
    tokenizer, _, result, _, config = short_training
    again = training.train(build_t5(tokenizer, seed=0), date_batches(tokenizer, batch_size=8, examples=300),
                           config, loss_fn=seq2seq_loss, log=None)
    assert again.losses == result.losses  # bit-identical with the same seed and threads


def test_train_rejects_bad_config():
    with pytest.raises(ValueError, match="steps: expected an integer ≥ 1, got 0"):
        date_train_config(steps=0)
    with pytest.raises(ValueError, match="batch_size: expected one of the TrainConfig fields"):
        date_train_config(batch_size=8)  # a batch setting of date_batches, not of the loop


def test_exact_match_counts_whole_strings(monkeypatch):
    examples = [format_date(dt.date(2024, 3, 5), "d.m.yyyy"), format_date(dt.date(2001, 1, 2), "d.m.yyyy")]
    monkeypatch.setattr(seq2seq, "translate", lambda m, t, texts: ["2024-03-05", "2001-01-03"])
    assert exact_match(None, CharTokenizer(), examples) == 0.5
    with pytest.raises(ValueError, match="at least one example"):
        exact_match(None, CharTokenizer(), [])


def test_cross_attention_needs_eager_and_rows_sum_to_one(short_training):
    tokenizer, model, *_ = short_training
    with pytest.raises(ValueError, match="eager"):
        cross_attention(model, tokenizer, "5 March 2024")
    model.set_attn_implementation("eager")
    try:
        weights, output = cross_attention(model, tokenizer, "5 March 2024")
    finally:
        model.set_attn_implementation("sdpa")
    assert weights.shape == (2, 4, len(output) + 1, len("5 March 2024") + 1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_field_share_is_one_for_perfect_alignment_and_uniform_for_uniform():
    example = format_date(dt.date(2024, 3, 5), "Month d, yyyy")  # 'March 5, 2024'
    n_src, n_out = len(example.text) + 1, len(example.iso) + 1
    perfect = torch.zeros(n_out, n_src)
    for name, (out_a, out_b) in ISO_SPANS.items():
        src_a, src_b = example.spans[name]
        perfect[out_a:out_b, src_a:src_b] = 1.0 / (src_b - src_a)
    for name, (share, uniform) in field_shares(example, perfect).items():
        a, b = example.spans[name]
        assert share == pytest.approx(1.0)
        assert uniform == pytest.approx((b - a) / n_src)
    for share, uniform in field_shares(example, torch.full((n_out, n_src), 1.0 / n_src)).values():
        assert share == pytest.approx(uniform)


def test_batched_alignment_shares_equal_one_example_at_a_time(short_training, monkeypatch):
    """The padded batches give what ``cross_attention`` gives example by example (sources of
    different lengths, two batches). ``translate`` is made to answer correctly, so both
    paths read the attention of the same, correct output."""
    tokenizer, model, *_ = short_training
    examples = make_dates(12, seed=5)
    answers = {e.text: e.iso for e in examples}
    assert len({len(e.text) for e in examples}) > 1  # padding is exercised
    monkeypatch.setattr(seq2seq, "translate", lambda m, t, texts, batch_size=256: [answers[x] for x in texts])
    model.set_attn_implementation("eager")
    try:
        batched = alignment_shares(model, tokenizer, examples, batch_size=5)
        one_by_one = [field_shares(e, cross_attention(model, tokenizer, e.text)[0].mean(dim=(0, 1)))
                      for e in examples]
    finally:
        model.set_attn_implementation("sdpa")
    for name in batched:
        share = sum(s[name][0] for s in one_by_one) / len(examples)
        uniform = sum(s[name][1] for s in one_by_one) / len(examples)
        assert batched[name] == pytest.approx((share, uniform), abs=1e-6)
    monkeypatch.setattr(seq2seq, "translate", lambda m, t, texts, batch_size=256: ["1999-01-01"] * len(texts))
    model.set_attn_implementation("eager")
    try:
        with pytest.raises(ValueError, match="translated none"):
            alignment_shares(model, tokenizer, examples)
    finally:
        model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="eager"):
        alignment_shares(model, tokenizer, examples)
    with pytest.raises(ValueError, match="batch_size: expected an integer ≥ 1, got 0"):
        alignment_shares(model, tokenizer, examples, batch_size=0)


def test_date_example_is_a_value():
    a = format_date(dt.date(2024, 3, 5), "d Month yyyy")
    assert a == DateExample("5 March 2024", "2024-03-05", "d Month yyyy", {})


def test_training_restores_the_thread_count():
    tokenizer = CharTokenizer()
    before = torch.get_num_threads()
    training.train(build_t5(tokenizer), date_batches(tokenizer, batch_size=2, examples=10),
                   date_train_config(steps=1, threads=1), loss_fn=seq2seq_loss, log=None)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        date_train_config(threads=0)

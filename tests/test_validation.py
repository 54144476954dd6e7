"""Property tests: the public course_utils functions refuse bad input with a clear ValueError.

hypothesis draws random bad inputs (wrong rank or shape, wrong dtype, dimensions that do not
fit together, values out of range; tensors are NaN-free) for the functions the issues name:
``attention.scaled_dot_product_attention`` / ``.MultiHeadAttention``, the masks in
``course_utils.masks``, ``positional.apply_rope`` / ``.sinusoidal_encoding`` and
``tokenization.BPETokenizer`` / ``.train_bpe``. Each must raise ``ValueError`` whose message
names the argument at fault — never a deep torch ``RuntimeError``, never a silent result.
Few examples per property: the file runs in seconds.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_utils import attention, masks, positional, tokenization

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.integers(min_value=1, max_value=5)
not_positive = st.integers(min_value=-10, max_value=0)
not_an_int = st.sampled_from([1.5, 2.0, "3", None, True, [2]])
float_dtypes = st.sampled_from([torch.float32, torch.float64])
int_dtypes = st.sampled_from([torch.int64, torch.int32, torch.bool])


def raises_naming(names: str | tuple[str, ...], function, *args, **kwargs) -> str:
    """Call ``function``; it must raise ValueError whose message names one of ``names``."""
    names = (names,) if isinstance(names, str) else names
    with pytest.raises(ValueError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names), (
        f"the error does not name {' or '.join(names)}: {message}")
    return message


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


# -- scaled_dot_product_attention -----------------------------------------------------------

sdpa = attention.scaled_dot_product_attention


def test_good_input_works():  # the properties below are about bad input only
    out, weights = sdpa(randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 6), torch.ones(3, 5, dtype=torch.bool))
    assert out.shape == (2, 3, 6) and torch.allclose(weights.sum(-1), torch.ones(2, 3))


@FEW
@given(rank=st.sampled_from([0, 1]), which=st.sampled_from(["q", "k", "v"]), n=sizes)
def test_sdpa_refuses_a_tensor_without_sequence_and_feature_axes(rank, which, n):
    args = {"q": randn(2, 3, 4), "k": randn(2, 5, 4), "v": randn(2, 5, 4)}
    args[which] = randn(*([n] * rank))
    raises_naming(which, sdpa, **args)


@FEW
@given(d_q=sizes, d_k=sizes, t=sizes)
def test_sdpa_refuses_q_and_k_of_different_widths(d_q, d_k, t):
    if d_q == d_k:
        d_k += 1
    raises_naming(("q", "k"), sdpa, randn(1, t, d_q), randn(1, t, d_k), randn(1, t, 3))


@FEW
@given(t_k=sizes, t_v=sizes, d=sizes)
def test_sdpa_refuses_k_and_v_with_different_key_counts(t_k, t_v, d):
    if t_k == t_v:
        t_v += 1
    raises_naming(("k", "v"), sdpa, randn(2, d), randn(t_k, d), randn(t_v, d))


@FEW
@given(b_q=st.integers(2, 4), b_k=st.integers(2, 4))
def test_sdpa_refuses_batch_axes_that_do_not_broadcast(b_q, b_k):
    if b_q == b_k:
        b_k += 1
    raises_naming(("q", "k", "v"), sdpa, randn(b_q, 3, 4), randn(b_k, 3, 4), randn(b_k, 3, 4))


@FEW
@given(which=st.sampled_from(["q", "k", "v"]), dtype=int_dtypes)
def test_sdpa_refuses_integer_tensors(which, dtype):
    args = {"q": randn(3, 4), "k": randn(5, 4), "v": randn(5, 4)}
    args[which] = torch.ones(args[which].shape, dtype=dtype)
    raises_naming(which, sdpa, **args)


@FEW
@given(which=st.sampled_from(["q", "k", "v"]))
def test_sdpa_refuses_mixed_float_dtypes(which):
    args = {"q": randn(3, 4), "k": randn(5, 4), "v": randn(5, 4)}
    args[which] = args[which].double()
    raises_naming(which, sdpa, **args)


@FEW
@given(which=st.sampled_from(["q", "k", "v"]), value=st.sampled_from([[[1.0, 2.0]], 3.0, None, "q"]))
def test_sdpa_refuses_non_tensors(which, value):
    args = {"q": randn(1, 2), "k": randn(1, 2), "v": randn(1, 2)}
    args[which] = value
    raises_naming(which, sdpa, **args)


def test_sdpa_refuses_a_zero_head_dimension():
    raises_naming(("q", "k"), sdpa, randn(3, 0), randn(3, 0), randn(3, 2))


@FEW
@given(t_q=sizes, t_k=sizes, extra=st.integers(1, 3), dtype=st.sampled_from([torch.int64, torch.float32]))
def test_sdpa_refuses_a_mask_of_the_wrong_shape_or_dtype(t_q, t_k, extra, dtype):
    q, k, v = randn(2, t_q, 4), randn(2, t_k, 4), randn(2, t_k, 4)
    raises_naming("mask", sdpa, q, k, v, torch.ones(t_q, t_k + extra, dtype=torch.bool))
    raises_naming("mask", sdpa, q, k, v, torch.ones(t_q, t_k, dtype=dtype))


# -- MultiHeadAttention -----------------------------------------------------------------------

MHA = attention.MultiHeadAttention


@FEW
@given(name=st.sampled_from(["d_model", "num_heads", "num_kv_heads", "head_dim"]),
       value=st.one_of(not_positive, not_an_int))
def test_mha_refuses_sizes_that_are_not_positive_integers(name, value):
    kwargs = {"d_model": 8, "num_heads": 2}
    kwargs[name] = value
    if name == "num_kv_heads" and value is None:
        return  # None means "as many as num_heads": allowed
    if name == "head_dim" and value is None:
        return  # None means d_model // num_heads: allowed
    raises_naming(name, MHA, **kwargs)


@FEW
@given(heads=st.integers(2, 7), width=st.integers(1, 40))
def test_mha_refuses_a_width_that_heads_do_not_divide(heads, width):
    if width % heads == 0:
        width += 1
    raises_naming(("d_model", "num_heads"), MHA, width, heads)


@FEW
@given(kv=st.integers(2, 7))
def test_mha_refuses_kv_heads_that_do_not_divide_the_query_heads(kv):
    heads = kv * 2 + 1  # odd multiple plus one: never divisible by kv >= 2
    raises_naming("num_kv_heads", MHA, heads * 4, heads, num_kv_heads=kv)


@FEW
@given(base=st.one_of(st.floats(max_value=1.0, allow_nan=False), st.just(math.inf),
                      st.sampled_from(["10000", True])))
def test_mha_refuses_a_rope_base_out_of_range(base):
    raises_naming("rope_base", MHA, 8, 2, rope_base=base)


@FEW
@given(batch=sizes, seq=sizes, width=st.integers(1, 12), rank=st.sampled_from([2, 3, 4]))
def test_mha_forward_refuses_x_of_the_wrong_shape(batch, seq, width, rank):
    module = MHA(8, 2)
    if rank == 3 and width == 8:
        width = 9
    shape = {2: (seq, width), 3: (batch, seq, width), 4: (batch, 1, seq, width)}[rank]
    raises_naming("x", module, randn(*shape))


@FEW
@given(dtype=st.sampled_from([torch.float64, torch.float16, torch.int64]))
def test_mha_forward_refuses_x_of_another_dtype(dtype):
    raises_naming("x", MHA(8, 2), torch.ones(1, 3, 8, dtype=dtype))


@FEW
@given(batch=st.integers(1, 3), other=st.integers(1, 3), width=st.sampled_from([8, 6]))
def test_mha_forward_refuses_a_context_that_does_not_fit(batch, other, width):
    if other == batch and width == 8:
        other += 1
    raises_naming("context", MHA(8, 2), randn(batch, 3, 8), context=randn(other, 4, width))


@FEW
@given(seq=sizes, extra=st.integers(1, 3))
def test_mha_forward_refuses_a_mask_that_does_not_fit(seq, extra):
    module = MHA(8, 2)
    raises_naming("mask", module, randn(1, seq, 8), mask=torch.ones(seq, seq + extra, dtype=torch.bool))
    raises_naming("mask", module, randn(1, seq, 8), mask=torch.ones(seq, seq))


# -- masks ----------------------------------------------------------------------------------


@FEW
@given(n=st.one_of(not_positive, not_an_int))
def test_causal_mask_refuses_a_bad_size(n):
    raises_naming("n", masks.causal_mask, n)


@FEW
@given(window=st.one_of(not_positive, not_an_int), n=sizes)
def test_sliding_window_refuses_a_bad_window(window, n):
    raises_naming("window", masks.sliding_window_mask, n, window)


@FEW
@given(causal=st.sampled_from([1, 0, "yes", None]))
def test_sliding_window_refuses_a_causal_flag_that_is_not_a_bool(causal):
    raises_naming("causal", masks.sliding_window_mask, 4, 2, causal=causal)


@FEW
@given(rank=st.sampled_from([0, 1, 3, 4]), n=sizes)
def test_padding_mask_refuses_the_wrong_rank(rank, n):
    raises_naming("attention_mask", masks.padding_mask, torch.ones([n] * rank, dtype=torch.long))


@FEW
@given(value=st.one_of(st.integers(2, 9), st.integers(-9, -1), st.sampled_from([0.5, 1.5])), t=sizes)
def test_padding_mask_refuses_values_other_than_0_and_1(value, t):
    attention_mask = torch.ones(2, t + 1)
    attention_mask[1, -1] = value
    raises_naming("attention_mask", masks.padding_mask, attention_mask)


@FEW
@given(n=st.integers(2, 5), m=st.integers(2, 5), dtype=st.sampled_from([torch.int64, torch.float32]))
def test_combine_refuses_non_boolean_or_non_broadcasting_masks(n, m, dtype):
    if n == m:
        m += 1
    raises_naming("mask 1", masks.combine, masks.causal_mask(n), masks.causal_mask(m))
    raises_naming("mask 1", masks.combine, masks.causal_mask(n), torch.ones(n, n, dtype=dtype))


@FEW
@given(dtype=st.sampled_from([torch.int64, torch.bool, "float32", None]))
def test_to_additive_refuses_a_non_float_dtype(dtype):
    raises_naming("dtype", masks.to_additive, masks.causal_mask(3), dtype=dtype)


def test_to_additive_refuses_a_non_boolean_mask():
    with pytest.raises(ValueError, match="boolean mask"):
        masks.to_additive(torch.ones(3, 3))


# -- positional -----------------------------------------------------------------------------


@FEW
@given(name=st.sampled_from(["seq_len", "d_model"]), value=st.one_of(not_positive, not_an_int))
def test_sinusoidal_encoding_refuses_bad_sizes(name, value):
    kwargs = {"seq_len": 4, "d_model": 8}
    kwargs[name] = value
    raises_naming(name, positional.sinusoidal_encoding, **kwargs)


@FEW
@given(d_model=st.integers(0, 20).map(lambda i: 2 * i + 1))
def test_sinusoidal_encoding_refuses_an_odd_width(d_model):
    raises_naming("d_model", positional.sinusoidal_encoding, 4, d_model)


@FEW
@given(base=st.one_of(st.floats(max_value=1.0, allow_nan=False), st.just(math.inf), st.just("1e4")))
def test_sinusoidal_encoding_and_rope_refuse_a_base_out_of_range(base):
    raises_naming("base", positional.sinusoidal_encoding, 4, 8, base=base)
    raises_naming("base", positional.apply_rope, randn(3, 4), torch.arange(3), base=base)


@FEW
@given(rank=st.sampled_from([0, 1]), odd=st.integers(0, 4).map(lambda i: 2 * i + 1), t=sizes)
def test_apply_rope_refuses_x_of_the_wrong_rank_or_an_odd_width(rank, odd, t):
    raises_naming("x", positional.apply_rope, randn(*([4] * rank)), torch.arange(4))
    raises_naming("x", positional.apply_rope, randn(2, t, odd), torch.arange(t))


@FEW
@given(dtype=int_dtypes)
def test_apply_rope_refuses_an_integer_x(dtype):
    raises_naming("x", positional.apply_rope, torch.ones(3, 4, dtype=dtype), torch.arange(3))


@FEW
@given(t=sizes, extra=st.integers(1, 3), kind=st.sampled_from(["length", "float", "negative", "rank"]))
def test_apply_rope_refuses_positions_that_do_not_fit(t, extra, kind):
    x = randn(2, t, 4)
    positions = {
        "length": torch.arange(t + extra),
        "float": torch.arange(t, dtype=torch.float32),
        "negative": torch.arange(t) - extra,
        "rank": torch.zeros(1, 1, t, dtype=torch.long),
    }[kind]
    raises_naming("positions", positional.apply_rope, x, positions)


# -- tokenization -----------------------------------------------------------------------------


@FEW
@given(vocab_size=st.one_of(st.integers(-5, 255), not_an_int))
def test_train_bpe_refuses_a_vocabulary_smaller_than_the_bytes(vocab_size):
    raises_naming("vocab_size", tokenization.train_bpe, "low lower lowest", vocab_size)


@FEW
@given(text=st.sampled_from(["", None, 5, b"bytes", ["low"]]))
def test_train_bpe_refuses_text_that_is_not_a_non_empty_string(text):
    raises_naming("text", tokenization.train_bpe, text, 260)


@FEW
@given(merges=st.one_of(
    st.lists(st.tuples(st.integers(-5, -1), st.integers(0, 255)), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(300, 400), st.integers(300, 400)), min_size=1, max_size=3),
    st.lists(st.sampled_from([(1,), (1, 2, 3), "ab", 7, (1.0, 2.0)]), min_size=1, max_size=3),
    st.sampled_from(["ab", 5]),
))
def test_bpe_tokenizer_refuses_merges_that_are_not_valid_pairs(merges):
    raises_naming(("merges", "merge"), tokenization.BPETokenizer, merges)


@FEW
@given(text=st.sampled_from([None, 5, b"bytes", ["a"]]))
def test_bpe_tokenizer_encode_refuses_non_text(text):
    raises_naming("text", tokenization.BPETokenizer([(104, 105)]).encode, text)


@FEW
@given(ids=st.one_of(st.lists(st.integers(257, 10_000), min_size=1, max_size=3),
                     st.lists(st.integers(-9, -1), min_size=1, max_size=3),
                     st.sampled_from(["hi", [1.5], [None]])))
def test_bpe_tokenizer_decode_refuses_unknown_ids(ids):
    raises_naming(("ids", "id"), tokenization.BPETokenizer([(104, 105)]).decode, ids)

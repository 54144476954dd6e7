"""course_utils.measurement: the stopwatch, the FLOP counts (against torch's own counter),
the robust exponent fit and the cache sizes. No test asserts a speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_utils.blocks import EncoderBlock, TransformerConfig
from course_utils.measurement import (
    Timing,
    attention_flops,
    cache_sizes,
    fit_exponent,
    fit_power_law,
    format_bytes,
    matmul_peak_gflops,
    sublayer_flops,
    time_call,
)


def tiny_config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=50, max_seq_len=32, d_model=32, num_heads=4, num_layers=1, d_ff=64,
                eps=1e-5)
    base.update(overrides)
    return TransformerConfig(**base)


def test_time_call_counts_calls_and_repeats():
    calls = []
    timing = time_call(lambda: calls.append(1), warmup=2, repeats=4)
    assert len(calls) == 6 and timing.repeats == 4 and timing.warmup == 2
    assert 0 <= timing.min_s <= timing.median_s <= timing.max_s and timing.spread >= 0
    with pytest.raises(ValueError, match="repeats: expected an integer ≥ 1, got 0"):
        time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup: expected an integer ≥ 0"):
        time_call(lambda: None, warmup=-1)


def test_timing_statistics():
    timing = Timing((3.0, 1.0, 2.0, 10.0), warmup=1)
    assert (timing.min_s, timing.median_s, timing.max_s) == (1.0, 2.5, 10.0)
    assert timing.spread == pytest.approx(9.0 / 2.5)


def test_time_call_runs_without_autograd():
    x = torch.ones(3, requires_grad=True)
    seen = []
    time_call(lambda: seen.append((x * 2).requires_grad), warmup=0, repeats=1)
    assert seen == [False]


def test_matmul_peak_is_positive_and_checked():
    assert matmul_peak_gflops(size=64, warmup=1, repeats=2) > 0
    with pytest.raises(ValueError, match="size: expected an integer ≥ 1"):
        matmul_peak_gflops(size=0)


def _counted(fn) -> FlopCounterMode:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter


@pytest.mark.parametrize("shape", [(1, 2, 20, 8), (2, 3, 17, 16)])
def test_attention_flops_equal_torch_counter(shape):
    """torch's FlopCounterMode counts the two matmuls of naive attention (q kᵀ, p v)."""
    from course_utils.bench import make_inputs, naive_attention

    q, k, v = make_inputs(*shape)
    counter = _counted(lambda: naive_attention(q, k, v))
    assert counter.get_total_flops() == attention_flops(*shape)
    assert attention_flops(*shape, causal=True) == attention_flops(*shape) / 2
    with pytest.raises(ValueError, match="n: expected an integer ≥ 1"):
        attention_flops(1, 8, 0, 64)


@pytest.mark.parametrize("overrides", [{}, {"num_kv_heads": 2, "activation": "swiglu", "bias": False}])
def test_sublayer_flops_equal_torch_counter_per_module(overrides):
    """Each sublayer's formula = what torch's FlopCounterMode counts in that module."""
    config = tiny_config(**overrides)
    block = EncoderBlock(config).eval()
    batch, seq_len = 2, 10
    counter = _counted(lambda: block(torch.randn(batch, seq_len, config.d_model)))
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    flops = sublayer_flops(config, seq_len=seq_len, batch=batch)
    projections = ["Block.attn.q_proj", "Block.attn.k_proj", "Block.attn.v_proj"]
    assert flops["qkv_proj"] == sum(counts[p] for p in projections)
    assert flops["out_proj"] == counts["Block.attn.out_proj"]
    assert flops["attention"] == counts["Block.attn"]
    assert flops["attn_core"] == counts["Block.attn"] - flops["qkv_proj"] - flops["out_proj"]
    assert flops["ffn"] == counts["Block.ffn"]
    assert flops["ffn_down"] == counts["Block.ffn.down_proj"]
    assert flops["attention"] + flops["ffn"] == counter.get_total_flops()
    with pytest.raises(ValueError, match="seq_len: expected an integer ≥ 1"):
        sublayer_flops(config, seq_len=0)


def test_flop_crossover_of_attention_and_ffn():
    """8TC² + 4T²C = 4TCF: attention's matmuls equal the FFN's at T = F - 2C."""
    at = sublayer_flops(tiny_config(d_ff=128), seq_len=128 - 64)
    assert at["attention"] == at["ffn"]
    beyond = sublayer_flops(tiny_config(d_ff=128), seq_len=65)
    assert beyond["attention"] > beyond["ffn"]


def test_fit_power_law_recovers_known_powers():
    ns = [128, 256, 512, 1024, 2048, 4096]
    assert fit_exponent(ns, [3 * n**2 for n in ns]) == pytest.approx(2.0)
    fit = fit_power_law(ns, [0.5 * n for n in ns])
    assert fit.exponent == pytest.approx(1.0) and fit.low == pytest.approx(1.0)
    assert fit.scale == pytest.approx(0.5) and fit.points == 6 and str(fit).startswith("n^1.00 [")


def test_fit_power_law_resists_one_disturbed_point():
    """One timing 4x too slow (another process took the CPU): least squares on log-log
    moves by more than 0.15, Theil–Sen by less than 0.05, and its interval holds 2."""
    ns = np.array([512, 724, 1024, 1448, 2048, 2896, 4096], dtype=float)
    rng = np.random.default_rng(0)
    times = 1e-9 * ns**2 * np.exp(rng.normal(0, 0.02, ns.size))
    times[-1] *= 4
    least_squares = np.polyfit(np.log(ns), np.log(times), 1)[0]
    fit = fit_power_law(ns, times)
    assert abs(least_squares - 2) > 0.15
    assert abs(fit.exponent - 2) < 0.05 and fit.low <= 2 <= fit.high


def test_fit_power_law_refuses_bad_input():
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, 0, 2])
    with pytest.raises(ValueError, match="≥ 3"):
        fit_power_law([4, 8], [1, 2])
    with pytest.raises(ValueError, match="two different n"):
        fit_power_law([4, 4, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        fit_power_law([1, 2, 3], [1, float("nan"), 2])


def test_cache_sizes_reads_sysfs(tmp_path):
    for index, (level, kind, size, shared) in enumerate(
        [(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"), (2, "Unified", "1024K", "0"),
         (3, "Unified", "32768K", "0-1")]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("shared_cpu_list", shared)):
            (folder / name).write_text(f"{value}\n")
    levels = cache_sizes(tmp_path)
    assert [(c.level, c.kind, c.size_bytes, c.shared_by) for c in levels] == [
        (1, "Data", 32 * 2**10, 1), (2, "Unified", 2**20, 1), (3, "Unified", 32 * 2**20, 2)]
    assert cache_sizes(tmp_path / "missing") == [] or __import__("platform").system() == "Darwin"


def test_format_bytes_uses_binary_units():
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(2**30) == "1 GiB"
    assert format_bytes(12) == "12 B" and format_bytes(64 * 2**40) == "64 TiB"

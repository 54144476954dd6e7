"""course_utils.bench: the tiled attention is exact, the harness is well-formed.

No test here asserts a speed: timings depend on the machine and its load. Memory is
asserted only where it is a property of the algorithm (an n² matrix or not), with margins
far larger than allocator noise.
"""

from __future__ import annotations

import csv
import math
import random

import pytest
import torch
import torch.nn.functional as F

from course_utils import bench
from course_utils.attention import scaled_dot_product_attention as course_attention
from course_utils.masks import causal_mask, sliding_window_mask

TOL = bench.TILED_TOLERANCE  # fp32 on unit-variance inputs


def _random_shapes(count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        yield (rng.randint(1, 2), rng.randint(1, 4), rng.randint(1, 300), rng.choice([8, 16, 64]),
               rng.randint(1, 70), rng.randint(1, 70))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", list(_random_shapes(12, seed=10)), ids=str)
def test_tiled_equals_naive_on_random_shapes(shape, causal):
    batch, heads, n, d, block_q, block_k = shape
    q, k, v = bench.make_inputs(batch, heads, n, d, seed=n)
    tiled = bench.tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
    naive = bench.naive_attention(q, k, v, causal)
    assert tiled.shape == (batch, heads, n, d)
    assert (tiled - naive).abs().max() < TOL


@pytest.mark.parametrize("causal", [False, True])
def test_tiled_with_n_not_a_multiple_of_the_blocks(causal):
    q, k, v = bench.make_inputs(1, 3, 1000, 64)  # 1000 = 3·256 + 232; 1000 = 15·64 + 40
    for block_q, block_k in ((256, 256), (64, 96), (1000, 7), (2048, 2048)):
        tiled = bench.tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
        assert (tiled - bench.naive_attention(q, k, v, causal)).abs().max() < TOL


def test_tiled_cross_attention_with_different_lengths():
    q, _, _ = bench.make_inputs(2, 2, 37, 16, seed=1)
    _, k, v = bench.make_inputs(2, 2, 101, 16, seed=2)
    tiled = bench.tiled_attention(q, k, v, block_q=16, block_k=24)
    assert (tiled - bench.naive_attention(q, k, v)).abs().max() < TOL


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 5, 64, 130, 500])
def test_tiled_sliding_window_equals_masked_naive(window, causal):
    q, k, v = bench.make_inputs(1, 2, 203, 16, seed=window)
    tiled = bench.tiled_attention(q, k, v, causal, window=window, block_q=32, block_k=48)
    naive = bench.naive_attention(q, k, v, causal, window=window)
    assert (tiled - naive).abs().max() < TOL
    # and a window wider than the sequence is plain (causal) attention
    if window >= 203:
        assert (tiled - bench.naive_attention(q, k, v, causal)).abs().max() < TOL


def test_naive_equals_the_course_attention_and_sdpa():
    """The reference itself is right: notebook 04's attention and PyTorch's SDPA agree."""
    q, k, v = bench.make_inputs(2, 3, 77, 32)
    for causal in (False, True):
        naive = bench.naive_attention(q, k, v, causal)
        course, _ = course_attention(q, k, v, causal_mask(77) if causal else None)
        assert (naive - course).abs().max() < TOL
        assert (naive - F.scaled_dot_product_attention(q, k, v, is_causal=causal)).abs().max() < TOL
        for backend in bench.available_sdpa_backends():
            sdpa = bench.sdpa_attention(q, k, v, causal, backend=backend)
            assert (naive - sdpa).abs().max() < TOL, backend
    windowed, _ = course_attention(q, k, v, sliding_window_mask(77, 9))
    assert (bench.naive_attention(q, k, v, True, window=9) - windowed).abs().max() < TOL


def test_tiled_survives_large_scores():
    """The running max keeps exp() finite where a plain exp(q·k) would overflow."""
    q, k, v = bench.make_inputs(1, 1, 64, 8)
    q, k = q * 40, k * 40  # scores ~ 1e3 / √8: exp overflows fp32 without the max
    tiled = bench.tiled_attention(q, k, v, block_q=16, block_k=16)
    assert torch.isfinite(tiled).all()
    assert (tiled - bench.naive_attention(q, k, v)).abs().max() < 1e-4


def test_variants_reject_bad_input():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="4-D"):
        bench.tiled_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="last dimension|expected q"):
        bench.naive_attention(q, torch.randn(1, 2, 8, 5), q)
    with pytest.raises(ValueError, match="same length"):
        bench.tiled_attention(q, torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4), causal=True)
    with pytest.raises(ValueError, match="block_q"):
        bench.tiled_attention(q, q, q, block_q=0)
    with pytest.raises(ValueError, match="window"):
        bench.tiled_attention(q, q, q, window=0)
    with pytest.raises(ValueError, match="unknown variant"):
        bench.attention_fn("flash")
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        bench.attention_fn("sdpa[FAST]")


def test_formulas():
    assert bench.attention_flops(1, 8, 4096, 64) == 4 * 8 * 4096**2 * 64
    assert bench.attention_flops(2, 8, 100, 64, causal=True) == 2 * 2 * 8 * 100**2 * 64
    assert bench.score_matrix_bytes(1, 1, 131072) == 64 * 2**30  # the famous 64 GB
    # SmolLM2: 30 layers, 3 KV heads of 64 dims, fp32, 1000 tokens
    assert bench.kv_cache_bytes(30, 3, 64, 1000) == 2 * 30 * 3 * 64 * 1000 * 4
    with pytest.raises(ValueError, match="positive integer"):
        bench.score_matrix_bytes(1, 8, 0)
    assert bench.format_bytes(1536) == "1.5 KB" and bench.format_bytes(2**30) == "1 GB"


def test_predicted_memory_ranks_the_variants():
    naive = bench.predicted_extra_bytes("naive", 1, 8, 4096, 64)
    tiled = bench.predicted_extra_bytes("tiled", 1, 8, 4096, 64)
    assert naive > 2 * bench.score_matrix_bytes(1, 8, 4096) > 30 * tiled


def test_time_call_is_well_formed():
    calls = []
    timing = bench.time_call(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7
    assert 0 <= timing.min_s <= timing.median_s <= timing.max_s
    assert timing.repeats == 5 and timing.warmup == 2 and timing.spread >= 0
    with pytest.raises(ValueError, match="repeats"):
        bench.time_call(lambda: None, repeats=0)


def test_fit_exponent_recovers_known_powers():
    ns = [128, 256, 512, 1024]
    assert bench.fit_exponent(ns, [3 * n**2 for n in ns]) == pytest.approx(2.0)
    assert bench.fit_exponent(ns, [0.5 * n for n in ns]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        bench.fit_exponent([1, 2], [1, 0])
    with pytest.raises(ValueError, match="2"):
        bench.fit_exponent([4], [1])


def test_sweep_rows_are_well_formed_and_the_cap_skips(tmp_path):
    logged: list[str] = []
    cap = 3 * 2**20  # naive at n=600 needs two 5.8 MB matrices: skipped; tiled fits
    result = bench.run_sweep([32, 600], ["naive", "sdpa", "tiled"], heads=2, d=16, repeats=2,
                             memory_ns=[], memory_cap_bytes=cap, log=logged.append)
    assert result.matmul_gflops > 0 and len(result.rows) == 6
    skipped = result.row("naive", 600)
    assert skipped.skipped.startswith("predicted") and skipped.median_s is None
    assert any("skip naive at n=600" in line for line in logged)
    for row in result.rows:
        if row is skipped:
            continue
        assert row.median_s > 0 and row.min_s <= row.median_s <= row.max_s
        flops = bench.attention_flops(1, 2, row.n, 16)
        assert row.gflops == pytest.approx(flops / row.median_s / 1e9)
        assert row.fraction_of_matmul_peak == pytest.approx(row.gflops / result.matmul_gflops)
        assert row.score_matrix_bytes == 2 * row.n**2 * 4 and row.extra_bytes is None
    assert set(bench.exponents(result)) == {"sdpa", "tiled"}  # naive has one point left
    path = bench.write_csv(result, tmp_path / "sweep.csv")
    lines = list(csv.DictReader(path.open()))
    assert len(lines) == 6 and float(lines[0]["matmul_gflops"]) > 0
    table = bench.summary_table(result)
    assert table.count("\n") == 7 and "skipped: predicted" in table
    with pytest.raises(ValueError, match="device"):
        bench.run_sweep([32], ["naive"], device="tpu", log=None)


def test_decode_paths_agree():
    rows = bench.decode_costs([8, 33], d_model=32, heads=4, repeats=2)
    assert [r.n for r in rows] == [8, 33]
    for row in rows:
        assert row.max_difference < 1e-5  # cached and uncached give the same next token output
        assert row.cached.median_s > 0 and row.uncached.median_s > 0


def test_plot_sweep_draws_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    result = bench.run_sweep([16, 32, 64], ["sdpa", "tiled"], heads=1, d=8, repeats=1,
                             memory_ns=[], log=None)
    fig = bench.plot_sweep(result)
    time_axis, memory_axis = fig.axes
    assert any("n^" in t.get_text() for t in time_axis.get_legend().get_texts())
    assert memory_axis.get_ylabel().startswith("peak memory")
    assert "fitted slopes" in time_axis.get_title()  # computed, not a claimed n²


@pytest.mark.slow
def test_memory_probe_sees_the_n_squared_matrix_and_its_absence():
    """A fresh process per case: naive holds ≥ 2 score matrices (scores and weights), the
    tiled one less than a quarter of one. 32 MB matrices: far above allocator noise."""
    n, heads = 2048, 2  # score matrix 32 MB; tiled holds its 1 MB output and a few tiles
    results = bench.measure_memory(
        [bench.MemoryCase("naive", n, heads=heads), bench.MemoryCase("tiled", n, heads=heads)],
        jobs=2,
    )
    naive, tiled = results
    score = bench.score_matrix_bytes(1, heads, n)
    assert naive.baseline_bytes == tiled.baseline_bytes > 0  # one shared baseline process
    assert naive.peak_bytes > naive.baseline_bytes
    assert 1.9 * score < naive.extra_bytes < 3 * score
    assert tiled.extra_bytes < score / 4
    assert math.isfinite(tiled.extra_bytes)


@pytest.mark.slow
def test_cli_writes_csv_and_png(tmp_path):
    code = bench.main(["--n", "32,64", "--heads", "2", "--d", "16", "--repeats", "1",
                       "--variants", "naive,tiled", "--no-memory", "--out", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu.csv").open()))
    assert {(r["variant"], r["n"]) for r in rows} == {(v, n) for v in ("naive", "tiled")
                                                     for n in ("32", "64")}
    assert (tmp_path / "bench_cpu.png").stat().st_size > 10_000


def test_tile_count_matches_the_masks():
    assert bench.tiled_tile_count(1000, block_q=256, block_k=96) == 4 * 11
    assert bench.tiled_tile_count(1024, causal=True, block_q=256, block_k=256) == 1 + 2 + 3 + 4
    assert bench.tiled_tile_count(1024, True, window=1024, block_q=256, block_k=256) == 10
    narrow = bench.tiled_tile_count(4096, True, window=128)
    assert narrow < bench.tiled_tile_count(4096, True, window=1024) < bench.tiled_tile_count(4096, True)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_tiled_workers_give_the_same_result_and_leave_threads_alone(workers):
    threads = torch.get_num_threads()
    q, k, v = bench.make_inputs(1, 2, 300, 16)
    for causal in (False, True):
        tiled = bench.tiled_attention(q, k, v, causal, block_q=64, block_k=48, workers=workers)
        assert (tiled - bench.naive_attention(q, k, v, causal)).abs().max() < TOL
    assert torch.get_num_threads() == threads  # the workers' single-threading stays theirs

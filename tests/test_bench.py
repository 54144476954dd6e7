"""course_utils.flash_attention is exact, course_utils.bench's variants agree, and the
harness in tools/bench.py (``task bench``) is well formed.

No test here asserts a speed: timings depend on the machine and its load. Memory is
asserted only where it is a property of the algorithm (an n² matrix or not), with margins
far larger than allocator noise.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_utils import bench, flash_attention
from course_utils.attention import scaled_dot_product_attention as course_attention
from course_utils.masks import causal_mask, sliding_window_mask
from course_utils.measurement import attention_flops

TOL = flash_attention.TILED_TOLERANCE  # fp32 on unit-variance inputs
REPO = Path(__file__).resolve().parents[1]


def _load_harness():
    """tools/bench.py is a script, not a package module: load it by path (once)."""
    if "bench_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_harness", REPO / "tools/bench.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_harness"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["bench_harness"]


harness = _load_harness()


def test_bench_reexports_the_tiled_attention():
    assert bench.tiled_attention is flash_attention.tiled_attention


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
    tiled = flash_attention.tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
    naive = bench.naive_attention(q, k, v, causal)
    assert tiled.shape == (batch, heads, n, d)
    assert (tiled - naive).abs().max() < TOL


@pytest.mark.parametrize("causal", [False, True])
def test_tiled_with_n_not_a_multiple_of_the_blocks(causal):
    q, k, v = bench.make_inputs(1, 3, 1000, 64)  # 1000 = 3·256 + 232; 1000 = 15·64 + 40
    for block_q, block_k in ((256, 256), (64, 96), (1000, 7), (2048, 2048)):
        tiled = flash_attention.tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
        assert (tiled - bench.naive_attention(q, k, v, causal)).abs().max() < TOL


def test_tiled_cross_attention_with_different_lengths():
    q, _, _ = bench.make_inputs(2, 2, 37, 16, seed=1)
    _, k, v = bench.make_inputs(2, 2, 101, 16, seed=2)
    tiled = flash_attention.tiled_attention(q, k, v, block_q=16, block_k=24)
    assert (tiled - bench.naive_attention(q, k, v)).abs().max() < TOL


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 5, 64, 130, 500])
def test_tiled_sliding_window_equals_masked_naive(window, causal):
    q, k, v = bench.make_inputs(1, 2, 203, 16, seed=window)
    tiled = flash_attention.tiled_attention(q, k, v, causal, window=window, block_q=32, block_k=48)
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
    tiled = flash_attention.tiled_attention(q, k, v, block_q=16, block_k=16)
    assert torch.isfinite(tiled).all()
    assert (tiled - bench.naive_attention(q, k, v)).abs().max() < 1e-4


def test_variants_reject_bad_input():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="4-D"):
        flash_attention.tiled_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="last dimension|expected q"):
        bench.naive_attention(q, torch.randn(1, 2, 8, 5), q)
    with pytest.raises(ValueError, match="same length"):
        flash_attention.tiled_attention(q, torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4), causal=True)
    with pytest.raises(ValueError, match="block_q"):
        flash_attention.tiled_attention(q, q, q, block_q=0)
    with pytest.raises(ValueError, match="window"):
        flash_attention.tiled_attention(q, q, q, window=0)
    with pytest.raises(ValueError, match="unknown variant"):
        bench.attention_fn("flash")
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        bench.attention_fn("sdpa[FAST]")


def test_score_matrix_bytes_is_the_size_of_a_real_score_matrix():
    q, k, _ = bench.make_inputs(2, 3, 50, 8)
    scores = q @ k.transpose(-2, -1)  # (B, H, n, n), what naive attention materialises
    assert bench.score_matrix_bytes(2, 3, 50) == scores.numel() * scores.element_size()
    assert bench.score_matrix_bytes(2, 3, 50, bytes_per_element=2) == scores.half().nbytes
    assert bench.score_matrix_bytes(1, 1, 131072) == 64 * 2**30  # the famous 64 GiB
    with pytest.raises(ValueError, match="n: expected an integer ≥ 1"):
        bench.score_matrix_bytes(1, 8, 0)


def test_predicted_memory_ranks_the_variants():
    naive = bench.predicted_extra_bytes("naive", 1, 8, 4096, 64)
    tiled = bench.predicted_extra_bytes("tiled", 1, 8, 4096, 64)
    assert naive > 2 * bench.score_matrix_bytes(1, 8, 4096) > 30 * tiled


def test_sweep_rows_are_well_formed_and_the_cap_skips(tmp_path):
    logged: list[str] = []
    cap = 3 * 2**20  # naive at n=600 needs two 5.8 MB matrices: skipped; tiled fits
    result = harness.run_sweep([32, 600], ["naive", "sdpa", "tiled"], heads=2, d=16, repeats=2,
                             memory_ns=[], memory_cap_bytes=cap, log=logged.append)
    assert result.matmul_gflops > 0 and len(result.rows) == 6
    skipped = result.row("naive", 600)
    assert skipped.skipped.startswith("predicted") and skipped.median_s is None
    assert any("skip naive at n=600" in line for line in logged)
    for row in result.rows:
        if row is skipped:
            continue
        assert row.median_s > 0 and row.min_s <= row.median_s <= row.max_s
        flops = attention_flops(1, 2, row.n, 16)
        assert row.gflops == pytest.approx(flops / row.min_s / 1e9)  # fastest repeat
        assert row.fraction_of_matmul_peak == pytest.approx(row.gflops / result.matmul_gflops)
        assert row.score_matrix_bytes == 2 * row.n**2 * 4 and row.extra_bytes is None
    assert harness.exponents(result) == {}  # two n per variant: too few for a fit
    path = harness.write_csv(result, tmp_path / "sweep.csv")
    lines = list(csv.DictReader(path.open()))
    assert len(lines) == 6 and float(lines[0]["matmul_gflops"]) > 0
    table = harness.summary_table(result)
    assert table.count("\n") == 7 and "skipped: predicted" in table
    with pytest.raises(ValueError, match="device"):
        harness.run_sweep([32], ["naive"], device="tpu", log=None)


def test_plot_sweep_draws_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    result = harness.run_sweep([16, 32, 64, 128], ["sdpa", "tiled"], heads=1, d=8, repeats=1,
                             memory_ns=[], log=None)
    fig = harness.plot_sweep(result)
    time_axis, memory_axis = fig.axes
    assert any("n^" in t.get_text() for t in time_axis.get_legend().get_texts())
    assert memory_axis.get_ylabel() == "peak memory above inputs (MiB)"
    assert "fitted slopes" in time_axis.get_title()  # computed, not a claimed n²


@pytest.mark.slow
def test_memory_probe_sees_the_n_squared_matrix_and_its_absence():
    """A fresh process per case: naive holds ≥ 2 score matrices (scores and weights), the
    tiled one less than a quarter of one. 32 MB matrices: far above allocator noise."""
    n, heads = 2048, 2  # score matrix 32 MB; tiled holds its 1 MB output and a few tiles
    results = harness.measure_memory(
        [harness.MemoryCase("naive", n, heads=heads), harness.MemoryCase("tiled", n, heads=heads)],
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
def test_forked_probes_and_fresh_interpreters_measure_the_same():
    """The probe server's forked children (the default on Linux) and one new interpreter per
    probe (the fallback where the OS cannot fork) agree on what naive attention adds: two
    score matrices, within 10 %."""
    n, heads = 2048, 2
    cases = [harness.MemoryCase("naive", n, heads=heads)]
    forked = harness.measure_memory(cases, fork=True)[0].extra_bytes
    fresh = harness.measure_memory(cases, fork=False)[0].extra_bytes
    score = bench.score_matrix_bytes(1, heads, n)
    assert 1.9 * score < forked < 3 * score and 1.9 * score < fresh < 3 * score
    assert abs(forked - fresh) < 0.1 * fresh


@pytest.mark.slow
@pytest.mark.parametrize("fork", [True, False])
def test_a_failed_probe_is_one_clear_error(fork):
    """A probe that fails (here: a variant that does not exist) stops the measurement with
    one line naming the case and how it ended, forked or not, and leaves no child behind."""
    cases = [harness.MemoryCase("naive", 64, heads=1), harness.MemoryCase("no-such-variant", 64, heads=1)]
    with pytest.raises(harness.ProbeFailed, match="no-such-variant at n = 64") as caught:
        harness.measure_memory(cases, jobs=2, fork=fork)
    assert "\n" not in str(caught.value)
    if fork:
        assert "exited with code 1" in str(caught.value)


@pytest.mark.slow
def test_cli_writes_csv_and_png(tmp_path):
    code = harness.main(["--n", "32,64", "--heads", "2", "--d", "16", "--repeats", "1",
                       "--variants", "naive,tiled", "--no-memory", "--out", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu.csv").open()))
    assert {(r["variant"], r["n"]) for r in rows} == {(v, n) for v in ("naive", "tiled")
                                                     for n in ("32", "64")}
    assert (tmp_path / "bench_cpu.png").stat().st_size > 10_000


def test_tile_count_matches_the_masks():
    assert flash_attention.tile_count(1000, block_q=256, block_k=96) == 4 * 11
    assert flash_attention.tile_count(1024, causal=True, block_q=256, block_k=256) == 1 + 2 + 3 + 4
    assert flash_attention.tile_count(1024, True, window=1024, block_q=256, block_k=256) == 10
    narrow = flash_attention.tile_count(4096, True, window=128)
    assert narrow < flash_attention.tile_count(4096, True, window=1024) < flash_attention.tile_count(4096, True)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_tiled_workers_give_the_same_result_and_leave_threads_alone(workers):
    threads = torch.get_num_threads()
    q, k, v = bench.make_inputs(1, 2, 300, 16)
    for causal in (False, True):
        tiled = flash_attention.tiled_attention(q, k, v, causal, block_q=64, block_k=48, workers=workers)
        assert (tiled - bench.naive_attention(q, k, v, causal)).abs().max() < TOL
    assert torch.get_num_threads() == threads  # the workers' single-threading stays theirs

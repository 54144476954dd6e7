"""Notebook 10's references agree with independent oracles (SDPA, the course's tiled attention,
the float64 softmax); the memory meter of its tiled-attention checker measures what it says.
The typical wrong answers are in tests/test_mutations_nb10.py."""

from __future__ import annotations

import pytest
import torch

from course_utils.exercises.nb10 import check_online_softmax_update, check_score_matrix_bytes
from course_utils.solutions.nb10 import online_softmax_update, score_matrix_bytes, tiled_attention


def test_score_matrix_bytes_reference_passes_and_equals_bench():
    from course_utils import bench

    assert check_score_matrix_bytes(score_matrix_bytes).passed
    assert score_matrix_bytes(1, 8, 4096, 4) == bench.score_matrix_bytes(1, 8, 4096) == 2**29


def test_online_softmax_reference_passes():
    assert check_online_softmax_update(online_softmax_update).passed


def test_online_softmax_folded_over_blocks_is_softmax():
    """The reference, applied block by block, reproduces softmax(s) @ V exactly (float64)."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 23, generator=generator, dtype=torch.float64) * 5
    values = torch.randn(23, 3, generator=generator, dtype=torch.float64)
    state = (torch.full((4, 1), -torch.inf, dtype=torch.float64),
             torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64))
    for start in range(0, 23, 5):
        state = online_softmax_update(*state, scores[:, start:start + 5], values[start:start + 5])
    _, total, acc = state
    expected = torch.softmax(scores, dim=-1) @ values
    assert torch.allclose(acc / total, expected, rtol=0, atol=1e-12)


def test_tiled_reference_equals_sdpa_and_the_course():
    import torch.nn.functional as F

    from course_utils import flash_attention

    generator = torch.Generator().manual_seed(3)
    for causal in (False, True):
        q, k, v = (torch.randn(2, 3, 150, 16, generator=generator) for _ in range(3))
        ours = tiled_attention(q, k, v, causal, block_q=40, block_k=64)
        torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-5, rtol=0)
        course = flash_attention.tiled_attention(q, k, v, causal, block_q=40, block_k=64)
        torch.testing.assert_close(ours, course, atol=1e-6, rtol=0)


def test_memory_meter_sees_the_score_matrix_and_the_tiles():
    """Naive attention's peak grows 16x for 4x the tokens (two n x n matrices), the tiled
    reference's stays O(n); the meter excludes the inputs and counts each storage once."""
    from course_utils import bench
    from course_utils.flash_attention import TensorMemoryMeter, peak_tensor_bytes

    peaks = {}
    for n in (128, 512):
        q, k, v = bench.make_inputs(1, 2, n, 32, seed=0)
        peaks["naive", n] = peak_tensor_bytes(bench.naive_attention, q, k, v)[1]
        peaks["tiled", n] = peak_tensor_bytes(tiled_attention, q, k, v, block_q=64, block_k=64)[1]
        assert peaks["naive", n] >= 2 * bench.score_matrix_bytes(1, 2, n)
    assert peaks["naive", 512] / peaks["naive", 128] > 14
    assert peaks["tiled", 512] / peaks["tiled", 128] < 5
    x = torch.ones(1000)
    with TensorMemoryMeter(exclude=(x,)) as meter:
        y = x[:10] + 1  # 10 floats; the slice of x is not new memory
        view = y[2:]  # a view: no new storage
        del y, view
        z = torch.zeros(250)
    # y (40 B) was released before z (1000 B) was made: the peak is z alone, not 1040
    assert (meter.peak, meter.largest, meter.current) == (1000, 1000, 1000) and z.numel() == 250


def test_stubs_are_not_attempted(learner_mode_env):
    from course_utils.exercises.nb10 import check_tiled_attention

    def stub(*args, **kwargs):
        raise NotImplementedError

    for check in (check_score_matrix_bytes, check_online_softmax_update, check_tiled_attention):
        assert "not attempted" in check(stub).message


@pytest.fixture
def learner_mode_env(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")

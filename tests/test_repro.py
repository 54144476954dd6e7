from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from course_utils.repro import environment_report, seed_everything


def draw():
    return random.random(), np.random.rand(), torch.rand(3).tolist()


def test_same_seed_same_numbers():
    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first


def test_different_seed_different_numbers():
    seed_everything(1)
    first = draw()
    seed_everything(2)
    assert draw() != first


def test_threads_are_fixed(monkeypatch):
    seed_everything(0, threads=1)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("COURSE_NUM_THREADS", "2")
    seed_everything(0)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed_is_rejected(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(bad)


def test_bad_thread_env_is_rejected(monkeypatch):
    monkeypatch.setenv("COURSE_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="COURSE_NUM_THREADS"):
        seed_everything(0)


def test_environment_report_names_the_essentials():
    report = environment_report()
    assert report["torch"].startswith("2.13.0")
    assert report["device"] in ("cpu", "cuda")

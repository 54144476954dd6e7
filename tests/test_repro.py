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


def test_course_device_defaults_to_cpu(monkeypatch):
    from course_utils.repro import course_device

    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert course_device() == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "CPU")
    assert course_device() == torch.device("cpu")


@pytest.mark.parametrize("value", ["gpu", "cuda:0", "tpu"])
def test_course_device_rejects_unknown_names(monkeypatch, value):
    from course_utils.repro import course_device

    monkeypatch.setenv("COURSE_DEVICE", value)
    with pytest.raises(ValueError, match="COURSE_DEVICE must be one of cpu, cuda, mps"):
        course_device()


def test_course_device_says_when_the_device_is_missing(monkeypatch):
    from course_utils.repro import course_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="no cuda device"):
        course_device()

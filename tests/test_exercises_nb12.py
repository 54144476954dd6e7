"""Notebook 12's references agree with independent oracles (course_utils.training and
course_utils.analysis), and its checkers report an unfilled stub as not attempted."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from course_utils.analysis import induction_score
from course_utils.exercises import nb12
from course_utils.solutions import nb12 as sol12
from course_utils.training import TrainConfig, make_optimizer, train

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("check", [nb12.check_lr_at, nb12.check_train_step, nb12.check_induction_score])
def test_stub_is_not_attempted(check):
    result = check(stub)
    assert not result.passed and "not attempted" in result.message


def test_reference_is_filled_in_unattended(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    for check in (nb12.check_lr_at, nb12.check_train_step, nb12.check_induction_score):
        result = check(stub)
        assert result.passed and result.used_reference, result.message


def test_lr_at_equals_the_course_schedule():
    for total, warmup, ratio in ((60, 7, 0.25), (40, 0, 0.1), (9, 8, 0.5), (200, 20, 0.0)):
        config = TrainConfig(steps=total, lr=2e-3, warmup_steps=warmup, min_lr_ratio=ratio)
        for step in range(total):
            assert math.isclose(sol12.lr_at(step, total, 2e-3, warmup, 2e-3 * ratio), config.lr_at(step),
                                rel_tol=1e-9, abs_tol=1e-15)


def test_train_step_reproduces_the_course_loop():
    """The reference step, driven by the course's optimizer and schedule, gives the same
    losses and weights as ``training.train`` on a MiniGPT-like model from course_utils.blocks."""
    from course_utils.blocks import Encoder, TransformerConfig

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            config = TransformerConfig(vocab_size=13, max_seq_len=8, d_model=16, num_heads=2,
                                       num_layers=1, causal=True, norm_first=True, positional="learned",
                                       eps=1e-5)
            self.body = Encoder(config)
            self.head = torch.nn.Linear(16, 13)

        def forward(self, ids):
            return self.head(self.body(ids))

    torch.manual_seed(0)
    model = LM()
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(5)
    batches = [torch.randint(13, (4, 9), generator=generator) for _ in range(5)]
    config = TrainConfig(steps=5, lr=1e-2, warmup_steps=2, grad_clip=0.3, eval_every=5, progress=False)
    feed = iter(batches)
    history = train(model, lambda g: (lambda b: (b[:, :-1], b[:, 1:]))(next(feed)), config, log=None)
    twin.train()
    optimizer = make_optimizer(twin, config)
    losses = [sol12.train_step(twin, optimizer, batch, config.lr_at(step), config.grad_clip)
              for step, batch in enumerate(batches)]
    assert losses == pytest.approx(history.train_loss, rel=1e-6)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_induction_score_equals_course_utils():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(3, 10, 10, generator=generator), -1)
    assert torch.allclose(sol12.induction_score(weights, 1, 4),
                          induction_score(weights[None], 1, 4, exclude_last=True))
    # and by hand: one head attending exactly to i - L + 1 on the second copy scores 1
    perfect = torch.zeros(1, 12, 12)
    for i in range(6, 11):
        perfect[0, i, i - 3] = 1.0
    assert sol12.induction_score(perfect, 2, 4).item() == 1.0

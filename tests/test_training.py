"""course_utils.training: schedule, determinism, that it learns, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_utils.repro import seed_everything
from course_utils.training import History, TrainConfig, lr_at_step, next_token_loss, train


class Bigram(nn.Module):
    def __init__(self, vocab: int = 8) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)  # (B, T, V)


def cyclic_batch(generator: torch.Generator, vocab: int = 8):
    """Sequences k, k+1, k+2 ... mod vocab: the next token is fully predictable."""
    starts = torch.randint(0, vocab, (16, 1), generator=generator)
    seq = (starts + torch.arange(13)) % vocab
    return seq[:, :-1], seq[:, 1:]


def run(seed: int, steps: int = 40, **overrides) -> History:
    seed_everything(seed)
    model = Bigram()
    config = TrainConfig(steps=steps, lr=5e-2, warmup_steps=5, eval_every=10, seed=seed,
                         progress=False, **overrides)
    inputs, targets = cyclic_batch(torch.Generator().manual_seed(9))  # a fixed eval batch
    return train(model, cyclic_batch, config,
                 eval_fn=lambda m: {"loss": next_token_loss(m(inputs), targets).item()})


def test_same_seed_same_history_different_seed_different():
    first, second, other = run(0), run(0), run(1)
    assert first.train_loss == second.train_loss  # bit-identical
    assert first.evals == second.evals
    assert first.train_loss != other.train_loss


def test_it_learns_a_predictable_sequence():
    history = run(0, steps=80)
    assert history.train_loss[0] > 0.8 * math.log(8)
    assert history.metric("loss")[-1] < 0.2 * math.log(8)  # from ~ln 8 (guessing)
    assert history.eval_steps == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_schedule_warmup_peak_and_floor():
    config = TrainConfig(steps=100, lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at_step(0, config) == pytest.approx(1e-3)
    assert lr_at_step(9, config) == pytest.approx(1e-2)
    assert lr_at_step(10, config) == pytest.approx(1e-2)
    assert lr_at_step(99, config) == pytest.approx(1e-3)
    rates = [lr_at_step(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # monotone decay
    with pytest.raises(ValueError, match="step"):
        lr_at_step(100, config)


def test_the_history_records_the_schedule_and_progress_is_rounded(capsys):
    seed_everything(0)
    config = TrainConfig(steps=20, lr=1e-2, warmup_steps=4, eval_every=5, print_every=10, seed=0)
    history = train(Bigram(), cyclic_batch, config, eval_fn=lambda m: {"val": 1.23456})
    assert history.lr == [lr_at_step(s, config) for s in range(20)]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # steps 0, 10, 20
    assert lines[-1].startswith("[####################] step 20/20 | train ")
    assert lines[-1].endswith("| val 1.235")


def test_weight_decay_spares_biases_and_norms():
    from course_utils.training import make_optimizer

    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"warmup_steps": 600}, "warmup_steps"),
        ({"lr": 0.0}, "lr"),
        ({"eval_every": 10, "print_every": 15}, "print_every"),
        ({"grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="logits"):
        next_token_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))

"""course_utils.training: schedule, determinism, that it learns, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_utils.repro import seed_everything
from course_utils.training import History, TrainConfig, next_token_loss, train


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
    assert config.lr_at(0) == pytest.approx(1e-3)
    assert config.lr_at(9) == pytest.approx(1e-2)
    assert config.lr_at(10) == pytest.approx(1e-2)
    assert config.lr_at(99) == pytest.approx(1e-3)  # the floor is reached on the last step
    rates = [config.lr_at(s) for s in range(10, 100)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))  # strictly decaying
    with pytest.raises(ValueError, match="step"):
        config.lr_at(100)


def test_schedule_equals_torch_warmup_then_cosine_annealing():
    """The same schedule built from torch's own schedulers (LinearLR then CosineAnnealingLR)."""
    config = TrainConfig(steps=60, lr=2e-3, warmup_steps=8, min_lr_ratio=0.25)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / config.warmup_steps, total_iters=config.warmup_steps - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.steps - config.warmup_steps - 1, eta_min=config.lr * config.min_lr_ratio)
    schedule = torch.optim.lr_scheduler.SequentialLR(
        optimizer, [warmup, cosine], milestones=[config.warmup_steps])
    torch_rates = []
    for _ in range(config.steps):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert [config.lr_at(s) for s in range(config.steps)] == pytest.approx(torch_rates, rel=1e-9)


def test_no_warmup_starts_at_the_peak_and_full_warmup_never_decays():
    assert TrainConfig(steps=10, lr=1e-2, warmup_steps=0).lr_at(0) == pytest.approx(1e-2)
    flat = TrainConfig(steps=10, lr=1e-2, warmup_steps=10)
    assert flat.lr_at(9) == pytest.approx(1e-2)


def test_the_history_records_the_schedule_and_progress_is_rounded(capsys):
    seed_everything(0)
    config = TrainConfig(steps=20, lr=1e-2, warmup_steps=4, eval_every=5, print_every=10, seed=0)
    history = train(Bigram(), cyclic_batch, config, eval_fn=lambda m: {"val": 1.23456})
    assert history.lr == [config.lr_at(s) for s in range(20)]
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
        ({"threads": 0}, "threads"),
        ({"steps": 2.5}, "steps"),
        ({"lr": float("nan")}, "lr"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="logits"):
        next_token_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_a_custom_loss_fn_and_log_receive_what_train_gives_them():
    seen, lines = [], []

    def loss_fn(model, inputs, targets):
        seen.append((inputs.shape, targets.shape))
        return next_token_loss(model(inputs), targets)

    config = TrainConfig(steps=6, lr=1e-2, warmup_steps=2, eval_every=3, seed=0)
    history = train(Bigram(), cyclic_batch, config, loss_fn=loss_fn, log=lines.append)
    assert seen == [((16, 12), (16, 12))] * 6 and len(history.train_loss) == 6
    assert [line.split(" | ")[0] for line in lines] == [
        "[##########..........] step 3/6", "[####################] step 6/6"]
    assert history.losses is history.train_loss
    with pytest.raises(ValueError, match="no evaluations"):
        history.metric("val")
    silent: list[str] = []
    train(Bigram(), cyclic_batch, config, log=None)
    train(Bigram(), cyclic_batch, TrainConfig(steps=6, warmup_steps=2, eval_every=3, progress=False), log=silent.append)
    assert silent == []


def test_threads_are_set_while_training_and_restored():
    before = torch.get_num_threads()
    seen = []

    def batch(generator):
        seen.append(torch.get_num_threads())
        return cyclic_batch(generator)

    train(Bigram(), batch, TrainConfig(steps=2, warmup_steps=1, eval_every=1, threads=1), log=None)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_a_diverging_run_stops_with_a_clear_error():
    def nan_loss(model, inputs, targets):
        return next_token_loss(model(inputs), targets) * float("nan")

    with pytest.raises(FloatingPointError, match="step 0"):
        train(Bigram(), cyclic_batch, TrainConfig(steps=3, warmup_steps=1), loss_fn=nan_loss, log=None)
    with pytest.raises(ValueError, match="TrainConfig"):
        train(Bigram(), cyclic_batch, {"steps": 3})


def test_an_unavailable_course_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no cuda device"):
        train(Bigram(), cyclic_batch, TrainConfig(steps=1, warmup_steps=0, eval_every=1), log=None)


def test_batches_of_any_shape_move_to_the_device():
    """The loop moves each batch (tensors, tuples, dicts) to course_device()."""
    from course_utils.training import _to

    moved = _to({"a": torch.zeros(2), "b": (torch.ones(1), 3)}, torch.device("meta"))
    assert [moved["a"].device.type, moved["b"][0].device.type, moved["b"][1]] == ["meta", "meta", 3]

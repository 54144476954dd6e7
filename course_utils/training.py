"""A small, seeded, CPU-friendly training loop (notebook 12; reusable by any notebook).

One config dataclass, one function::

    history = train(model, get_batch, TrainConfig(steps=300, lr=3e-3), eval_fn=evaluate)

- AdamW with decoupled weight decay on matrices only (biases, norms and 1-D params are not
  decayed, as in nanoGPT);
- a linear warm-up then a cosine decay to ``min_lr_ratio * lr`` (``lr_at_step``);
- gradient-norm clipping;
- ``eval_fn(model)`` every ``eval_every`` steps (model in eval mode, no grad), recorded in
  the history with the training loss of every step;
- printed progress is a text bar with *rounded* losses and no timings, so a re-run with
  the same seed and thread count prints exactly the same lines (notebook outputs are
  compared by nbval). The wall time is kept in ``history.seconds`` for a separate cell.

Determinism: ``train`` seeds torch with ``config.seed`` and passes ``get_batch`` its own
``torch.Generator``; with a fixed thread count (``course_utils.repro.seed_everything``), the
same model initialisation and the same seed give an identical loss history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of ``train``. ``warmup_steps`` of linear warm-up, then cosine."""

    steps: int = 500
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    eval_every: int = 50  # also evaluates at step 0 and after the last step
    print_every: int | None = None  # print every this many steps (a multiple of eval_every); None = eval_every
    seed: int = 0
    progress: bool = True  # print one rounded line per evaluation

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps must be an int in [0, steps={self.steps}], got {self.warmup_steps!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.print_every is not None and (
            not isinstance(self.print_every, int) or self.print_every <= 0
            or self.print_every % self.eval_every
        ):
            raise ValueError(
                f"print_every must be a positive multiple of eval_every={self.eval_every}, "
                f"got {self.print_every!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")


@dataclass
class History:
    """What ``train`` records. ``evals[k]`` is the dict ``eval_fn`` returned at ``eval_steps[k]``."""

    train_loss: list[float] = field(default_factory=list)  # one per step
    lr: list[float] = field(default_factory=list)  # one per step
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def metric(self, name: str) -> list[float]:
        """The values of one evaluation metric over ``eval_steps``."""
        if self.evals and name not in self.evals[0]:
            raise ValueError(f"unknown metric {name!r}; recorded: {sorted(self.evals[0])}")
        return [e[name] for e in self.evals]


def lr_at_step(step: int, config: TrainConfig) -> float:
    """Learning rate used at optimisation step ``step`` (0-based).

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps``
    steps, then a cosine from ``lr`` down to ``lr * min_lr_ratio`` at the last step.
    """
    if step < 0 or step >= config.steps:
        raise ValueError(f"step must be in [0, {config.steps}), got {step}")
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = config.steps - config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, decay_steps - 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays weight matrices and embeddings, not biases or norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``(B, T, V)`` against targets ``(B, T)`` (nats)."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _logits(output) -> torch.Tensor:
    """Models may return logits or a tuple/obj whose first item / ``.logits`` is logits."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list):
        return output[0]
    raise ValueError(f"cannot find logits in a model output of type {type(output).__name__}")


def _bar(step: int, total: int, width: int = 20) -> str:
    filled = round(width * step / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def train(
    model: nn.Module,
    get_batch: Callable[[torch.Generator], Batch],
    config: TrainConfig,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = next_token_loss,
) -> History:
    """Train ``model`` in place for ``config.steps`` steps; return the ``History``.

    ``get_batch(generator)`` returns ``(inputs, targets)``, e.g. ``(B, T)`` token ids and
    ``(B, T)`` next-token ids, drawing its randomness from ``generator`` only. The model
    maps inputs to logits ``(B, T, V)`` (a tuple's first item or ``.logits`` is accepted).
    ``eval_fn(model)`` returns named floats (e.g. ``{"val": 2.1}``); it runs at step 0,
    every ``eval_every`` steps and after the last step.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    history = History()
    start = time.perf_counter()

    def evaluate(step: int, train_loss: float | None) -> None:
        if eval_fn is None and train_loss is None:
            return
        metrics: dict[str, float] = {}
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in eval_fn(model).items()}
            model.train()
            history.eval_steps.append(step)
            history.evals.append(metrics)
        print_every = config.print_every or config.eval_every
        if config.progress and (step % print_every == 0 or step == config.steps):
            parts = [f"{_bar(step, config.steps)} step {step:>{len(str(config.steps))}}/{config.steps}"]
            if train_loss is not None:
                parts.append(f"train {train_loss:.3f}")
            parts += [f"{name} {value:.3f}" for name, value in metrics.items()]
            print(" | ".join(parts))

    model.train()
    evaluate(0, None)
    window: list[float] = []  # train losses since the last print
    for step in range(config.steps):
        lr = lr_at_step(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = get_batch(generator)
        loss = loss_fn(_logits(model(inputs)), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower lr?")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.train_loss.append(loss.item())
        history.lr.append(lr)
        window.append(loss.item())
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            # the printed train loss is the mean over the steps since the last print
            evaluate(done, sum(window) / len(window))
            if done % (config.print_every or config.eval_every) == 0 or done == config.steps:
                window = []
    model.eval()
    history.seconds = time.perf_counter() - start
    return history

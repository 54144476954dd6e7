"""Used in notebooks 08, 12: the course's one training loop, seeded and CPU-friendly.

One config dataclass, one schedule, one function::

    history = train(model, get_batch, TrainConfig(steps=300, lr=3e-3), eval_fn=evaluate)

- AdamW with decoupled weight decay on matrices only (biases, norms and 1-D params are not
  decayed, as in nanoGPT);
- one learning-rate schedule, ``TrainConfig.lr_at(step)``: a linear warm-up, then a cosine
  decay that reaches ``min_lr_ratio * lr`` at the last step;
- gradient-norm clipping;
- ``eval_fn(model)`` every ``eval_every`` steps (model in eval mode, no grad), recorded in
  the history with the training loss and learning rate of every step;
- ``loss_fn(model, inputs, targets)`` computes the loss of one batch: by default the
  next-token cross-entropy of a model that maps inputs to logits (notebook 12's MiniGPT);
  the date T5 of notebook 08 passes its own (``seq2seq.seq2seq_loss``, with
  ``seq2seq.date_batches`` and ``seq2seq.date_train_config``);
- printed progress is a text bar with *rounded* losses and no timings, so a re-run with
  the same seed and thread count prints exactly the same lines (notebook outputs are
  compared by nbval). The wall time is kept in ``history.seconds`` for a separate cell.

Determinism: ``train`` seeds torch with ``config.seed`` and passes ``get_batch`` its own
``torch.Generator``; with a fixed thread count (``config.threads`` or
``course_utils.repro.seed_everything``), the same model initialisation and the same seed
give an identical loss history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.params import ParameterError, positive_int
from course_utils.repro import course_device

Batch = tuple[Any, torch.Tensor]
LossFn = Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of ``train``. ``warmup_steps`` of linear warm-up, then cosine."""

    steps: int = 500
    lr: float = 3e-3
    warmup_steps: int = 50
    # the cosine ends at lr * min_lr_ratio on the last step
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    # max global gradient norm; None = no clipping
    grad_clip: float | None = 1.0
    # evaluate (and print) every this many steps; also at step 0 and after the last step
    eval_every: int = 50
    # print every this many steps (a multiple of eval_every); None = eval_every
    print_every: int | None = None
    seed: int = 0
    # print one rounded line per print_every steps
    progress: bool = True
    # torch threads while training (restored afterwards); None = leave the current setting
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every"):
            positive_int(name, getattr(self, name))
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or not 0 <= self.warmup_steps <= self.steps:
            raise ParameterError(
                "warmup_steps", f"an integer from 0 to steps = {self.steps}", self.warmup_steps
            )
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) \
                or not math.isfinite(self.lr) or not self.lr > 0:
            raise ParameterError("lr", "a finite number > 0", self.lr)
        if not isinstance(self.min_lr_ratio, int | float) or not 0 <= self.min_lr_ratio <= 1:
            raise ParameterError("min_lr_ratio", "a number from 0 to 1", self.min_lr_ratio)
        if not isinstance(self.weight_decay, int | float) or not self.weight_decay >= 0:
            raise ParameterError("weight_decay", "a number ≥ 0", self.weight_decay)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ParameterError("betas", "two numbers in [0, 1)", self.betas)
        if self.print_every is not None and (
            isinstance(self.print_every, bool) or not isinstance(self.print_every, int)
            or self.print_every <= 0 or self.print_every % self.eval_every
        ):
            raise ParameterError(
                "print_every", f"None or a positive multiple of eval_every={self.eval_every}",
                self.print_every,
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ParameterError("grad_clip", "a number > 0 or None", self.grad_clip)
        if self.threads is not None:
            positive_int("threads", self.threads)

    def lr_at(self, step: int) -> float:
        """Learning rate used at optimisation step ``step`` (0-based, ``0 <= step < steps``).

        Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps``
        steps (step 0 already learns), then a cosine from ``lr`` that reaches
        ``lr * min_lr_ratio`` exactly at the last step ``steps - 1``.
        """
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < self.steps:
            raise ValueError(f"step must be an integer in [0, {self.steps}), got {step!r}")
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps - 1)  # 0 -> 1
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)


@dataclass
class History:
    """What ``train`` records. ``evals[k]`` is the dict ``eval_fn`` returned at ``eval_steps[k]``."""

    train_loss: list[float] = field(default_factory=list)  # one per step
    lr: list[float] = field(default_factory=list)  # one per step
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def losses(self) -> list[float]:
        """The training loss of every step (the name notebook 08 uses; = ``train_loss``)."""
        return self.train_loss

    def metric(self, name: str) -> list[float]:
        """The values of one evaluation metric over ``eval_steps``."""
        if not self.evals:
            raise ValueError(f"no evaluations were recorded (no eval_fn), so no metric {name!r}")
        if name not in self.evals[0]:
            raise ValueError(f"unknown metric {name!r}; recorded: {sorted(self.evals[0])}")
        return [e[name] for e in self.evals]


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


def language_model_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default ``loss_fn``: ``next_token_loss(model(inputs), targets)``, inputs ``(B, T)``."""
    return next_token_loss(_logits(model(inputs)), targets)


def _bar(step: int, total: int, width: int = 20) -> str:
    filled = round(width * step / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _to(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, or a tuple/list/dict of them) on ``device``; a no-op on the CPU."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to(value, device) for key, value in batch.items()}
    return batch


def train(
    model: nn.Module,
    get_batch: Callable[[torch.Generator], Batch],
    config: TrainConfig,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    loss_fn: LossFn = language_model_loss,
    log: Callable[[str], None] | None = print,
) -> History:
    """Train ``model`` in place for ``config.steps`` steps; return the ``History``.

    ``get_batch(generator)`` returns ``(inputs, targets)``, e.g. ``(B, T)`` token ids and
    ``(B, T)`` next-token ids, drawing its randomness from ``generator`` only.
    ``loss_fn(model, inputs, targets)`` returns the batch's scalar loss; the default maps
    inputs to logits ``(B, T, V)`` (a tuple's first item or ``.logits`` is accepted) and
    takes the next-token cross-entropy. ``eval_fn(model)`` returns named floats (e.g.
    ``{"val": 2.1}``); it runs at step 0, every ``eval_every`` steps and after the last step.
    Progress lines go to ``log`` (``None`` or ``config.progress=False``: silent).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # COURSE_DEVICE=cuda|mps (opt-in): the steps run there; evaluation and the returned
    # model stay on the CPU, so the notebook's other cells are unchanged.
    device = course_device()
    model.to(device)
    optimizer = make_optimizer(model, config)
    history = History()
    print_every = config.print_every or config.eval_every
    width = len(str(config.steps))

    def report(step: int, train_loss: float | None) -> None:
        metrics: dict[str, float] = {}
        if eval_fn is not None:
            model.eval().to("cpu")
            with torch.no_grad():
                metrics = {k: float(v) for k, v in eval_fn(model).items()}
            model.train().to(device)
            history.eval_steps.append(step)
            history.evals.append(metrics)
        if log is None or not config.progress or (train_loss is None and not metrics):
            return
        if step % print_every == 0 or step == config.steps:
            parts = [f"{_bar(step, config.steps)} step {step:>{width}}/{config.steps}"]
            if train_loss is not None:
                parts.append(f"train {train_loss:.3f}")
            parts += [f"{name} {value:.3f}" for name, value in metrics.items()]
            log(" | ".join(parts))

    start = time.perf_counter()
    try:
        model.train()
        report(0, None)
        window: list[float] = []  # train losses since the last printed line
        for step in range(config.steps):
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = get_batch(generator)
            loss = loss_fn(model, _to(inputs, device), _to(targets, device))
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
                report(done, sum(window) / len(window))
                if done % print_every == 0 or done == config.steps:
                    window = []
    finally:
        model.eval().to("cpu")
        torch.set_num_threads(previous_threads)
    history.seconds = time.perf_counter() - start
    return history

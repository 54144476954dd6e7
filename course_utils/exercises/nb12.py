"""Used in notebook 12: checkers of its exercises (the training step and learning-rate
schedule of MiniGPT, and the induction score).

- ``check_lr_at``: the learner's schedule, at every step of several schedules, against the
  course's one schedule ``course_utils.training.TrainConfig.lr_at``;
- ``check_train_step``: the learner's training step, run for a few steps from the same
  initial weights on the same batches, against the course's loop ``course_utils.training.train``
  (losses and weights); the gradients the optimizer sees at each step are compared with the
  correct clipped gradients, to say *which* part of the step is wrong;
- ``check_induction_score``: against ``course_utils.analysis.induction_score``'s definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb12 as solutions
from course_utils.training import TrainConfig, make_optimizer, train

FILLED_NOTE = " (reference solution filled in: COURSE_FILL_SOLUTIONS=1)"


def run_against_course(
    name: str,
    learner_fn: Callable[..., Any],
    solution_fn: Callable[..., Any],
    runner: Callable[[Callable[..., Any]], Callable[..., Any]],
    oracle: Callable[..., Any],
    cases: list[tuple[tuple, dict]],
    diagnose: Callable[[Any, Any, tuple, dict], str | None],
) -> CheckResult:
    """``run_check`` of ``runner(learner_fn)`` against an ``oracle`` computed by the course.

    ``run_check`` would replace an unfilled stub by the *oracle* (checking the course against
    itself); here, with ``COURSE_FILL_SOLUTIONS=1``, the reference solution is run through the
    same ``runner`` instead, so an unattended run really checks the solution.
    """
    return run_check(name, runner(learner_fn), oracle, cases, diagnose, solution_fn=runner(solution_fn))



def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


# --------------------------------------------------------------------------- lr_at

# (total_steps, peak_lr, warmup_steps, min_lr): the notebook's MiniGPT schedule among them
_SCHEDULES = [
    (100, 1e-2, 10, 1e-3),
    (650, 3e-3, 50, 3e-4),
    (50, 3e-3, 0, 3e-4),  # no warm-up: step 0 is already at the peak
    (12, 1e-3, 11, 1e-4),  # one step after the warm-up: the cosine's denominator max(1, 0)
]


def _course_schedule(total: int, peak: float, warmup: int, low: float) -> list[float]:
    config = TrainConfig(steps=total, lr=peak, warmup_steps=warmup, min_lr_ratio=low / peak)
    return [config.lr_at(step) for step in range(total)]


def _schedule_runner(lr_at: Callable[..., float]) -> Callable[..., list[float]]:
    def run(total: int, peak: float, warmup: int, low: float) -> list[float]:
        values = []
        for step in range(total):
            try:
                value = lr_at(step, total, peak, warmup, low)
            except (NotImplementedError, TimeoutError):
                raise
            except ZeroDivisionError as error:
                raise ValueError(
                    f"division by zero at step {step} (total_steps={total}, warmup_steps={warmup}): "
                    "a step count in a denominator can be 0 here (no warm-up, or a single step "
                    "after it); the course divides by at least 1"
                ) from error
            except Exception as error:
                raise type(error)(f"at step {step} (total_steps={total}, warmup_steps={warmup}): "
                                  f"{error}") from error
            values.append(value)
        return values

    return run


def _cosine(step: int, total: int, peak: float, warmup: int, low: float, denominator: int | None = None,
            start: int | None = None) -> float:
    start = warmup if start is None else start
    denominator = max(1, total - warmup - 1) if denominator is None else max(1, denominator)
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * (step - start) / denominator))


def _diagnose_schedule(got, expected, args, kwargs) -> str | None:
    total, peak, warmup, low = args
    try:
        got = [float(v) for v in got]
    except (TypeError, ValueError):
        kinds = sorted({type(v).__name__ for v in got})
        return f"returned {', '.join(kinds)}: expected a float (the learning rate at that step)"
    bad = [s for s in range(total) if not _close(got[s], expected[s])]
    if not bad:
        return None
    s = bad[0]
    worst = max(bad, key=lambda t: abs(got[t] - expected[t]))  # where the slip shows most
    where = f"schedule total_steps={total}, peak_lr={peak:g}, warmup_steps={warmup}, min_lr={low:g}"
    head = f"{where}: step {worst} gives {got[worst]:.6g}, the course's schedule {expected[worst]:.6g}"
    if s < warmup:
        if _close(got[s], peak * s / warmup):
            return (f"{head}: the warm-up is one step late — step 0 gets learning rate 0, a wasted "
                    "step; in the course step 0 already learns and the last warm-up step "
                    "(warmup_steps - 1) reaches peak_lr")
        if _close(got[s], peak * (s + 1) / (warmup + 1)):
            return f"{head}: the warm-up reaches peak_lr one step too late (at step warmup_steps, not warmup_steps - 1)"
        return f"{head}: during the warm-up the rate grows linearly from peak_lr / warmup_steps to peak_lr"
    if s == warmup and warmup and _close(got[s], peak * (s + 1) / warmup):
        return (f"{head}: at step warmup_steps your schedule is still warming up (above peak_lr): "
                "the warm-up covers steps 0 … warmup_steps - 1 only")
    after = range(warmup, total)

    def follows(fn: Callable[[int], float]) -> bool:
        return all(_close(got[t], fn(t)) for t in after)

    if low and follows(lambda t: _cosine(t, total, peak, warmup, 0.0)):
        return f"{head}: the cosine decays to 0 instead of to min_lr = {low:g}"
    if follows(lambda t: _cosine(t, total, peak, warmup, low * peak)):
        return f"{head}: min_lr is the floor learning rate itself, not a fraction of peak_lr"
    if follows(lambda t: _cosine(t, total, peak, warmup, low, denominator=total - warmup)):
        return (f"{where}: the cosine does not reach min_lr at the last step (step {total - 1} gives "
                f"{got[-1]:.6g}): its progress must go from 0 at step warmup_steps to exactly 1 "
                "at the last step, total_steps - 1")
    if warmup and follows(lambda t: _cosine(t, total, peak, warmup, low, denominator=total - 1, start=0)):
        return (f"{head}: the cosine's progress is counted from step 0; it must start at the end "
                "of the warm-up (progress 0 at step warmup_steps)")
    if total - warmup > 2 and follows(
            lambda t: peak + (low - peak) * (t - warmup) / max(1, total - warmup - 1)):
        return f"{head}: this decays linearly; the course's schedule follows a cosine"
    if s == warmup:
        return f"{head}: right after the warm-up the cosine must start at peak_lr"
    if s == total - 1:
        return f"{head}: the last step must be at min_lr"
    return head


def check_lr_at(lr_at: Callable[..., float]) -> CheckResult:
    """``lr_at(step, total_steps, peak_lr, warmup_steps, min_lr) -> float``, at every step of
    four schedules (the notebook's MiniGPT schedule among them), against the course's
    ``TrainConfig.lr_at``."""
    cases = [(schedule, {}) for schedule in _SCHEDULES]
    return run_against_course("lr_at", lr_at, solutions.lr_at, _schedule_runner, _course_schedule,
                            cases, _diagnose_schedule)


# --------------------------------------------------------------------------- train_step


class _TinyLM(nn.Module):
    """``(B, T)`` ids -> ``(B, T, V)`` logits: embeddings + positions, one causal attention
    layer with a residual, a norm and a head. Small enough to train in milliseconds."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token(ids) + self.position(torch.arange(ids.shape[1]))  # (B, T, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(self.norm(x))  # (B, T, V)


@dataclass(frozen=True)
class _StepCase:
    seed: int
    steps: int = 3
    batch: int = 4
    length: int = 8  # T + 1 tokens per window
    vocab: int = 11
    lr: float = 2e-2
    warmup: int = 2
    grad_clip: float = 0.1

    def model(self) -> _TinyLM:
        torch.manual_seed(self.seed)
        return _TinyLM(self.vocab, 16, self.length)

    def batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed + 100)
        return [torch.randint(self.vocab, (self.batch, self.length), generator=generator)
                for _ in range(self.steps)]

    def config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, warmup_steps=self.warmup,
                           grad_clip=self.grad_clip, eval_every=self.steps, progress=False,
                           seed=self.seed)


_STEP_CASES = [
    _StepCase(seed=0),  # clipping active (grad_clip 0.1)
    _StepCase(seed=1, steps=4, batch=3, length=10, lr=1e-2, warmup=1, grad_clip=0.5),
    _StepCase(seed=2, grad_clip=1e3),  # clipping inactive
]


@dataclass
class _Trajectory:
    losses: list[Any]
    state: dict[str, torch.Tensor]
    # per call of the learner's step: optimizer.step() calls, and at the (first) one the
    # learning rates, the gradients and the weights before the update
    step_calls: list[int] = field(default_factory=list)
    lrs: list[list[float]] = field(default_factory=list)
    grads: list[list[torch.Tensor | None]] = field(default_factory=list)
    params_before: list[list[torch.Tensor]] = field(default_factory=list)
    grads_after: list[list[torch.Tensor | None]] = field(default_factory=list)


def _snapshot_grads(params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


def _course_train(case: _StepCase) -> _Trajectory:
    """The course's ``train`` on the case's model and batches (the oracle)."""
    with torch.random.fork_rng(devices=[]):
        model = case.model()
        batches = iter(case.batches())

        def get_batch(generator: torch.Generator):
            tokens = next(batches)
            return tokens[:, :-1], tokens[:, 1:]

        history = train(model, get_batch, case.config(), log=None)
    return _Trajectory(history.train_loss, {k: v.detach().clone() for k, v in model.state_dict().items()})


def _step_runner(train_step: Callable[..., Any]) -> Callable[[_StepCase], _Trajectory]:
    def run(case: _StepCase) -> _Trajectory:
        with torch.random.fork_rng(devices=[]):
            model = case.model()
            config = case.config()
            optimizer = make_optimizer(model, config)
            params = list(model.parameters())
            record = _Trajectory([], {})
            inner_step = optimizer.step
            calls = [0]

            def recording_step(*args, **kwargs):
                if calls[0] == 0:
                    record.lrs.append([group["lr"] for group in optimizer.param_groups])
                    record.grads.append(_snapshot_grads(params))
                    record.params_before.append([p.detach().clone() for p in params])
                calls[0] += 1
                return inner_step(*args, **kwargs)

            optimizer.step = recording_step  # the learner calls optimizer.step() as usual
            for step, tokens in enumerate(case.batches()):
                calls[0] = 0
                record.losses.append(train_step(model, optimizer, tokens.clone(), config.lr_at(step),
                                                case.grad_clip))
                record.step_calls.append(calls[0])
                if calls[0] == 0:  # keep the lists aligned with the steps
                    record.lrs.append([])
                    record.grads.append(_snapshot_grads(params))
                    record.params_before.append([p.detach().clone() for p in params])
                record.grads_after.append(_snapshot_grads(params))
            record.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return record

    return run


def _true_grads(case: _StepCase, params_before: list[torch.Tensor], tokens: torch.Tensor):
    """(raw, clipped) gradients of the correct next-token loss at the given weights."""
    with torch.random.fork_rng(devices=[]):
        model = case.model()
    with torch.no_grad():
        for p, value in zip(model.parameters(), params_before, strict=True):
            p.copy_(value)
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()
    raw = [p.grad.detach().clone() for p in model.parameters()]
    nn.utils.clip_grad_norm_(model.parameters(), case.grad_clip)
    return raw, [p.grad.detach().clone() for p in model.parameters()]


def _global_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def _same(grads: list[torch.Tensor | None], reference: list[torch.Tensor]) -> bool:
    return all(g is not None and torch.allclose(g, r, rtol=1e-4, atol=1e-7)
               for g, r in zip(grads, reference, strict=True))


def _clip(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    scale = min(1.0, max_norm / (_global_norm(grads) + 1e-6))  # as torch's clip_grad_norm_
    return [g * scale for g in grads]


def _loss_variants(case: _StepCase, tokens: torch.Tensor) -> dict[str, float]:
    """Losses of typical slips in the forward pass, at the initial weights."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model = case.model()

        def ce(logits: torch.Tensor, targets: torch.Tensor) -> float:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()

        right = ce(model(tokens[:, :-1]), tokens[:, 1:])
        return {
            "the targets are not shifted: position t is scored on its own token (tokens[:, :-1]), "
            "not on the next one": ce(model(tokens[:, :-1]), tokens[:, :-1]),
            "inputs and targets are swapped: the model reads tokens[:, 1:] and is scored on the "
            "tokens before them": ce(model(tokens[:, 1:]), tokens[:, :-1]),
            "the model read the whole window and was scored on it: nothing is shifted, so it "
            "learns to copy its input": ce(model(tokens), tokens),
            "the loss is summed over the B·T positions; the course takes the mean":
                right * tokens.shape[0] * (tokens.shape[1] - 1),
        }


def _diagnose_step(got: _Trajectory, expected: _Trajectory, args, kwargs) -> str | None:
    (case,) = args
    batches = case.batches()
    losses = []
    for step, loss in enumerate(got.losses):
        if isinstance(loss, torch.Tensor) and loss.numel() != 1:
            return f"step {step}: returned a tensor of shape {tuple(loss.shape)}; expected the scalar loss"
        try:
            losses.append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))
        except (TypeError, ValueError):
            return f"step {step}: returned {type(loss).__name__}; expected the loss as a float"
    for step, calls in enumerate(got.step_calls):
        if calls == 0:
            return f"step {step}: optimizer.step() was never called, so the weights never change"
        if calls > 1:
            return f"step {step}: optimizer.step() was called {calls} times in one training step"
    if not math.isclose(losses[0], expected.losses[0], rel_tol=1e-5):
        for problem, value in _loss_variants(case, batches[0]).items():
            if math.isclose(losses[0], value, rel_tol=1e-5):
                return f"step 0: loss {losses[0]:.4f}, expected {expected.losses[0]:.4f}: {problem}"
        return (f"step 0: loss {losses[0]:.4f}, expected {expected.losses[0]:.4f} (the mean "
                "cross-entropy of logits (B·T, V) against the next tokens, before the update)")
    lr_of = case.config().lr_at
    for step in range(case.steps):
        lr = lr_of(step)
        if any(not math.isclose(value, lr, rel_tol=1e-9) for value in got.lrs[step]):
            return (f"step {step}: the optimizer stepped with learning rate {got.lrs[step][0]:.4g}, "
                    f"but lr = {lr:.4g} was passed: set it in every group of "
                    "optimizer.param_groups before optimizer.step()")
        raw, clipped = _true_grads(case, got.params_before[step], batches[step])
        grads = got.grads[step]
        if all(g is None or not g.any() for g in grads):
            return (f"step {step}: the gradients were zero (or None) when optimizer.step() ran: "
                    "they were cleared between backward() and step()")
        if _same(grads, clipped):
            continue
        previous = got.grads_after[step - 1] if step else None
        if previous is not None and any(g is not None and g.any() for g in previous):
            stale = [r if p is None else p + r for p, r in zip(previous, raw, strict=True)]
            if _same(grads, _clip(stale, case.grad_clip)) or _same(grads, stale):
                return (f"step {step}: the gradients of the previous step were still in .grad, so "
                        "backward() added to them (gradients accumulate): clear them every step")
        if _same(grads, raw):
            return (f"step {step}: optimizer.step() used unclipped gradients (global norm "
                    f"{_global_norm(raw):.3g} > grad_clip = {case.grad_clip:g}): clip after "
                    "backward() and before optimizer.step()")
        diff = max(float((g - c).abs().max()) if g is not None else float(c.abs().max())
                   for g, c in zip(grads, clipped, strict=True))
        return (f"step {step}: the gradients optimizer.step() saw differ from the correct clipped "
                f"gradients of the next-token loss by up to {diff:.2e}")
    for step, (a, b) in enumerate(zip(losses, expected.losses, strict=True)):
        if not math.isclose(a, b, rel_tol=1e-4):
            return f"step {step}: loss {a:.5f}, the course's training loop {b:.5f}"
    worst = max(float((got.state[k] - v).abs().max()) for k, v in expected.state.items())
    if worst > 1e-5:
        return (f"after {case.steps} steps the weights differ from the course's training loop by up "
                f"to {worst:.2e}")
    return None


def check_train_step(train_step: Callable[..., Any]) -> CheckResult:
    """``train_step(model, optimizer, tokens (B, T + 1), lr, grad_clip) -> float``: run for a
    few steps from the same initial weights on the same batches as the course's
    ``training.train``, it must give the same losses and weights (three small models)."""
    cases = [((case,), {}) for case in _STEP_CASES]
    return run_against_course("train_step", train_step, solutions.train_step, _step_runner,
                            _course_train, cases, _diagnose_step)


# --------------------------------------------------------------------------- induction score


def _induction_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    cases = []
    for heads, seq_len, start, length in ((2, 12, 2, 5), (3, 16, 0, 8), (1, 20, 6, 7)):
        scores = torch.randn(heads, seq_len, seq_len, generator=generator) * 2
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        cases.append(((weights, start, length), {}))
    return cases


def _course_induction_score(weights: torch.Tensor, first_start: int, block_len: int) -> torch.Tensor:
    from course_utils.analysis import induction_score

    return induction_score(weights[None], first_start, block_len, exclude_last=True)


def check_induction_score(
    induction_score: Callable[[torch.Tensor, int, int], torch.Tensor],
) -> CheckResult:
    """``induction_score(weights (H, T, T), first_start, block_len) -> (H,)``, against
    ``course_utils.analysis.induction_score(..., exclude_last=True)``."""

    def diagnose(got, expected, args, kwargs):
        weights, start, length = args
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one score per head)"
        if torch.allclose(got, expected, atol=1e-6):
            return None
        second = start + length
        every = torch.arange(second, second + length)  # all queries of the second copy
        if torch.allclose(got, weights[:, every, every - length + 1].mean(-1), atol=1e-6):
            return ("you included the last query of the second copy: the token after it is not "
                    "part of the copy (at the end of a sequence it does not exist), so copying "
                    "predicts nothing there; stop one query earlier")

        def matches(offset: int) -> bool:  # attention to key i + offset, with or without the last query
            return any(torch.allclose(got, weights[:, q, q + offset].mean(-1), atol=1e-6)
                       for q in (every, every[:-1]))

        if matches(-length):
            return ("you measured attention to i - block_len: that is the earlier copy of the "
                    "*same* token (a duplicate-token head); an induction head looks one further, "
                    "at the token that came next")
        if matches(-1):
            return "that is the previous-token score (key i - 1), not the induction score"
        first = torch.arange(start, second)
        if any(torch.allclose(got, weights[:, q, (q - length + 1).clamp_min(0)].mean(-1), atol=1e-6)
               for q in (first, first[:-1])):
            return "use the queries of the second copy (first_start + block_len …), not the first"
        return f"got {got.tolist()}, expected {expected.tolist()}"

    return run_against_course("induction_score", induction_score, solutions.induction_score,
                            lambda fn: fn, _course_induction_score, _induction_cases(), diagnose)

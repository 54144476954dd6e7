"""The attention-cost benchmark harness behind ``task bench`` (and notebook 10's sweep).

``python tools/bench.py`` (``task bench``; ``--help`` for the options) times every attention
variant of ``course_utils.bench`` at every n, measures its real peak memory, fits log-log
exponents and writes ``results/bench_<device>[_causal].csv`` and ``.png``.

- Time: ``course_utils.measurement.time_call`` (warm-up, repeats; the fastest repeat is
  the least disturbed, so GFLOP/s and fits use it), against ``matmul_peak_gflops``
  measured in the same run: the same yardstick as notebook 07.
- Memory (CPU): a fresh process per case reads its own peak RSS, minus an identical
  baseline process that stops before the attention call (each forked from one server
  process that imported torch once, where the OS can fork); CUDA: the allocator's peak.
- Fits: ``course_utils.measurement.fit_power_law`` (Theil–Sen, with a 95 % interval).

This is build and measurement tooling, not course material: the pieces a learner reads
are in ``course_utils`` (``bench``, ``flash_attention``, ``measurement``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch

from course_utils.bench import (
    attention_fn,
    available_sdpa_backends,
    default_variants,
    make_inputs,
    predicted_extra_bytes,
    score_matrix_bytes,
)
from course_utils.flash_attention import DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q
from course_utils.measurement import (
    PowerLawFit,
    attention_flops,
    fit_power_law,
    format_bytes,
    matmul_peak_gflops,
    time_call,
)
from course_utils.params import positive_int
from course_utils.repro import course_device

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve()


# --------------------------------------------------------------------------------------
# Peak memory: a fresh process per case (CPU) or the CUDA allocator's peak
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCase:
    """One memory measurement: a variant on ``(batch, heads, n, d)`` inputs."""

    variant: str
    n: int
    batch: int = 1
    heads: int = 8
    d: int = 64
    causal: bool = False
    block_q: int = DEFAULT_BLOCK_Q
    block_k: int = DEFAULT_BLOCK_K
    threads: int = 2


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of the process that ran the case, of the baseline process, and the gap."""

    case: MemoryCase
    peak_bytes: int
    baseline_bytes: int

    @property
    def extra_bytes(self) -> int:
        """What the attention call added on top of interpreter, torch and inputs."""
        return max(0, self.peak_bytes - self.baseline_bytes)


def _maxrss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux, read ``VmHWM`` (the peak of this process image) rather than ``ru_maxrss``:
    ``ru_maxrss`` also keeps the peak of the image before ``exec``, i.e. the (forked) parent,
    so a probe started from a 450 MB Jupyter kernel or pytest would report ≥ 450 MB
    whatever it did. Elsewhere it is ``ru_maxrss`` (macOS reports bytes, Linux KiB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (and ``ru_maxrss``) to its current RSS, if Linux allows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), if this libc has it.

    Otherwise a later allocation could reuse pages freed by the warm-up, which are still
    resident, and the attention call would seem to need nothing.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _probe(case: MemoryCase, run: bool) -> int:
    """Body of a probe process: inputs, a tiny warm-up of every variant, then (maybe) the case.

    The warm-up loads the same code, kernels and thread pools in the baseline and the
    measured process, so the difference of their peaks is the attention call itself.
    """
    torch.set_num_threads(case.threads)
    q, k, v = make_inputs(case.batch, case.heads, case.n, case.d)
    # Small, but more than one query block: the tiled variant starts its worker threads
    # (thread stacks, malloc arenas, BLAS buffers: a one-off cost) here, not in the measured call.
    tiny = make_inputs(1, 2, 2 * case.block_q + 1, case.d, seed=1)
    for variant in ("naive", "tiled", "sdpa", *[f"sdpa[{b}]" for b in available_sdpa_backends()]):
        attention_fn(variant, case.causal, case.block_q, case.block_k)(*tiny)
    gc.collect()
    _release_free_memory()
    # Import and warm-up left transient peaks above what is resident now; forget them, or
    # they would hide any call smaller than them (Linux ≥ 4.0; elsewhere the gap shrinks).
    _reset_peak_rss()
    if run:
        out = attention_fn(case.variant, case.causal, case.block_q, case.block_k)(q, k, v)
        del out
    return _maxrss_bytes()


def _run_probe(case: MemoryCase, run: bool, python: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(case.threads)
    payload = json.dumps({"case": asdict(case), "run": run})
    return subprocess.Popen(
        [python, str(HARNESS), "--probe", payload],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


PROBE_TIMEOUT_S = 600  # one probe server (all its probes); a hung child must not hang the sweep


class ProbeFailed(RuntimeError):
    """A memory probe did not report its peak (the message says which case and why)."""


def _why(status: int) -> str:
    """A child's wait status in words: its exit code, or the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with code {code}"
    signal_number = -code
    hint = " (out of memory?)" if signal_number == 9 else ""
    return f"was killed by signal {signal_number}{hint}"


def _fork_probes(tasks: Sequence[tuple[MemoryCase, bool]], jobs: int) -> list[int]:
    """Body of the probe server: one child forked per task, ``jobs`` at a time; their peaks.

    This process has imported torch and the harness and must have run no tensor operation
    (the harness runs none at import), so no torch thread pool exists to be broken by the
    fork. Each child therefore starts as a fresh process that needs no start-up of its own:
    a probe costs what its case costs, not Python's and torch's one or two seconds of
    imports. A child runs ``_probe`` and writes its peak to a pipe. If one fails, the
    others are stopped and ``ProbeFailed`` names the case.
    """
    results: list[int | None] = [None] * len(tasks)
    running: dict[int, tuple[int, int]] = {}  # pid -> (task index, read end of its pipe)

    def reap() -> None:
        pid, status = os.wait()
        index, read_fd = running.pop(pid)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read().decode()
        if os.waitstatus_to_exitcode(status) != 0 or not answer:
            case, run = tasks[index]
            what = "its baseline" if not run else f"{case.variant} at n = {case.n}"
            raise ProbeFailed(f"the memory probe for {what} {_why(status)}")
        results[index] = int(answer)

    try:
        for index, (case, run) in enumerate(tasks):
            if len(running) >= jobs:
                reap()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: measure, answer, leave without running any parent cleanup
                code = 1
                try:
                    os.close(read_fd)
                    os.write(write_fd, str(_probe(case, run)).encode())
                    code = 0
                except BaseException:  # noqa: BLE001 - the parent reports the failed probe
                    import traceback

                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(write_fd)
            running[pid] = (index, read_fd)
        while running:
            reap()
    finally:  # after a failure: stop and reap the children still running
        for pid, (_, read_fd) in list(running.items()):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(read_fd)
    return [int(r) for r in results]


def _run_probe_server(tasks: Sequence[tuple[MemoryCase, bool]], jobs: int, python: str) -> list[int]:
    """Start ``python tools/bench.py --probe-server`` once; it forks a child per task."""
    threads = {case.threads for case, _ in tasks}
    if len(threads) != 1:
        raise ValueError(f"one probe server runs one thread count, got {sorted(threads)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads.pop())
    payload = json.dumps({"jobs": jobs, "tasks": [{"case": asdict(c), "run": r} for c, r in tasks]})
    try:
        done = subprocess.run([python, str(HARNESS), "--probe-server"], input=payload,
                              capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"the memory probes took longer than {PROBE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ProbeFailed(last.removeprefix("ProbeFailed: "))
    return json.loads(done.stdout.strip().splitlines()[-1])["maxrss_bytes"]


def measure_memory(
    cases: Iterable[MemoryCase], jobs: int = 1, python: str | None = None,
    fork: bool | None = None,
) -> list[MemoryResult]:
    """Peak RSS of each case, each in a fresh process, minus a baseline process's peak.

    The baseline process does everything the measured one does (allocates the same inputs,
    warms up on a tiny input) except the attention call; cases with the same input shape
    share one baseline. ``jobs`` processes run at once (memory, unlike time, does not suffer
    from sharing the CPU). On Linux (``fork=None``, or ``fork=True``) the processes are
    children forked from one server process that imported torch once (``_fork_probes``);
    elsewhere (macOS's system libraries are not fork-safe, Windows has no fork), or with
    ``fork=False``, each is a new interpreter (``--probe``). CPU only: on CUDA use
    :func:`cuda_peak_bytes`.
    """
    cases = list(cases)
    positive_int("jobs", jobs)
    python = python or sys.executable
    shape = lambda c: (c.batch, c.heads, c.n, c.d, c.causal, c.threads)  # noqa: E731
    baselines = {shape(c): c for c in cases}
    tasks = [(c, False) for c in baselines.values()] + [(c, True) for c in cases]
    peaks: dict[tuple[MemoryCase, bool], int] = {}
    if fork is None:
        fork = sys.platform == "linux"
    if fork:
        for thread_count in sorted({c.threads for c in cases}):
            group = [task for task in tasks if task[0].threads == thread_count]
            peaks.update(zip(group, _run_probe_server(group, jobs, python), strict=True))
    else:
        running: list[tuple[tuple[MemoryCase, bool], subprocess.Popen]] = []

        def finish(item):
            key, proc = item
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                last = (stderr.strip().splitlines() or ["(no message)"])[-1]
                raise ProbeFailed(f"the memory probe for {key[0].variant} at n = {key[0].n} failed: {last}")
            peaks[key] = int(json.loads(stdout.strip().splitlines()[-1])["maxrss_bytes"])

        for task in tasks:
            if len(running) >= jobs:
                finish(running.pop(0))
            running.append((task, _run_probe(*task, python)))
        for item in running:
            finish(item)
    return [MemoryResult(c, peaks[(c, True)], peaks[(baselines[shape(c)], False)]) for c in cases]


def cuda_peak_bytes(fn: Callable[[], object]) -> int:
    """Extra bytes the CUDA caching allocator reached while ``fn()`` ran."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# --------------------------------------------------------------------------------------
# Sweeps, fits, CSV, figure
# --------------------------------------------------------------------------------------


@dataclass
class BenchRow:
    """One variant at one n: timing, throughput and memory (None when not measured)."""

    variant: str
    n: int
    batch: int
    heads: int
    d: int
    causal: bool
    device: str
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    spread: float | None = None
    gflops: float | None = None
    fraction_of_matmul_peak: float | None = None
    score_matrix_bytes: int = 0
    predicted_extra_bytes: int = 0
    extra_bytes: int | None = None
    skipped: str = ""


@dataclass
class SweepResult:
    """Rows of a sweep plus the matmul peak measured in the same run."""

    rows: list[BenchRow]
    matmul_gflops: float
    device: str
    threads: int

    def by_variant(self, variant: str, measured: str = "median_s") -> tuple[list[int], list[float]]:
        """(n values, values) of one variant where ``measured`` was measured."""
        pairs = [(r.n, getattr(r, measured)) for r in self.rows
                 if r.variant == variant and getattr(r, measured) is not None and not r.skipped]
        return [n for n, _ in pairs], [value for _, value in pairs]

    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.rows))

    def row(self, variant: str, n: int) -> BenchRow:
        for r in self.rows:
            if r.variant == variant and r.n == n:
                return r
        raise KeyError(f"no row for variant {variant!r} at n={n}")


def run_sweep(
    ns: Sequence[int],
    variants: Sequence[str] | None = None,
    batch: int = 1,
    heads: int = 8,
    d: int = 64,
    causal: bool = False,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    memory_ns: Sequence[int] | None = None,
    memory_variants: Sequence[str] | None = None,
    memory_cap_bytes: float | None = None,
    memory_jobs: int = 1,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Time every variant at every n; measure peak memory at ``memory_ns`` (default all n)
    for ``memory_variants`` (default all variants).

    A case whose :func:`predicted_extra_bytes` exceeds ``memory_cap_bytes`` is skipped and
    the reason logged and kept in its row. Times come first, in this process; memory
    probes after, in fresh processes, so they never overlap a timing.
    """
    ns = [positive_int("n", n) for n in ns]
    if not ns:
        raise ValueError("ns must list at least one sequence length")
    variants = list(variants) if variants is not None else default_variants(device)
    for variant in variants:
        attention_fn(variant)  # validates the name before any time is spent
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for but torch.cuda.is_available() is False")
    memory_ns = ns if memory_ns is None else list(memory_ns)
    say = log or (lambda _: None)
    peak = matmul_peak_gflops(device=device)
    say(f"fp32 matmul peak on {device}: {peak:.0f} GFLOP/s")
    rows: list[BenchRow] = []
    for n in ns:
        q, k, v = make_inputs(batch, heads, n, d, device)
        flops = attention_flops(batch, heads, n, d, causal)
        for variant in variants:
            row = BenchRow(
                variant, n, batch, heads, d, causal, device,
                score_matrix_bytes=score_matrix_bytes(batch, heads, n),
                predicted_extra_bytes=predicted_extra_bytes(variant, batch, heads, n, d, causal,
                                                            block_q, block_k),
            )
            rows.append(row)
            if memory_cap_bytes is not None and row.predicted_extra_bytes > memory_cap_bytes:
                row.skipped = (f"predicted {format_bytes(row.predicted_extra_bytes)} > cap "
                               f"{format_bytes(memory_cap_bytes)}")
                say(f"skip {variant} at n={n}: {row.skipped}")
                continue
            fn = attention_fn(variant, causal, block_q, block_k)
            timing = time_call(partial(fn, q, k, v), warmup, repeats, device)
            row.median_s, row.min_s, row.max_s = timing.median_s, timing.min_s, timing.max_s
            row.spread = timing.spread
            row.gflops = flops / timing.min_s / 1e9  # the least disturbed repeat, as the peak
            row.fraction_of_matmul_peak = row.gflops / peak
            if str(device).startswith("cuda") and n in memory_ns and (
                    memory_variants is None or variant in memory_variants):
                row.extra_bytes = cuda_peak_bytes(partial(fn, q, k, v))
            say(f"{variant:>22} n={n:>6}: {timing.min_s * 1e3:9.2f} ms "
                f"(±{timing.spread / 2:.0%}), {row.gflops:6.1f} GFLOP/s")
        del q, k, v
    if device == "cpu":
        measured = set(variants if memory_variants is None else memory_variants)
        todo = [r for r in rows if r.n in memory_ns and r.variant in measured and not r.skipped]
        cases = [MemoryCase(r.variant, r.n, batch, heads, d, causal, block_q, block_k,
                            torch.get_num_threads()) for r in todo]
        for row, result in zip(todo, measure_memory(cases, jobs=memory_jobs), strict=True):
            row.extra_bytes = result.extra_bytes
            say(f"{row.variant:>22} n={row.n:>6}: peak +{format_bytes(result.extra_bytes)} "
                f"(score matrix {format_bytes(row.score_matrix_bytes)})")
    return SweepResult(rows, peak, device, torch.get_num_threads())


def exponents(result: SweepResult, measured: str = "min_s", min_n: int = 1) -> dict[str, PowerLawFit]:
    """Theil–Sen log-log fit of ``measured`` against n per variant (points with n ≥ ``min_n``;
    variants with fewer than 3 such points are left out)."""
    fitted = {}
    for variant in result.variants():
        ns, values = result.by_variant(variant, measured)
        pairs = [(n, x) for n, x in zip(ns, values, strict=True) if n >= min_n and x > 0]
        if len(pairs) >= 3 and len({n for n, _ in pairs}) >= 2:
            fitted[variant] = fit_power_law([n for n, _ in pairs], [x for _, x in pairs])
    return fitted


def write_csv(result: SweepResult, path: str | Path) -> Path:
    """One line per row, plus the matmul peak and thread count on every line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(BenchRow)] + ["matmul_gflops", "threads"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({**asdict(row), "matmul_gflops": round(result.matmul_gflops, 2),
                             "threads": result.threads})
    return path


def plot_sweep(result: SweepResult, min_n: int = 1, axes=None, title_suffix: str = ""):
    """Log-log time and peak-memory panels, fitted exponents in the legends; returns fig."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    else:
        fig = axes[0].figure
    time_exp = exponents(result, "min_s", min_n)
    mem_exp = exponents(result, "extra_bytes", min_n)
    for variant in result.variants():
        ns, times = result.by_variant(variant, "min_s")
        if ns:
            label = variant + (f"  (∝ {time_exp[variant]})" if variant in time_exp else "")
            axes[0].loglog(ns, [t * 1e3 for t in times], "o-", label=label)
        ns, extra = result.by_variant(variant, "extra_bytes")
        if ns:
            label = variant + (f"  (∝ {mem_exp[variant]})" if variant in mem_exp else "")
            axes[1].loglog(ns, [max(x, 1) / 2**20 for x in extra], "o-", label=label)
    score_ns = sorted({r.n for r in result.rows})
    score = [score_matrix_bytes(result.rows[0].batch, result.rows[0].heads, n) / 2**20 for n in score_ns]
    axes[1].loglog(score_ns, score, "k--", lw=1, label="one n×n fp32 score matrix (formula)")

    def slopes(fitted: dict[str, PowerLawFit]) -> str:
        if not fitted:
            return "no fit (fewer than 3 points)"
        values = [f.exponent for f in fitted.values()]
        return f"fitted slopes {min(values):.2f} to {max(values):.2f}"

    axes[0].set(xlabel="sequence length n", ylabel="time per call, fastest repeat (ms)",
                title=f"Time per call against n: {slopes(time_exp)}{title_suffix}")
    axes[1].set(xlabel="sequence length n", ylabel="peak memory above inputs (MiB)",
                title=f"Peak extra memory against n: {slopes(mem_exp)}{title_suffix}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Command line: python tools/bench.py (task bench)
# --------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(",", " ").split()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers like 128,256,512, got {text!r}") from error
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/bench.py (task bench)",
        description="Sweep attention variants over n; write results/bench_<device>.csv/.png.",
    )
    parser.add_argument("--n", type=_int_list, default=[256, 512, 1024, 2048, 4096, 8192],
                        help="sequence lengths, comma-separated (default 256..8192)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--causal", action="store_true", help="causal attention")
    try:  # opt-in GPU: COURSE_DEVICE=cuda (the default stays the CPU, as in the notebooks)
        default_device = course_device().type
    except ValueError as error:
        parser.error(str(error))
    parser.add_argument("--device", default=default_device, choices=["cpu", "cuda"],
                        help="default: $COURSE_DEVICE, else cpu")
    parser.add_argument("--variants", default=None,
                        help="comma-separated (default: naive, sdpa, each sdpa[BACKEND], tiled)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-cap-gb", type=float, default=8.0,
                        help="skip a case predicted to need more than this (default 8)")
    parser.add_argument("--memory-n", type=_int_list, default=None,
                        help="measure peak memory only at these n (default: all)")
    parser.add_argument("--memory-variants", default=None,
                        help="measure peak memory only for these variants, comma-separated (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="time only, no memory probes")
    parser.add_argument("--no-plot", action="store_true", help="write the CSV only, no PNG")
    parser.add_argument("--memory-jobs", type=int, default=1, help="memory probes run at once")
    parser.add_argument("--block-q", type=int, default=DEFAULT_BLOCK_Q)
    parser.add_argument("--block-k", type=int, default=DEFAULT_BLOCK_K)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: $COURSE_NUM_THREADS or 2)")
    parser.add_argument("--out", default=str(REPO / "results"), help="output folder (default results/)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe
    parser.add_argument("--probe-server", action="store_true", help=argparse.SUPPRESS)  # internal
    return parser


def summary_table(result: SweepResult) -> str:
    """A markdown table of the sweep (what the README shows)."""
    lines = ["| variant | n | fastest time | spread | GFLOP/s | % of matmul peak | peak memory above inputs | n×n score matrix |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.rows:
        if r.skipped:
            lines.append(f"| {r.variant} | {r.n} | skipped: {r.skipped} | | | | | "
                         f"{format_bytes(r.score_matrix_bytes)} |")
            continue
        memory = format_bytes(r.extra_bytes) if r.extra_bytes is not None else "–"
        lines.append(
            f"| {r.variant} | {r.n} | {r.min_s * 1e3:.1f} ms | ±{r.spread / 2:.0%} | {r.gflops:.1f} | "
            f"{r.fraction_of_matmul_peak:.0%} | {memory} | {format_bytes(r.score_matrix_bytes)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:  # a memory probe process: print its peak RSS as JSON and leave
        payload = json.loads(args.probe)
        print(json.dumps({"maxrss_bytes": _probe(MemoryCase(**payload["case"]), payload["run"])}))
        return 0
    if args.probe_server:  # fork one probe per task read from stdin; print their peaks
        payload = json.loads(sys.stdin.read())
        tasks = [(MemoryCase(**t["case"]), t["run"]) for t in payload["tasks"]]
        try:
            peaks = _fork_probes(tasks, payload["jobs"])
        except ProbeFailed as error:  # one line for the parent to pass on
            print(f"ProbeFailed: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"maxrss_bytes": peaks}))
        return 0
    from course_utils.repro import default_threads

    torch.set_num_threads(args.threads or default_threads())
    variants = args.variants.split(",") if args.variants else None
    result = run_sweep(
        args.n, variants, args.batch, args.heads, args.d, args.causal, args.device,
        args.repeats, args.warmup, memory_ns=[] if args.no_memory else args.memory_n,
        memory_variants=args.memory_variants.split(",") if args.memory_variants else None,
        memory_cap_bytes=args.memory_cap_gb * 2**30, memory_jobs=args.memory_jobs,
        block_q=args.block_q, block_k=args.block_k,
    )
    stem = Path(args.out) / f"bench_{args.device}{'_causal' if args.causal else ''}"
    csv_path = write_csv(result, stem.with_suffix(".csv"))
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        fig = plot_sweep(result, min_n=min(args.n) * 2 if len(set(args.n)) > 2 else 1,
                         title_suffix=f" ({args.device}, {result.threads} threads)")
        fig.savefig(stem.with_suffix(".png"), dpi=90)
    print()
    print(summary_table(result))
    print()
    fit_from = min(args.n) * 2 if len(set(args.n)) > 2 else 1
    for what, key in (("time", "min_s"), ("peak memory", "extra_bytes")):
        fitted = exponents(result, key, fit_from)
        print(f"fitted {what} exponents, Theil–Sen [95 % interval] (n ≥ {fit_from}): "
              + (", ".join(f"{v} {fit}" for v, fit in fitted.items()) or "fewer than 3 points"))
    largest = max(r.n for r in result.rows if r.variant == "tiled" and not r.skipped) \
        if any(r.variant == "tiled" and not r.skipped for r in result.rows) else None
    if largest and any(r.variant == "sdpa" and r.n == largest and not r.skipped for r in result.rows):
        tiled, sdpa = result.row("tiled", largest), result.row("sdpa", largest)
        line = f"at n={largest}: tiled / sdpa time {tiled.min_s / sdpa.min_s:.2f}x"
        if tiled.extra_bytes and sdpa.extra_bytes:
            line += f", memory {tiled.extra_bytes / sdpa.extra_bytes:.2f}x"
        print(line)
    print(f"wrote {csv_path}" + ("" if args.no_plot else f" and {stem.with_suffix('.png')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

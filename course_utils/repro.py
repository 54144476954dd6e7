"""Used in notebooks 00–14: reproducibility, one call seeds every RNG and fixes the thread count; the device.

Used in every notebook (``seed_everything``); ``course_device`` in 10, 12 and
``task bench`` (an opt-in GPU).

Thread count changes the order of float sums, so a notebook's printed numbers are only
bit-identical between runs when the number of threads is fixed as well as the seeds.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_SEED = 0


def default_threads() -> int:
    """Threads to use: ``$COURSE_NUM_THREADS`` if set, else 2 (the reference machine)."""
    value = os.environ.get("COURSE_NUM_THREADS", "2")
    try:
        threads = int(value)
    except ValueError as error:
        raise ValueError(f"COURSE_NUM_THREADS must be a positive integer, got {value!r}") from error
    if threads < 1:
        raise ValueError(f"COURSE_NUM_THREADS must be a positive integer, got {threads}")
    return threads


DEVICES = ("cpu", "cuda", "mps")


def course_device() -> torch.device:
    """The device the training and benchmark notebooks use: ``$COURSE_DEVICE`` or ``cpu``.

    ``COURSE_DEVICE=cuda`` or ``mps`` is opt-in; outputs then differ from the committed
    (CPU) ones. A value that is not a device, or a device this machine lacks, is an error.
    """
    name = os.environ.get("COURSE_DEVICE", "cpu").strip().lower() or "cpu"
    if name not in DEVICES:
        raise ValueError(f"COURSE_DEVICE must be one of {', '.join(DEVICES)}, got {name!r}")
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None
                 and torch.backends.mps.is_available()}
    if not available[name]:
        raise ValueError(f"COURSE_DEVICE={name}, but this machine has no {name} device "
                         f"(torch {torch.__version__}); unset it to run on the CPU")
    return torch.device(name)


def seed_everything(seed: int = DEFAULT_SEED, threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and torch; fix torch's thread count; prefer deterministic kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads if threads is not None else default_threads())
    # warn_only: a few CPU ops have no deterministic variant; warn rather than fail there.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def environment_report() -> dict[str, str]:
    """Versions, threads and device, for notebook 00 and bug reports."""
    import platform

    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "COURSE_DEVICE": os.environ.get("COURSE_DEVICE", "cpu (default)"),
        "torch threads": str(torch.get_num_threads()),
        "cpu cores": str(os.cpu_count()),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "unset"),
    }

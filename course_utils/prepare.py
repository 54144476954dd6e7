"""Used by ``task setup``, for every notebook: ``python -m course_utils.prepare`` makes the bundled models ready offline.

Used by ``task setup`` (no notebook imports it). Verifies the bundled models and converts
SmolLM2's GGUF once (cached); the offline JavaScript is fetched by ``tools/assets.py``,
which ``tools/setup.sh`` runs next. Each step checks its cache first, so a second run
takes seconds.
"""

from __future__ import annotations

import time


def main() -> None:
    from course_utils import models

    start = time.perf_counter()
    models.encoder_dir()
    print(f"prepare: encoder verified; decoder cache verified: {models.prepare_decoder()}")
    print(f"prepare: done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

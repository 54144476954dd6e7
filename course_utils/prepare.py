"""``python -m course_utils.prepare``: make everything the notebooks load offline ready.

Verifies the bundled models, converts SmolLM2's GGUF once (cached), and fetches the
third-party JavaScript that offline figures need into the ignored cache. Each step checks
its cache first, so a second run takes seconds.
"""

from __future__ import annotations

import time


def main() -> None:
    from course_utils import models

    start = time.perf_counter()
    models.encoder_dir()
    print(f"prepare: encoder verified; decoder cache verified: {models.prepare_decoder()}")
    try:
        from course_utils import assets
    except ImportError:  # no offline JS assets defined yet
        pass
    else:
        assets.main()
    print(f"prepare: done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

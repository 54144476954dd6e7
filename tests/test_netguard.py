"""The default path makes no network call: proven with a guard that blocks the network
for a whole process tree (notebook kernels included)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

GUARD = REPO / "tools" / "netguard"


def guarded_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(COURSE_NETGUARD="1", PYTHONPATH=str(GUARD), HF_HUB_OFFLINE="1")
    return env


def run_guarded(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=guarded_env(), capture_output=True, text=True,
        timeout=300,
    )


def test_guard_blocks_outside_connections_and_allows_loopback():
    result = run_guarded(
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('93.184.216.34', 80), timeout=1)\n"
        "except ConnectionRefusedError as e:\n"
        "    print('blocked:', e)\n"
        "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()\n"
        "client = socket.create_connection(server.getsockname(), timeout=1)\n"
        "print('loopback ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "blocked: network access blocked by the course netguard" in result.stdout
    assert "loopback ok" in result.stdout


def test_guard_blocks_dns():
    result = run_guarded(
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('huggingface.co', 443)\n"
        "except ConnectionRefusedError as e:\n"
        "    print('blocked')\n"
    )
    assert result.stdout.strip() == "blocked", result.stderr


@pytest.mark.slow
def test_bundled_models_load_and_run_with_the_network_blocked():
    result = run_guarded(
        "import torch\n"
        "from course_utils.models import load_encoder, load_decoder\n"
        "m, t = load_encoder()\n"
        "print(m(**t('offline', return_tensors='pt')).last_hidden_state.shape)\n"
        "d, dt = load_decoder()\n"
        "ids = dt('The capital of France is', return_tensors='pt')\n"
        "out = d.generate(**ids, max_new_tokens=3, do_sample=False)\n"
        "print(dt.decode(out[0]))\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_a_notebook_kernel_inherits_the_guard(tmp_path):
    import nbformat
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 443), timeout=1)\n"
        "    print('CONNECTED')\n"
        "except ConnectionRefusedError as e:\n"
        "    print('kernel blocked')\n"
    )])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source, output = tmp_path / "probe.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    old = dict(os.environ)
    os.environ.update(guarded_env())
    try:
        papermill.execute_notebook(str(source), str(output), progress_bar=False, kernel_name="python3")
    finally:
        os.environ.clear()
        os.environ.update(old)
    text = nbformat.read(output, as_version=4).cells[0].outputs[0].text
    assert text.strip() == "kernel blocked"

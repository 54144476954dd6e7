"""Notebooks 01–07 and 11 run to the end with non-default model families (issue 15).

Two pairings, a DistilBERT-layout encoder with a GPT-2-layout decoder and a RoBERTa with a
Qwen2 (random weights, real tokenizers: ``tests.standins``), are passed as ``-p ENCODER_NAME DIR`` / ``-p DECODER_NAME DIR`` through
the course's runner (``tools/run_notebooks.py``, into a temporary ``-o`` file, so the
committed notebooks are untouched). Every scratch-equals-model assertion inside the
notebooks then has to hold on these families too. Slow: 16 notebook runs (~4 min).

``test_every_family_runs_its_notebook`` (also slow, longer) does the same for each family:
encoders through 04 and 07, decoders through 05 — the examples the README's "Using hub models"
section lists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.standins import make_standin

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tools" / "run_notebooks.py"
NOTEBOOKS = {
    "01": ("01_tokenization.ipynb", ("ENCODER_NAME", "DECODER_NAME")),
    "02": ("02_embeddings.ipynb", ("ENCODER_NAME",)),
    "03": ("03_positional_encoding.ipynb", ("ENCODER_NAME", "DECODER_NAME")),
    "04": ("04_attention_from_scratch.ipynb", ("ENCODER_NAME",)),
    "05": ("05_multi_head_attention.ipynb", ("ENCODER_NAME", "DECODER_NAME")),
    "06": ("06_masks.ipynb", ("ENCODER_NAME", "DECODER_NAME")),
    "07": ("07_forward_pass.ipynb", ("ENCODER_NAME",)),
    "11": ("11_attention_analysis.ipynb", ("ENCODER_NAME", "DECODER_NAME")),
}
# Stand-ins are small (2 layers, 512 positions): defaults sized for the bundled models are
# scaled down here (a real hub model of these families takes the defaults).
SMALL_MODEL_PARAMETERS = {"03": {"ROPE_OFFSET": "100"}, "06": {"CROSS_LAYER": "1"}}
ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
    "COURSE_NUM_THREADS": "2", "PYTHONHASHSEED": "0", "COURSE_FILL_SOLUTIONS": "1",
}


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standins")
    for family in ("distilbert", "gpt2", "roberta", "qwen2"):
        make_standin(family, root)
    return root


def run_notebook(key: str, models: dict[str, Path], out_dir: Path) -> subprocess.CompletedProcess:
    """Run notebook ``key`` with the model parameters it has; returns the finished process."""
    name, params = NOTEBOOKS[key]
    args = [sys.executable, str(RUNNER), str(REPO / "notebooks" / name)]
    for param in params:
        if param in models:
            args += ["-p", param, str(models[param])]
    for param, value in SMALL_MODEL_PARAMETERS.get(key, {}).items():
        args += ["-p", param, value]
    args += ["-o", str(out_dir / f"{key}_{'_'.join(p.name for p in models.values())}.ipynb")]
    return subprocess.run(args, cwd=REPO, env={**os.environ, **ENV}, capture_output=True,
                          text=True, timeout=3600)  # includes waiting for the runner lock


@pytest.mark.parametrize("pair", [("distilbert", "gpt2"), ("roberta", "qwen2")])
@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_notebook_runs_with_other_families(key, pair, standins, tmp_path):
    models = {"ENCODER_NAME": standins / pair[0], "DECODER_NAME": standins / pair[1]}
    done = run_notebook(key, models, tmp_path)
    assert done.returncode == 0, (
        f"{NOTEBOOKS[key][0]} failed with {models}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2", "llama", "qwen2",
                                    "mistral"])
def test_every_family_runs_its_notebook(family, tmp_path):
    path = make_standin(family, tmp_path)
    encoder = family in ("bert", "distilbert", "roberta")
    for key in ("04", "07") if encoder else ("05",):
        done = run_notebook(key, {"ENCODER_NAME" if encoder else "DECODER_NAME": path}, tmp_path)
        assert done.returncode == 0, (
            f"{NOTEBOOKS[key][0]} failed with {family}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )

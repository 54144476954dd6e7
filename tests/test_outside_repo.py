"""The course outside its repository: a built wheel, a fresh virtual environment, notebooks
copied into an empty folder — what a learner in Colab or their own Jupyter has.

The wheel is built from this checkout and installed with ``--no-deps`` into a new virtual
environment whose dependencies are the course's own pinned ones (the course venv's
``site-packages`` is linked in with a ``.pth`` file instead of downloading gigabytes
again; its editable ``course_utils`` is *not* visible, so the wheel's copy is what runs).
Then notebook 04 (a model, bertviz's offline JavaScript) and notebook 09 (the RAG data
files, both models) are executed with papermill in an empty directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import NOTEBOOKS, REPO

pytestmark = pytest.mark.slow

OUTSIDE_NOTEBOOKS = ["04_attention_from_scratch", "09_rag"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(python of the fresh venv, an empty work folder, the environment to run it in)."""
    root = tmp_path_factory.mktemp("outside")
    # Build from a clean copy of what the wheel is made of: an in-tree build/ directory
    # could carry stale modules into the wheel.
    source = root / "source"
    for name in ("course_utils", "data"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(source)])
    wheel = next(wheels.glob("inside_transformer-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                     ).stdout.strip())
    (site / "course-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_CACHE", "COURSE_DATA"))}
    env.update({"HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "COURSE_FILL_SOLUTIONS": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                "COURSE_NUM_THREADS": "2", "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"})
    return python, work, env


def test_installed_package_finds_its_data_and_cache(outside):
    python, work, env = outside
    probe = (
        "import course_utils, course_utils.paths as p, course_utils.models as m, course_utils.rag as r\n"
        "print(course_utils.__file__); print(p.data_dir()); print(m.cache_dir())\n"
        "print(len(r.load_passages()))\n"
    )
    lines = _run([str(python), "-c", probe], cwd=work, env=env).stdout.splitlines()
    package, data, cache, passages = lines[-4:]
    assert "site-packages" in package and str(REPO) not in package, package
    assert Path(data) == Path(package).parent / "_data", data
    assert (Path(data) / "knowledge_base.jsonl").is_file()
    assert Path(cache) == Path(env["HOME"]) / ".cache" / "inside-transformer", cache
    assert int(passages) > 0


@pytest.mark.parametrize("notebook", OUTSIDE_NOTEBOOKS)
def test_notebook_runs_outside_the_repository(outside, notebook):
    python, work, env = outside
    source = NOTEBOOKS / f"{notebook}.ipynb"
    target = work / source.name
    target.write_bytes(source.read_bytes())
    # The converted models and fetched JavaScript are big: reuse this checkout's cache
    # (the path logic itself is tested above), everything else comes from the wheel.
    env = {**env, "COURSE_CACHE_DIR": str(REPO / ".cache")}
    _run([str(python), "-m", "papermill", "--log-level", "WARNING", str(target),
          str(work / f"{notebook}.out.ipynb"), "--cwd", str(work)], cwd=work, env=env)
    assert (work / f"{notebook}.out.ipynb").stat().st_size > 0

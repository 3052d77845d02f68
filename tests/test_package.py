"""The package itself: what ``import rnnkit`` pulls in, where the version lives, what pyproject declares."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import tomllib

import rnnkit

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    """The rnnkit modules a fresh interpreter has imported after running ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(m for m in sys.modules if m.startswith('rnnkit')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_importing_the_package_imports_no_task_and_no_trainer():
    # catches: rnnkit/__init__ importing rnnkit.tasks (for rnnkit.load) at import time again
    modules = _modules_after("import rnnkit")
    assert "rnnkit.recurrent" in modules  # the probe sees rnnkit's modules at all
    pulled = sorted(m for m in modules if m.startswith(("rnnkit.tasks", "rnnkit.train")))
    assert pulled == [], f"import rnnkit imported {pulled}"


def test_modules_import_on_their_own_in_any_order():
    # catches the old cycle rnnkit -> tasks -> train.checkpoint -> rnnkit.__version__, which only held
    # when the package root was imported first
    for module in ("rnnkit.train.checkpoint", "rnnkit.tasks.lm", "rnnkit.cli"):
        assert module in _modules_after(f"import {module}")


def test_load_is_the_task_loader_imported_on_call(tmp_path):
    from rnnkit.train.checkpoint import CheckpointError

    try:
        rnnkit.load(tmp_path)
    except CheckpointError as error:  # an empty directory: the task loader's own error, not an ImportError
        assert str(tmp_path) in str(error)
    else:
        raise AssertionError("rnnkit.load of an empty directory returned without an error")


def test_version_has_one_source():
    from rnnkit._version import __version__

    assert rnnkit.__version__ == __version__ == importlib.metadata.version("rnnkit")


def test_pyproject_declares_the_spdx_license_and_a_setuptools_that_reads_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # the table form is deprecated, refused by setuptools in 2027
    assert "setuptools>=77" in " ".join(project["build-system"]["requires"])  # PEP 639 support starts at 77
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rnnkit._version.__version__"}

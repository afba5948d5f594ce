"""Every check in training_checks/ runs as a script and as a module, from any folder (the shared _script.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKS = ("codec_quality_check", "curriculum_train", "fixed_seed_sampler", "preflight", "stability_monitor",
          "validate_conditioning")
# Runs a check's file as `python training_checks/X.py` does, on a sys.path without the project (as when it is not
# installed): only the bootstrap can make musicpipe and training_checks importable.
NOT_INSTALLED = """
import runpy, sys
from pathlib import Path
script = Path(sys.argv[1])
sys.path[:] = [str(script.parent)] + [p for p in sys.path[1:]
                                      if not (Path(p or ".").resolve() / "musicpipe" / "__init__.py").exists()]
sys.argv = [str(script), "--help"]
runpy.run_path(str(script), run_name="__main__")
"""


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _usage(res: subprocess.CompletedProcess, name: str) -> str:
    assert res.returncode == 0, res.stderr[-2000:]
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"usage: {name} [-h]"), first
    return first


@pytest.mark.parametrize("name", CHECKS)
def test_check_runs_as_a_script_from_another_folder(name, tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "training_checks" / f"{name}.py"), "--help"], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=300)
    _usage(res, name)


@pytest.mark.parametrize("name", CHECKS)
def test_check_runs_as_a_module(name, tmp_path):
    res = subprocess.run([sys.executable, "-m", f"training_checks.{name}", "--help"], cwd=tmp_path,
                         env=dict(_env(), PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    _usage(res, name)


@pytest.mark.parametrize("name", CHECKS)
def test_bootstrap_finds_the_repository_when_the_project_is_not_installed(name, tmp_path):
    script = REPO / "training_checks" / f"{name}.py"
    res = subprocess.run([sys.executable, "-c", NOT_INSTALLED, str(script)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    _usage(res, name)
    # without the bootstrap's one line the same run cannot import the project
    bare = tmp_path / "training_checks_copy" / f"{name}.py"
    bare.parent.mkdir()
    bare.write_text(script.read_text().replace("    import _script  # noqa: F401\n", "    pass\n"))
    res = subprocess.run([sys.executable, "-c", NOT_INSTALLED, str(bare)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr

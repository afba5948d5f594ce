"""Shared fixtures. One workspace per test session: AudioCraft reads its Dora folder once per process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A space and a non-ASCII character in the path, as users' folders have.
    ws = tmp_path_factory.mktemp("ws") / "work space é"
    ws.mkdir()
    os.environ["MUSICPIPE_WORKSPACE"] = str(ws)
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    return ws


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    assert exe, "ffmpeg missing: `make setup` installs it"
    return exe


def run_cli(*args: str, env: dict | None = None, cwd: Path = REPO, timeout: int = 900,
            script: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m musicpipe ...`` in a subprocess, as users do.

    With ``script`` (``dora_train.py``, ``musicgen_train.py``, ``musicgen_generate.py``) the seed's script
    in notebooks/ runs instead, given ``args`` without the subcommand.
    """
    cmd = [sys.executable, str(REPO / "notebooks" / script), *args[1:]] if script else \
        [sys.executable, "-m", "musicpipe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env if env is not None else dict(os.environ),
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def demo_data(workspace: Path) -> dict:
    """The synthetic dataset the demo_cpu preset names (4 genres x 3 clips of 10 s), through prepare."""
    from musicpipe.prepare import PrepareConfig
    from musicpipe.sources import synthetic

    return synthetic.prepare_synthetic("synthetic_demo", workspace, PrepareConfig(num_jobs=1),
                                       tracks_per_genre=3, progress=False)


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where training publishes `Checkpoints Small/<sig>/` during the tests (not the repo's outputs/)."""
    return tmp_path_factory.mktemp("outputs")


def read_only_view(folder: Path, tmp_path: Path) -> Path:
    """``folder`` seen through a read-only bind mount (root) or with its write bits removed (other users).

    The caller unmounts it (``umount <returned path>``) when it differs from ``folder``.
    """
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return folder
    ro = tmp_path / "ro"
    ro.mkdir()
    for cmd in (["mount", "--bind", str(folder), str(ro)], ["mount", "-o", "remount,bind,ro", str(ro)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            subprocess.run(["umount", str(ro)], capture_output=True)
            pytest.skip(f"cannot make a read-only mount here ({' '.join(cmd)}: {res.stderr.strip()})")
    return ro

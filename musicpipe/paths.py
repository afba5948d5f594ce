"""Where things live: the repository, its config sources and the workspace (standard library only).

Example:
    >>> from musicpipe.paths import workspace_root
    >>> workspace_root("/tmp/ws").as_posix()
    '/tmp/ws'
"""

from __future__ import annotations

import os
import re
import shutil
import typing as tp
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIG_DIR = REPO_ROOT / "model_config"
PRESETS_DIR = MODEL_CONFIG_DIR / "presets"
OUTPUTS_DIR = REPO_ROOT / "outputs"
THIRD_PARTY_DIR = REPO_ROOT / "third_party"
WORKSPACE_ENV = "MUSICPIPE_WORKSPACE"
SIG_RE = re.compile(r"^[0-9a-f]{8}$")  # a Dora XP signature


def workspace_root(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """The workspace: the argument, else ``$MUSICPIPE_WORKSPACE``, else ``<repo>/workspace``."""
    if workspace is not None and str(workspace) != "":
        return Path(workspace).expanduser().resolve()
    env = os.environ.get(WORKSPACE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / "workspace").resolve()


def dora_dir(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Dora's experiment folder (``AUDIOCRAFT_DORA_DIR``): ``<ws>/experiments/audiocraft``."""
    return workspace_root(workspace) / "experiments" / "audiocraft"


def xp_dir(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """The folder of one Dora experiment."""
    return dora_dir(workspace) / "xps" / sig


def workspace_config_dir(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Config source written by ``prepare`` (``<ws>/config/dset/audio/<name>.yaml``)."""
    return workspace_root(workspace) / "config"


def dataset_dir(name: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """``<ws>/data/<name>``."""
    return workspace_root(workspace) / "data" / name


def free_gib(workspace: tp.Optional[tp.Union[str, Path]] = None) -> float:
    """Free disk space (GiB) where the workspace is, or would be created."""
    probe = workspace_root(workspace)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 2**30

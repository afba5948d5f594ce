"""The AudioCraft integration layer: environment, checkpoint loading, distributed backend.

AudioCraft 1.3.0 is the engine; this module adapts it to torch 2.11 and to machines without CUDA,
without forking it. :func:`activate` is idempotent and is called in every process that trains or
loads AudioCraft checkpoints (the Dora entry package ``musicpipe.dora_entry`` calls it on import,
so DDP workers spawned by ``dora run -d`` get it too).

Example:
    >>> from musicpipe import audiocraft_env
    >>> env = audiocraft_env.environment("/tmp/ws", base={})
    >>> env["AUDIOCRAFT_DORA_DIR"]
    '/tmp/ws/experiments/audiocraft'
"""

from __future__ import annotations

import collections
import copy
import functools
import getpass
import hashlib
import logging
import os
import re
import tempfile
import typing as tp
from pathlib import Path

from musicpipe import atomic, paths

logger = logging.getLogger(__name__)

DORA_PACKAGE = "musicpipe.dora_entry"
DORA_MAIN_MODULE = "train"
_ACTIVATED = False


# What Hydra's override grammar accepts unquoted; Dora passes `hydra.run.dir=<xp folder>` unquoted.
_HYDRA_SAFE_PATH = re.compile(r"^[A-Za-z0-9_\-+./:@~%]+$")


def hydra_safe_dora_dir(workspace: tp.Optional[tp.Union[str, Path]] = None, create: bool = True) -> Path:
    """The experiments folder as Dora should see it.

    Dora hands the XP folder to Hydra as an unquoted override, which breaks on spaces and other
    characters a user's workspace path may hold. For such a workspace this returns a symlink
    without them (under the temp dir, named by a hash of the real path) pointing at
    ``<ws>/experiments/audiocraft``, so experiments still live in the workspace.
    """
    real = paths.dora_dir(workspace)
    if _HYDRA_SAFE_PATH.match(str(real)):
        return real
    digest = hashlib.sha1(str(real).encode("utf-8")).hexdigest()[:16]
    link = Path(tempfile.gettempdir()) / f"musicpipe-dora-{os.getuid()}" / digest
    if create:
        real.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) != real:
            link.unlink()
        if not link.is_symlink():
            atomic.symlink(link, real, target_is_directory=True)
    return link


def environment(workspace: tp.Optional[tp.Union[str, Path]] = None,
                base: tp.Optional[tp.Mapping[str, str]] = None) -> tp.Dict[str, str]:
    """The environment AudioCraft and Dora need, on top of ``base`` (default ``os.environ``).

    Sets ``MUSICPIPE_WORKSPACE``, ``USER`` (when missing: containers often lack it, and AudioCraft's
    config interpolates it), ``AUDIOCRAFT_TEAM=default``, ``AUDIOCRAFT_DORA_DIR`` (under the
    workspace), ``DORA_PACKAGE``/``DORA_MAIN_MODULE`` (our entry package) and
    ``HF_HUB_OFFLINE=1`` unless the caller set it (T5 checks decide about the hub explicitly).
    Pure apart from reading ``base``, and creating the symlink :func:`hydra_safe_dora_dir` needs
    when the workspace path has spaces or other characters Hydra's override grammar rejects.
    """
    env = dict(os.environ if base is None else base)
    ws = paths.workspace_root(workspace if workspace is not None else env.get(paths.WORKSPACE_ENV))
    env[paths.WORKSPACE_ENV] = str(ws)
    if not env.get("USER"):
        try:
            env["USER"] = getpass.getuser()
        except (KeyError, OSError):
            env["USER"] = "musicpipe"
    env.setdefault("AUDIOCRAFT_TEAM", "default")
    env["AUDIOCRAFT_DORA_DIR"] = str(hydra_safe_dora_dir(ws))
    env["DORA_PACKAGE"] = DORA_PACKAGE
    env["DORA_MAIN_MODULE"] = DORA_MAIN_MODULE
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def apply_environment(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.Dict[str, str]:
    """Set :func:`environment` in ``os.environ`` of this process and return the variables it set."""
    env = environment(workspace)
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    os.environ.update(env)
    return changed


def safe_globals() -> tp.List[tp.Any]:
    """Types AudioCraft checkpoints hold besides tensors, for torch's weights-only unpickler."""
    import builtins
    import typing

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any,
            builtins.dict, builtins.list, builtins.int, collections.defaultdict]


def _plain_resolver_caches(cfg: tp.Any) -> tp.Any:
    """A deep copy of an omegaconf container whose resolver caches are plain dicts.

    Every omegaconf node carries ``_metadata.resolver_cache = defaultdict(dict)``; the weights-only
    unpickler cannot rebuild a defaultdict, so the saved copy holds dicts instead (the live config
    keeps its defaultdicts, which omegaconf relies on).
    """
    cfg = copy.deepcopy(cfg)
    stack = [cfg]
    while stack:
        node = stack.pop()
        meta = node.__dict__.get("_metadata")
        if meta is not None and isinstance(getattr(meta, "resolver_cache", None), collections.defaultdict):
            meta.resolver_cache = {k: dict(v) if isinstance(v, dict) else v
                                   for k, v in meta.resolver_cache.items()}
        content = node.__dict__.get("_content")
        if isinstance(content, dict):
            stack.extend(content.values())
        elif isinstance(content, list):
            stack.extend(content)
    return cfg


def loadable_state(obj: tp.Any) -> tp.Any:
    """``obj`` with every defaultdict turned into a dict, so ``torch.load(weights_only=True)`` reads it.

    Tensors and other leaves are shared, not copied; only omegaconf containers are deep-copied.
    """
    from omegaconf import DictConfig, ListConfig

    if isinstance(obj, (DictConfig, ListConfig)):
        return _plain_resolver_caches(obj)
    if isinstance(obj, collections.defaultdict):
        return {k: loadable_state(v) for k, v in obj.items()}
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, loadable_state(v)) for k, v in obj.items())
    if type(obj) is dict:
        return {k: loadable_state(v) for k, v in obj.items()}
    if type(obj) is list:
        return [loadable_state(v) for v in obj]
    if type(obj) is tuple:
        return tuple(loadable_state(v) for v in obj)
    return obj


def enable_checkpoint_loading() -> None:
    """Let torch 2.11 load AudioCraft checkpoints with ``weights_only=True`` (no global switch).

    Registers :func:`safe_globals` and wraps ``audiocraft.utils.checkpoint.save_checkpoint`` so
    new checkpoints hold no defaultdict (the weights-only unpickler cannot build one).
    """
    import torch
    from audiocraft.utils import checkpoint

    torch.serialization.add_safe_globals(safe_globals())
    if getattr(checkpoint.save_checkpoint, "_musicpipe", False):
        return
    original = checkpoint.save_checkpoint

    @functools.wraps(original)
    def save_checkpoint(state: tp.Any, checkpoint_path: Path, is_sharded: bool = False) -> None:
        return original(loadable_state(state), checkpoint_path, is_sharded)

    save_checkpoint._musicpipe = True  # type: ignore[attr-defined]
    checkpoint.save_checkpoint = save_checkpoint


def use_gloo_without_cuda() -> None:
    """Make ``flashy.distrib.init()`` (AudioCraft's DDP init, nccl by default) use gloo without CUDA."""
    import flashy.distrib
    import torch

    if getattr(flashy.distrib.init, "_musicpipe", False):
        return
    original = flashy.distrib.init

    def init(backend: str = "nccl") -> None:
        if backend == "nccl" and not torch.cuda.is_available():
            backend = "gloo"
        return original(backend=backend)

    init._musicpipe = True  # type: ignore[attr-defined]
    flashy.distrib.init = init


def activate(workspace: tp.Optional[tp.Union[str, Path]] = None) -> None:
    """Everything above, once per process."""
    global _ACTIVATED
    apply_environment(workspace)
    if _ACTIVATED:
        return
    import warnings

    from hydra.errors import Hydra14MigrationWarning

    # AudioCraft pins version_base="1.1"; the warning is not actionable for our users.
    warnings.filterwarnings("ignore", category=Hydra14MigrationWarning)
    enable_checkpoint_loading()
    use_gloo_without_cuda()
    _ACTIVATED = True

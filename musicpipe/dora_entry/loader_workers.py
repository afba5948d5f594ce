"""DataLoader workers sized to the machine the training process runs on (``dataset.num_workers``).

AudioCraft's default is 10 workers per rank whatever the machine: on a 4-GPU pod that is 40 loader processes
beside the 4 trainers, each holding batches in ``/dev/shm``. :func:`install_loader_workers_hook` (called by
:mod:`musicpipe.dora_entry.train`) wraps ``build_dataloaders`` of the compression and musicgen solvers and, before
the loaders are built, caps ``dataset.num_workers`` at :func:`musicpipe.sizing.loader_workers` of this
machine's usable cores and its ranks (``LOCAL_WORLD_SIZE`` under torchrun, else the world size of
``dora run -d``). A configured 0 stays 0 (the CPU demo), a smaller value is kept. ``dataset.num_workers`` is
excluded from Dora's XP signature, so this never changes one.

``MUSICPIPE_LOADER_WORKERS`` (read in the Dora process): ``auto`` (default) as above; an integer: exactly that
many per rank; ``config``: the config's value untouched.

Example:
    >>> effective_workers(10, cpu_cores=64, ranks=4, setting="auto")
    4
    >>> effective_workers(0, cpu_cores=64, ranks=4, setting="auto"), effective_workers(10, 64, 4, "config")
    (0, 10)
    >>> effective_workers(10, cpu_cores=64, ranks=4, setting="6")
    6
"""

from __future__ import annotations

import functools
import logging
import os
import typing as tp

from musicpipe import sizing

logger = logging.getLogger(__name__)

ENV_VAR = "MUSICPIPE_LOADER_WORKERS"
MARK = "_musicpipe_loader_workers"


def effective_workers(configured: int, cpu_cores: int, ranks: int, setting: str = "auto") -> int:
    """Workers per rank for a config asking for ``configured`` (see the module docstring)."""
    setting = (setting or "auto").strip().lower()
    if setting == "config":
        return int(configured)
    if setting != "auto":
        try:
            return max(0, int(setting))
        except ValueError:
            logger.warning("%s=%r is not auto, config or an integer: using auto", ENV_VAR, setting)
    return min(int(configured), sizing.loader_workers(cpu_cores, ranks))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, as containers restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_ranks() -> int:
    """Training processes on this machine: ``LOCAL_WORLD_SIZE`` (torchrun), else the whole world (``dora run -d``)."""
    import flashy

    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or flashy.distrib.world_size()))
    except ValueError:
        return max(1, flashy.distrib.world_size())


def _wrap_build_dataloaders(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def build_dataloaders(self: tp.Any) -> tp.Any:
        from omegaconf import open_dict

        configured = int(self.cfg.dataset.num_workers)
        cores, ranks = usable_cores(), local_ranks()
        workers = effective_workers(configured, cores, ranks, os.environ.get(ENV_VAR, "auto"))
        if workers != configured:
            with open_dict(self.cfg):
                self.cfg.dataset.num_workers = workers
            logger.info("dataset.num_workers: %d per rank instead of %d (%d usable cores, %d rank(s) on this "
                        "machine; %s=config keeps the config's)", workers, configured, cores, ranks, ENV_VAR)
        return original(self)

    setattr(build_dataloaders, MARK, True)
    return build_dataloaders


def install_loader_workers_hook() -> None:
    """Wrap ``build_dataloaders`` of the compression and musicgen solvers (once)."""
    from audiocraft.solvers.compression import CompressionSolver
    from audiocraft.solvers.musicgen import MusicGenSolver

    for cls in (CompressionSolver, MusicGenSolver):
        current = cls.__dict__.get("build_dataloaders")
        if current is not None and getattr(current, MARK, False):
            continue
        setattr(cls, "build_dataloaders", _wrap_build_dataloaders(getattr(cls, "build_dataloaders")))

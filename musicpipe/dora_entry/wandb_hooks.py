"""W&B for a training process, through AudioCraft's own ``logging.log_wandb`` / ``wandb.*`` settings.

:mod:`musicpipe.tracking` sets ``MUSICPIPE_WANDB_PROJECT`` (and ``MUSICPIPE_WANDB_CONFIG``, JSON) in the
environment of one training call's Dora processes. Here, before a solver is built, they become
``logging.log_wandb=true`` and ``wandb.project=<project>`` in its config: the XP signature, computed from
the command line, never sees them, so a resumed XP with W&B on is the same XP. flashy's ``WandbLogger``
names the run and sets its id to the XP signature and resumes it when the XP had one (``<xp>/wandb_flag``).
Two guards: flashy's lookup of an earlier run through ``wandb.Api()`` fails without an API key (offline);
it is skipped then. The run's config gets ``musicpipe`` (preset, dataset, codec, conditioning) beside
AudioCraft's config, and the run is finished when training ends.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import typing as tp

logger = logging.getLogger(__name__)

PROJECT_ENV = "MUSICPIPE_WANDB_PROJECT"
CONFIG_ENV = "MUSICPIPE_WANDB_CONFIG"


def _extra_config() -> tp.Dict[str, tp.Any]:
    try:
        data = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    except ValueError:
        logger.warning("%s is not JSON: ignored", CONFIG_ENV)
        return {}
    return data if isinstance(data, dict) else {}


def _guarded_from_xp(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def from_xp(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        import wandb

        try:
            wandb.Api()
        except Exception as exc:  # noqa: BLE001 - no key / offline: skip flashy's lookup of an earlier run
            logger.info("W&B: no API access (%s): run id and name are the XP signature", exc)
            api = wandb.Api
            wandb.Api = _NoApi  # type: ignore[assignment,misc]
            try:
                return original(*args, **kwargs)
            finally:
                wandb.Api = api  # type: ignore[misc]
        return original(*args, **kwargs)

    return from_xp


class _NoApi:
    """Stands in for ``wandb.Api`` when it cannot be used: every lookup finds no earlier run."""

    def run(self, path: str) -> tp.Any:
        import wandb

        raise wandb.CommError(f"no W&B API access to look up {path}")


def install_wandb_hook() -> None:
    """Wrap ``StandardSolver.__init__`` and ``run`` (once) to apply the W&B settings of the environment."""
    from audiocraft.solvers.base import StandardSolver
    from flashy.loggers.wandb import WandbLogger

    if getattr(StandardSolver.__init__, "_musicpipe_wandb", False):
        return
    if not getattr(WandbLogger.from_xp, "_musicpipe", False):
        guarded = _guarded_from_xp(WandbLogger.from_xp)
        guarded._musicpipe = True  # type: ignore[attr-defined]
        WandbLogger.from_xp = guarded  # type: ignore[method-assign]
    original_init, original_run = StandardSolver.__init__, StandardSolver.run

    @functools.wraps(original_init)
    def __init__(self: tp.Any, cfg: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> None:
        project = os.environ.get(PROJECT_ENV)
        if project:
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.logging.log_wandb = True
                cfg.wandb.project = project
        original_init(self, cfg, *args, **kwargs)
        if project:
            import wandb

            if wandb.run is not None:
                wandb.run.config.update({"musicpipe": _extra_config()}, allow_val_change=True)

    @functools.wraps(original_run)
    def run(self: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        try:
            return original_run(self, *args, **kwargs)
        finally:
            if os.environ.get(PROJECT_ENV):
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    __init__._musicpipe_wandb = True  # type: ignore[attr-defined]
    StandardSolver.__init__ = __init__  # type: ignore[method-assign]
    StandardSolver.run = run  # type: ignore[method-assign]

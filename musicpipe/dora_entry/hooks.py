"""Training hooks attached in every Dora process: periodic codec quality checks.

``CODEC_CHECK_EVERY`` (epochs, default 10; 0 = off) and ``CODEC_CHECK_SAMPLES`` (default 5) are read
from the environment, so they do not change XP signatures. After every N-th epoch of a compression
run, rank 0 encodes and decodes that many validation segments with the live model and writes
``<outputs>/codec_quality_check/<sig>/epoch_<k>/`` (``$MUSICPIPE_OUTPUTS``, default ``<repo>/outputs``).
A failing check is logged and never stops training.
"""

from __future__ import annotations

import functools
import logging
import os
import typing as tp
from pathlib import Path

from musicpipe import manifests, paths
from musicpipe.codec_metrics import check_codec

logger = logging.getLogger(__name__)

DEFAULT_EVERY = 10
DEFAULT_SAMPLES = 5


def _int_env(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        logger.warning("%s=%r is not an integer: using %d", name, os.environ.get(name), default)
        return default


def codec_check_due(epoch: int, every: int) -> bool:
    """Whether the check runs after ``epoch`` (1-based) when it runs every ``every`` epochs.

    >>> [e for e in range(1, 8) if codec_check_due(e, 3)], codec_check_due(5, 0)
    ([3, 6], False)
    """
    return every > 0 and epoch > 0 and epoch % every == 0


def _valid_segments(solver: tp.Any) -> tp.List[str]:
    return [r.path for r in manifests.read_manifest(Path(str(solver.cfg.datasource.valid)))]


def _run_check(solver: tp.Any, epoch: int, samples: int) -> None:
    import flashy
    from dora import get_xp

    if not flashy.distrib.is_rank_zero():
        return
    outputs = Path(os.environ.get("MUSICPIPE_OUTPUTS") or paths.OUTPUTS_DIR)
    out_dir = outputs / "codec_quality_check" / get_xp().sig / f"epoch_{epoch}"
    model = solver.model
    was_training = model.training
    model.eval()
    try:
        summary = check_codec(model, _valid_segments(solver), out_dir, num_samples=samples, seed=0)
        logger.info("codec check after epoch %d: %s", epoch, {k: v for k, v in summary.get("mean", {}).items()})
    finally:
        model.train(was_training)


def install_codec_check_hook() -> None:
    """Wrap ``CompressionSolver.run_epoch`` (once) to run the check after the epochs it is due."""
    from audiocraft.solvers.compression import CompressionSolver

    if getattr(CompressionSolver.run_epoch, "_musicpipe", False):
        return
    original = CompressionSolver.run_epoch

    @functools.wraps(original)
    def run_epoch(self: tp.Any) -> tp.Any:
        result = original(self)
        every = _int_env("CODEC_CHECK_EVERY", DEFAULT_EVERY)
        if codec_check_due(self.epoch, every):
            try:
                _run_check(self, self.epoch, _int_env("CODEC_CHECK_SAMPLES", DEFAULT_SAMPLES))
            except Exception as exc:  # noqa: BLE001 - a check must never stop training
                logger.warning("codec quality check after epoch %d failed: %s: %s", self.epoch,
                               type(exc).__name__, exc)
        return result

    run_epoch._musicpipe = True  # type: ignore[attr-defined]
    CompressionSolver.run_epoch = run_epoch

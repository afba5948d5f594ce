"""Checkpoint retention: apply ``checkpoint.keep_last``, which AudioCraft 1.3.0 reads but never applies.

AudioCraft writes ``checkpoint_<epoch>.th`` every ``checkpoint.save_every`` epochs and then calls
``flush_stale_checkpoints`` *without* ``keep_last`` (``solvers/base.py``), so every one of them stays: on
fma_large, 20 LM checkpoints of ~5.7 GB. :func:`install_retention_hook` (called by
:mod:`musicpipe.dora_entry.train`) wraps ``save_checkpoints`` of the compression and musicgen solvers: after
AudioCraft has written the epoch's files, at most ``checkpoint.keep_last`` per-epoch checkpoints remain
(unset or 0: all, AudioCraft's meaning).

What is never touched: ``checkpoint.th`` (resume, ``continue_from=//sig/<sig>`` and the curriculum's next stage
read it), named checkpoints (``checkpoint_best.th``), temp files, and the newest per-epoch checkpoint.

Which epochs go: the fixed-seed sampler (``training_checks/fixed_seed_sampler.py``) is the only reader of
per-epoch checkpoints, and it records the epochs it has sampled in ``<xp>/sampled_epochs.json``
(:func:`record_sampled`). When more than ``keep_last`` remain, epochs already sampled go first (oldest first),
then the oldest not yet sampled, with a warning naming them. So a sampler run during training (another GPU, or
between stages) sees every epoch while the disk stays bounded by ``keep_last``; without one, the last
``keep_last`` epochs are there to sample afterwards.

Example:
    >>> epochs_to_prune([10, 20, 30, 40], keep_last=2, sampled={20, 30})
    [20, 30]
    >>> epochs_to_prune([10, 20, 30, 40], keep_last=2, sampled=set())
    [10, 20]
    >>> epochs_to_prune([10, 20, 30], keep_last=None, sampled=set())
    []
"""

from __future__ import annotations

import functools
import json
import logging
import typing as tp
from pathlib import Path

from musicpipe import atomic
from musicpipe.xp import epoch_checkpoints

logger = logging.getLogger(__name__)

SAMPLED_RECORD = "sampled_epochs.json"  # in the XP folder, written by the fixed-seed sampler
MARK = "_musicpipe_retention"


def epochs_to_prune(epochs: tp.Iterable[int], keep_last: tp.Optional[int], sampled: tp.Collection[int]) -> tp.List[int]:
    """The per-epoch checkpoints to delete so that at most ``keep_last`` remain (sorted).

    Sampled epochs go first (oldest first), then unsampled ones (oldest first); the newest epoch is always kept.

    >>> epochs_to_prune([1, 2, 3], keep_last=1, sampled={3})
    [1, 2]
    """
    order = sorted(set(int(e) for e in epochs))
    if not keep_last or keep_last <= 0 or len(order) <= keep_last:
        return []
    excess = len(order) - int(keep_last)
    candidates = order[:-1]
    ranked = [e for e in candidates if e in sampled] + [e for e in candidates if e not in sampled]
    return sorted(ranked[:excess])


def read_sampled(folder: tp.Union[str, Path]) -> tp.Set[int]:
    """Epochs the fixed-seed sampler recorded in ``<folder>/sampled_epochs.json`` (empty when none)."""
    try:
        data = json.loads((Path(folder) / SAMPLED_RECORD).read_text(encoding="utf-8"))
        return {int(e) for e in data.get("epochs", [])}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def record_sampled(folder: tp.Union[str, Path], epochs: tp.Iterable[int]) -> Path:
    """Add ``epochs`` to ``<folder>/sampled_epochs.json`` (atomic), so retention may prune them first.

    >>> import tempfile
    >>> d = tempfile.mkdtemp(); _ = record_sampled(d, [2]); _ = record_sampled(d, [1, 2]); sorted(read_sampled(d))
    [1, 2]
    """
    folder = Path(folder)
    merged = sorted(read_sampled(folder) | {int(e) for e in epochs})
    return atomic.write_json(folder / SAMPLED_RECORD, {"epochs": merged}, indent=1)


def prune_epoch_checkpoints(folder: tp.Union[str, Path], keep_last: tp.Optional[int], suffix: str = "") -> tp.List[int]:
    """Delete per-epoch checkpoints of ``folder`` beyond ``keep_last`` (:func:`epochs_to_prune`); returns the epochs.

    ``suffix``: an FSDP rank's shard suffix (``.1``), whose files each rank prunes for itself.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in ("checkpoint.th", "checkpoint_1.th", "checkpoint_2.th", "checkpoint_3.th"): _ = (d / name).write_text("x")
    >>> prune_epoch_checkpoints(d, keep_last=1), sorted(p.name for p in d.iterdir())
    ([1, 2], ['checkpoint.th', 'checkpoint_3.th'])
    """
    folder = Path(folder)
    if not keep_last or keep_last <= 0 or not folder.is_dir():
        return []
    if suffix:
        found = {}
        for path in folder.glob(f"checkpoint_*.th{suffix}"):
            stem = path.name[: -len(suffix)]
            found.update({e: path.name for e in epoch_checkpoints([stem])})
    else:
        found = epoch_checkpoints(p.name for p in folder.iterdir())
    sampled = read_sampled(folder)
    doomed = epochs_to_prune(found, keep_last, sampled)
    unsampled = [e for e in doomed if e not in sampled]
    for epoch in doomed:
        (folder / found[epoch]).unlink(missing_ok=True)
    if doomed:
        logger.info("checkpoint retention (checkpoint.keep_last=%d): removed the checkpoints of epoch(s) %s; kept %s",
                    keep_last, ", ".join(map(str, doomed)), ", ".join(str(e) for e in found if e not in doomed))
    if unsampled and sampled:
        logger.warning("checkpoint retention: epoch(s) %s removed before the fixed-seed sampler sampled them "
                       "(raise checkpoint.keep_last to keep more)", ", ".join(map(str, unsampled)))
    return doomed


def _wrap_save_checkpoints(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def save_checkpoints(self: tp.Any) -> tp.Any:
        result = original(self)
        import flashy

        sharded = bool(self.cfg.fsdp.use)
        if sharded or flashy.distrib.is_rank_zero():
            rank = flashy.distrib.rank()
            suffix = f".{rank}" if sharded and rank > 0 else ""
            try:
                prune_epoch_checkpoints(self.folder, self.cfg.checkpoint.get("keep_last"), suffix)
            except OSError as exc:  # a full or read-only disk must not lose the epoch that was just saved
                logger.warning("checkpoint retention failed: %s: %s", type(exc).__name__, exc)
        return result

    setattr(save_checkpoints, MARK, True)
    return save_checkpoints


def install_retention_hook() -> None:
    """Wrap ``save_checkpoints`` of the compression and musicgen solvers (once), outside any earlier wrapper."""
    from audiocraft.solvers.compression import CompressionSolver
    from audiocraft.solvers.musicgen import MusicGenSolver

    for cls in (CompressionSolver, MusicGenSolver):
        current = cls.__dict__.get("save_checkpoints")
        if current is not None and getattr(current, MARK, False):
            continue
        setattr(cls, "save_checkpoints", _wrap_save_checkpoints(getattr(cls, "save_checkpoints")))

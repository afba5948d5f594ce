"""A checkpoint write that fills the disk ends training with one line, not a traceback, and leaves no half file.

AudioCraft saves through ``flashy.utils.write_and_rename``: on ENOSPC the partial ``<checkpoint>.tmp`` stays
behind (holding the space that is short) and a ``RuntimeError`` from torch's zip writer names no file.
:func:`install_disk_full_hook` (called by :mod:`musicpipe.dora_entry.train`) wraps
``audiocraft.utils.checkpoint.save_checkpoint``: when the write fails for lack of space it deletes the partial
file, prints ``MARK <what filled, free, needed>`` on stderr and raises :class:`musicpipe.atomic.DiskFullError`;
:func:`musicpipe.dora.run` turns that line into the command's one-line error. The last complete checkpoint
is untouched: re-running after freeing space resumes from it.
"""

from __future__ import annotations

import functools
import sys
import typing as tp
from pathlib import Path

from musicpipe import atomic

MARK = "musicpipe-disk-full:"
_WRAPPED = "_musicpipe_disk_full"


def _needed(path: Path, partial: Path) -> tp.Optional[int]:
    """About what the checkpoint needs: the previous one's size, else what was written before it failed."""
    for candidate in (path, path.parent / "checkpoint.th", partial):
        try:
            size = candidate.stat().st_size
        except OSError:
            continue
        if size:
            return size
    return None


def _wrap(save: tp.Callable[..., None]) -> tp.Callable[..., None]:
    @functools.wraps(save)
    def save_checkpoint(state: tp.Any, checkpoint_path: Path, *args: tp.Any, **kwargs: tp.Any) -> None:
        path = Path(checkpoint_path)
        partial = Path(str(path) + ".tmp")  # flashy.utils.write_and_rename's temporary name
        try:
            save(state, checkpoint_path, *args, **kwargs)
        except Exception as exc:
            # the real folder, not Dora's short alias for workspaces whose path has spaces
            full = atomic.disk_full(exc, path.resolve(), needed=_needed(path, partial))
            partial.unlink(missing_ok=True)
            if full is None:
                raise
            last = path.parent / "checkpoint.th"
            message = f"training stopped: {full}. " + (
                f"The last complete checkpoint ({last.resolve()}) is kept: free space and re-run the same command to "
                "resume from it" if last.exists() else
                "No checkpoint was complete yet: free space and re-run the same command (it starts again)")
            print(f"{MARK} {message}", file=sys.stderr, flush=True)
            raise atomic.DiskFullError(message, path.parent, full.free, full.needed) from None
    setattr(save_checkpoint, _WRAPPED, True)
    return save_checkpoint


def install_disk_full_hook() -> None:
    """Wrap ``audiocraft.utils.checkpoint.save_checkpoint`` (once); the solvers call it through the module."""
    from audiocraft.utils import checkpoint

    if not getattr(checkpoint.save_checkpoint, _WRAPPED, False):
        checkpoint.save_checkpoint = _wrap(checkpoint.save_checkpoint)


def message_from(output: str) -> tp.Optional[str]:
    """The disk-full message a Dora process printed (the last one), or None.

    >>> message_from("x\\nmusicpipe-disk-full: training stopped: disk full: ...\\nTraceback")
    'training stopped: disk full: ...'
    """
    found = None
    for line in output.splitlines():
        if line.startswith(MARK):
            found = line[len(MARK):].strip()
    return found

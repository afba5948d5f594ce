"""Process lifetime and exclusive locks: children die with their parent; one trainer per XP, one prepare per dataset.

On a rented pod a command is killed with ``kill -9``, a closed terminal or a stopped notebook kernel. Then:

- :func:`die_with_parent` (Linux ``prctl(PR_SET_PDEATHSIG)``) makes the kernel signal a process when its parent
  dies. ``dora run`` children get it before they exec (:func:`popen_kwargs`), Dora's DDP workers when they import
  musicpipe's Dora entry package, prepare's pool workers in their initializer: a killed ``train-*`` or
  ``prepare`` leaves no trainer or worker running behind it.
- :func:`exclusive` is an ``fcntl.flock`` on a file: the kernel releases it when the last process holding it
  exits, whatever kills it, so a dead process never holds it. The holder's PID is written in the file, and the
  losing side is refused with :class:`BusyError` naming it. Training passes the lock's descriptor to its Dora
  child, so the lock lives as long as the trainer, even if the parent is gone.

Example:
    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with exclusive(lock, "the XP 1234abcd") as fd:
    ...     holder(lock) == os.getpid()
    True
    >>> holder(lock) is None
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import typing as tp
from pathlib import Path

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
DIE_WITH_PARENT_ENV = "MUSICPIPE_DIE_WITH_PARENT"  # "1": Dora processes (DDP workers too) die with their parent


class BusyError(RuntimeError):
    """Another live process holds the lock (the message names it and its PID)."""


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux; elsewhere a no-op: False).

    Exits at once when the parent is already gone (it died between our fork and this call).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    if os.getppid() == 1:
        os._exit(1)
    return True


def _child_setup() -> None:  # runs in the child between fork and exec
    die_with_parent()


def popen_kwargs(pass_fds: tp.Sequence[int] = ()) -> tp.Dict[str, tp.Any]:
    """``subprocess.Popen`` arguments for a child that dies with this process (and inherits ``pass_fds``)."""
    kwargs: tp.Dict[str, tp.Any] = {"pass_fds": tuple(pass_fds)}
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _child_setup
    return kwargs


def note(fd: int, text: str) -> None:
    """Replace what a held lock file says about its holder (e.g. ``"123 (dora 456)"``)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{text}\n".encode(), 0)


def holder(path: tp.Union[str, Path]) -> tp.Optional[int]:
    """The PID holding the lock at ``path``, None when nobody holds it (or it cannot be told)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                return int(os.pread(fd, 32, 0).decode().split()[0])
            except (ValueError, IndexError, OSError):
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: tp.Union[str, Path], what: str) -> tp.Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; yields its file descriptor.

    BusyError naming ``what`` and the holder's PID when another process holds it. The descriptor is not
    inheritable: pass it to a child explicitly (:func:`popen_kwargs`) to keep the lock while the child lives.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                who = os.pread(fd, 200, 0).decode().strip() or "?"
            except (OSError, UnicodeDecodeError):
                who = "?"
            raise BusyError(f"{what} is in use by another process (PID {who}; lock {path}): wait for it to end, "
                            f"or stop it (kill {who.split()[0]})") from None
        note(fd, str(os.getpid()))
        try:
            yield fd
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

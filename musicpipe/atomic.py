"""Atomic writes: a temporary file beside the target, renamed over it once complete.

Nothing half-written is ever visible under the target's name. The temporary file,
``.<name>.<random>.tmp``, lives in the target's folder (the same file system, so ``os.replace`` is
atomic), is created with the permissions ``open()`` would give (``0o666`` less the umask) unless
``permissions`` says otherwise, and is deleted when the writer fails, leaving the old target as it was.
Standard library only: ``python3 -m musicpipe.install`` uses it before the virtual environment exists.

- :func:`write_text`, :func:`write_bytes`, :func:`write_json`: the whole content at once;
- :func:`atomic_open`: a file object for writers that stream (zip extraction, ``savefig``);
- :func:`atomic_path`: a temporary path for writers that open by name (``soundfile``, ``torch.save``,
  ``shutil.copyfile``); its name ends in ``.tmp``, so tell such writers the format (``format="WAV"``);
- :func:`symlink`: create or repoint a symbolic link.

A write that fails for lack of space raises :class:`DiskFullError` (an ``OSError`` with ``errno.ENOSPC``) naming the
file, the file system that filled, its free space and, where known, how much the write needed: out of space is not
bad input, and callers stop on it instead of treating the file as broken (:func:`disk_full` classifies).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_json(folder / "a" / "b.json", {"x": 1}, indent=1).read_text()
    '{\\n "x": 1\\n}\\n'
    >>> with atomic_open(folder / "c.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> sorted(p.name for p in folder.rglob("*"))
    ['a', 'b.json', 'c.txt']
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, Path]

_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
FULL_TEXTS = ("No space left on device", "Disk quota exceeded")
# Writers that do not pass errno on (libsndfile's "System error.", torch's "file write failed") are taken for a
# full disk when their file system has less than this left once they fail.
LOW_SPACE_BYTES = 1 << 20


def human_bytes(n: tp.Optional[float]) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1024, one decimal).

    >>> human_bytes(0), human_bytes(1536), human_bytes(3 * 1024 ** 3)
    ('0 B', '1.5 KB', '3.0 GB')
    """
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def space(path: PathLike) -> tp.Tuple[Path, tp.Optional[int], tp.Optional[int]]:
    """``(mount point, free bytes, total bytes)`` of the file system holding ``path`` (or its nearest existing
    parent); ``None`` sizes when it cannot be read."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    mount = probe
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return mount, None, None
    return mount, usage.free, usage.total


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file, the file system, its free space and the need."""

    def __init__(self, message: str, path: tp.Optional[PathLike] = None, free: tp.Optional[int] = None,
                 needed: tp.Optional[int] = None) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message, self.path, self.free, self.needed = message, path, free, needed

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tp.Any:  # picklable across processes with its fields
        return (type(self), (self.message, self.path, self.free, self.needed))


def disk_full(exc: BaseException, path: PathLike, *, needed: tp.Optional[int] = None,
              written: tp.Optional[int] = None) -> tp.Optional[DiskFullError]:
    """A :class:`DiskFullError` describing ``exc`` when it was a write to ``path`` failing for lack of space, else None.

    Out of space means ``errno`` ENOSPC/EDQUOT (or their text) anywhere in the exception's chain, or, for writers
    that hide errno (libsndfile, torch), an ``OSError``/``RuntimeError`` while the file system has less than
    :data:`LOW_SPACE_BYTES` left. ``needed``: bytes the write needed, when known; ``written``: bytes it had
    written when it failed (both said in the message).

    Example:
        >>> import tempfile
        >>> str(disk_full(OSError(errno.ENOSPC, "No space left on device"), tempfile.gettempdir())).startswith("disk full")
        True
        >>> disk_full(ValueError("bad"), tempfile.gettempdir()) is None
        True
    """
    if isinstance(exc, DiskFullError):
        return exc
    if not isinstance(exc, (OSError, RuntimeError)):
        return None
    chain, seen = [], set()
    current: tp.Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(chain) < 16:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    said = any((isinstance(e, OSError) and e.errno in _FULL_ERRNOS) or any(t in str(e) for t in FULL_TEXTS)
               for e in chain)
    mount, free, total = space(path)
    if not said and (free is None or free >= LOW_SPACE_BYTES):
        return None
    message = (f"disk full: writing {path} failed: {mount} has {human_bytes(free)} free of {human_bytes(total)}"
               + (f"; this needs about {human_bytes(needed)} more" if needed else "")
               + (f"; it failed after {human_bytes(written)}" if written else "")
               + f" ({type(exc).__name__}: {exc})")
    return DiskFullError(message, path, free, needed)


def _size(path: Path) -> tp.Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _failed(exc: BaseException, target: Path, tmp: Path) -> tp.Optional[DiskFullError]:
    """Delete the temporary file; a :class:`DiskFullError` when the write failed for lack of space (measured
    before the deletion gives the space back)."""
    full = disk_full(exc, target, written=_size(tmp) or None) if isinstance(exc, Exception) else None
    tmp.unlink(missing_ok=True)
    return full


def _create_temp(target: Path, permissions: tp.Optional[int]) -> tp.Tuple[int, Path]:
    """An open descriptor on a new, empty ``.<name>.<random>.tmp`` beside ``target``, and its path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        except FileExistsError:  # pragma: no cover - 32 random bits taken by another writer
            continue
        except OSError as exc:  # out of inodes, or a quota
            full = disk_full(exc, target) if exc.errno in _FULL_ERRNOS else None
            if full is not None:
                raise full from exc
            raise
        break
    if permissions is not None:
        try:
            os.fchmod(fd, permissions)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    return fd, tmp


@contextlib.contextmanager
def atomic_path(target: PathLike, *, permissions: tp.Optional[int] = None) -> tp.Iterator[Path]:
    """A temporary path beside ``target``, renamed over it when the block succeeds, deleted when it raises.

    The file exists (empty) when the block starts; write it by name, for example with ``torch.save`` or
    ``soundfile.write(tmp, ..., format="WAV")`` (the name ends in ``.tmp``, not in the target's suffix).

    Args:
        target: the file to (re)place; its folder is created when missing.
        permissions: mode bits for the file, e.g. ``0o644``; default: what ``open()`` gives (umask applies).

    Example:
        >>> import shutil, tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "src.txt").write_text("copied")
        >>> with atomic_path(folder / "dst.txt") as tmp:
        ...     _ = shutil.copyfile(folder / "src.txt", tmp)
        >>> (folder / "dst.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('copied', ['dst.txt', 'src.txt'])
    """
    target = Path(target)
    fd, tmp = _create_temp(target, permissions)
    os.close(fd)
    try:
        yield tmp
        if permissions is not None:
            os.chmod(tmp, permissions)  # in case the writer replaced the file instead of writing into it
        os.replace(tmp, target)
    except BaseException as exc:
        full = _failed(exc, target, tmp)
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_open(target: PathLike, mode: str = "w", *, encoding: tp.Optional[str] = None,
                permissions: tp.Optional[int] = None) -> tp.Iterator[tp.IO[tp.Any]]:
    """A file object on a temporary file beside ``target``, renamed over it when the block succeeds.

    Args:
        target: the file to (re)place; its folder is created when missing.
        mode: ``"w"`` (text, UTF-8 unless ``encoding``) or ``"wb"``.
        encoding: text encoding (text mode only).
        permissions: mode bits for the file; default: what ``open()`` gives (umask applies).

    When the block raises, the temporary file is deleted and ``target`` keeps its old content.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "data.bin"
        >>> with atomic_open(target, "wb") as f:
        ...     _ = f.write(b"\\x00\\x01")
        >>> target.read_bytes()
        b'\\x00\\x01'
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a new file: mode must be 'w' or 'wb', not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    target = Path(target)
    fd, tmp = _create_temp(target, permissions)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, target)
    except BaseException as exc:
        full = _failed(exc, target, tmp)
        if full is not None:
            raise full from exc
        raise


def write_bytes(path: PathLike, data: bytes, *, permissions: tp.Optional[int] = None) -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    Example:
        >>> import tempfile
        >>> write_bytes(Path(tempfile.mkdtemp()) / "x.bin", b"abc").read_bytes()
        b'abc'
    """
    with atomic_open(path, "wb", permissions=permissions) as f:
        f.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, *, encoding: str = "utf-8",
               permissions: tp.Optional[int] = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given); return the path.

    Example:
        >>> import tempfile
        >>> write_text(Path(tempfile.mkdtemp()) / "sub" / "x.txt", "héllo\\n").read_text(encoding="utf-8")
        'héllo\\n'
    """
    with atomic_open(path, "w", encoding=encoding, permissions=permissions) as f:
        f.write(text)
    return Path(path)


def write_json(path: PathLike, obj: tp.Any, *, permissions: tp.Optional[int] = None,
               **dumps_kwargs: tp.Any) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` and a final newline to ``path`` atomically; return the path.

    The text is made before the temporary file is, so an object ``json`` cannot encode leaves no trace.

    Example:
        >>> import tempfile
        >>> write_json(Path(tempfile.mkdtemp()) / "x.json", {"b": 1, "a": [2]}, sort_keys=True).read_text()
        '{"a": [2], "b": 1}\\n'
    """
    return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n", permissions=permissions)


def symlink(link: PathLike, target: PathLike, *, target_is_directory: bool = False) -> Path:
    """Make ``link`` a symbolic link to ``target``, replacing any file or link there in one rename.

    ``target`` is stored as given (a relative target is resolved from the link's folder). A directory at
    ``link`` is not replaced (``os.replace`` raises).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = symlink(folder / "current", "v1", target_is_directory=True)
        >>> _ = symlink(folder / "current", "v2", target_is_directory=True)
        >>> os.readlink(folder / "current"), sorted(p.name for p in folder.iterdir())
        ('v2', ['current'])
    """
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.symlink_to(target, target_is_directory=target_is_directory)
        except FileExistsError:  # pragma: no cover - 32 random bits taken by another writer
            continue
        break
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link

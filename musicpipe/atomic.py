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
import json
import os
import secrets
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, Path]


def _create_temp(target: Path, permissions: tp.Optional[int]) -> tp.Tuple[int, Path]:
    """An open descriptor on a new, empty ``.<name>.<random>.tmp`` beside ``target``, and its path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        except FileExistsError:  # pragma: no cover - 32 random bits taken by another writer
            continue
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
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    except BaseException:
        tmp.unlink(missing_ok=True)
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

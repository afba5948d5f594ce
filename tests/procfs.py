"""What Linux's /proc says about live processes, for the tests that kill real process trees: who is below a PID,
who has a file open, who is still alive (not a zombie), which processes a command line names; and a polling wait."""

from __future__ import annotations

import os
import time
import typing as tp
from pathlib import Path


def _stat(entry: Path) -> tp.List[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: [state, ppid, ...]."""
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> set:
    """Every live process below ``pid``."""
    children: dict = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat(entry)[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (its first 200 characters), "" once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")[:200]
    except OSError:
        return ""


def openers(path: Path) -> list:
    """``(pid, command line)`` of the processes with ``path`` open."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and any(os.readlink(fd) == str(path) for fd in (entry / "fd").iterdir()):
                out.append((int(entry.name), cmdline(int(entry.name))))
        except OSError:
            continue
    return out


def alive(pids: tp.Iterable[int]) -> set:
    """Those of ``pids`` still running (zombies are not)."""
    out = set()
    for pid in pids:
        try:
            state = _stat(Path("/proc") / str(pid))[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.add(pid)
    return out


def matching(marker: str) -> set:
    """Live processes whose command line holds ``marker``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.add(int(entry.name))
            except OSError:
                continue
    return alive(found)


def wait_gone(pids: set, seconds: float = 20.0) -> set:
    """Wait up to ``seconds`` for ``pids`` to end; those still alive then."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def wait_for(condition: tp.Callable[[], tp.Any], seconds: float = 300.0,
             what: tp.Union[str, tp.Callable[[], str]] = "") -> float:
    """Poll ``condition`` until true; the seconds it took. Fails after ``seconds`` with ``what`` (a callable is
    asked then, so the message can say what is still there)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.05)
    return time.monotonic() - start

"""Launching ``dora run``: the XP signature of an argument list, and the run itself.

Building the argument list is :func:`musicpipe.presets.dora_run_args` (pure); this module runs it;
reading what a run produced is :mod:`musicpipe.xp`.

Example:
    >>> from musicpipe import presets, dora
    >>> p = presets.load_preset("demo_cpu")
    >>> args = presets.dora_run_args(p, "compression", dset="synthetic_demo")
    >>> run = dora.run(args, workspace="/tmp/ws")      # doctest: +SKIP
    >>> run.sig, run.checkpoint                         # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import os
import subprocess
import sys
import typing as tp
from pathlib import Path

from musicpipe import atomic, audiocraft_env, multinode, paths, presets, procs
from musicpipe import xp as xp_mod

logger = logging.getLogger(__name__)

REFUSED = multinode.REFUSED  # a Dora process's line stating why it refused to train (the error shown)


class DoraError(RuntimeError):
    """``dora run`` failed; the message holds the tail of its output."""


@dataclasses.dataclass(frozen=True)
class DoraRun:
    sig: str
    folder: Path
    returncode: int
    output_tail: str
    skipped: bool = False  # the XP had already trained all its epochs: nothing was launched

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.th"

    @property
    def xp(self) -> "xp_mod.XP":
        """The run's :class:`musicpipe.xp.XP` (config, history, record, checkpoints...)."""
        return xp_mod.XP(folder=self.folder, sig=self.sig, workspace=self.folder.parents[3])

    def history(self) -> tp.List[tp.Dict[str, tp.Any]]:
        return self.xp.history


def xp_signature(args: tp.Sequence[str], workspace: tp.Optional[tp.Union[str, Path]] = None) -> str:
    """The XP signature Dora gives ``args`` (as from :func:`dora_run_args`), computed without training.

    Runs in a subprocess so Hydra's global state and AudioCraft's imports stay out of the caller.
    """
    code = ("import json, sys; from musicpipe.dora_entry.train import main; "
            "print('SIG=' + main.get_xp(json.loads(sys.argv[1])).sig)")
    res = subprocess.run([sys.executable, "-c", code, json.dumps(presets.hydra_overrides(args))],
                         capture_output=True, text=True, env=audiocraft_env.environment(workspace),
                         cwd=paths.REPO_ROOT)
    for line in res.stdout.splitlines():
        if line.startswith("SIG="):
            return line[4:].strip()
    raise DoraError(f"could not compute the XP signature for {' '.join(args)}:\n{res.stderr[-3000:]}")


def run(args: tp.Sequence[str], workspace: tp.Optional[tp.Union[str, Path]] = None,
        echo: bool = True, tail_lines: int = 60, env: tp.Optional[tp.Mapping[str, str]] = None,
        sig: tp.Optional[str] = None, lock_fd: tp.Optional[int] = None,
        command: tp.Optional[tp.Sequence[str]] = None) -> DoraRun:
    """Run ``python -m dora <args>`` with the integration layer's environment; raise on failure.

    Output is streamed (``echo``) and its tail kept for the error message. Prints ``xp: <sig>``
    on a line of its own before training starts. Re-running the same args resumes the same XP
    from its last checkpoint (Dora's behaviour). ``env`` adds variables for the run (e.g. HF_HUB_OFFLINE).
    ``sig``: the XP signature when the caller has already computed it (:func:`xp_signature`).
    The Dora process and its DDP workers die with this process (:mod:`musicpipe.procs`); ``lock_fd`` (the XP's
    lock, :func:`musicpipe.procs.exclusive`) is passed to the Dora process, so the lock lives as long as it does.
    ``command``: run this instead of ``python -m dora <args>`` (a node's torchrun command,
    :func:`musicpipe.multinode.torchrun_args`; ``args`` still name the XP). A worker's ``musicpipe: refused: ...``
    line becomes the error message.
    """
    sig = sig or xp_signature(args, workspace)
    folder = paths.xp_dir(sig, workspace)
    print(f"xp: {sig}", flush=True)
    logger.info("dora %s (xp folder %s)", " ".join(args), folder)
    cmd = list(command) if command is not None else [sys.executable, "-m", "dora", *args]
    tail: tp.Deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**audiocraft_env.environment(workspace), **(env or {}),
                                 procs.DIE_WITH_PARENT_ENV: "1"}, cwd=paths.REPO_ROOT, bufsize=1,
                            **procs.popen_kwargs([lock_fd] if lock_fd is not None else []))
    if lock_fd is not None:
        procs.note(lock_fd, f"{os.getpid()} (musicpipe; dora {proc.pid})")
    assert proc.stdout is not None
    refused: tp.List[str] = []
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        if REFUSED in line:
            refused.append(line[line.index(REFUSED) + len(REFUSED):].strip())
        if echo:
            sys.stdout.write(line)
    proc.wait()
    result = DoraRun(sig=sig, folder=folder, returncode=proc.returncode, output_tail="\n".join(tail))
    if proc.returncode != 0:
        full = _disk_full(result.output_tail, folder)
        if full is not None:
            raise full
        if refused:
            raise DoraError(f"{refused[0]} (xp {sig})")
        raise DoraError(f"dora {' '.join(args)} exited with {proc.returncode} (xp {sig}, {folder}):\n"
                        + result.output_tail)
    return result


def _disk_full(output: str, folder: Path) -> tp.Optional[atomic.DiskFullError]:
    """A failed run whose output says the disk filled, as one :class:`~musicpipe.atomic.DiskFullError`."""
    from musicpipe.dora_entry import disk_full

    said = disk_full.message_from(output)
    if said:
        return atomic.DiskFullError(said, folder)
    if any(text in output for text in atomic.FULL_TEXTS):
        full = atomic.disk_full(OSError(errno.ENOSPC, "No space left on device"), folder)
        if full is not None:
            return atomic.DiskFullError(f"training stopped: {full}; free space and re-run the same command to "
                                        "resume from the last checkpoint", folder, full.free)
    return None


def dora_main(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.Any:
    """AudioCraft's Dora main (from our entry package), pointed at ``workspace``'s experiments.

    AudioCraft reads ``AUDIOCRAFT_DORA_DIR`` once, at import; this keeps an in-process caller
    (generation, checks, notebooks) on the workspace it names even when that changes.
    """
    audiocraft_env.activate(workspace)
    from musicpipe.dora_entry.train import main  # imports AudioCraft: only when needed

    main.dora.dir = audiocraft_env.hydra_safe_dora_dir(workspace)
    return main

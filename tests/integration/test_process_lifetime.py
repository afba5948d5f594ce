"""Killing a parent kills its children; one trainer per XP, one prepare per dataset (real SIGKILLs of real
process trees, real concurrent commands)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, run_cli
from procfs import descendants, openers, wait_for, wait_gone
from musicpipe import paths, procs, training

pytestmark = pytest.mark.integration


def start(*args: str) -> tuple:
    """A musicpipe command in the background; its stdout lines collected by a thread (the pipe never fills)."""
    proc = subprocess.Popen([sys.executable, "-m", "musicpipe", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def test_killed_prepare_leaves_no_worker_and_no_lock(tmp_path):
    ws = tmp_path / "ws"
    args = ("prepare", "synthetic", "--name", "killed_prep", "--tracks-per-genre", "10", "--num-jobs", "2",
            "--workspace", str(ws))
    proc, lines = start(*args)
    lock = paths.dataset_dir("killed_prep", ws) / ".prepare.lock"
    wait_for(lambda: procs.holder(lock) == proc.pid and len(descendants(proc.pid)) >= 2 or proc.poll() is not None,
             what="prepare's workers")
    assert proc.poll() is None, "".join(lines)[-3000:]

    second = run_cli(*args)  # the losing side of two concurrent prepares: one line naming the holder
    assert second.returncode == 2
    assert f"another prepare) is in use by another process (PID {proc.pid}" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone(workers) == set()
    assert procs.holder(lock) is None

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((paths.dataset_dir("killed_prep", ws) / "prepare_report.json").read_text())
    assert report["counts"]["segments_train"] + report["counts"]["segments_valid"] == 40


def test_killed_train_lm_leaves_no_trainer_and_one_trainer_per_xp(workspace, codec, tmp_path):
    # epochs of 60 updates: long enough for a second command to start while the first trains
    args = ("train-lm", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--workspace", str(workspace),
            "--codec", codec.sig, "--epochs", "3", "--no-token-cache", "--outputs", str(tmp_path), "--",
            "optim.updates_per_epoch=60", "label=killed_parent")
    proc, lines = start(*args)
    wait_for(lambda: any(line.startswith("xp: ") for line in list(lines)) or proc.poll() is not None, what="xp line")
    sig = next(line[4:].strip() for line in list(lines) if line.startswith("xp: "))
    folder = paths.xp_dir(sig, workspace)
    lock = folder / training.LOCK_FILE
    wait_for(lambda: (lock.exists() and "dora" in lock.read_text()) or proc.poll() is not None, what="the lock")
    assert proc.poll() is None, "".join(lines)[-3000:]
    note = lock.read_text()
    assert note.startswith(f"{proc.pid} (musicpipe; dora ")

    second = run_cli(*args)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"xp {sig} is in use by another process (PID {proc.pid} (musicpipe; dora" in second.stderr
    assert "Traceback" not in second.stderr

    wait_for(lambda: (folder / "checkpoint.th").exists() or proc.poll() is not None, what="the first checkpoint")
    assert proc.poll() is None, "the run ended before it could be killed"
    trainers = descendants(proc.pid)
    dora_pid = int(note.split("dora ")[1].rstrip(")\n"))
    assert dora_pid in trainers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone(trainers) == set(), "trainer processes outlived their parent"
    deadline = time.monotonic() + 20  # the kernel drops the lock once the last holder has exited
    while procs.holder(lock) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.holder(lock) is None, (lock.read_text(), openers(lock))

    again = run_cli(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 3  # resumed: every epoch trained once
    assert f"train-lm: xp {sig} done, 3 epoch(s)" in again.stdout

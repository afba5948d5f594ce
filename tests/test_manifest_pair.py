"""A dataset's train and valid manifests are replaced as one unit (issue 18 item 7): a prepare killed between
writing them leaves the old pair, never a new train beside an old valid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from media import make_audio
from musicpipe import manifests

KILL_AFTER_TRAIN = """
import os, signal, sys
from musicpipe import atomic
real = atomic.write_text
def killing(path, *args, **kwargs):
    if str(path).endswith(os.path.join("valid", "data.jsonl")):  # train is written: die before valid
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, *args, **kwargs)
atomic.write_text = killing
from musicpipe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _prepare(src: Path, ws: Path, *, kill: bool = False) -> subprocess.CompletedProcess:
    args = ["prepare", "folder", "--input", str(src), "--name", "pair", "--workspace", str(ws), "--num-jobs", "1",
            "--split", "track", "--valid-share", "0.3"]
    cmd = [sys.executable, "-c", KILL_AFTER_TRAIN, *args] if kill else [sys.executable, "-m", "musicpipe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "MUSICPIPE_WORKSPACE": str(ws)})


def _pair(egs: Path) -> tuple:
    return tuple((egs / split / "data.jsonl").read_bytes() for split in manifests.SPLITS)


def test_a_prepare_killed_between_train_and_valid_leaves_the_old_pair(tmp_path, ffmpeg):
    src, ws = tmp_path / "in", tmp_path / "ws"
    for i in range(5):
        make_audio(src / f"band{i}" / f"t{i}.mp3", 11.0, freq=300.0 + 50 * i)
    assert _prepare(src, ws).returncode == 0
    egs = ws / "data" / "pair" / "egs"
    assert egs.is_symlink() and os.readlink(egs).startswith(".egs/")
    old = _pair(egs)
    assert all(old)

    for i in range(5, 10):
        make_audio(src / f"band{i}" / f"t{i}.mp3", 11.0, freq=300.0 + 50 * i)
    res = _prepare(src, ws, kill=True)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert _pair(egs) == old  # the readers' view did not move
    staging = [p.name for p in (egs.parent / manifests.GENERATIONS).iterdir() if p.name.endswith(".tmp")]
    assert len(staging) == 1  # the new pair, half-written, never reached through egs

    assert _prepare(src, ws).returncode == 0
    new = _pair(egs)
    assert new != old
    listed = b"".join(new).decode().splitlines()
    assert len(listed) == 10  # 10 tracks x 1 segment (the 1 s tails are dropped), each in one split
    assert {Path(p).name for p in (egs.parent / manifests.GENERATIONS).iterdir()} >= {Path(os.readlink(egs)).name}


def test_unchanged_manifests_are_not_rewritten_and_the_old_layout_is_migrated(tmp_path):
    rec = lambda name: manifests.AudioRecord(path=f"/ws/{name}.wav", duration=10.0, sample_rate=32000)  # noqa: E731
    egs = tmp_path / "ds" / "egs"
    for split in manifests.SPLITS:  # the layout before: plain folders
        manifests.write_manifest([rec(f"old_{split}")], egs / split)
    manifests.write_manifests({"train": [rec("a"), rec("b")], "valid": [rec("c")]}, egs)
    assert egs.is_symlink()
    assert [r.path for r in manifests.read_manifest(egs / "train")] == ["/ws/a.wav", "/ws/b.wav"]
    target = egs.resolve()
    stamp = (target / "train" / "data.jsonl").stat().st_mtime_ns
    manifests.write_manifests({"train": [rec("b"), rec("a")], "valid": [rec("c")]}, egs)  # same content
    assert egs.resolve() == target and (target / "train" / "data.jsonl").stat().st_mtime_ns == stamp
    versions = [p.name for p in (tmp_path / "ds" / manifests.GENERATIONS).iterdir()]
    assert versions == [target.name]  # the old layout's folder is gone
    manifests.write_manifests({"train": [rec("a")], "valid": [rec("c")]}, egs)
    manifests.write_manifests({"train": [rec("d")], "valid": [rec("c")]}, egs)
    kept = sorted(p.name for p in (tmp_path / "ds" / manifests.GENERATIONS).iterdir())
    assert len(kept) == 2 and egs.resolve().name in kept  # the current version and the one before

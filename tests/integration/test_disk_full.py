"""A full disk stops a command with one clear line and loses nothing: real small tmpfs mounts (root only).

prepare: the tracks converted before the disk filled are kept, none is quarantined for it, the manifests are
untouched, the exit code is non-zero; a re-run after freeing space converts the rest. Training: a checkpoint
write that fills the XP folder ends the run with one line, leaves no partial file, and a re-run completes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from media import make_audio
from musicpipe import atomic, dora, paths, presets

pytestmark = pytest.mark.integration


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(folder, size)``: a tmpfs of ``size`` bytes at ``folder``; ``resize(folder, size)``; unmounted after."""
    mounted = []

    def mount(folder: Path, size: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root is needed): {res.stderr.strip()}")
        mounted.append(folder)
        return folder

    def resize(folder: Path, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)

    mount.resize = resize
    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_prepare_stops_on_a_full_disk_keeps_what_was_done_and_completes_after_space_is_freed(tmp_path, tmpfs):
    src = tmp_path / "in"
    n = 10
    for i in range(n):  # 20 s each: ~1.25 MB of 32 kHz 16-bit WAV per track; distinct audio (no duplicates)
        make_audio(src / f"artist{i % 5}" / f"song{i}.mp3", 20.0, freq=220.0 + 37 * i, amplitude=0.4)
    ws = tmpfs(tmp_path / "ws", 4 * 1024 * 1024)  # room for about 3 tracks
    env = {**os.environ, "MUSICPIPE_WORKSPACE": str(ws)}
    args = ("prepare", "folder", "--input", str(src), "--name", "full", "--workspace", str(ws), "--num-jobs", "2")

    res = run_cli(*args, env=env)
    assert res.returncode != 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("musicpipe prepare: error: prepare full: stopped, the disk is full"), res.stderr[-3000:]
    assert str(ws) in last and "re-run prepare" in last and "not converted" in last
    assert "Traceback" not in res.stderr
    root = ws / "data" / "full"
    markers = [json.loads(m.read_text()) for m in (root / "audio").glob("*/.done.json")]
    assert 1 <= len(markers) < n
    assert all(m["status"] == "ok" for m in markers), [m.get("reason") for m in markers]  # nothing quarantined
    assert not (root / "prepare_report.json").exists()  # no report claiming a smaller dataset
    assert not list((root / "audio").rglob("*.tmp"))
    done_before = {m["track_id"] for m in markers}

    tmpfs.resize(ws, 64 * 1024 * 1024)
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["counts"]["converted_tracks"] == n and report["counts"]["quarantined"] == 0
    assert report["run"]["skipped_unchanged"] == len(done_before)
    listed = (root / "egs" / "train" / "data.jsonl").read_text() + (root / "egs" / "valid" / "data.jsonl").read_text()
    assert len(listed.splitlines()) == report["counts"]["segments"] == 2 * n


def test_a_checkpoint_that_fills_the_disk_ends_training_in_one_line_and_a_rerun_completes(
        workspace, demo_data, codec, outputs, tmpfs):
    preset = presets.load_preset("demo_cpu")
    extra = ["seed=7"]  # another XP than the shared codec's
    sig = dora.xp_signature(presets.dora_run_args(preset, "compression", dset="synthetic_demo", epochs=1,
                                                  overrides=extra), workspace)
    folder = paths.xp_dir(sig, workspace)
    assert not folder.exists()
    size = codec.checkpoint.stat().st_size
    tmpfs(folder, max(256 * 1024, size // 2 // 4096 * 4096))  # the logs fit, the checkpoint does not

    cmd = ("train-codec", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--workspace", str(workspace),
           "--epochs", "1", "--outputs", str(outputs), *extra)
    res = run_cli(*cmd)
    assert res.returncode != 0, res.stdout[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("musicpipe train-codec: error: training stopped: disk full: writing"), \
        res.stdout[-3000:] + res.stderr[-3000:]
    assert str(folder) in last and "re-run the same command" in last
    assert not (folder / "checkpoint.th").exists()
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]  # the partial checkpoint is gone

    tmpfs.resize(folder, 64 * 1024 * 1024)
    res = run_cli(*cmd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"train-codec: xp {sig} done, 1 epoch(s) in history" in res.stdout
    assert (folder / "checkpoint.th").stat().st_size > 0


def test_disk_full_classification_names_the_file_system_and_the_need(tmp_path):
    err = atomic.disk_full(OSError(28, "No space left on device"), tmp_path / "x.wav", needed=3 * 1024 * 1024)
    assert isinstance(err, OSError) and err.errno == 28
    assert str(err).startswith(f"disk full: writing {tmp_path / 'x.wav'} failed: ")
    assert "needs about 3.0 MB more" in str(err)
    # a writer that hides errno (libsndfile) on a disk with plenty of room is not a full disk
    assert atomic.disk_full(RuntimeError("System error."), tmp_path) is None
    assert atomic.disk_full(ValueError("No space left on device"), tmp_path) is None


def test_export_and_token_cache_on_a_full_disk_say_so_in_one_line_and_leave_no_partial_file(
        workspace, demo_data, codec, lm_none, tmp_path, tmpfs):
    out = tmpfs(tmp_path / "export", 64 * 1024)
    res = run_cli("export", lm_none.sig, "--out", str(out), "--workspace", str(workspace))
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("musicpipe export: error: disk full: writing ") and str(out) in last, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
    tmpfs.resize(out, 256 * 1024 * 1024)
    res = run_cli("export", lm_none.sig, "--out", str(out), "--workspace", str(workspace))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((out / "musicpipe.json").read_text())["lm_xp"] == lm_none.sig

    tokens = tmpfs(paths.dataset_dir("synthetic_demo", workspace) / "tokens", 8 * 1024)
    res = run_cli("cache-tokens", "--codec", codec.sig, "--dataset", "synthetic_demo", "--workspace", str(workspace))
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("musicpipe cache-tokens: error: disk full: writing ") and str(tokens) in last, \
        res.stderr[-2000:]
    assert not [p.name for p in tokens.rglob("*") if p.name.endswith(".tmp")]
    tmpfs.resize(tokens, 64 * 1024 * 1024)
    res = run_cli("cache-tokens", "--codec", codec.sig, "--dataset", "synthetic_demo", "--workspace", str(workspace))
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(tokens.glob("*/COMPLETE.json"))

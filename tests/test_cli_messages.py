"""One clear line, not a traceback, for the mistakes users make (issue 18 item 8), through the real CLI."""

from __future__ import annotations

import os
import subprocess

from conftest import read_only_view, run_cli
from media import make_audio


def _error(res: subprocess.CompletedProcess, command: str) -> str:
    """The command's one-line error (exit 2, no traceback)."""
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"musicpipe {command}: error: "), res.stderr[-2000:]
    return last


def test_prepare_folder_empty_folder_and_bad_metadata_csv(tmp_path):
    ws, empty = tmp_path / "ws", tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no audio here")
    last = _error(run_cli("prepare", "folder", "--input", str(empty), "--name", "e", "--workspace", str(ws)),
                  "prepare")
    assert f"{empty}: no audio files" in last

    music = tmp_path / "music"
    make_audio(music / "a" / "one.mp3", 6.0)
    missing = tmp_path / "meta.csv"
    last = _error(run_cli("prepare", "folder", "--input", str(music), "--name", "m", "--workspace", str(ws),
                          "--metadata-csv", str(missing)), "prepare")
    assert f"{missing}: the metadata CSV (--metadata-csv) does not exist" in last
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("path,artist\na/one.mp3,Beyonc\u00e9\n".encode("latin-1"))
    last = _error(run_cli("prepare", "folder", "--input", str(music), "--name", "m", "--workspace", str(ws),
                          "--metadata-csv", str(latin)), "prepare")
    assert f"{latin}: the metadata CSV is not UTF-8 text (byte 0xe9" in last and "iconv" in last


def test_read_only_workspace_is_named_in_one_line(tmp_path):
    music, ws = tmp_path / "music", tmp_path / "ws"
    make_audio(music / "a" / "one.mp3", 6.0)
    ws.mkdir()
    ro = read_only_view(ws, tmp_path)
    try:
        res = run_cli("prepare", "folder", "--input", str(music), "--name", "m", "--workspace", str(ro),
                      env={**os.environ, "MUSICPIPE_WORKSPACE": str(ro)})
        last = _error(res, "prepare")
        assert str(ro) in last and ("Read-only file system" in last or "Permission denied" in last)
        assert "the workspace must be writable" in last or "permission denied" in last
    finally:
        if ro != ws:
            subprocess.run(["umount", str(ro)], check=True)
    assert not any(ws.iterdir())


def test_inspect_of_a_half_combined_dataset_says_missing(tmp_path):
    ws = tmp_path / "ws"
    half = ws / "data" / "mix"
    (half / "audio").mkdir(parents=True)  # combine stopped after linking the audio, before the manifests
    (half / "audio" / "src").symlink_to(tmp_path)
    res = run_cli("inspect", "mix", "--workspace", str(ws))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "manifests missing" in res.stdout and "did not finish" in res.stdout
    assert "0 segments" not in res.stdout


def test_generate_refuses_bad_counts_before_loading_anything(tmp_path):
    ws = tmp_path / "ws"
    for flag, value, text in (("--num-samples", "0", "the number of samples must be at least 1, got 0"),
                              ("--duration", "-1", "the duration must be a positive number of seconds, got -1.0")):
        last = _error(run_cli("generate", "--xp", "0123abcd", "--workspace", str(ws), flag, value), "generate")
        assert last.endswith(text)


def test_report_takes_the_outputs_folder(tmp_path):
    ws = tmp_path / "ws"
    last = _error(run_cli("report", "0123abcd", "--workspace", str(ws), "--outputs", str(tmp_path / "out")), "report")
    assert "XP folder" in last and "does not exist" in last

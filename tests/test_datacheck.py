"""musicpipe.datacheck on real prepared data broken on disk, through the library, preflight and the training CLI."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import training_checks.preflight as pf
from conftest import read_only_view, run_cli
from musicpipe import datacheck, manifests, paths, training
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic

NAME = "synth"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSICPIPE_WORKSPACE", raising=False)
    monkeypatch.delenv("AUDIOCRAFT_DORA_DIR", raising=False)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    synthetic.prepare_synthetic(NAME, ws, PrepareConfig(num_jobs=1), tracks_per_genre=2, duration=4.0, progress=False)
    return ws


def _records(ws: Path, split: str = "train") -> list:
    return manifests.read_manifest(paths.dataset_dir(NAME, ws) / "egs" / split)


def _all(ws: Path) -> dict:
    return {split: _records(ws, split) for split in ("train", "valid")}


def test_doctests() -> None:
    assert doctest.testmod(datacheck).failed == 0


def test_clean_dataset_passes(ws: Path) -> None:
    result = datacheck.check_dataset(NAME, ws)
    assert result.ok and result.files == 8 and result.decoded == 8
    assert set(result.probes) == {r.path for recs in _all(ws).values() for r in recs}


def test_each_fault_named_once(ws: Path) -> None:
    train, valid = _records(ws, "train"), _records(ws, "valid")
    deleted, garbage, truncated = Path(train[0].path), Path(train[1].path), Path(train[2].path)
    deleted.unlink()
    garbage.write_bytes(os.urandom(garbage.stat().st_size))                   # same size, header gone
    truncated.write_bytes(truncated.read_bytes()[:44 + 2 * 3200])              # header + 0.1 s of 4 s
    sidecar = Path(valid[0].path).with_suffix(".json")
    sidecar.write_text('{"title": "x", ', encoding="utf-8")                    # hand-edited, invalid JSON
    # a manifest line claiming 100 s for a 4 s file
    egs = paths.dataset_dir(NAME, ws) / "egs" / "train"
    lines = (egs / "data.jsonl").read_text(encoding="utf-8").splitlines()
    long_path = train[3].path
    lines = [json.dumps({**json.loads(line), "duration": 100.0}) if json.loads(line)["path"] == long_path else line
             for line in lines]
    (egs / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = datacheck.check_dataset(NAME, ws, sample=None)
    assert not result.ok and result.files == 8
    by_file = {p.split(": ")[0]: p for p in result.problems}
    assert by_file == {str(deleted): f"{deleted}: file not found (listed in train)",
                       str(garbage): f"{garbage}: not a readable audio file (no RIFF/WAVE header) (listed in train)",
                       str(truncated): by_file[str(truncated)],
                       long_path: f"{long_path}: header says 4.00 s but the train manifest lists 100.00 s",
                       str(sidecar): by_file[str(sidecar)]}
    assert by_file[str(truncated)].startswith(f"{truncated}: truncated: 6444 bytes, its header says 256044 (listed in train)")
    assert by_file[str(sidecar)].startswith(f"{sidecar}: sidecar is not valid JSON (")
    # the healthy files were decoded, the broken ones not again
    assert result.decoded == 3

    with pytest.raises(training.TrainingInputError) as err:
        training.check_data(NAME, ws)
    text = str(err.value)
    assert text.startswith(f"dataset {NAME!r}: 5 of 8 file(s) unusable, training not started:\n  /")
    assert len([line for line in text.splitlines() if line.startswith("  /")]) == 5


def test_count_when_many(ws: Path) -> None:
    for rec in _records(ws, "train") + _records(ws, "valid"):
        Path(rec.path).with_suffix(".json").write_text("[1, 2", encoding="utf-8")
    result = datacheck.check_dataset(NAME, ws)
    assert len(result.problems) == 8
    assert result.message(limit=3).endswith("; and 5 more")


def test_flac_header(tmp_path: Path) -> None:
    p = tmp_path / "a.flac"
    sf.write(p, np.zeros(48000, dtype=np.float32), 16000, format="FLAC", subtype="PCM_16")
    info = datacheck.header_info(p)
    assert (info["format"], info["sample_rate"], info["frames"]) == ("flac", 16000, 48000)
    good = manifests.AudioRecord(str(p), 3.0, 16000)
    assert datacheck.check_file(good) is None
    assert "header says 3.00 s" in datacheck.check_file(manifests.AudioRecord(str(p), 9.0, 16000))


def test_truncated_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint.th"
    torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 3}, ckpt)
    assert datacheck.check_checkpoint(ckpt) is None
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    problem = datacheck.check_checkpoint(ckpt)
    assert problem.startswith(f"{ckpt}: truncated or corrupt")
    with pytest.raises(Exception):  # what the LM would meet at its first step
        torch.load(ckpt, map_location="cpu", weights_only=True)


def test_preflight_files_catches_invalid_sidecar_for_every_solver(ws: Path) -> None:
    sidecar = Path(_records(ws, "train")[0].path).with_suffix(".json")
    sidecar.write_text("not json", encoding="utf-8")
    for solver in ("compression", "musicgen"):
        report = pf.run_preflight(NAME, solver=solver, workspace=ws)
        files = report.get("files")
        assert files.status == pf.FAIL, solver
        assert files.message.startswith(f"1 of 8 file(s) checked are unusable: {sidecar}: sidecar is not valid JSON")


def test_preflight_truncated_codec_checkpoint(ws: Path) -> None:
    sig = "c0dec0de"
    folder = paths.xp_dir(sig, ws)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        "solver: compression\nsample_rate: 32000\nchannels: 1\nrvq: {n_q: 4, bins: 64}\n", encoding="utf-8")
    torch.save({"model": {"w": torch.zeros(1000)}}, folder / "checkpoint.th")
    report = pf.run_preflight(NAME, solver="musicgen", codec=sig, workspace=ws)
    assert report.get("codec").status == pf.PASS, report.get("codec").message
    ckpt = folder / "checkpoint.th"
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    report = pf.run_preflight(NAME, solver="musicgen", codec=sig, workspace=ws)
    assert report.get("codec").status == pf.FAIL
    assert report.get("codec").message.startswith(f"codec XP {sig}: {ckpt}: truncated or corrupt")


def test_preflight_read_only_workspace(ws: Path, tmp_path: Path) -> None:
    assert pf.run_preflight(NAME, workspace=ws).get("workspace").status == pf.PASS
    ro = read_only_view(ws, tmp_path)
    try:
        report = pf.run_preflight(NAME, workspace=ro)
        check = report.get("workspace")
        assert check.status == pf.FAIL and not report.ok
        assert check.message.startswith(f"{ro}: not writable (")
        assert not list(ro.glob(".musicpipe-write-test-*"))
    finally:
        if ro != ws:
            subprocess.run(["umount", str(ro)], check=True)
    assert not list(ws.glob(".musicpipe-write-test-*"))


def test_train_codec_refuses_before_launch(ws: Path) -> None:
    victim = Path(_records(ws, "valid")[0].path)
    victim.write_bytes(os.urandom(victim.stat().st_size))
    env = {**os.environ, "MUSICPIPE_WORKSPACE": str(ws)}
    res = run_cli("train-codec", "--preset", "demo_cpu", "--dataset", NAME, "--workspace", str(ws), env=env,
                  timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"  {victim}: not a readable audio file (no RIFF/WAVE header) (listed in valid)" in res.stderr
    assert "Traceback" not in res.stderr
    xps = paths.workspace_root(ws) / "experiments"
    assert not xps.exists() or not any(xps.rglob("checkpoint.th"))
    assert not any(p.name == ".hydra" for p in ws.rglob(".hydra"))  # no dora run started

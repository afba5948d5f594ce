"""Duplicate audio (byte-identical or identical after decoding) found at prepare time and kept out of the split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicpipe import manifests, paths, split
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks


def _tone(path: Path, freq: float, sr: int = 32000, seconds: float = 3.0) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def test_duplicates_reported_and_left_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    tracks = []
    for i in range(6):
        tracks.append(TrackInput(path=_tone(src / f"t{i}.wav", 200 + 60 * i), track_id=f"t{i}", artist=f"a{i}",
                                 genre="rock"))
    shutil.copy(src / "t0.wav", src / "copy.wav")                       # byte-identical, another name/artist
    data, sr = sf.read(src / "t1.wav", dtype="int16")
    sf.write(src / "t1_again.flac", data, sr, format="FLAC", subtype="PCM_16")  # identical after decoding
    tracks += [TrackInput(path=src / "copy.wav", track_id="z_copy", artist="someone else", genre="rock"),
               TrackInput(path=src / "t1_again.flac", track_id="z_flac", artist="another", genre="rock")]
    ws = tmp_path / "ws"
    config = PrepareConfig(num_jobs=1, segment_seconds=1.0, min_last_segment_seconds=0.5, valid_share=0.3)
    report = prepare_tracks(tracks, "dups", ws, config, progress=False)
    dups = {q["track_id"]: q for q in report["quarantined"]}
    assert set(dups) == {"z_copy", "z_flac"}
    assert dups["z_copy"]["reason"] == "duplicate of t0 (identical decoded audio)"
    assert dups["z_flac"]["duplicate_of"] == "t1" and dups["z_flac"]["reason_code"] == "duplicate"
    assert report["quarantine_reasons"] == {"duplicate": 2}
    egs = paths.dataset_dir("dups", ws) / "egs"
    listed = {Path(r.path).parent.name for side in ("train", "valid") for r in manifests.read_manifest(egs / side)}
    assert listed == {f"t{i}" for i in range(6)}
    again = prepare_tracks(tracks, "dups", ws, config, progress=False)  # the re-run decides the same
    assert again["quarantined"] == report["quarantined"]


def test_leak_check_uses_the_audio_fingerprint() -> None:
    with pytest.raises(split.SplitLeakError, match="same audio as track 'a' in train"):
        split.check_no_leak([{"track_id": "a", "artist": "X", "audio_hash": "h1"}],
                            [{"track_id": "b", "artist": "Y", "audio_hash": "h1"}])
    split.check_no_leak([{"track_id": "a", "artist": "X", "audio_hash": "h1"}],
                        [{"track_id": "b", "artist": "Y", "audio_hash": "h2"}])

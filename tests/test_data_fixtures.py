"""Manifests, sidecars, dset configs and the synthetic source (real WAV files, decoded by ffmpeg)."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from musicpipe import manifests
from musicpipe.sources import synthetic


def test_manifest_is_sorted_absolute_and_byte_identical_on_rerun(tmp_path):
    recs = [manifests.AudioRecord(path=str(tmp_path / n), duration=3.0, sample_rate=32000) for n in ("b.wav", "a.wav")]
    path = manifests.write_manifest(recs, tmp_path / "egs")
    first = path.read_bytes()
    lines = [json.loads(line) for line in first.decode().splitlines()]
    assert [line["path"] for line in lines] == sorted(str(tmp_path / n) for n in ("a.wav", "b.wav"))
    assert set(lines[0]) == {"path", "duration", "sample_rate", "amplitude", "weight", "info_path"}
    manifests.write_manifest(list(reversed(recs)), tmp_path / "egs")
    assert path.read_bytes() == first
    assert [r.path for r in manifests.read_manifest(tmp_path / "egs")] == [line["path"] for line in lines]
    assert not list((tmp_path / "egs").glob(".*tmp"))  # no temp file left behind


def test_records_are_validated():
    with pytest.raises(ValueError, match="absolute"):
        manifests.AudioRecord(path="rel/a.wav", duration=1.0, sample_rate=32000)
    with pytest.raises(ValueError, match="duration"):
        manifests.AudioRecord(path="/a.wav", duration=0.0, sample_rate=32000)


def test_sidecar_has_every_musicinfo_key(tmp_path):
    path = manifests.write_sidecar(tmp_path / "x.wav", {"genre": "rock", "title": "t"})
    data = json.loads(path.read_text())
    assert path.name == "x.json"
    assert set(data) == set(manifests.SIDECAR_FIELDS) and data["genre"] == "rock" and data["artist"] is None
    with pytest.raises(ValueError, match="unknown sidecar"):
        manifests.sidecar(colour="red")


def test_synthetic_clips_are_deterministic_and_genres_differ():
    a = synthetic.render_clip("techno", seed=3, duration=2.0)
    assert np.array_equal(a, synthetic.render_clip("techno", seed=3, duration=2.0))
    assert a.dtype == np.float32 and a.shape == (64000,) and 0.5 < np.abs(a).max() <= 1.0

    def centroid(x):
        spec = np.abs(np.fft.rfft(x))
        return float((spec * np.fft.rfftfreq(len(x), 1 / 32000)).sum() / spec.sum())

    # ambient is sine pads, techno saw waves with hats: clearly brighter
    assert centroid(synthetic.render_clip("techno", 0, 2.0)) > 2 * centroid(synthetic.render_clip("ambient", 0, 2.0))


def test_synthetic_source_goes_through_prepare(tmp_path, ffmpeg):
    from musicpipe.prepare import PrepareConfig

    synthetic.prepare_synthetic("tiny", tmp_path, PrepareConfig(num_jobs=1, split="track", valid_share=0.25),
                                tracks_per_genre=2, duration=10.0, genres=["rock", "ambient"], progress=False)
    splits = {s: manifests.read_manifest(tmp_path / "data" / "tiny" / "egs" / s) for s in ("train", "valid")}
    assert len(splits["train"]) + len(splits["valid"]) == 4 and splits["valid"]
    sidecars = {s: [json.loads(open(r.path[:-4] + ".json").read()) for r in recs] for s, recs in splits.items()}
    artists = {s: {d["artist"] for d in docs} for s, docs in sidecars.items()}
    assert not artists["train"] & artists["valid"]
    assert {d["genre"] for docs in sidecars.values() for d in docs} == {"rock", "ambient"}
    for rec in splits["train"] + splits["valid"]:
        info = sf.info(rec.path)
        assert (info.samplerate, info.channels, info.subtype) == (32000, 1, "PCM_16")
        assert abs(info.frames - 320000) <= 32
        probe = subprocess.run([ffmpeg, "-v", "error", "-i", rec.path, "-f", "null", "-"], capture_output=True)
        assert probe.returncode == 0, probe.stderr
    cfg = (tmp_path / "config" / "dset" / "audio" / "tiny.yaml").read_text()
    assert "max_sample_rate: 32000" in cfg and "/data/tiny/egs/valid" in cfg

"""Streaming decode and the prepare step on real encoded files made by ffmpeg (no mocks of audio or codecs).

Truncated inputs: a file whose second half is missing (an interrupted download) is converted as far as it
decodes and the report carries a warning for it ("decoded X s of Y s declared"); it is not quarantined.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import shutil
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from media import make_audio, peak_rss, text_as, truncated_copy, zero_bytes
from musicpipe import audio, manifests, prepare
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks, safe_track_id

SR = 32000
SEG = 10 * SR
FORMATS = (".mp3", ".ogg", ".opus", ".flac", ".wav", ".m4a")
# A frame or two of the codec (AAC keeps ~1 frame of priming, MP3 frames are 1152, Vorbis up to 2048).
LENGTH_TOLERANCE = 4096


# ----------------------------------------------------------------------------------------------- decode


@pytest.mark.parametrize("ext", FORMATS)
def test_stream_mono_decodes_every_format_to_32k_mono_blocks(tmp_path, ffmpeg, ext):
    src = make_audio(tmp_path / f"tone{ext}", 12.5, sample_rate=44100, channels=2, amplitude=0.5)
    stats: tp.Dict[str, tp.Any] = {}
    blocks = list(audio.stream_mono(src, SR, 10.0, stats=stats))
    assert len(blocks) == 2 and len(blocks[0]) == SEG
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert abs(sum(len(b) for b in blocks) - int(12.5 * SR)) <= LENGTH_TOLERANCE
    # downmix averages identical channels (no doubling, no clipping)
    assert 0.4 < max(float(np.abs(b).max()) for b in blocks) < 0.6
    assert stats["source_channels"] == 2 and stats["samples"] == sum(len(b) for b in blocks)


@pytest.mark.parametrize("ext,rate,channels", [(".flac", 48000, 2), (".wav", 8000, 1)])
def test_stream_mono_resamples_to_the_right_length_and_pitch(tmp_path, ffmpeg, ext, rate, channels):
    src = make_audio(tmp_path / f"x{ext}", 7.0, sample_rate=rate, channels=channels, freq=1000.0)
    blocks = list(audio.stream_mono(src, SR, block_seconds=2.5))
    assert [len(b) for b in blocks[:2]] == [80000, 80000] and abs(len(blocks[2]) - 64000) <= 2
    x = np.concatenate(blocks)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.fft.rfftfreq(len(x), 1 / SR)[int(np.argmax(spectrum))] - 1000.0) < 2.0


@pytest.mark.parametrize("ext", (".mp3", ".ogg", ".flac", ".m4a"))
def test_probe_reads_embedded_tags(tmp_path, ffmpeg, ext):
    src = make_audio(tmp_path / f"t{ext}", 2.0, tags={"artist": "Zoë Ä", "genre": "Rock", "title": "Song"})
    info = audio.probe(src)
    assert info["tags"]["artist"] == "Zoë Ä" and info["tags"]["genre"] == "Rock" and info["tags"]["title"] == "Song"
    assert info["channels"] == 1 and info["sample_rate"] == 44100 and abs(info["duration"] - 2.0) < 0.1


def test_decode_errors_name_the_file_and_the_reason(tmp_path):
    cases = {zero_bytes(tmp_path / "zero.mp3"): "empty", text_as(tmp_path / "text.mp3"): "not a readable audio",
             tmp_path / "missing.flac": "not found"}
    for path, reason in cases.items():
        with pytest.raises(audio.AudioDecodeError) as info:
            list(audio.stream_mono(path))
        assert str(path) in str(info.value) and reason in str(info.value)
        again = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
        assert again.path == str(path) and again.reason == info.value.reason
        with pytest.raises(audio.AudioDecodeError):
            audio.probe(path)


def test_long_file_streams_block_by_block_with_flat_memory(tmp_path, ffmpeg):
    src = make_audio(tmp_path / "long.flac", 600.0, sample_rate=48000, channels=2)
    sizes = [len(b) for b in audio.stream_mono(src, SR, 10.0)]
    assert sizes == [SEG] * 60
    # Whole-track decoding would need 77 MB (10 min, 32 kHz mono float32) and more at the source rate.
    decode = peak_rss("decode", src, tmp_path / "ws")
    full = peak_rss("prepare", src, tmp_path / "ws")
    assert decode["blocks"] == 60 and full["blocks"] == 60
    assert decode["peak_mb"] - decode["before_mb"] < 40, decode
    assert full["peak_mb"] - full["before_mb"] < 40, full


def _reference_decode(path: Path, sample_rate: int = SR) -> tp.Tuple[np.ndarray, int]:
    """The former decode path: ``av.AudioResampler`` fed one codec frame at a time, corrupt packets skipped.

    Returns the audio and the number of packets that failed to decode.
    """
    import av

    out: tp.List[np.ndarray] = []
    resampler, key, bad = None, None, 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.audio[0]):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad += 1
                continue
            for frame in frames:
                if (frame.format.name, frame.layout.name, frame.sample_rate) != key:
                    if resampler is not None:
                        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                frame.pts = None
                out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        if resampler is not None:
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out), bad


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def _damaged(src: Path, dst: Path) -> Path:
    """``src`` with bursts of random bytes in two places (corrupt packets the decoder rejects)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 3, len(data) // 2):
        for i in range(start, start + 3000, 100):
            data[i:i + 20] = rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("ext,kind,rate", [(".ogg", "chirp", 44100), (".mp3", "noise", 44100),
                                           (".flac", "chirp", 48000), (".mp3", "sine", 22050)])
def test_decode_gives_the_per_frame_resamplers_audio_to_the_sample(tmp_path, ffmpeg, ext, kind, rate):
    src = make_audio(tmp_path / f"x{ext}", 23.0, sample_rate=rate, channels=2, kind=kind, freq=500.0, amplitude=0.6)
    reference, _ = _reference_decode(src)
    stats: tp.Dict[str, tp.Any] = {}
    x = np.concatenate(list(audio.stream_mono(src, SR, 10.0, stats=stats)))
    assert len(x) == len(reference) == stats["samples"]
    assert _snr_db(reference, x) > 60.0  # the same FFmpeg conversion (bit-identical here), so far above


@pytest.mark.parametrize("ext", (".mp3", ".flac"))
def test_corrupt_packets_are_skipped_as_before(tmp_path, ffmpeg, ext):
    src = _damaged(make_audio(tmp_path / f"ok{ext}", 20.0, channels=2, kind="chirp"), tmp_path / f"bad{ext}")
    reference, bad = _reference_decode(src)
    stats: tp.Dict[str, tp.Any] = {}
    x = np.concatenate(list(audio.stream_mono(src, SR, 10.0, stats=stats)))
    assert bad > 0 and stats["skipped_packets"] == bad
    assert len(x) == len(reference) and _snr_db(reference, x) > 60.0


def test_a_format_change_mid_stream_rebuilds_the_converter(tmp_path, ffmpeg):
    # two MP3s back to back (44.1 kHz stereo, then 22.05 kHz mono): the decoder's output format changes
    a = make_audio(tmp_path / "a.mp3", 3.0, channels=2, freq=440.0)
    b = make_audio(tmp_path / "b.mp3", 2.0, sample_rate=22050, freq=660.0)
    both = tmp_path / "both.mp3"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    reference, _ = _reference_decode(both)
    stats: tp.Dict[str, tp.Any] = {}
    blocks = list(audio.stream_mono(both, SR, 1.0, stats=stats))
    assert stats["graphs"] >= 2 and all(len(blk) == SR for blk in blocks[:-1])
    x = np.concatenate(blocks)
    assert len(x) == len(reference) and abs(len(x) - 5 * SR) <= LENGTH_TOLERANCE and _snr_db(reference, x) > 60.0


@pytest.mark.parametrize("block_seconds", (10.0, 1.0))
def test_python_touches_one_output_frame_per_block_not_one_per_codec_frame(tmp_path, ffmpeg, block_seconds):
    """Regression guard for speed without timing: the graph is pulled about once per block.

    60 s of 44.1 kHz MP3 are 2,297 codec frames; the former path pulled a resampler twice per frame.
    """
    src = make_audio(tmp_path / "minute.mp3", 60.0, channels=2, kind="chirp")
    stats: tp.Dict[str, tp.Any] = {}
    blocks = list(audio.stream_mono(src, SR, block_seconds, stats=stats))
    assert stats["graphs"] == 1
    assert len(blocks) - 1 <= stats["graph_pulls"] <= len(blocks) + 3, (len(blocks), stats["graph_pulls"])


def test_wav_segments_are_the_bytes_libsndfile_writes(tmp_path):
    x = (np.random.default_rng(3).standard_normal(SR + 7) * 0.5).astype(np.float32)
    x[:3] = [1.5, -1.5, 0.99999]  # clipped
    size = prepare._write_segment(tmp_path / "ours.wav", x.copy(), SR, "wav")
    pcm = np.rint(np.clip(x, -1.0, 1.0) * np.float32(32767.0)).astype(np.int16)
    sf.write(tmp_path / "ref.wav", pcm, SR, format="WAV", subtype="PCM_16")
    assert (tmp_path / "ours.wav").read_bytes() == (tmp_path / "ref.wav").read_bytes()
    assert size == (tmp_path / "ours.wav").stat().st_size and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------------------------- prepare


def _sha(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _egs_bytes(ws: Path, name: str) -> tp.Tuple[bytes, bytes]:
    egs = ws / "data" / name / "egs"
    return (egs / "train" / "data.jsonl").read_bytes(), (egs / "valid" / "data.jsonl").read_bytes()


def _without_run(report: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    return {k: v for k, v in report.items() if k != "run"}


def _track(path: Path, rel: str, **kw: tp.Any) -> TrackInput:
    return TrackInput(path=path, track_id=safe_track_id(rel), **kw)


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory) -> tp.Dict[str, tp.Any]:
    """The awkward inputs, each with the outcome it must have, prepared once (num_jobs=1)."""
    src = tmp_path_factory.mktemp("src")
    ws = tmp_path_factory.mktemp("ws") / "work space é"
    full = make_audio(src / "full.mp3", 24.0, channels=2, kind="chirp")
    files = {
        "Café del Mar/01 ünïcode track.mp3": make_audio(src / "Café del Mar" / "01 ünïcode track.mp3", 22.0,
                                                       channels=2, tags={"artist": "José", "genre": "Chillout"}),
        "flac48.flac": make_audio(src / "flac48.flac", 16.0, sample_rate=48000, channels=2, kind="chirp"),
        "wav8k.wav": make_audio(src / "wav8k.wav", 12.0, sample_rate=8000, freq=700.0),
        "vorbis.ogg": make_audio(src / "vorbis.ogg", 10.0, freq=330.0),
        "aac.m4a": make_audio(src / "aac.m4a", 15.0, channels=2, freq=550.0),
        "short whole.wav": make_audio(src / "short whole.wav", 3.0, freq=880.0),
        "truncated.mp3": truncated_copy(full, src / "truncated.mp3", 0.5),
        "half silent.flac": make_audio(src / "half silent.flac", 40.0, kind="half_silent"),
        "clipped.wav": make_audio(src / "clipped.wav", 12.0, kind="clipped"),
        "clip05.ogg": make_audio(src / "clip05.ogg", 0.5),
        "silent.wav": make_audio(src / "silent.wav", 12.0, kind="silence"),
        "zero.mp3": zero_bytes(src / "zero.mp3"),
        "text.mp3": text_as(src / "text.mp3"),
        "missing.flac": src / "missing.flac",
    }
    tracks = [_track(path, rel, artist=f"artist {i}", genre="rock" if i % 2 else None, tags=["t"] if i % 3 else [])
              for i, (rel, path) in enumerate(files.items())]
    ids = {rel: safe_track_id(rel) for rel in files}
    report = prepare_tracks(tracks, "bad", ws, PrepareConfig(num_jobs=1, split="track", valid_share=0.2),
                            progress=False)
    return {"ws": ws, "root": ws / "data" / "bad", "report": report, "ids": ids, "tracks": tracks}


EXPECTED_SEGMENTS = {  # seconds of each kept segment
    "Café del Mar/01 ünïcode track.mp3": [10, 10],   # 2 s tail dropped (< 5 s)
    "flac48.flac": [10, 6],
    "wav8k.wav": [10],
    "vorbis.ogg": [10],
    "aac.m4a": [10, 5],
    "short whole.wav": [3],                          # shorter than one segment: kept whole
    "truncated.mp3": [10],                           # ~12 s of 24 s decode
    "half silent.flac": [10, 10],                    # 2 silent segments dropped
    "clipped.wav": [10],
}
EXPECTED_QUARANTINE = {"clip05.ogg": "too_short", "silent.wav": "silent", "zero.mp3": "undecodable",
                       "text.mp3": "undecodable", "missing.flac": "undecodable"}


def test_every_awkward_input_is_converted_correctly_or_quarantined_with_a_reason(bad_set):
    report, ids, root = bad_set["report"], bad_set["ids"], bad_set["root"]
    assert report["counts"]["inputs"] == len(ids)
    assert report["counts"]["converted_tracks"] == len(EXPECTED_SEGMENTS)
    quarantined = {q["track_id"]: q for q in report["quarantined"]}
    assert {tid: q["reason_code"] for tid, q in quarantined.items()} == \
        {ids[rel]: code for rel, code in EXPECTED_QUARANTINE.items()}
    for q in quarantined.values():
        assert q["file"] and q["reason"]
    assert "0 bytes" in quarantined[ids["zero.mp3"]]["reason"]
    assert "too short: 0.50 s" in quarantined[ids["clip05.ogg"]]["reason"]
    on_disk = json.loads((root / "prepare_report.json").read_text(encoding="utf-8"))
    assert on_disk["quarantined"] == report["quarantined"]

    records = {side: manifests.read_manifest(root / "egs" / side) for side in ("train", "valid")}
    by_track: tp.Dict[str, tp.List[manifests.AudioRecord]] = {}
    for rec in records["train"] + records["valid"]:
        by_track.setdefault(Path(rec.path).parent.name, []).append(rec)
    assert set(by_track) == {ids[rel] for rel in EXPECTED_SEGMENTS}
    for rel, expected in EXPECTED_SEGMENTS.items():
        recs = sorted(by_track[ids[rel]], key=lambda r: r.path)
        assert [Path(r.path).name for r in recs] == [f"{ids[rel]}_{k}.wav" for k in range(len(expected))]
        for rec, seconds in zip(recs, expected):
            info = sf.info(rec.path)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert abs(info.frames - seconds * SR) <= LENGTH_TOLERANCE, (rel, info.frames)
            assert rec.duration == pytest.approx(info.frames / SR) and rec.sample_rate == SR
    assert report["counts"]["segments"] == sum(len(v) for v in EXPECTED_SEGMENTS.values())
    assert report["counts"]["dropped_silent_segments"] == 2
    marker = json.loads((root / "audio" / ids["half silent.flac"] / ".done.json").read_text())
    assert marker["dropped_silent"] == 2 and marker["status"] == "ok"
    warned = {w["track_id"]: w["warnings"] for w in report["warnings"]}
    assert "truncated" in warned[ids["truncated.mp3"]][0]
    assert report["clipping"]["worst"][0]["track_id"] == ids["clipped.wav"]
    assert report["clipping"]["worst"][0]["ratio"] > 0.01
    assert not list(root.rglob("*.tmp"))  # no temp file left behind
    for rel in EXPECTED_QUARANTINE:  # a quarantined track keeps its decision, no audio
        assert [p.name for p in (root / "audio" / ids[rel]).iterdir()] == [".done.json"]


def test_report_counts_missing_metadata_split_and_config(bad_set):
    report = bad_set["report"]
    mm = report["missing_metadata"]
    converted = [t for t in bad_set["tracks"] if t.track_id in {bad_set["ids"][r] for r in EXPECTED_SEGMENTS}]
    assert mm["of_tracks"] == len(converted) == 9
    assert mm["artist"] == 0 and mm["title"] == 9 and mm["album"] == 9
    assert mm["genre"] == sum(1 for t in converted if not t.genre)
    assert mm["description"] == sum(1 for t in converted if not t.genre and not t.tags)
    assert report["split"]["method_used"] == "track" and report["config"]["split"] == "track"
    assert report["counts"]["segments_valid"] > 0 and report["counts"]["segments_train"] > 0
    assert report["counts"]["hours_train"] + report["counts"]["hours_valid"] == pytest.approx(
        report["counts"]["hours"], abs=1e-5)
    cfg = (bad_set["ws"] / "config" / "dset" / "audio" / "bad.yaml").read_text()
    assert "/data/bad/egs/train" in cfg


def test_sidecars_have_every_musicinfo_key_and_audiocraft_reads_them(bad_set):
    root, ids = bad_set["root"], bad_set["ids"]
    tid = ids["Café del Mar/01 ünïcode track.mp3"]
    data = json.loads((root / "audio" / tid / f"{tid}_1.json").read_text(encoding="utf-8"))
    assert set(manifests.SIDECAR_FIELDS) <= set(data)
    assert data["artist"] == "artist 0" and data["name"] == tid and data["description"] == ""
    assert data["track_id"] == tid and data["segment"] == 1 and data["start"] == 10.0
    assert data["source"].endswith("01 ünïcode track.mp3") and data["dataset"] == "bad"
    assert {"album", "license", "genres", "tags"} <= set(data)
    described = json.loads((root / "audio" / ids["flac48.flac"] / f"{ids['flac48.flac']}_0.json").read_text())
    assert described["genre"] == "rock" and described["description"] == "Rock track; tags: t."

    from audiocraft.data.audio_dataset import AudioMeta, SegmentInfo
    from audiocraft.data.info_audio_dataset import AudioInfo
    from audiocraft.data.music_dataset import MusicDataset, MusicInfo

    wav = root / "audio" / tid / f"{tid}_0.wav"
    # exactly what MusicDataset.__getitem__ does: the segment's info over the sidecar, every field required
    seg = AudioInfo(**SegmentInfo(AudioMeta(str(wav), 10.0, SR), 0.0, SEG, SEG, SR, 1).to_dict())
    sidecar = json.load(open(wav.with_suffix(".json"), encoding="utf-8"))
    info = MusicInfo.from_dict({**sidecar, **seg.to_dict()}, fields_required=True)
    assert info.artist == "artist 0" and info.name == tid.lower()
    dataset = MusicDataset.from_meta(str(root / "egs" / "train"), segment_duration=10.0, sample_rate=SR, channels=1,
                                     num_samples=2, shuffle=False)
    audio_t, music_info = dataset[0]
    assert tuple(audio_t.shape) == (1, SEG) and music_info.name is not None


# ---------------------------------------------------------------------------------- idempotent, resumable


@pytest.fixture()
def small_set(tmp_path) -> tp.Dict[str, tp.Any]:
    src = tmp_path / "src"
    tracks = [TrackInput(path=make_audio(src / f"t{i}.mp3", 21.0, freq=300.0 + 50 * i, kind="chirp"),
                         track_id=f"t{i}", artist=f"band {i % 3}", genre=("jazz", "rock")[i % 2], tags=["x"])
              for i in range(6)]
    tracks.append(TrackInput(path=text_as(src / "bad.mp3"), track_id="bad", artist="band 9"))
    return {"tracks": tracks, "ws": tmp_path / "ws", "src": src}


class DecodeCounter:
    """Wraps ``audio.stream_mono`` in-process and records which files were decoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: tp.List[str] = []
        real = audio.stream_mono

        def counting(path, *args, **kwargs):
            self.files.append(Path(path).name)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(audio, "stream_mono", counting)


def test_rerun_decodes_nothing_and_is_byte_identical(small_set, monkeypatch):
    tracks, ws = small_set["tracks"], small_set["ws"]
    cfg = PrepareConfig(num_jobs=1, valid_share=0.3)
    first = prepare_tracks(tracks, "idem", ws, cfg, progress=False)
    egs = _egs_bytes(ws, "idem")
    counter = DecodeCounter(monkeypatch)
    second = prepare_tracks(tracks, "idem", ws, cfg, progress=False)
    assert counter.files == []  # not even the bad file is decoded again
    assert _egs_bytes(ws, "idem") == egs and _without_run(second) == _without_run(first)
    assert second["run"]["skipped_unchanged"] == len(tracks) and second["run"]["processed"] == 0
    # the sources may even be gone: what was converted from them is kept
    shutil.rmtree(small_set["src"])
    third = prepare_tracks(tracks, "idem", ws, cfg, progress=False)
    assert counter.files == [] and _egs_bytes(ws, "idem") == egs and _without_run(third) == _without_run(first)
    assert third["run"]["missing_sources_kept"] == 6


def test_killed_tracks_are_redone_and_results_are_identical(small_set, monkeypatch):
    tracks, ws = small_set["tracks"], small_set["ws"]
    cfg = PrepareConfig(num_jobs=1, valid_share=0.3)
    first = prepare_tracks(tracks, "resume", ws, cfg, progress=False)
    audio_root = ws / "data" / "resume" / "audio"
    egs = _egs_bytes(ws, "resume")
    hashes = {p.relative_to(audio_root): _sha(p) for p in audio_root.rglob("*.wav")}
    # killed mid-track: no marker yet, one segment half written
    (audio_root / "t1" / ".done.json").unlink()
    seg = audio_root / "t1" / "t1_1.wav"
    seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])
    # marker present but a segment damaged afterwards: caught by the size check
    seg = audio_root / "t4" / "t4_0.wav"
    seg.write_bytes(seg.read_bytes()[:1000])
    counter = DecodeCounter(monkeypatch)
    second = prepare_tracks(tracks, "resume", ws, cfg, progress=False)
    assert sorted(counter.files) == ["t1.mp3", "t4.mp3"]
    assert _egs_bytes(ws, "resume") == egs and _without_run(second) == _without_run(first)
    assert {p.relative_to(audio_root): _sha(p) for p in audio_root.rglob("*.wav")} == hashes


def test_a_worker_failing_mid_track_is_reported_and_finished_by_the_next_run(small_set, monkeypatch):
    tracks, ws = small_set["tracks"], small_set["ws"]
    cfg = PrepareConfig(num_jobs=1, valid_share=0.3)
    real = prepare._write_segment
    calls = {"n": 0}

    def failing(path, *args, **kwargs):
        if path.parent.name == "t2":
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(5, "Input/output error (simulated)")  # a full disk stops the run instead (test_disk_full)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prepare, "_write_segment", failing)
    broken = prepare_tracks(tracks, "crash", ws, cfg, progress=False)
    failed = {q["track_id"]: q for q in broken["quarantined"]}
    assert failed["t2"]["reason_code"] == "error" and "Input/output error" in failed["t2"]["reason"]
    assert failed["t2"]["file"].endswith("t2.mp3")
    assert broken["counts"]["converted_tracks"] == 5
    egs = ws / "data" / "crash" / "egs"
    listed = [r.path for side in ("train", "valid") for r in manifests.read_manifest(egs / side)]
    assert listed and not any("/t2/" in p for p in listed) and all(Path(p).is_file() for p in listed)
    assert not (ws / "data" / "crash" / "audio" / "t2" / ".done.json").exists()
    monkeypatch.setattr(prepare, "_write_segment", real)
    counter = DecodeCounter(monkeypatch)
    fixed = prepare_tracks(tracks, "crash", ws, cfg, progress=False)
    assert counter.files == ["t2.mp3"] and fixed["counts"]["converted_tracks"] == 6
    clean = prepare_tracks(tracks, "clean", ws, cfg, progress=False)
    assert [len(b) for b in _egs_bytes(ws, "crash")] == [len(b) for b in _egs_bytes(ws, "clean")]
    assert _without_run(fixed)["counts"] == clean["counts"]


def test_force_config_change_source_change_and_metadata_change(small_set, monkeypatch):
    tracks, ws = small_set["tracks"], small_set["ws"]
    cfg = PrepareConfig(num_jobs=1, valid_share=0.3)
    prepare_tracks(tracks, "changes", ws, cfg, progress=False)
    counter = DecodeCounter(monkeypatch)
    prepare_tracks(tracks, "changes", ws, cfg, force=True, progress=False)
    assert len(counter.files) == len(tracks)
    counter.files.clear()
    # metadata only: sidecars rewritten, nothing decoded
    tracks[0].title = "A New Title"
    report = prepare_tracks(tracks, "changes", ws, cfg, progress=False)
    assert counter.files == [] and report["run"]["metadata_refreshed"] == 1
    side = json.loads((ws / "data" / "changes" / "audio" / "t0" / "t0_0.json").read_text())
    assert side["title"] == "A New Title"
    # the source changed: only that track is redone
    make_audio(tracks[3].path, 31.0, freq=900.0)
    report = prepare_tracks(tracks, "changes", ws, cfg, progress=False)
    assert counter.files == ["t3.mp3"]
    assert len(list((ws / "data" / "changes" / "audio" / "t3").glob("*.wav"))) == 3
    counter.files.clear()
    # an audio-affecting setting changed: every track is redone
    report = prepare_tracks(tracks, "changes", ws, PrepareConfig(num_jobs=1, valid_share=0.3, segment_seconds=5.0),
                            progress=False)
    assert len(counter.files) == len(tracks)
    durations = {r.duration for s in ("train", "valid")
                 for r in manifests.read_manifest(ws / "data" / "changes" / "egs" / s)}
    assert max(durations) == 5.0


def test_two_workers_give_the_same_manifests_and_audio_as_one(small_set):
    tracks, ws = small_set["tracks"], small_set["ws"]
    one = prepare_tracks(tracks, "par", ws, PrepareConfig(num_jobs=1, valid_share=0.3), progress=False)
    audio_root = ws / "data" / "par" / "audio"
    egs = _egs_bytes(ws, "par")
    hashes = {p.relative_to(audio_root): _sha(p) for p in sorted(audio_root.rglob("*")) if p.is_file()
              and p.name != ".done.json"}
    two = prepare_tracks(tracks, "par", ws, PrepareConfig(num_jobs=2, valid_share=0.3), force=True, progress=False)
    assert two["run"]["num_jobs"] == 2 and two["run"]["processed"] == len(tracks)
    assert _egs_bytes(ws, "par") == egs
    assert {p.relative_to(audio_root): _sha(p) for p in sorted(audio_root.rglob("*")) if p.is_file()
            and p.name != ".done.json"} == hashes
    assert _without_run(two)["counts"] == one["counts"] and two["quarantined"] == one["quarantined"]


def test_inputs_are_validated(tmp_path):
    ok = TrackInput(path=tmp_path / "a.wav", track_id="a")
    with pytest.raises(ValueError, match="not filesystem-safe"):
        prepare_tracks([TrackInput(path=tmp_path / "x.wav", track_id="../x")], "v", tmp_path, progress=False)
    with pytest.raises(ValueError, match="duplicate track_id"):
        prepare_tracks([ok, TrackInput(path=tmp_path / "b.wav", track_id="A")], "v", tmp_path, progress=False)
    with pytest.raises(ValueError, match="audio_format"):
        prepare_tracks([ok], "v", tmp_path, PrepareConfig(audio_format="mp3"), progress=False)
    assert safe_track_id("Café del Mar/01 ünïcode track") == "Cafe_del_Mar__01_unicode_track"
    assert safe_track_id("x" * 200) != safe_track_id("x" * 201) and len(safe_track_id("x" * 200)) <= 80


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="pool workers are forked on Linux")
def test_a_worker_process_dying_costs_only_its_own_track(small_set, monkeypatch):
    import os

    tracks, ws = small_set["tracks"], small_set["ws"]
    real = prepare._convert

    def dying(job):
        if job["track"].track_id == "t3":
            os._exit(3)  # what a segfault in a decoder or the OOM killer does to a worker
        return real(job)

    monkeypatch.setattr(prepare, "_convert", dying)  # forked workers inherit the patch
    report = prepare_tracks(tracks, "dies", ws, PrepareConfig(num_jobs=2, valid_share=0.3), progress=False)
    failed = {q["track_id"]: q for q in report["quarantined"]}
    assert set(failed) == {"t3", "bad"} and "worker process died" in failed["t3"]["reason"]
    assert report["counts"]["converted_tracks"] == 5
    monkeypatch.setattr(prepare, "_convert", real)
    report = prepare_tracks(tracks, "dies", ws, PrepareConfig(num_jobs=2, valid_share=0.3), progress=False)
    assert report["run"]["processed"] == 1 and report["counts"]["converted_tracks"] == 6

"""The fast decode (``stream_mono(fast=True)``: FFmpeg's amovie source reads and decodes inside the filter graph).

Regression guards that are not timings: a clean file goes through amovie with about one graph pull per block and
gives the careful path's blocks bit for bit; a damaged, truncated or format-changing file ends with exactly the
careful path's result, both from ``stream_mono`` and from ``prepare`` (segments, warnings, quarantine).
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import numpy as np
import pytest

from media import make_audio, truncated_copy
from musicpipe import audio, prepare
from musicpipe.prepare import FAST_DECODE_ENV, PrepareConfig, TrackInput, prepare_tracks

SR = 32000
SEG = 10 * SR
STAT_KEYS = ("source_sample_rate", "source_channels", "codec", "declared_duration", "skipped_packets", "samples")


def _damaged(src: Path, dst: Path, at: tp.Sequence[float] = (1 / 3, 1 / 2)) -> Path:
    """``src`` with bursts of random bytes at the given fractions of its length (corrupt packets)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for start in (int(len(data) * f) for f in at):
        for i in range(start, start + 3000, 100):
            data[i:i + 20] = rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def _both(path: Path, block_seconds: float = 10.0) -> tp.Tuple[tp.List[np.ndarray], tp.Dict[str, tp.Any],
                                                             tp.List[np.ndarray], tp.Dict[str, tp.Any]]:
    careful: tp.Dict[str, tp.Any] = {}
    fast: tp.Dict[str, tp.Any] = {}
    a = list(audio.stream_mono(path, SR, block_seconds, stats=careful))
    b = list(audio.stream_mono(path, SR, block_seconds, stats=fast, fast=True))
    return a, careful, b, fast


def _identical(a: tp.Sequence[np.ndarray], b: tp.Sequence[np.ndarray]) -> bool:
    return [len(x) for x in a] == [len(x) for x in b] and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("ext,kind,rate,channels", [
    (".ogg", "chirp", 44100, 2), (".mp3", "noise", 44100, 2), (".flac", "chirp", 48000, 2),
    (".wav", "noise", 22050, 1), (".opus", "chirp", 48000, 2), (".m4a", "noise", 44100, 2),
    (".mp3", "sine", 22050, 1)])
def test_a_clean_file_takes_the_fast_path_and_gives_the_careful_paths_blocks(tmp_path, ffmpeg, ext, kind, rate,
                                                                              channels):
    src = make_audio(tmp_path / f"x{ext}", 23.0, sample_rate=rate, channels=channels, kind=kind, amplitude=0.6)
    a, careful, b, fast = _both(src)
    assert careful["path"] == "careful" and fast["path"] == "amovie"
    assert _identical(a, b)  # bit-identical, not merely close
    assert all(len(x) == SEG for x in b[:-1]) and 0 < len(b[-1]) <= SEG
    assert {k: fast[k] for k in STAT_KEYS} == {k: careful[k] for k in STAT_KEYS}
    assert fast["graphs"] == 1 and len(b) <= fast["graph_pulls"] <= len(b) + 1  # one pull per block, one for EOF


def test_an_mp3_without_a_duration_header_still_takes_the_fast_path(tmp_path, ffmpeg):
    """CBR MP3s without a Xing/Info frame make the demuxer log "Estimating duration from bitrate": no trouble."""
    import subprocess

    src = tmp_path / "noxing.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=440:duration=25",
                    "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "192k", "-write_xing", "0", str(src)],
                   check=True)
    a, careful, b, fast = _both(src)
    assert fast["path"] == "amovie" and _identical(a, b)
    assert {k: fast[k] for k in STAT_KEYS} == {k: careful[k] for k in STAT_KEYS}


def test_fast_blocks_keep_the_contract_when_the_length_is_a_whole_number_of_blocks(tmp_path, ffmpeg):
    src = make_audio(tmp_path / "x.wav", 4.0, sample_rate=32000, kind="chirp")
    stats: tp.Dict[str, tp.Any] = {}
    assert [len(b) for b in audio.stream_mono(src, SR, 2.0, stats=stats, fast=True)] == [64000, 64000]
    assert stats["path"] == "amovie" and stats["samples"] == 128000


def test_a_long_clean_file_is_pulled_once_per_block(tmp_path, ffmpeg):
    src = make_audio(tmp_path / "minute.mp3", 60.0, channels=2, kind="chirp")
    stats: tp.Dict[str, tp.Any] = {}
    blocks = list(audio.stream_mono(src, SR, 1.0, stats=stats, fast=True))
    assert stats["path"] == "amovie" and len(blocks) == 60
    assert stats["graph_pulls"] == len(blocks) + 1, stats


@pytest.mark.parametrize("ext", (".mp3", ".ogg", ".opus", ".flac", ".m4a"))
def test_damage_before_the_first_block_falls_back_at_no_cost_to_the_same_result(tmp_path, ffmpeg, ext):
    src = _damaged(make_audio(tmp_path / f"ok{ext}", 20.0, channels=2, kind="chirp"), tmp_path / f"bad{ext}")
    a, careful, b, fast = _both(src)
    assert fast["path"] == "careful"  # the decode that produced b
    assert _identical(a, b) and fast == careful
    assert careful["skipped_packets"] > 0 or ext in (".ogg", ".opus")  # ogg resyncs past bad pages silently


@pytest.mark.parametrize("ext", (".mp3", ".flac", ".m4a"))  # (damaged OGG pages show up when the file is opened)
def test_damage_after_blocks_were_yielded_asks_for_the_careful_path(tmp_path, ffmpeg, ext):
    src = _damaged(make_audio(tmp_path / f"ok{ext}", 20.0, channels=2, kind="chirp"), tmp_path / f"bad{ext}")
    yielded = []
    with pytest.raises(audio.CarefulDecodeNeeded) as info:
        for block in audio.stream_mono(src, SR, 1.0, fast=True):
            yielded.append(block)
    assert 0 < len(yielded) < 20 and str(src) in str(info.value)
    import av.logging
    assert av.logging.get_level() is None and av.logging.get_skip_repeated()  # PyAV's log settings restored


def test_a_format_change_goes_to_the_careful_path(tmp_path, ffmpeg):
    a = make_audio(tmp_path / "a.mp3", 3.0, channels=2, freq=440.0)
    b = make_audio(tmp_path / "b.mp3", 2.0, sample_rate=22050, freq=660.0)
    both = tmp_path / "both.mp3"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    for block_seconds in (1.0, 10.0):
        careful: tp.Dict[str, tp.Any] = {}
        ref = list(audio.stream_mono(both, SR, block_seconds, stats=careful))
        fast: tp.Dict[str, tp.Any] = {}
        try:
            got = list(audio.stream_mono(both, SR, block_seconds, stats=fast, fast=True))
        except audio.CarefulDecodeNeeded:
            continue
        assert fast == careful and careful["graphs"] >= 2 and _identical(ref, got)


def test_a_truncated_file_gives_the_careful_paths_result(tmp_path, ffmpeg):
    for ext in (".mp3", ".ogg", ".flac", ".wav", ".opus"):
        src = truncated_copy(make_audio(tmp_path / f"full{ext}", 24.0, channels=2, kind="chirp"),
                             tmp_path / f"trunc{ext}", 0.5)
        a, careful, b, fast = _both(src)
        assert _identical(a, b), ext
        assert {k: fast[k] for k in STAT_KEYS} == {k: careful[k] for k in STAT_KEYS}, ext


def test_errors_before_decoding_are_the_careful_paths(tmp_path):
    (tmp_path / "zero.mp3").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio\n" * 100)
    for path in (tmp_path / "zero.mp3", tmp_path / "text.mp3", tmp_path / "missing.flac"):
        with pytest.raises(audio.AudioDecodeError) as careful:
            list(audio.stream_mono(path))
        with pytest.raises(audio.AudioDecodeError) as fast:
            list(audio.stream_mono(path, fast=True))
        assert str(fast.value) == str(careful.value)


def test_paths_with_colons_quotes_and_commas_open_in_the_graph(tmp_path, ffmpeg):
    src = make_audio(tmp_path / "a:b 'c' \"d\", [e];f=g.ogg", 3.0, kind="chirp")
    a, careful, b, fast = _both(src, 1.0)
    assert fast["path"] == "amovie" and _identical(a, b)


# ----------------------------------------------------------------------------------------------- prepare


def _prepared(tracks: tp.Sequence[TrackInput], ws: Path) -> tp.Dict[str, tp.Any]:
    report = prepare_tracks(tracks, "fast", ws, PrepareConfig(num_jobs=1, split="track", valid_share=0.2),
                            progress=False)
    root = ws / "data" / "fast" / "audio"
    # the workspace's own path (in the report and sidecars) is the one difference wanted
    files = {str(p.relative_to(root)): p.read_bytes().replace(str(ws).encode(), b"WS")
             for p in sorted(root.rglob("*")) if p.is_file()}
    markers = {k: json.loads(v) for k, v in files.items() if k.endswith(prepare.MARKER)}
    report = json.loads(json.dumps({k: v for k, v in report.items() if k != "run"}).replace(str(ws), "WS"))
    return {"report": report, "markers": markers,
            "audio": {k: v for k, v in files.items() if not k.endswith(prepare.MARKER)}}


def test_prepare_gives_the_careful_paths_dataset_and_redoes_only_damaged_tracks(tmp_path, ffmpeg, monkeypatch):
    src = tmp_path / "src"
    full = make_audio(src / "full.mp3", 24.0, channels=2, kind="chirp")
    a = make_audio(src / "a.mp3", 12.0, channels=2, freq=440.0)
    b = make_audio(src / "b.mp3", 8.0, sample_rate=22050, freq=660.0)
    (src / "changes.mp3").write_bytes(a.read_bytes() + b.read_bytes())
    files = {
        "clean.ogg": make_audio(src / "clean.ogg", 25.0, channels=2, kind="chirp"),
        "clean.flac": make_audio(src / "clean.flac", 16.0, sample_rate=48000, channels=2, kind="noise"),
        # damage at 24 s and 32 s of 40 s: a segment is written before the trouble shows (fast attempt redone)
        "late damage.mp3": _damaged(make_audio(src / "ok.mp3", 40.0, channels=2, kind="chirp"),
                                    src / "late damage.mp3", at=(0.6, 0.8)),
        "early damage.ogg": _damaged(make_audio(src / "ok.ogg", 20.0, channels=2, kind="chirp"),
                                     src / "early damage.ogg", at=(0.2,)),
        "truncated.mp3": truncated_copy(full, src / "truncated.mp3", 0.5),
        "changes.mp3": src / "changes.mp3",
        "short.ogg": make_audio(src / "short.ogg", 0.5),
    }
    tracks = [TrackInput(path=p, track_id=prepare.safe_track_id(rel), artist=f"artist {i}")
              for i, (rel, p) in enumerate(files.items())]

    monkeypatch.setenv(FAST_DECODE_ENV, "0")
    careful = _prepared(tracks, tmp_path / "careful")

    monkeypatch.delenv(FAST_DECODE_ENV)
    calls: tp.List[str] = []
    redone: tp.List[str] = []
    real_careful = audio._stream_mono_careful
    real_convert_log = prepare.logger.debug

    def spy(path: tp.Any, *args: tp.Any) -> tp.Iterator[np.ndarray]:
        calls.append(Path(path).name)
        return real_careful(path, *args)

    def spy_log(msg: str, *args: tp.Any) -> None:
        redone.extend(Path(a.path).name for a in args if isinstance(a, audio.CarefulDecodeNeeded))
        real_convert_log(msg, *args)

    monkeypatch.setattr(audio, "_stream_mono_careful", spy)
    monkeypatch.setattr(prepare.logger, "debug", spy_log)
    fast = _prepared(tracks, tmp_path / "fast")

    assert fast == careful  # reports, markers and every segment's bytes
    assert "late damage.mp3" in redone  # blocks were written, wiped, and the track redone
    assert set(calls) <= {"late damage.mp3", "early damage.ogg", "truncated.mp3", "changes.mp3"}, calls
    assert {"late damage.mp3", "early damage.ogg", "changes.mp3"} <= set(calls), calls
    warned = {w["track_id"]: w["warnings"] for w in careful["report"]["warnings"]}
    assert any("corrupt packet" in w for w in warned[prepare.safe_track_id("late damage.mp3")])
    assert any("truncated" in w for w in warned[prepare.safe_track_id("truncated.mp3")])
    assert [q["reason_code"] for q in careful["report"]["quarantined"]] == ["too_short"]


def test_interleaved_fast_decodes_keep_listening_to_ffmpeg_until_the_last_ends(tmp_path, ffmpeg):
    import av.logging

    one = make_audio(tmp_path / "one.ogg", 3.0, kind="chirp")
    two = make_audio(tmp_path / "two.mp3", 3.0, kind="chirp")
    first = audio.stream_mono(one, SR, 1.0, fast=True)
    next(first)
    assert [len(b) for b in audio.stream_mono(two, SR, 1.0, fast=True)] == [SR] * 3
    assert av.logging.get_level() == av.logging.WARNING  # the first is still decoding: still captured
    assert len(list(first)) == 2
    assert av.logging.get_level() is None and av.logging.get_skip_repeated()

"""Real encoded audio fixtures made with the ffmpeg CLI (no mocks), and a peak-RSS probe.

    >>> make_audio(tmp / "a.mp3", 12.0, channels=2, tags={"artist": "Ann", "genre": "Rock"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CODECS: tp.Dict[str, tp.List[str]] = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    ".opus": ["-c:a", "libopus", "-b:a", "64k"],
    ".flac": ["-c:a", "flac"],
    ".wav": ["-c:a", "pcm_s16le"],
    ".m4a": ["-c:a", "aac", "-b:a", "96k"],
}


def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise RuntimeError("ffmpeg missing: `make setup` installs it")
    return exe


def _expr(kind: str, freq: float, amplitude: float, seconds: float) -> str:
    tone = f"{amplitude}*sin(2*PI*{freq}*t)"
    if kind == "sine":
        return tone
    if kind == "silence":
        return "0"
    if kind == "half_silent":  # tone, then digital silence for the second half
        return f"if(lt(t\\,{seconds / 2})\\,{tone}\\,0)"
    if kind == "clipped":  # a sine driven past full scale, clipped flat
        return f"max(-1\\,min(1\\,{2 * amplitude}*sin(2*PI*{freq}*t)))"
    if kind == "chirp":  # a sweep, so every segment differs
        return f"{amplitude}*sin(2*PI*({freq}+5*t)*t)"
    raise ValueError(f"unknown kind {kind!r}")


def make_audio(path: tp.Union[str, Path], seconds: float, *, sample_rate: int = 44100, channels: int = 1,
               kind: str = "sine", freq: float = 440.0, amplitude: float = 0.5,
               tags: tp.Optional[tp.Mapping[str, str]] = None) -> Path:
    """Encode ``seconds`` of audio with the codec the extension names (mp3, ogg, opus, flac, wav, m4a).

    kind: 'sine' | 'silence' | 'half_silent' | 'clipped' | 'chirp' | 'noise'. Every channel carries the same
    signal. ``tags`` become container/stream metadata (ID3, Vorbis comments, FLAC, MP4 tags).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    filters: tp.List[str] = []
    if kind == "noise":
        src = f"anoisesrc=color=pink:amplitude={amplitude}:sample_rate={sample_rate}:duration={seconds}:seed=1"
    elif kind == "sine":  # the sine source is much faster than an expression (long files)
        src = f"sine=frequency={freq}:sample_rate={sample_rate}:duration={seconds}"
        filters = ["-af", f"volume={amplitude * 8}"]  # the source's amplitude is 1/8
    else:
        one = _expr(kind, freq, amplitude, seconds)
        src = f"aevalsrc=exprs={'|'.join([one] * channels)}:sample_rate={sample_rate}:duration={seconds}"
    out_rate = 48000 if path.suffix.lower() == ".opus" else sample_rate  # Opus knows 48 kHz only
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-ac", str(channels),
           "-ar", str(out_rate), *filters]
    for key, value in (tags or {}).items():
        cmd += ["-metadata", f"{key}={value}"]
    cmd += CODECS[path.suffix.lower()] + [str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed for {path}: {done.stderr.strip()}")
    return path


def truncated_copy(src: tp.Union[str, Path], dst: tp.Union[str, Path], fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``src``'s bytes (an interrupted download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def text_as(path: tp.Union[str, Path]) -> Path:
    """A text file with an audio extension."""
    Path(path).write_text("This is not audio, just a text file renamed.\n" * 20, encoding="utf-8")
    return Path(path)


def zero_bytes(path: tp.Union[str, Path]) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


PEAK_RSS_CHILD = r"""
import json, resource, sys
from pathlib import Path
import numpy, av, soundfile, tqdm
import musicpipe.audio, musicpipe.prepare
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks
mode, src, ws = sys.argv[1], sys.argv[2], sys.argv[3]
warm = musicpipe.audio.stream_mono(src, 32000, 0.05)
next(warm)  # warm up on the first 50 ms: codec and resampler loaded, not counted
warm.close()
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
before = rss()
blocks = 0
if mode == "decode":
    for block in musicpipe.audio.stream_mono(src, 32000, 10.0):
        blocks += 1
else:
    report = prepare_tracks([TrackInput(path=Path(src), track_id="long", artist="a")], "rss", ws,
                            PrepareConfig(num_jobs=1), force=True, progress=False)
    blocks = report["counts"]["segments"]
print(json.dumps({"before_mb": before, "peak_mb": rss(), "blocks": blocks}))
"""


def peak_rss(mode: str, src: tp.Union[str, Path], workspace: tp.Union[str, Path]) -> tp.Dict[str, float]:
    """Peak RSS (MiB) of a fresh process that decodes (mode 'decode') or prepares ('prepare') ``src``.

    ``before_mb`` is the high-water mark after imports and a tiny warm-up decode; the growth
    ``peak_mb - before_mb`` is what the long input cost.
    """
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_CHILD, mode, str(src), str(workspace)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])

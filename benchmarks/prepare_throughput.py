"""Throughput of `prepare` against the ffmpeg CLI, with the same number of processes, measured in one run.

    .venv/bin/python benchmarks/prepare_throughput.py [--jobs 1 2] [--repeats 2] [--long-minutes 5]
        [--long-per-codec 2] [--clips 60] [--rss-minutes 60] [--no-extras] [--inputs DIR] [--with-careful]

1. Two corpora made with the ffmpeg CLI in a temp folder, 44.1 kHz stereo, music-like (detuned tones with
   tremolo and vibrato, a bass line, pink noise, an echo; different per file):
   ``long``: ``--long-per-codec`` files of ``--long-minutes`` each in OGG Vorbis (q5), MP3 (192 kb/s) and FLAC;
   ``clips``: ``--clips`` FMA-shaped 30 s MP3s (256 kb/s), where the cost of starting on a file matters.
2. For each corpus and job count, four ways through the same files, ``jobs`` at a time, each best of
   ``--repeats`` (the repeats interleave the four, so load from elsewhere hits them alike):
   ffmpeg decode only (``-f null``); ffmpeg decode + downmix + resample to 32 kHz (``-ac 1 -ar 32000 -f null``);
   the loop a user writes by hand, one ffmpeg per file cutting 10 s WAV segments
   (``-ac 1 -ar 32000 -f segment -segment_time 10 out/%03d.wav``); and ``prepare`` (``force=True``: decode,
   gates, WAV + sidecars, split, manifests). Prints audio seconds per wall second and the ratios of prepare to
   the hand loop and to decode only. ``--with-careful`` adds a fifth way, interleaved with the others: prepare
   with the fast (amovie) decode off (``MUSICPIPE_FAST_DECODE=0``), and the ratio of the two prepares.
3. The no-op re-run of the prepared clips (nothing changed): milliseconds per track.
4. Peak RSS of one prepare worker on a ``--rss-minutes`` MP3 against a 30 s clip (separate processes).
5. For the Range-fetched mini subset: bytes downloaded against the selected members' compressed sizes
   (FMA-shaped zip on a loopback server, as in the tests).
"""

from __future__ import annotations

import argparse
import logging
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

FFMPEG = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
LONG_CODECS = {".ogg": ["-c:a", "libvorbis", "-q:a", "5"], ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
               ".flac": ["-c:a", "flac"]}


def music_like(k: int, seconds: float) -> tp.List[str]:
    """ffmpeg arguments for ``seconds`` of 44.1 kHz stereo that costs codecs what music costs (variant ``k``)."""
    d, r = f"{seconds:g}", "44100"
    f1, f2, bass = 196 + 7 * k, 293 + 11 * k, 55 + 3 * k
    graph = (f"sine=f={f1}:d={d}:r={r},volume=3,tremolo=f={1 + k % 3}:d=0.6[a];"
             f"sine=f={f2}:d={d}:r={r},volume=2.5,vibrato=f=5:d=0.3[b];"
             f"anoisesrc=color=pink:a=0.12:d={d}:r={r}:seed={k + 1}[n];"
             f"sine=f={bass}:d={d}:r={r},volume=3,apulsator=hz={1.5 + k % 4 / 2},pan=mono|c0=c0[c];"
             "[a][n]amix=inputs=2:normalize=0,aformat=channel_layouts=mono[l];"
             "[b][c]amix=inputs=2:normalize=0,aformat=channel_layouts=mono[r];"
             "[l][r]join=inputs=2:channel_layout=stereo,aecho=0.8:0.7:60:0.3[out]")
    return ["-filter_complex", graph, "-map", "[out]", "-ar", r]


def make_long(folder: Path, minutes: float, per_codec: int) -> tp.List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(per_codec):
        for j, (ext, codec) in enumerate(LONG_CODECS.items()):
            path = folder / f"long_{i}_{ext[1:]}{ext}"
            subprocess.run(FFMPEG + music_like(3 * i + j, minutes * 60) + codec + [str(path)], check=True)
            files.append(path)
    return files


def make_clips(folder: Path, count: int) -> tp.List[Path]:
    """``count`` 30 s MP3s cut from one long signal (one ffmpeg run)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(FFMPEG + music_like(7, count * 30.0 + 1.0) + ["-c:a", "libmp3lame", "-b:a", "256k", "-f", "segment",
                                                                  "-segment_time", "30", str(folder / "clip_%04d.mp3")],
                   check=True)
    files = sorted(folder.glob("clip_*.mp3"))
    for extra in files[count:]:  # the last second
        extra.unlink()
    return files[:count]


def make_plain_mp3(path: Path, seconds: float) -> Path:
    """A sine plus pink noise MP3 (fast to make, for the memory check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = f"anoisesrc=color=pink:amplitude=0.05:sample_rate=44100:duration={seconds}"
    subprocess.run(FFMPEG + ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=44100:duration={seconds}",
                             "-f", "lavfi", "-i", noise,
                             "-filter_complex", "amix=inputs=2,aformat=channel_layouts=stereo", "-b:a", "192k",
                             str(path)], check=True)
    return path


def audio_seconds(files: tp.Sequence[Path]) -> float:
    from musicpipe.audio import probe

    return sum(probe(f)["duration"] for f in files)


def _ffmpeg_each(files: tp.Sequence[Path], jobs: int, args: tp.Callable[[Path], tp.List[str]]) -> float:
    """Wall seconds to run one ffmpeg per file, ``jobs`` at a time."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for done in pool.map(lambda f: subprocess.run(FFMPEG + args(f), capture_output=True), files):
            if done.returncode:
                raise RuntimeError(done.stderr.decode(errors="replace"))
    return time.perf_counter() - start


def decode_only(files: tp.Sequence[Path], jobs: int, out: Path) -> float:
    return _ffmpeg_each(files, jobs, lambda f: ["-i", str(f), "-f", "null", "-"])


def decode_resample(files: tp.Sequence[Path], jobs: int, out: Path) -> float:
    return _ffmpeg_each(files, jobs, lambda f: ["-i", str(f), "-ac", "1", "-ar", "32000", "-f", "null", "-"])


def ffmpeg_segments(files: tp.Sequence[Path], jobs: int, out: Path) -> float:
    """The hand-written loop: one ffmpeg per file cutting 10 s WAV segments."""
    shutil.rmtree(out, ignore_errors=True)
    for f in files:
        (out / f.stem).mkdir(parents=True)
    return _ffmpeg_each(files, jobs, lambda f: ["-i", str(f), "-ac", "1", "-ar", "32000", "-f", "segment",
                                                "-segment_time", "10", str(out / f.stem / "%03d.wav")])


def _inputs(files: tp.Sequence[Path]) -> list:
    from musicpipe.prepare import TrackInput

    return [TrackInput(path=f, track_id=f.stem, artist=f"artist {i % 7}", genre="test") for i, f in enumerate(files)]


def prepare_run(files: tp.Sequence[Path], jobs: int, out: Path, force: bool = True) -> float:
    from musicpipe.prepare import PrepareConfig, prepare_tracks

    inputs = _inputs(files)
    start = time.perf_counter()
    prepare_tracks(inputs, "bench", out, PrepareConfig(num_jobs=jobs), force=force, progress=False)
    return time.perf_counter() - start


def prepare_careful(files: tp.Sequence[Path], jobs: int, out: Path) -> float:
    """``prepare`` with the fast (amovie) decode turned off: every file through the careful per-packet path."""
    from musicpipe.prepare import FAST_DECODE_ENV

    before = os.environ.get(FAST_DECODE_ENV)
    os.environ[FAST_DECODE_ENV] = "0"  # read by each worker when it converts a track
    try:
        return prepare_run(files, jobs, out)
    finally:
        if before is None:
            del os.environ[FAST_DECODE_ENV]
        else:
            os.environ[FAST_DECODE_ENV] = before


METHODS = {"ffmpeg decode only": decode_only, "ffmpeg decode+resample": decode_resample,
           "ffmpeg segment loop": ffmpeg_segments, "prepare": prepare_run}


def measure(files: tp.Sequence[Path], jobs: int, repeats: int, tmp: Path,
            methods: tp.Mapping[str, tp.Callable[..., float]] = METHODS) -> tp.Dict[str, float]:
    """Best wall seconds of each method; the repeats interleave the methods."""
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            best[name] = min(best[name], method(files, jobs, tmp / f"out_{name.replace(' ', '_')}"))
    return best


PEAK_RSS_CHILD = r"""
import json, resource, sys
from pathlib import Path
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare_tracks([TrackInput(path=Path(sys.argv[1]), track_id="long", artist="a")], "rss", sys.argv[2],
               PrepareConfig(num_jobs=1), force=True, progress=False)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "after_imports_mb": before / 1024}))
"""


def peak_rss_mb(path: Path, workspace: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", "import musicpipe.prepare, numpy, av, soundfile\n" + PEAK_RSS_CHILD,
                          str(path), str(workspace)], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mini_subset_bytes(tmp: Path) -> dict:
    from loopback import LoopbackServer
    from public_fixtures import build_fma
    from musicpipe.sources import fma
    import zipfile

    facts = build_fma(tmp / "corpus", tracks_per_genre=6, seconds=20.0)
    with LoopbackServer(tmp / "corpus") as server:
        dest = fma.download_fma("fma_small_mini", tmp / "ws", mirror=server.url + "fma/", num_tracks=16)
        chosen = json.loads((dest / fma.MARKER).read_text())["tracks"]
        sent = server.bytes_sent["/fma/fma_small.zip"]
    with zipfile.ZipFile(facts["small_zip"]) as zf:
        infos = {i.filename: i.compress_size for i in zf.infolist()}
    members = sum(infos[fma.member_name("fma_small", t)] for t in chosen) + infos["fma_small/checksums"]
    return {"bytes_downloaded": sent, "members_compressed": members, "ratio": sent / members,
            "zip_size": facts["small_zip"].stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each measurement")
    parser.add_argument("--long-minutes", type=float, default=5.0, help="length of each long file")
    parser.add_argument("--long-per-codec", type=int, default=2, help="long files per codec (OGG, MP3, FLAC)")
    parser.add_argument("--clips", type=int, default=60, help="number of 30 s MP3 clips")
    parser.add_argument("--rss-minutes", type=float, default=60.0, help="length of the long input for peak RSS")
    parser.add_argument("--no-extras", action="store_true", help="throughput only (no RSS, no Range check)")
    parser.add_argument("--inputs", help="folder to keep the generated corpora in and reuse (default: a temp folder)")
    parser.add_argument("--with-careful", action="store_true",
                        help="also time prepare with the fast decode off (MUSICPIPE_FAST_DECODE=0), interleaved")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("musicpipe.split").setLevel(logging.ERROR)  # few tracks: the split falls back, as it should
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as tmp_s:
        tmp = Path(tmp_s)
        inputs = Path(args.inputs) if args.inputs else tmp
        long_dir = inputs / f"long_{args.long_minutes:g}min_x{args.long_per_codec}"
        clips_dir = inputs / f"clips_{args.clips}"
        corpora = {"long": sorted(long_dir.glob("long_*"))
                   or make_long(long_dir, args.long_minutes, args.long_per_codec),
                   "clips": sorted(clips_dir.glob("clip_*.mp3")) or make_clips(clips_dir, args.clips)}
        methods = dict(METHODS, **({"prepare careful": prepare_careful} if args.with_careful else {}))
        header = (f"{'corpus':<7}{'jobs':>5}{'decode only':>13}{'+resample':>11}{'seg. loop':>11}{'prepare':>9}"
                  f"{'prep/loop':>11}{'prep/decode':>13}"
                  + (f"{'careful':>9}{'car/loop':>10}{'car/decode':>12}{'prep/car':>10}" if args.with_careful else ""))
        print(f"audio seconds per wall second, best of {args.repeats}; {os.cpu_count()} cores")
        print(header)
        for name, files in corpora.items():
            seconds = audio_seconds(files)
            for jobs in args.jobs:
                best = measure(files, jobs, args.repeats, tmp / "work", methods)
                rate = {k: seconds / v for k, v in best.items()}
                careful = ""
                if args.with_careful:
                    c = rate["prepare careful"]
                    careful = (f"{c:>9.0f}{c / rate['ffmpeg segment loop']:>10.2f}"
                               f"{c / rate['ffmpeg decode only']:>12.2f}{rate['prepare'] / c:>10.2f}")
                print(f"{name:<7}{jobs:>5}{rate['ffmpeg decode only']:>13.0f}{rate['ffmpeg decode+resample']:>11.0f}"
                      f"{rate['ffmpeg segment loop']:>11.0f}{rate['prepare']:>9.0f}"
                      f"{rate['prepare'] / rate['ffmpeg segment loop']:>11.2f}"
                      f"{rate['prepare'] / rate['ffmpeg decode only']:>13.2f}{careful}", flush=True)
        print(f"(long: {len(corpora['long'])} files of {args.long_minutes:g} min, OGG Vorbis/MP3/FLAC; "
              f"clips: {len(corpora['clips'])} MP3s of 30 s; all 44.1 kHz stereo)")
        clips = corpora["clips"]
        prepare_run(clips, 1, tmp / "noop")
        noop = min(prepare_run(clips, 1, tmp / "noop", force=False) for _ in range(max(3, args.repeats)))
        print(f"no-op re-run of the prepared clips: {noop * 1000 / len(clips):.2f} ms per track")
        if args.no_extras:
            return
        long = make_plain_mp3(tmp / "rss" / "long.mp3", args.rss_minutes * 60)
        short = make_plain_mp3(tmp / "rss" / "short.mp3", 30.0)
        rss_long, rss_short = peak_rss_mb(long, tmp / "ws_rss_long"), peak_rss_mb(short, tmp / "ws_rss_short")
        grew = rss_long["peak_mb"] - rss_short["peak_mb"]
        print(f"peak RSS of a prepare worker: {rss_long['peak_mb']:.0f} MB for a {args.rss_minutes:g} min input, "
              f"{rss_short['peak_mb']:.0f} MB for a 30 s clip (difference {grew:.0f} MB; "
              f"{rss_short['after_imports_mb']:.0f} MB after imports)")
        mini = mini_subset_bytes(tmp / "mini")
        print(f"fma_small_mini by Range: {mini['bytes_downloaded']} bytes downloaded for {mini['members_compressed']} "
              f"bytes of selected members ({mini['ratio']:.3f}x; the zip is {mini['zip_size']} bytes)")


if __name__ == "__main__":
    main()

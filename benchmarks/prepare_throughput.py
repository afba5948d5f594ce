"""Throughput and memory of `prepare`, measured against baselines taken in the same run.

    .venv/bin/python benchmarks/prepare_throughput.py [--minutes 30] [--jobs 1 2] [--long-minutes 60] [--repeats 2]

1. A corpus of MP3s (30 s clips of 44.1 kHz stereo tones and pink noise at 192 kb/s, made with ffmpeg).
2. For each job count: (a) the floor: decode + downmix + resample only, nothing written
   (``musicpipe.audio.stream_mono`` over every file in the same process pool), and (b) the full
   ``prepare`` (decode, segment, quality gates, WAV + sidecar writing, split, manifests; ``force=True`` so
   every run converts everything). Best of ``--repeats`` runs each. Prints audio seconds per wall second
   for each and the ratio (b)/(a); and the scaling of (b) from 1 to N jobs.
3. Peak RSS of one prepare worker on a one-hour MP3 against a 30 s clip (separate processes).
4. For the Range-fetched mini subset: bytes downloaded against the selected members' compressed sizes
   (FMA-shaped zip on a loopback server, as in the tests).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def make_corpus(folder: Path, minutes: float, clip_seconds: float = 30.0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(int(minutes * 60 / clip_seconds)):
        path = folder / f"clip_{k:03d}.mp3"
        # chords of sines plus pink noise: costs the encoder and decoder what music costs
        src = (f"sine=frequency={220 + 11 * k}:sample_rate=44100:duration={clip_seconds}")
        noise = f"anoisesrc=color=pink:amplitude=0.05:sample_rate=44100:duration={clip_seconds}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-f", "lavfi", "-i", noise,
                        "-filter_complex", "amix=inputs=2,aformat=channel_layouts=stereo", "-b:a", "192k", str(path)],
                       check=True)
        files.append(path)
    return files


def _decode_only(path: str) -> float:
    from musicpipe.audio import stream_mono

    return sum(len(block) for block in stream_mono(path, 32000, 10.0)) / 32000


def floor_throughput(files: list, jobs: int) -> tuple:
    start = time.perf_counter()
    if jobs == 1:
        seconds = sum(_decode_only(str(f)) for f in files)
    else:
        with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
            seconds = sum(pool.map(_decode_only, [str(f) for f in files]))
    return seconds, time.perf_counter() - start


def prepare_wall(files: list, jobs: int, workspace: Path) -> float:
    from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks

    inputs = [TrackInput(path=f, track_id=f.stem, artist=f"artist {i % 7}", genre="test")
              for i, f in enumerate(files)]
    start = time.perf_counter()
    prepare_tracks(inputs, f"bench_{jobs}", workspace, PrepareConfig(num_jobs=jobs), force=True, progress=False)
    return time.perf_counter() - start


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
    parser.add_argument("--minutes", type=float, default=30.0, help="corpus length")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each measurement")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the long input for RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as tmp_s:
        tmp = Path(tmp_s)
        files = make_corpus(tmp / "corpus", args.minutes)
        results = {}
        for jobs in args.jobs:
            floors = [floor_throughput(files, jobs) for _ in range(args.repeats)]
            seconds, floor_wall = floors[0][0], min(w for _, w in floors)
            full_wall = min(prepare_wall(files, jobs, tmp / "ws") for _ in range(args.repeats))
            results[jobs] = (seconds / floor_wall, seconds / full_wall)
            print(f"jobs={jobs}: {len(files)} MP3s, {seconds / 60:.1f} min of audio | floor (decode+downmix+resample) "
                  f"{seconds / floor_wall:7.1f} audio-s/s | prepare {seconds / full_wall:7.1f} audio-s/s | "
                  f"ratio prepare/floor {floor_wall / full_wall:.2f}")
        if len(args.jobs) > 1:
            lo, hi = min(args.jobs), max(args.jobs)
            print(f"scaling of prepare from {lo} to {hi} jobs: {results[hi][1] / results[lo][1]:.2f}x "
                  f"(ideal {hi / lo:.0f}x; {os.cpu_count()} cores)")
        long = make_corpus(tmp / "long", args.long_minutes, clip_seconds=args.long_minutes * 60)[0]
        short = make_corpus(tmp / "short", 0.5, clip_seconds=30.0)[0]
        rss_long, rss_short = peak_rss_mb(long, tmp / "ws_rss_long"), peak_rss_mb(short, tmp / "ws_rss_short")
        print(f"peak RSS of a prepare worker: {rss_long['peak_mb']:.0f} MB for a {args.long_minutes:.0f} min input, "
              f"{rss_short['peak_mb']:.0f} MB for a 30 s clip (difference {rss_long['peak_mb'] - rss_short['peak_mb']:.0f} MB;"
              f" {rss_short['after_imports_mb']:.0f} MB after imports)")
        mini = mini_subset_bytes(tmp / "mini")
        print(f"fma_small_mini by Range: {mini['bytes_downloaded']} bytes downloaded for {mini['members_compressed']} "
              f"bytes of selected members ({mini['ratio']:.3f}x; the zip is {mini['zip_size']} bytes)")


if __name__ == "__main__":
    main()

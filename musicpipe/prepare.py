"""The prepare step: decode -> 32 kHz mono -> 10 s segments -> quality gates -> sidecars -> split -> manifests.

Writes under ``<ws>/data/<name>/``::

    audio/<track_id>/<track_id>_<k>.wav    segments (k from 0), PCM 16-bit mono (or FLAC)
    audio/<track_id>/<track_id>_<k>.json   sidecar: every MusicInfo field + track_id, segment, album, source...
    audio/<track_id>/.done.json            completion marker, written last (segments, stats, fingerprints)
    egs/train/data.jsonl, egs/valid/data.jsonl
    prepare_report.json

Each track is decoded segment by segment (memory stays flat for hour-long inputs) in a process pool.
A re-run skips tracks whose marker matches the audio-affecting config and the source file's size and
mtime (nothing is decoded), so it is cheap and gives byte-identical manifests; a track folder without a
marker (a run killed mid-track) is wiped and redone. Bad inputs are quarantined with a reason, never fatal.

Segmenting rules: every segment is ``segment_seconds`` long except a track's last one, kept when at least
``min_last_segment_seconds`` long; a track shorter than one segment is kept whole as one segment when it is
at least ``min_track_seconds`` long (shorter ones are quarantined as too short). Segments quieter than
``silence_floor_db`` (RMS, dBFS) are dropped; a track with nothing left is quarantined.

Example:
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     t = np.arange(44100 * 12) / 44100
    ...     sf.write(tmp / f"t{i}.wav", 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t), 44100)
    >>> tracks = [TrackInput(path=tmp / f"t{i}.wav", track_id=f"t{i}", artist=f"a{i}", genre="rock")
    ...           for i in range(4)]
    >>> report = prepare_tracks(tracks, "demo", tmp / "ws", PrepareConfig(num_jobs=1, valid_share=0.25),
    ...                         progress=False)
    >>> report["counts"]["segments_train"], report["counts"]["segments_valid"], report["split"]["method_used"]
    (3, 1, 'artist')
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import struct
import time
import typing as tp
import unicodedata
from collections import deque
from pathlib import Path

from musicpipe import atomic, audio, manifests, paths, procs
from musicpipe import split as split_mod

logger = logging.getLogger(__name__)

DISK_FULL = "disk_full"  # a worker's result status: the write failed for lack of space (the run stops)

PathLike = tp.Union[str, Path]
PREPARE_VERSION = 1          # bump when the conversion changes: every marker then mismatches and is redone
MARKER = ".done.json"
REPORT_NAME = "prepare_report.json"
CLIP_LEVEL = 0.999           # |x| at or above counts as clipped
AUDIO_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}
# Decode with FFmpeg's amovie source first (no Python per packet), falling back to the careful per-packet path on any
# sign of trouble; the output is the same either way. MUSICPIPE_FAST_DECODE=0 turns the fast path off.
FAST_DECODE_ENV = "MUSICPIPE_FAST_DECODE"


def fast_decode_enabled() -> bool:
    return os.environ.get(FAST_DECODE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
# PrepareConfig fields that change the audio written: a marker made with other values is stale.
AUDIO_FIELDS = ("sample_rate", "segment_seconds", "min_last_segment_seconds", "min_track_seconds", "audio_format",
                "silence_floor_db")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


@dataclasses.dataclass
class TrackInput:
    """One source audio file and what is known about it."""

    path: Path                                     # source audio file
    track_id: str                                  # unique within the dataset; filesystem-safe (safe_track_id)
    artist: tp.Optional[str] = None
    title: tp.Optional[str] = None
    album: tp.Optional[str] = None
    genre: tp.Optional[str] = None                 # main genre
    genres: tp.Sequence[str] = ()                  # all genres
    tags: tp.Sequence[str] = ()                    # keywords/tags
    moods: tp.Sequence[str] = ()
    instrument: tp.Optional[str] = None
    description: tp.Optional[str] = None           # built from genre+tags+moods when None
    license: tp.Optional[str] = None
    split: tp.Optional[str] = None                 # official split 'train'|'valid'|'test' when known
    extra: tp.Dict[str, tp.Any] = dataclasses.field(default_factory=dict)  # 'bpm' and 'key' fill MusicInfo's


@dataclasses.dataclass
class PrepareConfig:
    """How prepare converts, filters and splits."""

    sample_rate: int = 32000
    segment_seconds: float = 10.0
    min_last_segment_seconds: float = 5.0   # the last partial segment is kept only if at least this long
    min_track_seconds: float = 1.0          # shorter inputs are quarantined ("too short")
    audio_format: str = "wav"               # 'wav' (PCM_16) or 'flac'
    silence_floor_db: float = -60.0         # segments whose RMS dBFS is below are dropped ("digital silence")
    valid_share: float = 0.1                # by duration
    split: str = "artist"                   # 'artist' | 'track' | 'official'
    seed: int = 0
    num_jobs: tp.Optional[int] = None       # process pool size; None = os.cpu_count()
    verify: bool = False                    # re-check kept segments (content hash, header, sidecar); redo damaged

    def validate(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if not 0 <= self.min_last_segment_seconds <= self.segment_seconds:
            raise ValueError(f"min_last_segment_seconds must be in [0, segment_seconds], "
                             f"got {self.min_last_segment_seconds}")
        if not 0 <= self.min_track_seconds:
            raise ValueError(f"min_track_seconds must be >= 0, got {self.min_track_seconds}")
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, got {self.audio_format!r}")
        if self.split not in split_mod.METHODS:
            raise ValueError(f"split must be one of {split_mod.METHODS}, got {self.split!r}")
        if not 0 < self.valid_share < 1:
            raise ValueError(f"valid_share must be in (0, 1), got {self.valid_share}")
        if self.num_jobs is not None and self.num_jobs < 1:
            raise ValueError(f"num_jobs must be >= 1 or None, got {self.num_jobs}")


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def safe_track_id(text: str, max_len: int = 80) -> str:
    """A readable, filesystem-safe id from a name or relative path ('/' becomes '__').

    Accents are stripped to ASCII, anything else odd becomes '_'. When nothing readable is left, or the
    id is longer than ``max_len``, a short hash of ``text`` keeps it distinct. Deterministic.

    Example:
        >>> safe_track_id("Café del Mar/01 ünïcode track")
        'Cafe_del_Mar__01_unicode_track'
        >>> safe_track_id("東京").startswith("track_")
        True
    """
    parts = []
    for part in re.split(r"[/\\]+", text):
        s = unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode("ascii")
        s = re.sub(r"[^A-Za-z0-9.+-]+", "_", s)
        s = re.sub(r"_+", "_", s).strip("._-+")
        if s:
            parts.append(s)
    slug = "__".join(parts)
    if not slug:
        return f"track_{_short_hash(text)}"
    if len(slug) > max_len:
        slug = f"{slug[:max_len - 9].rstrip('._-+')}-{_short_hash(text)}"
    if not slug[0].isalnum():
        slug = "t" + slug
    return slug


def _clean_list(values: tp.Any) -> tp.List[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = re.split(r"[,;]", values)
    out: tp.List[str] = []
    seen: tp.Set[str] = set()
    for v in values:
        s = str(v).strip() if v is not None else ""
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def build_description(genre: tp.Optional[str] = None, tags: tp.Sequence[str] = (), moods: tp.Sequence[str] = (),
                      instrument: tp.Optional[str] = None, genres: tp.Sequence[str] = ()) -> str:
    """A short sentence from what is known; "" when nothing is.

    Example:
        >>> build_description("rock", tags=["indie", "live"], moods=["energetic"], instrument="guitar")
        'Rock track, energetic, with guitar; tags: indie, live.'
        >>> build_description()
        ''
    """
    all_genres = _clean_list(genres)
    main = (genre or "").strip() or (all_genres[0] if all_genres else "")
    others = [g for g in all_genres if g.casefold() != main.casefold()]
    moods_l = _clean_list(moods)
    instr = (instrument or "").strip()
    used = {x.casefold() for x in [main, *others, *moods_l, *_clean_list(instr)] if x}
    tags_l = [t for t in _clean_list(tags) if t.casefold() not in used]
    if not (main or others or moods_l or instr or tags_l):
        return ""
    head = f"{main[:1].upper()}{main[1:]} track" if main else "Track"
    if others:
        head += f" ({', '.join(others)})"
    text = ", ".join([head, *moods_l] + ([f"with {instr}"] if instr else []))
    if tags_l:
        text += f"; tags: {', '.join(tags_l)}"
    return text + "."


def _jsonable(value: tp.Any) -> tp.Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def sidecar_fields(track: TrackInput, dataset: tp.Optional[str] = None
                   ) -> tp.Tuple[tp.Dict[str, tp.Any], tp.Dict[str, tp.Any]]:
    """``(info, extra)`` for a track's sidecars: every MusicInfo field, then our own keys (per track)."""
    genres = _clean_list(track.genres)
    genre = (track.genre or "").strip() or (genres[0] if genres else None)
    if genre and genre.casefold() not in {g.casefold() for g in genres}:
        genres.insert(0, genre)
    tags, moods = _clean_list(track.tags), _clean_list(track.moods)
    description = track.description if track.description is not None else build_description(
        genre, tags, moods, track.instrument, genres)
    bpm = track.extra.get("bpm") if track.extra else None
    try:
        bpm = float(bpm) if bpm not in (None, "") else None
        bpm = bpm if bpm is None or math.isfinite(bpm) else None
    except (TypeError, ValueError):
        bpm = None
    key = track.extra.get("key") if track.extra else None
    info = {"title": track.title or None, "artist": track.artist or None, "key": str(key) if key else None,
            "bpm": bpm, "genre": genre, "moods": moods or None, "keywords": tags or None,
            "description": (description or "").strip(), "name": track.track_id,
            "instrument": (track.instrument or None)}
    extra: tp.Dict[str, tp.Any] = {"track_id": track.track_id, "album": track.album or None,
                                   "license": track.license or None, "source": os.path.abspath(track.path),
                                   "genres": genres, "tags": tags, "official_split": track.split}
    if dataset:
        extra["dataset"] = dataset
    if track.extra:
        extra["extra"] = _jsonable(dict(track.extra))
    return info, extra


def _audio_fingerprint(config: PrepareConfig) -> tp.Dict[str, tp.Any]:
    fp: tp.Dict[str, tp.Any] = {k: getattr(config, k) for k in AUDIO_FIELDS}
    fp["version"] = PREPARE_VERSION
    return fp


def _source_fingerprint(path: PathLike) -> tp.Optional[tp.Dict[str, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": int(st.st_size), "mtime": int(st.st_mtime)}


def _meta_fingerprint(info: tp.Mapping[str, tp.Any], extra: tp.Mapping[str, tp.Any]) -> str:
    return hashlib.sha1(json.dumps([info, extra], sort_keys=True, ensure_ascii=False, default=str)
                        .encode("utf-8")).hexdigest()


def _rms_db(x: tp.Any) -> float:
    import numpy as np

    rms = math.sqrt(max(float(np.dot(x, x)), 0.0) / x.size) if x.size else 0.0  # dot: no float64 copy
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def wav_header(frames: int, sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit PCM mono WAV file, as libsndfile writes it.

    Example:
        >>> import io, numpy as np, soundfile as sf
        >>> pcm = np.array([0, 1000, -1000], dtype="<i2")
        >>> sf.read(io.BytesIO(wav_header(3, 32000) + pcm.tobytes()), dtype="int16")[0].tolist()
        [0, 1000, -1000]
    """
    data = 2 * frames
    if data > 0xFFFFFFFF - 36:
        raise ValueError(f"{frames} frames do not fit in a WAV file (4 GiB)")
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)  # PCM, mono, 16-bit
    return b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data)


_DIGESTS: tp.Dict[str, str] = {}  # path -> content hash of the bytes _write_segment wrote (read by _convert)


def content_hash(*chunks: tp.Any) -> str:
    """BLAKE2b-128 of the bytes, hex: the per-segment fingerprint recorded in the marker (``prepare --verify``).

    >>> content_hash(b"ab") == content_hash(b"a", b"b")
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_content_hash(path: PathLike) -> str:
    """:func:`content_hash` of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_segment(path: Path, x: tp.Any, sample_rate: int, audio_format: str) -> int:
    """Write ``x`` (clipped to [-1, 1]) as 16-bit PCM to a temp name, then rename; returns the file size.

    WAV is written here (header + samples: the bytes libsndfile writes, without its fsync per file); FLAC by
    libsndfile.
    """
    import numpy as np

    # 16-bit PCM made here (the same rounding as libsndfile's) is 3x faster to write than floats
    pcm = np.clip(x, -1.0, 1.0)
    pcm *= 32767.0
    np.rint(pcm, out=pcm)
    pcm16 = pcm.astype("<i2")
    if audio_format == "wav":
        header = wav_header(pcm16.size, sample_rate)
        with atomic.atomic_open(path, "wb") as f:
            f.write(header)
            f.write(pcm16.data)
        _DIGESTS[str(path)] = content_hash(header, pcm16.data)
        return 44 + 2 * pcm16.size
    import soundfile as sf

    fmt, subtype = AUDIO_FORMATS[audio_format]
    with atomic.atomic_path(path) as tmp:
        sf.write(tmp, pcm16, sample_rate, format=fmt, subtype=subtype)
    _DIGESTS[str(path)] = file_content_hash(path)
    return path.stat().st_size


def _wipe(track_dir: Path) -> None:
    if track_dir.exists():
        shutil.rmtree(track_dir)


def _convert(job: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    import numpy as np

    track: TrackInput = job["track"]
    cfg = PrepareConfig(**job["config"])
    track_dir = Path(job["track_dir"])
    tid = track.track_id
    sr = cfg.sample_rate
    block = int(round(cfg.segment_seconds * sr))
    ext = cfg.audio_format
    result: tp.Dict[str, tp.Any] = {
        "version": PREPARE_VERSION, "track_id": tid, "file": str(track.path), "status": "ok",
        "audio_fingerprint": job["audio_fp"], "source_fingerprint": job["source_fp"],
        "meta_fingerprint": job["meta_fp"], "segments": [], "warnings": []}

    def quarantine(code: str, reason: str) -> tp.Dict[str, tp.Any]:
        _wipe(track_dir)
        track_dir.mkdir(parents=True)
        result.update(status="quarantined", reason_code=code, reason=reason, segments=[])
        return result

    for fast in ((True, False) if fast_decode_enabled() else (False,)):
        _wipe(track_dir)  # also what a fast attempt that handed over had written
        track_dir.mkdir(parents=True)
        stats: tp.Dict[str, tp.Any] = {}
        segments: tp.List[tp.Dict[str, tp.Any]] = []
        silent = blocks = total = clipped = 0
        peak = 0.0
        tail_dropped = 0.0
        try:
            for k, x in enumerate(audio.stream_mono(track.path, sr, cfg.segment_seconds, stats=stats, fast=fast)):
                blocks += 1
                n = int(x.size)
                total += n
                block_peak = max(float(x.max()), -float(x.min()))
                if block_peak >= CLIP_LEVEL:
                    clipped += int(np.count_nonzero(x >= CLIP_LEVEL)) + int(np.count_nonzero(x <= -CLIP_LEVEL))
                peak = max(peak, block_peak)
                level = _rms_db(x)
                if level < cfg.silence_floor_db:
                    silent += 1
                    continue
                if n < block:  # the last, partial block
                    if k > 0 and n < cfg.min_last_segment_seconds * sr:
                        tail_dropped = n / sr
                        continue
                    if k == 0 and n < cfg.min_track_seconds * sr:
                        continue  # too short: decided below
                j = len(segments)
                path = track_dir / f"{tid}_{j}.{ext}"
                size = _write_segment(path, x, sr, ext)
                seg_extra = dict(job["extra"], segment=j, start=round(k * cfg.segment_seconds, 6))
                manifests.write_sidecar(path, job["info"], extra=seg_extra)
                segments.append({"file": path.name, "frames": n, "duration": round(n / sr, 6),
                                 "start": round(k * cfg.segment_seconds, 6), "bytes": size,
                                 "rms_db": round(level, 2), "blake2b": _DIGESTS.pop(str(path), None)})
        except audio.CarefulDecodeNeeded as e:  # blocks were written already: redo the track the careful way
            logger.debug("%s", e)
            continue
        except audio.AudioDecodeError as e:
            result.update(_stats(stats, total, sr, clipped, peak, silent, tail_dropped))
            return quarantine("undecodable", f"undecodable: {e.reason}")
        break
    result.update(_stats(stats, total, sr, clipped, peak, silent, tail_dropped))
    decoded = total / sr
    declared = stats.get("declared_duration")
    if audio.falls_short(decoded, declared):
        result["warnings"].append(f"decoded {decoded:.2f} s of {declared:.2f} s declared (truncated file?)")
    if stats.get("skipped_packets"):
        result["warnings"].append(f"{stats['skipped_packets']} corrupt packet(s) skipped")
    if decoded < cfg.min_track_seconds:
        return quarantine("too_short", f"too short: {decoded:.2f} s < min_track_seconds {cfg.min_track_seconds:g}")
    if not segments:
        if silent == blocks:
            return quarantine("silent", f"silent: all {blocks} segment(s) below {cfg.silence_floor_db:g} dBFS RMS")
        return quarantine("no_segments", f"no usable segment: {silent} silent, last {tail_dropped:.2f} s shorter "
                                         f"than min_last_segment_seconds {cfg.min_last_segment_seconds:g}")
    result["segments"] = segments
    return result


def _stats(stats: tp.Mapping[str, tp.Any], total: int, sr: int, clipped: int, peak: float, silent: int,
           tail_dropped: float) -> tp.Dict[str, tp.Any]:
    return {"decoded_seconds": round(total / sr, 6), "declared_seconds": stats.get("declared_duration"),
            "source_sample_rate": stats.get("source_sample_rate"), "source_channels": stats.get("source_channels"),
            "codec": stats.get("codec"), "skipped_packets": stats.get("skipped_packets", 0),
            "clipping_ratio": round(clipped / total, 8) if total else 0.0, "peak": round(peak, 6),
            "dropped_silent": silent, "dropped_tail_seconds": round(tail_dropped, 6)}


def _process_track(job: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Worker: convert one track and write its marker last; never raises (errors come back as results)."""
    track: TrackInput = job["track"]
    track_dir = Path(job["track_dir"])
    try:
        result = _convert(job)
        atomic.write_json(track_dir / MARKER, result, ensure_ascii=False, indent=1)
    except Exception as e:  # one bad file never stops the run; a full disk stops it (not the file's fault)
        logger.debug("%s failed", track.path, exc_info=True)
        with contextlib.suppress(OSError):
            _wipe(track_dir)
        full = atomic.disk_full(e, track_dir)
        if full is not None:
            return {"version": PREPARE_VERSION, "track_id": track.track_id, "file": str(track.path),
                    "status": DISK_FULL, "reason": str(full), "free": full.free, "segments": [], "warnings": []}
        return {"version": PREPARE_VERSION, "track_id": track.track_id, "file": str(track.path), "status": "error",
                "reason_code": "error", "reason": f"error: {type(e).__name__}: {e}", "segments": [], "warnings": []}
    return result


def _disk_full_stop(name: str, root: Path, result: tp.Mapping[str, tp.Any],
                    results: tp.Mapping[str, tp.Mapping[str, tp.Any]], total: int) -> atomic.DiskFullError:
    """The error that stops a prepare whose disk filled: what filled, what is left, about how much it needs."""
    sizes = [sum(size for _f, _d, size in r["segments"]) for r in results.values() if r["status"] == "ok"]
    left = total - len(results)
    needed = int(sum(sizes) / len(sizes) * left) if sizes else None
    mount, free, _total = atomic.space(root)
    return atomic.DiskFullError(
        f"prepare {name}: stopped, the disk is full ({mount}: {atomic.human_bytes(free)} free; "
        f"{left} of {total} tracks not converted"
        + (f", about {atomic.human_bytes(needed)} more needed at {atomic.human_bytes(needed / left)} per track"
           if needed else "")
        + f"). The {len(results)} tracks done are kept and nothing was quarantined for this: free space and "
          f"re-run prepare to convert the rest. First failure: {result['file']}: {result['reason']}",
        root, free, needed)


def _crashed(job: tp.Dict[str, tp.Any], why: str) -> tp.Dict[str, tp.Any]:
    track: TrackInput = job["track"]
    return {"version": PREPARE_VERSION, "track_id": track.track_id, "file": str(track.path), "status": "error",
            "reason_code": "error", "reason": f"error: {why}", "segments": [], "warnings": []}


def _run_jobs(jobs: tp.List[tp.Dict[str, tp.Any]], num_jobs: int,
              on_result: tp.Callable[[tp.Dict[str, tp.Any], tp.Dict[str, tp.Any]], None]) -> None:
    """Run ``_process_track`` over ``jobs``: in-process for one job, else a process pool.

    A worker that dies (segfault, out of memory) breaks the pool: the jobs in flight become suspects and are
    re-run one per fresh single-worker pool, so only the culprit is reported; the others go on in a new pool.
    """
    if num_jobs <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_result(job, _process_track(job))
        return
    import multiprocessing
    import sys
    from concurrent.futures.process import BrokenProcessPool

    # fork on Linux: workers start fast and scripts need no ``if __name__ == "__main__"`` guard (spawn would
    # re-import an unguarded script); elsewhere spawn, the platform's safe default.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    inherited = tuple(_INHERITED_LOCKS) if ctx.get_start_method() == "fork" else ()
    queue = deque(jobs)
    suspects: tp.List[tp.Dict[str, tp.Any]] = []
    while queue:
        with concurrent.futures.ProcessPoolExecutor(num_jobs, mp_context=ctx, initializer=_worker_init,
                                                    initargs=(inherited,)) as pool:
            inflight: tp.Dict[concurrent.futures.Future, tp.Dict[str, tp.Any]] = {}
            broken = False
            while (queue or inflight) and not broken:
                while queue and len(inflight) < 2 * num_jobs:
                    job = queue.popleft()
                    inflight[pool.submit(_process_track, job)] = job
                done, _ = concurrent.futures.wait(inflight, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    job = inflight.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        broken = True
                        continue
                    except Exception as e:  # e.g. a job or result that could not be pickled
                        result = _crashed(job, f"{type(e).__name__}: {e}")
                    on_result(job, result)
            if broken:
                suspects.extend(inflight.values())
                logger.warning("a prepare worker died; retrying %d track(s) one by one", len(suspects))
    for job in suspects:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init,
                                                    initargs=(inherited,)) as pool:
            try:
                result = pool.submit(_process_track, job).result()
            except BrokenProcessPool:
                result = _crashed(job, "the worker process died on this file (crash or out of memory)")
            except Exception as e:
                result = _crashed(job, f"{type(e).__name__}: {e}")
        on_result(job, result)


_KEPT = ("track_id", "file", "status", "reason_code", "reason", "decoded_seconds", "clipping_ratio", "dropped_silent",
         "dropped_tail_seconds", "warnings")


def _compact(result: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """What the manifests and the report need of a track's result (large datasets hold one per track)."""
    out = {k: result.get(k) for k in _KEPT}
    out["segments"] = [(s["file"], s["duration"], s["bytes"]) for s in result.get("segments", [])]
    hashes = [s.get("blake2b") for s in result.get("segments", [])]
    # the decoded audio's fingerprint: identical decoded (and converted) audio gives identical segment bytes
    out["audio_hash"] = content_hash("|".join(hashes).encode()) if hashes and all(hashes) else None
    return out


def _drop_duplicates(results: tp.Dict[str, tp.Dict[str, tp.Any]],
                     ok: tp.Dict[str, tp.Dict[str, tp.Any]]) -> None:
    """Tracks whose decoded audio is identical to another's (same ``audio_hash``): the first track id is kept, the
    others are reported in the quarantine list as duplicates of it and left out of the manifests."""
    first: tp.Dict[str, str] = {}
    for tid in sorted(ok):
        fp = ok[tid].get("audio_hash")
        if not fp:
            continue
        if fp not in first:
            first[fp] = tid
            continue
        keep = first[fp]
        logger.warning("%s: same decoded audio as %s (%s): left out as a duplicate", tid, keep, results[tid]["file"])
        results[tid] = dict(results[tid], status="quarantined", reason_code="duplicate", duplicate_of=keep,
                            reason=f"duplicate of {keep} (identical decoded audio)")
        del ok[tid]


def _valid_marker(track_dir: Path, audio_fp: tp.Mapping[str, tp.Any],
                  source_fp: tp.Optional[tp.Mapping[str, int]]) -> tp.Optional[tp.Dict[str, tp.Any]]:
    """The track's marker when it still describes this config, this source and complete files on disk."""
    try:
        marker = json.loads((track_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("version") != PREPARE_VERSION or marker.get("audio_fingerprint") != dict(audio_fp):
        return None
    if source_fp is not None and marker.get("source_fingerprint") != dict(source_fp):
        return None  # source changed (a missing source keeps what was converted from it)
    if marker.get("status") == "ok":
        folder = str(track_dir)
        try:
            names = set(os.listdir(folder))  # one listing for the sidecars instead of a stat each
            for seg in marker.get("segments", []):
                file = seg["file"]
                if f"{file.rsplit('.', 1)[0]}.json" not in names:
                    return None
                if os.stat(os.path.join(folder, file)).st_size != seg["bytes"]:
                    return None
        except OSError:
            return None
    elif marker.get("status") != "quarantined":
        return None
    return marker


def verify_segments(track_dir: Path, marker: tp.Mapping[str, tp.Any], sample_rate: int) -> tp.List[str]:
    """Problems with a kept track's segments: content hash against the marker's (or, for markers without one,
    the header against the recorded frames), and each sidecar (:func:`musicpipe.datacheck.check_file`)."""
    from musicpipe import datacheck

    problems = []
    for seg in marker.get("segments", []):
        path = track_dir / seg["file"]
        problem = datacheck.check_file(manifests.AudioRecord(str(path), float(seg["duration"]), sample_rate))
        if problem is None and seg.get("blake2b"):
            try:
                if file_content_hash(path) != seg["blake2b"]:
                    problem = f"{path}: content differs from what prepare wrote (BLAKE2b mismatch)"
            except OSError as exc:
                problem = f"{path}: unreadable ({exc.strerror or exc})"
        if problem:
            problems.append(problem)
    return problems


def _has_size(path: str, size: int) -> bool:
    """``path`` is a regular file of ``size`` bytes."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def _refresh_sidecars(track_dir: Path, marker: tp.Dict[str, tp.Any], info: tp.Mapping[str, tp.Any],
                      extra: tp.Mapping[str, tp.Any], meta_fp: str) -> tp.Dict[str, tp.Any]:
    """Metadata changed but not the audio: rewrite sidecars and the marker, decode nothing."""
    for j, seg in enumerate(marker.get("segments", [])):
        manifests.write_sidecar(track_dir / seg["file"], info, extra=dict(extra, segment=j, start=seg["start"]))
    marker = dict(marker, meta_fingerprint=meta_fp, file=extra.get("source", marker.get("file")))
    atomic.write_json(track_dir / MARKER, marker, ensure_ascii=False, indent=1)
    return marker


@contextlib.contextmanager
def _dataset_lock(root: Path) -> tp.Iterator[None]:
    """One prepare per dataset: :func:`musicpipe.procs.exclusive` on ``<root>/.prepare.lock``.

    A dead prepare never holds it (the kernel drops an flock with its last holder, and the pool's workers, which
    inherit it through fork, close their copy and die with their parent). The losing side gets
    :class:`musicpipe.procs.BusyError` naming the PID.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not POSIX: no lock
        yield
        return
    with procs.exclusive(root / ".prepare.lock", f"dataset {root.name} (another prepare)") as fd:
        _INHERITED_LOCKS.append(fd)
        try:
            yield
        finally:
            _INHERITED_LOCKS.remove(fd)


_INHERITED_LOCKS: tp.List[int] = []  # lock descriptors a forked worker must not keep


def _worker_init(fds: tp.Sequence[int] = ()) -> None:
    """A pool worker: drop the inherited lock descriptors; die with the prepare that started it."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    procs.die_with_parent()


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _check_inputs(tracks: tp.Sequence[TrackInput]) -> None:
    seen: tp.Dict[str, str] = {}
    for t in tracks:
        if not isinstance(t.track_id, str) or not _SAFE_ID.fullmatch(t.track_id):
            raise ValueError(f"track_id {t.track_id!r} ({t.path}) is not filesystem-safe: use letters, digits, "
                             f"'._+-' (musicpipe.prepare.safe_track_id makes one)")
        folded = t.track_id.casefold()  # case-insensitive filesystems would merge these folders
        if folded in seen:
            raise ValueError(f"duplicate track_id {t.track_id!r}: {seen[folded]} and {t.path}")
        seen[folded] = str(t.path)
    sources: tp.Dict[str, str] = {}
    for t in tracks:
        other = sources.setdefault(os.path.abspath(t.path), t.track_id)
        if other != t.track_id:
            logger.warning("%s is the source of both %s and %s: its audio may land on both sides of the split",
                           t.path, other, t.track_id)


def prepare_tracks(tracks: tp.Sequence[TrackInput], name: str, workspace: tp.Optional[PathLike] = None,
                   config: PrepareConfig = PrepareConfig(), *, force: bool = False, write_dset_config: bool = True,
                   progress: bool = True) -> tp.Dict[str, tp.Any]:
    """Convert ``tracks`` into the dataset ``name``: segments, sidecars, split, manifests, report.

    Args:
        tracks: the inputs (a source's ``track_inputs`` or :func:`musicpipe.sources.folder.scan_folder`).
        name: dataset name (``<ws>/data/<name>``; ``dset=audio/<name>``).
        workspace: workspace root (default: ``$MUSICPIPE_WORKSPACE`` or ``<repo>/workspace``).
        config: conversion, quality gates and split.
        force: redo every track even when its marker matches.
        write_dset_config: write ``<ws>/config/dset/audio/<name>.yaml``.
        progress: show a tqdm bar over tracks.

    Returns:
        The report also written to ``<ws>/data/<name>/prepare_report.json``.
    """
    from tqdm import tqdm

    config.validate()
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise ValueError(f"dataset name {name!r}: use letters, digits and '._+-'")
    tracks = list(tracks)
    _check_inputs(tracks)
    ws = paths.workspace_root(workspace)
    root = paths.dataset_dir(name, ws)
    audio_root = root / "audio"
    audio_fp = _audio_fingerprint(config)
    started = time.perf_counter()
    with _dataset_lock(root):
        audio_root.mkdir(parents=True, exist_ok=True)
        results: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
        jobs: tp.List[tp.Dict[str, tp.Any]] = []
        run: tp.Dict[str, tp.Any] = {"processed": 0, "skipped_unchanged": 0, "metadata_refreshed": 0,
                                     "missing_sources_kept": 0, "decoded_audio_seconds": 0.0}
        by_id = {t.track_id: t for t in tracks}
        infos: tp.Dict[str, tp.Dict[str, tp.Any]] = {}  # MusicInfo fields per track, for the report
        checked: tp.Set[str] = set()  # tracks whose segments _valid_marker has just found complete on disk
        bar = tqdm(total=len(tracks), desc=f"prepare {name}", unit="track", disable=not progress)
        for track in tracks:
            info, extra = sidecar_fields(track, name)
            infos[track.track_id] = info
            meta_fp = _meta_fingerprint(info, extra)
            source_fp = _source_fingerprint(track.path)
            track_dir = audio_root / track.track_id
            marker = None if force else _valid_marker(track_dir, audio_fp, source_fp)
            if marker is not None and config.verify and marker.get("status") == "ok":
                damaged = verify_segments(track_dir, marker, config.sample_rate)
                run["verified_segments"] = run.get("verified_segments", 0) + len(marker.get("segments", []))
                if damaged and source_fp is None:
                    logger.warning("%s: damaged, but its source %s is missing: kept as is (%s)", track.track_id,
                                   track.path, "; ".join(damaged))
                elif damaged:
                    for problem in damaged:
                        logger.warning("verify: %s: re-converting %s", problem, track.track_id)
                    run["repaired"] = run.get("repaired", 0) + 1
                    marker = None
            if marker is not None:
                if source_fp is None and marker.get("status") == "ok":
                    run["missing_sources_kept"] += 1
                if marker.get("status") == "ok" and marker.get("meta_fingerprint") != meta_fp:
                    marker = _refresh_sidecars(track_dir, marker, info, extra, meta_fp)
                    run["metadata_refreshed"] += 1
                run["skipped_unchanged"] += 1
                checked.add(track.track_id)
                results[track.track_id] = _compact(marker)
                bar.update(1)
                continue
            jobs.append({"track": track, "track_dir": str(track_dir), "config": dataclasses.asdict(config),
                         "info": info, "extra": extra, "audio_fp": audio_fp, "source_fp": source_fp,
                         "meta_fp": meta_fp})

        def on_result(job: tp.Dict[str, tp.Any], result: tp.Dict[str, tp.Any]) -> None:
            if result["status"] == DISK_FULL:  # stop: nothing quarantined for it, converted tracks kept
                raise _disk_full_stop(name, root, result, results, len(tracks))
            results[job["track"].track_id] = _compact(result)
            run["processed"] += 1
            run["decoded_audio_seconds"] += result.get("decoded_seconds") or 0.0
            if result["status"] != "ok":
                logger.warning("quarantined %s: %s", job["track"].path, result.get("reason"))
            bar.update(1)

        num_jobs = min(config.num_jobs or _cpu_count(), max(1, len(jobs)))
        try:
            _run_jobs(jobs, num_jobs, on_result)
        finally:
            bar.close()
        report = _finish(name, ws, root, tracks, by_id, results, config, write_dset_config, infos, checked)
        wall = time.perf_counter() - started
        decoded = run["decoded_audio_seconds"]
        run.update(wall_seconds=round(wall, 3), decoded_audio_seconds=round(decoded, 3),
                   audio_seconds_per_second=round(decoded / wall, 1) if wall > 0 else None, num_jobs=num_jobs)
        report["run"] = run
        atomic.write_json(root / REPORT_NAME, report, ensure_ascii=False, indent=1)
    c = report["counts"]
    logger.info("prepare %s: %d inputs -> %d tracks, %d train / %d valid segments (%.2f / %.2f h), %d quarantined, "
                "split=%s; %d converted now, %d unchanged; report %s", name, c["inputs"], c["converted_tracks"],
                c["segments_train"], c["segments_valid"], c["hours_train"], c["hours_valid"], c["quarantined"],
                report["split"]["method_used"], run["processed"], run["skipped_unchanged"], root / REPORT_NAME)
    return report


def _finish(name: str, ws: Path, root: Path, tracks: tp.List[TrackInput], by_id: tp.Dict[str, TrackInput],
            results: tp.Dict[str, tp.Dict[str, tp.Any]], config: PrepareConfig, write_dset_config: bool,
            infos: tp.Mapping[str, tp.Mapping[str, tp.Any]], checked: tp.Set[str]) -> tp.Dict[str, tp.Any]:
    """Split, leak check, manifests, dset config and the report (everything but the run's own figures).

    The segments of tracks converted in this run are checked on disk; those in ``checked`` were just now.
    """
    audio_root = root / "audio"
    ok = {tid: r for tid, r in results.items() if r["status"] == "ok"}
    _drop_duplicates(results, ok)
    durations = {tid: sum(duration for _, duration, _ in r["segments"]) for tid, r in ok.items()}
    assignment, split_info = split_mod.split_tracks([(by_id[tid], durations[tid]) for tid in sorted(ok)],
                                                    config.split, config.valid_share, config.seed) \
        if ok else ({}, {"method_requested": config.split, "method_used": config.split,
                         "reason": "no converted track", "valid_share_target": config.valid_share})
    records: tp.Dict[str, tp.List[manifests.AudioRecord]] = {"train": [], "valid": []}
    sides: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]] = {"train": [], "valid": []}
    seen_paths: tp.Set[str] = set()
    for tid in sorted(ok):
        side = assignment[tid]
        folder = os.path.join(str(audio_root), tid)
        for file, duration, size in ok[tid]["segments"]:
            path = os.path.join(folder, file)
            if path in seen_paths:
                raise RuntimeError(f"duplicate manifest entry {path}")
            if tid not in checked and not _has_size(path, size):
                raise RuntimeError(f"{path}: missing or partial after conversion; re-run prepare")
            seen_paths.add(path)
            records[side].append(manifests.AudioRecord(path=path, duration=duration, sample_rate=config.sample_rate))
            sides[side].append({"track_id": tid, "artist": by_id[tid].artist, "audio_hash": ok[tid].get("audio_hash")})
    split_mod.check_no_leak(sides["train"], sides["valid"], check_artists=split_info["method_used"] == "artist")
    manifests.write_manifests(records, root / "egs")  # train and valid replaced as a unit
    if not records["valid"]:
        logger.warning("prepare %s: the valid split is empty; AudioCraft needs valid data to train", name)
    dset_config = None
    if write_dset_config:
        dset_config = str(manifests.write_dset_config(name, ws, config.sample_rate, channels=1))
    return _report(name, root, tracks, results, ok, assignment, split_info, records, config, dset_config, infos)


def _report(name: str, root: Path, tracks: tp.List[TrackInput], results: tp.Dict[str, tp.Dict[str, tp.Any]],
            ok: tp.Dict[str, tp.Dict[str, tp.Any]], assignment: tp.Dict[str, str], split_info: tp.Dict[str, tp.Any],
            records: tp.Dict[str, tp.List[manifests.AudioRecord]], config: PrepareConfig,
            dset_config: tp.Optional[str], infos: tp.Mapping[str, tp.Mapping[str, tp.Any]]) -> tp.Dict[str, tp.Any]:
    bad = [results[t.track_id] for t in tracks if results[t.track_id]["status"] != "ok"]
    quarantined = sorted(({"track_id": r["track_id"], "file": r["file"], "reason_code": r.get("reason_code"),
                           "reason": r.get("reason"), **({"duplicate_of": r["duplicate_of"]} if r.get("duplicate_of")
                                                         else {})} for r in bad), key=lambda r: r["track_id"])
    reasons: tp.Dict[str, int] = {}
    for r in bad:
        reasons[r.get("reason_code") or "error"] = reasons.get(r.get("reason_code") or "error", 0) + 1
    seconds = {side: sum(r.duration for r in recs) for side, recs in records.items()}
    track_sides = {"train": sum(1 for s in assignment.values() if s == "train"),
                   "valid": sum(1 for s in assignment.values() if s == "valid")}
    converted = [results[t.track_id] for t in tracks if results[t.track_id]["status"] == "ok"]
    ratios = sorted(((r.get("clipping_ratio") or 0.0, r["track_id"]) for r in converted), key=lambda x: (-x[0], x[1]))
    clip_values = [x for x, _ in ratios]
    by_id = {t.track_id: t for t in tracks}
    missing: tp.Dict[str, int] = {k: 0 for k in ("artist", "title", "album", "genre", "tags", "moods", "instrument",
                                                  "license", "description")}
    for tid in ok:
        t = by_id[tid]
        info = infos[tid]
        missing["artist"] += not t.artist
        missing["title"] += not t.title
        missing["album"] += not t.album
        missing["genre"] += not info["genre"]
        missing["tags"] += not info["keywords"]
        missing["moods"] += not info["moods"]
        missing["instrument"] += not t.instrument
        missing["license"] += not t.license
        missing["description"] += not info["description"]
    audio_root = root / "audio"
    stale = sorted(p.name for p in audio_root.iterdir() if p.is_dir() and p.name not in by_id) \
        if audio_root.exists() else []  # from earlier runs with other inputs: kept, never listed in manifests
    warnings = sorted(({"track_id": r["track_id"], "file": r["file"], "warnings": r["warnings"]}
                       for r in converted if r.get("warnings")), key=lambda r: r["track_id"])
    counts = {
        "inputs": len(tracks),
        "converted_tracks": len(converted),
        "quarantined": len(bad),
        "tracks_train": track_sides["train"], "tracks_valid": track_sides["valid"],
        "segments_train": len(records["train"]), "segments_valid": len(records["valid"]),
        "segments": len(records["train"]) + len(records["valid"]),
        "hours_train": round(seconds["train"] / 3600, 6), "hours_valid": round(seconds["valid"] / 3600, 6),
        "hours": round((seconds["train"] + seconds["valid"]) / 3600, 6),
        "dropped_silent_segments": sum(r.get("dropped_silent", 0) for r in converted),
        "dropped_short_tails": sum(1 for r in converted if r.get("dropped_tail_seconds")),
        "dropped_tail_seconds": round(sum(r.get("dropped_tail_seconds", 0.0) for r in converted), 3),
        "decoded_hours": round(sum(r.get("decoded_seconds", 0.0) for r in converted) / 3600, 6),
    }
    return {
        "name": name,
        "dataset_dir": str(root),
        "counts": counts,
        "quarantined": quarantined,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "clipping": {
            "level": CLIP_LEVEL,
            "tracks_with_clipping": sum(1 for x in clip_values if x > 0),
            "tracks_over_0.1_percent": sum(1 for x in clip_values if x > 0.001),
            "max_ratio": clip_values[0] if clip_values else 0.0,
            "mean_ratio": round(sum(clip_values) / len(clip_values), 8) if clip_values else 0.0,
            "worst": [{"track_id": tid, "ratio": x} for x, tid in ratios[:10] if x > 0],
        },
        "missing_metadata": {"of_tracks": len(ok), **missing},
        "warnings": warnings,
        "split": split_info,
        "manifests": {side: str(root / "egs" / side / "data.jsonl") for side in ("train", "valid")},
        "dset_config": dset_config,
        "stale_track_dirs": {"count": len(stale), "first": stale[:20]},
        "config": dataclasses.asdict(config),
        "version": PREPARE_VERSION,
    }


def load_report(name: str, workspace: tp.Optional[PathLike] = None) -> tp.Dict[str, tp.Any]:
    """The report of the last prepare of ``name``."""
    return json.loads((paths.dataset_dir(name, workspace) / REPORT_NAME).read_text(encoding="utf-8"))

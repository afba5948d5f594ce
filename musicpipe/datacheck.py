"""Is the prepared data fit to train on? One fast check that preflight and ``train-codec``/``train-lm`` both run.

AudioCraft does not check its files: a deleted WAV is logged ("Error opening file") and skipped, a manifest
duration longer than the file or an invalid sidecar JSON crashes a worker an epoch later with a traceback that
names no file. :func:`check_records` finds these before launch:

- every manifest entry exists, and its header agrees with the manifest line: WAV (RIFF chunks: sample rate,
  data size) and FLAC (STREAMINFO: sample rate, total samples) give the duration without decoding, which must
  match the listed one within max(0.1 s, 5 %); a file shorter than its header says is truncated (the sample
  rate itself is preflight's ``sample rate`` check: AudioCraft resamples);
- every sidecar (``<audio>.json``, or the line's ``info_path``) that exists parses to a JSON object;
- a seeded sample of each split's files really decodes (PyAV, :mod:`musicpipe.audio`) to about the listed
  duration (what preflight's ``files`` check did alone before).

Reading a header and a sidecar per entry costs two small reads: about 100k segments in seconds (see README).

Example:
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from musicpipe.manifests import AudioRecord
    >>> d = Path(tempfile.mkdtemp()); sf.write(d / "a.wav", np.zeros(16000), 16000, subtype="PCM_16")
    >>> check_records({"train": [AudioRecord(str(d / "a.wav"), 1.0, 16000)]}).ok
    True
    >>> r = check_records({"train": [AudioRecord(str(d / "a.wav"), 100.0, 16000)]}, sample=0)
    >>> r.ok, r.problems[0].endswith("header says 1.00 s but the train manifest lists 100.00 s")
    (False, True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import struct
import time
import typing as tp
import zipfile
from pathlib import Path

from musicpipe import audio, manifests, paths

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
DEFAULT_SAMPLE = 20            # files decoded per split
DURATION_TOLERANCE = 0.05      # header or decoded vs listed duration: max(0.1 s, 5 %)
MIN_TOLERANCE_S = 0.1
MAX_NAMED = 5                  # problems spelled out in one message
HEADER_BYTES = 4096            # enough for the fmt/data chunks of any WAV libsndfile or musicpipe writes


class DataCheckError(ValueError):
    """Prepared data would not train (the message names the files and why)."""


def select(items: tp.Sequence[tp.Any], sample: tp.Optional[int], seed: int = 0,
           key: tp.Callable[[tp.Any], str] = str) -> tp.List[tp.Any]:
    """``sample`` of ``items`` (all when None or fewer), sorted by ``key`` first, chosen by ``random.Random(seed)``.

    Example:
        >>> select(["c", "a", "b"], 2, seed=0) == select(["a", "b", "c"], 2, seed=0)
        True
        >>> select(["b", "a"], None)
        ['a', 'b']
    """
    ordered = sorted(items, key=key)
    if sample is None or sample >= len(ordered):
        return ordered
    return random.Random(seed).sample(ordered, sample)


def listing(problems: tp.Sequence[str], limit: int = MAX_NAMED, sep: str = "; ") -> str:
    """The first ``limit`` problems and a count of the rest.

    >>> listing(["a", "b", "c"], 2)
    'a; b; and 1 more'
    """
    text = sep.join(problems[:limit])
    return text + (f"{sep}and {len(problems) - limit} more" if len(problems) > limit else "")


def _tolerance(seconds: float) -> float:
    return max(MIN_TOLERANCE_S, DURATION_TOLERANCE * seconds)


def header_info(path: PathLike, head: tp.Optional[bytes] = None) -> tp.Optional[tp.Dict[str, tp.Any]]:
    """Sample rate, channels, frames and expected file size from a WAV or FLAC header; None for other formats.

    Raises:
        ValueError: the file claims to be WAV/FLAC (by its suffix) but its header is not one (the reason).

    Example:
        >>> import tempfile, numpy as np, soundfile as sf
        >>> p = Path(tempfile.mkdtemp()) / "a.wav"; sf.write(p, np.zeros(800), 8000, subtype="PCM_16")
        >>> {k: v for k, v in header_info(p).items() if k != "min_size"}
        {'format': 'wav', 'sample_rate': 8000, 'channels': 1, 'frames': 800}
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".wav", ".flac"):
        return None
    if head is None:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    if suffix == ".flac":
        if head[:4] != b"fLaC" or len(head) < 42:
            raise ValueError("not a readable audio file (no fLaC/STREAMINFO header)")
        info = int.from_bytes(head[18:26], "big")  # 20 bits rate, 3 channels-1, 5 bps-1, 36 total samples
        rate, channels, frames = info >> 44, ((info >> 41) & 0x7) + 1, info & 0xFFFFFFFFF
        if rate <= 0:
            raise ValueError("FLAC STREAMINFO gives no sample rate")
        return {"format": "flac", "sample_rate": rate, "channels": channels, "frames": frames or None,
                "min_size": 42}
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a readable audio file (no RIFF/WAVE header)")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            if size < 16 or pos + 24 > len(head):
                raise ValueError("WAV fmt chunk is truncated")
            _, channels, rate, _, block_align, _ = struct.unpack("<HHIIHH", head[pos + 8:pos + 24])
            fmt = (channels, rate, block_align)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            channels, rate, block_align = fmt
            if rate <= 0 or block_align <= 0:
                raise ValueError(f"WAV fmt chunk is invalid (rate {rate}, block align {block_align})")
            return {"format": "wav", "sample_rate": rate, "channels": channels, "frames": size // block_align,
                    "min_size": pos + 8 + size}
        pos += 8 + size + (size & 1)
    raise ValueError("WAV header has no data chunk" if fmt else "WAV header has no fmt chunk")


def check_file(rec: tp.Any, split: str = "train") -> tp.Optional[str]:
    """The problem with one manifest entry (exists, header vs listed duration and rate, sidecar), None if fine."""
    path = rec.path
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        return f"{path}: file not found (listed in {split})"
    except OSError as exc:
        return f"{path}: unreadable ({exc.strerror or exc}) (listed in {split})"
    if size == 0:
        return f"{path}: empty file (listed in {split})"
    try:
        info = header_info(path, head)
    except ValueError as exc:
        return f"{path}: {exc} (listed in {split})"
    if info is not None:
        if size < info["min_size"]:
            return f"{path}: truncated: {size} bytes, its header says {info['min_size']} (listed in {split})"
        if info["frames"]:
            seconds = info["frames"] / info["sample_rate"]
            if abs(seconds - rec.duration) > _tolerance(rec.duration):
                return f"{path}: header says {seconds:.2f} s but the {split} manifest lists {rec.duration:.2f} s"
    side = Path(rec.info_path) if getattr(rec, "info_path", None) else Path(path).with_suffix(".json")
    try:
        text = side.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{side}: sidecar unreadable ({exc.strerror or exc})"
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return f"{side}: sidecar is not valid JSON ({' '.join(str(exc).split())})"
    if not isinstance(data, dict):
        return f"{side}: sidecar is not a JSON object (a {type(data).__name__})"
    return None


def decode_sample(records: tp.Mapping[str, tp.Sequence[tp.Any]], sample: tp.Optional[int] = DEFAULT_SAMPLE,
                  seed: int = 0) -> tp.Tuple[tp.List[str], tp.Dict[str, tp.Dict[str, tp.Any]], tp.Dict[str, int]]:
    """Decode a seeded sample of each split's files: ``(problems, probes of the good ones, checked per split)``.

    A file fails when it is missing, does not decode, or decodes to a duration more than max(0.1 s, 5 %) away
    from what its manifest line says (a truncated or replaced file).
    """
    problems: tp.List[str] = []
    probes: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    checked = {split: 0 for split in records}
    for split, recs in records.items():
        for rec in select(recs, sample, seed, key=lambda r: r.path) if sample != 0 else []:
            checked[split] += 1
            path = Path(rec.path)
            if not path.is_file():
                problems.append(f"{rec.path}: file not found (listed in {split})")
                continue
            try:
                info = audio.probe(path)
                rate = info["sample_rate"] or 32000
                frames = sum(len(block) for block in audio.stream_mono(path, rate, block_seconds=30.0))
            except audio.AudioDecodeError as exc:
                problems.append(f"{exc} (listed in {split})")
                continue
            decoded = frames / rate
            if abs(decoded - rec.duration) > _tolerance(rec.duration):
                problems.append(f"{rec.path}: decodes to {decoded:.2f} s but the {split} manifest lists "
                                f"{rec.duration:.2f} s (truncated or replaced file?)")
                continue
            probes[rec.path] = info
    return problems, probes, checked


@dataclasses.dataclass
class DataCheck:
    """What :func:`check_records` found."""

    files: int                                   # manifest entries checked (header and sidecar)
    decoded: int                                 # of which decoded
    problems: tp.List[str]                       # one line per bad file
    seconds: float
    probes: tp.Dict[str, tp.Dict[str, tp.Any]] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self, limit: int = MAX_NAMED, sep: str = "; ") -> str:
        """One sentence: how many files are unusable and which (the first ``limit``)."""
        if self.ok:
            return (f"{self.files} file(s) exist with headers matching their manifest lines and valid sidecars; "
                    f"{self.decoded} decoded")
        return f"{len(self.problems)} of {self.files} file(s) unusable: " + listing(self.problems, limit, sep)


def check_records(records: tp.Mapping[str, tp.Sequence[tp.Any]], sample: tp.Optional[int] = DEFAULT_SAMPLE,
                  seed: int = 0) -> DataCheck:
    """Every entry's file and sidecar (:func:`check_file`), then a decoded sample (:func:`decode_sample`).

    Args:
        records: manifest records per split (``{"train": [...], "valid": [...]}``).
        sample: files decoded per split (None: all, 0: none).
        seed: which ones (``random.Random(seed)``).
    """
    start = time.perf_counter()
    problems: tp.List[str] = []
    bad: tp.Set[str] = set()
    total = sum(len(r) for r in records.values())
    from tqdm import tqdm

    with tqdm(total=total, desc="data check", unit="file", disable=total < 20000, leave=False) as bar:
        for split, recs in records.items():
            for rec in recs:
                problem = check_file(rec, split)
                if problem:
                    problems.append(problem)
                    bad.add(rec.path)
                bar.update()
    good = {split: [r for r in recs if r.path not in bad] for split, recs in records.items()}
    decode_problems, probes, checked = decode_sample(good, sample, seed)
    problems.extend(decode_problems)
    result = DataCheck(files=total, decoded=sum(checked.values()), problems=problems,
                       seconds=time.perf_counter() - start, probes=probes)
    logger.info("data check: %d file(s), %d decoded, %d problem(s) in %.2f s", result.files, result.decoded,
                len(problems), result.seconds)
    return result


def check_dataset(dataset: str, workspace: tp.Optional[PathLike] = None, sample: tp.Optional[int] = DEFAULT_SAMPLE,
                  seed: int = 0) -> DataCheck:
    """:func:`check_records` on the dataset's train and valid manifests (``<ws>/data/<dataset>/egs/<split>``).

    Raises:
        manifests.ManifestError: a manifest is missing, invalid or empty.
    """
    egs = paths.dataset_dir(dataset, workspace) / "egs"
    records = {split: manifests.read_nonempty_manifest(egs / split) for split in ("train", "valid")}
    return check_records(records, sample, seed)


def require_ok(dataset: str, workspace: tp.Optional[PathLike] = None, sample: tp.Optional[int] = DEFAULT_SAMPLE,
               seed: int = 0) -> DataCheck:
    """:func:`check_dataset`, raising :class:`DataCheckError` (one line per bad file, a count past 20) on problems."""
    result = check_dataset(dataset, workspace, sample, seed)
    if not result.ok:
        raise DataCheckError(f"dataset {dataset!r}: {len(result.problems)} of {result.files} file(s) unusable, "
                             "training not started:\n  " + listing(result.problems, 20, "\n  ")
                             + "\nrepair them with `musicpipe prepare ... --verify` (re-converts damaged segments) or fix them; "
                               "training_checks/preflight.py checks everything else")
    return result


def check_checkpoint(path: PathLike) -> tp.Optional[str]:
    """The problem with a ``torch.save`` checkpoint that a cheap look finds (missing, empty, truncated), or None.

    ``torch.save`` writes a zip archive whose directory sits at the end: a truncated copy has none.

    >>> check_checkpoint("/nonexistent/checkpoint.th")
    '/nonexistent/checkpoint.th: missing'
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return f"{p}: missing"
    except OSError as exc:
        return f"{p}: unreadable ({exc.strerror or exc})"
    if size == 0:
        return f"{p}: empty file"
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"{p}: truncated or corrupt ({size} bytes; {exc}): retrain or copy it again"
    if not any(n.endswith("data.pkl") for n in names):
        return f"{p}: not a torch checkpoint (no data.pkl in its archive)"
    return None


def check_writable(folder: PathLike) -> tp.Optional[str]:
    """The problem with writing under ``folder`` (read-only file system, permissions), or None.

    Writes and removes a small temp file: permission bits alone miss a read-only mount, and root ignores them.
    """
    p = Path(folder)
    probe_dir = p
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    name = probe_dir / f".musicpipe-write-test-{os.getpid()}"
    try:
        with open(name, "wb") as f:
            f.write(b"x")
        os.unlink(name)
    except OSError as exc:
        return f"{p}: not writable ({exc.strerror or exc}): checkpoints and manifests cannot be written there"
    return None

"""The LM token cache: every segment of a dataset encoded once by a codec, for MusicGen to train from tokens.

Without it, every training step decodes 10 s WAV segments and runs the frozen EnCodec encoder on them, every
epoch. With it, the LM reads 2-byte tokens: 4 codebooks x 50 frames/s x 2 B = 400 B per second of audio
(1.44 MB per audio hour, against 230 MB of 32 kHz float WAV).

The store (one per dataset and codec, epoch-independent)::

    <ws>/data/<dataset>/tokens/<codec id>/
        codec.json             the codec: reference, weights hash, codebooks, cardinality, rates
        train.tokens.npy       int16 [frames, codebooks], every train segment's frames one after another
        train.index.json       per segment: path, identity (size, mtime), first frame, frame count, samples
        valid.tokens.npy / valid.index.json
        COMPLETE.json          written last: the manifests' content hashes the store was built from
        pending/               chunks of a build in progress (a killed build resumes from them)

``<codec id>`` is the codec's name plus a hash of its weights, so a changed codec (more epochs on the same
XP, another release) gets a new store and a store never mixes two codecs. One ``.npy`` array per split,
memory-mapped by readers: a crop is one contiguous slice (``[frames, K]`` rows), no per-segment files for the
file system to hold (FMA large: ~320k segments), no decoding step, and numpy's own format (no new
dependency). Files are written to temporary names and renamed; ``COMPLETE.json`` is written last.

Example:
    >>> from musicpipe import token_cache, training
    >>> info = training.resolve_codec("latest", "synthetic_demo")                    # doctest: +SKIP
    >>> s = token_cache.build_store(info, "synthetic_demo")                           # doctest: +SKIP
    >>> s.path, s.segments, s.encoded                                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import typing as tp
from pathlib import Path

import numpy as np

from musicpipe import atomic, manifests, paths

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SPLITS = ("train", "valid")
VERSION = 1
MARKER = "COMPLETE.json"
CODEC_FILE = "codec.json"
ENV = "MUSICPIPE_TOKEN_CACHE"  # the store a Dora process trains from (musicpipe.dora_entry.token_cache_hook)


class TokenCacheError(ValueError):
    """A store cannot be built or used (the message names the store or the file and why)."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`build_store` did."""

    path: Path
    segments: int  # in both splits
    encoded: int  # encoded by this call (0: nothing new)
    reused: int  # taken from the existing store or from a killed build's chunks
    frames: int
    bytes: int  # of the token arrays
    seconds: float
    audio_hours: float
    rewritten: bool = True  # False: the store was complete and current; no file was written

    def line(self) -> str:
        what = "up to date, nothing written" if not self.rewritten else f"{self.encoded} encoded, {self.reused} reused"
        per_hour = self.bytes / self.audio_hours / 1e6 if self.audio_hours else 0.0
        return (f"cache-tokens: {self.segments} segments ({what}), {self.frames} frames, {self.bytes / 1e6:.2f} MB "
                f"({per_hour:.2f} MB per audio hour), {self.seconds:.1f} s -> {self.path}")


# ---------------------------------------------------------------------------------------------- identities

def segment_key(path: PathLike) -> str:
    """A segment's identity: its path, size and modification time (prepare rewrites change the last two).

    Cheap (one ``stat``), so a store can be checked against 100k segments in about a second.
    """
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def manifest_keys(dataset: str, split: str, workspace: tp.Optional[PathLike] = None) -> tp.List[tp.Tuple[str, str, float]]:
    """``(path, key, duration)`` of every segment of a split's manifest; TokenCacheError naming a missing file."""
    egs = paths.dataset_dir(dataset, workspace) / "egs" / split
    try:
        records = manifests.read_nonempty_manifest(egs)
    except manifests.ManifestError as exc:
        raise TokenCacheError(f"{exc}; prepare the dataset {dataset!r} first") from None
    out = []
    for r in records:
        try:
            out.append((r.path, segment_key(r.path), float(r.duration)))
        except OSError as exc:
            raise TokenCacheError(f"{r.path}: listed in {egs}/data.jsonl but unreadable ({exc.strerror or exc})") \
                from None
    return out


def keys_hash(keys: tp.Iterable[str]) -> str:
    """The content hash of a split: its segments' identities, in manifest order.

    >>> keys_hash(["a|1|2"]) == keys_hash(["a|1|2"]) != keys_hash(["a|1|3"])
    True
    """
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def weights_hash(model: tp.Any) -> str:
    """A hash of a model's weights (every tensor of its ``state_dict``, names and bytes)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def codec_label(ref: str) -> str:
    """A folder-safe name for a codec reference (a signature, a hub id, a folder).

    >>> codec_label("facebook/encodec_32khz"), codec_label("7138122d"), codec_label("/pods/my export/")
    ('facebook_encodec_32khz', '7138122d', 'my_export')
    """
    ref = str(ref).rstrip("/")
    if ref.startswith("/") or ref.startswith("~") or ref.startswith("."):
        ref = Path(ref).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ref).strip("_") or "codec"


def store_dir(dataset: str, codec_id: str, workspace: tp.Optional[PathLike] = None) -> Path:
    return paths.dataset_dir(dataset, workspace) / "tokens" / codec_id


# ---------------------------------------------------------------------------------------------- the codec

def load_codec(checkpoint: str, workspace: tp.Optional[PathLike] = None, device: tp.Optional[str] = None) -> tp.Any:
    """The compression model exactly as MusicGen training loads it (``compression_model_checkpoint``).

    AudioCraft's own ``CompressionSolver.model_from_checkpoint``: the codec XP's best state for ``//sig/<sig>``,
    ``CompressionModel.get_pretrained`` for ``//pretrained/<id or folder>``. Eval mode.
    """
    from musicpipe import audiocraft_env

    audiocraft_env.activate(workspace)
    audiocraft_env.enable_checkpoint_loading()
    from audiocraft import train
    from audiocraft.solvers.compression import CompressionSolver

    train.main.dora.dir = audiocraft_env.hydra_safe_dora_dir(workspace)  # where AudioCraft resolves //sig/<sig>

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = CompressionSolver.model_from_checkpoint(checkpoint, device=device)
    except (AssertionError, OSError, RuntimeError) as exc:
        raise TokenCacheError(f"codec {checkpoint}: cannot load ({type(exc).__name__}: {exc})") from None
    return model.eval()


def codec_meta(model: tp.Any, ref: str) -> tp.Dict[str, tp.Any]:
    """What a store records of its codec (and what a reader checks against the codec it trains with)."""
    sample_rate = int(model.sample_rate)
    frame_rate = float(model.frame_rate)
    return {"ref": ref, "weights": weights_hash(model), "n_q": int(model.num_codebooks),
            "card": int(model.cardinality), "sample_rate": sample_rate, "channels": int(model.channels),
            "frame_rate": frame_rate, "hop": int(round(sample_rate / frame_rate))}


def codec_id(meta: tp.Mapping[str, tp.Any]) -> str:
    return f"{codec_label(meta['ref'])}-{meta['weights'][:10]}"


# ---------------------------------------------------------------------------------------------- reading

@dataclasses.dataclass
class SplitIndex:
    """One split of a store: the token array (memory-mapped) and where each segment's frames are."""

    tokens: np.ndarray  # int16 [frames, K]
    paths: tp.List[str]
    keys: tp.List[str]
    offsets: np.ndarray  # int64 [n + 1]
    samples: np.ndarray  # int64 [n]: audio samples of each segment
    _by_path: tp.Optional[tp.Dict[str, int]] = None

    def position(self, path: str) -> int:
        if self._by_path is None:
            self._by_path = {p: i for i, p in enumerate(self.paths)}
        try:
            return self._by_path[path]
        except KeyError:
            raise TokenCacheError(f"{path}: not in the token store (rebuild it: `musicpipe cache-tokens`)") from None

    def segment(self, i: int) -> np.ndarray:
        """``[frames, K]`` tokens of segment ``i`` (a view into the memory map)."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.paths)


def _read_index(folder: Path, split: str, mmap: bool = True) -> SplitIndex:
    index = json.loads((folder / f"{split}.index.json").read_text())
    tokens = np.load(folder / f"{split}.tokens.npy", mmap_mode="r" if mmap else None)
    return SplitIndex(tokens=tokens, paths=index["paths"], keys=index["keys"],
                      offsets=np.asarray(index["offsets"], dtype=np.int64),
                      samples=np.asarray(index["samples"], dtype=np.int64))


@dataclasses.dataclass
class Store:
    """A complete store: its codec, its marker and its splits."""

    path: Path
    codec: tp.Dict[str, tp.Any]
    marker: tp.Dict[str, tp.Any]

    @classmethod
    def open(cls, path: PathLike) -> "Store":
        path = Path(path)
        marker = path / MARKER
        if not marker.is_file():
            raise TokenCacheError(f"{path}: not a complete token store ({MARKER} missing: build it with "
                                  "`musicpipe cache-tokens`)")
        try:
            return cls(path=path, codec=json.loads((path / CODEC_FILE).read_text()),
                       marker=json.loads(marker.read_text()))
        except (OSError, ValueError) as exc:
            raise TokenCacheError(f"{path}: unreadable token store ({exc})") from None

    def split(self, split: str) -> SplitIndex:
        return _read_index(self.path, split)

    def check_codec(self, meta: tp.Mapping[str, tp.Any]) -> None:
        """TokenCacheError unless ``meta`` (:func:`codec_meta` of a loaded codec) is the store's codec."""
        for key in ("weights", "n_q", "card", "sample_rate", "hop"):
            if self.codec.get(key) != meta.get(key):
                raise TokenCacheError(f"{self.path}: encoded with codec {self.codec.get('ref')} ({key}="
                                      f"{self.codec.get(key)}), not with {meta.get('ref')} ({key}={meta.get(key)})")

    def stale_splits(self, dataset: str, workspace: tp.Optional[PathLike] = None) -> tp.List[str]:
        """The splits whose manifest (or segment files) changed since the store was built."""
        stale = []
        for split in SPLITS:
            keys = [k for _p, k, _d in manifest_keys(dataset, split, workspace)]
            if (self.marker.get("splits") or {}).get(split, {}).get("sha") != keys_hash(keys):
                stale.append(split)
        return stale


def find_store(dataset: str, workspace: tp.Optional[PathLike] = None,
               codec_ref: tp.Optional[str] = None) -> tp.List[Path]:
    """Complete stores of a dataset (of one codec reference's label when given), newest first."""
    root = paths.dataset_dir(dataset, workspace) / "tokens"
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if (d / MARKER).is_file()
             and (codec_ref is None or d.name.rsplit("-", 1)[0] == codec_label(codec_ref))]
    return sorted(found, key=lambda d: (d / MARKER).stat().st_mtime, reverse=True)


# ---------------------------------------------------------------------------------------------- building

class _Segments:
    """Decodes segments for the encoder (a torch Dataset; ``num_workers`` processes decode in parallel)."""

    def __init__(self, items: tp.Sequence[tp.Tuple[int, str]], sample_rate: int, channels: int):
        self.items = list(items)
        self.sample_rate = sample_rate
        self.channels = channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tp.Tuple[int, tp.Any]:
        from audiocraft.data.audio import audio_read
        from audiocraft.data.audio_utils import convert_audio

        n, path = self.items[i]
        try:
            wav, sr = audio_read(path)  # what AudioCraft's dataset reads for training
        except Exception as exc:  # noqa: BLE001 - any decode failure names the file
            raise TokenCacheError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from None
        return n, convert_audio(wav, sr, self.sample_rate, self.channels)


def _first(batch: tp.List[tp.Any]) -> tp.Any:
    return batch[0]


class _Chunks:
    """A build's finished work, in ``pending/chunk-<n>.{npy,json}`` (the ``.json`` is written last)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.found: tp.Dict[str, tp.Tuple[Path, int, int, int]] = {}  # key -> (npy, start, stop, samples)
        if folder.is_dir():
            for meta_file in sorted(folder.glob("chunk-*.json")):
                try:
                    meta = json.loads(meta_file.read_text())
                except ValueError:
                    continue
                npy = meta_file.with_suffix(".npy")
                if not npy.is_file():
                    continue
                for key, start, stop, samples in zip(meta["keys"], meta["starts"], meta["stops"], meta["samples"]):
                    self.found[key] = (npy, start, stop, samples)
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.json")), default=0) \
            if folder.is_dir() else 1
        self._cache: tp.Dict[Path, np.ndarray] = {}
        self.buffer: tp.List[tp.Tuple[str, np.ndarray, int]] = []

    def get(self, key: str) -> tp.Optional[tp.Tuple[np.ndarray, int]]:
        hit = self.found.get(key)
        if hit is None:
            return None
        npy, start, stop, samples = hit
        if npy not in self._cache:
            self._cache[npy] = np.load(npy, mmap_mode="r")
        return self._cache[npy][start:stop], samples

    def add(self, key: str, tokens: np.ndarray, samples: int) -> None:
        self.buffer.append((key, tokens, samples))

    def flush(self) -> None:
        if not self.buffer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{self._next:06d}"
        self._next += 1
        arrays = [t for _k, t, _s in self.buffer]
        stops = np.cumsum([len(a) for a in arrays]).tolist()
        starts = [0] + stops[:-1]
        npy = self.folder / f"{name}.npy"
        with atomic.atomic_open(npy, "wb") as f:
            np.save(f, np.concatenate(arrays))
        atomic.write_json(self.folder / f"{name}.json", {"keys": [k for k, _t, _s in self.buffer], "starts": starts,
                                                          "stops": stops, "samples": [s for _k, _t, s in self.buffer]})
        for (key, _t, samples), start, stop in zip(self.buffer, starts, stops):
            self.found[key] = (npy, start, stop, samples)
        self.buffer = []


def _previous(folder: Path, split: str) -> tp.Optional[SplitIndex]:
    try:
        return _read_index(folder, split)
    except (OSError, ValueError, KeyError):
        return None


def build_store(codec_ref: str, dataset: str, workspace: tp.Optional[PathLike] = None, *,
                checkpoint: tp.Optional[str] = None, device: tp.Optional[str] = None, batch_size: int = 16,
                num_workers: int = 0, chunk_segments: int = 256, progress: bool = True,
                model: tp.Any = None) -> Summary:
    """Encode every segment of both splits of ``dataset`` with a codec, once, into its token store.

    ``codec_ref`` names the codec (a codec XP signature or a release: it names the store); ``checkpoint`` is
    what AudioCraft loads (``//sig/<sig>`` or ``//pretrained/<id or folder>``; default ``//sig/<codec_ref>``).
    Re-running with nothing new writes nothing; new or changed segments (path, size or modification time) are
    encoded and the rest reused; a killed build resumes from its finished chunks (``chunk_segments`` segments
    each); a codec with other weights gets another store. ``batch_size`` segments of equal length are encoded
    at once (on CUDA when there is one); ``num_workers`` processes decode. ``model``: an already loaded codec.
    """
    t0 = time.monotonic()
    splits = {s: manifest_keys(dataset, s, workspace) for s in SPLITS}
    if model is None:
        model = load_codec(checkpoint or f"//sig/{codec_ref}", workspace, device)
    meta = codec_meta(model, codec_ref)
    if meta["card"] > np.iinfo(np.int16).max:
        raise TokenCacheError(f"codec {codec_ref}: {meta['card']} codes do not fit the store's int16 tokens")
    folder = store_dir(dataset, codec_id(meta), workspace)
    hashes = {s: keys_hash(k for _p, k, _d in items) for s, items in splits.items()}
    audio_hours = sum(d for items in splits.values() for _p, _k, d in items) / 3600
    total = sum(len(v) for v in splits.values())
    marker_path = folder / MARKER
    if marker_path.is_file():
        try:
            old = json.loads(marker_path.read_text())
        except ValueError:
            old = {}
        if old.get("version") == VERSION and all((old.get("splits") or {}).get(s, {}).get("sha") == hashes[s]
                                                 for s in SPLITS):
            frames = sum(int(old["splits"][s]["frames"]) for s in SPLITS)
            size = sum((folder / f"{s}.tokens.npy").stat().st_size for s in SPLITS)
            summary = Summary(folder, total, 0, total, frames, size, time.monotonic() - t0, audio_hours,
                              rewritten=False)
            logger.info("%s", summary.line())
            return summary

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / CODEC_FILE).is_file():
        atomic.write_json(folder / CODEC_FILE, meta, indent=1)
    chunks = _Chunks(folder / "pending")
    previous = {s: _previous(folder, s) for s in SPLITS}
    prev_pos = {s: ({k: i for i, k in enumerate(p.keys)} if p is not None else {}) for s, p in previous.items()}

    def known(split: str, key: str) -> bool:
        return key in prev_pos[split] or key in chunks.found

    todo = [(path, key) for s in SPLITS for path, key, _d in splits[s] if not known(s, key)]
    todo = list(dict.fromkeys(todo))  # a segment listed in both splits is encoded once
    encoded = 0
    if todo:
        logger.info("encoding %d of %d segments of %s with codec %s into %s", len(todo), total, dataset, codec_ref,
                    folder)
        encoded = _encode(model, todo, chunks, meta, batch_size, num_workers, chunk_segments, progress)
    frames_total = 0
    size_total = 0
    marker: tp.Dict[str, tp.Any] = {"version": VERSION, "dataset": dataset, "codec": codec_id(meta), "splits": {}}
    for split in SPLITS:
        frames_total_split, size = _write_split(folder, split, splits[split], previous[split], prev_pos[split],
                                                chunks, meta["n_q"])
        frames_total += frames_total_split
        size_total += size
        marker["splits"][split] = {"sha": hashes[split], "segments": len(splits[split]), "frames": frames_total_split}
    for p in previous.values():
        if p is not None:
            del p.tokens  # release the old memory map before its file is replaced
    marker["built"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic.write_json(marker_path, marker, indent=1)
    shutil.rmtree(folder / "pending", ignore_errors=True)
    summary = Summary(folder, total, encoded, total - encoded, frames_total, size_total, time.monotonic() - t0,
                      audio_hours)
    logger.info("%s", summary.line())
    return summary


def _encode(model: tp.Any, todo: tp.Sequence[tp.Tuple[str, str]], chunks: _Chunks, meta: tp.Mapping[str, tp.Any],
            batch_size: int, num_workers: int, chunk_segments: int, progress: bool) -> int:
    """Encode ``todo`` (path, key) into ``chunks``; equal-length segments share a batch (exact: no padding)."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    keys = [k for _p, k in todo]
    data = _Segments([(i, p) for i, (p, _k) in enumerate(todo)], meta["sample_rate"], meta["channels"])
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=num_workers, collate_fn=_first)
    groups: tp.Dict[int, tp.List[tp.Tuple[int, tp.Any]]] = {}
    done = 0

    def encode(group: tp.List[tp.Tuple[int, tp.Any]]) -> None:
        nonlocal done
        wav = torch.stack([w for _i, w in group]).to(device)
        with torch.no_grad():
            codes, scale = model.encode(wav)
        if scale is not None:
            raise TokenCacheError("scaled compression models cannot train an LM (AudioCraft refuses them too)")
        codes = codes.to("cpu", torch.int16).numpy()  # [B, K, T]
        for (i, w), c in zip(group, codes):
            chunks.add(keys[i], np.ascontiguousarray(c.T), int(w.shape[-1]))
        done += len(group)
        if len(chunks.buffer) >= chunk_segments:
            chunks.flush()

    with tqdm(total=len(todo), desc="cache-tokens", unit="seg", disable=not progress) as bar:
        for i, wav in loader:
            group = groups.setdefault(int(wav.shape[-1]), [])
            group.append((i, wav))
            if len(group) >= batch_size:
                encode(groups.pop(int(wav.shape[-1])))
                bar.update(batch_size)
        for group in list(groups.values()):
            encode(group)
            bar.update(len(group))
    chunks.flush()
    return done


def _write_split(folder: Path, split: str, items: tp.Sequence[tp.Tuple[str, str, float]],
                 previous: tp.Optional[SplitIndex], prev_pos: tp.Mapping[str, int], chunks: _Chunks,
                 n_q: int) -> tp.Tuple[int, int]:
    """Write ``<split>.tokens.npy`` and ``<split>.index.json`` in manifest order; returns (frames, bytes)."""
    sources = []
    for path, key, _d in items:
        if key in prev_pos and previous is not None:
            i = prev_pos[key]
            sources.append((previous.segment(i), int(previous.samples[i])))
        else:
            hit = chunks.get(key)
            if hit is None:  # pragma: no cover - _encode covers every key not in the previous store
                raise TokenCacheError(f"{path}: was not encoded")
            sources.append(hit)
    lengths = [len(t) for t, _s in sources]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    target = folder / f"{split}.tokens.npy"
    with atomic.atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(int(offsets[-1]), n_q))
        for (tokens, _s), start in zip(sources, offsets[:-1]):
            out[start:start + len(tokens)] = tokens
        out.flush()
        del out
    atomic.write_json(folder / f"{split}.index.json", {
        "version": VERSION, "paths": [p for p, _k, _d in items], "keys": [k for _p, k, _d in items],
        "offsets": offsets.tolist(), "samples": [s for _t, s in sources]})
    return int(offsets[-1]), target.stat().st_size


# ---------------------------------------------------------------------------------------------- training crops

def crop(tokens: np.ndarray, samples: int, seek_time: float, segment_duration: float, sample_rate: int,
         frame_rate: float) -> tp.Tuple[np.ndarray, float, int, int]:
    """A frame-aligned crop of a segment's ``[frames, K]`` tokens for one training example.

    Returns ``(tokens [K, T], seek_time, n_samples, total_samples)``: ``T`` is the frames of
    ``segment_duration``; the crop starts at the frame where ``seek_time`` falls (so ``seek_time`` is rounded
    down to a frame), is zero-padded past the segment's end, and ``n_samples`` counts the real audio samples in
    it (AudioCraft's padding mask uses it, as for audio).

    >>> t = np.arange(10, dtype=np.int16)[:, None].repeat(2, 1)        # 10 frames, 2 codebooks, hop 4
    >>> c, seek, n, total = crop(t, 40, 0.5, 1.0, 40, 10.0)
    >>> c.shape, c[0].tolist(), seek, n, total
    ((2, 10), [5, 6, 7, 8, 9, 0, 0, 0, 0, 0], 0.5, 20, 40)
    """
    hop = sample_rate / frame_rate
    total_samples = int(segment_duration * sample_rate)
    frames = int(math.ceil(total_samples / hop))
    first = min(int(seek_time * frame_rate), max(0, len(tokens) - 1))
    part = np.asarray(tokens[first:first + frames])
    out = np.zeros((tokens.shape[1], frames), dtype=np.int16)
    out[:, :len(part)] = part.T
    start = int(round(first * hop))
    n_samples = max(0, min(total_samples, samples - start))
    return out, first / frame_rate, n_samples, total_samples


# ---------------------------------------------------------------------------------------------- checking

def store_state(codec_ref: str, dataset: str, workspace: tp.Optional[PathLike] = None, *,
                checkpoint: tp.Optional[str] = None, model: tp.Any = None,
                device: tp.Optional[str] = "cpu") -> tp.Dict[str, tp.Any]:
    """Does the store of this codec (its current weights) match the dataset's manifests? For preflight.

    Returns ``{"state": ..., "path", "message", ...}`` with state ``current`` (complete, built from the
    manifests as they are), ``stale`` (complete, but segments were added, removed or rewritten since: ``train-lm``
    re-encodes only those), ``missing`` (``train-lm`` builds it first) or ``corrupt`` (its arrays do not match
    its index: delete the folder). Loads the codec (on ``device``) to hash its weights.
    """
    if model is None:
        model = load_codec(checkpoint or f"//sig/{codec_ref}", workspace, device)
    meta = codec_meta(model, codec_ref)
    folder = store_dir(dataset, codec_id(meta), workspace)
    segments = {s: len(manifest_keys(dataset, s, workspace)) for s in SPLITS}
    base = {"path": str(folder), "codec": codec_id(meta), "segments": sum(segments.values())}
    if not (folder / MARKER).is_file():
        older = [p.name for p in find_store(dataset, workspace, codec_ref)]
        note = f" (stores of other weights of this codec: {', '.join(older)})" if older else ""
        return {**base, "state": "missing", "message": f"no token store yet for codec {codec_ref} with these "
                f"weights: train-lm encodes the {sum(segments.values())} segments first into {folder}{note}"}
    store = Store.open(folder)
    try:
        store.check_codec(meta)
        for split in SPLITS:
            index = store.split(split)
            frames = int(store.marker["splits"][split]["frames"])
            if index.tokens.shape != (frames, meta["n_q"]) or int(index.offsets[-1]) != frames \
                    or len(index) != int(store.marker["splits"][split]["segments"]):
                raise TokenCacheError(f"{folder / (split + '.tokens.npy')}: holds {index.tokens.shape} tokens, its "
                                      f"index {frames} frames of {meta['n_q']} codebooks")
    except (TokenCacheError, OSError, ValueError, KeyError) as exc:
        return {**base, "state": "corrupt", "message": f"{exc}; delete {folder} and run `musicpipe cache-tokens`"}
    stale = store.stale_splits(dataset, workspace)
    frames = sum(int(store.marker["splits"][s]["frames"]) for s in SPLITS)
    if stale:
        return {**base, "state": "stale", "stale": stale, "frames": frames,
                "message": f"{folder}: the {' and '.join(stale)} manifest(s) changed since it was built (segments "
                           "added, removed or rewritten): train-lm re-encodes only those"}
    return {**base, "state": "current", "frames": frames,
            "message": f"{folder}: {base['segments']} segments, {frames} frames, matches codec {codec_ref} and both "
                       "manifests"}

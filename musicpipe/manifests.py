"""AudioCraft's data contract: manifest records, sidecar metadata, dset configs; all written atomically.

Example:
    >>> rec = AudioRecord(path="/ws/a.wav", duration=10.0, sample_rate=32000)
    >>> rec.to_dict()["info_path"] is None
    True
"""

from __future__ import annotations

import dataclasses
import json
import typing as tp
from pathlib import Path

from musicpipe import atomic, paths

# MusicInfo fields AudioCraft's MusicDataset requires as keys in every sidecar (keywords optional).
SIDECAR_FIELDS = ("title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "name",
                  "instrument")


@dataclasses.dataclass(frozen=True)
class AudioRecord:
    """One line of ``data.jsonl`` (AudioCraft's ``AudioMeta``)."""

    path: str
    duration: float
    sample_rate: int
    amplitude: tp.Optional[float] = None
    weight: tp.Optional[float] = None
    info_path: tp.Optional[str] = None

    def __post_init__(self) -> None:
        if not Path(self.path).is_absolute():
            raise ValueError(f"manifest paths must be absolute (Dora runs elsewhere): {self.path!r}")
        if not self.duration > 0:
            raise ValueError(f"{self.path}: duration must be positive, got {self.duration}")
        if self.sample_rate <= 0:
            raise ValueError(f"{self.path}: sample_rate must be positive, got {self.sample_rate}")

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return dataclasses.asdict(self)


def write_manifest(records: tp.Iterable[AudioRecord], egs_dir: tp.Union[str, Path]) -> Path:
    """Write ``<egs_dir>/data.jsonl`` sorted by path (a re-run gives identical bytes). A dataset's train/valid
    pair goes through :func:`write_manifests`, which replaces both as a unit."""
    return atomic.write_text(Path(egs_dir) / "data.jsonl", manifest_text(records))


GENERATIONS = ".egs"  # beside egs/: one folder per version of the train/valid pair, egs -> .egs/<version>
SPLITS = ("train", "valid")


def manifest_text(records: tp.Iterable[AudioRecord]) -> str:
    """``data.jsonl``'s content: one JSON object per line, sorted by path (a re-run gives identical bytes)."""
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in sorted(records, key=lambda r: r.path)]
    return "".join(line + "\n" for line in lines)


def write_manifests(records: tp.Mapping[str, tp.Iterable[AudioRecord]], egs: tp.Union[str, Path]) -> Path:
    """Replace a dataset's train and valid manifests as one unit: a reader sees the old pair or the new, never
    a new train with an old valid.

    ``egs`` (``<dataset>/egs``, what dset configs and every reader name) is a symbolic link to
    ``<dataset>/.egs/<version>/``, a folder holding both ``<split>/data.jsonl``; the version is a hash of their
    content. The new version's folder is written complete first, then the link is repointed in one rename. The
    previous version is kept (a reader may be in it), older ones are deleted. Unchanged content rewrites
    nothing. An ``egs`` folder of the earlier layout is moved into ``.egs/`` before the link replaces it.

    Example:
        >>> import os, tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> rec = AudioRecord(path="/ws/a.wav", duration=10.0, sample_rate=32000)
        >>> _ = write_manifests({"train": [rec], "valid": []}, root / "egs")
        >>> os.readlink(root / "egs").startswith(".egs/"), [len(read_manifest(root / "egs" / s)) for s in SPLITS]
        (True, [1, 0])
    """
    import hashlib
    import os
    import secrets
    import shutil

    egs = Path(egs)
    texts = {split: manifest_text(records.get(split, ())) for split in SPLITS}
    version = hashlib.blake2b("\0".join(texts[s] for s in SPLITS).encode("utf-8"), digest_size=6).hexdigest()
    store = egs.parent / GENERATIONS
    target = store / version
    relative = f"{GENERATIONS}/{version}"
    previous = os.readlink(egs) if egs.is_symlink() else None
    if not (target.is_dir() and all((target / s / "data.jsonl").is_file()
                                    and (target / s / "data.jsonl").read_text(encoding="utf-8") == texts[s]
                                    for s in SPLITS)):
        staging = store / f".{version}.{secrets.token_hex(4)}.tmp"
        try:
            for split in SPLITS:
                atomic.write_text(staging / split / "data.jsonl", texts[split])
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if previous != relative:
        if egs.exists() and not egs.is_symlink():  # the earlier layout: a real folder
            os.replace(egs, store / f"legacy-{secrets.token_hex(4)}")
        atomic.symlink(egs, relative, target_is_directory=True)
    keep = {version, Path(previous).name if previous else None}
    for old in store.iterdir():  # older versions; staging folders of writers killed more than an hour ago
        if old.name not in keep and (not old.name.startswith(".") or _age(old) > 3600):
            shutil.rmtree(old, ignore_errors=True)
    return egs


def _age(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def read_manifest(egs_dir: tp.Union[str, Path]) -> tp.List[AudioRecord]:
    path = Path(egs_dir) / "data.jsonl"
    with open(path, encoding="utf-8") as f:
        return [AudioRecord(**json.loads(line)) for line in f if line.strip()]


class ManifestError(ValueError):
    """A manifest is missing, unreadable or empty (the message names the file)."""


def read_nonempty_manifest(egs_dir: tp.Union[str, Path]) -> tp.List[AudioRecord]:
    """:func:`read_manifest`, raising :class:`ManifestError` when the file is missing, invalid or empty."""
    manifest = Path(egs_dir) / "data.jsonl"
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: missing")
    try:
        records = read_manifest(egs_dir)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"{manifest}: not a valid AudioCraft manifest ({exc})") from None
    if not records:
        raise ManifestError(f"{manifest}: empty, lists no audio file")
    return records


def keyword(value: tp.Optional[str]) -> tp.Optional[str]:
    """AudioCraft's genre normalisation (``info_audio_dataset.get_keyword``): stripped, lower case."""
    return value.strip().lower() or None if isinstance(value, str) and value not in ("", "None") else None


def known_genres(records: tp.Iterable[tp.Any]) -> tp.List[str]:
    """The genres (normalised as training saw them) in the sidecars of manifest ``records``; unreadable ones skipped."""
    import json

    found = set()
    for rec in records:
        try:
            info = json.loads(Path(rec.path).with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        genre = keyword(info.get("genre")) if isinstance(info, dict) else None
        if genre:
            found.add(genre)
    return sorted(found)


def sidecar(**fields: tp.Any) -> tp.Dict[str, tp.Any]:
    """A sidecar dict with every MusicInfo key present (None for unknown)."""
    unknown = set(fields) - set(SIDECAR_FIELDS)
    if unknown:
        raise ValueError(f"unknown sidecar fields: {sorted(unknown)}")
    return {key: fields.get(key) for key in SIDECAR_FIELDS}


# Keys AudioCraft's MusicDataset sets from the manifest over the sidecar's (``music_data.update(info_data)``),
# so a sidecar must not use them for anything else.
RESERVED_SIDECAR_KEYS = ("meta", "seek_time", "n_frames", "total_frames", "sample_rate", "channels", "audio_tokens",
                         "self_wav", "joint_embed")


def write_sidecar(audio_path: tp.Union[str, Path], info: tp.Mapping[str, tp.Any],
                  extra: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> Path:
    """``<audio>.json`` beside the audio file, where AudioCraft's MusicDataset looks for it.

    ``info`` holds MusicInfo fields (every one is written, None when absent); ``extra`` adds keys of our
    own (track id, album, source...), which ``MusicInfo.from_dict`` ignores. JSON-unfriendly values in
    ``extra`` are written as strings.

    Example:
        >>> import tempfile, json
        >>> p = write_sidecar(Path(tempfile.mkdtemp()) / "a.wav", {"genre": "rock"}, extra={"track_id": "a"})
        >>> json.loads(p.read_text())["track_id"], json.loads(p.read_text())["artist"] is None
        ('a', True)
    """
    data = sidecar(**info)
    if extra:
        clash = sorted(set(extra) & (set(SIDECAR_FIELDS) | set(RESERVED_SIDECAR_KEYS)))
        if clash:
            raise ValueError(f"extra sidecar keys clash with MusicInfo/AudioCraft keys: {clash}")
        data.update(extra)
    return atomic.write_json(Path(audio_path).with_suffix(".json"), data, ensure_ascii=False, indent=1, sort_keys=True,
                             default=str)


def dset_config_text(name: str, workspace: tp.Union[str, Path], sample_rate: int = 32000, channels: int = 1) -> str:
    """A dset config naming the dataset's egs folders through ``$MUSICPIPE_WORKSPACE``."""
    ws = str(paths.workspace_root(workspace)).replace("\\", "\\\\").replace("'", "\\'")
    # quoted: the interpolation grammar rejects spaces and non-ASCII characters in a bare default
    base = f"${{oc.env:MUSICPIPE_WORKSPACE,'{ws}'}}/data/{name}/egs"
    return (
        "# @package __global__\n\n"
        f"# Written by musicpipe for the dataset {name!r}; name it as dset=audio/{name}.\n"
        "datasource:\n"
        f"  max_sample_rate: {int(sample_rate)}\n"
        f"  max_channels: {int(channels)}\n"
        f"  train: {base}/train\n"
        f"  valid: {base}/valid\n"
        f"  evaluate: {base}/valid\n"
        f"  generate: {base}/valid\n"
    )


def write_dset_config(name: str, workspace: tp.Union[str, Path], sample_rate: int = 32000,
                      channels: int = 1) -> Path:
    """``<ws>/config/dset/audio/<name>.yaml`` (the SearchPathPlugin makes it ``dset=audio/<name>``)."""
    target = paths.workspace_config_dir(workspace) / "dset" / "audio" / f"{name}.yaml"
    return atomic.write_text(target, dset_config_text(name, workspace, sample_rate, channels))

"""The "folder" source: any local folder of audio files, with whatever metadata they carry.

Metadata for each file, later layers winning field by field:

1. embedded tags (ID3, Vorbis comments, FLAC, MP4): artist (or album artist), title, album, genre
   (several genres split on ``;``/``,``/``/``), mood, bpm, key, license, comment (kept in ``extra``);
2. a sidecar beside the audio, ``<file>.json`` (``song.mp3.json``) or ``song.json``, with MusicInfo or
   TrackInput keys (``keywords`` means ``tags``; unknown keys go to ``extra``);
3. a CSV (``metadata_csv``) with a ``path`` column (relative to the folder) or a ``file`` column (relative
   path or bare file name), and any of artist, title, album, genre, genres, tags, moods, description,
   license, instrument, split, bpm, key (other columns go to ``extra``); empty cells change nothing.

A file with no artist anywhere gets its parent folder's name as artist (not for files directly in the
folder), so the artist-disjoint split keeps a folder together. Track ids come from the relative path made
safe (``Café del Mar/01 ünïcode track.mp3`` -> ``Cafe_del_Mar__01_unicode_track``), with a short hash
when two paths would give the same id. Hidden files and folders (``.name``) are skipped.

Example:
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "Some Artist").mkdir()
    >>> sf.write(root / "Some Artist" / "Song 1.wav", np.zeros(8000, dtype="float32"), 8000)
    >>> [(t.track_id, t.artist) for t in scan_folder(root, progress=False)]
    [('Some_Artist__Song_1', 'Some Artist')]
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import typing as tp
import unicodedata
from pathlib import Path

from musicpipe import atomic, audio, paths
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks, safe_track_id
from musicpipe.sources.base import NAME, Option, Source, SourceError

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
EXTENSIONS = (".mp3", ".ogg", ".flac", ".wav", ".m4a", ".opus")
TAGS_CACHE = ".scan_tags.json"  # in the dataset folder: each file's tags with its size and mtime (re-runs open nothing)
_LIST_FIELDS = ("genres", "tags", "moods")
_TEXT_FIELDS = ("artist", "title", "album", "genre", "description", "license", "instrument", "split")
_TAG_KEYS: tp.Dict[str, tp.Tuple[str, ...]] = {
    "artist": ("artist", "album_artist", "albumartist", "album artist", "performer"),
    "title": ("title",),
    "album": ("album",),
    "genre": ("genre",),
    "moods": ("mood", "tmoo"),
    "license": ("license", "licence"),
    "bpm": ("bpm", "tbpm", "tmpo"),
    "key": ("initialkey", "key", "tkey"),
    "comment": ("comment", "description"),
}


def _split_list(value: tp.Any, pattern: str = r"[;,]") -> tp.List[str]:
    if value is None:
        return []
    items = re.split(pattern, value) if isinstance(value, str) else [str(v) for v in value if v is not None]
    return [s.strip() for s in items if s and s.strip()]


def _layer(raw: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Normalize one metadata layer: text fields stripped, list fields as lists, genre implies genres."""
    out: tp.Dict[str, tp.Any] = {}
    extra: tp.Dict[str, tp.Any] = {}
    for key, value in raw.items():
        key = str(key).strip().lower()
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key == "keywords":
            key = "tags"
        if key in _TEXT_FIELDS:
            out[key] = str(value).strip()
        elif key in _LIST_FIELDS:
            items = _split_list(value)
            if items:
                out[key] = items
        elif key == "extra" and isinstance(value, tp.Mapping):
            extra.update(value)
        elif key in ("path", "file", "name", "track_id"):
            continue
        else:
            extra[key] = value.strip() if isinstance(value, str) else value
    if "genre" in out and "genres" not in out:
        out["genres"] = _split_list(out["genre"], r"[;,/]")
        out["genre"] = out["genres"][0] if out["genres"] else out["genre"]
    elif "genres" in out and "genre" not in out:
        out["genre"] = out["genres"][0]
    if extra:
        out["extra"] = extra
    return out


def _tag_layer(tags: tp.Mapping[str, str]) -> tp.Dict[str, tp.Any]:
    raw: tp.Dict[str, tp.Any] = {}
    for field, keys in _TAG_KEYS.items():
        for key in keys:
            if tags.get(key):
                raw[field] = tags[key]
                break
    return _layer(raw)


def _merge(base: tp.Dict[str, tp.Any], layer: tp.Mapping[str, tp.Any]) -> None:
    for key, value in layer.items():
        if key == "extra":
            base.setdefault("extra", {}).update(value)
        else:
            base[key] = value


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _read_csv(path: PathLike) -> tp.List[tp.Dict[str, str]]:
    """The metadata CSV's rows (lower-cased column names); :class:`SourceError` naming the file when it is missing,
    not UTF-8 or not CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in fields and "file" not in fields:
                raise ValueError(f"{path}: the metadata CSV needs a 'path' or 'file' column; it has {fields}")
            return [{(k or "").strip().lower(): (v or "") for k, v in row.items() if k is not None} for row in reader]
    except FileNotFoundError:
        raise SourceError(f"{path}: the metadata CSV (--metadata-csv) does not exist") from None
    except IsADirectoryError:
        raise SourceError(f"{path}: the metadata CSV (--metadata-csv) is a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: the metadata CSV is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    except csv.Error as e:
        raise SourceError(f"{path}: not a readable CSV ({e})") from None


def _sidecar_for(file: Path) -> tp.Optional[Path]:
    for candidate in (file.with_name(file.name + ".json"), file.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def _list_audio(root: Path, extensions: tp.Sequence[str]) -> tp.List[Path]:
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _track_ids(rels: tp.List[str]) -> tp.Dict[str, str]:
    base = {rel: safe_track_id(os.path.splitext(rel)[0]) for rel in rels}
    groups: tp.Dict[str, tp.List[str]] = {}
    for rel, tid in base.items():
        groups.setdefault(tid.casefold(), []).append(rel)
    ids = {}
    for rel, tid in base.items():
        if len(groups[tid.casefold()]) > 1:
            import hashlib

            tid = f"{tid}-{hashlib.sha1(rel.encode('utf-8')).hexdigest()[:8]}"
        ids[rel] = tid
    return ids


def _file_tags(file: Path, cache: tp.Optional[tp.Dict[str, tp.Any]]) -> tp.Dict[str, str]:
    """``audio.probe(file)["tags"]`` ({} when unreadable), from ``cache`` when the file's size and mtime match."""
    key = str(file)
    fingerprint = None
    if cache is not None:
        try:
            st = file.stat()
            fingerprint = [int(st.st_size), int(st.st_mtime_ns)]
        except OSError:
            pass
        hit = cache.get(key)
        if fingerprint is not None and isinstance(hit, list) and len(hit) == 3 and hit[:2] == fingerprint:
            return dict(hit[2])
    try:
        tags = audio.probe(file)["tags"]
    except audio.AudioDecodeError as e:
        logger.debug("no tags from %s", e)
        tags = {}
    if cache is not None and fingerprint is not None:
        cache[key] = [*fingerprint, tags]
    return tags


def scan_folder(input_dir: PathLike, *, metadata_csv: tp.Optional[PathLike] = None,
                extensions: tp.Sequence[str] = EXTENSIONS, progress: bool = True,
                tags_cache: tp.Optional[tp.Dict[str, tp.Any]] = None) -> tp.List[TrackInput]:
    """Every audio file under ``input_dir`` (recursive, sorted by relative path) as a prepare input.

    Files whose tags cannot be read are still listed: prepare quarantines them with the decode reason.
    ``tags_cache`` (``{absolute path: [size, mtime_ns, tags]}``, updated in place) spares opening a file
    whose size and mtime are those cached; :func:`prepare_folder` keeps one per dataset.
    """
    from tqdm import tqdm

    root = Path(input_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    files = _list_audio(root, extensions)
    rels = [p.relative_to(root).as_posix() for p in files]
    ids = _track_ids(rels)
    csv_rows: tp.Dict[str, tp.Dict[str, str]] = {}
    by_name: tp.Dict[str, tp.List[str]] = {}
    for rel in rels:
        by_name.setdefault(_nfc(rel.rsplit("/", 1)[-1]), []).append(rel)
    if metadata_csv is not None:
        known = {_nfc(r): r for r in rels}
        unmatched = 0
        for row in _read_csv(metadata_csv):
            key = _nfc(re.sub(r"^(\./)+", "", (row.get("path") or row.get("file") or "").strip().replace("\\", "/")))
            rel = known.get(key)
            if rel is None and "/" not in key and len(by_name.get(key, [])) == 1:
                rel = by_name[key][0]
            if rel is None:
                unmatched += 1
                continue
            csv_rows[rel] = row
        if unmatched:
            logger.warning("%s: %d row(s) match no audio file under %s", metadata_csv, unmatched, root)
    tracks: tp.List[TrackInput] = []
    for file, rel in tqdm(list(zip(files, rels)), desc=f"scan {root.name}", unit="file",
                          disable=not progress or len(files) < 50):
        meta: tp.Dict[str, tp.Any] = {}
        _merge(meta, _tag_layer(_file_tags(file, tags_cache)))
        side = _sidecar_for(file)
        if side is not None:
            try:
                data = json.loads(side.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                _merge(meta, _layer(data))
            except (OSError, ValueError) as e:
                logger.warning("%s: ignored (%s)", side, e)
        if rel in csv_rows:
            _merge(meta, _layer(csv_rows[rel]))
        extra = dict(meta.get("extra", {}))
        extra["relative_path"] = rel
        artist = meta.get("artist")
        if not artist and "/" in rel:
            artist = rel.split("/")[-2]
            extra["artist_from"] = "folder"
        tracks.append(TrackInput(
            path=file, track_id=ids[rel], artist=artist, title=meta.get("title"), album=meta.get("album"),
            genre=meta.get("genre"), genres=meta.get("genres", []), tags=meta.get("tags", []),
            moods=meta.get("moods", []), instrument=meta.get("instrument"), description=meta.get("description"),
            license=meta.get("license"), split=meta.get("split"), extra=extra))
    logger.info("scan %s: %d audio file(s)", root, len(tracks))
    return tracks


def prepare_folder(input_dir: PathLike, name: str, workspace: tp.Optional[PathLike] = None,
                   config: PrepareConfig = PrepareConfig(), metadata_csv: tp.Optional[PathLike] = None,
                   force: bool = False, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """:func:`scan_folder` then :func:`musicpipe.prepare.prepare_tracks`; returns prepare's report.

    Each file's tags are cached in ``<ws>/data/<name>/.scan_tags.json`` with its size and mtime, so a re-run
    opens only new or changed files (``force`` reads them all again).

    Example (command line): ``musicpipe prepare folder --input ~/music --name my_music``.
    """
    root = Path(input_dir).expanduser().resolve()
    out = paths.dataset_dir(name, workspace).resolve() / "audio"
    if root == out or out in root.parents:
        raise ValueError(f"{input_dir} is prepare's own output folder for {name!r}: point at the source audio")
    cache_path = out.parent / TAGS_CACHE
    cache = {} if force else _read_tags_cache(cache_path)
    before = json.dumps(cache, sort_keys=True)
    tracks = scan_folder(root, metadata_csv=metadata_csv, progress=progress, tags_cache=cache)
    if not tracks:
        raise SourceError(f"{input_dir}: no audio files ({', '.join(EXTENSIONS)}) in it or its subfolders")
    report = prepare_tracks(tracks, name, workspace, config, force=force, progress=progress)
    listed = {str(t.path) for t in tracks}
    cache = {k: v for k, v in cache.items() if k in listed}  # the files of this scan only
    text = json.dumps(cache, sort_keys=True)
    if text != before:
        atomic.write_text(cache_path, text + "\n")
    return report


def _read_tags_cache(path: Path) -> tp.Dict[str, tp.Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def source_prepare(workspace: tp.Optional[PathLike] = None, config: tp.Optional[PrepareConfig] = None, *,
                   input_dir: tp.Optional[PathLike] = None, name: tp.Optional[str] = None,
                   metadata_csv: tp.Optional[PathLike] = None, force: bool = False,
                   progress: bool = True) -> tp.Dict[str, tp.Any]:
    """The registry's prepare step: :func:`prepare_folder`, refusing a missing folder or name."""
    if input_dir is None or not name:
        raise SourceError("source 'folder' needs input_dir (--input DIR), a folder of audio, and a dataset name "
                          "(--name NAME)")
    if not Path(input_dir).expanduser().is_dir():
        raise SourceError(f"input_dir (--input) {input_dir}: not a folder")
    return prepare_folder(input_dir, name, workspace, config or PrepareConfig(), metadata_csv=metadata_csv,
                          force=force, progress=progress)


SOURCE = Source(
    name="folder", help="any local folder of audio (recursive), with embedded tags, sidecar .json or a CSV",
    prepare=source_prepare, dataset=lambda o: o.get("name"),
    prepare_options=(
        Option("input_dir", "--input", "the folder of audio (recursive)", type=Path, metavar="DIR"),
        Option("metadata_csv", "--metadata-csv", "CSV overriding embedded tags", type=Path),
        NAME,
    ),
)

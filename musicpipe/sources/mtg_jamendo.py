"""MTG-Jamendo (github MTG/mtg-jamendo-dataset): chosen tar parts, SHA-256 verified, with tag metadata.

Archives: ``<base><dataset>/<type>/<dataset>_<type>-NN.tar`` (base https://cdn.freesound.org/mtg-jamendo/,
type ``audio`` or ``audio-low``), about 5 GB each, checked against the dataset's own SHA-256 list
(hashed in chunks) and extracted safely; the tar is removed after a verified extraction unless kept.
Metadata (``autotagging.tsv``, ``raw.meta.tsv``, the official artist-level splits) come from the
dataset repository's ``data/`` folder (``--metadata-mirror`` replaces its base).

Example:
    >>> from musicpipe.sources import mtg_jamendo
    >>> mtg_jamendo.parse_parts("0-2,7")
    [0, 1, 2, 7]
    >>> mtg_jamendo.download_mtg_jamendo([0, 1], variant="audio-low")   # doctest: +SKIP
    >>> mtg_jamendo.prepare_mtg_jamendo(variant="audio-low")           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
from pathlib import Path

from musicpipe import atomic, download, paths
from musicpipe.sources.base import KEEP_ARCHIVES, MIRROR, Option, Source, SourceError

logger = logging.getLogger(__name__)

NAME = "mtg_jamendo"
ARCHIVE_BASE = "https://cdn.freesound.org/mtg-jamendo/"
METADATA_BASE = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/master/"
VARIANTS = ("audio", "audio-low")
DATASETS = ("raw_30s", "autotagging_moodtheme")
TAGS_TSV = "data/autotagging.tsv"
META_TSV = "data/raw.meta.tsv"
SPLIT_TSV = "data/splits/{split}/autotagging-{part}.tsv"


class MTGError(SourceError):
    """An MTG-Jamendo step cannot proceed (names the file and the reason)."""


def parse_parts(spec: tp.Union[str, tp.Iterable[int]]) -> tp.List[int]:
    """``"0-3"``, ``"0,5,7-9"`` or a list -> sorted unique part numbers in 0..99."""
    if not isinstance(spec, str):
        parts = {int(p) for p in spec}
    else:
        parts = set()
        for chunk in spec.replace(" ", "").split(","):
            if not chunk:
                continue
            lo, sep, hi = chunk.partition("-")
            try:
                lo_i, hi_i = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise MTGError(f"--parts {spec!r}: {chunk!r} is not N or N-M") from None
            if hi_i < lo_i:
                raise MTGError(f"--parts {spec!r}: range {chunk!r} is reversed")
            parts.update(range(lo_i, hi_i + 1))
    bad = [p for p in parts if not 0 <= p <= 99]
    if bad or not parts:
        raise MTGError(f"parts must be numbers 0..99, got {spec!r}")
    return sorted(parts)


def tar_name(part: int, variant: str = "audio-low", dataset: str = "raw_30s") -> str:
    """``raw_30s_audio-low-03.tar``."""
    return f"{dataset}_{variant}-{part:02d}.tar"


def tar_url(part: int, variant: str = "audio-low", dataset: str = "raw_30s", mirror: tp.Optional[str] = None) -> str:
    base = (mirror or ARCHIVE_BASE).rstrip("/") + "/"
    return f"{base}{dataset}/{variant}/{tar_name(part, variant, dataset)}"


def metadata_url(rel: str, metadata_mirror: tp.Optional[str] = None) -> str:
    return (metadata_mirror or METADATA_BASE).rstrip("/") + "/" + rel


def downloads_dir(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    return paths.dataset_dir(NAME, workspace) / "downloads"


def parse_sha256_list(text: str) -> tp.Dict[str, str]:
    """The dataset's ``<sha256> <name>`` list of tars -> {name: sha256}."""
    return download.parse_checksum_list(text, "sha256", "MTG-Jamendo sha256 list")


def parse_tags_tsv(text: str) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """autotagging TSV (CRLF, variable trailing tag columns) -> {TRACK_ID: record}.

    A record: artist_id, album_id, path (``NN/<id>.mp3``), duration, tags {category: [values]}.
    """
    out = {}
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRACK_ID"):
        raise MTGError("autotagging TSV: the first line must be the header TRACK_ID ARTIST_ID ALBUM_ID PATH ...")
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 5:
            raise MTGError(f"autotagging TSV line {n}: expected at least 5 tab-separated fields, got {len(fields)}")
        tags: tp.Dict[str, tp.List[str]] = {}
        for tag in fields[5:]:
            category, sep, value = tag.strip().partition("---")
            if sep and value:
                tags.setdefault(category, []).append(value)
        try:
            duration = float(fields[4])
        except ValueError:
            duration = None
        out[fields[0]] = {"artist_id": fields[1], "album_id": fields[2], "path": fields[3], "duration": duration,
                          "tags": tags}
    return out


def parse_meta_tsv(text: str) -> tp.Dict[str, tp.Dict[str, str]]:
    """raw.meta.tsv (tabs only: it holds unmatched quotes) -> {TRACK_ID: {track_name, artist_name, album_name}}."""
    out = {}
    lines = text.splitlines()
    for line in lines[1:]:
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 6:
            continue
        out[fields[0]] = {"track_name": fields[3], "artist_name": fields[4], "album_name": fields[5]}
    return out


TAGS_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
META_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "TRACK_NAME", "ARTIST_NAME", "ALBUM_NAME")


def metadata_problem(rel: str, data: bytes) -> tp.Optional[str]:
    """Why ``data`` is not the metadata file ``rel`` (an HTML page, a wrong header, short rows), or None.

    Example:
        >>> metadata_problem(TAGS_TSV, b"<!DOCTYPE html><html><body>Not found</body></html>")
        'an HTML page, not a TSV'
        >>> metadata_problem(META_TSV, b"TRACK_ID,ARTIST_ID")
        "its first line is 'TRACK_ID,ARTIST_ID', not the header TRACK_ID ARTIST_ID ALBUM_ID TRACK_NAME ARTIST_NAME ALBUM_NAME"
    """
    start = data[:1024].lstrip().lower()
    if start.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in start:
        return "an HTML page, not a TSV" if not rel.endswith(".txt") else "an HTML page, not a checksum list"
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if rel.endswith("_sha256_tars.txt"):
        try:
            sums = parse_sha256_list(text)
        except download.DownloadError as exc:
            return str(exc)
        return None if sums else "no checksum line"
    expected = META_HEADER if rel == META_TSV else TAGS_HEADER
    first = lines[0].rstrip("\r") if lines else ""
    if tuple(first.split("\t")[:len(expected)]) != expected:
        return f"its first line is {first[:60]!r}, not the header {' '.join(expected)}"
    rows = [(n, line) for n, line in enumerate(lines[1:], 2) if line.strip()]
    for n, line in rows:
        if len(line.split("\t")) < len(expected) - 1:
            return f"line {n} has {len(line.split(chr(9)))} tab-separated column(s), expected at least {len(expected) - 1}"
    if not rows and rel in (TAGS_TSV, META_TSV):
        return "a header but no track"
    return None


def _fetch_text(url: str, dest: Path, force: bool, rel: str) -> str:
    """Download ``url`` to ``dest`` unless a valid copy is there; a copy that fails :func:`metadata_problem`
    is deleted (and downloaded again when it was kept from an earlier run)."""
    if force:
        dest.unlink(missing_ok=True)
    if dest.exists():
        problem = metadata_problem(rel, dest.read_bytes())
        if problem:
            logger.warning("%s: kept from an earlier download but %s: deleted, downloading it again from %s", dest,
                           problem, url)
            dest.unlink()
    download.http_download(url, dest, progress=False)
    data = dest.read_bytes()
    problem = metadata_problem(rel, data)
    if problem:
        dest.unlink()
        raise MTGError(f"{url} did not serve MTG-Jamendo's {rel} ({problem}): deleted {dest}; check "
                       "--metadata-mirror (or $MTG_METADATA_MIRROR)")
    return data.decode("utf-8", errors="replace")


def download_metadata(workspace: tp.Optional[tp.Union[str, Path]] = None, metadata_mirror: tp.Optional[str] = None,
                      *, variant: str = "audio-low", dataset: str = "raw_30s", split: str = "split-0",
                      force: bool = False) -> Path:
    """The checksum list, the tag and meta TSVs and the official split into ``downloads/metadata/``."""
    meta = downloads_dir(workspace) / "metadata"
    rels = [f"data/download/{dataset}_{variant}_sha256_tars.txt", TAGS_TSV, META_TSV] + [
        SPLIT_TSV.format(split=split, part=p) for p in ("train", "validation", "test")]
    for rel in rels:
        _fetch_text(metadata_url(rel, metadata_mirror), meta / rel, force, rel)
    return meta


def download_mtg_jamendo(parts: tp.Union[str, tp.Iterable[int]], workspace: tp.Optional[tp.Union[str, Path]] = None,
                         *, variant: str = "audio-low", dataset: str = "raw_30s", mirror: tp.Optional[str] = None,
                         metadata_mirror: tp.Optional[str] = None, force: bool = False,
                         keep_archives: bool = False) -> Path:
    """Download, verify (SHA-256) and extract the chosen tar parts; returns ``downloads/<variant>``.

    Each part gets a ``.part-NN.completed`` marker after a verified extraction, so a re-run skips it
    and an interrupted one resumes its ``.part`` download.
    """
    if variant not in VARIANTS:
        raise MTGError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if dataset not in DATASETS:
        raise MTGError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    numbers = parse_parts(parts)
    meta = download_metadata(workspace, metadata_mirror, variant=variant, dataset=dataset, force=force)
    sums = parse_sha256_list((meta / f"data/download/{dataset}_{variant}_sha256_tars.txt").read_text())
    audio_dir = downloads_dir(workspace) / variant
    audio_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    for part in numbers:
        name = tar_name(part, variant, dataset)
        marker = audio_dir / f".part-{part:02d}.completed"
        if marker.exists() and not force:
            logger.info("%s already extracted (%s)", name, marker)
            done += 1
            continue
        if name not in sums:
            raise MTGError(f"{name} is not in the dataset's SHA-256 list ({len(sums)} entries): wrong part or variant?")
        archive = download.http_download(tar_url(part, variant, dataset, mirror), audio_dir / name,
                                         expected_hash=sums[name], algorithm="sha256")
        files = download.safe_extract_tar(archive, audio_dir)
        atomic.write_json(marker, {"archive": name, "sha256": sums[name], "files": len(files)})
        if not keep_archives:
            archive.unlink()
        done += 1
    logger.info("mtg_jamendo %s: %d part(s) ready in %s", variant, done, audio_dir)
    return audio_dir


def track_inputs(workspace: tp.Optional[tp.Union[str, Path]] = None, *, variant: str = "audio-low",
                 split: str = "split-0") -> tp.List[tp.Any]:
    """The extracted audio of ``variant`` as prepare inputs, with tags, names and the official split."""
    from musicpipe.prepare import TrackInput

    meta = downloads_dir(workspace) / "metadata"
    tags_path = meta / TAGS_TSV
    if not tags_path.exists():
        raise MTGError(f"{tags_path} is missing: run `musicpipe download mtg_jamendo` first")
    for rel in (TAGS_TSV, META_TSV, *(SPLIT_TSV.format(split=split, part=p) for p in ("train", "validation", "test"))):
        kept = meta / rel
        problem = metadata_problem(rel, kept.read_bytes()) if kept.exists() else None
        if problem:  # suspect: never trust it for tags, names or the split
            raise MTGError(f"{kept}: not MTG-Jamendo's {rel} ({problem}): download it again with "
                           "`musicpipe download mtg_jamendo --parts ... --force`")
    tags = parse_tags_tsv(tags_path.read_text(encoding="utf-8", errors="replace"))
    names = parse_meta_tsv((meta / META_TSV).read_text(encoding="utf-8", errors="replace")) \
        if (meta / META_TSV).exists() else {}
    official: tp.Dict[str, str] = {}
    for part, side in (("train", "train"), ("validation", "valid"), ("test", "valid")):
        path = meta / SPLIT_TSV.format(split=split, part=part)
        if path.exists():
            for tid in parse_tags_tsv(path.read_text(encoding="utf-8", errors="replace")):
                official[tid] = side
    by_path = {rec["path"]: (tid, rec) for tid, rec in tags.items()}
    inputs = []
    for path in sorted((downloads_dir(workspace) / variant).rglob("*.mp3")):
        rel = f"{path.parent.name}/{path.name.replace('.low.mp3', '.mp3')}"
        if rel not in by_path:
            logger.warning("%s: not listed in %s; prepared without tags", path, TAGS_TSV)
            tid, rec = f"track_{path.name.split('.')[0]}", {"artist_id": None, "album_id": None, "tags": {}}
        else:
            tid, rec = by_path[rel]
        info = names.get(tid, {})
        cats = rec["tags"]
        genres, moods, instruments = cats.get("genre", []), cats.get("mood/theme", []), cats.get("instrument", [])
        inputs.append(TrackInput(
            path=path, track_id=tid, artist=info.get("artist_name") or rec["artist_id"],
            title=info.get("track_name"), album=info.get("album_name"), genre=genres[0] if genres else None,
            genres=genres, tags=[v for values in cats.values() for v in values], moods=moods,
            instrument=", ".join(instruments) or None, split=official.get(tid),
            extra={"source": "mtg_jamendo", "artist_id": rec["artist_id"], "album_id": rec["album_id"]}))
    if not inputs:
        raise MTGError(f"no audio under {downloads_dir(workspace) / variant}: download some parts first")
    return inputs


def prepare_mtg_jamendo(workspace: tp.Optional[tp.Union[str, Path]] = None, config: tp.Any = None, *,
                        variant: str = "audio-low", split: str = "split-0", force: bool = False,
                        progress: bool = True) -> tp.Dict[str, tp.Any]:
    """Convert the extracted parts into segments, sidecars and manifests (``dset=audio/mtg_jamendo``)."""
    from musicpipe.prepare import PrepareConfig, prepare_tracks

    return prepare_tracks(track_inputs(workspace, variant=variant, split=split), NAME, workspace,
                          config or PrepareConfig(), force=force, write_dset_config=False, progress=progress)


def source_download(workspace: tp.Optional[tp.Union[str, Path]] = None, *, parts: tp.Optional[str] = None,
                    variant: str = "audio-low", mirror: tp.Optional[str] = None,
                    metadata_mirror: tp.Optional[str] = None, keep_archives: bool = False,
                    force: bool = False) -> Path:
    """The registry's download step: :func:`download_mtg_jamendo` (``parts`` is required)."""
    if not parts:
        raise MTGError("mtg_jamendo needs --parts, e.g. --parts 0-3")
    return download_mtg_jamendo(parts, workspace, variant=variant, mirror=mirror, metadata_mirror=metadata_mirror,
                                force=force, keep_archives=keep_archives)


def source_prepare(workspace: tp.Optional[tp.Union[str, Path]] = None, config: tp.Any = None, *,
                   variant: str = "audio-low", force: bool = False, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """The registry's prepare step: :func:`prepare_mtg_jamendo`."""
    return prepare_mtg_jamendo(workspace, config, variant=variant, force=force, progress=progress)


_VARIANT = Option("variant", "--variant", "audio quality", choices=VARIANTS, default="audio-low", env="MTG_VARIANT")
SOURCE = Source(
    name=NAME, help="MTG-Jamendo: chosen tar parts (about 5 GB each) with tags and the official split",
    download=source_download, prepare=source_prepare, dataset=lambda o: NAME,
    label=lambda o: f"{NAME} {o.get('variant', 'audio-low')} parts {o.get('parts')}",
    download_options=(
        Option("parts", "--parts", "tar parts, e.g. 0-3 or 0,5,7-9"),
        _VARIANT,
        dataclasses.replace(MIRROR, env="MTG_MIRROR"),
        Option("metadata_mirror", "--metadata-mirror", "base URL of the metadata TSVs", env="MTG_METADATA_MIRROR"),
        KEEP_ARCHIVES,
    ),
    prepare_options=(_VARIANT,),
    item="parts", item_example="0-3", default_split="official",
)

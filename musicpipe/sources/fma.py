"""FMA (Free Music Archive): download, verify and prepare its subsets (github mdeff/fma).

Full subsets (``fma_small`` ... ``fma_full``) download resumably, are checked against the published
SHA-1, extracted safely and every file verified against the archive's own ``checksums`` member.
Mini subsets (``fma_small_mini``) never download the 7.2 GiB zip: the remote zip's central directory
is read with HTTP Range requests and only the chosen members are fetched, each verified against the
SHA-1 in the archive's ``checksums``. From ``fma_metadata.zip`` (342 MiB) only ``tracks.csv`` and
``genres.csv`` are fetched.

Example:
    >>> from musicpipe.sources import fma
    >>> fma.archive_url("fma_small", mirror="http://127.0.0.1:8000/fma")
    'http://127.0.0.1:8000/fma/fma_small.zip'
    >>> fma.download_fma("fma_small_mini", workspace="/root/workspace")    # doctest: +SKIP
    >>> fma.prepare_fma("fma_small_mini", workspace="/root/workspace")     # doctest: +SKIP
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import math
import typing as tp
from pathlib import Path

from musicpipe import atomic, download, paths
from musicpipe.sources.base import KEEP_ARCHIVES, MIRROR, Option, Source, SourceError

logger = logging.getLogger(__name__)

BASE_URL = "https://os.unil.cloud.switch.ch/fma/"
# Published SHA-1 of each whole zip (FMA README).
ARCHIVE_SHA1 = {
    "fma_metadata": "f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
    "fma_small": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "fma_medium": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
    "fma_large": "497109f4dd721066b5ce5e5f250ec604dc78939e",
    "fma_full": "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab",
}
FULL_SUBSETS = ("fma_small", "fma_medium", "fma_large", "fma_full")
# mini subset -> (parent subset, number of tracks, balanced over the parent's top genres)
MINI_SUBSETS = {"fma_small_mini": ("fma_small", 100)}
SUBSETS = (*MINI_SUBSETS, *FULL_SUBSETS)
METADATA_MEMBERS = ("fma_metadata/tracks.csv", "fma_metadata/genres.csv")
MARKER = ".completed"


class FMAError(SourceError):
    """An FMA download or prepare step cannot proceed (names the file and the reason)."""


def archive_url(archive: str, mirror: tp.Optional[str] = None) -> str:
    base = (mirror or BASE_URL).rstrip("/") + "/"
    return f"{base}{archive}.zip"


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise FMAError(f"unknown FMA subset {subset!r}; choose one of {', '.join(SUBSETS)}")


def metadata_dir(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    return paths.dataset_dir("fma_metadata", workspace) / "downloads"


def downloads_dir(subset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    return paths.dataset_dir(subset, workspace) / "downloads"


def parse_checksums(text: str) -> tp.Dict[str, str]:
    """The archive's ``checksums`` member (``<sha1>  000/000002.mp3`` lines) -> {relative path: sha1}."""
    return download.parse_checksum_list(text, "sha1", "FMA checksums")


def _write_marker(folder: Path, info: tp.Mapping[str, tp.Any]) -> None:
    atomic.write_json(folder / MARKER, info, indent=1, sort_keys=True)


def _read_marker(folder: Path) -> tp.Optional[tp.Dict[str, tp.Any]]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- metadata

def download_fma_metadata(workspace: tp.Optional[tp.Union[str, Path]] = None, mirror: tp.Optional[str] = None,
                          force: bool = False, expected_sha1: tp.Optional[str] = None) -> Path:
    """``tracks.csv`` and ``genres.csv`` into ``<ws>/data/fma_metadata/downloads/fma_metadata/``.

    Range-fetched out of the remote zip (zipfile checks each member's CRC); when the server refuses
    Range, the whole zip is downloaded, checked against its published SHA-1 (``expected_sha1``
    overrides it, for mirrors of other files such as the tests'), and only those members extracted.
    """
    dest = metadata_dir(workspace)
    if not force and _read_marker(dest) is not None and all((dest / m).exists() for m in METADATA_MEMBERS):
        logger.info("fma_metadata already downloaded in %s", dest)
        return dest / "fma_metadata"
    url = archive_url("fma_metadata", mirror)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with download.RemoteZip(url) as rz:
            names = set(rz.namelist())
            for member in METADATA_MEMBERS:
                if member not in names:
                    raise FMAError(f"{url} has no member {member}")
                rz.fetch(member, dest / member)
            how = {"method": "range", "bytes_downloaded": rz.bytes_downloaded}
    except download.RangeNotSupported:
        logger.warning("%s: the server refuses HTTP Range; downloading the whole fma_metadata.zip (342 MiB) "
                       "to take tracks.csv and genres.csv out of it", url)
        archive = download.http_download(url, dest / "fma_metadata.zip",
                                         expected_hash=expected_sha1 or ARCHIVE_SHA1["fma_metadata"])
        download.safe_extract_zip(archive, dest, members=METADATA_MEMBERS)
        how = {"method": "full-zip"}
    _write_marker(dest, {"url": url, **how, "members": list(METADATA_MEMBERS)})
    return dest / "fma_metadata"


def _literal_list(value: tp.Any) -> tp.List[tp.Any]:
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return []
    return list(parsed) if isinstance(parsed, (list, tuple)) else []


def _clean(value: tp.Any) -> tp.Optional[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def load_metadata(meta_dir: tp.Union[str, Path]) -> tp.Dict[int, tp.Dict[str, tp.Any]]:
    """tracks.csv (two-row header) + genres.csv -> {track_id: flat metadata dict}."""
    import pandas as pd

    meta_dir = Path(meta_dir)
    tracks_csv, genres_csv = meta_dir / "tracks.csv", meta_dir / "genres.csv"
    for path in (tracks_csv, genres_csv):
        if not path.exists():
            raise FMAError(f"{path} is missing: run `musicpipe download fma` first")
    tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1], low_memory=False)
    genres = pd.read_csv(genres_csv, index_col=0)
    genre_title = {int(i): str(t) for i, t in genres["title"].items()}

    def col(top: str, sub: str) -> tp.Any:
        return tracks[(top, sub)] if (top, sub) in tracks.columns else pd.Series([None] * len(tracks),
                                                                                  index=tracks.index)

    out = {}
    columns = {
        "title": col("track", "title"), "artist": col("artist", "name"), "artist_id": col("artist", "id"),
        "album": col("album", "title"), "genre_top": col("track", "genre_top"), "genres": col("track", "genres"),
        "tags": col("track", "tags"), "license": col("track", "license"), "split": col("set", "split"),
        "subset": col("set", "subset"), "duration": col("track", "duration"),
    }
    for tid in tracks.index:
        row = {k: v.loc[tid] for k, v in columns.items()}
        genre_ids = _literal_list(row["genres"])
        out[int(tid)] = {
            "title": _clean(row["title"]), "artist": _clean(row["artist"]), "artist_id": _clean(row["artist_id"]),
            "album": _clean(row["album"]), "genre_top": _clean(row["genre_top"]),
            "genres": [genre_title[int(g)] for g in genre_ids if int(g) in genre_title],
            "tags": [str(t) for t in _literal_list(row["tags"])], "license": _clean(row["license"]),
            "split": _clean(row["split"]), "subset": _clean(row["subset"]),
        }
    return out


def member_name(parent: str, track_id: int) -> str:
    """``fma_small/000/000002.mp3`` for track 2 of fma_small."""
    tid = f"{int(track_id):06d}"
    return f"{parent}/{tid[:3]}/{tid}.mp3"


def choose_mini_tracks(metadata: tp.Mapping[int, tp.Mapping[str, tp.Any]], available: tp.Iterable[int],
                       parent: str = "fma_small", num_tracks: int = 100, seed: int = 0) -> tp.List[int]:
    """A deterministic subset of ``num_tracks`` tracks, balanced over the parent subset's top genres.

    Only tracks listed in the archive (``available``) with a top genre are candidates; within a genre
    the order is a seeded hash of the track id, so the choice does not depend on file order.
    """
    by_genre: tp.Dict[str, tp.List[int]] = {}
    for tid in sorted(set(available)):
        info = metadata.get(tid)
        if info is None or not info.get("genre_top"):
            continue
        if parent == "fma_small" and info.get("subset") not in (None, "small"):
            continue
        by_genre.setdefault(info["genre_top"], []).append(tid)
    if not by_genre:
        raise FMAError(f"no track of the archive has metadata with a top genre in the {parent} subset")

    def key(tid: int) -> str:
        return hashlib.sha1(f"{seed}:{tid}".encode()).hexdigest()

    genres = sorted(by_genre)
    base, extra = divmod(num_tracks, len(genres))
    chosen: tp.List[int] = []
    for i, genre in enumerate(genres):
        want = base + (1 if i < extra else 0)
        chosen += sorted(by_genre[genre], key=key)[:want]
    return sorted(chosen)


# ---------------------------------------------------------------------------------------------- audio

def _download_mini(subset: str, workspace: tp.Optional[tp.Union[str, Path]], mirror: tp.Optional[str],
                   num_tracks: int, seed: int, expected_sha1: tp.Optional[str],
                   metadata_sha1: tp.Optional[str]) -> Path:
    parent, default_n = MINI_SUBSETS[subset]
    num_tracks = num_tracks or default_n
    dest = downloads_dir(subset, workspace)
    meta = load_metadata(download_fma_metadata(workspace, mirror, expected_sha1=metadata_sha1))
    url = archive_url(parent, mirror)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        rz = download.RemoteZip(url)
    except download.RangeNotSupported:
        logger.warning("%s: the server refuses HTTP Range; falling back to downloading the whole %s.zip "
                       "(7.2 GiB for fma_small) and extracting the chosen tracks", url, parent)
        archive = download.http_download(url, downloads_dir(parent, workspace) / f"{parent}.zip",
                                         expected_hash=expected_sha1 or ARCHIVE_SHA1[parent])
        import zipfile

        with zipfile.ZipFile(archive) as zf:
            checks = parse_checksums(zf.read(f"{parent}/checksums").decode())
            available = [int(Path(n).stem) for n in checks]
            chosen = choose_mini_tracks(meta, available, parent, num_tracks, seed)
            members = [member_name(parent, t) for t in chosen]
            download.safe_extract_zip(archive, dest, members=members)
        for tid, member in zip(chosen, members):
            rel = member.split("/", 1)[1]
            actual = download.file_hash(dest / member, "sha1")
            if actual != checks[rel]:
                (dest / member).unlink(missing_ok=True)
                raise download.ChecksumError(f"{dest / member}: sha1 {actual} != {checks[rel]} listed in checksums")
        info = {"method": "full-zip", "url": url, "tracks": chosen}
        _write_marker(dest, info)
        return dest
    with rz:
        checks = parse_checksums(rz.read(f"{parent}/checksums").decode())
        names = set(rz.namelist())
        available = [int(Path(n).stem) for n in checks if f"{parent}/{n}" in names]
        chosen = choose_mini_tracks(meta, available, parent, num_tracks, seed)
        from tqdm import tqdm

        for tid in tqdm(chosen, desc=f"fetch {subset}", unit="track"):
            member = member_name(parent, tid)
            rz.fetch(member, dest / member, expected_sha1=checks[member.split("/", 1)[1]])
        compressed = sum(i.compress_size for i in rz.infolist() if i.filename in
                         {member_name(parent, t) for t in chosen})
        info = {"method": "range", "url": url, "tracks": chosen, "bytes_downloaded": rz.bytes_downloaded,
                "members_compressed_bytes": compressed}
    logger.info("%s: %d tracks fetched by Range, %d bytes downloaded for %d bytes of members (%.2fx)", subset,
                len(chosen), info["bytes_downloaded"], compressed, info["bytes_downloaded"] / max(compressed, 1))
    _write_marker(dest, info)
    return dest


def _download_full(subset: str, workspace: tp.Optional[tp.Union[str, Path]], mirror: tp.Optional[str],
                   expected_sha1: tp.Optional[str], metadata_sha1: tp.Optional[str], keep_archive: bool) -> Path:
    dest = downloads_dir(subset, workspace)
    download_fma_metadata(workspace, mirror, expected_sha1=metadata_sha1)
    url = archive_url(subset, mirror)
    archive = download.http_download(url, dest / f"{subset}.zip", expected_hash=expected_sha1 or ARCHIVE_SHA1[subset])
    download.safe_extract_zip(archive, dest)
    checks = parse_checksums((dest / subset / "checksums").read_text())
    from tqdm import tqdm

    bad = []
    for rel, digest in tqdm(sorted(checks.items()), desc=f"verify {subset}", unit="file"):
        path = dest / subset / rel
        if not path.exists() or download.file_hash(path, "sha1") != digest:
            bad.append(rel)
    if bad:
        raise download.ChecksumError(f"{dest / subset}: {len(bad)} file(s) missing or not matching the archive's "
                                     f"checksums, e.g. {bad[:5]}")
    if not keep_archive:
        archive.unlink()
    _write_marker(dest, {"method": "full-zip", "url": url, "files": len(checks)})
    return dest


def download_fma(subset: str, workspace: tp.Optional[tp.Union[str, Path]] = None, mirror: tp.Optional[str] = None,
                 *, force: bool = False, num_tracks: int = 0, seed: int = 0, expected_sha1: tp.Optional[str] = None,
                 metadata_sha1: tp.Optional[str] = None, keep_archive: bool = False) -> Path:
    """Download (or find already downloaded) an FMA subset; returns ``<ws>/data/<subset>/downloads``.

    Args:
        subset: ``fma_small_mini`` or one of ``fma_small``, ``fma_medium``, ``fma_large``, ``fma_full``.
        mirror: base URL replacing ``https://os.unil.cloud.switch.ch/fma/``.
        num_tracks: size of a mini subset (default 100).
        expected_sha1, metadata_sha1: override the published SHA-1 of the subset's / fma_metadata's whole
            zip, checked only when the whole zip is downloaded (for mirrors that serve other files).
        keep_archive: keep the zip after extraction (full subsets).
    """
    _check_subset(subset)
    dest = downloads_dir(subset, workspace)
    marker = _read_marker(dest)
    if marker is not None and not force:
        logger.info("%s already downloaded (%s)", subset, dest / MARKER)
        return dest
    if force and (dest / MARKER).exists():
        (dest / MARKER).unlink()
    if subset in MINI_SUBSETS:
        return _download_mini(subset, workspace, mirror, num_tracks, seed, expected_sha1, metadata_sha1)
    return _download_full(subset, workspace, mirror, expected_sha1, metadata_sha1, keep_archive)


def track_inputs(subset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[tp.Any]:
    """The downloaded audio of ``subset`` as prepare inputs, with FMA's metadata."""
    from musicpipe.prepare import TrackInput

    dest = downloads_dir(subset, workspace)
    if _read_marker(dest) is None:
        raise FMAError(f"{subset} is not downloaded ({dest / MARKER} missing): run `musicpipe download fma "
                       f"--subset {subset}` first")
    meta = load_metadata(metadata_dir(workspace) / "fma_metadata")
    inputs = []
    for path in sorted(dest.rglob("*.mp3")):
        try:
            tid = int(path.stem)
        except ValueError:
            continue
        info = meta.get(tid, {})
        split = {"training": "train", "validation": "valid", "test": "valid"}.get(info.get("split") or "")
        inputs.append(TrackInput(
            path=path, track_id=f"{tid:06d}", artist=info.get("artist"), title=info.get("title"),
            album=info.get("album"), genre=info.get("genre_top") or (info.get("genres") or [None])[0],
            genres=info.get("genres", []), tags=info.get("tags", []), license=info.get("license"), split=split,
            extra={"source": "fma", "fma_track_id": tid, "fma_artist_id": info.get("artist_id")}))
    return inputs


def prepare_fma(subset: str, workspace: tp.Optional[tp.Union[str, Path]] = None, config: tp.Any = None,
                *, force: bool = False, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """Convert a downloaded subset into segments, sidecars, manifests (``dset=audio/<subset>``)."""
    from musicpipe.prepare import PrepareConfig, prepare_tracks

    _check_subset(subset)
    committed = (paths.MODEL_CONFIG_DIR / "dset" / "audio" / f"{subset}.yaml").exists()
    return prepare_tracks(track_inputs(subset, workspace), subset, workspace, config or PrepareConfig(),
                          force=force, write_dset_config=not committed, progress=progress)


def source_download(workspace: tp.Optional[tp.Union[str, Path]] = None, *, subset: str = "fma_small_mini",
                    num_tracks: int = 0, mirror: tp.Optional[str] = None, keep_archives: bool = False,
                    force: bool = False) -> Path:
    """The registry's download step: :func:`download_fma`."""
    return download_fma(subset, workspace, mirror, force=force, num_tracks=num_tracks, keep_archive=keep_archives)


def source_prepare(workspace: tp.Optional[tp.Union[str, Path]] = None, config: tp.Any = None, *,
                   subset: str = "fma_small_mini", force: bool = False, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """The registry's prepare step: :func:`prepare_fma`."""
    return prepare_fma(subset, workspace, config, force=force, progress=progress)


_SUBSET_HELP = ", ".join(SUBSETS[:2]) + ", ..., " + SUBSETS[-1]
SOURCE = Source(
    name="fma", help="Free Music Archive: the fma_small_mini subset (about 100 tracks by HTTP Range) or a full subset",
    download=source_download, prepare=source_prepare, dataset=lambda o: o.get("subset", "fma_small_mini"),
    label=lambda o: o.get("subset", "fma_small_mini"),
    download_options=(
        Option("subset", "--subset", _SUBSET_HELP, default="fma_small_mini"),
        Option("num_tracks", "--num-tracks", "how many tracks of a mini subset (default 100)", type=int, default=0),
        dataclasses.replace(MIRROR, env="FMA_MIRROR"),
        KEEP_ARCHIVES,
    ),
    prepare_options=(Option("subset", "--subset", "the subset to prepare", default="fma_small_mini"),),
    item="subset", item_pattern=r"fma_\w+", item_example="fma_small_mini",
)

"""Small FMA- and MTG-Jamendo-shaped corpora for the loopback server: real MP3s made with ffmpeg,
archives laid out as published, metadata in the real formats (tracks.csv's two-row header,
CRLF TSVs with variable tag columns, sha1sum/sha256 lists)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

FMA_GENRES = ["Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International", "Pop", "Rock"]


def make_mp3(path: Path, freq: float, seconds: float, stereo: bool = True, rate: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}:sample_rate={rate}",
                    "-ac", "2" if stereo else "1", "-b:a", "64k", str(path)], check=True)
    return path


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def build_fma(root: Path, tracks_per_genre: int = 3, seconds: float = 12.0) -> dict:
    """``root/fma/fma_metadata.zip`` and ``root/fma/fma_small.zip``; returns facts the tests check."""
    import pandas as pd

    out = root / "fma"
    out.mkdir(parents=True, exist_ok=True)
    work = root / "fma_src"
    rows, audio = [], {}
    tid = 2
    for g, genre in enumerate(FMA_GENRES):
        for k in range(tracks_per_genre):
            mp3 = make_mp3(work / f"{tid:06d}.mp3", 220 + 40 * g + 7 * k, seconds)
            audio[tid] = mp3.read_bytes()
            # two tracks of each genre share an artist; the artist ids differ across genres
            artist = f"Artist {genre} {k // 2}"
            rows.append([f"Album {genre}", artist, 1000 + g * 10 + k // 2, "training" if k else "validation", "small",
                         genre, f"[{g + 1}]", "['lofi', 'live']" if k % 2 else "[]", f"Track {tid}",
                         "CC BY 4.0", seconds])
            tid += 1
    # a medium-only track that must never be chosen for fma_small_mini
    rows.append(["Album M", "Artist M", 9999, "training", "medium", "Rock", "[8]", "[]", "Medium only", "CC BY", 30.0])
    ids = list(audio) + [tid]
    cols = pd.MultiIndex.from_tuples([("album", "title"), ("artist", "name"), ("artist", "id"), ("set", "split"),
                                      ("set", "subset"), ("track", "genre_top"), ("track", "genres"),
                                      ("track", "tags"), ("track", "title"), ("track", "license"),
                                      ("track", "duration")])
    tracks = pd.DataFrame(rows, index=pd.Index(ids, name="track_id"), columns=cols)
    genres = pd.DataFrame({"#tracks": [10] * 8, "parent": [0] * 8, "title": FMA_GENRES, "top_level": range(1, 9)},
                          index=pd.Index(range(1, 9), name="genre_id"))
    meta_zip = out / "fma_metadata.zip"
    with zipfile.ZipFile(meta_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fma_metadata/tracks.csv", tracks.to_csv())
        zf.writestr("fma_metadata/genres.csv", genres.to_csv())
        # the feature tables we must not download: incompressible bytes
        zf.writestr("fma_metadata/features.csv", os.urandom(2_000_000), compress_type=zipfile.ZIP_STORED)
        zf.writestr("fma_metadata/echonest.csv", os.urandom(500_000), compress_type=zipfile.ZIP_STORED)
    small_zip = out / "fma_small.zip"
    def rel(t: int) -> str:
        return f"{t:06d}"[:3] + f"/{t:06d}.mp3"

    checksums = "".join(f"{sha1(data)}  {rel(t)}\n" for t, data in sorted(audio.items()))
    with zipfile.ZipFile(small_zip, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("fma_small/README.txt", "FMA small, test copy\n")
        zf.writestr("fma_small/checksums", checksums)
        for t, data in sorted(audio.items()):
            zf.writestr(f"fma_small/{rel(t)}", data)
    return {"tracks": sorted(audio), "medium_only": tid, "small_zip": small_zip, "meta_zip": meta_zip,
            "small_sha1": sha1(small_zip.read_bytes()), "meta_sha1": sha1(meta_zip.read_bytes()),
            "audio_sha1": {t: sha1(d) for t, d in audio.items()}}


def build_mtg(root: Path, parts: int = 2, tracks_per_part: int = 3, seconds: float = 12.0) -> dict:
    """``root/mtg/raw_30s/audio-low/raw_30s_audio-low-NN.tar`` + ``root/mtgmeta/data/...`` metadata."""
    audio_dir = root / "mtg" / "raw_30s" / "audio-low"
    audio_dir.mkdir(parents=True, exist_ok=True)
    meta = root / "mtgmeta" / "data"
    tags_lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    meta_lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tTRACK_NAME\tARTIST_NAME\tALBUM_NAME\tRELEASEDATE\tURL"]
    split = {"train": [], "validation": [], "test": []}
    sums, tracks = [], {}
    genre_cycle = ["rock", "electronic", "jazz"]
    for part in range(parts):
        tar_path = audio_dir / f"raw_30s_audio-low-{part:02d}.tar"
        with tarfile.open(tar_path, "w") as tar:
            for k in range(tracks_per_part):
                num = part + 100 * (k + 1)        # folder NN = last two digits of the id
                tid = f"track_{num:07d}"
                artist = f"artist_{k:06d}"          # one artist per k, across parts
                mp3 = make_mp3(root / "mtg_src" / f"{num}.low.mp3", 300 + 50 * k + part, seconds, stereo=False)
                data = mp3.read_bytes()
                info = tarfile.TarInfo(f"{num % 100:02d}/{num}.low.mp3")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                genre = genre_cycle[(part + k) % 3]
                extra_tags = "\tinstrument---guitar\tmood/theme---happy" if k % 2 == 0 else ""
                tags_lines.append(f"{tid}\t{artist}\talbum_{num:06d}\t{num % 100:02d}/{num}.mp3\t{seconds}"
                                  f"\tgenre---{genre}{extra_tags}")
                meta_lines.append(f"{tid}\t{artist}\talbum_{num:06d}\tSong \"{num}\tBand {artist[-1]}\tAlbum {num}"
                                  f"\t2010-01-01\thttps://example.invalid/{num}")
                side = "validation" if k == tracks_per_part - 1 else "train"  # artist-level, like the real one
                split[side].append(tags_lines[-1])
                tracks[tid] = {"artist": artist, "genre": genre, "split": side}
        sums.append(f"{hashlib.sha256(tar_path.read_bytes()).hexdigest()} {tar_path.name}")
    crlf = "\r\n"
    (meta / "download").mkdir(parents=True, exist_ok=True)
    (meta / "download" / "raw_30s_audio-low_sha256_tars.txt").write_text("\n".join(sums) + "\n")
    (meta / "autotagging.tsv").write_bytes((crlf.join(tags_lines) + crlf).encode())
    (meta / "raw.meta.tsv").write_bytes((crlf.join(meta_lines) + crlf).encode())
    for side, lines in split.items():
        p = meta / "splits" / "split-0" / f"autotagging-{side}.tsv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((crlf.join([tags_lines[0], *lines]) + crlf).encode())
    return {"tracks": tracks, "tar_dir": audio_dir}

"""The folder source (tags, sidecars, CSV, safe ids) end to end through prepare, and inspect_dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from media import make_audio, text_as
from musicpipe import inspection
from musicpipe.sources.folder import prepare_folder, scan_folder
from musicpipe.prepare import PrepareConfig


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music") / "My Music"
    make_audio(root / "Café del Mar" / "01 ünïcode track.mp3", 21.0, channels=2,
               tags={"artist": "José González", "title": "Ünïcode", "genre": "Chillout; Ambient", "album": "Vol 1"})
    make_audio(root / "Café del Mar" / "02 untagged.ogg", 12.0, freq=330.0)
    make_audio(root / "loose file.flac", 16.0, sample_rate=48000, channels=2, freq=550.0)
    make_audio(root / "Band" / "Album" / "a b.wav", 11.0, sample_rate=8000, freq=300.0)
    make_audio(root / "Band" / "Album" / "a_b.wav", 11.0, sample_rate=8000, freq=600.0)
    song = make_audio(root / "Band" / "Album" / "song.m4a", 15.0, tags={"artist": "The Band", "genre": "Rock"})
    song.with_name(song.name + ".json").write_text(json.dumps(
        {"genre": "Post-Rock", "moods": "dark, slow", "keywords": ["guitar", "live"], "bpm": 96, "label": "X"}),
        encoding="utf-8")
    make_audio(root / "LOUD.MP3", 12.0, freq=700.0, tags={"artist": "Shouter", "mood": "angry"})
    text_as(root / "broken.mp3")
    make_audio(root / ".hidden" / "skip.mp3", 2.0)
    make_audio(root / "._resource_fork.mp3", 2.0)
    (root / "notes.txt").write_text("not audio", encoding="utf-8")
    (root / "meta.csv").write_text(
        "path,title,tags,license,description\n"
        "Café del Mar/02 untagged.ogg,From The CSV,\"sea; sun\",CC-BY,\n"
        "loose file.flac,,,,A hand-written description.\n"
        "does/not/exist.mp3,Nobody,,,\n", encoding="utf-8")
    return root


def test_scan_finds_audio_recursively_with_safe_unique_readable_ids(music):
    tracks = scan_folder(music, progress=False)
    rels = [t.extra["relative_path"] for t in tracks]
    assert rels == sorted(rels) and len(rels) == 8
    assert not any("skip" in r or "resource" in r or r.endswith(".txt") for r in rels)
    ids = {t.extra["relative_path"]: t.track_id for t in tracks}
    assert ids["Café del Mar/01 ünïcode track.mp3"] == "Cafe_del_Mar__01_unicode_track"
    assert ids["LOUD.MP3"] == "LOUD"
    assert re.fullmatch(r"Band__Album__a_b-[0-9a-f]{8}", ids["Band/Album/a b.wav"])
    assert ids["Band/Album/a b.wav"] != ids["Band/Album/a_b.wav"]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", t) for t in ids.values())
    assert [t.track_id for t in scan_folder(music, progress=False)] == [t.track_id for t in tracks]


def test_metadata_layers_tags_then_sidecar_then_csv_then_folder_name(music):
    tracks = {t.extra["relative_path"]: t for t in scan_folder(music, metadata_csv=music / "meta.csv",
                                                                progress=False)}
    jose = tracks["Café del Mar/01 ünïcode track.mp3"]
    assert (jose.artist, jose.title, jose.album) == ("José González", "Ünïcode", "Vol 1")
    assert jose.genre == "Chillout" and list(jose.genres) == ["Chillout", "Ambient"]
    untagged = tracks["Café del Mar/02 untagged.ogg"]
    assert untagged.artist == "Café del Mar" and untagged.extra["artist_from"] == "folder"
    assert untagged.title == "From The CSV" and list(untagged.tags) == ["sea", "sun"] and untagged.license == "CC-BY"
    assert tracks["loose file.flac"].artist is None  # directly in the folder: no folder name to fall back on
    assert tracks["loose file.flac"].description == "A hand-written description."
    song = tracks["Band/Album/song.m4a"]
    assert song.artist == "The Band" and song.genre == "Post-Rock" and list(song.genres) == ["Post-Rock"]
    assert list(song.moods) == ["dark", "slow"] and list(song.tags) == ["guitar", "live"]
    assert song.extra["bpm"] == 96 and song.extra["label"] == "X"
    assert tracks["LOUD.MP3"].moods == ["angry"]
    assert tracks["Band/Album/a b.wav"].artist == "Album"


def test_csv_without_a_path_column_is_refused(music, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,artist\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'path' or 'file' column"):
        scan_folder(music, metadata_csv=bad, progress=False)


def test_prepare_folder_then_inspect(music, tmp_path):
    ws = tmp_path / "ws"
    cfg = PrepareConfig(num_jobs=2, valid_share=0.2)
    report = prepare_folder(music, "mine", ws, cfg, metadata_csv=music / "meta.csv", progress=False)
    c = report["counts"]
    assert c["inputs"] == 8 and c["converted_tracks"] == 7 and c["quarantined"] == 1
    assert report["quarantined"][0]["track_id"] == "broken" and report["quarantined"][0]["reason_code"] == "undecodable"
    # 21 s -> 10+10, 12 -> 10, 16 -> 10+6, 11 -> 10, 11 -> 10, 15 -> 10+5, 12 -> 10 (tails < 5 s dropped)
    assert c["segments"] == 10 and c["segments_valid"] > 0
    assert report["split"]["method_used"] == "artist"
    root = ws / "data" / "mine"
    side = json.loads((root / "audio" / "Band__Album__song" / "Band__Album__song_0.json").read_text())
    assert side["genre"] == "Post-Rock" and side["bpm"] == 96.0 and side["moods"] == ["dark", "slow"]
    assert side["description"] == "Post-Rock track, dark, slow; tags: guitar, live."
    assert side["extra"]["relative_path"] == "Band/Album/song.m4a"
    wav = root / "audio" / "Cafe_del_Mar__01_unicode_track" / "Cafe_del_Mar__01_unicode_track_1.wav"
    assert (sf.info(wav).samplerate, sf.info(wav).channels, sf.info(wav).frames) == (32000, 1, 320000)
    # a re-run converts nothing and changes nothing
    again = prepare_folder(music, "mine", ws, cfg, metadata_csv=music / "meta.csv", progress=False)
    assert again["run"]["processed"] == 0 and again["counts"] == report["counts"]

    d = inspection.inspect_dataset("mine", ws)
    assert d["stages"] == {"source_inputs": 8, "converted_tracks": 7, "quarantined": 1, "segment_files": 10,
                           "segments_train": c["segments_train"], "segments_valid": c["segments_valid"]}
    hist = d["durations"]
    assert sum(hist["counts"]) == 10 and len(hist["bins"]) == len(hist["counts"]) + 1
    # 10 s segments, and the kept tails of the 16 s and 15 s tracks (6 s, 5 s)
    assert {k: n for k, n in enumerate(hist["counts"]) if n} == {5: 1, 6: 1, 10: 8}
    for side_name in ("train", "valid"):
        m = d["manifests"][side_name]
        assert 0 < len(m["head"]) <= 3 and m["missing_files"] == 0 and m["missing_sidecars"] == 0
        assert all(json.loads(line)["sample_rate"] == 32000 for line in m["head"])
    genres = {g for side_name in ("train", "valid") for g in d["genres"][side_name]}
    assert {"Chillout", "Post-Rock"} <= genres
    assert d["artists_on_both_sides"] == []
    assert sum(d["artists"]["train"].values()) == c["segments_train"]
    text = inspection.format_inspection(d)
    assert "8 source inputs -> 7 converted tracks (1 quarantined)" in text and "undecodable 1" in text
    assert "10.0-11.0" in text and "genres:" in text and "artists (" in text


def test_prepare_folder_refuses_its_own_output(music, tmp_path):
    out = tmp_path / "ws" / "data" / "mine" / "audio"
    out.mkdir(parents=True)
    with pytest.raises(ValueError, match="own output folder"):
        prepare_folder(out, "mine", tmp_path / "ws", progress=False)
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path / "nowhere", progress=False)


def test_a_rerun_reads_tags_only_from_new_or_changed_files(music, tmp_path, monkeypatch):
    import os

    from musicpipe import audio
    from musicpipe.sources import folder

    ws = tmp_path / "ws"
    cfg = PrepareConfig(num_jobs=1, valid_share=0.2)
    first = prepare_folder(music, "cached", ws, cfg, progress=False)
    assert (ws / "data" / "cached" / folder.TAGS_CACHE).is_file()
    opened: list = []
    real = audio.probe

    def counting(path):
        opened.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(audio, "probe", counting)
    again = prepare_folder(music, "cached", ws, cfg, progress=False)
    assert opened == [] and again["run"]["processed"] == 0
    assert {k: v for k, v in again.items() if k != "run"} == {k: v for k, v in first.items() if k != "run"}
    # the same tags come from the cache as from the files
    assert [vars(t) for t in scan_folder(music, progress=False)] == \
        [vars(t) for t in scan_folder(music, progress=False, tags_cache=json.loads(
            (ws / "data" / "cached" / folder.TAGS_CACHE).read_text(encoding="utf-8")))]
    opened.clear()
    loud = music / "LOUD.MP3"
    st = loud.stat()
    try:
        os.utime(loud, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # edited: read again
        prepare_folder(music, "cached", ws, cfg, progress=False)
        assert opened == ["LOUD.MP3"]
    finally:
        os.utime(loud, ns=(st.st_atime_ns, st.st_mtime_ns))
    opened.clear()
    prepare_folder(music, "cached", ws, cfg, force=True, progress=False)
    assert len(opened) == first["counts"]["inputs"]

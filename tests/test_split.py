"""Train/valid splits: artist-disjoint, whole tracks, deterministic, with reported fallbacks; the leak check."""

from __future__ import annotations

import json
import random
import typing as tp

import pytest

from media import make_audio
from musicpipe import manifests
from musicpipe.prepare import PrepareConfig, TrackInput, prepare_tracks
from musicpipe.split import SplitLeakError, artist_key, check_no_leak, split_tracks


def _catalog(n_tracks: int = 120, n_artists: int = 25, seed: int = 1) -> tp.List[tp.Tuple[dict, float]]:
    rng = random.Random(seed)
    return [({"track_id": f"t{i:03d}", "artist": f"Artist {rng.randrange(n_artists)}"}, rng.uniform(30, 400))
            for i in range(n_tracks)]


def _sides(assignment: tp.Mapping[str, str], items: tp.Sequence[tp.Tuple[dict, float]]) -> tp.Dict[str, set]:
    out: tp.Dict[str, set] = {"train": set(), "valid": set()}
    for track, _ in items:
        out[assignment[track["track_id"]]].add(artist_key(track["artist"]))
    return out


def test_artist_split_is_disjoint_close_to_the_share_and_deterministic():
    items = _catalog()
    assignment, info = split_tracks(items, "artist", valid_share=0.1, seed=0)
    assert set(assignment) == {t["track_id"] for t, _ in items}
    sides = _sides(assignment, items)
    assert sides["valid"] and not sides["train"] & sides["valid"]
    assert info["method_used"] == "artist" and info["artists"]["on_both_sides"] == 0
    by_artist: tp.Dict[str, float] = {}
    for t, d in items:
        by_artist[t["artist"]] = by_artist.get(t["artist"], 0.0) + d
    total = sum(by_artist.values())
    # greedy fill: within one (largest) artist's share of the target
    assert abs(info["valid_share_actual"] - 0.1) <= max(by_artist.values()) / total
    assert split_tracks(items, "artist", 0.1, seed=0)[0] == assignment
    assert split_tracks(list(reversed(items)), "artist", 0.1, seed=0)[0] == assignment  # input order is irrelevant
    others = [split_tracks(items, "artist", 0.1, seed=s)[0] for s in range(1, 6)]
    assert any(o != assignment for o in others)


def test_artist_names_compare_by_case_and_spacing_and_unknown_artists_stand_alone():
    items = [({"track_id": "a", "artist": "The Band"}, 100.0), ({"track_id": "b", "artist": " the  band"}, 100.0)]
    items += [({"track_id": f"u{i}", "artist": None}, 100.0) for i in range(8)]
    items += [({"track_id": "c", "artist": "Other"}, 100.0)]
    assignment, info = split_tracks(items, "artist", valid_share=0.2, seed=3)
    assert assignment["a"] == assignment["b"]
    assert info["method_used"] == "artist" and info["tracks"]["valid"] == 2


def test_fallback_to_track_level_with_too_few_artists_is_reported():
    items = [({"track_id": f"t{i}", "artist": "Solo"}, 60.0) for i in range(10)]
    assignment, info = split_tracks(items, "artist", valid_share=0.2, seed=0)
    assert info["method_used"] == "track" and "fewer than 2 distinct known artists" in info["reason"]
    assert sum(v == "valid" for v in assignment.values()) == 2
    # two artists, neither fits the target share: artist-disjoint would leave valid empty
    items = [({"track_id": f"t{i}", "artist": f"A{i % 2}"}, 60.0) for i in range(10)]
    assignment, info = split_tracks(items, "artist", valid_share=0.1, seed=0)
    assert info["method_used"] == "track" and "valid empty" in info["reason"]
    assert sum(v == "valid" for v in assignment.values()) == 1


def test_track_split_always_gives_valid_something_and_keeps_train():
    items = [({"track_id": "long", "artist": None}, 1000.0), ({"track_id": "short", "artist": None}, 900.0)]
    assignment, info = split_tracks(items, "track", valid_share=0.1, seed=0)
    assert assignment == {"long": "train", "short": "valid"} and "shortest" in info["reason"]
    assignment, _ = split_tracks([({"track_id": "only", "artist": None}, 10.0)], "track", 0.1, 0)
    assert assignment == {"only": "train"}


def test_official_split_and_its_fallback():
    names = ["training", "train", "validation", "valid", "test", None]
    items = [(TrackInput(path="/x", track_id=f"t{i}", artist=f"a{i}", split=s), 30.0) for i, s in enumerate(names)]
    assignment, info = split_tracks(items, "official", 0.1, 0)
    assert [assignment[f"t{i}"] for i in range(6)] == ["train", "train", "valid", "valid", "valid", "train"]
    assert info["method_used"] == "official" and info["without_official_split"] == 1
    items = [(TrackInput(path="/x", track_id=f"t{i}", artist=f"a{i}", split="training"), 30.0) for i in range(10)]
    assignment, info = split_tracks(items, "official", 0.1, 0)
    assert info["method_used"] == "artist" and "no track has an official valid" in info["reason"]
    assert sum(v == "valid" for v in assignment.values()) == 1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown split method"):
        split_tracks([], "random", 0.1, 0)
    with pytest.raises(ValueError, match="valid_share"):
        split_tracks([], "artist", 0.0, 0)
    with pytest.raises(ValueError, match="duplicate track_id"):
        split_tracks([({"track_id": "a"}, 1.0), ({"track_id": "a"}, 1.0)], "track", 0.1, 0)


def test_check_no_leak_names_the_artist_or_track():
    train = [{"track_id": "t1", "artist": "Nina"}, {"track_id": "t2", "artist": None}]
    check_no_leak(train, [{"track_id": "t3", "artist": "Other"}, {"track_id": "t4", "artist": None}])
    with pytest.raises(SplitLeakError, match="artist 'nina'.*track t1.*track t9"):
        check_no_leak(train, [{"track_id": "t9", "artist": "NINA"}])
    with pytest.raises(SplitLeakError, match="track 't2'"):
        check_no_leak(train, [{"track_id": "t2", "artist": None}])
    check_no_leak(train, [{"track_id": "t9", "artist": "Nina"}], check_artists=False)  # track-level split


def test_prepare_keeps_artists_and_tracks_on_one_side_and_reports_the_fallback(tmp_path, ffmpeg):
    src = tmp_path / "src"
    tracks = [TrackInput(path=make_audio(src / f"t{i}.ogg", 24.0, freq=200.0 + 30 * i), track_id=f"t{i}",
                         artist=f"Band {i % 4}", genre="pop") for i in range(12)]
    report = prepare_tracks(tracks, "disjoint", tmp_path / "ws", PrepareConfig(num_jobs=1, valid_share=0.25),
                            progress=False)
    assert report["split"]["method_used"] == "artist" and report["split"]["artists"]["on_both_sides"] == 0
    egs = tmp_path / "ws" / "data" / "disjoint" / "egs"
    seen: tp.Dict[str, set] = {}
    for side in ("train", "valid"):
        for rec in manifests.read_manifest(egs / side):
            info = json.loads(open(rec.path[:-4] + ".json", encoding="utf-8").read())
            seen.setdefault(f"artist:{info['artist']}", set()).add(side)
            seen.setdefault(f"track:{info['track_id']}", set()).add(side)
    assert len(seen) == 16 and all(len(s) == 1 for s in seen.values())
    assert report["counts"]["segments_train"] + report["counts"]["segments_valid"] == 24
    # one artist only: the report says prepare fell back to a track-level split
    for t in tracks:
        t.artist = "Same Person"
    report = prepare_tracks(tracks, "disjoint", tmp_path / "ws", PrepareConfig(num_jobs=1, valid_share=0.25),
                            progress=False)
    assert report["split"]["method_requested"] == "artist" and report["split"]["method_used"] == "track"
    assert "fallback" in report["split"]["reason"] and report["counts"]["segments_valid"] == 6
    assert report["run"]["processed"] == 0 and report["run"]["metadata_refreshed"] == 12

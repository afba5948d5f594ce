"""Train/valid splitting that never leaks: artist-disjoint by default, whole tracks always on one side.

Example:
    >>> tracks = [({"track_id": f"t{i}", "artist": f"a{i % 5}"}, 60.0) for i in range(20)]
    >>> assignment, info = split_tracks(tracks, "artist", valid_share=0.2, seed=0)
    >>> info["method_used"], sum(side == "valid" for side in assignment.values())
    ('artist', 4)
"""

from __future__ import annotations

import hashlib
import logging
import typing as tp
import unicodedata

logger = logging.getLogger(__name__)

METHODS = ("artist", "track", "official")
OFFICIAL_NAMES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
                  "dev": "valid", "test": "valid", "testing": "valid"}


class SplitLeakError(ValueError):
    """An artist or a track on both sides of a split."""


def _get(obj: tp.Any, key: str) -> tp.Any:
    if isinstance(obj, tp.Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def artist_key(artist: tp.Optional[str]) -> tp.Optional[str]:
    """A comparable form of an artist name (case, accents' composition and spacing do not matter); None if unknown.

    Example:
        >>> artist_key("  The  Beatles ") == artist_key("the beatles"), artist_key("  ")
        (True, None)
    """
    if artist is None:
        return None
    key = " ".join(unicodedata.normalize("NFKC", str(artist)).casefold().split())
    return key or None


def _hash(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}\0{key}".encode("utf-8")).hexdigest()


def _greedy(groups: tp.Dict[str, float], target: float, seed: int, total: float) -> tp.Set[str]:
    """Groups in seed-hashed order; take one whenever it brings valid closer to ``target`` (train never emptied)."""
    chosen: tp.Set[str] = set()
    acc = 0.0
    for key in sorted(groups, key=lambda k: (_hash(seed, k), k)):
        dur = groups[key]
        if acc + dur >= total:  # train must keep something
            continue
        if abs(acc + dur - target) < abs(acc - target):
            chosen.add(key)
            acc += dur
    return chosen


def _by_groups(items: tp.List[tp.Tuple[str, str, float]], valid_share: float, seed: int) -> tp.Dict[str, str]:
    groups: tp.Dict[str, float] = {}
    for _, group, dur in items:
        groups[group] = groups.get(group, 0.0) + dur
    total = sum(groups.values())
    chosen = _greedy(groups, valid_share * total, seed, total)
    return {tid: ("valid" if group in chosen else "train") for tid, group, _ in items}


def split_tracks(tracks_with_durations: tp.Sequence[tp.Tuple[tp.Any, float]], method: str = "artist",
                 valid_share: float = 0.1, seed: int = 0) -> tp.Tuple[tp.Dict[str, str], tp.Dict[str, tp.Any]]:
    """Assign every track to 'train' or 'valid', about ``valid_share`` of the total duration to valid.

    Args:
        tracks_with_durations: ``(track, seconds)`` pairs; ``track`` is a TrackInput or any object/mapping
            with ``track_id``, ``artist`` and (for 'official') ``split``.
        method: 'artist' (artist-disjoint; an unknown artist counts as its own artist, one per track),
            'track' (track-level), or 'official' (the track's own split: train/training -> train;
            valid/validation/val/dev/test -> valid; tracks without one go to train).
        valid_share: share of the total duration for valid, in (0, 1).
        seed: groups are visited in an order hashed from the seed, so the split is deterministic.

    'artist' falls back to 'track' when there are fewer than 2 distinct known artists or when no artist fits
    in valid; 'official' falls back to 'artist' when no track carries an official valid split. ``info`` says
    which method was used and why. A track-level split with at least 2 tracks always gives valid a track.

    Returns:
        ``(assignment, info)``: track_id -> 'train'|'valid', and ``{"method_requested", "method_used",
        "reason", "valid_share_target", "valid_share_actual", "tracks", "seconds", "artists"}``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; known: {', '.join(METHODS)}")
    if not 0.0 < valid_share < 1.0:
        raise ValueError(f"valid_share must be in (0, 1), got {valid_share}")
    items: tp.List[tp.Tuple[tp.Any, float]] = []
    seen: tp.Set[str] = set()
    for track, dur in tracks_with_durations:
        tid = _get(track, "track_id")
        if tid is None:
            raise ValueError(f"track without track_id: {track!r}")
        if tid in seen:
            raise ValueError(f"duplicate track_id {tid!r}")
        seen.add(tid)
        items.append((track, max(0.0, float(dur))))
    info: tp.Dict[str, tp.Any] = {"method_requested": method, "method_used": method, "reason": "as requested",
                                  "valid_share_target": valid_share, "seed": seed}
    assignment: tp.Dict[str, str] = {}
    used = method
    if method == "official":
        unassigned = 0
        for track, _ in items:
            raw = _get(track, "split")
            side = OFFICIAL_NAMES.get(str(raw).strip().lower()) if raw is not None else None
            if side is None:
                unassigned += 1
                side = "train"
            assignment[_get(track, "track_id")] = side
        info["without_official_split"] = unassigned
        if not any(side == "valid" for side in assignment.values()):
            used = "artist"
            info["reason"] = "fallback: no track has an official valid/validation/test split"
        elif unassigned:
            info["reason"] = f"official split; {unassigned} track(s) without one went to train"
    if used == "artist":
        known = {artist_key(_get(t, "artist")) for t, _ in items} - {None}
        grouped = [(_get(t, "track_id"), f"artist:{artist_key(_get(t, 'artist'))}"
                    if artist_key(_get(t, "artist")) else f"track:{_get(t, 'track_id')}", d) for t, d in items]
        if len(known) < 2:
            used = "track"
            info["reason"] = (("fallback: " if method == "artist" else info["reason"] + "; then ")
                              + f"fewer than 2 distinct known artists ({len(known)})")
        else:
            assignment = _by_groups(grouped, valid_share, seed)
            if not any(side == "valid" for side in assignment.values()):
                used = "track"
                info["reason"] = (("fallback: " if method == "artist" else info["reason"] + "; then ")
                                  + "no artist fits in valid without exceeding the target share "
                                  "(artist-disjoint split would leave valid empty)")
    if used == "track":
        assignment = _by_groups([(_get(t, "track_id"), f"track:{_get(t, 'track_id')}", d) for t, d in items],
                                valid_share, seed)
        if len(items) >= 2 and not any(side == "valid" for side in assignment.values()):
            # every track is longer than the target: the shortest one goes to valid (ties: by id)
            shortest = min(items, key=lambda x: (x[1], _get(x[0], "track_id")))
            assignment[_get(shortest[0], "track_id")] = "valid"
            info["reason"] += "; every track exceeds the target share, so the shortest went to valid"
    info["method_used"] = used
    seconds = {"train": 0.0, "valid": 0.0}
    tracks = {"train": 0, "valid": 0}
    artists: tp.Dict[str, tp.Set[str]] = {"train": set(), "valid": set()}
    for track, dur in items:
        side = assignment[_get(track, "track_id")]
        seconds[side] += dur
        tracks[side] += 1
        key = artist_key(_get(track, "artist"))
        if key:
            artists[side].add(key)
    total = seconds["train"] + seconds["valid"]
    info.update(valid_share_actual=round(seconds["valid"] / total, 6) if total else 0.0, tracks=tracks,
                seconds={k: round(v, 3) for k, v in seconds.items()},
                artists={"train": len(artists["train"]), "valid": len(artists["valid"]),
                         "on_both_sides": len(artists["train"] & artists["valid"])})
    if used != method:
        logger.warning("split: %s", info["reason"])
    if len(items) and not tracks["valid"]:
        logger.warning("split: valid is empty (%d track(s) in all)", len(items))
    return assignment, info


def check_no_leak(train_records: tp.Iterable[tp.Any], valid_records: tp.Iterable[tp.Any], *,
                  check_artists: bool = True) -> None:
    """Raise SplitLeakError if a track (or, with ``check_artists``, an artist) is on both sides.

    Records are mappings or objects with ``track_id`` and ``artist`` (per segment or per track), and optionally
    ``audio_hash`` (prepare's fingerprint of the decoded audio: the same audio under two names also leaks); unknown
    artists are not compared.

    Example:
        >>> check_no_leak([{"track_id": "a", "artist": "X"}], [{"track_id": "b", "artist": "Y"}])
        >>> try:
        ...     check_no_leak([{"track_id": "a", "artist": "X"}], [{"track_id": "b", "artist": "x"}])
        ... except SplitLeakError as e:
        ...     print(e)
        split leak: artist 'x' is in train (track a) and in valid (track b)
    """
    train_tracks: tp.Dict[str, tp.Any] = {}
    train_artists: tp.Dict[str, str] = {}
    train_audio: tp.Dict[str, str] = {}
    for rec in train_records:
        tid = _get(rec, "track_id")
        train_tracks.setdefault(tid, rec)
        audio_hash = _get(rec, "audio_hash")
        if audio_hash:
            train_audio.setdefault(audio_hash, tid)
        key = artist_key(_get(rec, "artist"))
        if key:
            train_artists.setdefault(key, tid)
    for rec in valid_records:
        tid = _get(rec, "track_id")
        if tid in train_tracks:
            raise SplitLeakError(f"split leak: track {tid!r} has segments in train and in valid")
        audio_hash = _get(rec, "audio_hash")
        if audio_hash and audio_hash in train_audio:
            raise SplitLeakError(f"split leak: track {tid!r} in valid has the same audio as track "
                                 f"{train_audio[audio_hash]!r} in train (a duplicate under another name)")
        key = artist_key(_get(rec, "artist"))
        if check_artists and key and key in train_artists:
            raise SplitLeakError(f"split leak: artist {key!r} is in train (track {train_artists[key]}) "
                                 f"and in valid (track {tid})")

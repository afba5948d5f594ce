"""What a prepared dataset holds: counts per stage, segment durations, manifest heads, genre/artist balance.

Example:
    >>> import tempfile
    >>> d = inspect_dataset("nothing_here", tempfile.mkdtemp())
    >>> d["exists"], d["segments"]
    (False, {'train': 0, 'valid': 0})
    >>> format_inspection(d).splitlines()[0]  # doctest: +ELLIPSIS
    'dataset nothing_here: not prepared (no ...)'
"""

from __future__ import annotations

import json
import logging
import math
import typing as tp
from collections import Counter
from pathlib import Path

from musicpipe import paths

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SPLITS = ("train", "valid")
HEAD_LINES = 3


def _read_json(path: Path) -> tp.Optional[tp.Dict[str, tp.Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def inspect_dataset(name: str, workspace: tp.Optional[PathLike] = None) -> tp.Dict[str, tp.Any]:
    """Summarize ``<ws>/data/<name>``: stages, durations, manifests, genres and artists per split.

    Returns a JSON-friendly dict: ``stages`` (source inputs from the report, converted and quarantined tracks
    from the markers, segment files on disk, segments per split), ``durations`` (histogram of segment
    durations), ``manifests`` (line count, first lines, files missing), ``genres``/``artists`` per split
    (segment counts), ``artists_on_both_sides``, ``report`` (the prepare report's counts and split).
    """
    import numpy as np
    from tqdm import tqdm

    root = paths.dataset_dir(name, workspace)
    report = _read_json(root / "prepare_report.json")
    audio_root = root / "audio"
    converted = quarantined = segment_files = 0
    if audio_root.is_dir():
        for track_dir in sorted(p for p in audio_root.iterdir() if p.is_dir()):
            marker = _read_json(track_dir / ".done.json")
            if marker and marker.get("status") == "ok":
                converted += 1
            elif marker and marker.get("status") == "quarantined":
                quarantined += 1
            segment_files += sum(1 for f in track_dir.iterdir()
                                 if f.suffix in (".wav", ".flac") and not f.name.startswith("."))
    out: tp.Dict[str, tp.Any] = {"name": name, "dataset_dir": str(root), "exists": root.is_dir(),
                                 "manifests": {}, "segments": {}, "genres": {}, "artists": {}}
    durations: tp.List[float] = []
    artists_by_side: tp.Dict[str, tp.Set[str]] = {}
    for side in SPLITS:
        manifest = root / "egs" / side / "data.jsonl"
        lines: tp.List[str] = []
        if manifest.is_file():
            lines = [line for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
        genres: Counter = Counter()
        artists: Counter = Counter()
        missing_files = missing_sidecars = 0
        seconds = 0.0
        for line in tqdm(lines, desc=f"inspect {name} {side}", unit="segment", disable=len(lines) < 5000):
            rec = json.loads(line)
            durations.append(float(rec["duration"]))
            seconds += float(rec["duration"])
            path = Path(rec["path"])
            if not path.is_file():
                missing_files += 1
            info = _read_json(path.with_suffix(".json"))
            if info is None:
                missing_sidecars += 1
                continue
            genres[str(info.get("genre") or "(none)")] += 1
            artists[str(info.get("artist") or "(unknown)")] += 1
        out["manifests"][side] = {"path": str(manifest), "exists": manifest.is_file(), "lines": len(lines),
                                  "head": lines[:HEAD_LINES], "hours": round(seconds / 3600, 6),
                                  "missing_files": missing_files, "missing_sidecars": missing_sidecars}
        out["segments"][side] = len(lines)
        out["genres"][side] = dict(sorted(genres.items(), key=lambda kv: (-kv[1], kv[0])))
        out["artists"][side] = dict(sorted(artists.items(), key=lambda kv: (-kv[1], kv[0])))
        artists_by_side[side] = set(artists) - {"(unknown)"}
    out["artists_on_both_sides"] = sorted(artists_by_side["train"] & artists_by_side["valid"])
    segment_seconds = float((report or {}).get("config", {}).get("segment_seconds", 10.0))
    if durations:
        top = math.floor(max(max(durations), segment_seconds)) + 1  # 1 s bins [k, k+1): 10.0 s in [10, 11)
        counts, edges = np.histogram(durations, bins=top if top <= 20 else 20, range=(0.0, float(top)))
        out["durations"] = {"count": len(durations), "min": round(min(durations), 6),
                            "max": round(max(durations), 6), "mean": round(sum(durations) / len(durations), 6),
                            "bins": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts],
                            "segment_seconds": segment_seconds}
    else:
        out["durations"] = {"count": 0, "bins": [], "counts": [], "segment_seconds": segment_seconds}
    counts = (report or {}).get("counts", {})
    out["stages"] = {"source_inputs": counts.get("inputs"), "converted_tracks": converted,
                     "quarantined": quarantined, "segment_files": segment_files,
                     "segments_train": out["segments"]["train"], "segments_valid": out["segments"]["valid"]}
    out["report"] = None if report is None else {
        "counts": counts, "split": report.get("split"), "quarantine_reasons": report.get("quarantine_reasons"),
        "missing_metadata": report.get("missing_metadata"), "clipping": report.get("clipping")}
    return out


def _top(counts: tp.Mapping[str, int], n: int = 8) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} {v}" for k, v in items[:n])
    return text + (f", ... ({len(items) - n} more)" if len(items) > n else "") if items else "-"


def format_inspection(d: tp.Mapping[str, tp.Any]) -> str:
    """Human-readable text of :func:`inspect_dataset`'s result."""
    if not d.get("exists"):
        return f"dataset {d['name']}: not prepared (no {d['dataset_dir']})"
    st = d["stages"]
    if not any(m["exists"] for m in d["manifests"].values()):
        return (f"dataset {d['name']}: {d['dataset_dir']}: manifests missing (no egs/train or egs/valid data.jsonl): "
                f"its prepare or combine did not finish ({st['converted_tracks']} converted tracks, "
                f"{st['segment_files']} segment files on disk); re-run it")
    lines = [f"dataset {d['name']}: {d['dataset_dir']}",
             f"  stages: {st['source_inputs'] if st['source_inputs'] is not None else '?'} source inputs -> "
             f"{st['converted_tracks']} converted tracks ({st['quarantined']} quarantined) -> "
             f"{st['segment_files']} segment files -> {st['segments_train']} train / {st['segments_valid']} valid"]
    rep = d.get("report")
    if rep:
        split = rep.get("split") or {}
        lines.append(f"  split: {split.get('method_used')} ({split.get('reason')}); valid share "
                     f"{split.get('valid_share_actual', 0):.3f} of duration (target {split.get('valid_share_target')})")
        if rep.get("quarantine_reasons"):
            lines.append("  quarantined: " + _top(rep["quarantine_reasons"]))
        mm = rep.get("missing_metadata") or {}
        if mm:
            lines.append(f"  missing metadata (of {mm.get('of_tracks', 0)} tracks): "
                         + ", ".join(f"{k} {v}" for k, v in mm.items() if k != "of_tracks" and v))
    dur = d["durations"]
    if dur["count"]:
        lines.append(f"  segment durations: {dur['count']} segments, min {dur['min']:.2f} s, mean {dur['mean']:.2f} s, "
                     f"max {dur['max']:.2f} s")
        peak = max(dur["counts"]) or 1
        for lo, hi, c in zip(dur["bins"][:-1], dur["bins"][1:], dur["counts"]):
            if c:
                lines.append(f"    {lo:6.1f}-{hi:<6.1f} s {c:7d} {'#' * max(1, round(30 * c / peak))}")
    for side in SPLITS:
        m = d["manifests"][side]
        if not m["exists"]:  # a prepare or combine that never finished: not an empty split
            lines.append(f"  {side}: manifest missing ({m['path']}): prepare or combine did not finish; re-run it")
            continue
        lines.append(f"  {side}: {m['lines']} segments, {m['hours']:.3f} h, {m['path']}"
                     + (f"; {m['missing_files']} missing files" if m["missing_files"] else "")
                     + (f"; {m['missing_sidecars']} missing sidecars" if m["missing_sidecars"] else ""))
        for line in m["head"]:
            lines.append(f"    {line}")
        lines.append(f"    genres: {_top(d['genres'][side])}")
        lines.append(f"    artists ({len(d['artists'][side])}): {_top(d['artists'][side])}")
    if d["artists_on_both_sides"]:
        lines.append(f"  artists on both sides: {', '.join(d['artists_on_both_sides'][:10])}")
    return "\n".join(lines)

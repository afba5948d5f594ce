"""Combine several prepared datasets into one (the seed's "all files"): symlinks and manifests, nothing copied.

``<ws>/data/<new>/audio/<dataset>`` is a symlink to each source's ``audio/`` folder, and the combined
manifests list the sources' segments through those links, so the combined dataset is a tree of its
own while the audio stays where it is. Sidecars come along (they sit beside the audio).

Example:
    >>> from musicpipe.combine import combine_datasets
    >>> combine_datasets(["fma_small_mini", "my_folder"], "all_files")   # doctest: +SKIP
    {'name': 'all_files', 'train': ..., 'valid': ..., 'sources': {...}}
"""

from __future__ import annotations

import json
import logging
import os
import typing as tp
from pathlib import Path

from musicpipe import atomic, manifests, paths, procs
from musicpipe.split import check_no_leak

logger = logging.getLogger(__name__)


class CombineError(ValueError):
    """The datasets cannot be combined (names the dataset or file and the reason)."""


def _link(link: Path, target: Path) -> None:
    """Create or repoint ``link`` -> ``target`` atomically."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() and not link.is_symlink():
        raise CombineError(f"{link} exists and is not a symlink: refusing to replace it")
    atomic.symlink(link, target, target_is_directory=True)


def _sidecar(path: str) -> tp.Dict[str, tp.Any]:
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def combine_datasets(names: tp.Sequence[str], new_name: str, workspace: tp.Optional[tp.Union[str, Path]] = None,
                     *, check_artists: bool = True) -> tp.Dict[str, tp.Any]:
    """Combine prepared datasets ``names`` into ``new_name`` (``dset=audio/<new_name>`` afterwards).

    A segment listed by two sources (e.g. fma_small_mini inside fma_small) is kept once. Fails with
    :class:`CombineError` when a source is not prepared, and with the split's leak error when an
    artist or track would end up in both train and valid.
    """
    if len(set(names)) != len(names) or not names:
        raise CombineError(f"give distinct dataset names to combine, got {list(names)}")
    if new_name in names:
        raise CombineError(f"the combined dataset {new_name!r} cannot also be one of its sources")
    root = paths.dataset_dir(new_name, workspace)
    # the lock prepare takes: one writer of a dataset's manifests at a time
    with procs.exclusive(root / ".prepare.lock", f"dataset {new_name} (another prepare or combine)"):
        return _combine(names, new_name, workspace, root, check_artists)


def _combine(names: tp.Sequence[str], new_name: str, workspace: tp.Optional[tp.Union[str, Path]], root: Path,
             check_artists: bool) -> tp.Dict[str, tp.Any]:
    records: tp.Dict[str, tp.List[manifests.AudioRecord]] = {"train": [], "valid": []}
    seen: tp.Dict[str, str] = {}
    per_source: tp.Dict[str, tp.Dict[str, int]] = {}
    docs: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]] = {"train": [], "valid": []}
    for name in names:
        src = paths.dataset_dir(name, workspace)
        audio = (src / "audio").resolve()
        for split in ("train", "valid"):
            if not (src / "egs" / split / "data.jsonl").exists():
                raise CombineError(f"{src / 'egs' / split / 'data.jsonl'} is missing: prepare {name!r} first")
        link = root / "audio" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        _link(link, audio)
        counts = {"train": 0, "valid": 0, "duplicates": 0}
        for split in ("train", "valid"):
            for rec in manifests.read_manifest(src / "egs" / split):
                real = str(Path(rec.path).resolve())
                if real in seen:
                    if seen[real] != split:
                        raise CombineError(f"{rec.path} is in {seen[real]} in one source and in {split} in {name}")
                    counts["duplicates"] += 1
                    continue
                seen[real] = split
                try:
                    rel = Path(real).relative_to(audio)
                except ValueError:
                    raise CombineError(f"{name}: manifest entry {rec.path} is outside {audio}") from None
                path = str(link / rel)
                records[split].append(manifests.AudioRecord(path=path, duration=rec.duration,
                                                            sample_rate=rec.sample_rate, amplitude=rec.amplitude,
                                                            weight=rec.weight, info_path=rec.info_path))
                info = _sidecar(real)
                docs[split].append({"track_id": f"{name}/{info.get('track_id') or Path(real).parent.name}",
                                    "artist": info.get("artist")})
                counts[split] += 1
        per_source[name] = counts
    check_no_leak(docs["train"], docs["valid"], check_artists=check_artists)
    rates = {r.sample_rate for recs in records.values() for r in recs}
    if len(rates) > 1:
        raise CombineError(f"the datasets have different sample rates {sorted(rates)}: prepare them at one rate")
    manifests.write_manifests(records, root / "egs")  # train and valid replaced as a unit
    config = manifests.write_dset_config(new_name, workspace, sample_rate=rates.pop() if rates else 32000)
    result = {"name": new_name, "train": len(records["train"]), "valid": len(records["valid"]),
              "sources": per_source, "dset_config": str(config)}
    atomic.write_json(root / "combine_report.json", result, indent=1)
    logger.info("combined %s into %s: %d train / %d valid segments", ", ".join(names), new_name,
                result["train"], result["valid"])
    return result

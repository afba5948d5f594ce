"""combine: several prepared datasets into one through symlinks; nothing copied, no leaks."""

import json
import os

import pytest

from musicpipe import combine, manifests
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic
from musicpipe.split import SplitLeakError


@pytest.fixture()
def two_datasets(tmp_path):
    cfg = PrepareConfig(num_jobs=1, split="track", valid_share=0.25)
    synthetic.prepare_synthetic("set_a", tmp_path, cfg, tracks_per_genre=2, genres=["rock", "techno"], progress=False)
    synthetic.prepare_synthetic("set_b", tmp_path, cfg, tracks_per_genre=2, genres=["ambient", "chiptune"],
                                progress=False)
    return tmp_path


def _sizes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_combined_manifests_go_through_symlinks_and_copy_nothing(two_datasets):
    ws = two_datasets
    res = combine.combine_datasets(["set_a", "set_b"], "all_files", ws)
    root = ws / "data" / "all_files"
    for name in ("set_a", "set_b"):
        link = root / "audio" / name
        assert link.is_symlink() and link.resolve() == (ws / "data" / name / "audio").resolve()
    train, valid = manifests.read_manifest(root / "egs" / "train"), manifests.read_manifest(root / "egs" / "valid")
    src = sum(len(manifests.read_manifest(ws / "data" / n / "egs" / s)) for n in ("set_a", "set_b")
              for s in ("train", "valid"))
    assert len(train) + len(valid) == src == res["train"] + res["valid"]
    for rec in train + valid:
        assert rec.path.startswith(str(root / "audio")) and os.path.exists(rec.path)
        assert json.loads(open(rec.path[:-4] + ".json").read())["genre"]  # sidecars come along
    assert _sizes(root) < 20_000  # manifests, report and config only: no audio copied
    assert (ws / "config" / "dset" / "audio" / "all_files.yaml").exists()
    first = (root / "egs" / "train" / "data.jsonl").read_bytes()
    combine.combine_datasets(["set_a", "set_b"], "all_files", ws)
    assert (root / "egs" / "train" / "data.jsonl").read_bytes() == first


def test_combine_refuses_a_leak_and_an_unprepared_source(two_datasets):
    ws = two_datasets
    train_artist = json.loads(open(manifests.read_manifest(ws / "data" / "set_a" / "egs" / "train")[0].path[:-4]
                                   + ".json").read())["artist"]
    side = manifests.read_manifest(ws / "data" / "set_b" / "egs" / "valid")[0].path[:-4] + ".json"
    doc = json.loads(open(side).read())
    doc["artist"] = train_artist
    open(side, "w").write(json.dumps(doc))
    with pytest.raises(SplitLeakError, match="artist"):
        combine.combine_datasets(["set_a", "set_b"], "leaky", ws)
    with pytest.raises(combine.CombineError, match="prepare 'nope' first"):
        combine.combine_datasets(["set_a", "nope"], "x", ws)


def test_combine_takes_the_dataset_lock_prepare_takes(two_datasets):
    from musicpipe import procs

    ws = two_datasets
    root = ws / "data" / "all_files"
    with procs.exclusive(root / ".prepare.lock", "a prepare in another terminal"):
        with pytest.raises(procs.BusyError, match=r"dataset all_files \(another prepare or combine\) is in use by "
                                                  rf"another process \(PID {os.getpid()}"):
            combine.combine_datasets(["set_a", "set_b"], "all_files", ws)
    assert not (root / "egs").exists()  # nothing written by the side that lost
    assert combine.combine_datasets(["set_a", "set_b"], "all_files", ws)["train"] > 0

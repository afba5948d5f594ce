"""prepare --verify: per-segment content hashes recorded at write time; damaged segments found and re-converted."""

from __future__ import annotations

import json
import os
from pathlib import Path


from conftest import run_cli
from musicpipe import manifests, paths, prepare
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic

NAME = "synth"


def _run(ws: Path, **kw) -> dict:
    return synthetic.prepare_synthetic(NAME, ws, PrepareConfig(num_jobs=1, **kw), tracks_per_genre=2, duration=4.0,
                                       progress=False)


def _train(ws: Path) -> list:
    return manifests.read_manifest(paths.dataset_dir(NAME, ws) / "egs" / "train")


def test_hashes_recorded_and_damage_repaired(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _run(ws)
    recs = _train(ws)
    originals = {r.path: Path(r.path).read_bytes() for r in recs}
    for rec in recs:  # every segment's marker entry holds the hash of the bytes on disk
        marker = json.loads((Path(rec.path).parent / prepare.MARKER).read_text())
        seg = next(s for s in marker["segments"] if s["file"] == Path(rec.path).name)
        assert seg["blake2b"] == prepare.file_content_hash(rec.path)
    body, whole = Path(recs[0].path), Path(recs[1].path)
    data = bytearray(body.read_bytes())
    data[44:] = os.urandom(len(data) - 44)          # same size, header intact: only the hash can tell
    body.write_bytes(bytes(data))
    whole.write_bytes(os.urandom(whole.stat().st_size))  # same size, header gone
    manifest_before = (paths.dataset_dir(NAME, ws) / "egs" / "train" / "data.jsonl").read_bytes()

    _run(ws)  # a plain re-run trusts sizes: the damage stays
    assert body.read_bytes() != originals[str(body)]

    report = _run(ws, verify=True)
    assert body.read_bytes() == originals[str(body)] and whole.read_bytes() == originals[str(whole)]
    assert report["run"]["repaired"] == 2 and report["run"]["verified_segments"] >= len(recs)
    assert (paths.dataset_dir(NAME, ws) / "egs" / "train" / "data.jsonl").read_bytes() == manifest_before

    report = _run(ws, verify=True)  # nothing left to repair
    assert report["run"].get("repaired", 0) == 0


def test_cli_verify_flag(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    args = ("prepare", "synthetic", "--name", NAME, "--tracks-per-genre", "2", "--duration", "4", "--workspace",
            str(ws), "--num-jobs", "1")
    env = {**os.environ, "MUSICPIPE_WORKSPACE": str(ws)}
    assert run_cli(*args, env=env, timeout=300).returncode == 0
    victim = Path(_train(ws)[0].path)
    original = victim.read_bytes()
    victim.write_bytes(original[:44] + os.urandom(len(original) - 44))
    res = run_cli(*args, "--verify", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"verify: {victim}: content differs from what prepare wrote (BLAKE2b mismatch)" in res.stderr
    assert victim.read_bytes() == original

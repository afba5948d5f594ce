"""musicpipe.xp: one XP type resolved from every form users type, one rule for kind and for `latest`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from musicpipe import paths, presets
from musicpipe.xp import XP, XPError, epoch_checkpoints, kind_of_solver


def _xp(ws: Path, sig: str, solver: str | None = "compression", *, dataset: str | None = None,
        record_dataset: str | None = None, checkpoint: bool = True, age: float = 0.0, codec: str | None = None,
        extra: dict | None = None) -> Path:
    """An XP folder as Dora and musicpipe leave it."""
    folder = paths.xp_dir(sig, ws)
    (folder / ".hydra").mkdir(parents=True)
    if solver is not None:
        cfg = {"solver": solver, "sample_rate": 32000, "channels": 1, "rvq": {"n_q": 4, "bins": 256}}
        if dataset:
            cfg["datasource"] = {"train": "${oc.env:MUSICPIPE_WORKSPACE,/root/workspace}/data/" + dataset + "/egs/train",
                                 "valid": "${oc.env:MUSICPIPE_WORKSPACE,/root/workspace}/data/" + dataset + "/egs/valid"}
        if codec:
            cfg["compression_model_checkpoint"] = codec
        cfg.update(extra or {})
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if record_dataset:
        (folder / "musicpipe.json").write_text(json.dumps({"sig": sig, "dataset": record_dataset}))
    if checkpoint:
        ckpt = folder / "checkpoint.th"
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (time.time() - age, time.time() - age))
    return folder


def test_kind_has_one_rule() -> None:
    assert [kind_of_solver(s) for s in ("compression", "musicgen", "audiogen", "magnet", "diffusion", None)] == \
        ["codec", "lm", "lm", "lm", "generic", "generic"]


def test_resolve_every_form(tmp_path: Path) -> None:
    ws = tmp_path / "ws é"
    folder = _xp(ws, "0a1b2c3d", dataset="set_a")
    (folder / "history.json").write_text(json.dumps([{"train": {"sisnr": 1.0}}, {"train": {"sisnr": 2.0}}]))
    for name in ("checkpoint_1.th", "checkpoint_2.th", "checkpoint_2.th.tmp"):
        (folder / name).write_bytes(b"x")
    pub = tmp_path / "outputs" / "Checkpoints Small" / "0a1b2c3d"
    pub.mkdir(parents=True)
    (pub / "checkpoint.th").symlink_to(folder / "checkpoint.th")
    forms = ["0a1b2c3d", str(folder), str(folder / "checkpoint.th"), str(folder / "checkpoint_1.th"),
             str(pub / "checkpoint.th"), str(pub)]
    for form in forms:
        xp = XP.resolve(form, ws if form == "0a1b2c3d" else None)
        assert (xp.sig, xp.folder.resolve(), xp.workspace.resolve()) == ("0a1b2c3d", folder.resolve(), ws.resolve()), \
            form
    xp = XP.resolve("0a1b2c3d", ws, kind="codec")
    assert xp.kind == "codec" and xp.solver == "compression" and xp.dataset == "set_a"
    assert xp.epochs_done == 2 and [h["train"]["sisnr"] for h in xp.history] == [1.0, 2.0]
    assert xp.checkpoints == {1: folder / "checkpoint_1.th", 2: folder / "checkpoint_2.th"}
    assert xp.codec_info() == presets.CodecInfo(sig="0a1b2c3d", n_q=4, card=256, sample_rate=32000, channels=1)
    assert xp.egs_dir("valid") == ("set_a", ws.resolve() / "data" / "set_a" / "egs" / "valid")
    assert xp.finished(2) and not xp.finished(3) and not xp.finished(None)
    xp.write_record(kind="compression", dataset="set_b")
    assert json.loads((folder / "musicpipe.json").read_text()) == {"sig": "0a1b2c3d", "kind": "compression",
                                                                   "dataset": "set_b"}
    assert xp.record["dataset"] == "set_b" and xp.dataset == "set_b"  # the record wins over the config


def test_latest_is_the_newest_checkpoint_of_the_kind_on_the_dataset(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with pytest.raises(XPError, match="no codec XP with a checkpoint under"):
        XP.latest("codec", workspace=ws)
    _xp(ws, "aaaaaaaa", dataset="set_a", age=300)
    _xp(ws, "bbbbbbbb", dataset="set_b", age=200)
    _xp(ws, "cccccccc", solver="musicgen", dataset="set_a", age=0, codec="//sig/aaaaaaaa")  # an LM, newest
    _xp(ws, "dddddddd", dataset="set_a", checkpoint=False)  # not trained yet
    _xp(ws, "eeeeeeee", solver=None, record_dataset="set_a", age=100)  # config missing, no recorded kind
    assert XP.latest("codec", workspace=ws).sig == "bbbbbbbb"
    assert XP.latest("codec", dataset="set_a", workspace=ws).sig == "aaaaaaaa"
    assert XP.resolve("latest", ws, kind="compression", dataset="set_a").sig == "aaaaaaaa"
    assert XP.latest("lm", workspace=ws).sig == "cccccccc"
    with pytest.raises(XPError, match="no language model XP for dataset 'set_b'"):
        XP.latest("lm", dataset="set_b", workspace=ws)
    with pytest.raises(XPError, match="needs a kind"):
        XP.resolve("latest", ws)
    lm = XP.resolve("cccccccc", ws, kind="lm")
    assert lm.codec.sig == "aaaaaaaa" and lm.codec_ref == "//sig/aaaaaaaa"


def test_refusals_name_the_xp_and_the_reason(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _xp(ws, "cccccccc", solver="musicgen")
    with pytest.raises(XPError, match=r"cccccccc: solver 'musicgen', not a codec \(compression\) XP"):
        XP.resolve("cccccccc", ws, kind="codec")
    codec = XP.resolve(_xp(ws, "aaaaaaaa"), kind="codec")
    with pytest.raises(XPError, match=r"aaaaaaaa: solver 'compression', not an LM \(musicgen\) XP"):
        XP.resolve("aaaaaaaa", ws, kind="lm")
    with pytest.raises(XPError, match="only a language model has a codec"):
        codec.codec
    with pytest.raises(XPError, match="no such XP in workspace"):
        XP.resolve("0badf00d", ws)
    with pytest.raises(XPError, match="no such XP folder or checkpoint"):
        XP.resolve(str(tmp_path / "nowhere"), ws)
    plain = tmp_path / "plain folder"
    plain.mkdir()
    with pytest.raises(XPError, match="neither an XP folder .* nor an export folder"):
        XP.resolve(str(plain))
    broken = _xp(ws, "0000f00d", solver=None, checkpoint=False)
    (broken / ".hydra" / "config.yaml").write_text("solver: [unclosed\n")
    with pytest.raises(XPError, match=r"config.yaml is unreadable"):
        XP.resolve("0000f00d", ws, kind="codec")
    bad_history = _xp(ws, "12345678")
    (bad_history / "history.json").write_text("{not json")
    with pytest.raises(XPError, match="history.json is malformed"):
        XP.resolve("12345678", ws).history
    assert XP.resolve("12345678", ws).epochs_done == 0
    with pytest.raises(XPError, match="is missing: 0000f00d has not saved a checkpoint yet"):
        XP.from_sig("0000f00d", ws).require_checkpoint()


def test_export_folders_are_xps_too(tmp_path: Path) -> None:
    import torch

    release = tmp_path / "musicgen-tiny"
    release.mkdir()
    cfg = {"solver": "musicgen", "sample_rate": 32000, "conditioners": {"genre": {"model": "lut"}}}
    torch.save({"best_state": {}, "xp.cfg": yaml.safe_dump(cfg), "version": "1.3.0", "exported": True},
               release / "state_dict.bin")
    torch.save({"best_state": {}, "xp.cfg": yaml.safe_dump({"solver": "compression", "sample_rate": 32000,
                                                            "channels": 1, "rvq": {"n_q": 4, "bins": 256}})},
               release / "compression_state_dict.bin")
    lm = XP.resolve(str(release), kind="lm")
    assert lm.is_export and lm.sig is None and lm.name == str(release.resolve())
    assert lm.kind == "lm" and lm.conditioners == ["genre"] and lm.history == [] and lm.checkpoints == {}
    assert lm.checkpoint == release.resolve() / "state_dict.bin"
    assert lm.codec.is_export and lm.codec.folder == lm.folder
    (release / "state_dict.bin").unlink()
    codec = XP.resolve(str(release), kind="codec")
    assert codec.kind == "codec" and codec.codec_info().n_q == 4
    (release / "compression_state_dict.bin").write_bytes(b"truncated")
    with pytest.raises(XPError, match="not a readable AudioCraft package"):
        XP.resolve(str(release)).config


def test_epoch_checkpoints_ignore_everything_but_per_epoch_files() -> None:
    assert epoch_checkpoints(["checkpoint.th", "checkpoint_10.th", "checkpoint_2.th", "checkpoint_3.th.1",
                              "checkpoint_best.th"]) == {2: "checkpoint_2.th", 10: "checkpoint_10.th"}

"""Released models (musicpipe.release) and the refusals of `train-lm --init-from` / `--codec <release>`.

Release folders here are written the way `musicpipe export` and AudioCraft write them (a torch package with
the stored `xp.cfg`); nothing is trained. The fine-tune that really trains is tests/integration/test_finetune.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from musicpipe import paths, presets, release, training

GENRE_LM = {"solver": "musicgen", "sample_rate": 32000, "channels": 1, "lm_model": "transformer_lm",
            "transformer_lm": {"dim": 64, "num_heads": 2, "num_layers": 2, "n_q": 4, "card": 256},
            "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}},
            "conditioners": {"genre": {"model": "lut", "lut": {"n_bins": 256, "dim": 64, "tokenizer": "noop"}}},
            "fuser": {"cross": ["genre"], "sum": [], "prepend": [], "input_interpolate": []},
            "classifier_free_guidance": {"training_dropout": 0.2, "inference_coef": 3.0},
            "attribute_dropout": {"text": {}, "wav": {}}}
CODEC = {"solver": "compression", "sample_rate": 32000, "channels": 1, "rvq": {"n_q": 4, "bins": 256},
         "seanet": {"ratios": [8, 5, 4, 4]}}


def _release(folder: Path, lm: dict | None = GENRE_LM, codec: dict | None = CODEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if lm is not None:
        torch.save({"best_state": {}, "xp.cfg": yaml.safe_dump(lm), "exported": True}, folder / "state_dict.bin")
    if codec is not None:
        torch.save({"best_state": {}, "xp.cfg": yaml.safe_dump(codec), "exported": True},
                   folder / "compression_state_dict.bin")
    return folder


def test_a_release_folder_is_read_from_its_stored_config(tmp_path: Path) -> None:
    rel = release.Release.resolve(str(_release(tmp_path / "my release é")))
    assert not rel.hub and rel.ref == str((tmp_path / "my release é").resolve())
    assert rel.pretrained == f"//pretrained/{rel.ref}"
    assert rel.conditioning == "genre"
    checkpoint, spec = rel.codec
    assert checkpoint == rel.pretrained
    assert spec == release.CodecSpec(n_q=4, card=256, sample_rate=32000, channels=1, frame_rate=50.0)
    assert release.architecture_overrides(rel.lm_config)[:3] == [
        "++lm_model=transformer_lm", "++transformer_lm.card=256", "++transformer_lm.dim=64"]
    name = release.write_conditioner_config(rel, tmp_path / "ws")
    written = yaml.safe_load((tmp_path / "ws" / "config" / "conditioner" / f"{name}.yaml").read_text())
    assert written["conditioners"] == GENRE_LM["conditioners"] and written["fuser"]["cross"] == ["genre"]
    assert release.write_conditioner_config(rel, tmp_path / "ws") == name  # same content, same name
    # AudioCraft's own release layout: the codec is a pointer to a hub codec
    pointer = tmp_path / "hub-like"
    _release(pointer, codec=None)
    torch.save({"pretrained": "facebook/encodec_32khz"}, pointer / "compression_state_dict.bin")
    assert release.Release.resolve(str(pointer)).codec == ("//pretrained/facebook/encodec_32khz",
                                                           release.KNOWN_CODECS["facebook/encodec_32khz"])


def test_release_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(release.ReleaseError, match="no such folder, and not a Hugging Face id"):
        release.Release.resolve(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(release.ReleaseError, match=r"empty/state_dict.bin is missing: a release folder holds"):
        release.Release.resolve(str(empty)).lm_config
    broken = _release(tmp_path / "broken", codec=None)
    (broken / "state_dict.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(release.ReleaseError, match="state_dict.bin: not a readable AudioCraft package"):
        release.Release.resolve(str(broken)).lm_config
    codec_only = _release(tmp_path / "codec only", lm={"solver": "compression", "rvq": {"n_q": 4, "bins": 8}})
    with pytest.raises(release.ReleaseError, match="no transformer_lm: not a MusicGen LM"):
        release.Release.resolve(str(codec_only)).lm_config


def test_a_hub_id_offline_fails_fast_with_the_reason(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rel = release.Release.resolve("facebook/musicgen-small")
    assert rel.hub and rel.pretrained == "//pretrained/facebook/musicgen-small"
    with pytest.raises(release.ReleaseError, match=r"facebook/musicgen-small: state_dict.bin is not in the local "
                                                   r"Hugging Face cache and http://127.0.0.1:9/.* cannot be reached"):
        rel.lm_config
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(release.ReleaseError, match="HF_HUB_OFFLINE is set"):
        release.Release.resolve("facebook/musicgen-small").lm_config
    # a released codec known by id needs no download to be checked
    info = release.codec_info("facebook/encodec_32khz")
    assert (info.n_q, info.card, info.sample_rate, info.checkpoint) == (4, 2048, 32000,
                                                                       "//pretrained/facebook/encodec_32khz")


def _cli(*args: str, ws: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "musicpipe", *args, "--workspace", str(ws)], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={**os.environ, **(env or {})})


def _xps(ws: Path) -> set:
    root = paths.dora_dir(ws) / "xps"
    return set(os.listdir(root)) if root.is_dir() else set()


def test_train_lm_refusals_launch_nothing(tmp_path: Path, workspace: Path, demo_data) -> None:
    ws = workspace
    before = _xps(ws)
    genre = _release(tmp_path / "genre release")
    base = ("train-lm", "--preset", "demo_cpu", "--dataset", "synthetic_demo")
    # a conditioner the release does not have
    res = _cli(*base, "--init-from", str(genre), "--conditioning", "text", ws=ws)
    assert res.returncode == 2
    assert f"--conditioning text: the released model {genre.resolve()} is conditioned on genre" in res.stderr
    # a codec whose codebooks / card / frame rate differ from the LM's
    other = _release(tmp_path / "other codec", lm=None, codec={**CODEC, "rvq": {"n_q": 2, "bins": 128},
                                                              "seanet": {"ratios": [8, 5, 4, 2]}})
    res = _cli(*base, "--init-from", str(genre), "--codec", str(other), ws=ws)
    assert res.returncode == 2
    assert (f"the codec {other.resolve()} does not fit the LM {genre.resolve()}: codebooks (n_q) 4 vs 2; codebook "
            "size (card) 256 vs 128; frame rate 50 vs 100 (LM vs codec)") in res.stderr
    # a folder without the files
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _cli(*base, "--init-from", str(empty), ws=ws)
    assert res.returncode == 2 and f"{empty}/state_dict.bin is missing" in res.stderr
    # a hub id, offline
    res = _cli(*base, "--init-from", "facebook/musicgen-small", ws=ws,
               env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": ""})
    assert res.returncode == 2 and "cannot be reached" in res.stderr and "pass a local release folder" in res.stderr
    # from scratch without a codec
    res = _cli(*base, ws=ws)
    assert res.returncode == 2 and "an LM trains on a codec: pass --codec" in res.stderr
    for r in (res,):
        assert len(r.stderr.strip().splitlines()) >= 1 and "Traceback" not in r.stderr
    assert _xps(ws) == before  # nothing launched


def test_dry_run_fine_tune_command(tmp_path: Path, workspace: Path, demo_data) -> None:
    genre = _release(tmp_path / "genre release")
    res = _cli("train-lm", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--init-from", str(genre),
               "--dry-run", ws=workspace)
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    key = release.Release.resolve(str(genre)).key
    assert line.startswith("dora run solver=musicgen/musicgen_base_32khz dset=audio/synthetic_demo "
                           f"conditioner=release_{key} ")
    assert f"continue_from='//pretrained/{genre.resolve()}'" in line
    assert f"compression_model_checkpoint='//pretrained/{genre.resolve()}'" in line
    assert "model/lm/model_scale" not in line and "++transformer_lm.dim=64" in line
    assert "optim.lr=0.001" in line  # the preset's fine-tuning settings stay
    plan = training.plan_lm("demo_cpu", None, "synthetic_demo", workspace, init_from=str(genre))
    assert plan.conditioning == "genre" and plan.codec == presets.CodecInfo(
        sig=str(genre.resolve()), n_q=4, card=256, sample_rate=32000, channels=1,
        checkpoint=f"//pretrained/{genre.resolve()}", frame_rate=50.0)

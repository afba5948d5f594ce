"""Training workflows on the demo_cpu preset: published checkpoints, export and generation from it,
continuation, `--codec latest`, refusals, and resume after a killed run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch

from musicpipe import export, generation, manifests, paths, training
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic
from musicpipe.xp import RECORD, XP
from conftest import REPO, run_cli

pytestmark = pytest.mark.integration


def test_checkpoints_are_published_with_their_config(workspace, outputs, codec, lm_none):
    for run in (codec, lm_none):
        dest = outputs / "Checkpoints Small" / run.sig
        assert (dest / "checkpoint.th").is_symlink()
        assert (dest / "checkpoint.th").resolve() == run.checkpoint.resolve()
        best = torch.load(dest / "best_state.th", map_location="cpu", weights_only=True)
        assert best["exported"] and any(isinstance(v, torch.Tensor) for v in best["best_state"].values())
        assert "solver:" in (dest / "config.yaml").read_text()
        assert json.loads((dest / "xp.json").read_text())["sig"] == run.sig
        assert json.loads((dest / "argv.json").read_text()) == json.loads((run.folder / ".argv.json").read_text())
        record = json.loads((run.folder / RECORD).read_text())
        assert record["sig"] == run.sig and record["dataset"] == "synthetic_demo"


def test_export_loads_in_audiocraft_and_generates(workspace, tmp_path, codec, lm_none, lm_genre):
    from audiocraft.models import loaders

    folder = export.export_model(lm_none.sig, tmp_path / "uncond", workspace)
    info = json.loads((folder / "musicpipe.json").read_text())
    assert (info["lm_xp"], info["codec_xp"]) == (lm_none.sig, codec.sig)
    lm = loaders.load_lm_model(folder)  # AudioCraft's own loader: conditioners saved as {} not null
    assert lm.cfg.transformer_lm.card == 256
    wav = generation.generate(model=generation.load_exported(folder), num_samples=1, duration=1.0)
    assert wav.shape == (1, 1, 32000) and torch.isfinite(wav).all() and wav.abs().max() > 0

    res = run_cli("export", lm_genre, "--workspace", str(workspace), "--out", str(tmp_path / "genre"))
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "samples"
    res = run_cli("generate", "--export", str(tmp_path / "genre"), "--genre", "rock", "--genre", "techno",
                  "--duration", "1.0", "--output", str(out), script="musicgen_generate.py")
    assert res.returncode == 0, res.stderr[-2000:]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["genres"] == ["rock", "techno"] and len(settings["files"]) == 2
    for name in settings["files"]:
        info = sf.info(out / name)
        assert (info.samplerate, info.channels) == (32000, 1) and abs(info.frames - 32000) < 1000
    # --num-samples with prompts: that many per prompt, side by side, each its own file and its own draw
    res = run_cli("generate", "--export", str(tmp_path / "genre"), "--genre", "rock", "--genre", "techno",
                  "--num-samples", "2", "--duration", "1.0", "--output", str(tmp_path / "two each"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith("generate: 4 sample(s) of 1.0 s at 32000 Hz")
    settings = json.loads((tmp_path / "two each" / "settings.json").read_text())
    assert settings["genres"] == ["rock", "rock", "techno", "techno"] and settings["num_samples"] == 4
    assert len(set(settings["files"])) == 4
    rock = [sf.read(tmp_path / "two each" / name)[0] for name in settings["files"][:2]]
    assert rock[0].shape == rock[1].shape and not (rock[0] == rock[1]).all()


def test_continuation_from_prompt_audio(workspace, tmp_path, lm_none, demo_data):
    seg = manifests.read_manifest(paths.dataset_dir("synthetic_demo", workspace) / "egs" / "train")[0].path
    audio, sr = sf.read(seg, dtype="float32")
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, audio[:sr], sr)
    res = run_cli("generate", "--xp", lm_none.sig, "--workspace", str(workspace), "--prompt-audio", str(prompt),
                  "--duration", "2.0", "--num-samples", "1", "--output", str(tmp_path / "cont"))
    assert res.returncode == 0, res.stderr[-2000:]
    settings = json.loads((tmp_path / "cont" / "settings.json").read_text())
    assert settings["prompt_audio"] == str(prompt)
    out, out_sr = sf.read(tmp_path / "cont" / settings["files"][0], dtype="float32")
    assert out_sr == 32000 and abs(len(out) - 64000) < 1000  # prompt included, 2 s in all


def test_latest_codec_and_refusals(workspace, codec, tmp_path, monkeypatch):
    now = time.time() + 60
    os.utime(codec.checkpoint, (now, now))
    assert XP.latest("codec", "synthetic_demo", workspace).sig == codec.sig
    assert training.resolve_codec("latest", "synthetic_demo", workspace).sig == codec.sig
    with pytest.raises(training.TrainingInputError, match="no codec XP for dataset 'nothing'"):
        training.resolve_codec("latest", "nothing", workspace)
    synthetic.prepare_synthetic("at16k", workspace, PrepareConfig(num_jobs=1, sample_rate=16000),
                                tracks_per_genre=2, genres=["rock"], progress=False)
    with pytest.raises(training.TrainingInputError, match="works at 32000 Hz but dataset 'at16k' is at \\[16000\\]"):
        training.train_lm("demo_cpu", codec.sig, "at16k", workspace, echo=False, outputs=None)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no hub, and no T5 in the cache
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(training.TrainingInputError, match="needs the T5 model 't5-base'"):
        training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, conditioning="text", echo=False,
                          outputs=None)
    with pytest.raises(training.TrainingInputError, match="not a codec"):
        training.train_lm("demo_cpu", _lm_sig(workspace), "synthetic_demo", workspace,
                          echo=False, outputs=None)


def _lm_sig(workspace):
    for record in (paths.dora_dir(workspace) / "xps").glob(f"*/{RECORD}"):
        if json.loads(record.read_text())["kind"] == "musicgen":
            return record.parent.name
    raise AssertionError("no LM XP recorded")


def test_resume_after_a_killed_run(workspace, demo_data, tmp_path):
    """Kill `dora_train.py` after its first checkpoint; the same command resumes the same XP."""
    cmd = [sys.executable, str(REPO / "notebooks" / "dora_train.py"), "--preset", "demo_cpu", "--dataset",
           "synthetic_demo", "--workspace", str(workspace), "--outputs", str(tmp_path), "--",
           "optim.epochs=3", "evaluate.every=10", "generate.every=10"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    sig, deadline = None, time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        text = (tmp_path / "first.log").read_text(errors="replace")
        sig = next((line[4:].strip() for line in text.splitlines() if line.startswith("xp: ")), sig)
        if sig and len(XP(paths.xp_dir(sig, workspace)).history) >= 1:
            break
        time.sleep(0.5)
    assert sig and proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = XP(paths.xp_dir(sig, workspace)).history
    assert 1 <= len(first) < 3
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"xp: {sig}" in res.stdout.splitlines()
    history = XP(paths.xp_dir(sig, workspace)).history
    assert len(history) == 3
    assert history[0] == first[0]  # restored from the checkpoint, not trained again


def test_codec_checks_ran_during_training(workspace, outputs, codec):
    valid = manifests.read_manifest(paths.dataset_dir("synthetic_demo", workspace) / "egs" / "valid")
    expected = min(2, len(valid))  # codec_check_samples=2, at most what valid holds
    for epoch in (1, 2):
        folder = outputs / "codec_quality_check" / codec.sig / f"epoch_{epoch}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["num_samples"] == expected
        assert {s["source"] for s in summary["samples"]} <= {r.path for r in valid}
        assert len(list(folder.glob("sample_*_original.wav"))) == expected
        assert len(list(folder.glob("sample_*_reconstructed.wav"))) == expected


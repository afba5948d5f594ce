"""Watching runs on the real demo XPs: TensorBoard events, an offline W&B run, ``musicpipe evaluate`` (FAD)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from conftest import run_cli
from musicpipe import dora, fad, report, tracking, training
from musicpipe.xp import XP
from training_checks import fixed_seed_sampler as fss

pytestmark = pytest.mark.integration


def _numeric(stage: dict) -> dict:
    return {k: float(v) for k, v in stage.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _check_tensorboard(xp: XP, required: tuple) -> None:
    scalars = tracking.read_tensorboard(xp.folder / "tensorboard")
    history = xp.history
    assert len(history) == 2
    for epoch, stages in enumerate(history, start=1):
        for stage in ("train", "valid"):
            for key in required:
                assert f"{stage}/{key}" in scalars, sorted(scalars)
            compared = 0
            for key, value in _numeric(stages.get(stage, {})).items():
                tag = f"{stage}/{key}"
                if tag in scalars:
                    assert scalars[tag][epoch] == pytest.approx(value, rel=1e-5, abs=1e-6), (tag, epoch)
                    compared += 1
            assert compared >= len(required)


def test_tensorboard_events_hold_the_history(codec, lm_none) -> None:
    _check_tensorboard(codec.xp, ("mel", "l1"))
    _check_tensorboard(lm_none.xp, ("ce", "ppl"))


def test_wandb_offline_run_holds_metrics_and_config_and_resumes(workspace: Path, codec, outputs: Path,
                                                                tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), WANDB_DIR=str(tmp_path / "wandb-home"),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    res = run_cli("train-lm", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--workspace", str(workspace),
                  "--codec", codec.sig, "--conditioning", "none", "--epochs", "1", "--wandb", "musicpipe-tests",
                  "--outputs", str(outputs), env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # no API key: said once, before training, and training went on (offline)
    said = [line for line in (res.stdout + res.stderr).splitlines() if "W&B: no API key" in line]
    assert len(said) == 1, said
    sig = [line[4:].strip() for line in res.stdout.splitlines() if line.startswith("xp: ")][0]
    # W&B does not enter the signature: the same command without it names the same XP
    plan = training.plan_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, conditioning="none", epochs=1)
    assert dora.xp_signature(plan.args, workspace) == sig
    xp = XP.from_sig(sig, workspace)
    runs = tracking.wandb_runs(xp.folder)
    assert len(runs) == 1 and runs[0].name.startswith("offline-run-"), runs
    run = tracking.read_wandb_run(runs[0])
    assert (run["id"], run["name"], run["project"]) == (sig, sig, "musicpipe-tests")
    assert run["config"]["musicpipe"] == {"kind": "musicgen", "preset": "demo_cpu", "dataset": "synthetic_demo",
                                          "codec": codec.sig, "conditioning": "none"}
    assert any("optim" in k and "epochs" in k for k in run["config"]), sorted(run["config"])[:20]
    logged = run["history"][1]
    for stage in ("train", "valid"):
        for key, value in _numeric(xp.history[0][stage]).items():
            if f"{stage}/{key}" in logged:
                assert logged[f"{stage}/{key}"] == pytest.approx(value, rel=1e-5)
        assert f"{stage}/ce" in logged
    # a second launch of the same XP continues the same W&B run (same id, resume flag set)
    training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, conditioning="none", epochs=1,
                      echo=False, outputs=outputs, rerun=True, wandb="musicpipe-tests",
                      env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb-home")})
    runs = tracking.wandb_runs(xp.folder)
    assert len(runs) == 2 and {tracking.read_wandb_run(r)["id"] for r in runs} == {sig}
    assert (xp.folder / "wandb_flag").exists()


def test_evaluate_gives_fad_with_floors(workspace: Path, lm_genre: str, outputs: Path, tmp_path: Path) -> None:
    res = run_cli("evaluate", "--xp", lm_genre, "--workspace", str(workspace), "--num-clips", "8",
                  "--outputs", str(outputs), "--epoch", "1", "--epoch", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith(f"evaluate: xp {lm_genre} epoch")]
    assert len(lines) == 2, res.stdout[-2000:]
    xp = XP.from_sig(lm_genre, workspace)
    results = xp.fad
    assert sorted(results) == [1, 2]
    values = results[2]["fad"]
    print("FAD epoch 2:", values, "epoch 1:", results[1]["fad"])
    assert sorted(values) == ["codec_floor", "lm", "noise", "real_vs_real"]
    assert all(math.isfinite(v) and v >= 0 for v in values.values())
    assert results[2]["settings"]["embedding"] == "mel"  # the default: log-mel frames, no weights
    assert values["real_vs_real"] < values["lm"] and values["real_vs_real"] < values["noise"]
    # the demo codec (2 x 10 updates, SI-SNR far below 0 dB) does not reconstruct music yet: its floor sits above
    # white noise's, and evaluate says so instead of leaving a floor that means nothing unremarked
    if values["codec_floor"] > values["noise"]:
        assert "WARNING: codec floor" in lines[1] and "does not reconstruct music yet" in lines[1]
    else:
        assert "WARNING" not in lines[1]
    folder = outputs / "evaluate" / lm_genre / "epoch_2"
    clips = results[2]["settings"]["num_clips"]  # at most 8: the demo's valid set may hold fewer 2 s crops
    assert 4 <= clips <= 8
    for name in ("generated", "real", "reconstructed"):
        assert len(list((folder / name).glob("*.wav"))) == clips
    # the notebook-cell entry on folders: real against itself is 0, the reconstructions give the codec floor
    floor = fad.fad_of_folders(folder / "reconstructed", folder / "real", codec=lm_genre, workspace=workspace)
    same = fad.fad_of_folders(folder / "real", folder / "real", codec=lm_genre, workspace=workspace)
    assert floor["fad"] == pytest.approx(values["codec_floor"], rel=0.05)  # WAV round trip: 16-bit
    assert same["fad"] == pytest.approx(0.0, abs=1e-6)
    # a second run does no work
    again = run_cli("evaluate", "--xp", lm_genre, "--workspace", str(workspace), "--num-clips", "8",
                    "--outputs", str(outputs))
    assert again.returncode == 0 and lines[1] in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    # per-epoch FAD in the report's plots and in the sampler page's header row
    out = report.write_report(lm_genre, workspace, outputs)
    import json

    summary = json.loads((out / "summary.json").read_text())
    plot = [p for p in summary["plots"] if p["file"] == "fad.png"]
    assert plot and plot[0]["panels"][0]["series"][0]["epochs"] == [1, 2]
    assert "tensorboard --logdir" in (out / "index.html").read_text()
    epoch = {"settings": {"prompts": [{"id": "uncond_0", "kind": "unconditional", "seed": 0}]},
             "files": {"uncond_0": {"wav": "uncond_0.wav", "png": "uncond_0.png", "duration": 2.0}},
             "info": {"valid": {"ce": 5.0}}}
    html = fss.render_index(lm_genre, {2: epoch}, None, xp.fad)
    assert f"FAD {values['lm']:.3g}" in html and "valid ce 5" in html


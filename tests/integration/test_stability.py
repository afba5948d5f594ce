"""The stability monitor in real demo_cpu runs on the session's synthetic_demo data, with faults injected on
chosen steps through MUSICPIPE_EXTRA_HOOKS=fault_injection:install (tests/fault_injection.py): inf gradients
are skipped and lower the LR, a NaN-loss ratio above the limit stops the run with the last good checkpoint
kept, and with the monitor off AudioCraft's own "Model probably diverged" comes back.

Each run has its own ``label=`` so its XP signature differs from the other tests' runs (Dora would resume them).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musicpipe import dora, training
from musicpipe.xp import XP
from training_checks import stability_monitor as sm

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO = TESTS_DIR.parent


@pytest.fixture
def faults(monkeypatch):
    """Env for the Dora process (musicpipe.dora.run passes os.environ on): fault injection importable and
    installed, no stability or fault settings inherited; returns a setter for the case's variables."""
    for var in ("MUSICPIPE_STABILITY", "FAULT_NAN_STEPS", "FAULT_INF_GRAD_STEPS", *sm.ENV_FIELDS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("MUSICPIPE_EXTRA_HOOKS", "fault_injection:install")

    def set_env(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))

    return set_env


def _load(path: Path) -> dict:
    from musicpipe import audiocraft_env

    audiocraft_env.enable_checkpoint_loading()
    return torch.load(path, map_location="cpu", weights_only=True)


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}/{i}")


def _assert_finite_checkpoint(path: Path, epochs: int) -> dict:
    """Every float tensor of the checkpoint (weights, best state, optimizer moments, EMA) is finite."""
    state = _load(path)
    assert len(state["history"]) == epochs
    tensors = [(name, t) for name, t in _tensors(state) if t.is_floating_point()]
    assert sum(1 for name, _ in tensors if name.startswith("/model/")) > 10
    bad = [name for name, t in tensors if not bool(torch.isfinite(t).all())]
    assert bad == []
    return state


def _records(folder: Path) -> list:
    return [json.loads(line) for line in (folder / "stability.jsonl").read_text().splitlines()]


def _xp_folder(error: dora.DoraError) -> Path:
    # "dora run ... exited with 1 (xp <sig>, <folder>):"
    sig = str(error).split("(xp ", 1)[1].split(",", 1)[0]
    return dora.paths.xp_dir(sig)


def test_lm_inf_gradients_are_skipped_and_lower_the_lr(workspace, codec, faults):
    # epoch 1 step 3 and epoch 2 step 4: 1 of 5 steps per epoch, under max_inf_grad_ratio_per_epoch=0.3
    faults(FAULT_INF_GRAD_STEPS="3,9", STABILITY_LR_RECOVERY_STEPS=2)
    run = training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, echo=False, outputs=None,
                            overrides=["label=stability_inf"])
    assert run.returncode == 0
    records = _records(run.folder)
    assert [r["epoch"] for r in records] == [1, 2]
    one, two = records
    assert (one["steps"], one["updates"], one["nan_steps"], one["inf_grad_steps"], one["scaler_skipped"]) == \
        (5, 4, 0, 1, 0)
    # halved at step 3, then x1.25 after 2 healthy updates (steps 4, 5): gradual, never above the base LR
    assert one["lr_scale"] == 0.625 and one["min_lr"] == pytest.approx(5e-4) and one["max_lr"] == pytest.approx(1e-3)
    assert one["verdict"] == "ok" and one["solver"] == "MusicGenSolver" and one["grad_scale"] is None
    assert (two["inf_grad_steps"], two["nan_steps"], two["verdict"]) == (1, 0, "ok")
    assert two["lr_scale"] == pytest.approx(0.390625) and two["max_lr"] <= 1e-3
    assert one["config"]["lr_recovery_steps"] == 2

    history = run.history()
    assert len(history) == 2
    for epoch, record in zip(history, records):
        train = epoch["train"]
        assert train["stability_inf_grad_steps"] == 1 and train["stability_skipped_updates"] == 1
        assert train["stability_lr_scale"] == record["lr_scale"]
        # the skipped steps' non-finite grad_norm was not averaged into the epoch's metrics
        assert math.isfinite(train["grad_norm"]) and math.isfinite(train["ce"]) and math.isfinite(epoch["valid"]["ce"])
    _assert_finite_checkpoint(run.checkpoint, epochs=2)

    res = subprocess.run([sys.executable, str(REPO / "training_checks" / "stability_monitor.py"), "--xp", run.sig,
                          "--workspace", str(workspace)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == (
        f"stability_monitor: {run.sig}: 2 epoch(s), 0 NaN-loss step(s), 2 inf-gradient step(s), 0 GradScaler "
        "skip(s), lr_scale 0.390625 at the end: ok")


def test_lm_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(workspace, codec, faults):
    # an inf gradient in epoch 1 (LR scale 0.5), then a NaN loss from epoch 2 step 2: 1 of the epoch's 5
    # planned steps is already above max_nan_ratio_per_epoch=0.1
    faults(FAULT_INF_GRAD_STEPS="3", FAULT_NAN_STEPS="7,8")
    args = dict(echo=False, outputs=None, overrides=["label=stability_nan"])
    with pytest.raises(dora.DoraError) as info:
        training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, **args)
    message = str(info.value)
    assert "exited with 1" in message
    assert ("training_checks.stability_monitor.TrainingDivergedError: training diverged in epoch 2: 1 of the "
            "epoch's 5 planned steps had a NaN/non-finite loss (ratio >= 0.200 > max_nan_ratio_per_epoch=0.1; "
            "stopped at step 2 of 5") in message
    assert "No checkpoint is written for epoch 2; the last good checkpoint" in message
    assert "checkpoint.th (saved after epoch 1), is kept" in message  # (Dora sees the workspace via a symlink)
    assert "Model probably diverged" not in message
    folder = _xp_folder(info.value)

    assert (folder / "checkpoint_1.th").exists() and not (folder / "checkpoint_2.th").exists()
    state = _assert_finite_checkpoint(folder / "checkpoint.th", epochs=1)
    assert state["history"][0]["train"]["stability_inf_grad_steps"] == 1
    assert len(XP(folder).history) == 1
    one, two = _records(folder)
    assert (one["epoch"], one["verdict"], one["nan_steps"], one["inf_grad_steps"], one["lr_scale"]) == \
        (1, "ok", 0, 1, 0.5)
    assert (two["epoch"], two["verdict"], two["nan_steps"], two["steps"], two["stopped_at_step"]) == \
        (2, "diverged", 1, 2, 2)
    assert two["reason"].startswith("training diverged in epoch 2") and two["lr_scale"] == 0.25

    # the kept checkpoint resumes: the same call without faults redoes epoch 2 from it, at the LR scale
    # epoch 1 ended with (read back from stability.jsonl; default recovery needs 20 healthy steps)
    faults(FAULT_INF_GRAD_STEPS="", FAULT_NAN_STEPS="")
    run = training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, **args)
    assert run.folder == folder and len(run.history()) == 2
    records = _records(folder)
    assert [(r["epoch"], r["verdict"]) for r in records] == [(1, "ok"), (2, "ok")]  # each epoch once
    superseded = [json.loads(line) for line in (folder / "stability_superseded.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["verdict"]) for r in superseded] == [(2, "diverged")]
    assert records[-1]["min_lr"] == records[-1]["max_lr"] == pytest.approx(5e-4)
    _assert_finite_checkpoint(folder / "checkpoint_2.th", epochs=2)


def test_without_the_monitor_audiocraft_raises_its_own_error(workspace, codec, faults):
    faults(FAULT_NAN_STEPS="7,8", MUSICPIPE_STABILITY=0)
    with pytest.raises(dora.DoraError) as info:
        training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, echo=False, outputs=None,
                          overrides=["label=stability_nan_off"])
    message = str(info.value)
    assert "RuntimeError: Model probably diverged." in message
    assert "TrainingDivergedError" not in message
    assert "fault_injection: NaN model output at training step 7" in message  # the same fault did happen
    folder = _xp_folder(info.value)
    assert not (folder / "stability.jsonl").exists()
    assert "stability_nan_steps" not in XP(folder).history[0]["train"]


def test_codec_inf_then_nan_on_the_compression_solver(workspace, demo_data, faults):
    # epoch 1: an inf gradient at step 2 (skipped, LR halved); epoch 2: NaN reconstruction at step 2 (stop)
    faults(FAULT_INF_GRAD_STEPS="2", FAULT_NAN_STEPS="7")
    with pytest.raises(dora.DoraError) as info:
        training.train_codec("demo_cpu", "synthetic_demo", workspace, echo=False, outputs=None,
                             overrides=["label=stability_codec"])
    message = str(info.value)
    assert "TrainingDivergedError: training diverged in epoch 2: 1 of the epoch's 5 planned steps" in message
    folder = _xp_folder(info.value)
    assert (folder / "checkpoint_1.th").exists() and not (folder / "checkpoint_2.th").exists()
    state = _assert_finite_checkpoint(folder / "checkpoint.th", epochs=1)
    assert any(name.startswith("/adv_losses/") for name, _ in _tensors(state))  # the discriminator too
    one, two = _records(folder)
    assert (one["solver"], one["inf_grad_steps"], one["nan_steps"], one["updates"], one["lr_scale"], one["verdict"]) \
        == ("CompressionSolver", 1, 0, 4, 0.5, "ok")
    assert (two["nan_steps"], two["verdict"], two["stopped_at_step"]) == (1, "diverged", 2)
    train = XP(folder).history[0]["train"]
    assert train["stability_inf_grad_steps"] == 1
    assert all(math.isfinite(v) for v in train.values())  # the inf step's ratio1/ratio2 were dropped


def test_extra_hooks_loader_reports_bad_entries(workspace, tmp_path):
    (tmp_path / "probe_hooks.py").write_text(
        "CALLS = []\n"
        "def install():\n"
        "    from audiocraft.solvers.musicgen import MusicGenSolver\n"
        "    CALLS.append(getattr(MusicGenSolver.run_step, '_musicpipe_stability', False))\n")
    code = ("from musicpipe.dora_entry import train\n"
            "import probe_hooks\n"
            "print('CALLED', probe_hooks.CALLS)\n"
            "for spec in ('no_such_module_xyz:install', 'probe_hooks:missing', 'probe_hooks'):\n"
            "    try:\n"
            "        train.install_extra_hooks(spec)\n"
            "    except (ImportError, ValueError) as e:\n"
            "        print('ERR', type(e).__name__, e)\n")
    env = {**os.environ, "MUSICPIPE_EXTRA_HOOKS": " probe_hooks:install ,", "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith(("CALLED", "ERR"))]
    assert lines[0] == "CALLED [True]"  # called once, at import, after musicpipe's stability hooks
    assert lines[1].startswith("ERR ImportError MUSICPIPE_EXTRA_HOOKS: cannot load 'no_such_module_xyz:install' "
                               "(ModuleNotFoundError")
    assert lines[2].startswith("ERR ImportError MUSICPIPE_EXTRA_HOOKS: cannot load 'probe_hooks:missing' "
                               "(AttributeError")
    assert lines[3] == "ERR ValueError MUSICPIPE_EXTRA_HOOKS: 'probe_hooks' is not module:function"

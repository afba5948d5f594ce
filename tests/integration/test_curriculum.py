"""A tiny three-stage MusicGen curriculum trained for real on CPU through training_checks/curriculum_train.py
(`--auto` again and again in a subprocess, as users run it), on the session's demo codec and synthetic_demo.

Stages (EMA on, so that the EMA carry is observable): a_2s (2 s segments, 1 epoch), b_3s (3 s, 1 epoch, its own
lr 5e-4), c_4s (4 s, 2 epochs); 5 updates per epoch (demo_cpu). Asserted on what the runs left: XP configs,
histories, checkpoints, `carried_state.json` (what the carry hook loaded, as digests of the live solver's state)
and `curriculum.json`. Needs `install_carry_state_hook()` in musicpipe/dora_entry/train.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musicpipe import audiocraft_env, paths
from musicpipe.dora_entry.carry_state import optimizer_steps, state_digest
from musicpipe.xp import XP

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training_checks" / "curriculum_train.py"
NAME = "tiny_cpu"
STAGES = [("a_2s", 2, 1, None), ("b_3s", 3, 1, 5e-4), ("c_4s", 4, 2, None)]  # name, segment s, epochs, lr
UPDATES_PER_EPOCH = 5  # demo_cpu
EMA_DECAY = 0.9
DONE_LINE = re.compile(r"^curriculum_train: (\S+) stage (\d)/3 (\S+): xp ([0-9a-f]{8}) done, (\d) epochs?, (.*)$")


def _cli(workspace: Path, config_dir: Path, codec: str, outputs: Path, *mode: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--codec", codec,
           "--workspace", str(workspace), "--config-dir", str(config_dir), "--outputs", str(outputs), "--quiet",
           *mode]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _last_line(res: subprocess.CompletedProcess) -> str:
    return res.stdout.strip().splitlines()[-1]


def _xps(workspace: Path) -> set:
    folder = paths.dora_dir(workspace) / "xps"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _load(path: Path) -> dict:
    audiocraft_env.enable_checkpoint_loading()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def curriculum(workspace, codec, outputs, tmp_path_factory):
    """Runs the whole sequence once; returns what each step printed and left."""
    config_dir = tmp_path_factory.mktemp("tiny curriculum")
    for order, (name, seg, epochs, lr) in enumerate(STAGES, 1):
        extra = f"  optim.lr: {lr}\n" if lr else ""
        (config_dir / f"{name}.yaml").write_text(
            f"curriculum: {NAME}\nname: {name}\norder: {order}\nsegment_duration: {seg}\nbatch_size: 2\n"
            f"epochs: {epochs}\noverrides:\n  optim.ema.use: true\n  optim.ema.updates: 1\n"
            f"  optim.ema.decay: {EMA_DECAY}\n{extra}")
    run = lambda *mode: _cli(workspace, config_dir, codec.sig, outputs, *mode)  # noqa: E731
    out: dict = {"config_dir": config_dir}

    before = _xps(workspace)
    out["dry_run"] = run("--dry-run")
    out["xps_after_dry_run"] = _xps(workspace) - before

    out["autos"] = [run("--auto") for _ in STAGES]
    out["sigs"] = [DONE_LINE.match(_last_line(r)).group(4) for r in out["autos"]]
    folders = [paths.xp_dir(s, workspace) for s in out["sigs"]]
    out["carried_before_resume"] = (folders[2] / "carried_state.json").read_bytes()
    out["final_ckpt_c"] = _load(folders[2] / "checkpoint.th")

    # c_4s killed after its first epoch: its checkpoint and history are epoch 1's, no curriculum.json yet
    shutil.copyfile(folders[2] / "checkpoint_1.th", folders[2] / "checkpoint.th")
    history = json.loads((folders[2] / "history.json").read_text())
    (folders[2] / "history.json").write_text(json.dumps(history[:1]))
    (folders[2] / "curriculum.json").unlink()
    out["resume"] = run("--auto")

    before = _xps(workspace)
    out["final"] = run("--auto")
    out["final_dry_run"] = run("--dry-run")
    out["xps_after_final"] = _xps(workspace) - before
    out["folders"] = folders
    return out


def test_dry_run_plans_the_chain_and_runs_nothing(curriculum, codec):
    res = curriculum["dry_run"]
    assert curriculum["xps_after_dry_run"] == set()
    commands = [line for line in res.stdout.splitlines() if line.startswith("dora run ")]
    assert len(commands) == 3
    sigs = curriculum["sigs"]
    assert "continue_from" not in commands[0]
    assert commands[1].endswith(f" continue_from=//sig/{sigs[0]}") and commands[2].endswith(
        f" continue_from=//sig/{sigs[1]}")
    for command, (name, seg, epochs, _) in zip(commands, STAGES):
        assert f" optim.epochs={epochs} " in command and f" dataset.segment_duration={float(seg)} " in command
        assert f" compression_model_checkpoint=//sig/{codec.sig} " in command
    assert " optim.lr=0.0005 " in commands[1] and " optim.lr=0.001 " in commands[2]
    # the signatures it planned are the ones the runs got
    assert _last_line(res) == (f"curriculum_train: {NAME}: dry run: 0/3 stages finished, next a_2s as xp {sigs[0]} "
                               "(from scratch); nothing was run")
    assert f"pending: would run after a_2s as xp {sigs[1]}, continuing from a_2s (xp {sigs[0]})" in res.stdout
    assert f"pending: would run after b_3s as xp {sigs[2]}, continuing from b_3s (xp {sigs[1]})" in res.stdout


def test_each_auto_runs_the_next_stage_from_the_previous_xp(curriculum, workspace, codec):
    sigs, folders = curriculum["sigs"], curriculum["folders"]
    assert len(set(sigs)) == 3
    for i, (res, (name, seg, epochs, _)) in enumerate(zip(curriculum["autos"], STAGES)):
        m = DONE_LINE.match(_last_line(res))
        assert m and m.group(1) == NAME and m.group(2) == str(i + 1) and m.group(3) == name
        assert int(m.group(5)) == epochs
        if i == 0:
            assert m.group(6) == "from scratch; next: b_3s"
        else:
            nxt = "next: c_4s" if i == 1 else "all stages done"
            assert m.group(6) == f"from xp {sigs[i - 1]} (carried model, optimizer, ema); {nxt}"
        cfg = XP(folders[i]).config
        assert cfg["continue_from"] == (f"//sig/{sigs[i - 1]}" if i else None)
        assert cfg["dataset"]["segment_duration"] == seg and cfg["optim"]["epochs"] == epochs
        assert cfg["compression_model_checkpoint"] == f"//sig/{codec.sig}"
        history = XP(folders[i]).history
        assert len(history) == epochs
        assert all(math.isfinite(h["train"]["ce"]) and math.isfinite(h["valid"]["ce"]) for h in history)
        record = json.loads((folders[i] / "curriculum.json").read_text())
        assert (record["curriculum"], record["stage"], record["sig"], record["codec"]) == (NAME, name, sigs[i],
                                                                                           codec.sig)
        assert record["continue_from_sig"] == (sigs[i - 1] if i else None)
        assert record["carried"] == (["model", "optimizer", "ema"] if i else [])
        assert record["epochs"] == epochs and record["stage_config"]["segment_duration"] == float(seg)
    assert not (folders[0] / "carried_state.json").exists()


def test_weights_optimizer_and_ema_carry_over_and_the_lr_is_the_stages_own(curriculum):
    sigs, folders = curriculum["sigs"], curriculum["folders"]
    for i in (1, 2):
        previous = _load(folders[i - 1] / "checkpoint.th")  # the previous stage's final state
        report = json.loads((folders[i] / "carried_state.json").read_text())
        assert report["source"] == f"//sig/{sigs[i - 1]}" and report["skipped"] == {}
        carried = report["carried"]
        # at the start of the stage the solver held the previous stage's last weights ...
        assert carried["model"]["digest"] == state_digest(previous["model"])
        # ... not its best state (EMA weights here), which is what AudioCraft's continue_from alone loads
        assert carried["model"]["digest"] != state_digest(previous["best_state"]["model"])
        # Adam's moments and step counts, and the EMA, as the previous stage left them
        assert carried["optimizer"]["digest"] == state_digest(previous["optimizer"]["state"])
        assert carried["optimizer"]["steps"] == optimizer_steps(previous["optimizer"]) == i * UPDATES_PER_EPOCH
        exp_avg = [s["exp_avg"] for s in previous["optimizer"]["state"].values()]
        assert exp_avg and any(float(t.abs().sum()) > 0 for t in exp_avg)
        assert carried["ema"]["digest"] == state_digest(previous["ema"]["state"])
        assert carried["ema"]["count"] == pytest.approx(previous["ema"]["count"])
        # the stage's own learning rate (its optim.lr), not the previous stage's param groups
        assert carried["optimizer"]["lr"] == ([0.0005] if i == 1 else [0.001])
    assert XP(folders[1]).history[0]["train"]["lr"] == pytest.approx(5e-4)
    assert XP(folders[2]).history[0]["train"]["lr"] == pytest.approx(1e-3)


def test_the_final_checkpoints_continue_the_step_and_ema_counts(curriculum):
    folders = curriculum["folders"]
    ema_count = 0.0
    steps = 0
    for i, (_, _, epochs, _) in enumerate(STAGES):
        state = curriculum["final_ckpt_c"] if i == 2 else _load(folders[i] / "checkpoint.th")
        steps += epochs * UPDATES_PER_EPOCH
        for _ in range(epochs * UPDATES_PER_EPOCH):  # ModuleDictEMA with unbias: count = count * decay + 1
            ema_count = ema_count * EMA_DECAY + 1
        assert optimizer_steps(state["optimizer"]) == steps  # 5, 10, 20: not restarted at each stage
        assert state["ema"]["count"] == pytest.approx(ema_count)
        assert state["lr_scheduler"] is None  # demo_cpu: no scheduler (it would restart per stage)


def test_resuming_a_stage_does_not_carry_again(curriculum):
    folder = curriculum["folders"][2]
    m = DONE_LINE.match(_last_line(curriculum["resume"]))
    assert m and m.group(3) == "c_4s" and m.group(4) == curriculum["sigs"][2]
    assert (folder / "carried_state.json").read_bytes() == curriculum["carried_before_resume"]
    log = (folder / "solver.log.0").read_text(errors="replace")
    assert "carry state: not applied (the XP resumes its own checkpoint)" in log
    assert len(XP(folder).history) == 2
    state = _load(folder / "checkpoint.th")
    assert optimizer_steps(state["optimizer"]) == 20  # epoch 2 again, from epoch 1's 15 steps
    assert json.loads((folder / "curriculum.json").read_text())["stage"] == "c_4s"


def test_when_all_stages_are_done_auto_and_dry_run_say_so_and_run_nothing(curriculum):
    sigs = curriculum["sigs"]
    done = f"all 3 stages done (a_2s {sigs[0]}, b_3s {sigs[1]}, c_4s {sigs[2]}); nothing to run"
    assert _last_line(curriculum["final"]) == f"curriculum_train: {NAME}: {done}"
    assert "xp: " not in curriculum["final"].stdout  # no dora run was launched
    assert _last_line(curriculum["final_dry_run"]) == f"curriculum_train: {NAME}: {done} (dry run)"
    assert "dora run " not in curriculum["final_dry_run"].stdout
    assert curriculum["xps_after_final"] == set()

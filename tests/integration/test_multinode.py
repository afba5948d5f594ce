"""Issue 17 for real: two "nodes" on loopback, each a `musicpipe train-*` launching torchrun (one process per node,
gloo), over one shared workspace; a kill of both and a resume; two nodes given different workspaces refuse."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musicpipe import paths, procs, training
from musicpipe.xp import XP
import procfs
from conftest import REPO, run_cli

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(command: str, workspaces, port: int, *extra: str) -> list:
    """Node 0 and node 1 of `musicpipe <command> --nodes 2 ...`, started together (as two machines would).

    Their output goes to files (a pipe nobody reads would fill and stall a node)."""
    nodes = []
    logs = Path(os.environ.get("PYTEST_MULTINODE_LOGS", "/tmp")) / f"multinode-{os.getpid()}-{port}"
    logs.mkdir(parents=True, exist_ok=True)
    for rank, ws in enumerate(workspaces):
        cmd = [sys.executable, "-m", "musicpipe", command, "--preset", "demo_cpu", "--dataset", "synthetic_demo",
               "--workspace", str(ws), "--nodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
               "--master-port", str(port), *extra]
        out, err = logs / f"node{rank}.out", logs / f"node{rank}.err"
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, cwd=REPO,
                                    env={**os.environ, "MUSICPIPE_WORKSPACE": str(ws)})
        nodes.append((proc, out, err))
    return nodes


def finish(nodes, timeout: float = 900) -> list:
    try:
        return [(p.wait(timeout=timeout), out.read_text(), err.read_text()) for p, out, err in nodes]
    finally:
        for p, _out, _err in nodes:  # a node left waiting for the other (torchrun's rendezvous) is stopped
            if p.poll() is None:
                p.kill()
                p.wait()


def sig_of(stdout: str) -> str:
    sigs = {line[4:].strip() for line in stdout.splitlines() if line.startswith("xp: ")}
    assert len(sigs) == 1, stdout[-2000:]
    return sigs.pop()


def summaries(log: Path) -> list:
    """The epoch summary lines of one rank's solver log, without timestamps, colours and each rank's own wall time."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.read_text().splitlines() if " Summary " in line]
    return [re.sub(r" \| (duration|rtf)=[0-9.]+", "", re.sub(r"^.*?(\w+ Summary)", r"\1", line)) for line in lines]


def wait_released(folder: Path, marker: str, timeout: float = 180) -> float:
    """Seconds until node 0's XP lock and node 1's lock are free and no process whose command line holds ``marker``
    is left; fails naming what is still there after ``timeout``.

    Not instant: the killed launcher's torchrun gets SIGTERM (its parent-death signal) and gives its trainers
    torchrun's own grace of up to 30 s before SIGKILL; the lock goes with the last of them."""
    locks = [folder / training.LOCK_FILE, folder / training.NODE_LOCK_FILE.format(1)]
    return procfs.wait_for(
        lambda: all(procs.holder(lock) is None for lock in locks) and not procfs.matching(marker), timeout,
        what=lambda: f"the locks and processes of the XP to go; held: {[procfs.openers(lock) for lock in locks]}, "
                     f"left: {[(pid, procfs.cmdline(pid)) for pid in procfs.matching(marker)]}")


def two_nodes_trained(results, what: str) -> str:
    for rank, (rc, out, err) in enumerate(results):
        assert rc == 0, f"node {rank} of {what}: exit {rc}\n{out[-3000:]}\n{err[-3000:]}"
    sig = sig_of(results[0][1])
    assert sig_of(results[1][1]) == sig  # the same XP signature on both nodes
    return sig


def check_ranks_agree(folder: Path, epochs: int) -> list:
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == epochs  # one history, written by rank 0
    assert not list(folder.glob("history*.json.*"))
    logs = [summaries(folder / f"solver.log.{rank}") for rank in (0, 1)]
    assert logs[0] and logs[0] == logs[1], logs  # both ranks logged the same (all-reduced) epoch metrics
    return history


@pytest.fixture
def own_workspace(workspace, demo_data, codec, tmp_path):
    """A workspace of this test's own holding the session's demo dataset, dset config and codec XP: the XPs trained
    here (a second codec of synthetic_demo, an LM) must not become the session workspace's "latest"."""
    ws = tmp_path / "shared ws"
    shutil.copytree(paths.dataset_dir("synthetic_demo", workspace), paths.dataset_dir("synthetic_demo", ws))
    shutil.copytree(paths.workspace_config_dir(workspace), paths.workspace_config_dir(ws))
    shutil.copytree(paths.xp_dir(codec.sig, workspace), paths.xp_dir(codec.sig, ws), symlinks=True)
    return ws


def test_two_nodes_train_codec_and_lm_kill_and_resume(own_workspace, codec, outputs):
    workspace = own_workspace  # one workspace both nodes see
    # the codec, 2 epochs on 2 nodes (its own XP: the session's codec trained on one process)
    results = finish(start_nodes("train-codec", [workspace, workspace], free_port(), "--outputs", str(outputs),
                                 "--", "label=two_nodes"))
    sig = two_nodes_trained(results, "train-codec")
    folder = paths.xp_dir(sig, workspace)
    check_ranks_agree(folder, 2)
    assert "all 2 ranks see workspace" in (folder / "solver.log.0").read_text()
    assert (folder / "checkpoint.th").is_file()
    record = XP(folder=folder, sig=sig).record  # written once, by node 0
    assert (record["nodes"], record["processes"], record["kind"]) == (2, 2, "compression")
    assert f"train-codec: xp {sig} done, 2 epoch(s) in history" in results[0][1]
    assert f"train-codec: xp {sig} done, 2 epoch(s) in history" in results[1][1]

    # the LM on the session's codec: killed (both nodes) after its first epoch, then resumed by the same commands
    port = free_port()
    lm_args = ("--codec", codec.sig, "--outputs", str(outputs), "--", "label=two_nodes_lm")
    nodes = start_nodes("train-lm", [workspace, workspace], port, *lm_args)
    lm_folder = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and all(p.poll() is None for p, _o, _e in nodes):
        candidates = [f for f in paths.dora_dir(workspace).joinpath("xps").glob("*/history.json")
                      if "two_nodes_lm" in (f.parent / ".hydra" / "overrides.yaml").read_text(errors="replace")] \
            if paths.dora_dir(workspace).joinpath("xps").exists() else []
        if candidates and len(json.loads(candidates[0].read_text() or "[]")) >= 1:
            lm_folder = candidates[0].parent
            break
        time.sleep(0.2)
    for p, _out, _err in nodes:
        p.send_signal(signal.SIGKILL)
    killed = finish(nodes)
    assert lm_folder is not None, killed[0][1][-3000:] + killed[0][2][-3000:]
    first = json.loads((lm_folder / "history.json").read_text())
    assert len(first) == 1, "the LM finished before it could be killed"
    # the kill took torchrun and the trainers along: both nodes' locks are free again, no process of the XP is left
    released_after = wait_released(lm_folder, "label=two_nodes_lm")
    print(f"two-node LM: locks free and no process left {released_after:.1f} s after the kill")

    results = finish(start_nodes("train-lm", [workspace, workspace], free_port(), *lm_args))
    lm_sig = two_nodes_trained(results, "train-lm")
    assert paths.xp_dir(lm_sig, workspace).resolve() == lm_folder.resolve()
    history = check_ranks_agree(lm_folder, 2)
    assert history[0] == first[0]  # resumed: epoch 1 kept, not retrained
    for rank in (0, 1):  # every rank loaded the checkpoint rank 0 wrote
        assert "Loading existing checkpoint" in (lm_folder / f"solver.log.{rank}").read_text()
    assert XP(folder=lm_folder, sig=lm_sig).record["nodes"] == 2


def test_two_nodes_with_different_workspaces_refuse_naming_the_node(own_workspace, tmp_path):
    workspace = own_workspace
    other = tmp_path / "node1 workspace"
    # node 1 has the same dataset (data and dset config), but in a workspace of its own
    shutil.copytree(paths.dataset_dir("synthetic_demo", workspace), paths.dataset_dir("synthetic_demo", other))
    shutil.copytree(paths.workspace_config_dir(workspace), paths.workspace_config_dir(other))
    results = finish(start_nodes("train-codec", [workspace, other], free_port(), "--outputs", str(tmp_path / "out"),
                                 "--", "label=two_workspaces"), timeout=300)
    for rank, (rc, out, err) in enumerate(results):
        assert rc == 2, f"node {rank}: exit {rc}\n{out[-2000:]}\n{err[-2000:]}"
        line = [x for x in err.splitlines() if x.startswith("musicpipe train-codec: error:")]
        assert line, err[-3000:]
        assert f"node 1 (host {socket.gethostname()}, rank 1, workspace {other})" in line[0]
        assert "does not see rank 0's workspace" in line[0] and "Traceback" not in line[0]
    sig = sig_of(results[0][1])
    for ws in (workspace, other):  # refused before training: no checkpoint, no history anywhere
        assert not (paths.xp_dir(sig, ws) / "checkpoint.th").exists()
        assert not (paths.xp_dir(sig, ws) / "history.json").exists()


SBATCH = """#!/bin/sh
# stands in for SLURM's sbatch on this machine: keeps the submission file submitit wrote, answers as sbatch does
for last; do :; done
cp "$last" "$SBATCH_RECORD"
echo "Submitted batch job 4242"
"""


def test_slurm_hands_the_xp_to_doras_launcher(tmp_path):
    """`--slurm`: Dora's own launcher (submitit) writes the sbatch file; only sbatch/srun are stand-ins (no cluster)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    ws = tmp_path / "ws"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_RECORD": str(tmp_path / "job.sh"),
           "MUSICPIPE_WORKSPACE": str(ws)}
    common = ("train-codec", "--preset", "demo_cpu", "--dataset", "fma_small_mini", "--workspace", str(ws),
              "--slurm", "learnlab", "--nodes", "2", "--gpus", "8")
    dry = run_cli(*common, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dora launch --no_git_save --no_tail -p learnlab -g 16 solver=compression/")
    res = run_cli(*common, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sig = sig_of(res.stdout)
    assert f"train-codec: xp {sig} submitted to SLURM partition learnlab" in res.stdout
    job = (tmp_path / "job.sh").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gres=gpu:8",
                 "#SBATCH --partition=learnlab", f"#SBATCH --job-name=audiocraft_{sig}"):
        assert line in job, job
    assert str(paths.xp_dir(sig, ws) / "submitit") in job  # the XP's own folder, in the workspace
    # a layout Dora cannot place is refused before anything is submitted
    bad = run_cli(*common[:-1], "4", env=env)
    assert bad.returncode == 2 and "nodes of 8 only: --nodes 2 needs --gpus 8 (got 4)" in bad.stderr
    assert "Traceback" not in bad.stderr

"""The multi-node command builder (1, 2 and 4 nodes, flags and cluster variables), the agreement rules and the
bandwidth arithmetic, without a cluster; the CLI's --dry-run and its one-line errors."""

from __future__ import annotations

import shlex

import pytest

from musicpipe import multinode, presets
from musicpipe.multinode import NodeSpec, MultiNodeError
from conftest import run_cli

DEMO = presets.load_preset("demo_cpu")


def dora_args(gpus=None):
    return presets.dora_run_args(DEMO, "compression", dset="synthetic_demo", gpus=gpus)


def test_one_node_is_no_multi_node_launch():
    assert multinode.resolve_nodes(environ={}) is None
    assert multinode.resolve_nodes(nodes=1, node_rank=0, master_addr="h", environ={}) is None
    assert multinode.resolve_nodes(environ={"NNODES": "1", "NODE_RANK": "0", "MASTER_ADDR": "h"}) is None


@pytest.mark.parametrize("nnodes", [2, 4])
def test_every_node_runs_the_same_xp_under_torchrun(nnodes):
    node = multinode.resolve_nodes(nodes=nnodes, node_rank=0, master_addr="10.0.0.1", master_port=29400, gpus=4,
                                   environ={})
    commands = multinode.all_node_commands(dora_args(gpus=4), node)
    assert len(commands) == nnodes
    overrides = presets.hydra_overrides(dora_args(gpus=4))
    for rank, cmd in enumerate(commands):
        assert cmd[:13] == ["torchrun", "--nnodes", str(nnodes), "--node-rank", str(rank), "--nproc-per-node", "4",
                            "--master-addr", "10.0.0.1", "--master-port", "29400", "--max-restarts", "0"]
        assert cmd[13:20] == ["-m", "dora", "-P", "musicpipe.dora_entry", "--main_module", "train", "run"]
        assert cmd[20:] == overrides  # the same XP arguments on every node; Dora's -d/--ddp_workers dropped
        assert "-d" not in cmd and "--ddp_workers" not in cmd
    assert node.world_size == nnodes * 4


def test_the_launch_uses_this_interpreters_torchrun():
    node = NodeSpec(2, 1, "h", 1234)
    cmd = multinode.torchrun_args(dora_args(), node, launcher=("/venv/bin/python", "-m", "torch.distributed.run"))
    assert cmd[:5] == ["/venv/bin/python", "-m", "torch.distributed.run", "--nnodes", "2"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "1"


def test_cluster_variables_give_the_same_launch_as_the_flags():
    flags = multinode.resolve_nodes(nodes=2, node_rank=1, master_addr="10.65.0.2", master_port=29500, gpus=4,
                                    environ={})
    runpod = {"NUM_NODES": "2", "NODE_RANK": "1", "PRIMARY_ADDR": "10.65.0.2", "MASTER_ADDR": "10.65.0.2",
              "PRIMARY_PORT": "29500", "MASTER_PORT": "29500", "NUM_TRAINERS": "4", "WORLD_SIZE": "8"}
    torchrun_style = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "10.65.0.2",
                      "PET_MASTER_PORT": "29500", "PET_NPROC_PER_NODE": "4"}
    generic = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.65.0.2", "MASTER_PORT": "29500",
               "NPROC_PER_NODE": "4"}
    for environ in (runpod, torchrun_style, generic):
        assert multinode.resolve_nodes(environ=environ) == flags
    # flags win over the environment
    got = multinode.resolve_nodes(node_rank=0, master_port=1234, gpus=2, environ=runpod)
    assert (got.node_rank, got.master_port, got.nproc_per_node, got.master_addr) == (0, 1234, 2, "10.65.0.2")
    # no GPU count anywhere: the preset's
    assert multinode.resolve_nodes(nodes=2, node_rank=0, master_addr="h", environ={}, default_gpus=4).nproc_per_node == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(nodes=2, master_addr="h"), "needs this node's rank: --node-rank"),
    (dict(nodes=2, node_rank=2, master_addr="h"), "--node-rank 2 is not one of the 2 nodes (0..1)"),
    (dict(nodes=2, node_rank=0), "needs --master-addr"),
    (dict(nodes=2, node_rank=0, master_addr="h", master_port=70000), "--master-port 70000 is not a TCP port"),
    (dict(nodes=0), "--nodes must be at least 1, got 0"),
])
def test_incomplete_launches_say_which_flag(kwargs, message):
    with pytest.raises(MultiNodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        multinode.resolve_nodes(environ={}, **kwargs)


def test_a_dry_run_may_leave_the_rank_unset():
    node = multinode.resolve_nodes(nodes=2, master_addr="h", environ={}, require_rank=False)
    assert node.node_rank is None and len(multinode.all_node_commands(dora_args(), node)) == 2
    with pytest.raises(MultiNodeError, match="pass --node-rank"):
        multinode.torchrun_args(dora_args(), node)


def test_disagreements_name_the_node_and_what_differs():
    base = {"host": "pod-a", "workspace": "/ws", "dataset": "d", "manifests": {"train": "aa", "valid": "bb"},
            "codec": {"ref": "//sig/1234", "hash": "c0"}, "token": True, "node": 0, "rank": 0}
    same = [base, {**base, "rank": 1}, {**base, "host": "pod-b", "node": 1, "rank": 2}]
    assert multinode.disagreements(same) == []
    other = [base, {**base, "host": "pod-b", "node": 1, "rank": 1, "workspace": "/mnt/ws",
                    "token": "missing (/mnt/ws/x does not exist)", "manifests": {"train": "zz", "valid": "bb"},
                    "codec": {"ref": "//sig/1234", "hash": "missing: /mnt/ws/xps/1234/checkpoint.th"}},
             {**base, "host": "pod-b", "node": 1, "rank": 2, "token": "missing"}]  # node 1 named once
    problems = multinode.disagreements(other)
    assert len(problems) == 1
    assert problems[0].startswith("node 1 (host pod-b, rank 1, workspace /mnt/ws) does not see rank 0's workspace "
                                  "(/ws on host pod-a)")
    assert "another train manifest of d" in problems[0] and "another codec" in problems[0]


def test_allreduce_arithmetic():
    assert multinode.allreduce_bytes_per_step(300_000_000, 1) == 0.0
    assert multinode.allreduce_bytes_per_step(300_000_000, 2) == pytest.approx(1.2e9)  # 2 x 1/2 x 1.2 GB
    assert multinode.allreduce_bytes_per_step(300_000_000, 8) == pytest.approx(2.1e9)


def test_cli_dry_run_prints_every_nodes_command():
    res = run_cli("train-codec", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--nodes", "2",
                  "--master-addr", "10.0.0.1", "--master-port", "29501", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "# node 0 of 2: 1 process(es), world size 2" and lines[2].startswith("# node 1 of 2")
    for rank in (0, 1):
        cmd = shlex.split(lines[1 + 2 * rank])
        assert cmd[:5] == ["torchrun", "--nnodes", "2", "--node-rank", str(rank)]
        assert cmd[cmd.index("run") + 1:] == presets.hydra_overrides(dora_args())


def test_cli_reads_the_cluster_variables_and_marks_this_node():
    import os

    env = {**os.environ, "NUM_NODES": "4", "NODE_RANK": "3", "PRIMARY_ADDR": "10.1.0.1", "PRIMARY_PORT": "29600"}
    res = run_cli("train-codec", "--preset", "demo_cpu", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("torchrun --nnodes 4") == 4
    assert "# node 3 of 4 (this machine)" in res.stdout and "--master-port 29600" in res.stdout


def test_cli_incomplete_multi_node_launch_is_one_line():
    res = run_cli("train-codec", "--preset", "demo_cpu", "--nodes", "2", "--node-rank", "0")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("musicpipe train-codec: error: a multi-node launch needs "
                                                          "--master-addr")
    assert "Traceback" not in res.stderr

"""More than one machine: the ``torchrun`` command of every node, and what all nodes must agree on.

musicpipe launches no processes of its own across machines: ``torchrun`` (PyTorch's launcher) starts our Dora entry
package on every node, with the same XP arguments, and Dora reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` from the environment torchrun sets. Building a node's command is pure
(:func:`torchrun_args`, tested like :func:`musicpipe.presets.dora_run_args`); launching is :mod:`musicpipe.training`.

AudioCraft saves checkpoints from rank 0 only and every rank reads ``checkpoint.th`` on resume; it never broadcasts
weights. A node that does not see the shared workspace would start from scratch while the others resume. So, before
the solver is built, every rank exchanges :func:`node_facts` (workspace, codec checkpoint hash, manifest hashes)
and reads back a token rank 0 wrote into the XP folder (:mod:`musicpipe.dora_entry.node_agreement`);
:func:`disagreements` names the node that differs, and the run refuses.

Example:
    >>> node = NodeSpec(nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500, nproc_per_node=4)
    >>> torchrun_args(["run", "-d", "--ddp_workers", "4", "solver=x"], node)[:9]
    ['torchrun', '--nnodes', '2', '--node-rank', '1', '--nproc-per-node', '4', '--master-addr', '10.0.0.1']
    >>> node.world_size
    8
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import typing as tp
from pathlib import Path

from musicpipe import audiocraft_env, paths, presets

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]

DEFAULT_PORT = 29500  # torchrun's default
FACTS_ENV = "MUSICPIPE_NODE_FACTS"  # JSON of node_facts(), set by the launcher for its Dora processes
TOKEN_FILE = ".musicpipe-nodes.json"  # in the XP folder: rank 0 writes it, every rank reads it back
REFUSED = "musicpipe: refused: "  # a Dora process's line stating why it will not train (musicpipe.dora shows it)

# The environment variables clusters set, in order of preference, for each launch setting.
# torchrun's own (PET_*: its flags as variables), generic (NNODES...), RunPod Instant Clusters (NUM_NODES,
# NUM_TRAINERS, PRIMARY_ADDR/PORT; they also set MASTER_ADDR/PORT and NODE_RANK).
ENV_NAMES: tp.Dict[str, tp.Tuple[str, ...]] = {
    "nnodes": ("PET_NNODES", "NNODES", "NUM_NODES"),
    "node_rank": ("PET_NODE_RANK", "NODE_RANK"),
    "master_addr": ("PET_MASTER_ADDR", "MASTER_ADDR", "PRIMARY_ADDR"),
    "master_port": ("PET_MASTER_PORT", "MASTER_PORT", "PRIMARY_PORT"),
    "nproc_per_node": ("PET_NPROC_PER_NODE", "NPROC_PER_NODE", "NUM_TRAINERS"),
}


class MultiNodeError(ValueError):
    """A multi-node launch is incomplete or contradictory (the message names the flag or variable)."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of a multi-node launch: how many nodes, which one this is, where rank 0 listens, GPUs per node."""

    nnodes: int
    node_rank: tp.Optional[int]  # None: not known here (a dry run prints every node's command)
    master_addr: str
    master_port: int = DEFAULT_PORT
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nnodes < 1:
            raise MultiNodeError(f"--nodes must be at least 1, got {self.nnodes}")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise MultiNodeError(f"--node-rank {self.node_rank} is not one of the {self.nnodes} nodes "
                                 f"(0..{self.nnodes - 1})")
        if not self.master_addr:
            raise MultiNodeError("a multi-node launch needs --master-addr (rank 0's address, reachable from every "
                                 "node) or $MASTER_ADDR")
        if not 1 <= self.master_port <= 65535:
            raise MultiNodeError(f"--master-port {self.master_port} is not a TCP port (1..65535)")
        if self.nproc_per_node < 1:
            raise MultiNodeError(f"processes per node must be at least 1, got {self.nproc_per_node}")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def for_rank(self, node_rank: int) -> "NodeSpec":
        return dataclasses.replace(self, node_rank=node_rank)


def _from_env(key: str, environ: tp.Mapping[str, str]) -> tp.Tuple[tp.Optional[str], tp.Optional[str]]:
    for name in ENV_NAMES[key]:
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return None, None


def nodes_from_env(environ: tp.Optional[tp.Mapping[str, str]] = None) -> tp.Optional[int]:
    """The node count the cluster's variables give (``$PET_NNODES``, ``$NNODES``, ``$NUM_NODES``), None when unset.

    >>> nodes_from_env({"NUM_NODES": "4"}), nodes_from_env({})
    (4, None)
    """
    value, name = _from_env("nnodes", os.environ if environ is None else environ)
    return _int(value, f"${name}") if value is not None else None


def _int(value: tp.Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MultiNodeError(f"{what}: expected an integer, got {value!r}") from None


def resolve_nodes(nodes: tp.Optional[int] = None, node_rank: tp.Optional[int] = None,
                  master_addr: tp.Optional[str] = None, master_port: tp.Optional[int] = None,
                  gpus: tp.Optional[int] = None, environ: tp.Optional[tp.Mapping[str, str]] = None,
                  require_rank: bool = True, default_gpus: int = 1) -> tp.Optional[NodeSpec]:
    """The multi-node launch the flags (first) and the environment (:data:`ENV_NAMES`) describe; None for one node.

    ``gpus``: processes per node (``--gpus``; 0 for CPU: one process); default the environment's (``NUM_TRAINERS``
    on RunPod), else ``default_gpus`` (the preset's). ``require_rank``: a real launch must know this node's rank.

    >>> resolve_nodes(environ={}) is None
    True
    >>> resolve_nodes(environ={"NUM_NODES": "2", "NODE_RANK": "1", "PRIMARY_ADDR": "10.1.0.2", "NUM_TRAINERS": "4"})
    NodeSpec(nnodes=2, node_rank=1, master_addr='10.1.0.2', master_port=29500, nproc_per_node=4)
    """
    environ = os.environ if environ is None else environ
    env_nodes, env_nodes_name = _from_env("nnodes", environ)
    if nodes is None and env_nodes is not None:
        nodes = _int(env_nodes, f"${env_nodes_name}")
    if nodes is None or int(nodes) <= 1:
        if nodes is not None and int(nodes) < 1:
            raise MultiNodeError(f"--nodes must be at least 1, got {nodes}")
        for flag, value in (("--node-rank", node_rank), ("--master-addr", master_addr), ("--master-port", master_port)):
            if value not in (None, "") and nodes is not None:
                logger.info("%s ignored: one node", flag)
        return None
    if node_rank is None:
        value, name = _from_env("node_rank", environ)
        node_rank = _int(value, f"${name}") if value is not None else None
    if node_rank is None and require_rank:
        raise MultiNodeError(f"a {nodes}-node launch needs this node's rank: --node-rank K (0 on the node at "
                             "--master-addr) or $NODE_RANK")
    if master_addr in (None, ""):
        master_addr, _ = _from_env("master_addr", environ)
    if master_port is None:
        value, name = _from_env("master_port", environ)
        master_port = _int(value, f"${name}") if value is not None else DEFAULT_PORT
    if gpus is None:
        value, name = _from_env("nproc_per_node", environ)
        procs_per_node = max(1, _int(value, f"${name}") if value is not None else int(default_gpus))
    else:
        procs_per_node = max(1, int(gpus))
    return NodeSpec(nnodes=int(nodes), node_rank=node_rank, master_addr=master_addr or "",
                    master_port=int(master_port), nproc_per_node=procs_per_node)


def torchrun_args(dora_args: tp.Sequence[str], node: NodeSpec, launcher: tp.Sequence[str] = ("torchrun",)
                  ) -> tp.List[str]:
    """The command that runs ``dora_args`` (from :func:`musicpipe.presets.dora_run_args`) on one node under torchrun.

    Every node runs the same Dora arguments (so the same XP signature) through our Dora entry package; Dora's own
    one-machine DDP flags (``-d --ddp_workers``) are dropped: torchrun starts ``nproc_per_node`` processes per
    node. Static rendezvous at ``master_addr:master_port`` (rank 0's node), no restarts (a failure stops the run;
    re-running the same command on every node resumes the XP from its checkpoint).
    ``launcher``: how torchrun is invoked (``[sys.executable, "-m", "torch.distributed.run"]`` when launching).

    >>> torchrun_args(["run", "solver=s", "dset=audio/d"], NodeSpec(2, 0, "127.0.0.1", 29400))[9:]
    ['--master-port', '29400', '--max-restarts', '0', '-m', 'dora', '-P', 'musicpipe.dora_entry', '--main_module', 'train', 'run', 'solver=s', 'dset=audio/d']
    """
    if node.node_rank is None:
        raise MultiNodeError("the node's rank is unknown: pass --node-rank")
    return [*launcher, "--nnodes", str(node.nnodes), "--node-rank", str(node.node_rank),
            "--nproc-per-node", str(node.nproc_per_node), "--master-addr", node.master_addr,
            "--master-port", str(node.master_port), "--max-restarts", "0",
            "-m", "dora", "-P", audiocraft_env.DORA_PACKAGE, "--main_module", audiocraft_env.DORA_MAIN_MODULE,
            "run", *presets.hydra_overrides(dora_args)]


def all_node_commands(dora_args: tp.Sequence[str], node: NodeSpec) -> tp.List[tp.List[str]]:
    """:func:`torchrun_args` for node 0, 1, ... ``nnodes - 1`` (what ``--dry-run`` prints)."""
    return [torchrun_args(dora_args, node.for_rank(k)) for k in range(node.nnodes)]


# ------------------------------------------------------------------------------------------- agreement


def node_facts(workspace: tp.Optional[PathLike], dataset: str, codec_checkpoint: tp.Optional[str] = None
               ) -> tp.Dict[str, tp.Any]:
    """What this node sees, to compare with every other node before training.

    ``manifests``: each split's content hash (:func:`musicpipe.token_cache.keys_hash` of its segments' path, size
    and mtime, as the token store checks them). ``codec``: for an LM, the codec checkpoint it names and a hash of
    that file as this node reads it (``//sig/<sig>``: the XP's ``checkpoint.th``; a release: its name only).
    """
    from musicpipe import download, token_cache

    ws = paths.workspace_root(workspace)
    facts: tp.Dict[str, tp.Any] = {"host": socket.gethostname(), "workspace": str(ws), "dataset": dataset,
                                   "manifests": {}}
    for split in ("train", "valid"):
        try:
            keys = [key for _path, key, _dur in token_cache.manifest_keys(dataset, split, ws)]
            facts["manifests"][split] = token_cache.keys_hash(keys)
        except token_cache.TokenCacheError as exc:
            facts["manifests"][split] = f"unreadable: {exc}"
    if codec_checkpoint:
        codec: tp.Dict[str, tp.Any] = {"ref": codec_checkpoint}
        if codec_checkpoint.startswith("//sig/"):
            ckpt = paths.xp_dir(codec_checkpoint[len("//sig/"):], ws) / "checkpoint.th"
            codec["hash"] = download.file_hash(ckpt, "blake2b") if ckpt.is_file() else f"missing: {ckpt}"
        facts["codec"] = codec
    return facts


def disagreements(facts: tp.Sequence[tp.Mapping[str, tp.Any]]) -> tp.List[str]:
    """What each rank sees that rank 0 does not, one sentence per node naming it; [] when all agree.

    ``facts[r]`` is rank r's :func:`node_facts` plus ``rank``, ``node`` (torchrun's node rank) and ``token``:
    True when it read back rank 0's token from the XP folder, else what it found there.

    >>> base = {"host": "a", "workspace": "/ws", "manifests": {"train": "1"}, "token": True, "node": 0, "rank": 0}
    >>> disagreements([base, {**base, "host": "b", "node": 1, "rank": 1}])
    []
    >>> node1 = {**base, "host": "b", "node": 1, "rank": 1, "workspace": "/o", "token": "missing"}
    >>> problems = disagreements([base, node1])
    >>> problems[0].startswith("node 1 (host b, rank 1, workspace /o) does not see rank 0's workspace (/ws on host a)")
    True
    """
    problems: tp.List[str] = []
    ref = facts[0]
    seen: tp.Set[tp.Any] = set()
    for f in facts:
        node = f.get("node")
        if node in seen:
            continue
        what = f"node {node} (host {f.get('host')}, rank {f.get('rank')}, workspace {f.get('workspace')})"
        issues = []
        if f.get("token") is not True:
            issues.append(f"does not see rank 0's workspace ({ref.get('workspace')} on host {ref.get('host')}): "
                          f"the token rank 0 wrote in the XP folder is {f.get('token')} there; every node must mount "
                          "the same shared workspace (checkpoints are written by rank 0 and read by every rank)")
        for split, digest in sorted((ref.get("manifests") or {}).items()):
            theirs = (f.get("manifests") or {}).get(split)
            if theirs != digest:
                issues.append(f"sees another {split} manifest of {ref.get('dataset')} (hash {str(theirs)[:16]} vs "
                              f"{str(digest)[:16]} on node 0)")
        if ref.get("codec") != f.get("codec"):
            issues.append(f"sees another codec ({f.get('codec')} vs {ref.get('codec')} on node 0)")
        if issues:
            seen.add(node)
            problems.append(f"{what} " + "; ".join(issues))
    return problems


# ------------------------------------------------------------------------------------------- bandwidth


def allreduce_bytes_per_step(params: int, world: int, bytes_per_grad: int = 4) -> float:
    """Bytes each rank sends (and receives) per optimizer step in a ring all-reduce of fp32 gradients.

    A ring all-reduce of G bytes moves ``2 (N - 1) / N x G`` per rank. musicgen-small's LM (319M parameters,
    :func:`musicpipe.sizing.lm_parameters`, so G = 1.28 GB of fp32 gradients) on 2 nodes x 4 GPUs:
    2 x 7/8 x 1.28 GB = 2.23 GB per step per GPU.

    >>> round(allreduce_bytes_per_step(318_871_552, 8) / 1e9, 2)
    2.23
    """
    grads = params * bytes_per_grad
    return 2 * (world - 1) / world * grads if world > 1 else 0.0


# ------------------------------------------------------------------------------------------- SLURM (Dora's launcher)

DORA_GPUS_PER_NODE = 8  # Dora's SLURM launcher: up to 8 GPUs on one node, else gpus // 8 nodes of 8 GPUs


def slurm_launch_args(dora_args: tp.Sequence[str], partition: str, nodes: int = 1, gpus_per_node: int = 1
                      ) -> tp.List[str]:
    """``dora launch`` arguments that submit the same XP as ``dora_args`` to SLURM through Dora (submitit).

    Dora takes the total GPU count and places it itself (``dora.shep``): up to 8 on one node, beyond that
    ``gpus // 8`` nodes of 8, one task per GPU. So ``nodes`` > 1 needs 8 GPUs per node; other layouts are refused
    with the reason. ``--no_git_save``: the job runs this checkout (Dora's git_save would clone a clean copy of
    the repository its package lives in); ``--no_tail``: return once submitted.

    >>> slurm_launch_args(["run", "solver=s"], "gpu", nodes=2, gpus_per_node=8)
    ['launch', '--no_git_save', '--no_tail', '-p', 'gpu', '-g', '16', 'solver=s']
    """
    if not partition:
        raise MultiNodeError("--slurm needs a partition name")
    if nodes < 1 or gpus_per_node < 1:
        raise MultiNodeError(f"--slurm needs at least 1 node and 1 GPU per node, got {nodes} and {gpus_per_node}")
    if nodes == 1 and gpus_per_node > DORA_GPUS_PER_NODE:
        raise MultiNodeError(f"Dora's SLURM launcher places at most {DORA_GPUS_PER_NODE} GPUs on a node; "
                             f"{gpus_per_node} GPUs need --nodes {math.ceil(gpus_per_node / DORA_GPUS_PER_NODE)} "
                             f"with --gpus {DORA_GPUS_PER_NODE}")
    if nodes > 1 and gpus_per_node != DORA_GPUS_PER_NODE:
        raise MultiNodeError(f"Dora's SLURM launcher spreads GPUs over nodes of {DORA_GPUS_PER_NODE} only: --nodes "
                             f"{nodes} needs --gpus {DORA_GPUS_PER_NODE} (got {gpus_per_node}); for other layouts use "
                             "torchrun on every node (--node-rank, --master-addr)")
    return ["launch", "--no_git_save", "--no_tail", "-p", partition, "-g", str(nodes * gpus_per_node),
            *presets.hydra_overrides(dora_args)]


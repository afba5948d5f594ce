"""Watching runs: TensorBoard event files in every XP folder, Weights & Biases on request.

TensorBoard is AudioCraft's own ``logging.log_tensorboard`` (on in every preset): event files in
``<xp>/tensorboard/``, one scalar per stage metric per epoch (``train/ce``, ``valid/ce``...). W&B is
AudioCraft's ``logging.log_wandb`` with its ``wandb.*`` settings, switched on for a training process by
environment variables that the Dora entry package applies (:mod:`musicpipe.dora_entry.wandb_hooks`), so
turning W&B on or off never changes the XP signature (and ``logging.*``/``wandb.*`` are in AudioCraft's
``dora.exclude`` anyway). The W&B run id and name are the XP signature, so a resumed XP continues its run.

Example:
    >>> tensorboard_command("/root/workspace")
    'tensorboard --logdir /root/workspace/experiments/audiocraft/xps'
    >>> env = wandb_env("my-project", {"preset": "demo_cpu"}, environ={"WANDB_API_KEY": "x"})
    >>> env["MUSICPIPE_WANDB_PROJECT"], json.loads(env["MUSICPIPE_WANDB_CONFIG"])
    ('my-project', {'preset': 'demo_cpu'})
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import typing as tp
from pathlib import Path

from musicpipe import paths

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
PROJECT_ENV = "MUSICPIPE_WANDB_PROJECT"  # set for the Dora processes of one training call only
CONFIG_ENV = "MUSICPIPE_WANDB_CONFIG"  # JSON: preset, dataset, codec, conditioning (the run's config)
TENSORBOARD_DIR = "tensorboard"  # flashy's TensorboardLogger.from_xp: <xp>/tensorboard


def tensorboard_command(workspace: tp.Optional[PathLike] = None) -> str:
    """The command that shows every XP of ``workspace`` in TensorBoard."""
    return f"tensorboard --logdir {shlex.quote(str(paths.workspace_root(workspace) / 'experiments' / 'audiocraft' / 'xps'))}"


def wandb_project(project: tp.Optional[str] = None, environ: tp.Optional[tp.Mapping[str, str]] = None
                  ) -> tp.Optional[str]:
    """``project`` (``--wandb``), else ``$WANDB_PROJECT``, else None (W&B off).

    >>> wandb_project(None, {"WANDB_PROJECT": "p"}), wandb_project("q", {"WANDB_PROJECT": "p"}), wandb_project(None, {})
    ('p', 'q', None)
    """
    env = os.environ if environ is None else environ
    return project or env.get("WANDB_PROJECT") or None


def has_wandb_key(environ: tp.Optional[tp.Mapping[str, str]] = None, netrc: tp.Optional[Path] = None) -> bool:
    """An API key in ``$WANDB_API_KEY`` or in ``~/.netrc`` (what ``wandb login`` writes)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return True
    path = netrc or Path(env.get("NETRC") or Path.home() / ".netrc")
    try:
        return "api.wandb.ai" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def wandb_env(project: str, config: tp.Mapping[str, tp.Any],
              environ: tp.Optional[tp.Mapping[str, str]] = None) -> tp.Dict[str, str]:
    """The environment that switches W&B on in the Dora processes (see the module docstring).

    Without an API key and outside offline/disabled mode, logs one warning and adds ``WANDB_MODE=offline``:
    training goes on and the run stays in ``<xp>/wandb/`` for ``wandb sync`` later.
    """
    env = os.environ if environ is None else environ
    out = {PROJECT_ENV: project, CONFIG_ENV: json.dumps(dict(config), sort_keys=True, default=str)}
    mode = (env.get("WANDB_MODE") or "").lower()
    if mode not in ("offline", "disabled", "dryrun") and not has_wandb_key(env):
        logger.warning("W&B: no API key (set WANDB_API_KEY or run `wandb login`): logging offline to <xp>/wandb/, "
                       "upload later with `wandb sync <xp>/wandb/offline-run-*`; training goes on")
        out["WANDB_MODE"] = "offline"
    return out


# ------------------------------------------------------------------------------------------------ reading back


def read_tensorboard(folder: PathLike) -> tp.Dict[str, tp.Dict[int, float]]:
    """``{tag: {step: value}}`` of every scalar in the event files under ``folder`` (e.g. ``<xp>/tensorboard``).

    Uses the ``tensorboard`` package's event reader; later files win for a step logged twice (a resumed run).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: tp.Dict[str, tp.Dict[int, float]] = {}
    for events in sorted(Path(folder).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                out.setdefault(tag, {})[int(event.step)] = float(event.value)
    return out


def _wandb_records(path: Path) -> tp.Iterator[bytes]:
    """The records of a W&B transaction log (``run-<id>.wandb``: LevelDB log format after a 7-byte header)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


def read_wandb_run(run_dir: PathLike) -> tp.Dict[str, tp.Any]:
    """What a local W&B run folder (``<xp>/wandb/offline-run-*``) holds: id, project, config and history.

    ``{"id", "project", "name", "config": {key: value}, "history": {step: {metric: value}}}``, read from its
    ``run-<id>.wandb`` file with W&B's own protobuf records (offline runs keep no other copy).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file")
    out: tp.Dict[str, tp.Any] = {"id": None, "project": None, "name": None, "config": {}, "history": {}}

    def value(item: tp.Any) -> tp.Any:
        return json.loads(item.value_json)

    for raw in _wandb_records(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(id=record.run.run_id, project=record.run.project, name=record.run.display_name)
            out["config"].update({i.key: value(i) for i in record.run.config.update if i.key})
        elif kind == "config":
            out["config"].update({i.key or "/".join(i.nested_key): value(i) for i in record.config.update})
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): value(i) for i in record.history.item}
            step = int(row.get("_step", record.history.step.num))
            out["history"].setdefault(step, {}).update({k: v for k, v in row.items() if not k.startswith("_")})
    return out


def wandb_runs(xp_folder: PathLike) -> tp.List[Path]:
    """The local W&B run folders of an XP (``<xp>/wandb/run-*`` and ``offline-run-*``), oldest first."""
    root = Path(xp_folder) / "wandb"
    return sorted((p for p in root.glob("*run-*") if p.is_dir()), key=lambda p: p.name.split("run-", 1)[1])

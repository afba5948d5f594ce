"""Carry optimizer and EMA state into an XP that starts from another XP's checkpoint (``continue_from``).

AudioCraft's ``continue_from=//sig/<sig>`` (or a checkpoint path) restores only the *best state* of the
source (``StandardSolver.load_checkpoints``: the model weights of the epoch with the best valid ``ce``,
EMA weights when EMA is on); the optimizer, the LR scheduler and the EMA restart. For a curriculum
(``training_checks/curriculum_train.py``) that throws away Adam's moments at every stage switch.

With ``MUSICPIPE_CARRY_STATE=1`` in the environment (read at load time, so it does not change XP
signatures), this hook wraps ``StandardSolver.load_checkpoints``. When, and only when, the XP starts
fresh from ``continue_from`` (no ``checkpoint.th`` of its own yet, training rather than
``execute_only``, ``load_best`` not asked for, not ``//pretrained/``, no FSDP), after AudioCraft has
done its part it loads the source checkpoint again and sets:

================  ===============================================================================
state             at the start of the new XP
================  ===============================================================================
model weights     CARRIED: the source's *last* weights (``model``), not its best state, so that
                  they match the optimizer moments carried with them. (Without the hook AudioCraft
                  starts from the best state.)
optimizer         CARRIED: the per-parameter state (AdamW ``exp_avg``, ``exp_avg_sq``, ``step``).
                  The param-group hyperparameters (``lr``, betas, weight decay, ``initial_lr``) are
                  the new XP's own, so a stage's ``optim.lr`` and its scheduler apply. Refused (and
                  logged) when the parameter groups, sizes or optimizer kind differ.
EMA               CARRIED when both XPs use EMA (``ema`` state and its ``count``); when only the new
                  one does, its EMA restarts from the carried weights.
LR schedule       RESTARTS: AudioCraft builds it for this XP's own ``optim.epochs x
                  updates_per_epoch`` (``total_updates``); a carried step count would sit at a
                  meaningless point of a horizon of a different length (a finished cosine would
                  start the next stage at the end of its decay). Warmup, if configured, runs again.
grad scaler       CARRIED when both XPs have one (fp16 autocast only).
epoch counter     RESTARTS at 1: the new XP has its own ``history.json``.
best state        NOT CARRIED in effect: AudioCraft loads the source's best state, and the new XP
                  replaces it after its first validation (its history starts empty, so the best-
                  ``ce`` comparison restarts: ``ce`` on other segment lengths is not comparable).
================  ===============================================================================

What was carried is logged and written to ``<xp>/carried_state.json`` (rank 0): the source, the keys
carried or skipped (with the reason), and a SHA-256 digest of each carried state as the solver
holds it after loading (:func:`state_digest`; equal to the digest of the same entry of the source
checkpoint when the carry worked), plus the optimizer's step count and the EMA count.

Install it in the Dora entry package (``musicpipe/dora_entry/train.py``)::

    from musicpipe.dora_entry.carry_state import install_carry_state_hook; install_carry_state_hook()

Example:
    >>> import torch
    >>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.zeros(2)})
    True
    >>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.ones(2)})
    False
    >>> carry_enabled({"MUSICPIPE_CARRY_STATE": "1"}), carry_enabled({})
    (True, False)
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import logging
import os
import typing as tp
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "MUSICPIPE_CARRY_STATE"
REPORT = "carried_state.json"  # written into the new XP folder
PRETRAINED_PREFIX = "//pretrained/"
NOT_CARRIED = {
    "lr_scheduler": "restarted: built for this XP's own epochs x updates_per_epoch",
    "epoch": "restarted at 1: the XP has its own history",
    "best_state": "the source's best state, replaced after this XP's first validation",
}


def carry_enabled(environ: tp.Optional[tp.Mapping[str, str]] = None) -> bool:
    """Whether ``MUSICPIPE_CARRY_STATE`` asks for carrying (``1``/``true``/``yes``/``on``).

    >>> carry_enabled({"MUSICPIPE_CARRY_STATE": "0"}), carry_enabled({"MUSICPIPE_CARRY_STATE": "yes"})
    (False, True)
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _leaves(obj: tp.Any, prefix: str = "") -> tp.Iterator[tp.Tuple[str, tp.Any]]:
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{prefix}/{i}")
    else:
        yield prefix, obj


def state_digest(state: tp.Any) -> str:
    """SHA-256 of a nested state (dicts, lists, tensors, scalars): keys, dtypes, shapes and exact values.

    Tensors are hashed by their bytes on CPU (any dtype, bf16 included), so two states have the same
    digest exactly when they hold the same values.

    >>> import torch
    >>> a = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}}}
    >>> state_digest(a) == state_digest({"state": {0: {"exp_avg": torch.ones(2, 2), "step": torch.tensor(3.0)}}})
    True
    >>> len(state_digest(None))
    64
    """
    import torch

    h = hashlib.sha256()
    for key, value in _leaves(state):
        h.update(key.encode("utf-8") + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode("utf-8"))
        h.update(b"\1")
    return h.hexdigest()


def optimizer_steps(optimizer_state: tp.Any) -> tp.Optional[int]:
    """The largest per-parameter ``step`` in an optimizer ``state_dict()`` (None without one).

    >>> import torch
    >>> optimizer_steps({"state": {0: {"step": torch.tensor(10.0)}, 1: {"step": torch.tensor(10.0)}}})
    10
    >>> optimizer_steps({"state": {}}) is None
    True
    """
    steps = []
    for per_param in (optimizer_state or {}).get("state", {}).values():
        step = per_param.get("step") if isinstance(per_param, dict) else None
        if step is not None:
            steps.append(int(float(step)))
    return max(steps) if steps else None


def _group_keys(group: tp.Mapping[str, tp.Any]) -> tp.Set[str]:
    return set(group) - {"params", "initial_lr"}


def merge_optimizer_state(current: tp.Mapping[str, tp.Any], saved: tp.Mapping[str, tp.Any],
                          param_shapes: tp.Sequence[tp.Tuple[int, ...]]) -> tp.Dict[str, tp.Any]:
    """The saved per-parameter state under the current param groups (hyperparameters: the current ones).

    Raises ``ValueError`` (with the reason) when the saved state cannot belong to these parameters: other
    group count or sizes, another optimizer kind (other group keys), or a moment of another shape.

    >>> import torch
    >>> cur = {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95), "params": [0, 1]}]}
    >>> old = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.5, "betas": (0.9, 0.95),
    ...                                                                 "params": [0, 1]}]}
    >>> merged = merge_optimizer_state(cur, old, [(3,), (2,)])
    >>> merged["param_groups"][0]["lr"], merged["state"][0]["exp_avg"].tolist()
    (0.1, [1.0, 1.0, 1.0])
    >>> merge_optimizer_state(cur, old, [(4,), (2,)])
    Traceback (most recent call last):
    ...
    ValueError: parameter 0: saved exp_avg has shape (3,), the parameter (4,)
    """
    import torch

    cur_groups, old_groups = list(current["param_groups"]), list(saved.get("param_groups", []))
    if len(cur_groups) != len(old_groups):
        raise ValueError(f"{len(old_groups)} saved parameter group(s), the optimizer has {len(cur_groups)}")
    for i, (cur, old) in enumerate(zip(cur_groups, old_groups)):
        if len(cur["params"]) != len(old["params"]):
            raise ValueError(f"parameter group {i}: {len(old['params'])} saved parameters, "
                             f"the optimizer has {len(cur['params'])}")
        if _group_keys(cur) != _group_keys(old):
            raise ValueError(f"parameter group {i}: another optimizer kind (saved settings "
                             f"{sorted(_group_keys(old))}, now {sorted(_group_keys(cur))})")
    index = [p for g in cur_groups for p in g["params"]]
    shape_of = dict(zip(index, param_shapes))
    for pid, per_param in saved.get("state", {}).items():
        if pid not in shape_of:
            raise ValueError(f"saved state for parameter {pid}, which the optimizer does not have")
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(shape_of[pid]):
                raise ValueError(f"parameter {pid}: saved {key} has shape {tuple(value.shape)}, "
                                 f"the parameter {tuple(shape_of[pid])}")
    return {"state": dict(saved.get("state", {})), "param_groups": cur_groups}


def should_carry(solver: tp.Any, load_best: bool = False, environ: tp.Optional[tp.Mapping[str, str]] = None) \
        -> tp.Tuple[bool, str]:
    """``(carry?, why)`` for a solver about to load its checkpoints (called before AudioCraft loads them)."""
    if not carry_enabled(environ):
        return False, f"{ENV_VAR} not set"
    cfg = solver.cfg
    source = str(cfg.continue_from or "")
    if not source:
        return False, "no continue_from"
    if source.startswith(PRETRAINED_PREFIX):
        return False, "continue_from a //pretrained/ model"
    if solver.checkpoint_path(use_fsdp=False).exists():
        return False, "the XP resumes its own checkpoint"
    if load_best:
        return False, "load_best (evaluation) load"
    if cfg.get("execute_only"):
        return False, f"execute_only={cfg.execute_only}"
    if cfg.fsdp.use:
        return False, "FSDP (sharded states are not carried)"
    return True, f"fresh XP continuing from {source}"


def carry_state(solver: tp.Any, ignore_state_keys: tp.Sequence[str] = ()) -> tp.Dict[str, tp.Any]:
    """Load model, optimizer, EMA (and grad scaler) of ``solver.cfg.continue_from`` into ``solver``.

    Returns the report written to ``<xp>/carried_state.json`` (see the module docstring).
    """
    import flashy
    from audiocraft.utils import checkpoint

    source = str(solver.cfg.continue_from)
    path = checkpoint.resolve_checkpoint_path(source, use_fsdp=False)
    if path is None:
        raise RuntimeError(f"could not resolve continue_from {source}")
    saved = checkpoint.load_checkpoint(path, is_sharded=False)
    sources = solver.stateful.sources
    carried: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    skipped: tp.Dict[str, str] = {}
    ignored = set(ignore_state_keys)

    def skip(key: str, reason: str) -> None:
        skipped[key] = reason
        logger.warning("carry state: %s not carried: %s", key, reason)

    if "model" in ignored:
        skip("model", "in ignore_state_keys")
    elif saved.get("model") is None:
        skip("model", "the source checkpoint has no model state")
    else:
        sources["model"].load_state_dict(saved["model"])
        carried["model"] = {"digest": state_digest(solver.model.state_dict())}

    optimizer = getattr(solver, "optimizer", None)
    if "optimizer" in ignored:
        skip("optimizer", "in ignore_state_keys")
    elif optimizer is None or "optimizer" not in sources:
        skip("optimizer", "the solver has no optimizer")
    elif not saved.get("optimizer"):
        skip("optimizer", "the source checkpoint has no optimizer state")
    elif "model" not in carried:
        skip("optimizer", "the model weights were not carried")
    else:
        try:
            shapes = [tuple(p.shape) for g in optimizer.param_groups for p in g["params"]]
            merged = merge_optimizer_state(optimizer.state_dict(), saved["optimizer"], shapes)
            optimizer.load_state_dict(merged)
            live = optimizer.state_dict()
            carried["optimizer"] = {"digest": state_digest(live["state"]), "steps": optimizer_steps(live),
                                    "lr": sorted({float(g["lr"]) for g in live["param_groups"]})}
        except ValueError as exc:
            skip("optimizer", str(exc))

    ema = getattr(solver, "ema", None)
    if "ema" in ignored:
        skip("ema", "in ignore_state_keys")
    elif ema is None:
        skip("ema", "EMA is off in this XP")
    elif not saved.get("ema") or "model" not in carried:
        solver.initialize_ema()  # AudioCraft initialised it from the best state: restart it from the weights
        skip("ema", "EMA was off in the source" if not saved.get("ema") else "the model weights were not carried")
    else:
        try:
            solver.ema.load_state_dict(saved["ema"])
            live = solver.ema.state_dict()
            carried["ema"] = {"digest": state_digest(live["state"]), "count": float(live["count"])}
        except (KeyError, RuntimeError) as exc:
            solver.initialize_ema()
            skip("ema", f"cannot load the source's EMA ({type(exc).__name__}: {exc}); restarted from the weights")

    scaler = getattr(solver, "scaler", None)
    if scaler is not None and saved.get("scaler") and "scaler" not in ignored:
        scaler.load_state_dict(saved["scaler"])
        carried["scaler"] = {"scale": float(scaler.get_scale())}

    report = {"source": source, "source_path": str(path), "carried": carried, "skipped": skipped,
              "not_carried": dict(NOT_CARRIED),
              "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    logger.info("carry state from %s: carried %s; skipped %s; lr scheduler, epoch and best state restart",
                source, ", ".join(carried) or "nothing", ", ".join(skipped) or "nothing")
    if flashy.distrib.is_rank_zero():
        from musicpipe import atomic

        atomic.write_json(Path(solver.folder) / REPORT, report, indent=1)
    return report


def install_carry_state_hook() -> None:
    """Wrap ``StandardSolver.load_checkpoints`` (once) to carry state when ``MUSICPIPE_CARRY_STATE=1``."""
    from audiocraft.solvers.base import StandardSolver

    if getattr(StandardSolver.load_checkpoints, "_musicpipe_carry", False):
        return
    original = StandardSolver.load_checkpoints

    @functools.wraps(original)
    def load_checkpoints(self: tp.Any, load_best: bool = False, ignore_state_keys: tp.List[str] = []) \
            -> tp.Optional[dict]:  # noqa: B006 - AudioCraft's signature
        carry, why = should_carry(self, load_best)
        state = original(self, load_best, ignore_state_keys)
        if carry:
            carry_state(self, ignore_state_keys)
        elif carry_enabled() and self.cfg.continue_from:
            logger.info("carry state: not applied (%s)", why)
        return state

    load_checkpoints._musicpipe_carry = True  # type: ignore[attr-defined]
    StandardSolver.load_checkpoints = load_checkpoints

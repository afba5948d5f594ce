"""Training-stability hooks attached in every Dora process: skip non-finite updates, adapt the LR, stop on divergence.

:func:`install_stability_hooks` (called by :mod:`musicpipe.dora_entry.train`) wraps, once, for both
``CompressionSolver`` and ``MusicGenSolver`` of AudioCraft 1.3.0:

- ``train`` (the train stage of an epoch): creates the solver's monitor on its first call, starts and ends the
  epoch, appends the epoch's record to ``<xp folder>/stability.jsonl`` (rank 0) and adds
  ``stability_nan_steps``, ``stability_inf_grad_steps``, ``stability_scaler_skipped``,
  ``stability_skipped_updates``, ``stability_lr_scale``, ``stability_min_lr``/``stability_max_lr`` to the
  epoch's train metrics (hence to ``history.json``). Raising there, before ``commit``, means a failed epoch
  never writes a checkpoint: ``checkpoint.th`` stays the previous epoch's.
- ``run_step`` (training steps only): observes the loss, the gradient norm and the fp16 GradScaler's scale
  before/after, feeds :class:`training_checks.stability_monitor.StabilityMonitor` and acts on its decision
  (log, raise :class:`~training_checks.stability_monitor.TrainingDivergedError`). MusicGen's own
  ``RuntimeError("Model probably diverged.")`` on a non-finite loss is turned into a counted NaN step.
  Metric values that are not finite are dropped from a skipped step's metrics, so the epoch averages (and
  ``history.json``) hold the good steps only. Under DDP the epoch's cross-rank average is then
  :func:`aligned_average_metrics` (same sorted keys on every rank, each weighted by its good steps), since
  flashy's own pairs values by each rank's dict order and garbles an epoch where ranks dropped different keys.
- the solver's optimizers' ``step`` (instance-level, installed on the first train epoch; in the compression
  solver also the discriminators' optimizers): skipped when the gradients or the step's loss are not finite
  (the caller's ``zero_grad`` then drops the bad gradients, so weights and Adam moments stay finite);
  otherwise each param group's LR is multiplied by the monitor's ``lr_scale`` for this update only and
  restored right after. AudioCraft's schedulers therefore never see the scaled value: the closed-form ones
  (cosine, polynomial_decay, inverse_sqrt, linear_warmup) recompute the LR from ``base_lrs`` every step and
  the chainable ones (step, exponential) multiply the LR they find, which would otherwise compound the
  scale. The scale is <= 1, so the LR used is never above the scheduler's (or the base) LR. A skipped
  step still advances the scheduler, as AudioCraft does for GradScaler skips.
- ``save_checkpoints``: refuses (raises) when a model tensor is not finite, e.g. RVQ codebook buffers that a
  NaN input batch poisoned in the forward pass, which no optimizer guard can prevent.
- in the compression solver, the loss balancer's running average of gradient norms ignores non-finite
  values (one NaN step would otherwise turn every later step's gradients into NaN).

Under DDP the ranks agree on each step's classification (one small all-reduce per training step), so they
all skip, or all stop, together. MAGNeT/AudioGen subclasses inherit the ``train``/``save_checkpoints`` hooks
but MAGNeT's own ``run_step`` is not observed (its epochs record nothing).

Environment variables (read in the Dora process; they never change an XP signature):

``MUSICPIPE_STABILITY``
    ``0``/``false``/``no``/``off`` turns everything above off (AudioCraft's behaviour); default on.
``STABILITY_MAX_NAN_RATIO`` (0.1)
    fail an epoch whose NaN/non-finite-loss ratio is above this.
``STABILITY_MAX_INF_RATIO`` (0.3)
    warn above this ratio of non-finite-gradient steps.
``STABILITY_ADAPTIVE_LR`` (1)
    adapt the LR scale; ``0``: bad updates are still skipped but the LR is left alone.
``STABILITY_LR_FACTOR`` (0.5), ``STABILITY_MIN_LR_SCALE`` (0.01)
    the scale is multiplied by the factor on each unstable step, never below the floor.
``STABILITY_LR_RECOVERY_FACTOR`` (1.25), ``STABILITY_LR_RECOVERY_STEPS`` (20)
    after that many healthy updates in a row the scale is multiplied by the recovery factor, up to 1.
``STABILITY_MIN_GRAD_SCALE`` (1e-4)
    an fp16 GradScaler scale below this is divergence, not a routine skip.

State: each solver instance holds a :class:`SolverStability` in its ``_musicpipe_stability`` attribute
(the monitor: LR scale, healthy-step streak, current epoch's counters; the guarded optimizers; the current
step's observations). Only ``lr_scale`` survives a restart: a resumed run reads it back from the last
``stability.jsonl`` record of an earlier epoch (the streak restarts at 0).

Example (a plain torch loop; in training the hooks do this for AudioCraft's solvers):
    >>> import torch
    >>> from training_checks.stability_monitor import StabilityMonitor
    >>> from musicpipe.dora_entry.stability_hooks import StepGuard
    >>> model = torch.nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> guard = StepGuard(StabilityMonitor()); guard.guard_optimizer(opt, primary=True)
    >>> guard.monitor.start_epoch(1, expected_steps=4)
    >>> guard.begin_step(); model(torch.ones(1, 2)).sum().backward()
    >>> model.weight.grad[0, 0] = float("inf"); opt.step(); opt.zero_grad()
    >>> d = guard.end_step(); d.kind.value, d.lr_scale, bool(model.weight.isfinite().all())
    ('inf_grad', 0.5, True)
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import types
import typing as tp

from training_checks.stability_monitor import (EpochReport, StabilityConfig, StabilityLogError, StabilityMonitor,
                                               StepDecision, StepKind, TrainingDivergedError, append_record,
                                               enabled_from_env, latest_per_epoch, read_log)

logger = logging.getLogger(__name__)

ATTR = "_musicpipe_stability"  # per-solver SolverStability (None when the monitor is off)
MARK = "_musicpipe_stability"  # marks our wrappers, so installing twice wraps once
DIVERGED_MESSAGE = "Model probably diverged."  # MusicGenSolver.run_step's RuntimeError


def _finite(value: tp.Any) -> bool:
    if value is None:
        return True
    if hasattr(value, "detach"):
        value = value.detach()
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, RuntimeError):  # non-scalar tensors, strings: not ours to judge
        return True


def grad_total_norm(optimizer: tp.Any) -> float:
    """The L2 norm of all gradients of ``optimizer``'s parameters (0.0 without any); inf/NaN when one is.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> grad_total_norm(torch.optim.SGD([p], lr=0.1))
        5.0
    """
    import torch

    grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return 0.0
    # torch's own fused (foreach) implementation, the one clip_grad_norm_ uses: one sync per step
    return float(torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False))


def nonfinite_tensors(*modules: tp.Any, limit: int = 5) -> tp.List[str]:
    """Names of (at most ``limit``) parameters and buffers of ``modules`` holding NaN or inf.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2); nonfinite_tensors(m)
        []
        >>> with torch.no_grad(): m.bias[0] = float("nan")
        >>> nonfinite_tensors(m)
        ['bias']
    """
    import torch

    bad: tp.List[str] = []
    for module in modules:
        if module is None:
            continue
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
                bad.append(name)
                if len(bad) >= limit:
                    return bad
    return bad


def _any_rank(flags: tp.Sequence[bool], device: tp.Any = "cpu") -> tp.List[bool]:
    """``flags`` OR-ed over the DDP ranks (unchanged without torch.distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


class _Step:
    """What one training step showed so far."""

    def __init__(self) -> None:
        self.loss: tp.Optional[float] = None
        self.grad_norm: tp.Optional[float] = None  # the primary optimizer's, at its step
        self.aux_nonfinite = False  # another guarded optimizer (a discriminator) saw non-finite gradients
        self.lr: tp.Optional[float] = None  # the scheduler's LR of the primary optimizer's first group
        self.updated = False


class StepGuard:
    """The torch side of the monitor, without AudioCraft: guards optimizers and feeds the monitor per step.

    ``begin_step()`` -> the loss (:meth:`record_loss`, optional) -> backward -> ``optimizer.step()`` (guarded:
    skipped on non-finite gradients or loss, else run at ``lr x lr_scale``) -> :meth:`end_step`.
    An optimizer step outside ``begin_step``/``end_step`` runs unguarded.
    """

    def __init__(self, monitor: StabilityMonitor, device: tp.Any = "cpu"):
        self.monitor = monitor
        self.device = device
        self.step_info: tp.Optional[_Step] = None
        self._guarded: tp.Set[int] = set()
        self.key_counts: tp.Counter[str] = collections.Counter()  # train steps each metric key was averaged over

    # optimizers -----------------------------------------------------------------------------------------
    def guard_optimizer(self, optimizer: tp.Any, primary: bool = False) -> None:
        """Wrap ``optimizer.step`` (instance attribute, bound, so torch's LR-scheduler patching still works)."""
        if id(optimizer) in self._guarded:
            return
        self._guarded.add(id(optimizer))
        original = optimizer.step
        guard = self

        def step(opt: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            info = guard.step_info
            if info is None:
                return original(*args, **kwargs)
            norm = grad_total_norm(opt)
            if primary:
                info.grad_norm = norm
            elif not math.isfinite(norm):
                info.aux_nonfinite = True
            loss_bad = info.loss is not None and not math.isfinite(info.loss)
            if loss_bad or not math.isfinite(norm):
                return None  # no update: zero_grad() follows and drops the bad gradients
            scale = guard.monitor.lr_scale
            saved = [group["lr"] for group in opt.param_groups]
            if primary:
                info.lr, info.updated = float(saved[0]), True
            if scale != 1.0:
                for group, lr in zip(opt.param_groups, saved):
                    group["lr"] = lr * scale
            try:
                return original(*args, **kwargs)
            finally:
                for group, lr in zip(opt.param_groups, saved):
                    group["lr"] = lr

        step.__name__ = step.__qualname__ = "step"
        setattr(step, MARK, True)
        if getattr(original, "_wrapped_by_lr_sched", False):  # torch's LR schedulers check this marker
            step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
        optimizer.step = types.MethodType(step, optimizer)

    # steps ----------------------------------------------------------------------------------------------
    def begin_step(self) -> None:
        self.step_info = _Step()

    def abort_step(self) -> None:
        self.step_info = None

    def record_loss(self, loss: tp.Any) -> None:
        """The step's loss (a tensor or number); a non-finite one also blocks the coming optimizer steps."""
        info = self.step_info
        if info is None:
            return
        value = float(loss.detach().float().mean()) if hasattr(loss, "detach") else float(loss)
        if info.loss is None or math.isfinite(info.loss):
            info.loss = value

    def end_step(self, *, grad_norm: tp.Any = None, scale_before: tp.Optional[float] = None,
                 scale_after: tp.Optional[float] = None) -> StepDecision:
        """Classify the step (all DDP ranks agreeing) and feed the monitor; ``grad_norm`` is used when no guarded
        primary optimizer stepped (e.g. the GradScaler skipped it)."""
        info = self.step_info or _Step()
        self.step_info = None
        norm = info.grad_norm
        if norm is None and grad_norm is not None:
            norm = float(grad_norm)
        if info.aux_nonfinite and (norm is None or math.isfinite(norm)):
            norm = math.inf
        loss_bad, grad_bad = _any_rank([not _finite(info.loss), not _finite(norm)], self.device)
        loss = math.nan if loss_bad else info.loss
        if grad_bad and _finite(norm):
            norm = math.inf
        return self.monitor.observe(loss=loss, grad_norm=norm, scale_before=scale_before, scale_after=scale_after,
                                    lr=info.lr if info.updated else None)


def _finite_only_averager(averager: tp.Callable[..., tp.Dict[str, float]]) -> tp.Callable[..., tp.Dict[str, float]]:
    """flashy's running averager (the balancer's EMA of gradient norms) that ignores non-finite updates.

    Example:
        >>> import flashy
        >>> avg = _finite_only_averager(flashy.averager(0.9))
        >>> avg({"l1": 2.0})["l1"], avg({"l1": float("nan")})["l1"], avg({"l1": 2.0})["l1"]
        (2.0, nan, 2.0)
    """

    def update(metrics: tp.Dict[str, tp.Any], weight: float = 1) -> tp.Dict[str, float]:
        if all(_finite(v) for v in metrics.values()):
            return averager(metrics, weight)
        # this step is skipped anyway: answer with its own values, keep the running state clean
        return {**averager({}, weight), **{k: float(v) for k, v in metrics.items()}}

    setattr(update, MARK, True)
    return update


class SolverStability(StepGuard):
    """A solver's monitor and guards; created on its first train epoch (see the module docstring)."""

    def __init__(self, solver: tp.Any, config: StabilityConfig):
        super().__init__(StabilityMonitor(config), device=getattr(solver, "device", "cpu"))
        self.solver_name = type(solver).__name__
        self.folder = solver.folder
        self._guard_solver(solver)
        self._restore_lr_scale(solver)
        logger.info("stability monitor on for %s: %s", self.solver_name, config.to_dict())

    def _guard_solver(self, solver: tp.Any) -> None:
        self.guard_optimizer(solver.optimizer, primary=True)
        for adversary in (getattr(solver, "adv_losses", None) or {}).values():
            if getattr(adversary, "optimizer", None) is not None:
                self.guard_optimizer(adversary.optimizer)
        balancer = getattr(solver, "balancer", None)
        if balancer is not None:
            if hasattr(balancer, "averager") and not getattr(balancer.averager, MARK, False):
                balancer.averager = _finite_only_averager(balancer.averager)
            if not getattr(balancer.backward, MARK, False):
                balancer.backward = self._recording(balancer.backward)
        cross_entropy = getattr(solver, "_compute_cross_entropy", None)
        if cross_entropy is not None and not getattr(cross_entropy, MARK, False):
            solver._compute_cross_entropy = self._recording(cross_entropy)

    def _recording(self, fn: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
        """``fn`` whose result (or first result) is recorded as the step's loss."""

        @functools.wraps(fn)
        def wrapper(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            out = fn(*args, **kwargs)
            if self.step_info is not None:
                self.record_loss(out[0] if isinstance(out, tuple) else out)
            return out

        setattr(wrapper, MARK, True)
        return wrapper

    def _restore_lr_scale(self, solver: tp.Any) -> None:
        try:
            earlier = [r for r in latest_per_epoch(read_log(self.folder)) if int(r["epoch"]) < solver.epoch]
        except StabilityLogError:
            return
        if earlier and earlier[-1].get("lr_scale") is not None:
            self.monitor.load_state_dict({"lr_scale": earlier[-1]["lr_scale"]})
            logger.info("stability monitor: lr_scale %g restored from epoch %s of %s", self.monitor.lr_scale,
                        earlier[-1]["epoch"], self.folder / "stability.jsonl")

    def failure_message(self, solver: tp.Any, reason: str, epoch: tp.Optional[int] = None) -> str:
        """``reason`` plus what happened to checkpoints and where the log is (``epoch``: the failed one)."""
        epoch = solver.epoch if epoch is None else epoch
        ckpt = solver.checkpoint_path()
        kept = (f"the last good checkpoint, {ckpt} (saved after epoch {epoch - 1}), is kept" if ckpt.exists()
                else "no checkpoint had been saved yet")
        return (f"{reason}. No checkpoint is written for epoch {epoch}; {kept}. Per-epoch counts: "
                f"{self.folder / 'stability.jsonl'}; limits: $STABILITY_MAX_NAN_RATIO, $STABILITY_MAX_INF_RATIO "
                f"($MUSICPIPE_STABILITY=0 turns the monitor off).")

    def finish_epoch(self, solver: tp.Any) -> EpochReport:
        """End the monitor's epoch; rank 0 appends its record to ``stability.jsonl``."""
        import flashy

        report = self.monitor.end_epoch()
        if report.steps and flashy.distrib.is_rank_zero():
            record = {**report.to_dict(), "solver": self.solver_name, "config": self.monitor.config.to_dict()}
            append_record(self.folder, record)
        if report.verdict == "warning":
            logger.warning("stability: %s", report.reason)
        logger.info("stability epoch %d: %d steps, %d NaN-loss, %d inf-gradient, %d GradScaler skips, lr_scale %g: "
                    "%s", report.epoch, report.steps, report.nan_steps, report.inf_grad_steps, report.scaler_skipped,
                    report.lr_scale, report.verdict)
        return report


def epoch_metrics(report: EpochReport) -> tp.Dict[str, float]:
    """The ``stability_*`` train metrics of an epoch (numbers only; the LR range only when there were updates).

    Example:
        >>> r = EpochReport(epoch=1, steps=5, nan_steps=0, inf_grad_steps=1, scaler_skipped=0, lr_scale=0.5,
        ...                 min_lr=5e-4, max_lr=1e-3, verdict="ok", updates=4)
        >>> sorted(epoch_metrics(r))[:3], epoch_metrics(r)["stability_skipped_updates"]
        (['stability_inf_grad_steps', 'stability_lr_scale', 'stability_max_lr'], 1)
    """
    out: tp.Dict[str, float] = {
        "stability_nan_steps": report.nan_steps,
        "stability_inf_grad_steps": report.inf_grad_steps,
        "stability_scaler_skipped": report.scaler_skipped,
        "stability_skipped_updates": report.steps - report.updates,
        "stability_lr_scale": report.lr_scale,
    }
    if report.min_lr is not None and report.max_lr is not None:
        out["stability_min_lr"] = report.min_lr
        out["stability_max_lr"] = report.max_lr
    return out


def _runtime(solver: tp.Any, create: bool = False) -> tp.Optional[SolverStability]:
    """The solver's :class:`SolverStability`; with ``create``, made on first use (None when switched off)."""
    if hasattr(solver, ATTR) or not create:
        return getattr(solver, ATTR, None)
    runtime = None
    if enabled_from_env():
        runtime = SolverStability(solver, StabilityConfig.from_env())
    else:
        logger.info("stability monitor off ($MUSICPIPE_STABILITY=0): AudioCraft's own behaviour")
    setattr(solver, ATTR, runtime)
    return runtime


def aligned_average_metrics(metrics: tp.Dict[str, tp.Any], count: float = 1.0,
                            key_counts: tp.Optional[tp.Mapping[str, int]] = None) -> tp.Dict[str, float]:
    """``flashy.distrib.average_metrics`` that holds when ranks have different keys, or the same in another order.

    flashy zips each rank's values in its own dict order into one all-reduced tensor: when a rank dropped a
    non-finite key in the first step of an epoch (:func:`_drop_nonfinite`), its averager lists that key later
    (or never) and the ranks add up values of different metrics. Here the ranks first agree on the sorted
    union of their keys (one ``all_gather_object`` per epoch); each rank contributes ``value x weight`` and
    ``weight`` per key, the weight being the number of steps that key was averaged over on that rank
    (``key_counts``; ``count`` when not counted; 0 when the rank has no finite value), so the result is the mean
    over every good step of every rank. A key no rank has a finite value for is left out. Without
    torch.distributed (one process) ``metrics`` come back as they are.

    Example:
        >>> aligned_average_metrics({"ce": 2.0, "lr": 1e-3}, 5)
        {'ce': 2.0, 'lr': 0.001}
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return metrics
    gathered: tp.List[tp.Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(metrics))
    keys = sorted(set().union(*gathered))
    values, weights = [], []
    for key in keys:
        value = metrics.get(key)
        good = key in metrics and _finite(value)
        weight = float((key_counts or {}).get(key, count)) if good else 0.0
        values.append(float(value) * weight if good and weight else 0.0)
        weights.append(weight)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # as flashy: NCCL reduces CUDA tensors
    tensor = torch.tensor(values + weights, device=device, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    sums, totals = tensor[:len(keys)].tolist(), tensor[len(keys):].tolist()
    return {key: s / w for key, s, w in zip(keys, sums, totals) if w > 0}


@contextlib.contextmanager
def _aligned_averaging(key_counts: tp.Mapping[str, int]) -> tp.Iterator[None]:
    """Within the block, ``flashy.distrib.average_metrics`` (AudioCraft's end-of-stage average) is
    :func:`aligned_average_metrics` with the stage's per-key step counts."""
    import flashy

    original = flashy.distrib.average_metrics
    flashy.distrib.average_metrics = functools.partial(aligned_average_metrics, key_counts=key_counts)
    try:
        yield
    finally:
        flashy.distrib.average_metrics = original


def _drop_nonfinite(metrics: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    for key in [k for k, v in metrics.items() if not _finite(v)]:
        del metrics[key]
    return metrics


def _wrap_train(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def train(self: tp.Any) -> tp.Any:
        runtime = _runtime(self, create=True)
        if runtime is None:
            return original(self)
        epoch = self.epoch
        runtime.monitor.start_epoch(epoch, expected_steps=getattr(self, "train_updates_per_epoch", None))
        runtime.key_counts = collections.Counter()
        try:
            with _aligned_averaging(runtime.key_counts):
                metrics = original(self)
        except TrainingDivergedError as exc:  # stopped early, in run_step
            report = runtime.finish_epoch(self)
            if exc.report is None:
                exc.report = report
            raise
        report = runtime.finish_epoch(self)
        if report.verdict == "diverged":
            message = runtime.failure_message(self, report.reason or f"training diverged in epoch {epoch}")
            logger.error("%s", message)
            raise TrainingDivergedError(message, report)
        if report.steps:
            metrics = dict(metrics or {})
            metrics.update(epoch_metrics(report))
        return metrics

    setattr(train, MARK, True)
    return train


def _wrap_run_step(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def run_step(self: tp.Any, idx: int, batch: tp.Any, metrics: dict) -> tp.Any:
        runtime = getattr(self, ATTR, None)
        if runtime is None or not self.is_training:
            return original(self, idx, batch, metrics)
        scaler = getattr(self, "scaler", None)
        scale_before = float(scaler.get_scale()) if scaler is not None else None
        runtime.begin_step()
        try:
            out = original(self, idx, batch, metrics)
        except RuntimeError as exc:
            if str(exc) != DIVERGED_MESSAGE:
                runtime.abort_step()
                raise
            runtime.record_loss(math.nan)  # AudioCraft saw a non-finite loss; we decide what it means
            out = metrics
        except BaseException:
            runtime.abort_step()
            raise
        if out is None:
            out = metrics
        if not _finite(out.get("penalty")):  # the compression solver's quantizer penalty, outside the balancer
            runtime.record_loss(math.nan)
        scale_after = float(scaler.get_scale()) if scaler is not None else None
        decision = runtime.end_step(grad_norm=out.get("grad_norm"), scale_before=scale_before,
                                    scale_after=scale_after)
        if decision.kind is not StepKind.OK:
            _drop_nonfinite(out)
            log = logger.info if decision.kind is StepKind.SCALER_SKIPPED else logger.warning
            log("stability: epoch %d step %d: %s, update skipped; lr_scale %g", self.epoch, idx + 1,
                decision.kind.value, decision.lr_scale)
        runtime.key_counts.update(k for k, v in out.items() if _finite(v))  # weights of aligned_average_metrics
        if decision.warning:
            logger.warning("stability: %s", decision.warning)
        if decision.stop:
            message = runtime.failure_message(self, decision.reason or "training diverged")
            logger.error("%s", message)
            raise TrainingDivergedError(message)
        return out

    setattr(run_step, MARK, True)
    return run_step


def _wrap_save_checkpoints(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def save_checkpoints(self: tp.Any) -> tp.Any:
        runtime = getattr(self, ATTR, None)
        if runtime is not None:
            bad = nonfinite_tensors(getattr(self, "model", None), getattr(self, "adv_losses", None))
            if bad:
                epoch = self.epoch - 1  # commit() has already appended this epoch to the history
                message = runtime.failure_message(
                    self, f"training diverged in epoch {epoch}: non-finite values in the weights ({', '.join(bad)}), "
                          "found before saving its checkpoint", epoch=epoch)
                logger.error("%s", message)
                raise TrainingDivergedError(message)
        return original(self)

    setattr(save_checkpoints, MARK, True)
    return save_checkpoints


_WRAPPERS = {"train": _wrap_train, "run_step": _wrap_run_step, "save_checkpoints": _wrap_save_checkpoints}


def install_stability_hooks() -> None:
    """Wrap ``train``, ``run_step`` and ``save_checkpoints`` of the compression and musicgen solvers (once).

    The wrappers check ``$MUSICPIPE_STABILITY`` per solver, on its first train epoch: switched off, they only
    call through.
    """
    from audiocraft.solvers.compression import CompressionSolver
    from audiocraft.solvers.musicgen import MusicGenSolver

    for cls in (CompressionSolver, MusicGenSolver):
        for name, wrap in _WRAPPERS.items():
            current = cls.__dict__.get(name)
            if current is not None and getattr(current, MARK, False):
                continue
            setattr(cls, name, wrap(getattr(cls, name)))

"""Is training numerically stable? Count NaN losses and non-finite gradients per epoch, adapt the LR, stop on divergence.

AudioCraft 1.3.0 raises ``RuntimeError("Model probably diverged.")`` on the first non-finite loss of a
MusicGen step (after the optimizer has already applied the poisoned gradients) and has no guard at all in
the compression solver. This module is the pure core of musicpipe's replacement: :class:`StabilityMonitor`
takes one observation per training step (loss, gradient norm, fp16 GradScaler scale before/after the step,
the scheduler's LR) and returns a :class:`StepDecision`; it holds no tensors and imports no torch.
:mod:`musicpipe.dora_entry.stability_hooks` is the AudioCraft glue (skipping bad updates, applying the LR
scale, writing ``<xp>/stability.jsonl``) and documents the ``MUSICPIPE_STABILITY`` / ``STABILITY_*``
environment variables, read by :meth:`StabilityConfig.from_env`.

What a step is, in the order :func:`classify_step` checks it:

- ``scale_collapsed``: the GradScaler scale fell below ``min_grad_scale`` (gradients overflow even at a
  tiny scale): real divergence, training stops.
- ``nan_loss``: the loss is NaN or infinite (AudioCraft's own divergence criterion): the update is
  skipped, the LR scale goes down, and the step counts towards ``max_nan_ratio_per_epoch``.
- ``scaler_skipped``: the GradScaler lowered its scale, i.e. it found inf/NaN gradients and skipped the
  update itself. Normal with fp16 autocast; counted apart, never a reason to stop or to lower the LR.
- ``inf_grad``: finite loss, non-finite gradient norm (no scaler to handle it): the update is skipped,
  the LR scale goes down, and above ``max_inf_grad_ratio_per_epoch`` of the epoch a warning is logged.
- ``ok``: a healthy update; after ``lr_recovery_steps`` of them in a row the LR scale is multiplied by
  ``lr_recovery_factor``, never above 1 (the scheduler's LR).

When to stop: a NaN ratio above the limit fails the epoch. With the epoch's planned number of steps known
(AudioCraft's ``updates_per_epoch``), the monitor stops as soon as ``nan_steps / planned > limit``: the final
ratio ``nan_steps / steps`` can then only be higher (more NaN steps, at most the planned steps), so the
verdict is the one the epoch end would give, without training on for the rest of a failed epoch. Without a
planned count, the decision is taken at the epoch end. The limit is exclusive: 1 NaN step in 10 with
``max_nan_ratio_per_epoch=0.1`` passes.

As a script, print the stability log of a run (``--json``: the raw records)::

    python training_checks/stability_monitor.py --xp 08e4d3f1
    python training_checks/stability_monitor.py --xp workspace/experiments/audiocraft/xps/08e4d3f1 --json

It prints one row per epoch and ends with one line such as
``stability_monitor: 08e4d3f1: 2 epoch(s), 0 NaN-loss step(s), 2 inf-gradient step(s), 0 GradScaler skip(s),
lr_scale 0.25 at the end: ok``.

Example:
    >>> from training_checks.stability_monitor import StabilityConfig, StabilityMonitor
    >>> mon = StabilityMonitor(StabilityConfig(max_nan_ratio_per_epoch=0.1, max_inf_grad_ratio_per_epoch=0.3,
    ...                                        enable_adaptive_lr=True, lr_recovery_steps=2))
    >>> mon.start_epoch(1, expected_steps=10)
    >>> d = mon.observe(loss=2.3, grad_norm=float("inf"), lr=1e-3)
    >>> d.kind.value, d.skip_update, d.lr_scale
    ('inf_grad', True, 0.5)
    >>> [mon.observe(loss=2.2, grad_norm=0.9, lr=1e-3).lr_scale for _ in range(4)]   # gradual recovery
    [0.5, 0.625, 0.625, 0.78125]
    >>> d = mon.observe(loss=float("nan"), grad_norm=float("nan"), lr=1e-3)
    >>> d.kind.value, d.stop                    # 1 NaN step of 10 planned: not above 0.1
    ('nan_loss', False)
    >>> d = mon.observe(loss=float("nan"), grad_norm=float("nan"), lr=1e-3)
    >>> d.stop, d.reason.split(":")[0]          # 2 of 10 > 0.1: no need to wait for the epoch end
    (True, 'training diverged in epoch 1')
    >>> report = mon.end_epoch()
    >>> report.verdict, report.steps, report.nan_steps, report.inf_grad_steps, report.min_lr, report.max_lr
    ('diverged', 7, 2, 1, 0.0005, 0.000625)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import dataclasses
import enum
import json
import logging
import math
import os
import typing as tp

from musicpipe import atomic, paths
from musicpipe.xp import XP, XPError

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SIG_RE = paths.SIG_RE
LOG_NAME = "stability.jsonl"  # in the XP folder, one JSON line per epoch (re-runs of an epoch append)

# Environment variables (read in every Dora process, so they never change an XP signature).
ENABLE_ENV = "MUSICPIPE_STABILITY"
ENV_FIELDS: tp.Dict[str, str] = {
    "STABILITY_MAX_NAN_RATIO": "max_nan_ratio_per_epoch",
    "STABILITY_MAX_INF_RATIO": "max_inf_grad_ratio_per_epoch",
    "STABILITY_ADAPTIVE_LR": "enable_adaptive_lr",
    "STABILITY_LR_FACTOR": "lr_decrease_factor",
    "STABILITY_MIN_LR_SCALE": "min_lr_scale",
    "STABILITY_LR_RECOVERY_FACTOR": "lr_recovery_factor",
    "STABILITY_LR_RECOVERY_STEPS": "lr_recovery_steps",
    "STABILITY_MIN_GRAD_SCALE": "min_grad_scale",
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class StabilityConfigError(ValueError):
    """A stability setting out of range or unparsable; ``str()`` names the setting (or variable) and value.

    Example:
        >>> StabilityConfig(max_nan_ratio_per_epoch=1.5)
        Traceback (most recent call last):
        ...
        training_checks.stability_monitor.StabilityConfigError: max_nan_ratio_per_epoch=1.5: must be in [0, 1]
    """


class StabilityLogError(ValueError):
    """A stability log that cannot be read; ``str()`` names the file or XP and the reason."""


class TrainingDivergedError(RuntimeError):
    """Training stopped because it diverged; ``str()`` names the epoch, the counts, the ratio and the limit.

    ``report`` is the :class:`EpochReport` of the failed epoch (None when raised for another reason, e.g.
    weights found non-finite before a checkpoint save).

    Example:
        >>> err = TrainingDivergedError("training diverged in epoch 2: ...")
        >>> isinstance(err, RuntimeError), err.report is None
        (True, True)
    """

    def __init__(self, message: str, report: tp.Optional["EpochReport"] = None):
        super().__init__(message)
        self.report = report


class StepKind(str, enum.Enum):
    """What one training step was (see the module docstring for the order they are checked in)."""

    OK = "ok"
    NAN_LOSS = "nan_loss"
    INF_GRAD = "inf_grad"
    SCALER_SKIPPED = "scaler_skipped"
    SCALE_COLLAPSED = "scale_collapsed"


UNSTABLE = (StepKind.NAN_LOSS, StepKind.INF_GRAD)  # steps that lower the LR scale


def _is_finite(value: tp.Optional[float]) -> bool:
    return value is None or math.isfinite(float(value))


# ------------------------------------------------------------------------------------------------------ config


@dataclasses.dataclass(frozen=True)
class StabilityConfig:
    """Limits and adaptive-LR settings of a :class:`StabilityMonitor`.

    Args:
        max_nan_ratio_per_epoch: fail the epoch when more than this fraction of its steps has a NaN or
            infinite loss (exclusive; 0 fails on the first one, 1 never fails).
        max_inf_grad_ratio_per_epoch: warn when more than this fraction of an epoch's steps has a finite loss
            but non-finite gradients (GradScaler skips excluded). Such updates are always skipped.
        enable_adaptive_lr: scale the LR down on unstable steps and back up on healthy ones; off: the scale
            stays 1 (bad updates are still skipped).
        lr_decrease_factor: the scale is multiplied by this on each NaN-loss or inf-gradient step, in (0, 1].
        min_lr_scale: floor of the scale, relative to the scheduler's LR, in (0, 1].
        lr_recovery_factor: after ``lr_recovery_steps`` healthy updates in a row the scale is multiplied by
            this (>= 1), capped at 1: the LR never exceeds the scheduler's (or the base) LR.
        lr_recovery_steps: healthy updates in a row before each increase (>= 1).
        min_grad_scale: an fp16 GradScaler scale below this means divergence, not a routine skip
            (fairseq's ``min_loss_scale`` default, 1e-4).

    Example:
        >>> cfg = StabilityConfig.from_env({"STABILITY_MAX_NAN_RATIO": "0.25", "STABILITY_ADAPTIVE_LR": "0"})
        >>> cfg.max_nan_ratio_per_epoch, cfg.enable_adaptive_lr, cfg.max_inf_grad_ratio_per_epoch
        (0.25, False, 0.3)
        >>> StabilityConfig.from_env({"STABILITY_LR_FACTOR": "half"})
        Traceback (most recent call last):
        ...
        training_checks.stability_monitor.StabilityConfigError: STABILITY_LR_FACTOR='half': not a number
    """

    max_nan_ratio_per_epoch: float = 0.1
    max_inf_grad_ratio_per_epoch: float = 0.3
    enable_adaptive_lr: bool = True
    lr_decrease_factor: float = 0.5
    min_lr_scale: float = 0.01
    lr_recovery_factor: float = 1.25
    lr_recovery_steps: int = 20
    min_grad_scale: float = 1e-4

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> StabilityConfigError:
            return StabilityConfigError(f"{name}={getattr(self, name)!r}: {why}")

        for name in ("max_nan_ratio_per_epoch", "max_inf_grad_ratio_per_epoch"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be in [0, 1]")
        for name in ("lr_decrease_factor", "min_lr_scale"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise bad(name, "must be in (0, 1]")
        if not (math.isfinite(self.lr_recovery_factor) and self.lr_recovery_factor >= 1.0):
            raise bad("lr_recovery_factor", "must be a finite number >= 1")
        if int(self.lr_recovery_steps) != self.lr_recovery_steps or self.lr_recovery_steps < 1:
            raise bad("lr_recovery_steps", "must be an integer >= 1")
        if not (math.isfinite(self.min_grad_scale) and self.min_grad_scale >= 0.0):
            raise bad("min_grad_scale", "must be a finite number >= 0")

    @classmethod
    def from_env(cls, environ: tp.Optional[tp.Mapping[str, str]] = None) -> "StabilityConfig":
        """The config from ``STABILITY_*`` variables (see :data:`ENV_FIELDS`); unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: tp.Dict[str, tp.Any] = {}
        for var, name in ENV_FIELDS.items():
            raw = environ.get(var)
            if raw is None or raw.strip() == "":
                continue
            kind = fields[name].type
            try:
                if kind in (bool, "bool"):
                    values[name] = parse_bool(raw)
                elif kind in (int, "int"):
                    values[name] = int(raw)
                else:
                    values[name] = float(raw)
            except ValueError:
                what = "not a boolean (1/0, true/false, yes/no, on/off)" if kind in (bool, "bool") else \
                    "not an integer" if kind in (int, "int") else "not a number"
                raise StabilityConfigError(f"{var}={raw!r}: {what}") from None
        try:
            return cls(**values)
        except StabilityConfigError as e:
            var = next((v for v, n in ENV_FIELDS.items() if str(e).startswith(n + "=")), None)
            raise StabilityConfigError(f"{e} (from ${var})" if var else str(e)) from None

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return dataclasses.asdict(self)


def parse_bool(raw: str) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (case-insensitive); anything else: ValueError.

    Example:
        >>> parse_bool("Yes"), parse_bool("0")
        (True, False)
    """
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def enabled_from_env(environ: tp.Optional[tp.Mapping[str, str]] = None) -> bool:
    """Whether the monitor runs: ``$MUSICPIPE_STABILITY`` unset or true (``0``/``false``/``no``/``off``: off).

    Example:
        >>> enabled_from_env({}), enabled_from_env({"MUSICPIPE_STABILITY": "0"})
        (True, False)
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(ENABLE_ENV, "").strip()
    if not raw:
        return True
    try:
        return parse_bool(raw)
    except ValueError:
        raise StabilityConfigError(f"{ENABLE_ENV}={raw!r}: not a boolean (1/0, true/false, yes/no, on/off)") \
            from None


# --------------------------------------------------------------------------------------------- per-step core


def classify_step(loss: tp.Optional[float] = None, grad_norm: tp.Optional[float] = None,
                  scale_before: tp.Optional[float] = None, scale_after: tp.Optional[float] = None,
                  min_grad_scale: float = StabilityConfig.min_grad_scale) -> StepKind:
    """What a step was, from what it showed (None: not observed).

    Args:
        loss: the step's (unscaled) loss.
        grad_norm: total gradient norm (non-finite when any gradient is inf/NaN).
        scale_before, scale_after: the fp16 GradScaler's scale before and after the step (None: no scaler).
        min_grad_scale: below it the scale has collapsed.

    Example:
        >>> inf, nan = float("inf"), float("nan")
        >>> [classify_step(2.0, 0.5).value, classify_step(nan, nan).value, classify_step(2.0, inf).value]
        ['ok', 'nan_loss', 'inf_grad']
        >>> classify_step(2.0, inf, scale_before=65536.0, scale_after=32768.0).value   # routine fp16 skip
        'scaler_skipped'
        >>> classify_step(2.0, inf, scale_before=1.5e-4, scale_after=7.5e-5).value    # below 1e-4
        'scale_collapsed'
    """
    if scale_after is not None and float(scale_after) < min_grad_scale:
        return StepKind.SCALE_COLLAPSED
    if not _is_finite(loss):
        return StepKind.NAN_LOSS
    if scale_before is not None and scale_after is not None and float(scale_after) < float(scale_before):
        return StepKind.SCALER_SKIPPED
    if not _is_finite(grad_norm):
        return StepKind.INF_GRAD
    return StepKind.OK


@dataclasses.dataclass(frozen=True)
class StepDecision:
    """What the training loop must do after a step.

    Attributes:
        kind: what the step was.
        skip_update: the step must not change the weights (the glue skips the optimizer step; for
            ``scaler_skipped`` the GradScaler already did).
        lr_scale: the scale for the next updates (multiplies the scheduler's LR, at most 1).
        effective_lr: the LR this step's update used (scheduler LR x scale), None without an update.
        stop: training must stop (raise :class:`TrainingDivergedError` with ``reason``).
        reason: why it stops.
        warning: a warning to log now (the inf-gradient ratio just went above its limit).
    """

    kind: StepKind
    skip_update: bool
    lr_scale: float
    effective_lr: tp.Optional[float] = None
    stop: bool = False
    reason: tp.Optional[str] = None
    warning: tp.Optional[str] = None


@dataclasses.dataclass
class EpochReport:
    """One epoch's counts and verdict (``ok``, ``warning`` or ``diverged``): one line of ``stability.jsonl``.

    ``steps`` counts every training step seen (GradScaler skips included); ``updates`` those that changed the
    weights; ``lr_scale`` is the scale at the end of the epoch; ``min_lr``/``max_lr`` the effective LR range
    of its updates (None without any); ``grad_scale`` the GradScaler's last scale (None without a scaler);
    ``stopped_at_step`` the step the epoch stopped at when it stopped early.
    """

    epoch: int
    steps: int
    nan_steps: int
    inf_grad_steps: int
    scaler_skipped: int
    lr_scale: float
    min_lr: tp.Optional[float]
    max_lr: tp.Optional[float]
    verdict: str
    expected_steps: tp.Optional[int] = None
    updates: int = 0
    nan_ratio: float = 0.0
    inf_grad_ratio: float = 0.0
    grad_scale: tp.Optional[float] = None
    stopped_at_step: tp.Optional[int] = None
    reason: tp.Optional[str] = None

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return dataclasses.asdict(self)


def divergence_message(epoch: int, nan_steps: int, steps: int, limit: float, *,
                       expected_steps: tp.Optional[int] = None, inf_grad_steps: int = 0,
                       scaler_skipped: int = 0) -> str:
    """The reason of a NaN-ratio failure; with ``expected_steps`` it is an early stop after ``steps`` steps.

    Example:
        >>> divergence_message(2, 3, 5, 0.1)
        'training diverged in epoch 2: 3 of 5 steps had a NaN/non-finite loss (ratio 0.600 > max_nan_ratio_per_epoch=0.1; inf-gradient steps: 0, GradScaler skips: 0)'
        >>> divergence_message(2, 1, 2, 0.1, expected_steps=5).split("; ")[1]
        'stopped at step 2 of 5, as the ratio can no longer end at or below the limit'
    """
    counts = f"inf-gradient steps: {inf_grad_steps}, GradScaler skips: {scaler_skipped}"
    if expected_steps:
        return (f"training diverged in epoch {epoch}: {nan_steps} of the epoch's {expected_steps} planned steps had "
                f"a NaN/non-finite loss (ratio >= {nan_steps / expected_steps:.3f} > max_nan_ratio_per_epoch="
                f"{limit:g}; stopped at step {steps} of {expected_steps}, as the ratio can no longer end at or "
                f"below the limit; {counts})")
    return (f"training diverged in epoch {epoch}: {nan_steps} of {steps} steps had a NaN/non-finite loss "
            f"(ratio {nan_steps / max(steps, 1):.3f} > max_nan_ratio_per_epoch={limit:g}; {counts})")


class StabilityMonitor:
    """Per-epoch NaN / inf-gradient / GradScaler bookkeeping and the adaptive LR scale (pure: no torch).

    State: the config, ``lr_scale`` and the healthy-step streak (across epochs; :meth:`state_dict`), and the
    current epoch's counters (reset by :meth:`start_epoch`). Use: ``start_epoch`` -> ``observe`` per training
    step -> ``end_epoch``.

    Example:
        >>> mon = StabilityMonitor(StabilityConfig(min_lr_scale=0.2))
        >>> mon.start_epoch(3)
        >>> [mon.observe(loss=1.0, grad_norm=float("inf")).lr_scale for _ in range(3)]   # floor 0.2
        [0.5, 0.25, 0.2]
        >>> mon.scaled_lr(1e-3)
        0.0002
        >>> r = mon.end_epoch()
        >>> r.verdict, r.inf_grad_ratio, r.updates   # 3 of 3 > 0.3: a warning, not a failure
        ('warning', 1.0, 0)
    """

    def __init__(self, config: tp.Optional[StabilityConfig] = None, *, lr_scale: float = 1.0):
        self.config = config or StabilityConfig()
        self.lr_scale = 1.0
        self.healthy_streak = 0
        self.load_state_dict({"lr_scale": lr_scale, "healthy_streak": 0})
        self.epoch: tp.Optional[int] = None
        self.expected_steps: tp.Optional[int] = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.steps = 0
        self.updates = 0
        self.nan_steps = 0
        self.inf_grad_steps = 0
        self.scaler_skipped = 0
        self.min_lr: tp.Optional[float] = None
        self.max_lr: tp.Optional[float] = None
        self.grad_scale: tp.Optional[float] = None
        self.stop_reason: tp.Optional[str] = None
        self.stopped_at_step: tp.Optional[int] = None
        self._inf_warned = False

    # state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> tp.Dict[str, tp.Any]:
        """What carries over between epochs (and what a resumed run restores): the LR scale and streak."""
        return {"lr_scale": self.lr_scale, "healthy_streak": self.healthy_streak}

    def load_state_dict(self, state: tp.Mapping[str, tp.Any]) -> None:
        scale = float(state.get("lr_scale", 1.0))
        if not math.isfinite(scale):
            scale = 1.0
        if self.config.enable_adaptive_lr:
            self.lr_scale = min(1.0, max(self.config.min_lr_scale, scale))
        else:
            self.lr_scale = 1.0
        self.healthy_streak = max(0, int(state.get("healthy_streak", 0)))

    def scaled_lr(self, lr: float) -> float:
        """``lr`` (the scheduler's) times the current scale: what the next update uses."""
        return lr * self.lr_scale

    # epoch ---------------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, expected_steps: tp.Optional[int] = None) -> None:
        """Reset the epoch counters; ``expected_steps`` (planned updates) enables the early NaN stop."""
        self.epoch = int(epoch)
        self.expected_steps = int(expected_steps) if expected_steps else None
        self._reset_counters()

    def _require_epoch(self) -> int:
        if self.epoch is None:
            raise RuntimeError("StabilityMonitor: call start_epoch() before observe()/end_epoch()")
        return self.epoch

    def _nan_limit_exceeded(self, denominator: int) -> bool:
        return denominator > 0 and self.nan_steps / denominator > self.config.max_nan_ratio_per_epoch

    def observe(self, loss: tp.Optional[float] = None, grad_norm: tp.Optional[float] = None, *,
                scale_before: tp.Optional[float] = None, scale_after: tp.Optional[float] = None,
                lr: tp.Optional[float] = None) -> StepDecision:
        """Record one training step and decide what happens.

        Args:
            loss: the unscaled loss (None: not observed, taken as finite).
            grad_norm: the total gradient norm (None: not observed, taken as finite).
            scale_before, scale_after: the GradScaler's scale around the step (None: no scaler).
            lr: the scheduler's LR for this step (before the stability scale), for ``min_lr``/``max_lr``.
        """
        epoch = self._require_epoch()
        cfg = self.config
        kind = classify_step(loss, grad_norm, scale_before, scale_after, cfg.min_grad_scale)
        self.steps += 1
        if scale_after is not None:
            self.grad_scale = float(scale_after)
        effective_lr = None
        if kind is StepKind.OK:
            self.updates += 1
            if lr is not None:
                effective_lr = float(lr) * self.lr_scale
                self.min_lr = effective_lr if self.min_lr is None else min(self.min_lr, effective_lr)
                self.max_lr = effective_lr if self.max_lr is None else max(self.max_lr, effective_lr)
        elif kind is StepKind.NAN_LOSS:
            self.nan_steps += 1
        elif kind is StepKind.INF_GRAD:
            self.inf_grad_steps += 1
        elif kind is StepKind.SCALER_SKIPPED:
            self.scaler_skipped += 1
        self._adapt_lr(kind)

        reason = None
        if kind is StepKind.SCALE_COLLAPSED:
            reason = (f"training diverged in epoch {epoch}: the fp16 GradScaler scale fell to {scale_after:g}, "
                      f"below min_grad_scale={cfg.min_grad_scale:g}, at step {self.steps} (gradients overflow "
                      f"even at a tiny scale; NaN-loss steps: {self.nan_steps}, inf-gradient steps: "
                      f"{self.inf_grad_steps}, GradScaler skips: {self.scaler_skipped})")
        elif kind is StepKind.NAN_LOSS and self.expected_steps and self._nan_limit_exceeded(self.expected_steps):
            reason = divergence_message(epoch, self.nan_steps, self.steps, cfg.max_nan_ratio_per_epoch,
                                        expected_steps=self.expected_steps, inf_grad_steps=self.inf_grad_steps,
                                        scaler_skipped=self.scaler_skipped)
        if reason is not None and self.stop_reason is None:
            self.stop_reason, self.stopped_at_step = reason, self.steps

        warning = None
        if (kind is StepKind.INF_GRAD and not self._inf_warned and self.expected_steps
                and self.inf_grad_steps / self.expected_steps > cfg.max_inf_grad_ratio_per_epoch):
            self._inf_warned = True
            warning = (f"epoch {epoch}: {self.inf_grad_steps} of the epoch's {self.expected_steps} planned steps had "
                       f"non-finite gradients (ratio >= {self.inf_grad_steps / self.expected_steps:.3f} > "
                       f"max_inf_grad_ratio_per_epoch={cfg.max_inf_grad_ratio_per_epoch:g}); those updates were "
                       f"skipped, lr_scale is now {self.lr_scale:g}")
        return StepDecision(kind=kind, skip_update=kind is not StepKind.OK, lr_scale=self.lr_scale,
                            effective_lr=effective_lr, stop=reason is not None, reason=reason, warning=warning)

    def _adapt_lr(self, kind: StepKind) -> None:
        cfg = self.config
        if not cfg.enable_adaptive_lr:
            return
        if kind in UNSTABLE:
            self.lr_scale = max(cfg.min_lr_scale, self.lr_scale * cfg.lr_decrease_factor)
            self.healthy_streak = 0
        elif kind is StepKind.OK:
            self.healthy_streak += 1
            if self.healthy_streak >= cfg.lr_recovery_steps:
                self.healthy_streak = 0
                if self.lr_scale < 1.0:
                    self.lr_scale = min(1.0, self.lr_scale * cfg.lr_recovery_factor)
        # GradScaler skips neither lower the scale nor count as healthy updates.

    def end_epoch(self) -> EpochReport:
        """The epoch's :class:`EpochReport`; its verdict is ``diverged`` when it stopped early or its NaN ratio
        is above the limit, ``warning`` when its inf-gradient ratio is, else ``ok``."""
        epoch = self._require_epoch()
        cfg = self.config
        steps = self.steps
        nan_ratio = self.nan_steps / steps if steps else 0.0
        inf_ratio = self.inf_grad_steps / steps if steps else 0.0
        reason = self.stop_reason
        if reason is None and self._nan_limit_exceeded(steps):
            reason = divergence_message(epoch, self.nan_steps, steps, cfg.max_nan_ratio_per_epoch,
                                        inf_grad_steps=self.inf_grad_steps, scaler_skipped=self.scaler_skipped)
        if reason is not None:
            verdict = "diverged"
        elif steps and inf_ratio > cfg.max_inf_grad_ratio_per_epoch:
            verdict = "warning"
            reason = (f"epoch {epoch}: {self.inf_grad_steps} of {steps} steps had non-finite gradients (ratio "
                      f"{inf_ratio:.3f} > max_inf_grad_ratio_per_epoch={cfg.max_inf_grad_ratio_per_epoch:g}); "
                      "those updates were skipped")
        else:
            verdict = "ok"
        return EpochReport(epoch=epoch, steps=steps, nan_steps=self.nan_steps, inf_grad_steps=self.inf_grad_steps,
                           scaler_skipped=self.scaler_skipped, lr_scale=self.lr_scale, min_lr=self.min_lr,
                           max_lr=self.max_lr, verdict=verdict, expected_steps=self.expected_steps,
                           updates=self.updates, nan_ratio=nan_ratio, inf_grad_ratio=inf_ratio,
                           grad_scale=self.grad_scale, stopped_at_step=self.stopped_at_step, reason=reason)


# -------------------------------------------------------------------------------------------- the XP's log


def log_path(folder: PathLike) -> Path:
    """``<xp folder>/stability.jsonl``."""
    return Path(folder) / LOG_NAME


def parse_log(text: str, source: str = LOG_NAME) -> tp.List[tp.Dict[str, tp.Any]]:
    """The records of a ``stability.jsonl`` text (blank lines ignored); a clear error on a broken line.

    Example:
        >>> parse_log('{"epoch": 1, "verdict": "ok"}\\n\\n{"epoch": 2, "verdict": "diverged"}\\n')[1]["verdict"]
        'diverged'
        >>> parse_log('{"epoch": 1}\\nnot json\\n', "x/stability.jsonl")
        Traceback (most recent call last):
        ...
        training_checks.stability_monitor.StabilityLogError: x/stability.jsonl:2: not a JSON record
    """
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "epoch" not in record:
            raise StabilityLogError(f"{source}:{number}: not a JSON record" +
                                    ("" if record is None else " with an 'epoch' key"))
        records.append(record)
    return records


def read_log(folder: PathLike) -> tp.List[tp.Dict[str, tp.Any]]:
    """All records of ``<folder>/stability.jsonl``, in file order (each epoch once: see :func:`append_record`)."""
    path = log_path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StabilityLogError(f"{path}: no stability log (the run has not finished a training epoch with the "
                                f"monitor on, or ran with {ENABLE_ENV}=0)") from None
    return parse_log(text, str(path))


def latest_per_epoch(records: tp.Iterable[tp.Mapping[str, tp.Any]]) -> tp.List[tp.Dict[str, tp.Any]]:
    """The last record of each epoch, by epoch (logs written before epochs were replaced may repeat one).

    Example:
        >>> [r["verdict"] for r in latest_per_epoch([{"epoch": 2, "verdict": "diverged"}, {"epoch": 1, "verdict": "ok"},
        ...                                          {"epoch": 2, "verdict": "ok"}])]
        ['ok', 'ok']
    """
    last: tp.Dict[int, tp.Dict[str, tp.Any]] = {}
    for record in records:
        last[int(record["epoch"])] = dict(record)
    return [last[e] for e in sorted(last)]


SUPERSEDED_NAME = "stability_superseded.jsonl"  # beside stability.jsonl: epochs' earlier attempts


def append_record(folder: PathLike, record: tp.Mapping[str, tp.Any]) -> Path:
    """Append epoch N's JSON line to ``<folder>/stability.jsonl`` (the file is rewritten atomically).

    Records of epoch N or later already there come from a run stopped (killed, or failed by the monitor) before
    their checkpoint was saved; the resumed run trains those epochs again. They move to
    ``stability_superseded.jsonl`` beside it, so the log holds each epoch once, in order, and no attempt is lost.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> for e in (1, 2, 1, 2, 3):  # stopped after epoch 2's record, before any checkpoint: resumed at 1
        ...     _ = append_record(d, {"epoch": e})
        >>> [r["epoch"] for r in read_log(d)], [r["epoch"] for r in read_superseded(d)]
        ([1, 2, 3], [1, 2])
    """
    path = log_path(folder)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    epoch = record.get("epoch")
    kept, moved = [], []
    for line in (x for x in old.splitlines() if x.strip()):
        try:
            earlier = int(json.loads(line).get("epoch"))
        except (ValueError, TypeError, AttributeError):
            earlier = None  # an unreadable line stays for read_log to report
        (kept if epoch is None or earlier is None or earlier < int(epoch) else moved).append(line)
    if moved:
        side = Path(folder) / SUPERSEDED_NAME
        before = side.read_text(encoding="utf-8") if side.exists() else ""
        atomic.write_text(side, before + ("" if not before or before.endswith("\n") else "\n")
                          + "".join(m + "\n" for m in moved))
        logger.info("%s: epoch(s) %s trained again; the earlier record(s) moved to %s", path,
                    [json.loads(m).get("epoch") for m in moved], side)
    line = json.dumps(dict(record), ensure_ascii=False, allow_nan=False, default=_json_default)
    return atomic.write_text(path, "".join(k + "\n" for k in kept) + line + "\n")


def read_superseded(folder: PathLike) -> tp.List[tp.Dict[str, tp.Any]]:
    """Earlier attempts of epochs that were trained again (``stability_superseded.jsonl``; [] when none)."""
    path = Path(folder) / SUPERSEDED_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse_log(text, str(path))


def _json_default(value: tp.Any) -> tp.Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def resolve_xp(xp: PathLike, workspace: tp.Optional[PathLike] = None) -> tp.Tuple[str, Path]:
    """``(sig, folder)`` for an XP signature (in ``workspace``) or an XP folder.

    Example:
        >>> resolve_xp("/no/such/xp")
        Traceback (most recent call last):
        ...
        training_checks.stability_monitor.StabilityLogError: /no/such/xp: no such XP folder (nor an 8-hex-digit XP signature)
    """
    text = str(xp)
    if not (SIG_RE.match(text) and not Path(text).exists()) and not Path(text).expanduser().exists():
        raise StabilityLogError(f"{xp}: no such XP folder (nor an 8-hex-digit XP signature)")
    try:
        found = XP.resolve(text, workspace)
    except XPError as exc:
        raise StabilityLogError(str(exc)) from None
    return found.name, found.folder


# ------------------------------------------------------------------------------------------------------- CLI


def _fmt_lr(value: tp.Any) -> str:
    return "-" if value is None else f"{float(value):.2e}"


def format_log(records: tp.Sequence[tp.Mapping[str, tp.Any]]) -> str:
    """A fixed-width table, one row per record.

    Example:
        >>> rec = {"epoch": 1, "steps": 5, "nan_steps": 0, "inf_grad_steps": 1, "scaler_skipped": 0,
        ...        "lr_scale": 0.5, "min_lr": 5e-4, "max_lr": 1e-3, "verdict": "ok"}
        >>> print(format_log([rec]).splitlines()[1])
            1      5    0         1            0    0.5000  5.00e-04  1.00e-03  ok
    """
    head = (f"{'epoch':>5} {'steps':>6} {'nan':>4} {'inf_grad':>9} {'scaler_skip':>12} {'lr_scale':>9} "
            f"{'min_lr':>9} {'max_lr':>9}  verdict")
    rows = [head]
    for r in records:
        rows.append(f"{r['epoch']:>5} {r.get('steps', 0):>6} {r.get('nan_steps', 0):>4} "
                    f"{r.get('inf_grad_steps', 0):>9} {r.get('scaler_skipped', 0):>12} "
                    f"{float(r.get('lr_scale', 1.0)):>9.4f} {_fmt_lr(r.get('min_lr')):>9} "
                    f"{_fmt_lr(r.get('max_lr')):>9}  {r.get('verdict', '?')}")
    return "\n".join(rows)


def summary_line(sig: str, records: tp.Sequence[tp.Mapping[str, tp.Any]]) -> str:
    """``stability_monitor: <sig>: N epoch(s), ... lr_scale x at the end: <last verdict>`` (latest per epoch).

    Example:
        >>> summary_line("08e4d3f1", [{"epoch": 1, "nan_steps": 0, "inf_grad_steps": 2, "scaler_skipped": 0,
        ...                            "lr_scale": 0.25, "verdict": "ok"}])
        'stability_monitor: 08e4d3f1: 1 epoch(s), 0 NaN-loss step(s), 2 inf-gradient step(s), 0 GradScaler skip(s), lr_scale 0.25 at the end: ok'
    """
    latest = latest_per_epoch(records)
    if not latest:
        return f"stability_monitor: {sig}: no epochs recorded"

    def total(key: str) -> int:
        return sum(int(r.get(key, 0)) for r in latest)

    last = latest[-1]
    return (f"stability_monitor: {sig}: {len(latest)} epoch(s), {total('nan_steps')} NaN-loss step(s), "
            f"{total('inf_grad_steps')} inf-gradient step(s), {total('scaler_skipped')} GradScaler skip(s), "
            f"lr_scale {float(last.get('lr_scale', 1.0)):g} at the end: {last.get('verdict', '?')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stability_monitor",
        description="Print the per-epoch stability log (NaN-loss / inf-gradient / GradScaler-skip counts, LR "
                    "scale, verdict) that musicpipe's Dora entry writes to <xp>/stability.jsonl.")
    parser.add_argument("--xp", required=True, help="XP signature (8 hex digits) or XP folder")
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON records instead of a table")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI: a table (or the JSON lines), then a one-line summary; 1 with the reason on a bad XP or log."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sig, folder = resolve_xp(args.xp, args.workspace)
        records = read_log(folder)
    except StabilityLogError as e:
        print(f"stability_monitor: error: {e}", file=sys.stderr)
        return 1
    earlier = read_superseded(folder)
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
    else:
        print(format_log(records))
        for record in records:
            if record.get("reason"):
                print(record["reason"])
        if earlier:
            print(f"earlier attempts of epoch(s) {sorted({int(r['epoch']) for r in earlier})} (stopped before their "
                  f"checkpoint, then trained again), from {folder / SUPERSEDED_NAME}:")
            print(format_log(earlier))
            for record in earlier:
                if record.get("reason"):
                    print(record["reason"])
    print(summary_line(sig, records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A training report for one XP: plots per epoch, a self-contained HTML page and a JSON summary.

``write_report(sig)`` reads ``<xp>/history.json`` (one dict per epoch, keyed by stage), the resolved
config (``.hydra/config.yaml``), the overrides (``.argv.json``) and rank 0's ``solver.log.0``, and writes
``<outputs>/reports/<sig>/``: ``index.html``, ``summary.json`` and PNG plots. ``health_findings`` is the
pure function behind the page's health summary.

SI-SNR sign: AudioCraft logs ``sisnr`` as its SI-SNR *loss*, ``-1 * SI-SNR`` in dB
(``audiocraft/losses/sisnr.py``: "lower scores are better"), for the codec's train, valid and evaluate
stages alike. The report negates it and shows SI-SNR itself, in dB, higher is better.

Example:
    >>> history = [{"train": {"ce": 4.4, "ppl": 81.5}, "valid": {"ce": 2.6, "ppl": 13.7}},
    ...            {"train": {"ce": 2.2, "ppl": 9.0}, "valid": {"ce": float("nan"), "ppl": 5.6}}]
    >>> for f in health_findings(history, "musicgen"):
    ...     print(f["level"], f["message"])
    fail non-finite values at epoch 2: valid/ce=nan
    warn valid ce has 1 finite value only: no trend
    ok train ce decreased from 4.4 (epoch 1) to 2.2 (epoch 2) (-50.0%)
    >>> folder = write_report("08e4d3f1")   # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())   # doctest: +SKIP
    ['codebooks.png', 'index.html', 'losses.png', 'optim.png', 'summary.json', 'updates.png']
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import statistics
import typing as tp
from pathlib import Path

from musicpipe import atomic, pages, paths, tracking
from musicpipe import xp as xp_mod

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
Finding = tp.Dict[str, tp.Any]

LEVELS = ("fail", "warn", "ok")  # most severe first: findings are listed in this order
LEVEL_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
STAGES = ("train", "valid", "evaluate", "generate")
FAD_SERIES = (("lm", "LM samples"), ("codec_floor", "codec floor"), ("real_vs_real", "real vs real"),
              ("noise", "white noise"))
STAGE_STYLES = {"train": ("C0", "-", "o"), "valid": ("C1", "--", "s"), "evaluate": ("C2", ":", "D"),
                "generate": ("C3", "-.", "^")}
# The metric whose trend says whether a run learns, per kind of solver. The codec's ``g_loss`` is
# train-only and balancer-weighted, so the codec is judged on the mel distance, logged in every stage.
PRIMARY_METRICS = {"codec": ("mel", "l1", "msspec"), "lm": ("ce",), "generic": ("loss", "ce", "mel", "l1")}
CODEC_LOSSES = ("g_loss", "d_loss", "l1", "msspec", "adv", "feat", "penalty")
OVERFIT_EPOCHS = 2        # valid rising this many epochs in a row (3 points) while train falls: overfitting?
GRAD_SPIKE_FACTOR = 10.0  # grad_norm this many times the median of the earlier epochs: a spike
PPL_UNIFORM_SHARE = 0.9   # valid perplexity above this share of the codebook size: no better than uniform
REPORT_FILE_MODE = 0o644  # mkstemp makes 0600 files: a report is meant to be read by others
_SIG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_LOG_LINE_RE = re.compile(r"^\[(?P<time>[^\]]*)\]\[(?P<name>[^\]]*)\]\[(?P<level>[A-Z]+)\] - (?P<msg>.*)$")
_UPDATE_RE = re.compile(r"^(?P<stage>[A-Z][a-z]+) \| Epoch (?P<epoch>\d+) \| (?P<idx>\d+)/(?P<total>\d+) \| "
                        r"(?P<rest>.*)$")


class ReportError(ValueError):
    """An XP cannot be reported on (the message names the file and why)."""


# ---------------------------------------------------------------------------------------------- history

def _is_number(value: tp.Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_history(history: tp.Any, source: str = "history") -> tp.List[tp.Dict[str, tp.Dict[str, float]]]:
    """Check the shape AudioCraft writes: a list of ``{stage: {metric: number}}``; raise ReportError if not.

    >>> validate_history([{"train": {"ce": 1.0}}])
    [{'train': {'ce': 1.0}}]
    >>> validate_history({"train": {}}, "h.json")
    Traceback (most recent call last):
    ...
    musicpipe.report.ReportError: h.json is malformed: expected a list of epochs, got dict
    """
    if not isinstance(history, list):
        raise ReportError(f"{source} is malformed: expected a list of epochs, got {type(history).__name__}")
    for k, epoch in enumerate(history, start=1):
        if not isinstance(epoch, dict):
            raise ReportError(f"{source} is malformed: epoch {k} is a {type(epoch).__name__}, not a dict of stages")
        for stage, metrics in epoch.items():
            if not isinstance(metrics, dict):
                raise ReportError(f"{source} is malformed: epoch {k} stage {stage!r} is a "
                                  f"{type(metrics).__name__}, not a dict of metrics")
            for name, value in metrics.items():
                if not _is_number(value):
                    raise ReportError(f"{source} is malformed: epoch {k} {stage}/{name} = {value!r} is not a number")
    return history


def load_history(folder: PathLike) -> tp.List[tp.Dict[str, tp.Dict[str, float]]]:
    """``<folder>/history.json``, validated; ReportError naming the file when it is missing or malformed."""
    path = Path(folder) / xp_mod.HISTORY
    if not path.is_file():
        raise ReportError(f"{path} is missing: the XP has not finished an epoch yet, or this is not a Dora XP")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} is malformed: not valid JSON ({exc})") from exc
    return validate_history(data, str(path))


def solver_kind(solver: str) -> str:
    """``codec`` (AudioCraft's compression solver), ``lm`` (musicgen and its siblings) or ``generic``.

    The one rule, :func:`musicpipe.xp.kind_of_solver`:

    >>> solver_kind("compression"), solver_kind("musicgen"), solver_kind("diffusion")
    ('codec', 'lm', 'generic')
    """
    return xp_mod.kind_of_solver(solver)


def guess_solver(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]]) -> str:
    """The solver a history looks like (for an XP whose config is missing)."""
    names = {m for epoch in history for metrics in epoch.values() for m in metrics}
    if "ce" in names:
        return "musicgen"
    if names & {"sisnr", "mel", "msspec", "g_loss"}:
        return "compression"
    return "unknown"


def metric_names(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], stage: str) -> tp.List[str]:
    """Metrics logged for ``stage`` in any epoch, in first-seen order."""
    seen: tp.Dict[str, None] = {}
    for epoch in history:
        for name in epoch.get(stage, {}):
            seen.setdefault(name)
    return list(seen)


def series(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], stage: str,
           metric: str) -> tp.List[tp.Tuple[int, float]]:
    """``(epoch, value)`` for the epochs (1-based) that logged ``stage/metric``; values as logged (NaN kept).

    >>> series([{"train": {"ce": 3.0}}, {"train": {"ce": 2.0}, "valid": {"ce": 2.5}}], "valid", "ce")
    [(2, 2.5)]
    """
    return [(k, float(epoch[stage][metric])) for k, epoch in enumerate(history, start=1)
            if metric in epoch.get(stage, {})]


def _finite(points: tp.Sequence[tp.Tuple[int, float]]) -> tp.List[tp.Tuple[int, float]]:
    return [(e, v) for e, v in points if math.isfinite(v)]


def primary_metric(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], kind: str) -> tp.Optional[str]:
    """The metric a run's trend is judged on (``ce`` for an LM, ``mel`` for a codec), if logged."""
    names = set(metric_names(history, "train")) | set(metric_names(history, "valid"))
    for name in PRIMARY_METRICS.get(kind, PRIMARY_METRICS["generic"]):
        if name in names:
            return name
    return None


def _fmt(value: tp.Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _epochs(points: tp.Sequence[tp.Tuple[int, float]]) -> str:
    shown = ", ".join(str(e) for e, _ in points[:8])
    return shown + (f", ... ({len(points)} epochs)" if len(points) > 8 else "")


def _finding(level: str, code: str, message: str, **extra: tp.Any) -> Finding:
    assert level in LEVELS, level
    return {"level": level, "code": code, "message": message, **extra}


def _sorted(findings: tp.List[Finding]) -> tp.List[Finding]:
    return sorted(findings, key=lambda f: LEVELS.index(f["level"]))


# ---------------------------------------------------------------------------------------------- health

def health_findings(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], solver: str, *,
                    planned_epochs: tp.Optional[int] = None, card: tp.Optional[int] = None) -> tp.List[Finding]:
    """What a researcher wants to know at a glance about a run, from its history alone (pure).

    Each finding is ``{"level": "ok"|"warn"|"fail", "code": str, "message": str, ...}``, failures
    first. Rules: empty history (fail); non-finite values (fail, with the epochs and metrics);
    epochs done vs ``planned_epochs``; no validation metrics; a single epoch (no trends); first to last
    train and valid value of the primary metric (``ce``, or ``mel`` for a codec); valid rising for the
    last ``OVERFIT_EPOCHS`` epochs or more, while train falls (overfitting?); for a codec the SI-SNR trend
    and whether it is above 0 dB; for an LM the valid perplexity against uniform guessing over ``card``
    codes; grad_norm spikes; a zero learning rate.

    >>> [f["code"] for f in health_findings([], "compression")]
    ['empty_history']
    >>> health_findings([{"train": {"ce": 2.0}, "valid": {"ce": 2.1}}], "musicgen")[0]["message"]
    'only 1 epoch: trends unavailable'
    """
    history = validate_history(list(history) if isinstance(history, tuple) else history)
    kind = solver_kind(solver)
    n = len(history)
    if n == 0:
        return [_finding("fail", "empty_history", "no epoch finished: history.json is empty (the run crashed "
                         "or was stopped before the end of epoch 1)")]
    found: tp.List[Finding] = []

    bad: tp.Dict[int, tp.List[str]] = {}
    for k, epoch in enumerate(history, start=1):
        for stage, metrics in epoch.items():
            for name, value in metrics.items():
                if not math.isfinite(value):
                    bad.setdefault(k, []).append(f"{stage}/{name}={value}")
    if bad:
        first = min(bad)
        shown = ", ".join(bad[first][:6]) + (", ..." if len(bad[first]) > 6 else "")
        where = (f"epoch {first}" if len(bad) == 1
                 else f"epochs {_epochs([(e, 0.0) for e in sorted(bad)])}; first at epoch {first}")
        found.append(_finding("fail", "non_finite", f"non-finite values at {where}: {shown}",
                              epochs=sorted(bad), metrics={str(k): v for k, v in sorted(bad.items())}))

    if planned_epochs:
        if n < planned_epochs:
            found.append(_finding("warn", "incomplete", f"{n} of {planned_epochs} planned epochs in history "
                                  "(the run stopped, crashed or is still running)"))
        else:
            found.append(_finding("ok", "complete", f"all {planned_epochs} planned epochs in history"))

    has_valid = any(name != "duration" for epoch in history for name in epoch.get("valid", {}))
    if not has_valid:
        found.append(_finding("warn", "no_valid", "no validation metrics: trends and overfitting cannot be judged "
                              "on held-out data"))
    if n == 1:
        found.append(_finding("warn", "single_epoch", "only 1 epoch: trends unavailable"))

    metric = primary_metric(history, kind)
    if metric is not None and n > 1:
        for stage in ("train", "valid"):
            points = _finite(series(history, stage, metric))
            if len(points) < 2:
                if stage == "valid" and has_valid and points:
                    found.append(_finding("warn", "valid_trend", f"valid {metric} has 1 finite value only: "
                                          "no trend"))
                continue
            (e0, v0), (e1, v1) = points[0], points[-1]
            change = f" ({(v1 - v0) / abs(v0):+.1%})" if v0 else ""
            if v1 < v0:
                found.append(_finding("ok", f"{stage}_trend", f"{stage} {metric} decreased from {_fmt(v0)} (epoch "
                                      f"{e0}) to {_fmt(v1)} (epoch {e1}){change}"))
            else:
                hint = ": is the model learning? (learning rate, data)" if stage == "train" else ""
                best_e, best_v = min(points, key=lambda p: p[1])
                best = f"; best {_fmt(best_v)} at epoch {best_e}" if best_e not in (e0, e1) else ""
                found.append(_finding("warn", f"{stage}_trend", f"{stage} {metric} did not decrease: {_fmt(v0)} "
                                      f"(epoch {e0}) to {_fmt(v1)} (epoch {e1}){change}{best}{hint}"))
        found.extend(_overfitting(history, metric))

    if kind == "codec":
        found.extend(_sisnr_findings(history))
    if kind == "lm" and card:
        found.extend(_perplexity_findings(history, card))
    found.extend(_optim_findings(history))
    return _sorted(found)


def _overfitting(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], metric: str) -> tp.List[Finding]:
    valid = _finite(series(history, "valid", metric))
    rises = 0
    for (_, before), (_, after) in zip(reversed(valid[:-1]), reversed(valid[1:])):
        if after > before:
            rises += 1
        else:
            break
    if rises < OVERFIT_EPOCHS:
        return []
    (e0, v0), (e1, v1) = valid[-1 - rises], valid[-1]
    train = [(e, v) for e, v in _finite(series(history, "train", metric)) if e0 <= e <= e1]
    rising = (f"valid {metric} rising for the last {rises} epochs ({_fmt(v0)} at epoch {e0} to {_fmt(v1)} at "
              f"epoch {e1})")
    if len(train) >= 2 and train[-1][1] < train[0][1]:
        return [_finding("warn", "overfitting", f"{rising} while train {metric} falls ({_fmt(train[0][1])} to "
                         f"{_fmt(train[-1][1])}): overfitting?", epochs=[e0, e1])]
    return [_finding("warn", "valid_rising", rising, epochs=[e0, e1])]


def sisnr_db(loss: float) -> float:
    """SI-SNR in dB (higher is better) from AudioCraft's ``sisnr`` metric, which is the loss ``-SI-SNR``.

    >>> sisnr_db(32.96)
    -32.96
    """
    return -loss


def _sisnr_findings(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]]) -> tp.List[Finding]:
    for stage in ("valid", "evaluate", "train"):
        points = [(e, sisnr_db(v)) for e, v in _finite(series(history, stage, "sisnr"))]
        if points:
            break
    else:
        return []
    found = []
    (e0, v0), (e1, v1) = points[0], points[-1]
    if len(points) > 1:
        if v1 > v0:
            found.append(_finding("ok", "sisnr_trend", f"{stage} SI-SNR improved from {v0:.2f} dB (epoch {e0}) to "
                                  f"{v1:.2f} dB (epoch {e1})"))
        else:
            found.append(_finding("warn", "sisnr_trend", f"{stage} SI-SNR did not improve: {v0:.2f} dB (epoch {e0}) "
                                  f"to {v1:.2f} dB (epoch {e1})"))
    if v1 < 0:
        found.append(_finding("warn", "sisnr_level", f"last {stage} SI-SNR is {v1:.2f} dB: below 0 dB the "
                              "reconstruction error carries more energy than the signal"))
    else:
        found.append(_finding("ok", "sisnr_level", f"last {stage} SI-SNR is {v1:.2f} dB"))
    return found


def _perplexity_findings(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]],
                         card: int) -> tp.List[Finding]:
    for stage in ("valid", "train"):
        points = _finite(series(history, stage, "ppl"))
        if points:
            break
    else:
        return []
    epoch, ppl = points[-1]
    if ppl >= PPL_UNIFORM_SHARE * card:
        return [_finding("warn", "ppl_uniform", f"{stage} perplexity {_fmt(ppl)} (epoch {epoch}) is no better than "
                         f"uniform guessing over the {card} codes of a codebook")]
    return [_finding("ok", "ppl_uniform", f"{stage} perplexity {_fmt(ppl)} (epoch {epoch}), against {card} for "
                     "uniform guessing over a codebook")]


def _optim_findings(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]]) -> tp.List[Finding]:
    found = []
    grad = _finite(series(history, "train", "grad_norm"))
    for k in range(3, len(grad)):
        median = statistics.median(v for _, v in grad[:k])
        epoch, value = grad[k]
        if median > 0 and value > GRAD_SPIKE_FACTOR * median:
            found.append(_finding("warn", "grad_spike", f"grad_norm spike at epoch {epoch}: {_fmt(value)}, "
                                  f"{value / median:.0f}x the median {_fmt(median)} of the earlier epochs"))
    lr = _finite(series(history, "train", "lr"))
    if lr and lr[-1][1] == 0:
        found.append(_finding("warn", "zero_lr", f"learning rate is 0 at epoch {lr[-1][0]}"))
    return found


# ---------------------------------------------------------------------------------------------- solver.log

@dataclasses.dataclass
class LogSummary:
    """What rank 0's ``solver.log.0`` adds to the history: per-update metrics, launches, errors."""

    path: str
    updates: tp.List[tp.Dict[str, tp.Any]]  # {"stage", "epoch", "step", "total", "metrics"}
    launches: int
    errors: tp.List[str]
    warnings: int


def parse_solver_log(path: PathLike) -> tp.Optional[LogSummary]:
    """Parse AudioCraft/flashy's text log (ANSI colours stripped); None when the file does not exist.

    Per-update lines (``Train | Epoch 2 | 3/5 | 0.40 it/sec | ce 2.1 | ...``) hold the average of the
    updates since the previous logged line. A resumed run logs again into the same file: the last line
    for an (stage, epoch, step) wins.
    """
    path = Path(path)
    if not path.is_file():
        return None
    updates: tp.Dict[tp.Tuple[str, int, int], tp.Dict[str, tp.Any]] = {}
    launches, warnings, errors = 0, 0, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = _ANSI_RE.sub("", raw.rstrip("\n"))
            m = _LOG_LINE_RE.match(line)
            if m is None:
                continue
            level, msg = m.group("level"), m.group("msg")
            if level in ("ERROR", "CRITICAL"):
                errors.append(msg)
            elif level == "WARNING":
                warnings += 1
            if msg.startswith("Instantiating solver"):
                launches += 1
            u = _UPDATE_RE.match(msg)
            if u is None:
                continue
            metrics = {}
            for item in u.group("rest").split(" | ")[1:]:  # the first item is the speed
                name, _, value = item.rpartition(" ")
                try:
                    metrics[name] = float(value)
                except ValueError:
                    continue
            key = (u.group("stage").lower(), int(u.group("epoch")), int(u.group("idx")))
            updates[key] = {"stage": key[0], "epoch": key[1], "step": key[2], "total": int(u.group("total")),
                            "metrics": metrics}
    return LogSummary(path=str(path), updates=[updates[k] for k in sorted(updates)], launches=launches,
                      errors=errors, warnings=warnings)


def log_findings(log: tp.Optional[LogSummary], history: tp.Sequence[tp.Any]) -> tp.List[Finding]:
    """Findings only the log can give: an epoch under way that history lacks, ERROR lines."""
    if log is None:
        return []
    found = []
    name = Path(log.path).name
    train = [u for u in log.updates if u["stage"] == "train" and u["epoch"] > len(history)]
    if train:
        last = train[-1]
        found.append(_finding("warn", "unfinished_epoch", f"{name} shows training updates of epoch {last['epoch']} "
                              f"(up to {last['step']}/{last['total']}) that history.json lacks: the run stopped "
                              "during that epoch, or is still running"))
    if log.errors:
        found.append(_finding("warn", "log_errors", f"{name} has {len(log.errors)} ERROR line(s); first: "
                              f"{log.errors[0][:200]}"))
    return found


# ---------------------------------------------------------------------------------------------- XP files

def _read_yaml(path: Path) -> tp.Optional[tp.Dict[str, tp.Any]]:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReportError(f"{path} is malformed: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path} is malformed: expected a mapping, got {type(data).__name__}")
    return data


def _read_argv(path: Path) -> tp.List[str]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} is malformed: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise ReportError(f"{path} is malformed: expected a list of override strings")
    return data


def _read_record(path: Path) -> tp.Dict[str, tp.Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _get(cfg: tp.Mapping[str, tp.Any], dotted: str) -> tp.Any:
    node: tp.Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


_COMMON_HPARAMS = ("optim.optimizer", "optim.lr", "optim.epochs", "optim.updates_per_epoch", "optim.max_norm",
                   "optim.ema.use", "schedule.lr_scheduler", "dataset.batch_size", "dataset.segment_duration",
                   "sample_rate", "channels", "seed", "device", "autocast")
_KIND_HPARAMS = {
    "codec": ("compression_model", "seanet.dimension", "seanet.n_filters", "seanet.ratios", "rvq.n_q", "rvq.bins",
              "losses"),
    "lm": ("compression_model_checkpoint", "transformer_lm.dim", "transformer_lm.num_heads",
           "transformer_lm.num_layers", "transformer_lm.n_q", "transformer_lm.card",
           "classifier_free_guidance.training_dropout"),
}


def key_hyperparameters(cfg: tp.Mapping[str, tp.Any], kind: str) -> tp.Dict[str, tp.Any]:
    """The hyper-parameters worth a glance, from the resolved config (those it has)."""
    out = {}
    for key in _COMMON_HPARAMS + _KIND_HPARAMS.get(kind, ()):
        value = _get(cfg, key)
        if value is not None:
            out[key] = value
    return out


def _overrides(argv: tp.Sequence[str]) -> tp.Dict[str, str]:
    out = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


# ---------------------------------------------------------------------------------------------- plots

@dataclasses.dataclass
class Series:
    label: str
    stage: str
    metric: str
    negate: bool = False  # SI-SNR from AudioCraft's sisnr loss


@dataclasses.dataclass
class Panel:
    title: str
    ylabel: str
    series: tp.List[Series]
    log_scale: tp.Optional[bool] = None  # None: automatic (positive values spanning >= 50x)


@dataclasses.dataclass
class PlotSpec:
    file: str
    title: str
    panels: tp.List[Panel]
    ncols: int = 3


def _stage_series(history: tp.Sequence[tp.Any], metric: str, stages: tp.Sequence[str] = ("train", "valid"),
                  negate: bool = False) -> tp.List[Series]:
    return [Series(stage, stage, metric, negate) for stage in stages if series(history, stage, metric)]


def _codebooks(history: tp.Sequence[tp.Any]) -> tp.List[int]:
    names = set(metric_names(history, "train")) | set(metric_names(history, "valid"))
    return sorted(int(m[4:]) for m in names if re.fullmatch(r"ce_q\d+", m))


def plot_specs(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]], kind: str) -> tp.List[PlotSpec]:
    """Which figures a history gets (pure): panels of train/valid series per metric, empty ones left out."""
    specs: tp.List[PlotSpec] = []

    def add(file: str, title: str, panels: tp.List[Panel], ncols: int = 3) -> None:
        panels = [p for p in panels if p.series]
        if panels:
            specs.append(PlotSpec(file, title, panels, ncols))

    if kind == "codec":
        add("losses.png", "Training and validation losses per epoch (lower is better)",
            [Panel(m, "loss", _stage_series(history, m)) for m in CODEC_LOSSES])
        add("sisnr.png", "SI-SNR per epoch (dB, higher is better)",
            [Panel("SI-SNR = -(AudioCraft sisnr loss)", "SI-SNR (dB)",
                   _stage_series(history, "sisnr", ("train", "valid", "evaluate"), negate=True), log_scale=False)])
        add("mel.png", "Mel distance per epoch (lower is better)",
            [Panel("mel", "mel distance", _stage_series(history, "mel"))])
    elif kind == "lm":
        add("losses.png", "Cross-entropy and perplexity per epoch, train vs valid (lower is better)",
            [Panel("cross-entropy (ce)", "ce (nats)", _stage_series(history, "ce"), log_scale=False),
             Panel("perplexity (ppl)", "ppl", _stage_series(history, "ppl"))], ncols=2)
        qs = _codebooks(history)
        panels = []
        for metric, ylabel in (("ce", "ce (nats)"), ("ppl", "ppl")):
            for stage in ("valid", "train"):
                panels.append(Panel(f"{stage} {metric} per codebook", ylabel,
                                    [Series(f"q{q}", stage, f"{metric}_q{q}") for q in qs
                                     if series(history, stage, f"{metric}_q{q}")],
                                    log_scale=False if metric == "ce" else None))
        add("codebooks.png", "Cross-entropy and perplexity per codebook per epoch", panels, ncols=2)
        add("optim.png", "Optimisation per epoch",
            [Panel("learning rate", "lr", _stage_series(history, "lr", ("train",))),
             Panel("gradient norm (before clipping)", "grad_norm", _stage_series(history, "grad_norm", ("train",)))],
            ncols=2)
        add("fad.png", "Fréchet Audio Distance per epoch against real valid audio (lower is better; musicpipe "
                       "evaluate; log-mel frames unless --embedding said otherwise)",
            [Panel("FAD against real valid audio", "FAD",
                   [Series(label, "fad", metric) for metric, label in FAD_SERIES if series(history, "fad", metric)],
                   log_scale=None)])
    else:
        names = [m for m in dict.fromkeys(metric_names(history, "train") + metric_names(history, "valid"))
                 if m != "duration"]
        add("metrics.png", "Metrics per epoch", [Panel(m, m, _stage_series(history, m)) for m in names])
    return specs


def with_fad(history: tp.Sequence[tp.Mapping[str, tp.Any]], fad: tp.Mapping[int, tp.Mapping[str, tp.Any]]
             ) -> tp.List[tp.Dict[str, tp.Any]]:
    """``history`` with a ``fad`` stage at the epochs ``fad`` (:attr:`musicpipe.xp.XP.fad`) evaluated (pure).

    >>> with_fad([{"valid": {"ce": 3.0}}, {}], {2: {"fad": {"lm": 9.0}}, 5: {"fad": {"lm": 1.0}}})
    [{'valid': {'ce': 3.0}}, {'fad': {'lm': 9.0}}]
    """
    out = [dict(epoch) for epoch in history]
    for epoch, result in fad.items():
        values = {k: float(v) for k, v in (result.get("fad") or {}).items() if _is_number(v)}
        if 1 <= int(epoch) <= len(out) and values:
            out[int(epoch) - 1]["fad"] = values
    return out


def _values(history: tp.Sequence[tp.Any], s: Series) -> tp.List[tp.Tuple[int, float]]:
    return [(e, -v if s.negate else v) for e, v in series(history, s.stage, s.metric)]


def new_figure(n_panels: int, ncols: int, width: float = 5.0) -> tp.Tuple[tp.Any, tp.List[tp.Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, 3.6 * nrows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _style_axis(ax: tp.Any, n_epochs: int, values: tp.Sequence[float], log_scale: tp.Optional[bool]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(n_epochs, 1) + 0.5)
    ax.grid(True, alpha=0.3)
    finite = [v for v in values if math.isfinite(v)]
    if log_scale is None:
        log_scale = bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= 50
    if log_scale and finite and min(finite) > 0:
        ax.set_yscale("log")


def save_png(fig: tp.Any, path: Path) -> Path:
    """Save ``fig`` as a PNG (100 dpi, no software stamp, mode 0644) atomically: no half-written PNG is visible."""
    with atomic.atomic_open(path, "wb", permissions=REPORT_FILE_MODE) as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    return path


def render_plot(spec: PlotSpec, history: tp.Sequence[tp.Any], out_dir: Path, sig: str) -> tp.Dict[str, tp.Any]:
    """Draw ``spec`` into ``out_dir/spec.file``; return what was plotted (epochs and values per series).

    Every series is drawn at its own epochs, with NaN gaps for epochs that did not log it (stages
    that run every N epochs), markers on every point (a single epoch stays visible) and a red dotted
    line at epochs with non-finite values (left out of the curve).
    """
    fig, axes = new_figure(len(spec.panels), spec.ncols)
    n_epochs = len(history)
    record = {"file": spec.file, "title": spec.title, "panels": []}
    for ax, panel in zip(axes, spec.panels):
        plotted, all_values, bad_epochs = [], [], set()
        for i, s in enumerate(panel.series):
            points = _values(history, s)
            by_epoch = dict(points)
            ys = [by_epoch.get(e, math.nan) for e in range(1, n_epochs + 1)]
            ys = [v if math.isfinite(v) else math.nan for v in ys]
            bad_epochs.update(e for e, v in points if not math.isfinite(v))
            colour, linestyle, marker = STAGE_STYLES.get(s.stage, (f"C{i % 10}", "-", "o"))
            if s.label != s.stage:  # per-codebook lines: one colour each
                colour, marker = f"C{i % 10}", "o"
            ax.plot(range(1, n_epochs + 1), ys, color=colour, linestyle=linestyle, marker=marker, markersize=5,
                    label=s.label)
            all_values.extend(v for _, v in points)
            plotted.append({"label": s.label, "stage": s.stage, "metric": s.metric,
                            "transform": "negated (SI-SNR dB = -sisnr loss)" if s.negate else None,
                            "epochs": [e for e, _ in points],
                            "values": [v if math.isfinite(v) else None for _, v in points]})
        for k, e in enumerate(sorted(bad_epochs)):
            ax.axvline(e, color="red", linestyle=":", linewidth=1.5, label="non-finite" if k == 0 else None)
        _style_axis(ax, n_epochs, all_values, panel.log_scale)
        ax.set_title(panel.title)
        ax.set_ylabel(panel.ylabel)
        ax.legend(fontsize="small")
        record["panels"].append({"title": panel.title, "ylabel": panel.ylabel, "series": plotted})
    fig.suptitle(f"XP {sig}: {spec.title}")
    save_png(fig, out_dir / spec.file)
    return record


def render_updates(log: LogSummary, metric: str, out_dir: Path, sig: str,
                   file: str = "updates.png") -> tp.Optional[tp.Dict[str, tp.Any]]:
    """Train ``metric`` per logged update from solver.log (x in epochs: 1.6 is epoch 2 at 60 %)."""
    points = [(u["epoch"] - 1 + u["step"] / max(u["total"], 1), u["metrics"][metric]) for u in log.updates
              if u["stage"] == "train" and metric in u["metrics"]]
    if not points:
        return None
    fig, (ax,) = new_figure(1, 1, width=8.0)
    xs = [x for x, _ in points]
    ax.plot(xs, [y if math.isfinite(y) else math.nan for _, y in points], color="C0", marker=".",
            label="train (mean since the previous log line)")
    ax.set_xlabel("epoch (1.5 = half-way through epoch 2)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"train {metric} per logged update, from {Path(log.path).name}")
    ax.legend(fontsize="small")
    fig.suptitle(f"XP {sig}: training progress within epochs")
    save_png(fig, out_dir / file)
    return {"file": file, "title": f"train {metric} per logged update", "panels": [
        {"title": f"train {metric}", "ylabel": metric, "series": [
            {"label": "train", "stage": "train", "metric": metric, "transform": None, "x": xs,
             "values": [y if math.isfinite(y) else None for _, y in points]}]}]}


# ---------------------------------------------------------------------------------------------- page

def _cell(value: tp.Optional[float]) -> tp.Optional[tp.Dict[str, str]]:
    """A metric table cell: the shown text and the full value (its title); None for a missing value."""
    return None if value is None else {"title": repr(value), "text": _fmt(value)}


def last_metrics(history: tp.Sequence[tp.Mapping[str, tp.Mapping[str, float]]]) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """Per stage, the epoch it last ran and its metrics there (non-finite values kept as floats)."""
    out = {}
    for stage in STAGES:
        for k in range(len(history), 0, -1):
            metrics = history[k - 1].get(stage)
            if metrics:
                out[stage] = {"epoch": k, "metrics": dict(metrics)}
                break
    return out


def _metric_table(last: tp.Mapping[str, tp.Mapping[str, tp.Any]],
                  kind: str) -> tp.Tuple[tp.List[tp.Dict[str, tp.Any]], tp.List[tp.Dict[str, tp.Any]]]:
    """The last-metrics table: its stage columns (name, epoch) and its rows (label, code, cells); both empty
    when no stage logged a metric."""
    stages = [s for s in STAGES if s in last and set(last[s]["metrics"]) - {"duration"}]
    if not stages:
        return [], []
    rows: tp.Dict[str, None] = {}
    for name in PRIMARY_METRICS.get(kind, ()):
        if any(name in last[s]["metrics"] for s in stages):
            rows.setdefault(name)
    for s in stages:
        for name in last[s]["metrics"]:
            rows.setdefault(name)
    lines = []
    for name in rows:
        label = "sisnr (AudioCraft loss: -SI-SNR, dB)" if name == "sisnr" and kind == "codec" else name
        lines.append({"label": label, "code": True, "cells": [_cell(last[s]["metrics"].get(name)) for s in stages]})
        if name == "sisnr" and kind == "codec":
            lines.append({"label": "SI-SNR (dB, higher is better)", "code": False,
                          "cells": [_cell(None if last[s]["metrics"].get(name) is None
                                          else sisnr_db(last[s]["metrics"][name])) for s in stages]})
    return [{"name": s, "epoch": last[s]["epoch"]} for s in stages], lines


def render_html(summary: tp.Mapping[str, tp.Any], last: tp.Mapping[str, tp.Mapping[str, tp.Any]]) -> str:
    """The self-contained page (inline CSS, images by relative path, every string escaped).

    From ``musicpipe/templates/report.html.j2`` (:mod:`musicpipe.pages`).

    Example:
        >>> summary = {"sig": "1a2b3c4d", "solver": "musicgen", "kind": "lm", "dataset": "a&b", "epochs": 1,
        ...            "xp_folder": "/ws/xps/1a2b3c4d", "findings": [], "plots": [], "hyperparameters": {},
        ...            "overrides": {"label": "<i>x</i>"}, "sources": ["history.json"]}
        >>> page = render_html(summary, {"valid": {"epoch": 1, "metrics": {"ce": 2.5}}})
        >>> "<td>a&amp;b</td>" in page, "<code>&lt;i&gt;x&lt;/i&gt;</code>" in page, 'title="2.5">2.5</td>' in page
        (True, True, True)
    """
    kind = summary["kind"]
    findings = summary["findings"]
    epochs = summary["epochs"]
    planned = summary.get("planned_epochs")
    facts = [("signature", summary["sig"]), ("solver", summary["solver"]), ("dataset", summary["dataset"] or "-"),
             ("epochs", f"{epochs} of {planned} planned" if planned else str(epochs)),
             ("XP folder", summary["xp_folder"])]
    for key, label in (("preset", "preset"), ("codec", "codec"), ("conditioning", "conditioning"),
                       ("init_from", "fine-tuned from"), ("token_cache", "token store")):
        if summary.get("record", {}).get(key):
            facts.append((label, summary["record"][key]))
    if summary.get("datasource_train"):
        facts.append(("train manifest", summary["datasource_train"]))
    fad = summary.get("fad") or {}
    if fad:
        epoch = max(fad, key=int)
        f = fad[epoch]
        facts.append((f"FAD, epoch {epoch}", f"{_fmt(f.get('lm'))} (codec floor {_fmt(f.get('codec_floor'))}, real vs "
                      f"real {_fmt(f.get('real_vs_real'))}"
                      + (f", white noise {_fmt(f.get('noise'))}" if f.get("noise") is not None else "")
                      + f"; {summary.get('fad_embedding') or 'mel'} embedding, lower is better)"))
    if summary.get("tensorboard"):
        facts.append(("TensorBoard", summary["tensorboard"]))
    if summary.get("wandb_runs"):
        facts.append(("W&B runs (local)", ", ".join(summary["wandb_runs"])))
    metric_stages, metric_rows = _metric_table(last, kind)
    return pages.render(
        "report.html.j2", sig=summary["sig"], solver=summary["solver"], kind=kind, colours=LEVEL_COLOURS,
        worst=findings[0]["level"] if findings else "ok", findings=findings, facts=facts, epochs=epochs,
        metric_stages=metric_stages, metric_rows=metric_rows, plots=summary["plots"],
        hyperparameters=summary["hyperparameters"], overrides=summary["overrides"],
        sources=", ".join(summary["sources"]), xp_folder=summary["xp_folder"])


# ---------------------------------------------------------------------------------------------- report

def _json_safe(value: tp.Any) -> tp.Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _dataset(cfg: tp.Optional[tp.Mapping[str, tp.Any]], hydra: tp.Optional[tp.Mapping[str, tp.Any]],
             overrides: tp.Mapping[str, str], record: tp.Mapping[str, tp.Any]) -> tp.Tuple[tp.Optional[str], ...]:
    dset = _get(hydra or {}, "hydra.runtime.choices.dset") or overrides.get("dset")
    name = record.get("dataset") or (str(dset).split("/")[-1] if dset else None)
    train = _get(cfg or {}, "datasource.train")
    return name, (str(dset) if dset else None), (str(train) if train else None)


def write_report(sig: str, workspace: tp.Optional[PathLike] = None, outputs: Path = paths.OUTPUTS_DIR) -> Path:
    """Write ``<outputs>/reports/<sig>/`` (index.html, summary.json, PNG plots) for one XP; return the folder.

    Raises ReportError naming the file when the XP folder or its history.json is missing, or a file
    it reads is malformed. An empty history (crash before the end of epoch 1) gives a report saying so.

    Example:
        >>> folder = write_report("8b7bcb59", workspace="/tmp/ws")   # doctest: +SKIP
        >>> (folder / "index.html").exists()                         # doctest: +SKIP
        True
    """
    if not isinstance(sig, str) or not _SIG_RE.match(sig):
        raise ReportError(f"not an XP signature: {sig!r}")
    folder = paths.xp_dir(sig, workspace)
    if not folder.is_dir():
        raise ReportError(f"XP folder {folder} does not exist: no XP {sig} in workspace "
                          f"{paths.workspace_root(workspace)}")
    history = load_history(folder)
    cfg = _read_yaml(folder / ".hydra" / "config.yaml")
    hydra = None
    try:
        hydra = _read_yaml(folder / ".hydra" / "hydra.yaml")
    except ReportError as exc:  # only the dset choice comes from it: not worth failing the report
        logger.warning("%s", exc)
    argv = _read_argv(folder / ".argv.json")
    record = xp_mod.XP(folder=folder, sig=sig).record
    overrides = _overrides(argv)
    log = parse_solver_log(folder / "solver.log.0")

    sources = ["history.json"]
    extra: tp.List[Finding] = []
    if cfg is not None:
        sources.append(".hydra/config.yaml")
        solver = str(cfg.get("solver") or guess_solver(history))
    else:
        solver = guess_solver(history)
        extra.append(_finding("warn", "no_config", f".hydra/config.yaml is missing: solver guessed from the "
                              f"metrics ({solver})"))
    if argv:
        sources.append(".argv.json")
    if log is not None:
        sources.append(Path(log.path).name)
    kind = solver_kind(solver)
    planned = _get(cfg or {}, "optim.epochs")
    card = _get(cfg or {}, "transformer_lm.card") if kind == "lm" else None
    findings = _sorted(health_findings(history, solver, planned_epochs=planned if isinstance(planned, int) else None,
                                       card=card if isinstance(card, int) else None)
                       + log_findings(log, history) + extra)

    out_dir = Path(outputs) / "reports" / sig
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_record(out_dir / "summary.json").get("files", [])
    xp = xp_mod.XP(folder=folder, sig=sig, workspace=paths.workspace_root(workspace))
    fad = xp.fad if kind == "lm" else {}
    plotted = with_fad(history, fad) if fad else history
    plots = [render_plot(spec, plotted, out_dir, sig) for spec in plot_specs(plotted, kind)]
    metric = primary_metric(history, kind) or ("ce" if kind == "lm" else "mel")
    if log is not None:
        updates = render_updates(log, metric, out_dir, sig)
        if updates is not None:
            plots.append(updates)

    dataset, dset, train_manifest = _dataset(cfg, hydra, overrides, record)
    last = last_metrics(history)
    files = [p["file"] for p in plots] + ["index.html", "summary.json"]
    summary = {
        "sig": sig, "solver": solver, "kind": kind, "dataset": dataset, "dset": dset,
        "datasource_train": train_manifest, "xp_folder": str(folder), "epochs": len(history),
        "planned_epochs": planned if isinstance(planned, int) else None,
        "stages": {s: [k for k, e in enumerate(history, start=1) if s in e] for s in STAGES},
        "last_metrics": {s: v["metrics"] for s, v in last.items()},
        "last_epoch": {s: v["epoch"] for s, v in last.items()},
        "primary_metric": primary_metric(history, kind),
        "findings": findings, "health": findings[0]["level"] if findings else "ok",
        "hyperparameters": key_hyperparameters(cfg or {}, kind), "overrides": overrides, "argv": argv,
        "record": record,
        "log": None if log is None else {"path": log.path, "updates": len(log.updates), "launches": log.launches,
                                         "errors": len(log.errors), "warnings": log.warnings},
        "plots": plots, "files": files, "sources": sources + ([xp_mod.FAD_FILE] if fad else []),
        "fad": {str(e): r.get("fad") for e, r in sorted(fad.items())},
        "fad_embedding": next((r.get("settings", {}).get("embedding") for _e, r in sorted(fad.items(), reverse=True)
                               if r.get("settings")), None),
        "tensorboard": tracking.tensorboard_command(workspace) if (folder / tracking.TENSORBOARD_DIR).is_dir()
        else None,
        "wandb_runs": [str(p) for p in tracking.wandb_runs(folder)],
    }
    atomic.write_text(out_dir / "index.html", render_html(summary, last), permissions=REPORT_FILE_MODE)
    atomic.write_json(out_dir / "summary.json", _json_safe(summary), permissions=REPORT_FILE_MODE, indent=1,
                      ensure_ascii=False, allow_nan=False, default=str)
    for name in previous:  # plots an earlier report wrote that this one did not (never other files)
        if isinstance(name, str) and name not in files and "/" not in name and name.endswith(".png"):
            (out_dir / name).unlink(missing_ok=True)
    logger.info("report of XP %s (%s, %d epochs, health %s) in %s", sig, solver, len(history), summary["health"],
                out_dir)
    return out_dir


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """``python -m musicpipe.report <sig> [--workspace WS] [--outputs DIR]``: write the report, print its page."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m musicpipe.report", description=__doc__.split("\n")[0])
    parser.add_argument("sig")
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--outputs", type=Path, default=paths.OUTPUTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = write_report(args.sig, args.workspace, args.outputs)
    except ReportError as exc:
        logger.error("%s", exc)
        return 1
    print(folder / "index.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

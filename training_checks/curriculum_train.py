"""Train a MusicGen LM through a curriculum of stages with growing segment lengths (10 s -> 20 s -> 30 s).

A curriculum is the ordered stages found in a config folder (default
``training_checks/curriculum_configs/``: ``short_10s`` segment 10 s batch 128 50 epochs, ``medium_20s``
20 s / 64 / 50, ``full_30s`` 30 s / 32 / 100); each stage is one YAML file of data (see
:func:`load_stage`). Each stage is one Dora XP launched by :func:`musicpipe.training.train_lm` with the
stage's ``optim.epochs``, ``dataset.batch_size``, ``dataset.segment_duration`` and extra overrides;
every stage after the first starts from the previous stage's finished XP with
``continue_from=//sig/<previous sig>`` (part of the XP signature, so the chain of XPs is fixed).

What carries over between stages (``MUSICPIPE_CARRY_STATE=1``, set by this tool;
:mod:`musicpipe.dora_entry.carry_state`): the model weights (the previous stage's *last* weights;
AudioCraft alone would take its best state), the optimizer's per-parameter state (AdamW moments and
step counts; the learning rate and other settings are the new stage's), the EMA (when both stages use
one) and the fp16 grad scaler. The LR schedule restarts for the stage's own epochs (warmup included),
the epoch counter restarts at 1 (each XP has its own ``history.json``), and the best state is the new
stage's own after its first validation. ``<xp>/carried_state.json`` records what was carried.

After a stage finishes, ``<xp>/curriculum.json`` records the curriculum, the stage and its config, the
preset, dataset, codec and conditioning, the XP it continued from and what was carried; ``--auto`` and
``--dry-run`` plan from these records (:func:`plan_curriculum`).

Segment lengths must fit the data: AudioCraft reads a file shorter than ``segment_duration`` whole and
zero-pads it (``min_segment_ratio`` only bounds where a crop may start; it filters nothing), so the LM
would learn silence. A stage is refused unless at least ``--min-full-fraction`` (default 0.5) of the
dataset's train files are as long as its segments (:func:`segment_fit`). ``prepare`` cuts 10 s segments
by default; prepare with ``--segment-seconds 30`` for the 20 s and 30 s stages.

As a script (one stage per call; re-running a stage resumes its XP)::

    python training_checks/curriculum_train.py --preset fma_small_mini --dataset fma_small_mini --codec latest --dry-run
    python training_checks/curriculum_train.py --preset fma_small_mini --dataset fma_small_mini --codec latest --auto
    python training_checks/curriculum_train.py --preset fma_small_mini --dataset fma_small_mini --codec 08e4d3f1 \\
        --stage medium_20s --continue-from 1a2b3c4d
    python training_checks/curriculum_train.py --preset demo_cpu --dataset synthetic_demo --codec latest \\
        --config-dir /tmp/tiny_curriculum --auto     # a tiny CPU variant: 2-4 s segments, batch 2, 1-2 epochs

Each call ends with one line, e.g.
``curriculum_train: segment_length stage 2/3 medium_20s: xp 5e6f7a8b done, 50 epochs, from xp 1a2b3c4d
(carried model, optimizer, ema); next: full_30s`` or ``curriculum_train: segment_length: all 3 stages done
(...); nothing to run``.

Example:
    >>> from training_checks.curriculum_train import load_curriculum, plan_curriculum, DEFAULT_CONFIG_DIR
    >>> cur = load_curriculum(DEFAULT_CONFIG_DIR)
    >>> cur.name, [(s.name, s.segment_duration, s.batch_size, s.epochs) for s in cur.stages]
    ('segment_length', [('short_10s', 10.0, 128, 50), ('medium_20s', 20.0, 64, 50), ('full_30s', 30.0, 32, 100)])
    >>> key = identity(cur, "fma_small_mini", "fma_small_mini", "08e4d3f1", "none")
    >>> done = dict(key, stage="short_10s", sig="1a2b3c4d", stage_config=cur.stages[0].spec(), epochs_done=50,
    ...             has_checkpoint=True)
    >>> plan = plan_curriculum(cur, [done], key)
    >>> [(p.stage.name, p.status, p.sig, p.continue_from_sig) for p in plan.stages]
    [('short_10s', 'finished', '1a2b3c4d', None), ('medium_20s', 'next', None, '1a2b3c4d'), ('full_30s', 'pending', None, None)]
    >>> segment_fit([10.0] * 9 + [6.2], 20.0).ok
    False
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import re
import shlex
import subprocess
import typing as tp

from musicpipe import atomic, audiocraft_env, dora, manifests, paths, presets, training
from musicpipe.xp import XP, XPError

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent / "curriculum_configs"
RECORD = "curriculum.json"  # written into each stage's XP folder once the stage has finished
RECORD_FORMAT = 1
CARRY_ENV = "MUSICPIPE_CARRY_STATE"
CARRY_REPORT = "carried_state.json"  # written by musicpipe.dora_entry.carry_state
REQUIRED_KEYS = ("name", "order", "segment_duration", "batch_size", "epochs")
OPTIONAL_KEYS = ("curriculum", "description", "overrides")
# set by the tool from the stage's keys, the codec and the chain: refused in a stage's overrides
RESERVED_OVERRIDES = {
    "optim.epochs": "epochs", "dataset.batch_size": "batch_size", "dataset.segment_duration": "segment_duration",
    "continue_from": "the curriculum chain (--continue-from)", "compression_model_checkpoint": "--codec",
    "transformer_lm.n_q": "the codec", "transformer_lm.card": "the codec", "solver": "the preset",
    "dset": "--dataset", "conditioner": "--conditioning",
}
IDENTITY_KEYS = ("curriculum", "preset", "dataset", "codec", "conditioning")
MIN_FULL_FRACTION = 0.5
DURATION_TOLERANCE = 0.01  # s: a 10 s segment written as 9.99997 s still counts as 10 s
SIG_RE = paths.SIG_RE
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HYDRA_BARE = re.compile(r"^[A-Za-z0-9_\-+./:@~%]+$")
PREVIOUS = "@previous@"  # placeholder for the signature of the stage before, in planned commands


class CurriculumError(ValueError):
    """A curriculum that cannot load or a stage that cannot run; ``str()`` names the file and the reason.

    Example:
        >>> str(CurriculumError("/c/short_10s.yaml: missing key 'epochs'"))
        "/c/short_10s.yaml: missing key 'epochs'"
    """


# ------------------------------------------------------------------------------------------------- configs


def _epochs(n: int) -> str:
    """``1 epoch``, ``2 epochs``.

    >>> _epochs(1), _epochs(50)
    ('1 epoch', '50 epochs')
    """
    return f"{n} epoch{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: a MusicGen XP with its own segment length, batch size and epochs."""

    name: str
    order: int
    segment_duration: float
    batch_size: int
    epochs: int
    overrides: tp.Dict[str, tp.Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    path: tp.Optional[Path] = None

    def spec(self) -> tp.Dict[str, tp.Any]:
        """What defines the stage's training (recorded, and compared with records to find finished stages).

        >>> Stage("a", 1, 2.0, 4, 3, {"optim.lr": 1e-3}).spec()["overrides"], sorted(Stage("a", 1, 2.0, 4, 3).spec())
        ({'optim.lr': 0.001}, ['batch_size', 'epochs', 'name', 'order', 'overrides', 'segment_duration'])
        """
        return {"name": self.name, "order": self.order, "segment_duration": self.segment_duration,
                "batch_size": self.batch_size, "epochs": self.epochs, "overrides": dict(self.overrides)}

    def override_args(self) -> tp.List[str]:
        """The extra overrides as ``key=value`` (Hydra's spelling).

        >>> Stage("a", 1, 2.0, 4, 3, {"optim.lr": 1e-3, "schedule.lr_scheduler": None}).override_args()
        ['optim.lr=0.001', 'schedule.lr_scheduler=null']
        """
        return [f"{k}={presets.format_value(v)}" for k, v in self.overrides.items()]

    def describe(self) -> str:
        """``segment 10 s, batch 128, 50 epochs``.

        >>> Stage("a", 1, 2.5, 4, 1).describe()
        'segment 2.5 s, batch 4, 1 epoch'
        """
        return f"segment {self.segment_duration:g} s, batch {self.batch_size}, {_epochs(self.epochs)}"


@dataclasses.dataclass(frozen=True)
class Curriculum:
    """The stages of a config folder, in ``order``."""

    name: str
    stages: tp.Tuple[Stage, ...]
    config_dir: Path

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise CurriculumError(f"no stage {name!r} in {self.config_dir}; stages: "
                              f"{', '.join(s.name for s in self.stages)}")

    def index(self, stage: Stage) -> int:
        return [s.name for s in self.stages].index(stage.name)

    def previous(self, stage: Stage) -> tp.Optional[Stage]:
        i = self.index(stage)
        return self.stages[i - 1] if i > 0 else None

    def following(self, stage: Stage) -> tp.Optional[Stage]:
        i = self.index(stage)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


def _number(path: Path, key: str, value: tp.Any, kind: type) -> tp.Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (kind is int and not float(value).is_integer()):
        raise CurriculumError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not value > 0:
        raise CurriculumError(f"{path}: {key} must be positive, got {value!r}")
    return kind(value)


def load_stage(path: PathLike) -> tp.Tuple[Stage, tp.Optional[str]]:
    """Read and validate one stage YAML; returns ``(stage, its curriculum key or None)``.

    Keys: ``name`` (the file's stem), ``order`` (integer), ``segment_duration`` (seconds, > 0),
    ``batch_size`` and ``epochs`` (positive integers); optional ``curriculum`` (name), ``description``,
    ``overrides`` (a mapping of extra Hydra overrides; keys the tool sets itself are refused). Any other
    key is an error (a typo would otherwise be ignored).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "warmup.yaml"
        >>> _ = p.write_text("name: warmup\\norder: 1\\nsegment_duration: 2\\nbatch_size: 2\\nepochs: 1\\n")
        >>> load_stage(p)[0].describe()
        'segment 2 s, batch 2, 1 epoch'
        >>> _ = p.write_text("name: warmup\\norder: 1\\nsegment_duration: 2\\nbatch_size: 2\\n")
        >>> load_stage(p)
        Traceback (most recent call last):
        ...
        training_checks.curriculum_train.CurriculumError: .../warmup.yaml: missing key 'epochs'
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CurriculumError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CurriculumError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise CurriculumError(f"{path}: expected a mapping of stage keys, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise CurriculumError(f"{path}: missing key {key!r}")
    unknown = sorted(set(map(str, data)) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise CurriculumError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CurriculumError(f"{path}: name must be a word of letters, digits, _ . -, got {name!r}")
    if name != path.stem:
        raise CurriculumError(f"{path}: name {name!r} differs from the file's name {path.stem!r}")
    order = data["order"]
    if isinstance(order, bool) or not isinstance(order, int):
        raise CurriculumError(f"{path}: order must be an integer, got {order!r}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise CurriculumError(f"{path}: overrides must be a mapping of key: value, got {type(overrides).__name__}")
    for key in overrides:
        reason = RESERVED_OVERRIDES.get(str(key).lstrip("+~"))
        if reason:
            raise CurriculumError(f"{path}: overrides may not set {key} (the tool sets it from {reason})")
    curriculum = data.get("curriculum")
    if curriculum is not None and (not isinstance(curriculum, str) or not _NAME_RE.match(curriculum)):
        raise CurriculumError(f"{path}: curriculum must be a name, got {curriculum!r}")
    stage = Stage(name=name, order=order,
                  segment_duration=_number(path, "segment_duration", data["segment_duration"], float),
                  batch_size=_number(path, "batch_size", data["batch_size"], int),
                  epochs=_number(path, "epochs", data["epochs"], int),
                  overrides={str(k): v for k, v in overrides.items()},
                  description=str(data.get("description") or ""), path=path)
    return stage, curriculum


def load_curriculum(config_dir: PathLike = DEFAULT_CONFIG_DIR) -> Curriculum:
    """All ``*.yaml``/``*.yml`` stages of ``config_dir``, sorted by ``order`` (unique).

    The curriculum's name is the ``curriculum`` key of its stages (the same in all that set it), else the
    folder's name.
    """
    config_dir = Path(config_dir).expanduser().resolve()
    if not config_dir.is_dir():
        raise CurriculumError(f"{config_dir}: no such curriculum config folder")
    files = sorted(p for p in config_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise CurriculumError(f"{config_dir}: no stage files (*.yaml)")
    loaded = [load_stage(p) for p in files]
    by_order: tp.Dict[int, Path] = {}
    by_name: tp.Dict[str, Path] = {}
    for stage, _ in loaded:
        assert stage.path is not None
        if stage.order in by_order:
            raise CurriculumError(f"{stage.path}: order {stage.order} duplicates {by_order[stage.order]}")
        if stage.name in by_name:
            raise CurriculumError(f"{stage.path}: stage name {stage.name!r} duplicates {by_name[stage.name]}")
        by_order[stage.order], by_name[stage.name] = stage.path, stage.path
    names = {c for _, c in loaded if c is not None}
    if len(names) > 1:
        detail = ", ".join(f"{s.path.name}: {c}" for s, c in loaded if c is not None)  # type: ignore[union-attr]
        raise CurriculumError(f"{config_dir}: stages name different curricula ({detail})")
    name = names.pop() if names else config_dir.name
    return Curriculum(name=name, stages=tuple(sorted((s for s, _ in loaded), key=lambda s: s.order)),
                      config_dir=config_dir)


# ------------------------------------------------------------------------------------------------- data fit


@dataclasses.dataclass(frozen=True)
class Fit:
    """Whether a stage's segments fit the dataset's train files."""

    ok: bool
    segment_duration: float
    files: int
    full: int          # files at least segment_duration long
    longest: float
    message: str

    @property
    def full_fraction(self) -> float:
        return self.full / self.files if self.files else 0.0


def segment_fit(durations: tp.Sequence[float], segment_duration: float,
                min_full_fraction: float = MIN_FULL_FRACTION) -> Fit:
    """Do the train files give ``segment_duration``-long segments? (pure)

    AudioCraft (``AudioDataset.__getitem__``) crops a random window of ``segment_duration`` from a file,
    starting at most ``duration - segment_duration * min_segment_ratio``; a file shorter than that is read
    whole from its start and zero-padded to ``segment_duration`` (``pad=True``); nothing is filtered. So
    the fraction of files at least as long as the segment is the fraction of examples with no padding.
    The stage fits when that fraction is at least ``min_full_fraction``.

    Example:
        >>> segment_fit([10.0] * 9 + [6.2], 10.0).message
        '9/10 train files (90%) are at least 10 s long'
        >>> fit = segment_fit([10.0] * 10, 20.0)
        >>> fit.ok, fit.full_fraction, fit.message.split(":")[0]
        (False, 0.0, '0/10 train files (0%) are at least 20 s long (longest 10 s; at least 50% needed)')
    """
    files = len(durations)
    full = sum(1 for d in durations if d + DURATION_TOLERANCE >= segment_duration)
    longest = max(durations) if durations else 0.0
    fraction = full / files if files else 0.0
    ok = files > 0 and fraction + 1e-12 >= min_full_fraction
    message = (f"{full}/{files} train files ({fraction:.0%}) are at least {segment_duration:g} s long")
    if not ok:
        message += (f" (longest {longest:g} s; at least {min_full_fraction:.0%} needed): AudioCraft would zero-pad "
                    f"every shorter file to {segment_duration:g} s (the LM would learn the silence); prepare the "
                    f"dataset with --segment-seconds {segment_duration:g} or more, or lower segment_duration")
    return Fit(ok=ok, segment_duration=float(segment_duration), files=files, full=full, longest=float(longest),
               message=message)


def train_durations(dataset: str, workspace: tp.Optional[PathLike] = None) -> tp.List[float]:
    """Durations of the dataset's train files (``<ws>/data/<dataset>/egs/train/data.jsonl``)."""
    try:
        return [r.duration for r in manifests.read_nonempty_manifest(
            paths.dataset_dir(dataset, workspace) / "egs" / "train")]
    except manifests.ManifestError as exc:
        raise CurriculumError(f"{exc}; prepare the dataset {dataset!r} first") from None


# -------------------------------------------------------------------------------------------- records, plan


def identity(curriculum: Curriculum, preset: str, dataset: str, codec: str, conditioning: str) \
        -> tp.Dict[str, str]:
    """What makes two stage XPs part of the same curriculum run (records must match all of it).

    >>> identity(Curriculum("c", (), Path("/c")), "demo_cpu", "d", "0123abcd", "none")["curriculum"]
    'c'
    """
    return {"curriculum": curriculum.name, "preset": preset, "dataset": dataset, "codec": codec,
            "conditioning": conditioning}


def scan_records(workspace: tp.Optional[PathLike] = None) -> tp.List[tp.Dict[str, tp.Any]]:
    """Every ``xps/*/curriculum.json`` of the workspace, each with ``epochs_done`` (its history's length),
    ``has_checkpoint`` and ``folder`` read from the XP folder now; unreadable records are skipped (logged)."""
    found = []
    for path in sorted((paths.dora_dir(workspace) / "xps").glob(f"*/{RECORD}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            history = XP(folder=path.parent, sig=path.parent.name).history
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable curriculum record, ignored (%s)", path, exc)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("sig"), str):
            logger.warning("%s: not a curriculum record, ignored", path)
            continue
        record.update(epochs_done=len(history), has_checkpoint=(path.parent / "checkpoint.th").exists(),
                      folder=str(path.parent))
        found.append(record)
    return found


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage in a plan.

    ``status``: ``finished`` (``sig`` is its XP), ``next`` (what ``--auto`` runs now), ``pending`` (after
    the next one) or ``not-run`` (an earlier stage, passed over because a later one has finished).
    ``continue_from_sig``: the XP it starts from (None: from scratch, or, for ``pending``, the next
    stage's XP once it has run).
    """

    stage: Stage
    status: str
    sig: tp.Optional[str] = None
    continue_from_sig: tp.Optional[str] = None
    record: tp.Optional[tp.Dict[str, tp.Any]] = None


@dataclasses.dataclass(frozen=True)
class Plan:
    curriculum: Curriculum
    stages: tp.Tuple[StagePlan, ...]
    notes: tp.Tuple[str, ...] = ()

    @property
    def next(self) -> tp.Optional[StagePlan]:
        return next((p for p in self.stages if p.status == "next"), None)

    @property
    def finished(self) -> tp.List[StagePlan]:
        return [p for p in self.stages if p.status == "finished"]

    @property
    def all_done(self) -> bool:
        return self.next is None


def _finished_at(record: tp.Mapping[str, tp.Any]) -> str:
    return str(record.get("finished_at") or "")


def finished_record(stage: Stage, records: tp.Iterable[tp.Mapping[str, tp.Any]], key: tp.Mapping[str, str],
                    notes: tp.Optional[tp.List[str]] = None) -> tp.Optional[tp.Dict[str, tp.Any]]:
    """The latest record (by ``finished_at``) of ``stage`` finished under ``key`` with the stage's current config.

    A record counts when its identity (:func:`identity`) and ``stage_config`` equal the current ones, its
    XP has a ``checkpoint.th`` and at least ``epochs`` epochs of history. Records of the stage that do not
    count for another reason than their identity are explained in ``notes``. Pure.
    """
    spec = stage.spec()
    best: tp.Optional[tp.Dict[str, tp.Any]] = None
    for record in records:
        if record.get("stage") != stage.name or any(record.get(k) != key[k] for k in IDENTITY_KEYS):
            continue
        sig = record.get("sig")
        if record.get("stage_config") != spec:
            if notes is not None:
                notes.append(f"xp {sig} of stage {stage.name} ignored: trained with another stage config "
                             f"({record.get('stage_config')}), the config is now {spec}")
            continue
        if not record.get("has_checkpoint") or int(record.get("epochs_done") or 0) < stage.epochs:
            if notes is not None:
                notes.append(f"xp {sig} of stage {stage.name} ignored: {record.get('epochs_done', 0)}/{stage.epochs} "
                             f"epochs{'' if record.get('has_checkpoint') else ', no checkpoint.th'}")
            continue
        if best is None or _finished_at(record) >= _finished_at(best):
            best = dict(record)
    return best


def plan_curriculum(curriculum: Curriculum, records: tp.Sequence[tp.Mapping[str, tp.Any]],
                    key: tp.Mapping[str, str]) -> Plan:
    """Which stages have finished, which runs next and from which XP (pure: records in, plan out).

    The last finished stage (in curriculum order) decides: the stage after it is ``next`` and continues
    from its XP; with no finished stage the first one is ``next``, from scratch. Stages before the last
    finished one that have no finished XP themselves (it was started with ``--continue-from``) are
    ``not-run``.
    """
    notes: tp.List[str] = []
    done = [finished_record(s, records, key, notes) for s in curriculum.stages]
    last = max((i for i, r in enumerate(done) if r is not None), default=-1)
    plans = []
    for i, (stage, record) in enumerate(zip(curriculum.stages, done)):
        if record is not None:
            plans.append(StagePlan(stage, "finished", sig=record["sig"],
                                   continue_from_sig=record.get("continue_from_sig"), record=record))
        elif i < last:
            plans.append(StagePlan(stage, "not-run"))
        elif i == last + 1:
            plans.append(StagePlan(stage, "next", continue_from_sig=done[last]["sig"] if last >= 0 else None))
        else:
            plans.append(StagePlan(stage, "pending"))
    return Plan(curriculum=curriculum, stages=tuple(plans), notes=tuple(notes))


# ----------------------------------------------------------------------------------------------- commands


def hydra_value(text: str) -> str:
    """A string as a Hydra override value: bare when safe, else single-quoted (paths with spaces, accents).

    >>> hydra_value("//sig/1a2b3c4d"), hydra_value("/ws/work space é/xps/1a2b3c4d/checkpoint.th")
    ('//sig/1a2b3c4d', "'/ws/work space é/xps/1a2b3c4d/checkpoint.th'")
    """
    if _HYDRA_BARE.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stage_args(preset: tp.Any, stage: Stage, codec: tp.Any, dataset: str, conditioning: str,
               continue_from: tp.Optional[str]) -> tp.List[str]:
    """The ``dora run`` arguments of a stage: exactly what :func:`musicpipe.training.train_lm` builds for it.

    ``continue_from`` is a Hydra value (``//sig/<sig>`` or a checkpoint path), added last.

    Example:
        >>> from musicpipe import presets
        >>> args = stage_args(presets.load_preset("demo_cpu"), Stage("b", 2, 3.0, 2, 1, {"optim.lr": 5e-4}),
        ...                   presets.CodecInfo("0123abcd", 4, 256), "synthetic_demo", "none", "//sig/1a2b3c4d")
        >>> args[:3], args[-1]
        (['run', 'solver=musicgen/musicgen_base_32khz', 'dset=audio/synthetic_demo'], 'continue_from=//sig/1a2b3c4d')
        >>> [a for a in args if a.split("=")[0] in ("optim.epochs", "dataset.batch_size", "dataset.segment_duration",
        ...                                         "optim.lr")]
        ['optim.lr=0.0005', 'optim.epochs=1', 'dataset.batch_size=2', 'dataset.segment_duration=3.0']
    """
    return presets.dora_run_args(preset, "musicgen", dset=dataset, conditioning=conditioning, codec=codec,
                                 epochs=stage.epochs, batch_size=stage.batch_size,
                                 segment_seconds=stage.segment_duration,
                                 overrides=_stage_overrides(stage, continue_from))


def _stage_overrides(stage: Stage, continue_from: tp.Optional[str]) -> tp.List[str]:
    return stage.override_args() + ([f"continue_from={hydra_value(continue_from)}"] if continue_from else [])


def format_command(args: tp.Sequence[str]) -> str:
    """The shell command for a :func:`stage_args` list (``shlex``-quoted for copy-paste).

    >>> format_command(["run", "dset=audio/x", "optim.lr=0.001"])
    'dora run dset=audio/x optim.lr=0.001'
    >>> format_command(["run", "continue_from='/a b/checkpoint.th'"]).startswith("dora run 'continue_from=")
    True
    """
    return "dora " + shlex.join(args)


_SIG_CODE = """
import json, sys
from musicpipe.dora_entry.train import main
previous = None
for overrides in json.loads(sys.argv[1]):
    overrides = [o.replace(sys.argv[2], previous or sys.argv[2]) for o in overrides]
    previous = main.get_xp(overrides).sig
    print("SIG=" + previous, flush=True)
"""


def planned_signatures(arg_lists: tp.Sequence[tp.Sequence[str]], workspace: tp.Optional[PathLike] = None) \
        -> tp.List[str]:
    """The XP signatures of a chain of ``dora run`` argument lists, computed without training.

    ``@previous@`` in a list stands for the signature of the list before it (so one stage's signature
    feeds the next one's ``continue_from``). One subprocess for the whole chain, computing each signature
    as :func:`musicpipe.dora.xp_signature` does (``main.get_xp``); no XP folder is created.
    """
    if not arg_lists:
        return []
    payload = json.dumps([presets.hydra_overrides(a) for a in arg_lists])
    res = subprocess.run([sys.executable, "-c", _SIG_CODE, payload, PREVIOUS], capture_output=True, text=True,
                         env=audiocraft_env.environment(workspace), cwd=paths.REPO_ROOT)
    sigs = [line[4:].strip() for line in res.stdout.splitlines() if line.startswith("SIG=")]
    if res.returncode != 0 or len(sigs) != len(arg_lists):
        raise dora.DoraError(f"could not compute the XP signatures of the curriculum:\n{res.stderr[-3000:]}")
    return sigs


# ------------------------------------------------------------------------------------------ inputs, checks


@dataclasses.dataclass(frozen=True)
class Setup:
    """The resolved inputs of a curriculum command."""

    curriculum: Curriculum
    preset_name: str
    preset: tp.Any
    dataset: str
    codec: tp.Any            # presets.CodecInfo
    conditioning: str
    workspace: Path
    min_full_fraction: float = MIN_FULL_FRACTION

    @property
    def key(self) -> tp.Dict[str, str]:
        return identity(self.curriculum, self.preset_name, self.dataset, self.codec.sig, self.conditioning)

    def describe(self) -> str:
        return (f"preset {self.preset_name}, dataset {self.dataset}, codec {self.codec.sig}, conditioning "
                f"{self.conditioning}, workspace {self.workspace}")


def resolve_setup(preset: str, dataset: tp.Optional[str], codec: str, *, conditioning: str = "none",
                  workspace: tp.Optional[PathLike] = None, config_dir: PathLike = DEFAULT_CONFIG_DIR,
                  min_full_fraction: float = MIN_FULL_FRACTION) -> Setup:
    """Load the curriculum and preset, resolve the codec (``latest``: the newest for the dataset)."""
    curriculum = load_curriculum(config_dir)
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    if conditioning not in presets.CONDITIONERS:
        raise CurriculumError(f"unknown conditioning {conditioning!r}: expected one of "
                              f"{', '.join(presets.CONDITIONERS)}")
    ws = paths.workspace_root(workspace)
    info = training.resolve_codec(codec or "latest", dataset, ws)
    return Setup(curriculum=curriculum, preset_name=preset, preset=spec, dataset=dataset, codec=info,
                 conditioning=conditioning, workspace=ws, min_full_fraction=min_full_fraction)


def check_fit(setup: Setup, stage: Stage, durations: tp.Optional[tp.Sequence[float]] = None) -> Fit:
    """:func:`segment_fit` of the stage on the dataset's train files; :class:`CurriculumError` when it does not fit."""
    fit = segment_fit(train_durations(setup.dataset, setup.workspace) if durations is None else durations,
                      stage.segment_duration, setup.min_full_fraction)
    if not fit.ok:
        raise CurriculumError(f"stage {stage.name} refused: dataset {setup.dataset!r}: {fit.message}")
    return fit


def _read_json(path: Path) -> tp.Dict[str, tp.Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def resolve_continue_from(value: str, setup: Setup) -> tp.Tuple[str, tp.Optional[str]]:
    """``(continue_from value, source sig or None)`` for ``--continue-from`` (a sig, XP folder or checkpoint).

    An XP of this workspace becomes ``//sig/<sig>`` (a stable XP signature); another checkpoint file is
    passed by its absolute path. An XP must be a MusicGen XP with a ``checkpoint.th``, trained on the
    same codec (and, when musicpipe recorded it, the same conditioning).
    """
    xps = (paths.dora_dir(setup.workspace) / "xps").resolve()
    given = Path(value).expanduser()
    if SIG_RE.match(value) and not given.exists():
        folder: tp.Optional[Path] = xps / value
        if not folder.is_dir():  # type: ignore[union-attr]
            raise CurriculumError(f"--continue-from {value}: no XP {value} in {xps}")
    elif given.exists():
        resolved = given.resolve()
        if resolved.is_dir():
            resolved = resolved / "checkpoint.th"
        if not resolved.is_file():
            raise CurriculumError(f"--continue-from {value}: {resolved} missing")
        folder = resolved.parent if resolved.parent.parent == xps and resolved.name == "checkpoint.th" else None
        if folder is None:
            return str(resolved), None
    else:
        raise CurriculumError(f"--continue-from {value}: no such checkpoint, XP folder or XP signature")
    assert folder is not None
    xp = XP(folder=folder, sig=folder.name, workspace=setup.workspace)
    sig = xp.sig
    if not xp.checkpoint.exists():
        raise CurriculumError(f"--continue-from {value}: {xp.checkpoint} missing (no epoch finished)")
    try:
        xp.config
    except XPError as exc:
        raise CurriculumError(f"--continue-from {value}: {exc}") from None
    if xp.solver != "musicgen":
        raise CurriculumError(f"--continue-from {value}: XP {sig} is a {xp.solver!r} XP, not a MusicGen LM")
    codec = xp.codec_ref or ""
    if codec != f"//sig/{setup.codec.sig}":
        raise CurriculumError(f"--continue-from {value}: XP {sig} was trained on codec {codec or '?'}, this "
                              f"curriculum uses //sig/{setup.codec.sig}: its tokens mean something else")
    recorded = xp.record.get("conditioning")
    if recorded is not None and recorded != setup.conditioning:
        raise CurriculumError(f"--continue-from {value}: XP {sig} was trained with conditioning {recorded!r}, "
                              f"not {setup.conditioning!r}: the conditioners' weights would not match")
    return f"//sig/{sig}", sig


# -------------------------------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class StageResult:
    stage: Stage
    sig: str
    folder: Path
    record: tp.Dict[str, tp.Any]


def run_stage(setup: Setup, stage: Stage, continue_from: tp.Optional[str] = None, *,
              continue_from_sig: tp.Optional[str] = None, echo: bool = True,
              outputs: tp.Optional[Path] = paths.OUTPUTS_DIR) -> StageResult:
    """Train one stage (or resume its XP) with :func:`musicpipe.training.train_lm`; write ``curriculum.json``.

    Refuses a stage whose segments do not fit the data (:func:`check_fit`). ``continue_from`` (a Hydra
    value such as ``//sig/<sig>``) starts the XP from that checkpoint, with ``MUSICPIPE_CARRY_STATE=1`` so
    the optimizer and EMA carry over too.
    """
    fit = check_fit(setup, stage)
    logger.info("stage %s (%s) on %s: %s", stage.name, stage.describe(), setup.dataset, fit.message)
    run = training.train_lm(setup.preset_name, setup.codec.sig, setup.dataset, setup.workspace,
                            conditioning=setup.conditioning, epochs=stage.epochs, batch_size=stage.batch_size,
                            segment_seconds=stage.segment_duration, overrides=_stage_overrides(stage, continue_from),
                            echo=echo, outputs=outputs, env={CARRY_ENV: "1"})
    history = run.history()
    if len(history) < stage.epochs or not run.checkpoint.exists():
        raise CurriculumError(f"stage {stage.name}: xp {run.sig} stopped after {len(history)}/{stage.epochs} "
                              f"epochs ({run.folder}); run the same command again to resume it")
    carried = _read_json(run.folder / CARRY_REPORT) if continue_from else {}
    cur = setup.curriculum
    record = {
        "format": RECORD_FORMAT, **setup.key, "stage": stage.name, "stage_index": cur.index(stage),
        "num_stages": len(cur.stages), "stages": [s.name for s in cur.stages], "config_dir": str(cur.config_dir),
        "stage_config": stage.spec(), "sig": run.sig, "continue_from": continue_from,
        "continue_from_sig": continue_from_sig, "carry_state": bool(continue_from),
        "carried": list(carried.get("carried", {})), "carry_skipped": carried.get("skipped", {}),
        "epochs": len(history), "args": stage_args(setup.preset, stage, setup.codec, setup.dataset,
                                                   setup.conditioning, continue_from),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(run.folder / RECORD, record, indent=1, ensure_ascii=False)
    return StageResult(stage=stage, sig=run.sig, folder=run.folder, record=record)


def _result_line(setup: Setup, result: StageResult) -> str:
    cur, rec = setup.curriculum, result.record
    following = cur.following(result.stage)
    source = (f"from xp {rec['continue_from_sig']}" if rec.get("continue_from_sig")
              else f"from {rec['continue_from']}" if rec.get("continue_from") else "from scratch")
    if rec.get("continue_from"):
        source += f" (carried {', '.join(rec['carried']) or 'nothing'})"
    return (f"curriculum_train: {cur.name} stage {cur.index(result.stage) + 1}/{len(cur.stages)} "
            f"{result.stage.name}: xp {result.sig} done, {_epochs(rec['epochs'])}, {source}; "
            + (f"next: {following.name}" if following else "all stages done"))


def _all_done_line(plan: Plan) -> str:
    done = ", ".join(f"{p.stage.name} {p.sig}" for p in plan.finished)
    return (f"curriculum_train: {plan.curriculum.name}: all {len(plan.curriculum.stages)} stages done ({done}); "
            "nothing to run")


def run_named_stage(setup: Setup, name: str, continue_from: tp.Optional[str] = None, *, echo: bool = True,
                    outputs: tp.Optional[Path] = paths.OUTPUTS_DIR) -> StageResult:
    """``--stage NAME [--continue-from X]``: run that stage.

    Without ``continue_from`` it continues from the previous stage's finished XP; the first stage starts
    from scratch; a later stage with no finished previous stage is refused.
    """
    cur = setup.curriculum
    stage = cur.stage(name)
    if continue_from is not None:
        value, sig = resolve_continue_from(continue_from, setup)
        return run_stage(setup, stage, value, continue_from_sig=sig, echo=echo, outputs=outputs)
    previous = cur.previous(stage)
    if previous is None:
        return run_stage(setup, stage, None, echo=echo, outputs=outputs)
    notes: tp.List[str] = []
    record = finished_record(previous, scan_records(setup.workspace), setup.key, notes)
    if record is None:
        raise CurriculumError(
            f"stage {stage.name} continues from stage {previous.name}, which has no finished XP for curriculum "
            f"{cur.name} ({setup.describe()})" + (f" [{'; '.join(notes)}]" if notes else "")
            + f": run --stage {previous.name} (or --auto) first, or pass --continue-from SIG|CHECKPOINT")
    return run_stage(setup, stage, f"//sig/{record['sig']}", continue_from_sig=record["sig"], echo=echo,
                     outputs=outputs)


def run_auto(setup: Setup, *, echo: bool = True, outputs: tp.Optional[Path] = paths.OUTPUTS_DIR) \
        -> tp.Tuple[Plan, tp.Optional[StageResult]]:
    """``--auto``: run the stage after the last finished one (None when all stages are done)."""
    plan = plan_curriculum(setup.curriculum, scan_records(setup.workspace), setup.key)
    for note in plan.notes:
        logger.info("%s", note)
    nxt = plan.next
    if nxt is None:
        return plan, None
    value = f"//sig/{nxt.continue_from_sig}" if nxt.continue_from_sig else None
    logger.info("auto: %s finished; running %s %s", ", ".join(p.stage.name for p in plan.finished) or "no stage",
                nxt.stage.name, f"from xp {nxt.continue_from_sig}" if value else "from scratch")
    return plan, run_stage(setup, nxt.stage, value, continue_from_sig=nxt.continue_from_sig, echo=echo,
                           outputs=outputs)


@dataclasses.dataclass(frozen=True)
class DryRun:
    plan: Plan
    sigs: tp.Dict[str, str]                 # stage name -> XP signature (recorded or planned)
    commands: tp.Dict[str, str]             # stage name -> `dora run ...`, for the stages still to run
    fits: tp.Dict[str, Fit]
    text: str


def dry_run(setup: Setup) -> DryRun:
    """``--dry-run``: the plan and the exact ``dora run`` commands of the stages still to run; runs nothing."""
    cur = setup.curriculum
    plan = plan_curriculum(cur, scan_records(setup.workspace), setup.key)
    durations = train_durations(setup.dataset, setup.workspace)
    fits = {s.name: segment_fit(durations, s.segment_duration, setup.min_full_fraction) for s in cur.stages}
    sigs = {p.stage.name: p.sig for p in plan.stages if p.sig}
    to_run = [p for p in plan.stages if p.status in ("next", "pending")]
    arg_lists = []
    for p in to_run:
        if p.status == "next":
            cf = f"//sig/{p.continue_from_sig}" if p.continue_from_sig else None
        else:
            cf = f"//sig/{PREVIOUS}"
        arg_lists.append(stage_args(setup.preset, p.stage, setup.codec, setup.dataset, setup.conditioning, cf))
    planned = planned_signatures(arg_lists, setup.workspace)
    commands: tp.Dict[str, str] = {}
    previous: tp.Optional[str] = None
    for p, args, sig in zip(to_run, arg_lists, planned):
        commands[p.stage.name] = format_command([a.replace(PREVIOUS, previous or PREVIOUS) for a in args])
        sigs[p.stage.name] = previous = sig

    lines = [f"curriculum {cur.name}: {len(cur.stages)} stages from {cur.config_dir}", setup.describe()]
    width = max(len(s.name) for s in cur.stages)
    for i, p in enumerate(plan.stages):
        prev = cur.stages[i - 1].name if i else None
        if p.status == "finished":
            given = (p.record or {}).get("continue_from")
            src = (f"from xp {p.continue_from_sig}" if p.continue_from_sig
                   else f"from {given}" if given else "from scratch")
            what = f"finished: xp {p.sig}, {_epochs(int((p.record or {}).get('epochs_done') or 0))}, {src}"
        elif p.status == "not-run":
            what = "not run (a later stage has finished)"
        elif p.status == "next":
            src = f"continuing from {prev} (xp {p.continue_from_sig})" if p.continue_from_sig else "from scratch"
            what = f"NEXT: would run as xp {sigs[p.stage.name]}, {src}"
        else:
            what = f"pending: would run after {prev} as xp {sigs[p.stage.name]}, continuing from {prev} " \
                   f"(xp {sigs.get(prev or '')})"
        if p.status in ("next", "pending"):
            folder = paths.xp_dir(sigs[p.stage.name], setup.workspace)
            if folder.is_dir():
                done = XP(folder=folder, sig=folder.name).epochs_done
                what += f" (its XP folder exists with {done}/{_epochs(p.stage.epochs)}: running resumes it)"
        fit = fits[p.stage.name]
        data = fit.message if fit.ok else f"WOULD BE REFUSED: {fit.message}"
        lines.append(f"  {i + 1}. {p.stage.name:<{width}}  {p.stage.describe()}: {what}; data: {data}")
    lines.extend(f"  note: {n}" for n in plan.notes)
    if commands:
        lines.append(f"commands (in order; environment: {CARRY_ENV}=1 and musicpipe's Dora environment, "
                     f"DORA_PACKAGE=musicpipe.dora_entry, "
                     f"AUDIOCRAFT_DORA_DIR={audiocraft_env.hydra_safe_dora_dir(setup.workspace)}):")
        lines.extend(commands.values())
    nxt = plan.next
    if nxt is None:
        lines.append(_all_done_line(plan) + " (dry run)")
    else:
        src = f"from xp {nxt.continue_from_sig}" if nxt.continue_from_sig else "from scratch"
        lines.append(f"curriculum_train: {cur.name}: dry run: {len(plan.finished)}/{len(cur.stages)} stages finished, "
                     f"next {nxt.stage.name} as xp {sigs[nxt.stage.name]} ({src}); nothing was run")
    return DryRun(plan=plan, sigs=sigs, commands=commands, fits=fits, text="\n".join(lines))


# ------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curriculum_train",
        description="Train a MusicGen LM through curriculum stages of growing segment length; each stage "
                    "continues from the previous stage's XP (weights, optimizer moments and EMA carried).")
    parser.add_argument("--preset", required=True, help="model_config/presets/<name>.yaml")
    parser.add_argument("--dataset", default=None, help="prepared dataset (default: the preset's)")
    parser.add_argument("--codec", required=True, help="codec XP signature, or 'latest' for the dataset")
    parser.add_argument("--conditioning", default="none", choices=("none", "genre", "text"))
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--config-dir", default=str(DEFAULT_CONFIG_DIR),
                        help="folder of stage YAML files (default training_checks/curriculum_configs)")
    parser.add_argument("--outputs", default=str(paths.OUTPUTS_DIR),
                        help="where finished stages' checkpoints are published (Checkpoints Small/<sig>/)")
    parser.add_argument("--min-full-fraction", type=float, default=MIN_FULL_FRACTION,
                        help="refuse a stage unless this fraction of train files is as long as its segments")
    parser.add_argument("--quiet", action="store_true", help="do not echo the training output")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stage", default=None, help="run this stage (from the previous stage's finished XP)")
    mode.add_argument("--auto", action="store_true", help="run the stage after the last finished one")
    mode.add_argument("--dry-run", action="store_true", help="print the plan and the dora commands; run nothing")
    parser.add_argument("--continue-from", default=None, metavar="CHECKPOINT",
                        help="with --stage: start it from this XP signature, XP folder or checkpoint.th")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI: 0 on success (all stages done included), 1 with the reason on a refusal or failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.continue_from is not None and args.stage is None:
        parser.error("--continue-from needs --stage (the stage to start from that checkpoint)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        setup = resolve_setup(args.preset, args.dataset, args.codec, conditioning=args.conditioning,
                              workspace=args.workspace, config_dir=args.config_dir,
                              min_full_fraction=args.min_full_fraction)
        outputs = Path(args.outputs) if args.outputs else None
        if args.dry_run:
            print(dry_run(setup).text)
            return 0
        if args.auto:
            plan, result = run_auto(setup, echo=not args.quiet, outputs=outputs)
            if result is None:
                print(_all_done_line(plan))
                return 0
        else:
            result = run_named_stage(setup, args.stage, args.continue_from, echo=not args.quiet, outputs=outputs)
        print(_result_line(setup, result))
        return 0
    except (CurriculumError, presets.PresetError, training.TrainingInputError, dora.DoraError,
            manifests.ManifestError) as exc:
        print(f"curriculum_train: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

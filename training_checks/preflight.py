"""Can this dataset train with this preset, here and now? Cheap checks before a long ``dora run``.

Each check gives ``PASS``, ``WARN`` or ``FAIL`` with a message that names the file or XP and the reason:

- ``config``: the preset's ``dora run`` overrides compose into an AudioCraft config (the same arguments
  :func:`musicpipe.presets.dora_run_args` builds for training); sample rate, channels, segment duration,
  ``min_segment_ratio``, batch size and device are read from it, not assumed. The manifests checked are the
  folders its ``datasource`` names (the workspace's ``data/<dataset>/egs/<split>`` for every dset config
  musicpipe writes or commits).
- ``manifest train`` / ``manifest valid``: ``data.jsonl`` exists, is valid and lists audio.
- ``files``: :mod:`musicpipe.datacheck`, the check ``train-codec``/``train-lm`` run before launch: every
  manifest entry exists, its WAV/FLAC header gives about the duration its line lists and is not truncated, every
  sidecar parses (for every solver); a seeded random sample of each split's files really decodes (PyAV, through
  :mod:`musicpipe.audio`), to about the duration the manifest lists.
- ``workspace``: the workspace can be written (a read-only mount or folder fails here, not at the first
  checkpoint).
- ``sample rate`` / ``channels``: every manifest line and every sampled file (probed) is at the config's rate
  and channel count, and the dset config's ``max_sample_rate``/``max_channels`` admit them (AudioCraft asserts it).
- ``segment length``: enough of the train audio is at least ``segment_duration * min_segment_ratio`` long; shorter
  files give zero-padded training examples (MusicGen's 30 s default on 10 s segments pads every one).
- ``split leak``: no track on both sides (FAIL); no artist on both sides (FAIL for an artist split, which
  prepare uses unless its report says it fell back to a track split, then WARN). Artists and track ids come
  from the sidecars.
- ``padding``: the exact expected share of zero padding in training crops, from the manifest's durations and the
  composed ``segment_duration``, ``min_segment_ratio``, ``min/max_audio_duration`` (WARN above 1 %).
- ``disk``: what the run will write (:func:`musicpipe.sizing.disk_forecast`: ``checkpoint.th``, per-epoch
  checkpoints after ``checkpoint.keep_last``, samples, codec checks) against the free space under the workspace:
  FAIL when it cannot fit, WARN within 20 %; 1 GiB (CPU presets) / 10 GiB (GPU presets) free stay a floor.
- ``shm``: ``/dev/shm`` holds the batches the loader workers have in flight (FAIL when it cannot; Docker's
  default is 64 MB).
- ``epoch``: ``dataset.train.num_samples`` gives every epoch ``optim.updates_per_epoch`` full batches (WARN).
- ``gpu``: CPU presets (``device=cpu``) pass as "CPU-only preset"; a CUDA preset fails without CUDA, or with
  fewer visible GPUs than the processes it launches; it warns when another process holds a GPU's memory.
- ``batch``: ``dataset.batch_size`` (and each split's own ``batch_size``) is divisible by the number of
  processes, which ``audiocraft.train.get_solver`` asserts.
- ``nodes`` (``--nodes N`` > 1, a multi-node launch, :mod:`musicpipe.multinode`): the world size (nodes x processes per
  node; ``batch`` and ``epoch`` use it), the network interface (``NCCL_SOCKET_IFNAME`` for CUDA presets: WARN when
  unset; RunPod Instant Clusters want ``ens1``, not the management ``eth0``) and the gradient all-reduce each step
  needs across nodes, with its arithmetic (WARN from 100 MB per step: fast links needed).
- ``env MUSICPIPE_WORKSPACE``: the dset configs read data through ``${oc.env:MUSICPIPE_WORKSPACE}``; musicpipe sets
  it for its own runs, but a different value in this shell sends a manual ``dora run``/``dora info`` to other
  data (WARN).
- ``env AUDIOCRAFT_DORA_DIR``: where manual ``dora`` commands and ``//sig/<XP>`` look for experiments; a value
  that is not this workspace's ``experiments/audiocraft`` finds none of musicpipe's XPs (WARN).
- ``T5 (text conditioning)`` (musicgen with ``--conditioner text`` only): T5 loads from the local Hugging Face
  cache or the hub (:func:`musicpipe.training.check_t5`, about 2 s, where training would retry for minutes);
  a shell with ``HF_HUB_OFFLINE=1`` and T5 only on the hub is a WARN (manual ``dora run`` would fail there).
- ``token cache`` (musicgen, when training from tokens: ``token_cache`` or the preset's): the dataset's token
  store for this codec's current weights is complete and built from the manifests as they are (PASS), missing
  (PASS: train-lm builds it first), out of date (WARN: train-lm re-encodes the changed segments) or does not
  match its own index (FAIL) (:func:`musicpipe.token_cache.store_state`; loads the codec on the CPU).
- ``codec`` (musicgen only): the codec XP (``codec`` or the dataset's latest) exists with a checkpoint that is not
  truncated (its zip directory reads), and its
  n_q, codebook size, sample rate and channels match what the LM is composed with and the dataset's rate.

Any other unexpected error in one check is that check's FAIL, never a traceback. Run
``training_checks/validate_conditioning.py`` too before a conditioned LM run.

As a script (exit 0 when nothing failed, 1 on any FAIL, 2 on bad arguments)::

    python training_checks/preflight.py --dataset synthetic_demo
    python training_checks/preflight.py --dataset fma_small_mini --preset fma_small_mini --solver musicgen \\
        --codec 08e4d3f1 --conditioner genre

It prints one line per check and ends with one line such as
``preflight: synthetic_demo (compression, preset demo_cpu): ready: 13 checks, 13 passed``.

Example:
    >>> r = CheckResult("disk", PASS, "40.1 GiB free")
    >>> report = PreflightReport("demo", "compression", "demo_cpu", "/ws", None, [r, CheckResult("gpu", WARN, "x")])
    >>> report.ok, report.counts()
    (True, {'PASS': 1, 'WARN': 1, 'FAIL': 0})
    >>> report.summary_line()
    'preflight: demo (compression, preset demo_cpu): ready: 2 checks, 1 passed, 1 warning(s)'
    >>> report = run_preflight("synthetic_demo", workspace="/tmp/ws")          # doctest: +SKIP
    >>> print(report.format())                                                # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import dataclasses
import json
import logging
import os
import typing as tp

from musicpipe import atomic, audiocraft_env, config, datacheck, manifests, multinode, paths, presets, sizing, training
from musicpipe import split as split_mod
from musicpipe import token_cache as token_store

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
STATUSES = (PASS, WARN, FAIL)
SOLVERS = ("compression", "musicgen")
CONDITIONERS = ("none", "genre", "text")
DEFAULT_SAMPLE = datacheck.DEFAULT_SAMPLE  # files decoded per split
MAX_NAMED = 5                # problems spelled out in one message
GPU_MIN_FREE_GB = 10.0       # disk for GPU presets: real runs keep several large checkpoints and samples
GPU_BUSY_SHARE = 0.1         # a GPU with more than this share of its memory in use is held by another process
DURATION_TOLERANCE = datacheck.DURATION_TOLERANCE  # decoded vs listed duration: max(0.1 s, 5 %)
PLACEHOLDER_CODEC = "00000000"


class PreflightError(ValueError):
    """A preflight that cannot run because of its arguments (unknown preset, solver, conditioner...).

    Problems with the data, the machine or an XP are never raised: they are ``FAIL`` results.

    Example:
        >>> str(PreflightError("unknown solver 'lm': expected compression or musicgen"))
        "unknown solver 'lm': expected compression or musicgen"
    """


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check: ``name``, ``status`` (PASS/WARN/FAIL), a message naming the file/XP and the reason.

    ``details`` holds machine-readable values (counts, the codec's n_q...).

    Example:
        >>> CheckResult("disk", FAIL, "/ws: only 0.20 GiB free").line(8)
        'FAIL  disk      /ws: only 0.20 GiB free'
    """

    name: str
    status: str
    message: str
    details: tp.Dict[str, tp.Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"name": self.name, "status": self.status, "message": self.message, "details": dict(self.details)}

    def line(self, width: int = 24) -> str:
        return f"{self.status:<4}  {self.name:<{width}}  {_one_line(self.message)}".rstrip()


def worst_status(results: tp.Iterable[CheckResult]) -> str:
    """FAIL if any failed, else WARN if any warned, else PASS.

    Example:
        >>> worst_status([CheckResult("a", PASS, ""), CheckResult("b", WARN, "")])
        'WARN'
    """
    return max((r.status for r in results), key=STATUSES.index, default=PASS)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _one_line(text: tp.Any) -> str:
    return " ".join(str(text).split())


def _listing(problems: tp.Sequence[str], limit: int = MAX_NAMED) -> str:
    text = "; ".join(problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


@dataclasses.dataclass
class PreflightReport:
    """What :func:`run_preflight` found: one :class:`CheckResult` per check, in order."""

    dataset: str
    solver: str
    preset: str
    workspace: str
    codec: tp.Optional[str]
    results: tp.List[CheckResult]
    settings: tp.Dict[str, tp.Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(r.status != FAIL for r in self.results)

    @property
    def status(self) -> str:
        return worst_status(self.results)

    @property
    def failures(self) -> tp.List[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def warnings(self) -> tp.List[CheckResult]:
        return [r for r in self.results if r.status == WARN]

    def get(self, name: str) -> tp.Optional[CheckResult]:
        """The result of check ``name`` (None when it did not run)."""
        return next((r for r in self.results if r.name == name), None)

    def counts(self) -> tp.Dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"dataset": self.dataset, "solver": self.solver, "preset": self.preset, "workspace": self.workspace,
                "codec": self.codec, "ok": self.ok, "status": self.status, "counts": self.counts(),
                "results": [r.to_dict() for r in self.results], "settings": dict(self.settings)}

    def format(self) -> str:
        """A header line, then one line per check (status, name, message)."""
        width = max([len(r.name) for r in self.results] + [5])
        head = (f"preflight {self.dataset}: solver {self.solver}, preset {self.preset}, workspace {self.workspace}"
                + (f", codec {self.codec}" if self.codec else ""))
        return "\n".join([head] + [r.line(width) for r in self.results])

    def summary_line(self) -> str:
        c = self.counts()
        where = f"preflight: {self.dataset} ({self.solver}, preset {self.preset})"
        tail = f"{_plural(len(self.results), 'check')}, {c[PASS]} passed" + \
            (f", {c[WARN]} warning(s)" if c[WARN] else "")
        if self.ok:
            return f"{where}: ready: {tail}"
        failed = ", ".join(r.name for r in self.failures)
        return f"{where}: NOT ready: {c[FAIL]} failed ({failed}); {tail}"


# ------------------------------------------------------------------------------------------------ helpers


select = datacheck.select


def read_sidecar(audio_path: PathLike) -> tp.Dict[str, tp.Any]:
    """The sidecar ``<audio>.json`` as a dict; ``{}`` when missing or unreadable (no error).

    Example:
        >>> read_sidecar("/nonexistent/a.wav")
        {}
    """
    try:
        data = json.loads(Path(audio_path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclasses.dataclass
class _Config:
    """What the checks need from the composed AudioCraft config (or, when it does not compose, the preset)."""

    composed: bool
    sample_rate: tp.Optional[int] = None
    channels: tp.Optional[int] = None
    segment_duration: tp.Optional[float] = None
    min_segment_ratio: tp.Optional[float] = None
    batch_size: tp.Optional[int] = None
    split_batch_sizes: tp.Dict[str, int] = dataclasses.field(default_factory=dict)
    device: str = "cuda"
    max_sample_rate: tp.Optional[int] = None
    max_channels: tp.Optional[int] = None
    egs: tp.Dict[str, Path] = dataclasses.field(default_factory=dict)
    lm_n_q: tp.Optional[int] = None
    lm_card: tp.Optional[int] = None
    t5_name: tp.Optional[str] = None


def _compose(overrides: tp.Sequence[str], ws: Path) -> tp.Any:
    """:func:`musicpipe.config.compose`, leaving this process's environment as it was.

    Composing activates the AudioCraft environment (MUSICPIPE_WORKSPACE, AUDIOCRAFT_DORA_DIR, HF_HUB_OFFLINE...)
    in ``os.environ``; a check must not change what the caller's later commands see, so those are restored.
    """
    keys = list(audiocraft_env.environment(ws, base={}))
    saved = {k: os.environ.get(k) for k in keys}
    try:
        return config.compose(overrides, ws)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _config_from(cfg: tp.Any) -> _Config:
    from omegaconf import OmegaConf

    def get(key: str) -> tp.Any:
        return OmegaConf.select(cfg, key, default=None)

    splits = {}
    for split in ("train", "valid", "evaluate", "generate"):
        value = get(f"dataset.{split}.batch_size")
        if value is not None:
            splits[split] = int(value)
    egs = {}
    for split in ("train", "valid"):
        value = get(f"datasource.{split}")
        if isinstance(value, str) and value not in ("", "???"):
            egs[split] = Path(value)
    seg = get("dataset.segment_duration")
    ratio = get("dataset.min_segment_ratio")
    return _Config(
        composed=True, sample_rate=int(get("sample_rate")), channels=int(get("channels")),
        segment_duration=float(seg) if seg else None, min_segment_ratio=float(ratio) if ratio is not None else None,
        batch_size=int(get("dataset.batch_size")), split_batch_sizes=splits, device=str(get("device") or "cuda"),
        max_sample_rate=get("datasource.max_sample_rate"), max_channels=get("datasource.max_channels"), egs=egs,
        lm_n_q=get("transformer_lm.n_q"), lm_card=get("transformer_lm.card"),
        t5_name=get("conditioners.description.t5.name"))


def _config_from_preset(spec: tp.Any, user: tp.Mapping[str, str]) -> _Config:
    """Best effort when the config does not compose: device and batch size from the preset and overrides."""
    values = {**{k: str(v) for k, v in spec.overrides.items()}, **user}
    try:
        batch = int(values["dataset.batch_size"]) if "dataset.batch_size" in values else None
    except ValueError:
        batch = None
    return _Config(composed=False, batch_size=batch, device=values.get("device", "cuda"))


# ------------------------------------------------------------------------------------------------- checks


def check_config(cfg: tp.Optional[_Config], error: tp.Optional[BaseException], dataset: str, solver_config: str,
                 ws: Path) -> CheckResult:
    """PASS with the values the other checks use, or FAIL with Hydra's reason."""
    if cfg is None or not cfg.composed:
        first = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else repr(error)
        first = _one_line(first)
        return CheckResult("config", FAIL, f"solver={solver_config} dset=audio/{dataset} does not compose: "
                                           f"{type(error).__name__}: {first} (prepare writes "
                                           f"{paths.workspace_config_dir(ws) / 'dset' / 'audio' / (dataset + '.yaml')};"
                                           f" is the workspace right?)")
    seg = "whole files" if cfg.segment_duration is None else f"segment {cfg.segment_duration:g} s"
    msg = (f"solver={solver_config} dset=audio/{dataset}: {cfg.sample_rate} Hz, {cfg.channels} channel(s), {seg}, "
           f"min_segment_ratio {cfg.min_segment_ratio:g}, batch {cfg.batch_size}, device {cfg.device}")
    details = {"sample_rate": cfg.sample_rate, "channels": cfg.channels, "segment_duration": cfg.segment_duration,
               "min_segment_ratio": cfg.min_segment_ratio, "batch_size": cfg.batch_size, "device": cfg.device,
               "datasource": {k: str(v) for k, v in cfg.egs.items()}}
    elsewhere = [f"datasource.{split} is {path}, not {paths.dataset_dir(dataset, ws) / 'egs' / split}"
                 for split, path in cfg.egs.items()
                 if Path(path).resolve() != (paths.dataset_dir(dataset, ws) / "egs" / split).resolve()]
    if elsewhere:
        return CheckResult("config", WARN, msg + "; the dset config reads another folder than this workspace's: "
                           + "; ".join(elsewhere) + " (the folders it names are checked)", details)
    return CheckResult("config", PASS, msg, details)


def check_manifest(egs: Path, split: str, dataset: str) -> tp.Tuple[CheckResult, tp.List[tp.Any]]:
    """``egs/<split>/data.jsonl`` exists, is valid and lists audio (:func:`manifests.read_nonempty_manifest`)."""
    name = f"manifest {split}"
    try:
        records = manifests.read_nonempty_manifest(egs)
    except manifests.ManifestError as exc:
        return CheckResult(name, FAIL, f"{exc}; prepare the dataset {dataset!r} first (`musicpipe prepare ...`)"), []
    except (OSError, UnicodeError) as exc:
        return CheckResult(name, FAIL, f"{egs / 'data.jsonl'}: unreadable ({exc})"), []
    hours = sum(r.duration for r in records) / 3600
    return CheckResult(name, PASS, f"{egs / 'data.jsonl'}: {len(records)} file(s), {hours:.2f} h",
                       {"files": len(records), "hours": round(hours, 6)}), records


def check_files(records: tp.Mapping[str, tp.Sequence[tp.Any]], sample: tp.Optional[int] = DEFAULT_SAMPLE,
                seed: int = 0) -> tp.Tuple[CheckResult, tp.Dict[str, tp.Dict[str, tp.Any]]]:
    """:func:`musicpipe.datacheck.check_records` (what ``train-codec``/``train-lm`` check before launch): every
    entry's file, header and sidecar, then a seeded decoded sample; returns the result and each decoded file's probe.
    """
    result = datacheck.check_records(records, sample, seed)
    checked = {split: 0 for split in records}
    for split, recs in records.items():
        checked[split] = min(len(recs), len(recs) if sample is None else sample)
    total = result.files
    everything = all(checked[split] == len(recs) for split, recs in records.items())
    how = "all" if everything else f"a sample (seed {seed}) of"
    details = {"checked": checked, "failed": len(result.problems), "headers": result.files,
               "seconds": round(result.seconds, 3)}
    if not total:
        return CheckResult("files", FAIL, "no manifest to sample files from"), result.probes
    if result.problems:
        return CheckResult("files", FAIL, f"{len(result.problems)} of {total} file(s) checked are unusable: "
                                          + _listing(result.problems), details), result.probes
    decoded = sum(checked.values())
    parts = ", ".join(f"{n} {split}" for split, n in checked.items())
    return CheckResult("files", PASS, f"{how} {decoded} file(s) ({parts}) exist and decode", details), result.probes


def _probe_mismatches(probes: tp.Mapping[str, tp.Mapping[str, tp.Any]], key: str, expected: int,
                      unit: str) -> tp.List[str]:
    return [f"{path}: {info[key]} {unit}" for path, info in sorted(probes.items()) if int(info[key]) != expected]


def check_sample_rate(cfg: _Config, records: tp.Mapping[str, tp.Sequence[tp.Any]],
                      probes: tp.Mapping[str, tp.Mapping[str, tp.Any]], dataset: str) -> CheckResult:
    """Manifest lines and probed files at ``cfg.sample_rate``; the dset config's max_sample_rate admits it."""
    rate = cfg.sample_rate
    problems = []
    if cfg.max_sample_rate is not None and rate is not None and rate > int(cfg.max_sample_rate):
        problems.append(f"dset config audio/{dataset}: datasource.max_sample_rate {cfg.max_sample_rate} is below the "
                        f"solver's sample_rate {rate} (AudioCraft asserts sample_rate <= max_sample_rate)")
    listed = [(split, r) for split, recs in records.items() for r in recs if int(r.sample_rate) != rate]
    if listed:
        examples = ", ".join(f"{r.path} ({r.sample_rate} Hz, {split})" for split, r in listed[:3])
        problems.append(f"{len(listed)} manifest line(s) declare another rate than {rate} Hz: {examples}")
    files = _probe_mismatches(probes, "sample_rate", rate, "Hz")
    if files:
        problems.append(f"{len(files)} sampled file(s) are not at {rate} Hz: " + _listing(files, 3))
    if problems:
        return CheckResult("sample rate", FAIL, "; ".join(problems) + f" (the config trains at {rate} Hz; AudioCraft "
                           "would resample on every read: re-run prepare at the config's rate)",
                           {"sample_rate": rate, "manifest_mismatches": len(listed), "file_mismatches": len(files)})
    return CheckResult("sample rate", PASS, f"every manifest line and {len(probes)} sampled file(s) at {rate} Hz",
                       {"sample_rate": rate})


def check_channels(cfg: _Config, probes: tp.Mapping[str, tp.Mapping[str, tp.Any]], dataset: str) -> CheckResult:
    """Probed files have ``cfg.channels`` channels; the dset config's max_channels admits them."""
    channels = cfg.channels
    problems = []
    if cfg.max_channels is not None and channels is not None and channels > int(cfg.max_channels):
        problems.append(f"dset config audio/{dataset}: datasource.max_channels {cfg.max_channels} is below the "
                        f"solver's channels {channels} (AudioCraft asserts channels <= max_channels)")
    files = _probe_mismatches(probes, "channels", channels, "channel(s)")
    if files:
        problems.append(f"{len(files)} sampled file(s) do not have {channels} channel(s): " + _listing(files, 3))
    if problems:
        return CheckResult("channels", FAIL, "; ".join(problems) + f" (the config trains with {channels} "
                           "channel(s); re-run prepare)", {"channels": channels, "file_mismatches": len(files)})
    return CheckResult("channels", PASS, f"{len(probes)} sampled file(s) with {channels} channel(s)",
                       {"channels": channels})


def check_segment_length(cfg: _Config, records: tp.Mapping[str, tp.Sequence[tp.Any]],
                         manifest_paths: tp.Mapping[str, Path], min_long_share: float = 0.5) -> CheckResult:
    """Share of each split's audio in files at least ``segment_duration * min_segment_ratio`` long.

    AudioCraft seeks up to ``duration - segment_duration * min_segment_ratio`` into a file and zero-pads what is
    missing: shorter files give examples that are partly silence. FAIL when no train file is long enough, WARN
    when under ``min_long_share`` of the train audio (or none of valid's) is.
    """
    if cfg.segment_duration is None:
        return CheckResult("segment length", PASS, "dataset.segment_duration is not set: whole files are used")
    ratio = cfg.min_segment_ratio if cfg.min_segment_ratio is not None else 0.0
    need = cfg.segment_duration * ratio
    rule = f"segment_duration {cfg.segment_duration:g} s x min_segment_ratio {ratio:g}"
    parts, details = [], {"min_seconds": need}
    status = PASS
    for split, recs in records.items():
        if not recs:
            continue
        total = sum(r.duration for r in recs)
        long = [r for r in recs if r.duration >= need]
        share = sum(r.duration for r in long) / total if total else 0.0
        details[split] = {"files": len(recs), "long_enough": len(long), "share": round(share, 6)}
        longest = max(recs, key=lambda r: r.duration)
        if not long:
            level = FAIL if split == "train" else WARN
            parts.append(f"{manifest_paths[split]}: no file is at least {need:g} s long ({rule}); the longest, "
                         f"{longest.path}, is {longest.duration:g} s: every example would be zero-padded (set "
                         f"dataset.segment_duration <= {longest.duration / ratio:g} or prepare longer segments)")
        elif share < min_long_share and split == "train":
            level = WARN
            parts.append(f"{manifest_paths[split]}: only {share:.0%} of the audio ({len(long)} of {len(recs)} files) "
                         f"is in files at least {need:g} s long ({rule}); the rest gives zero-padded examples")
        else:
            level = PASS
            parts.append(f"{split}: {len(long)} of {len(recs)} file(s), {share:.0%} of the audio, at least {need:g} s")
        status = max(status, level, key=STATUSES.index)
    if status == PASS:
        return CheckResult("segment length", PASS, "; ".join(parts) + f" ({rule})", details)
    return CheckResult("segment length", status, "; ".join(parts), details)


def _split_method(dataset: str, ws: Path) -> tp.Optional[str]:
    try:
        report = json.loads((paths.dataset_dir(dataset, ws) / "prepare_report.json").read_text(encoding="utf-8"))
        return str(report["split"]["method_used"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_split_leak(records: tp.Mapping[str, tp.Sequence[tp.Any]], dataset: str, ws: Path) -> CheckResult:
    """No track (nor artist, for an artist split) in both splits (:func:`musicpipe.split.check_no_leak`).

    Track ids and artists come from each segment's sidecar (``track_id``, ``artist``); without a ``track_id``
    the segment's folder names its track, as ``prepare`` lays them out. Track ids are qualified by the dataset
    the (resolved) segment belongs to, so the sources of a combined dataset may reuse ids.
    """
    from tqdm import tqdm

    docs: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]] = {}
    n = sum(len(recs) for recs in records.values())
    with tqdm(total=n, desc="sidecars", unit="file", disable=n < 5000) as bar:
        for side, recs in records.items():
            docs[side] = []
            for rec in recs:
                info = read_sidecar(rec.path)
                # <ws>/data/<source>/audio/<track>/<segment>: qualified by the source dataset, since a combined
                # dataset links several sources whose track ids may coincide (as combine does)
                folder = Path(rec.path).resolve().parent
                track = f"{folder.parent.parent.name}/{info.get('track_id') or folder.name}"
                docs[side].append({"track_id": track,
                                   "artist": info.get("artist") if isinstance(info.get("artist"), str) else None,
                                   "path": rec.path})
                bar.update(1)
    train, valid = docs.get("train", []), docs.get("valid", [])
    method = _split_method(dataset, ws)

    def where(kind: str, value: str) -> str:
        def match(d: tp.Mapping[str, tp.Any]) -> bool:
            return d["track_id"] == value if kind == "track" else split_mod.artist_key(d["artist"]) == value
        first_train = next((d["path"] for d in train if match(d)), "?")
        first_valid = next((d["path"] for d in valid if match(d)), "?")
        return f"train has {first_train}, valid has {first_valid}"

    try:
        split_mod.check_no_leak(train, valid, check_artists=False)
    except split_mod.SplitLeakError:
        valid_tracks = {d["track_id"] for d in valid}
        leaked = sorted({d["track_id"] for d in train} & valid_tracks)
        return CheckResult("split leak", FAIL, f"{len(leaked)} track(s) have segments in train and in valid, e.g. "
                           f"{leaked[0]!r} ({where('track', leaked[0])}): re-run prepare's split",
                           {"tracks_on_both_sides": len(leaked)})
    tracks = {side: len({d["track_id"] for d in ds}) for side, ds in docs.items()}
    unknown = sum(1 for ds in docs.values() for d in ds if not split_mod.artist_key(d["artist"]))
    try:
        split_mod.check_no_leak(train, valid, check_artists=True)
    except split_mod.SplitLeakError:
        artists = sorted({split_mod.artist_key(d["artist"]) for d in train} - {None}
                         & {split_mod.artist_key(d["artist"]) for d in valid})
        example = f"{artists[0]!r} ({where('artist', artists[0])})"
        if method not in (None, "artist"):
            return CheckResult("split leak", WARN, f"{len(artists)} artist(s) on both sides, e.g. {example}: "
                               f"prepare_report.json says the split fell back to a {method} split, so this is "
                               "expected; valid scores overestimate generalisation to new artists",
                               {"artists_on_both_sides": len(artists), "split_method": method})
        return CheckResult("split leak", FAIL, f"{len(artists)} artist(s) on both sides of an artist split, e.g. "
                           f"{example}: re-run prepare's split", {"artists_on_both_sides": len(artists)})
    note = f"; artist unknown for {unknown} segment(s), not compared" if unknown else ""
    return CheckResult("split leak", PASS, f"no track or artist on both sides ({tracks.get('train', 0)} train / "
                       f"{tracks.get('valid', 0)} valid tracks, split method {method or 'unknown'}){note}",
                       {"tracks": tracks, "unknown_artist_segments": unknown, "split_method": method})


def check_disk_space(ws: Path, min_free_gb: float) -> CheckResult:
    """:func:`musicpipe.training.check_disk` as a result."""
    try:
        free = training.check_disk(ws, min_free_gb)
    except training.TrainingInputError as exc:
        return CheckResult("disk", FAIL, str(exc), {"min_free_gb": min_free_gb})
    return CheckResult("disk", PASS, f"{free:.1f} GiB free under {ws} (at least {min_free_gb:g} GiB needed)",
                       {"free_gib": round(free, 3), "min_free_gb": min_free_gb})


def check_disk_forecast(ws: Path, forecast: tp.Optional[sizing.DiskForecast], min_free_gb: float) -> CheckResult:
    """What the run will write (:func:`musicpipe.sizing.disk_forecast`) against the free space under ``ws``: FAIL when
    it cannot fit (or less than the ``min_free_gb`` floor is free), WARN within 20 %, with the estimate's parts."""
    free = paths.free_gib(ws) * 2**30
    floor = min_free_gb * 2**30
    details: tp.Dict[str, tp.Any] = {"free_bytes": free, "min_free_gb": min_free_gb}
    if forecast is None:
        if free < floor:
            return CheckResult("disk", FAIL, f"{ws}: only {free / 2**30:.2f} GiB free, at least {min_free_gb:g} GiB "
                                             "needed (no forecast: the config did not compose)", details)
        return CheckResult("disk", PASS, f"{free / 2**30:.1f} GiB free under {ws} (no forecast: the config did not "
                                         "compose)", details)
    details["forecast"] = forecast.to_dict()
    status = forecast.status(free)
    if free < floor:
        status = FAIL
    message = f"{ws}: {forecast.line(free)} (estimate)"
    if status == FAIL:
        message += (f"; below the {min_free_gb:g} GiB floor" if free < floor and forecast.total <= free else
                    ": lower checkpoint.keep_last or save_every, or free space")
    elif status == WARN:
        message += f": within {sizing.FIT_MARGIN:.0%} of the free space"
    return CheckResult("disk", status, message, details)


def check_padding(cfg: tp.Any, records: tp.Mapping[str, tp.Sequence[tp.Any]], manifest: Path) -> CheckResult:
    """The exact expected share of zero padding in training crops (:func:`musicpipe.sizing.padded_share`) from the
    manifest's durations and the composed ``dataset`` settings; WARN above 1 %, FAIL when
    ``dataset.min_audio_duration`` filters out every train file (AudioCraft asserts)."""
    from omegaconf import OmegaConf

    def get(key: str, default: tp.Any = None) -> tp.Any:
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    segment = get("dataset.segment_duration")
    recs = records.get("train") or []
    if not segment or not recs:
        return CheckResult("padding", PASS, "whole files are used (no dataset.segment_duration)" if not segment
                           else "no train files to check")
    ratio = float(get("dataset.min_segment_ratio", 0.5))
    lo, hi = get("dataset.min_audio_duration"), get("dataset.max_audio_duration")
    durations = [float(r.duration) for r in recs]
    kept = [d for d in durations if (lo is None or d >= lo) and (hi is None or d <= hi)]
    rule = (f"segment_duration {float(segment):g} s, min_segment_ratio {ratio:g}"
            + (f", min_audio_duration {lo:g} s" if lo is not None else "")
            + (f", max_audio_duration {hi:g} s" if hi is not None else ""))
    details = {"files": len(durations), "files_used": len(kept)}
    if not kept:
        return CheckResult("padding", FAIL, f"{manifest}: no train file passes {rule} (AudioCraft asserts): prepare "
                           "longer segments or lower dataset.min_audio_duration", details)
    share = sizing.padded_share(durations, float(segment), ratio, lo, hi,
                                sample_on_duration=bool(get("dataset.sample_on_duration", True)))
    details["padded_share"] = share
    dropped = f"; {len(durations) - len(kept)} shorter file(s) left out" if len(kept) < len(durations) else ""
    if share > sizing.MAX_PADDED_SHARE:
        fix = ("dataset.min_segment_ratio: 1.0 takes crops that end inside the file" if ratio < 1 else
               f"dataset.min_audio_duration: {float(segment):g} leaves out files shorter than a segment")
        return CheckResult("padding", WARN, f"{manifest}: {share:.1%} of the training audio would be zero padding "
                           f"({rule}, {len(kept)} file(s)){dropped}: {fix}", details)
    return CheckResult("padding", PASS, f"{share:.2%} of the training audio is zero padding ({rule}){dropped}", details)


def check_shm(cfg: tp.Any, world: int, total: tp.Optional[float] = None) -> CheckResult:
    """``/dev/shm`` against the batches the loader workers hold in flight (:func:`musicpipe.sizing.shm_bytes`, with
    the workers :mod:`musicpipe.dora_entry.loader_workers` will use on this machine)."""
    import shutil

    from musicpipe.dora_entry.loader_workers import ENV_VAR, effective_workers, usable_cores

    cores = usable_cores()
    workers = effective_workers(int(cfg.dataset.num_workers), cores, world, os.environ.get(ENV_VAR, "auto"))
    if workers == 0:
        return CheckResult("shm", PASS, "no loader workers (dataset.num_workers=0): batches stay in the trainer")
    if total is None:
        try:
            total = float(shutil.disk_usage("/dev/shm").total)
        except OSError:
            return CheckResult("shm", WARN, "no /dev/shm here: DataLoader workers cannot share batches")
    batch = max(1, int(cfg.dataset.batch_size) // max(1, world))
    need = sizing.shm_bytes(batch, float(cfg.dataset.segment_duration or 10), int(cfg.sample_rate), int(cfg.channels),
                            workers, world)
    details = {"shm_bytes": total, "need_bytes": need, "workers_per_rank": workers, "cores": cores}
    what = (f"{world} rank(s) x {workers} worker(s) x {sizing.PREFETCH_FACTOR} batches of {batch} x "
            f"{float(cfg.dataset.segment_duration or 10):g} s need ~{sizing.fmt_gb(need)} of /dev/shm, which has "
            f"{sizing.fmt_gb(total)}")
    fix = ("give the container more shared memory (docker run --shm-size=32g; on RunPod pods /dev/shm is sized "
           "from the pod's RAM), or fewer workers: MUSICPIPE_LOADER_WORKERS=<n>")
    if need > total:
        return CheckResult("shm", FAIL, f"{what}: loader workers would die with a bus error; {fix}", details)
    if need > total * (1 - sizing.FIT_MARGIN):
        return CheckResult("shm", WARN, f"{what} (within {sizing.FIT_MARGIN:.0%}); {fix}", details)
    return CheckResult("shm", PASS, what, details)


def check_epoch(cfg: tp.Any, world: int) -> CheckResult:
    """Every epoch runs ``optim.updates_per_epoch`` full batches (:func:`musicpipe.sizing.epoch_plan`)."""
    if int(cfg.dataset.batch_size) < world:
        return CheckResult("epoch", PASS, f"not computed: dataset.batch_size {cfg.dataset.batch_size} < {world} "
                                          "processes (see the batch check)")
    plan = sizing.epoch_plan(int(cfg.dataset.batch_size), world, cfg.optim.updates_per_epoch,
                             int(cfg.dataset.train.num_samples))
    details = dataclasses.asdict(plan)
    problem = plan.problem()
    if problem:
        exact = sizing.exact_num_samples(int(cfg.dataset.batch_size), plan.updates_per_epoch)
        return CheckResult("epoch", WARN, f"{problem}: set dataset.train.num_samples={exact} (batch "
                           f"{cfg.dataset.batch_size} x {plan.updates_per_epoch} updates)", details)
    return CheckResult("epoch", PASS, f"{plan.steps} steps of {plan.batch_per_rank} per rank x {world} rank(s), no "
                       "ragged batch", details)


def check_gpu(device: str, world: int, preset: str, batch_size: tp.Optional[int]) -> CheckResult:
    """CPU presets pass; CUDA presets need CUDA, ``world`` visible GPUs, and GPUs no other process fills."""
    cuda_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = "unset" if cuda_env is None else repr(cuda_env)
    per_proc = f"batch {batch_size // world if batch_size else '?'} per process"
    if not str(device).startswith("cuda"):
        ddp = f", {world} DDP processes over gloo" if world > 1 else ""
        return CheckResult("gpu", PASS, f"CPU-only preset {preset} (device={device}{ddp}): no GPU needed, {per_proc}",
                           {"device": device, "processes": world})
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        return CheckResult("gpu", FAIL, f"preset {preset} trains on device={device} but torch does not import ({exc})")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return CheckResult("gpu", FAIL, f"preset {preset} trains on device={device} with {_plural(world, 'process')} "
                           f"but torch {torch.__version__} ({build}) sees no CUDA device (no GPU, no NVIDIA driver or "
                           f"a driver too old for this build; CUDA_VISIBLE_DEVICES={visible}): use a CPU preset such "
                           "as demo_cpu here, or run on a GPU machine", {"device": device, "processes": world,
                                                                          "cuda_available": False})
    count = torch.cuda.device_count()
    gpus = []
    busy = []
    for i in range(count):
        prop = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append({"index": i, "name": prop.name, "total_gib": round(total / 2**30, 1),
                     "free_gib": round(free / 2**30, 1)})
        if total and (total - free) / total > GPU_BUSY_SHARE:
            busy.append(f"GPU {i} ({prop.name}): {(total - free) / 2**30:.1f} of {total / 2**30:.0f} GiB already "
                        "in use by another process")
    summary = "; ".join(f"{g['index']}: {g['name']} {g['free_gib']:.0f}/{g['total_gib']:.0f} GiB free" for g in gpus)
    details = {"device": device, "processes": world, "gpus": gpus, "cuda_visible_devices": cuda_env}
    if count < world:
        return CheckResult("gpu", FAIL, f"preset {preset} launches {_plural(world, 'process')}, one per GPU, but "
                           f"{count} GPU(s) are visible (CUDA_VISIBLE_DEVICES={visible}): {summary}", details)
    if busy:
        return CheckResult("gpu", WARN, "; ".join(busy) + f" (training may run out of memory; {per_proc})", details)
    note = f"; {count - world} GPU(s) left idle" if count > world else ""
    return CheckResult("gpu", PASS, f"{count} GPU(s): {summary}; {per_proc}{note}", details)


def check_batch(batch_size: tp.Optional[int], split_batch_sizes: tp.Mapping[str, int], world: int,
                preset: str) -> CheckResult:
    """``dataset.batch_size`` and every ``dataset.<split>.batch_size`` divisible by the process count."""
    if batch_size is None:
        return CheckResult("batch", FAIL, f"preset {preset}: no dataset.batch_size known (the config did not compose)")
    sizes = {"dataset.batch_size": batch_size,
             **{f"dataset.{split}.batch_size": value for split, value in split_batch_sizes.items()}}
    bad = [f"{key}={value}" for key, value in sizes.items() if value % world]
    if bad:
        return CheckResult("batch", FAIL, f"preset {preset}: {', '.join(bad)} not divisible by the "
                           f"{_plural(world, 'process')} (GPUs) it launches (audiocraft.train.get_solver asserts "
                           "it): pick a multiple, or another --gpus", {"processes": world, **sizes})
    return CheckResult("batch", PASS, f"{', '.join(f'{k}={v}' for k, v in sizes.items())} divisible by "
                       f"{_plural(world, 'process')}", {"processes": world, **sizes})


ALLREDUCE_WARN_BYTES = 100e6  # per process and step: beyond this, inter-node links decide the speed


def check_nodes(nodes: int, per_node: int, device: str, params: tp.Optional[int],
                env: tp.Mapping[str, str]) -> CheckResult:
    """A multi-node launch: world size, network interface, and the gradient traffic per step (with its arithmetic)."""
    world = nodes * per_node
    cuda = str(device).startswith("cuda")
    var = "NCCL_SOCKET_IFNAME" if cuda else "GLOO_SOCKET_IFNAME"
    iface = env.get(var)
    details: tp.Dict[str, tp.Any] = {"nodes": nodes, "processes_per_node": per_node, "world_size": world,
                                     var: iface, "parameters": params}
    parts = [f"{nodes} nodes x {_plural(per_node, 'process')} = world size {world}"]
    warn = []
    if iface:
        parts.append(f"{var}={iface}")
    elif cuda:
        warn.append(f"{var} is unset: NCCL picks an interface itself, possibly the management one; set it to the "
                    "inter-node interface on every node (RunPod Instant Clusters: ens1, not eth0)")
    else:
        parts.append(f"gloo picks the interface ({var} unset)")
    if params:
        per_step = multinode.allreduce_bytes_per_step(params, world)
        details["allreduce_bytes_per_step"] = per_step
        arithmetic = (f"each step all-reduces {params / 1e6:.1f}M parameters x 4 B = {params * 4 / 1e9:.3g} GB of fp32 "
                      f"gradients; a ring all-reduce sends and receives 2 x ({world}-1)/{world} x that = "
                      f"{per_step / 1e9:.3g} GB per process per step ({per_step * 8 / 1e9:.3g} Gbit at 1 step/s)")
        if per_step >= ALLREDUCE_WARN_BYTES:
            warn.append(arithmetic + ": inter-node links must be fast (InfiniBand/RoCE, 100+ Gbit/s), or the nodes "
                        "wait on the network")
        else:
            parts.append(arithmetic)
    if warn:
        return CheckResult("nodes", WARN, "; ".join(parts + warn), details)
    return CheckResult("nodes", PASS, "; ".join(parts), details)


def _model_parameters(cfg: tp.Any, solver: str) -> int:
    if solver == "musicgen":
        return sizing.lm_parameters_from_cfg(cfg)
    return sizing.codec_parameters_from_cfg(cfg)[0]


def check_env_workspace(env: tp.Mapping[str, str], ws: Path) -> CheckResult:
    """``$MUSICPIPE_WORKSPACE`` against the workspace checked (dset configs interpolate it)."""
    value = env.get(paths.WORKSPACE_ENV)
    if not value:
        return CheckResult("env MUSICPIPE_WORKSPACE", PASS, f"unset: musicpipe sets it to {ws} for its runs (a manual "
                           "`dora run` here would read data under the dset config's default workspace)")
    if paths.workspace_root(value) == ws:
        return CheckResult("env MUSICPIPE_WORKSPACE", PASS, f"{value} (the workspace checked)")
    return CheckResult("env MUSICPIPE_WORKSPACE", WARN, f"{value} in this shell, but the workspace checked is {ws}: "
                       "musicpipe's commands given --workspace use the right one, but a manual `dora run`/`dora info` "
                       f"here would read {paths.workspace_root(value) / 'data'} (the dset configs interpolate "
                       "${oc.env:MUSICPIPE_WORKSPACE})")


def check_env_dora_dir(env: tp.Mapping[str, str], ws: Path) -> CheckResult:
    """``$AUDIOCRAFT_DORA_DIR`` against the workspace's ``experiments/audiocraft``."""
    expected = paths.dora_dir(ws)
    value = env.get("AUDIOCRAFT_DORA_DIR")
    if not value:
        return CheckResult("env AUDIOCRAFT_DORA_DIR", PASS, f"unset: musicpipe sets it to {expected} for its runs")
    if Path(value).expanduser().resolve() == expected.resolve():
        return CheckResult("env AUDIOCRAFT_DORA_DIR", PASS, f"{value} (this workspace's experiments)")
    return CheckResult("env AUDIOCRAFT_DORA_DIR", WARN, f"{value} in this shell, but this workspace's experiments are "
                       f"in {expected}: musicpipe trains there, while manual `dora info`/`dora grid` and //sig/<XP> "
                       f"lookups in this shell search {value}")


def check_text_conditioning(env: tp.Mapping[str, str], t5_name: str = "t5-base", timeout: float = 5.0) -> CheckResult:
    """T5 for ``--conditioner text``: :func:`musicpipe.training.check_t5` (local cache, else the hub)."""
    name = "T5 (text conditioning)"
    try:
        source = training.check_t5(t5_name, timeout=timeout)
    except training.TrainingInputError as exc:
        offline = " (HF_HUB_OFFLINE=1 is set in this shell)" if env.get("HF_HUB_OFFLINE") == "1" else ""
        return CheckResult(name, FAIL, f"{exc}{offline}", {"t5": t5_name})
    if source == "hub" and env.get("HF_HUB_OFFLINE") == "1":
        return CheckResult(name, WARN, f"T5 {t5_name!r} is on the hub, not in the local cache, and HF_HUB_OFFLINE=1 "
                           "in this shell: musicpipe's train-lm lifts it for its run, a manual `dora run` here would "
                           "fail to load T5", {"t5": t5_name, "source": source})
    return CheckResult(name, PASS, f"T5 {t5_name!r} loads from the "
                       f"{'local Hugging Face cache' if source == 'cache' else 'Hugging Face hub'}",
                       {"t5": t5_name, "source": source})


def resolve_codec(codec: tp.Optional[str], dataset: str, ws: Path) -> tp.Tuple[tp.Optional[tp.Any], CheckResult]:
    """``(CodecInfo, result)`` for ``codec`` (:func:`musicpipe.training.resolve_codec`; None: ``latest``)."""
    given = str(codec) if codec not in (None, "", "latest") else None
    try:
        info = training.resolve_codec(given or "latest", dataset, ws)
    except training.TrainingInputError as exc:
        head = f"codec XP {given}: " if given else ""
        return None, CheckResult("codec", FAIL, head + _one_line(exc), {"sig": given} if given else {})
    if info.checkpoint is None:  # a codec XP of this workspace: a truncated copy fails at the LM's first step
        problem = datacheck.check_checkpoint(paths.xp_dir(info.sig, ws) / "checkpoint.th")
        if problem:
            return None, CheckResult("codec", FAIL, f"codec XP {info.sig}: {problem}", {"sig": info.sig})
    return info, CheckResult("codec", PASS, "")


def check_workspace_writable(ws: Path) -> CheckResult:
    """The workspace takes a file (:func:`musicpipe.datacheck.check_writable`: a real write, not permission bits)."""
    problem = datacheck.check_writable(ws)
    if problem:
        return CheckResult("workspace", FAIL, problem)
    return CheckResult("workspace", PASS, f"{ws}: writable")


def check_codec_match(info: tp.Any, cfg: _Config, records: tp.Mapping[str, tp.Sequence[tp.Any]]) -> CheckResult:
    """The codec's n_q/card/rate/channels against the composed LM config and the dataset's rates."""
    details = {"sig": info.sig, "n_q": info.n_q, "card": info.card, "sample_rate": info.sample_rate,
               "channels": info.channels}
    head = f"codec XP {info.sig}: n_q={info.n_q}, card={info.card}, {info.sample_rate} Hz, {info.channels} channel(s)"
    problems = []
    if cfg.composed:
        for key, ours, theirs in (("transformer_lm.n_q", cfg.lm_n_q, info.n_q), ("transformer_lm.card", cfg.lm_card,
                                                                                   info.card),
                                  ("sample_rate", cfg.sample_rate, info.sample_rate),
                                  ("channels", cfg.channels, info.channels)):
            if ours is not None and int(ours) != int(theirs):
                problems.append(f"the LM config has {key}={ours}, the codec {theirs}")
    rates = sorted({int(r.sample_rate) for recs in records.values() for r in recs})
    if rates and rates != [info.sample_rate]:
        problems.append(f"the dataset's manifests are at {rates} Hz, the codec works at {info.sample_rate} Hz "
                        "(prepare the data at the codec's rate or train a codec on it)")
    if problems:
        return CheckResult("codec", FAIL, head + ": " + "; ".join(problems), details)
    lm = (f"transformer_lm.n_q={cfg.lm_n_q}, card={cfg.lm_card}, sample_rate={cfg.sample_rate}" if cfg.composed
          else "the LM config did not compose")
    data = f", data at {rates[0]} Hz" if rates else ""
    return CheckResult("codec", PASS, f"{head}; LM: {lm}{data}", details)


def check_token_cache(info: tp.Any, dataset: str, ws: Path) -> CheckResult:
    """The dataset's token store for this codec (:func:`musicpipe.token_cache.store_state`)."""
    state = token_store.store_state(info.sig, dataset, ws, checkpoint=info.compression_checkpoint)
    status = {"current": PASS, "missing": PASS, "stale": WARN}.get(state["state"], FAIL)
    return CheckResult("token cache", status, state["message"], {k: v for k, v in state.items() if k != "message"})


# ------------------------------------------------------------------------------------------------ the run


def run_preflight(dataset: str, solver: str = "compression", codec: tp.Optional[str] = None,
                  preset: str = "demo_cpu", workspace: tp.Optional[PathLike] = None, *,
                  conditioner: tp.Optional[str] = None, init_from: tp.Optional[str] = None,
                  sample: tp.Optional[int] = DEFAULT_SAMPLE, seed: int = 0, gpus: tp.Optional[int] = None,
                  overrides: tp.Sequence[str] = (), min_free_gb: tp.Optional[float] = None,
                  min_long_share: float = 0.5, t5_timeout: float = 5.0,
                  token_cache: tp.Optional[bool] = None, nodes: tp.Optional[int] = None) -> PreflightReport:
    """Run every check for training ``solver`` on ``dataset`` with ``preset``; see the module docstring.

    Args:
        dataset: the prepared dataset (``<ws>/data/<dataset>``, ``dset=audio/<dataset>``).
        solver: ``compression`` (codec) or ``musicgen`` (LM).
        codec: musicgen only: the codec XP signature; None or ``"latest"``: the dataset's latest codec
            (:meth:`musicpipe.xp.XP.latest`).
        preset: ``model_config/presets/<preset>.yaml``.
        workspace: default ``$MUSICPIPE_WORKSPACE`` or ``<repo>/workspace``.
        conditioner: musicgen only: ``none`` | ``genre`` | ``text`` (as ``train-lm --conditioning``); None: what
            training would use (``none`` from scratch, the release's own with ``init_from``).
        init_from: musicgen only: fine-tune this release (a Hugging Face id or a release folder), as
            ``train-lm --init-from``: the config is composed with its architecture and conditioners.
        sample: files decoded per split (None: all), chosen with ``random.Random(seed)``.
        gpus: processes (GPUs) to launch; default the preset's (as :func:`musicpipe.presets.dora_run_args`).
        overrides: extra Hydra ``key=value`` overrides, as given to training.
        min_free_gb: default 1 GiB for CPU presets, 10 GiB for GPU presets.
        min_long_share: below this share of train audio in long-enough files, ``segment length`` warns.
        t5_timeout: seconds for the hub request of the T5 check.
        token_cache: musicgen only: training will read the dataset's token store (None: the preset's setting).
        nodes: machines of a multi-node launch (``train-* --nodes``), each running ``gpus`` processes: the world
            size is their product (``batch``, ``epoch``), and ``nodes`` checks the network (:func:`check_nodes`).

    Raises:
        PreflightError: bad arguments only (unknown preset/solver/conditioner, codec for the compression solver...).

    Example:
        >>> run_preflight("synthetic_demo", solver="lm")
        Traceback (most recent call last):
        ...
        training_checks.preflight.PreflightError: unknown solver 'lm': expected compression or musicgen
    """
    if solver not in SOLVERS:
        raise PreflightError(f"unknown solver {solver!r}: expected {' or '.join(SOLVERS)}")
    if conditioner is not None and conditioner not in CONDITIONERS:
        raise PreflightError(f"unknown conditioner {conditioner!r}: expected one of {', '.join(CONDITIONERS)}")
    if solver == "compression" and codec not in (None, ""):
        raise PreflightError("--codec applies to the musicgen solver only")
    if solver == "compression" and conditioner not in (None, "none"):
        raise PreflightError("--conditioner applies to the musicgen solver only")
    if solver == "compression" and init_from not in (None, ""):
        raise PreflightError("--init-from applies to the musicgen solver only")
    if sample is not None and sample < 1:
        raise PreflightError(f"sample must be at least 1 (or None for all files), got {sample}")
    if gpus is not None and gpus < 0:
        raise PreflightError(f"gpus must be >= 0, got {gpus}")
    if nodes is not None and nodes < 1:
        raise PreflightError(f"nodes must be >= 1, got {nodes}")
    if not dataset or "/" in dataset:
        raise PreflightError(f"invalid dataset name {dataset!r}")
    try:
        spec = presets.load_preset(preset)
        user = presets.parse_overrides(overrides)
    except presets.PresetError as exc:
        raise PreflightError(str(exc)) from None
    env = dict(os.environ)  # before composing, which activates AudioCraft's environment for a moment
    ws = paths.workspace_root(workspace)
    n_proc = spec.gpus if gpus is None else int(gpus)
    per_node = max(1, n_proc)
    n_nodes = int(nodes or 1)
    world = per_node * n_nodes
    results: tp.List[CheckResult] = []

    def guarded(name: str, fn: tp.Callable[[], tp.Any]) -> tp.Any:
        """Run one check; an unexpected exception is that check's FAIL, never a traceback."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - bad data must not crash the report
            logger.debug("check %s crashed", name, exc_info=True)
            results.append(CheckResult(name, FAIL, f"check crashed on unexpected input: {type(exc).__name__}: "
                                                   f"{_one_line(exc)}"))
            return None

    # the codec first: the LM config is composed with its n_q/card, as training does
    info = None
    codec_result = None
    args = None
    if solver == "musicgen" and init_from not in (None, ""):
        try:  # the release decides the architecture, the conditioning and (by default) the codec
            plan = training.plan_lm(preset, codec, dataset, ws, conditioning=conditioner, init_from=init_from, gpus=gpus,
                                    overrides=overrides, check_text=False)
            info, args, conditioner = plan.codec, plan.args, plan.conditioning
            results.append(CheckResult("init from", PASS, f"{plan.init_from}: conditioning {plan.conditioning}, "
                                                          f"codec {info.sig}", {"release": plan.init_from}))
        except (training.TrainingInputError, presets.PresetError) as exc:
            results.append(CheckResult("init from", FAIL, _one_line(exc), {"release": init_from}))
    elif solver == "musicgen":
        got = guarded("codec", lambda: resolve_codec(codec, dataset, ws))
        if got is not None:
            info, codec_result = got
    conditioner = conditioner or "none"
    if args is None:
        try:
            args = presets.dora_run_args(
                spec, solver, dset=dataset, conditioning=conditioner if solver == "musicgen" else None,
                codec=(info or presets.CodecInfo(PLACEHOLDER_CODEC, n_q=4, card=2048)) if solver == "musicgen"
                else None, gpus=gpus, overrides=overrides)
        except presets.PresetError as exc:
            raise PreflightError(str(exc)) from None
    solver_config = spec.for_solver(solver).solver
    compose_error: tp.Optional[BaseException] = None
    raw_cfg = None
    try:
        raw_cfg = _compose(presets.hydra_overrides(args), ws)
        cfg = _config_from(raw_cfg)
    except Exception as exc:  # noqa: BLE001 - Hydra/omegaconf raise many types; each is this check's finding
        logger.debug("compose failed", exc_info=True)
        compose_error = exc
        cfg = _config_from_preset(spec.for_solver(solver), user)
    results.append(check_config(cfg, compose_error, dataset, solver_config, ws))

    egs = {split: cfg.egs.get(split, paths.dataset_dir(dataset, ws) / "egs" / split) for split in ("train", "valid")}
    records: tp.Dict[str, tp.List[tp.Any]] = {}
    for split in ("train", "valid"):
        got = guarded(f"manifest {split}", lambda: check_manifest(egs[split], split, dataset))
        if got is not None:
            results.append(got[0])
            if got[1]:
                records[split] = got[1]
    manifest_paths = {split: egs[split] / "data.jsonl" for split in egs}
    probes: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    if records:
        got = guarded("files", lambda: check_files(records, sample, seed))
        if got is not None:
            results.append(got[0])
            probes = got[1]
        if cfg.composed:
            guarded("sample rate", lambda: results.append(check_sample_rate(cfg, records, probes, dataset)))
            guarded("channels", lambda: results.append(check_channels(cfg, probes, dataset)))
            guarded("segment length", lambda: results.append(
                check_segment_length(cfg, records, manifest_paths, min_long_share)))
        seg = next((r for r in results if r.name == "segment length"), None)
        if raw_cfg is not None and seg is not None and seg.status == PASS:  # else that check says it already
            guarded("padding", lambda: results.append(check_padding(raw_cfg, records, manifest_paths["train"])))
        if "train" in records and "valid" in records:
            guarded("split leak", lambda: results.append(check_split_leak(records, dataset, ws)))
    gpu_preset = str(cfg.device).startswith("cuda")
    need_gb = min_free_gb if min_free_gb is not None else (GPU_MIN_FREE_GB if gpu_preset else training.MIN_FREE_GB)
    valid_seconds = max((r.duration for r in records.get("valid", [])), default=10.0)
    forecast = guarded("disk", lambda: sizing.disk_forecast(raw_cfg, valid_seconds=valid_seconds)) \
        if raw_cfg is not None else None
    guarded("disk", lambda: results.append(check_disk_forecast(ws, forecast, need_gb)))
    guarded("workspace", lambda: results.append(check_workspace_writable(ws)))
    if raw_cfg is not None:
        guarded("shm", lambda: results.append(check_shm(raw_cfg, per_node)))  # one machine's ranks
        guarded("epoch", lambda: results.append(check_epoch(raw_cfg, world)))
    guarded("gpu", lambda: results.append(check_gpu(cfg.device, per_node, preset, cfg.batch_size)))
    if n_nodes > 1:
        guarded("nodes", lambda: results.append(check_nodes(
            n_nodes, per_node, cfg.device, _model_parameters(raw_cfg, solver) if raw_cfg is not None else None, env)))
    guarded("batch", lambda: results.append(check_batch(cfg.batch_size, cfg.split_batch_sizes, world, preset)))
    guarded("env MUSICPIPE_WORKSPACE", lambda: results.append(check_env_workspace(env, ws)))
    guarded("env AUDIOCRAFT_DORA_DIR", lambda: results.append(check_env_dora_dir(env, ws)))
    if solver == "musicgen" and conditioner == "text":
        t5 = cfg.t5_name or user.get("conditioners.description.t5.name") or "t5-base"
        guarded("T5 (text conditioning)", lambda: results.append(check_text_conditioning(env, t5, t5_timeout)))
    if solver == "musicgen":
        if info is not None:
            guarded("codec", lambda: results.append(check_codec_match(info, cfg, records)))
        elif codec_result is not None:
            results.append(codec_result)
        if info is not None and (spec.token_cache if token_cache is None else token_cache):
            guarded("token cache", lambda: results.append(check_token_cache(info, dataset, ws)))
    settings = {"sample": sample, "seed": seed, "conditioner": conditioner, "init_from": init_from, "processes": world,
                "nodes": n_nodes,
                "overrides": list(overrides), "min_free_gb": need_gb, "min_long_share": min_long_share,
                "dora_args": args}
    report = PreflightReport(dataset=dataset, solver=solver, preset=preset, workspace=str(ws),
                             codec=info.sig if info is not None else (codec or None), results=results,
                             settings=settings)
    for r in report.results:
        logger.debug("%s", r.line())
    return report


# ------------------------------------------------------------------------------------------------------- CLI


def _sample_arg(text: str) -> tp.Optional[int]:
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preflight",
        description="Check a prepared dataset, the preset's config, this machine and (for musicgen) the codec XP "
                    "before training. Exit 0: ready (warnings allowed); 1: a check failed; 2: bad arguments.")
    parser.add_argument("--dataset", required=True, help="prepared dataset name (dset=audio/<name>)")
    parser.add_argument("--solver", choices=SOLVERS, default="compression")
    parser.add_argument("--codec", default=None,
                        help="musicgen: a codec XP signature or a released codec (default: the dataset's latest codec "
                             "XP; with --init-from, the release's own codec)")
    parser.add_argument("--init-from", default=None, metavar="NAME_OR_DIR",
                        help="musicgen: fine-tune this release (Hugging Face id or release folder), as train-lm does")
    parser.add_argument("--preset", default="demo_cpu", help="model_config/presets/<name>.yaml")
    parser.add_argument("--conditioner", "--conditioning", dest="conditioner", choices=CONDITIONERS, default=None,
                        help="musicgen: the conditioning train-lm will use")
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--sample", type=_sample_arg, default=DEFAULT_SAMPLE,
                        help=f"files decoded per split, or 'all' (default {DEFAULT_SAMPLE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpus", type=int, default=None, help="processes/GPUs to launch (default: the preset's)")
    parser.add_argument("--nodes", type=int, default=None,
                        help="machines of a multi-node launch, each running --gpus processes (default 1)")
    parser.add_argument("--min-free-gb", type=float, default=None,
                        help="free disk needed (default 1 GiB for CPU presets, 10 GiB for GPU presets)")
    parser.add_argument("--token-cache", dest="token_cache", action="store_true", default=None,
                        help="musicgen: training reads the token store (default: the preset's token_cache)")
    parser.add_argument("--no-token-cache", dest="token_cache", action="store_false",
                        help="musicgen: training encodes the audio every step")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides key=value, as given to training")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI: one line per check, then a one-line summary; 0 ready, 1 on any FAIL, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run_preflight(args.dataset, args.solver, args.codec, args.preset, args.workspace,
                               conditioner=args.conditioner, init_from=args.init_from, sample=args.sample, seed=args.seed, gpus=args.gpus,
                               overrides=args.overrides, min_free_gb=args.min_free_gb, token_cache=args.token_cache,
                               nodes=args.nodes)
    except PreflightError as exc:
        print(f"preflight: error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if args.json:
        atomic.write_text(Path(args.json), json.dumps(report.to_dict(), indent=1, ensure_ascii=False,
                                                                default=str) + "\n")
    print(report.summary_line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training steps: the codec (compression solver) and the language model (musicgen solver).

Each builds the ``dora run`` arguments from a preset (pure), checks the inputs it can check
cheaply, then launches. Re-running the same call resumes the same XP.

Example:
    >>> from musicpipe import training
    >>> codec = training.train_codec("demo_cpu", dataset="synthetic_demo")           # doctest: +SKIP
    >>> lm = training.train_lm("demo_cpu", codec=codec.sig, conditioning="genre")    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
import typing as tp
from pathlib import Path

from musicpipe import atomic, dora, manifests, paths, presets

MIN_FREE_GB = 1.0
RECORD = "musicpipe.json"  # written into each XP folder: what musicpipe launched there

logger = logging.getLogger(__name__)


class TrainingInputError(ValueError):
    """What a training step was given cannot train (the message says which file and why)."""


def check_manifests(dataset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.Dict[str, int]:
    """Both splits' ``data.jsonl`` exist and list at least one file. Returns counts per split.

    Committed dset configs (``model_config/dset/audio``) and those ``prepare`` writes both point at
    ``<ws>/data/<dataset>/egs/<split>``.
    """
    counts = {}
    for split in ("train", "valid"):
        egs = paths.dataset_dir(dataset, workspace) / "egs" / split
        try:
            records = manifests.read_nonempty_manifest(egs)
        except manifests.ManifestError as exc:
            raise TrainingInputError(f"{exc}; prepare the dataset {dataset!r} first (`musicpipe prepare ...`)") \
                from None
        counts[split] = len(records)
    return counts


def check_disk(workspace: tp.Optional[tp.Union[str, Path]] = None, min_free_gb: float = MIN_FREE_GB) -> float:
    """Free GiB under the workspace; refuses below ``min_free_gb`` (checkpoints would not fit)."""
    free = paths.free_gib(workspace)
    if free < min_free_gb:
        raise TrainingInputError(f"{paths.workspace_root(workspace)}: only {free:.2f} GiB free, at least {min_free_gb:g} GiB needed for "
                                 "checkpoints")
    return free


def target_epochs(args: tp.Sequence[str]) -> tp.Optional[int]:
    """``optim.epochs`` in a ``dora run`` argument list (the last one wins), None when absent.

    >>> target_epochs(["run", "solver=x", "optim.epochs=2", "optim.epochs=3"]), target_epochs(["run"])
    (3, None)
    """
    found = None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key == "optim.epochs":
            try:
                found = int(value)
            except ValueError:
                found = None
    return found


def finished(folder: Path, epochs: tp.Optional[int]) -> bool:
    """An XP folder whose history holds ``epochs`` epochs and whose final checkpoint exists."""
    if epochs is None or not (folder / "checkpoint.th").exists():
        return False
    try:
        return len(dora.read_history(folder)) >= epochs
    except (OSError, ValueError):
        return False


def _launch(args: tp.Sequence[str], workspace: tp.Optional[tp.Union[str, Path]], echo: bool,
            env: tp.Mapping[str, str], rerun: bool) -> dora.DoraRun:
    """``dora run``, unless that XP already trained all its epochs (then nothing runs, unless ``rerun``)."""
    sig = dora.xp_signature(args, workspace)
    folder = paths.xp_dir(sig, workspace)
    epochs = target_epochs(args)
    if not rerun and finished(folder, epochs):
        print(f"xp: {sig}", flush=True)
        logger.info("xp %s already trained its %d epochs (%s): skipped", sig, epochs, folder)
        return dora.DoraRun(sig=sig, folder=folder, returncode=0, output_tail="", skipped=True)
    return dora.run(args, workspace=workspace, echo=echo, env=env, sig=sig)


def _record(run: dora.DoraRun, **info: tp.Any) -> None:
    atomic.write_json(run.folder / RECORD, {"sig": run.sig, **info}, indent=1)


def _finish(run: dora.DoraRun, workspace: tp.Optional[tp.Union[str, Path]], outputs: tp.Optional[Path],
            **info: tp.Any) -> dora.DoraRun:
    from musicpipe import export

    if not run.skipped or not (run.folder / RECORD).exists():
        _record(run, **info)
    if outputs is not None:
        dest = export.publish_checkpoints(run.sig, workspace, outputs)
        logger.info("checkpoints of %s in %s", run.sig, dest)
    return run


T5_DEFAULT = "t5-base"  # AudioCraft's text2music conditioner


def check_t5(name: str = T5_DEFAULT, *, cache_dir: tp.Optional[str] = None, endpoint: tp.Optional[str] = None,
             timeout: float = 5.0) -> str:
    """Can text conditioning load T5 ``name``? ``"cache"`` (local HF cache) or ``"hub"``; else a clear error.

    Takes about 2 s either way, where the training run would otherwise retry silently for minutes
    (shared/docs/AUDIOCRAFT.md). ``endpoint`` defaults to ``$HF_ENDPOINT`` or https://huggingface.co.
    """
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name, local_files_only=True, cache_dir=cache_dir)
        return "cache"
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        pass
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    url = f"{base}/{name}/resolve/main/config.json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            if resp.status < 400:
                return "hub"
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrainingInputError(
        f"text conditioning needs the T5 model {name!r}, which is not in the local Hugging Face cache, and {url} "
        f"cannot be reached ({reason}). On a pod with internet access it downloads on first use; offline, train "
        "with --conditioning genre or none.")


def latest_codec(dataset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> str:
    """The most recently trained codec XP for ``dataset`` (from the records musicpipe leaves in XP folders)."""
    found = []
    for record in (paths.dora_dir(workspace) / "xps").glob(f"*/{RECORD}"):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        ckpt = record.parent / "checkpoint.th"
        if info.get("kind") == "compression" and info.get("dataset") == dataset and ckpt.exists():
            found.append((ckpt.stat().st_mtime, info["sig"]))
    if not found:
        raise TrainingInputError(f"no trained codec for dataset {dataset!r} under {paths.dora_dir(workspace)}: "
                                 "train one first (`musicpipe train-codec`) or pass --codec <sig>")
    return max(found)[1]


def train_codec(preset: str, dataset: tp.Optional[str] = None,
                workspace: tp.Optional[tp.Union[str, Path]] = None, *, epochs: tp.Optional[int] = None,
                batch_size: tp.Optional[int] = None, segment_seconds: tp.Optional[float] = None,
                gpus: tp.Optional[int] = None, overrides: tp.Sequence[str] = (), echo: bool = True,
                outputs: tp.Optional[Path] = paths.OUTPUTS_DIR, codec_check_every: tp.Optional[int] = None,
                codec_check_samples: tp.Optional[int] = None, rerun: bool = False,
                env: tp.Optional[tp.Mapping[str, str]] = None) -> dora.DoraRun:
    """Train (or resume) an EnCodec codec with ``dora run`` on the compression solver.

    An XP that already trained all its epochs is not launched again (``rerun=True`` launches it anyway;
    AudioCraft then reloads it and re-runs its final evaluation stages).
    ``env``: extra environment variables for the Dora processes (e.g. ``STABILITY_MAX_NAN_RATIO``, which
    tune the run without changing its XP signature). Checks manifests and disk first; afterwards records the run in the XP folder and publishes its
    checkpoints to ``<outputs>/Checkpoints Small/<sig>/`` (``outputs=None``: not published).
    Every ``codec_check_every`` epochs (default ``$CODEC_CHECK_EVERY`` or 10; 0 = off) a codec quality
    check of ``codec_check_samples`` validation segments goes to ``<outputs>/codec_quality_check/<sig>/``.
    """
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    counts = check_manifests(dataset, workspace)
    check_disk(workspace)
    args = presets.dora_run_args(spec, "compression", dset=dataset, epochs=epochs, batch_size=batch_size,
                                 segment_seconds=segment_seconds, gpus=gpus, overrides=overrides)
    logger.info("codec on %s (%d train / %d valid files), preset %s", dataset, counts["train"], counts["valid"],
                preset)
    env = {**(env or {}), **({"MUSICPIPE_OUTPUTS": str(outputs)} if outputs is not None else {})}
    if codec_check_every is not None:
        env["CODEC_CHECK_EVERY"] = str(int(codec_check_every))
    if codec_check_samples is not None:
        env["CODEC_CHECK_SAMPLES"] = str(int(codec_check_samples))
    run = _launch(args, workspace, echo, env, rerun)
    return _finish(run, workspace, outputs, kind="compression", preset=preset, dataset=dataset, args=args)


def train_lm(preset: str, codec: str, dataset: tp.Optional[str] = None,
             workspace: tp.Optional[tp.Union[str, Path]] = None, *, conditioning: str = "none",
             epochs: tp.Optional[int] = None, batch_size: tp.Optional[int] = None,
             segment_seconds: tp.Optional[float] = None, gpus: tp.Optional[int] = None,
             overrides: tp.Sequence[str] = (), echo: bool = True,
             outputs: tp.Optional[Path] = paths.OUTPUTS_DIR, rerun: bool = False,
             env: tp.Optional[tp.Mapping[str, str]] = None) -> dora.DoraRun:
    """Train (or resume) a MusicGen LM on the codec XP ``codec`` (n_q and card taken from it).

    ``codec="latest"`` takes the most recent codec trained on ``dataset``. Refuses a codec whose
    sample rate differs from the dataset's. ``env`` and re-runs as in :func:`train_codec`.
    """
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    check_manifests(dataset, workspace)
    check_disk(workspace)
    if codec == "latest":
        codec = latest_codec(dataset, workspace)
        logger.info("latest codec for %s: %s", dataset, codec)
    info = dora.codec_info(codec, workspace)
    env = dict(env or {})
    if conditioning == "text":
        t5 = presets.parse_overrides(overrides).get("conditioners.description.t5.name", T5_DEFAULT)
        source = check_t5(t5)
        env["HF_HUB_OFFLINE"] = "1" if source == "cache" else "0"
        logger.info("T5 %s: loading from the %s", t5, "local cache" if source == "cache" else "Hugging Face hub")
    rates = {r.sample_rate for r in manifests.read_manifest(paths.dataset_dir(dataset, workspace) / "egs" / "train")}
    if rates != {info.sample_rate}:
        raise TrainingInputError(f"codec {codec} works at {info.sample_rate} Hz but dataset {dataset!r} is at "
                                 f"{sorted(rates)} Hz: prepare the data at the codec's rate or train a codec on it")
    args = presets.dora_run_args(spec, "musicgen", dset=dataset, conditioning=conditioning, codec=info,
                                 epochs=epochs, batch_size=batch_size, segment_seconds=segment_seconds,
                                 gpus=gpus, overrides=overrides)
    logger.info("LM on %s with codec %s (n_q=%d, card=%d), conditioning %s", dataset, codec, info.n_q, info.card,
                conditioning)
    run = _launch(args, workspace, echo, env, rerun)
    return _finish(run, workspace, outputs, kind="musicgen", preset=preset, dataset=dataset, codec=codec,
                   conditioning=conditioning, args=args)

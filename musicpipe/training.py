"""Training steps: the codec (compression solver) and the language model (musicgen solver).

Each builds the ``dora run`` arguments from a preset (pure), checks the inputs it can check
cheaply, then launches. Re-running the same call resumes the same XP.

Example:
    >>> from musicpipe import training
    >>> codec = training.train_codec("demo_cpu", dataset="synthetic_demo")           # doctest: +SKIP
    >>> lm = training.train_lm("demo_cpu", codec=codec.sig, conditioning="genre")    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

from musicpipe import dora, manifests, paths, presets

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
        manifest = egs / "data.jsonl"
        if not manifest.exists():
            raise TrainingInputError(f"{manifest}: missing; prepare the dataset {dataset!r} first "
                                     f"(`musicpipe prepare ...`)")
        try:
            records = manifests.read_manifest(egs)
        except (ValueError, TypeError) as exc:
            raise TrainingInputError(f"{manifest}: not a valid AudioCraft manifest ({exc})") from None
        if not records:
            raise TrainingInputError(f"{manifest}: lists no audio file")
        counts[split] = len(records)
    return counts


def train_codec(preset: str, dataset: tp.Optional[str] = None,
                workspace: tp.Optional[tp.Union[str, Path]] = None, *, epochs: tp.Optional[int] = None,
                batch_size: tp.Optional[int] = None, segment_seconds: tp.Optional[float] = None,
                gpus: tp.Optional[int] = None, overrides: tp.Sequence[str] = (), echo: bool = True) -> dora.DoraRun:
    """Train (or resume) an EnCodec codec with ``dora run`` on the compression solver."""
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    counts = check_manifests(dataset, workspace)
    args = presets.dora_run_args(spec, "compression", dset=dataset, epochs=epochs, batch_size=batch_size,
                                 segment_seconds=segment_seconds, gpus=gpus, overrides=overrides)
    logger.info("codec on %s (%d train / %d valid files), preset %s", dataset, counts["train"], counts["valid"],
                preset)
    return dora.run(args, workspace=workspace, echo=echo)


def train_lm(preset: str, codec: str, dataset: tp.Optional[str] = None,
             workspace: tp.Optional[tp.Union[str, Path]] = None, *, conditioning: str = "none",
             epochs: tp.Optional[int] = None, batch_size: tp.Optional[int] = None,
             segment_seconds: tp.Optional[float] = None, gpus: tp.Optional[int] = None,
             overrides: tp.Sequence[str] = (), echo: bool = True) -> dora.DoraRun:
    """Train (or resume) a MusicGen LM on the codec XP ``codec`` (n_q and card taken from it)."""
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    check_manifests(dataset, workspace)
    info = dora.codec_info(codec, workspace)
    args = presets.dora_run_args(spec, "musicgen", dset=dataset, conditioning=conditioning, codec=info,
                                 epochs=epochs, batch_size=batch_size, segment_seconds=segment_seconds,
                                 gpus=gpus, overrides=overrides)
    logger.info("LM on %s with codec %s (n_q=%d, card=%d), conditioning %s", dataset, codec, info.n_q, info.card,
                conditioning)
    return dora.run(args, workspace=workspace, echo=echo)

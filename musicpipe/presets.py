"""Presets (``model_config/presets/<name>.yaml``) and the pure function that turns one into ``dora run`` arguments.

A preset is data: for each solver (``compression``, ``musicgen``) the AudioCraft solver config it
starts from and a flat mapping of Hydra overrides. Building the command is pure (config in,
argument list out) and tested without a GPU; launching is :mod:`musicpipe.dora`.

Every override is spelled out on the command line (rather than hidden in a Hydra preset group) so
that Dora's XP signature changes whenever what is trained changes.

Example:
    >>> from musicpipe.presets import load_preset, dora_run_args
    >>> args = dora_run_args(load_preset("demo_cpu"), "compression", dset="synthetic_demo")
    >>> args[:3]
    ['run', 'solver=compression/encodec_musicgen_32khz', 'dset=audio/synthetic_demo']
"""

from __future__ import annotations

import dataclasses
import typing as tp
from pathlib import Path

from musicpipe import paths

SOLVERS = ("compression", "musicgen")
CONDITIONERS = {"none": "none", "genre": "genre_lut", "text": "text2music"}


class PresetError(ValueError):
    """A preset file is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class SolverPreset:
    solver: str
    overrides: tp.Dict[str, tp.Any]


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str
    gpus: int
    compression: tp.Optional[SolverPreset]  # None: a fine-tuning preset, which trains no codec
    musicgen: SolverPreset
    token_cache: bool = False  # the LM trains from the dataset's token store (musicpipe.token_cache)

    def for_solver(self, kind: str) -> SolverPreset:
        if kind not in SOLVERS:
            raise PresetError(f"unknown solver kind {kind!r}: expected one of {', '.join(SOLVERS)}")
        spec = getattr(self, kind)
        if spec is None:
            raise PresetError(f"preset {self.name!r} has no {kind} solver (a fine-tuning preset trains the LM only)")
        return spec


@dataclasses.dataclass(frozen=True)
class CodecInfo:
    """What the LM needs from a codec: its name (an XP signature, or a release) and token layout.

    ``checkpoint`` is the ``compression_model_checkpoint`` value (default ``//sig/<sig>``, a codec XP of the
    workspace; ``//pretrained/<id or folder>`` for a released codec).
    """

    sig: str
    n_q: int
    card: int
    sample_rate: int = 32000
    channels: int = 1
    checkpoint: tp.Optional[str] = None
    frame_rate: tp.Optional[float] = None

    @property
    def compression_checkpoint(self) -> str:
        return self.checkpoint or f"//sig/{self.sig}"


@dataclasses.dataclass(frozen=True)
class FineTune:
    """Fine-tuning a released LM: where its weights come from and the architecture stored with them.

    ``continue_from``: ``//pretrained/<id or folder>``; ``conditioner``: the conditioner group holding the
    release's own conditioning; ``architecture``: ``++key=value`` overrides of the stored LM architecture.
    """

    continue_from: str
    conditioner: str
    architecture: tp.Tuple[str, ...] = ()


def available_presets(presets_dir: Path = paths.PRESETS_DIR) -> tp.List[str]:
    return sorted(p.stem for p in presets_dir.glob("*.yaml"))


def load_preset(name: str, presets_dir: Path = paths.PRESETS_DIR) -> Preset:
    """Read and validate ``<presets_dir>/<name>.yaml``."""
    import yaml

    path = presets_dir / f"{name}.yaml"
    if not path.exists():
        raise PresetError(f"no preset {name!r} ({path} missing); available: {', '.join(available_presets(presets_dir))}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping at the top level")
    try:
        solvers: tp.Dict[str, tp.Optional[SolverPreset]] = {}
        for kind in SOLVERS:
            if kind == "compression" and data.get(kind) is None and "compression" in data:
                solvers[kind] = None  # `compression: null`: fine-tuning presets train no codec
                continue
            block = data[kind]
            overrides = block.get("overrides") or {}
            if not isinstance(overrides, dict):
                raise PresetError(f"{path}: {kind}.overrides must be a mapping of key: value")
            solvers[kind] = SolverPreset(solver=str(block["solver"]), overrides=dict(overrides))
        return Preset(name=name, description=str(data.get("description", "")), dataset=str(data["dataset"]),
                      gpus=int(data.get("gpus", 1)), token_cache=bool(data.get("token_cache", False)), **solvers)
    except KeyError as exc:
        raise PresetError(f"{path}: missing key {exc}") from None


def format_value(value: tp.Any) -> str:
    """A Python value as Hydra's override grammar spells it.

    >>> [format_value(v) for v in (True, None, 1e-3, [1, 2], "a b", "/ws/é.th")]
    ['true', 'null', '0.001', '[1,2]', "'a b'", "'/ws/é.th'"]
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    text = str(value)
    if text == "" or not text.isascii() or any(c in text for c in " ,[]{}()=\"'"):  # Hydra's lexer: ASCII only
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def parse_overrides(items: tp.Iterable[str]) -> tp.Dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values kept as the user spelled them)."""
    out: tp.Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PresetError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = value
    return out


def dora_run_args(preset: Preset, kind: str, *, dset: tp.Optional[str] = None,
                  conditioning: tp.Optional[str] = None, codec: tp.Optional[CodecInfo] = None,
                  epochs: tp.Optional[int] = None, batch_size: tp.Optional[int] = None,
                  segment_seconds: tp.Optional[float] = None, gpus: tp.Optional[int] = None,
                  overrides: tp.Iterable[str] = (), finetune: tp.Optional[FineTune] = None) -> tp.List[str]:
    """The argument list after ``dora`` (``["run", ...]``) for one solver of a preset.

    Args:
        preset: a loaded :class:`Preset`.
        kind: ``"compression"`` or ``"musicgen"``.
        dset: dataset name (``dset=audio/<dset>``); default the preset's.
        conditioning: musicgen only: ``none`` | ``genre`` | ``text`` (default ``none``).
        codec: musicgen only, required: the codec to train on; sets ``compression_model_checkpoint``,
            ``transformer_lm.n_q`` and ``transformer_lm.card`` so they cannot mismatch.
        epochs, batch_size, segment_seconds: shortcuts for ``optim.epochs``, ``dataset.batch_size``,
            ``dataset.segment_duration``.
        gpus: more than 1 adds ``-d --ddp_workers N`` (one process per GPU); default the preset's.
        overrides: free ``key=value`` Hydra overrides, applied last (they replace preset values).
        finetune: musicgen only: start from a released LM (``continue_from``) with its own architecture and
            conditioning; the preset's model scale is dropped, its optimizer/schedule/data settings kept.

    Example (fine-tuning):
        >>> ft = FineTune("//pretrained/facebook/musicgen-small", "release_0a1b2c3d", ("++transformer_lm.dim=1024",))
        >>> args = dora_run_args(load_preset("demo_cpu"), "musicgen", finetune=ft,
        ...                      codec=CodecInfo("facebook/encodec_32khz", 4, 2048,
        ...                                      checkpoint="//pretrained/facebook/encodec_32khz"))
        >>> [a for a in args if a.startswith(("conditioner", "continue_from", "++", "compression", "model/"))]
        ['conditioner=release_0a1b2c3d', 'compression_model_checkpoint=//pretrained/facebook/encodec_32khz', 'continue_from=//pretrained/facebook/musicgen-small', '++transformer_lm.dim=1024']
    """
    spec = preset.for_solver(kind)
    values: tp.Dict[str, str] = {"solver": spec.solver, "dset": f"audio/{dset or preset.dataset}"}
    if kind == "musicgen":
        cond = conditioning or "none"
        if cond not in CONDITIONERS:
            raise PresetError(f"unknown conditioning {cond!r}: expected one of {', '.join(CONDITIONERS)}")
        values["conditioner"] = CONDITIONERS[cond] if finetune is None else finetune.conditioner
        if codec is None:
            raise PresetError("musicgen training needs a codec (its XP signature, n_q and card)")
    elif conditioning not in (None, "none"):
        raise PresetError("conditioning applies to musicgen only")
    if finetune is not None and kind != "musicgen":
        raise PresetError("fine-tuning applies to musicgen only")
    for key, value in spec.overrides.items():
        if finetune is not None and (key.startswith("model/lm/model_scale") or key.startswith("transformer_lm.")):
            continue  # the released model's architecture wins
        values[key] = format_value(value)
    if codec is not None:
        if kind != "musicgen":
            raise PresetError("a codec applies to musicgen only")
        values["compression_model_checkpoint"] = format_value(codec.compression_checkpoint)
        values["transformer_lm.n_q"] = str(codec.n_q)
        values["transformer_lm.card"] = str(codec.card)
    if finetune is not None:
        values["continue_from"] = format_value(finetune.continue_from)
        for item in finetune.architecture:
            key, _, value = item.partition("=")
            if key.lstrip("+") not in ("transformer_lm.n_q", "transformer_lm.card"):  # set from the codec above
                values[key] = value
    if epochs is not None:
        values["optim.epochs"] = str(int(epochs))
    if batch_size is not None:
        values["dataset.batch_size"] = str(int(batch_size))
    if segment_seconds is not None:
        values["dataset.segment_duration"] = format_value(float(segment_seconds))
    user = parse_overrides(overrides)
    if kind == "musicgen" and codec is not None:
        for locked in ("transformer_lm.n_q", "transformer_lm.card"):
            if locked in user and user[locked] != values[locked]:
                raise PresetError(f"{locked}={user[locked]} contradicts the codec {codec.sig} "
                                  f"({locked.split('.')[1]}={values[locked]})")
    values.update(user)
    n_gpus = preset.gpus if gpus is None else int(gpus)
    head = ["run"] + (["-d", "--ddp_workers", str(n_gpus)] if n_gpus > 1 else [])
    return head + [f"{k}={v}" for k, v in values.items()]


def hydra_overrides(args: tp.Sequence[str]) -> tp.List[str]:
    """The Hydra overrides in a :func:`dora_run_args` list (drops ``run`` and Dora's own flags)."""
    out: tp.List[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--ddp_workers":
            skip = True
            continue
        if arg in ("run", "-d"):
            continue
        out.append(arg)
    return out

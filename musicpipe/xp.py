"""One experiment (XP), wherever it is named from: the contract between training and everything after it.

Every module that reads what a training run left behind (checks, samplers, reports, export, generation,
the notebooks) goes through :class:`XP`. An XP is resolved from:

- a Dora signature (8 hex digits) of the workspace: ``<ws>/experiments/audiocraft/xps/<sig>``;
- an XP folder, or a checkpoint file inside one (``checkpoint.th``, ``checkpoint_<epoch>.th``, or the
  ``outputs/Checkpoints Small/<sig>/checkpoint.th`` link, which points into the XP folder);
- an export / release folder in AudioCraft's layout (``state_dict.bin`` and/or
  ``compression_state_dict.bin``, what ``musicpipe export`` writes);
- ``latest``: **the XP of the asked kind (codec or LM), on the asked dataset when one is given, whose
  ``checkpoint.th`` was written last.** One rule, used by every command that accepts ``latest``.

The kind has one rule too: the solver in the XP's config (``compression`` is a codec, ``musicgen`` and
its siblings are language models), else the ``kind`` musicpipe recorded in ``musicpipe.json``.

Example:
    >>> import tempfile, json, pathlib
    >>> ws = pathlib.Path(tempfile.mkdtemp())
    >>> folder = ws / "experiments" / "audiocraft" / "xps" / "0a1b2c3d"
    >>> (folder / ".hydra").mkdir(parents=True)
    >>> _ = (folder / ".hydra" / "config.yaml").write_text("solver: compression\\nsample_rate: 32000\\n")
    >>> _ = (folder / "history.json").write_text(json.dumps([{"train": {"sisnr": 3.0}}]))
    >>> _ = (folder / "checkpoint.th").write_bytes(b"")
    >>> xp = XP.resolve("0a1b2c3d", workspace=ws)
    >>> xp.sig, xp.kind, xp.solver, len(xp.history)
    ('0a1b2c3d', 'codec', 'compression', 1)
    >>> XP.resolve(folder / "checkpoint.th").sig == XP.latest("codec", workspace=ws).sig == "0a1b2c3d"
    True
    >>> kind_of_solver("musicgen"), kind_of_solver("compression"), kind_of_solver("diffusion")
    ('lm', 'codec', 'generic')
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import typing as tp
from pathlib import Path

from musicpipe import atomic, paths, presets

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]

RECORD = "musicpipe.json"  # what musicpipe launched in an XP folder (preset, dataset, codec, conditioning)
FAD_FILE = "fad.json"  # per-epoch FAD of an LM (musicpipe.evaluation), keyed by epoch
CONFIG = Path(".hydra") / "config.yaml"  # the config Dora resolved at launch
HISTORY = "history.json"  # one dict per finished epoch, keyed by stage
CODEC_FILE = "compression_state_dict.bin"  # AudioCraft's release layout
LM_FILE = "state_dict.bin"
LM_SOLVERS = ("musicgen", "audiogen", "magnet", "audio_magnet")
CODEC_SOLVERS = ("compression",)
KINDS = ("codec", "lm")
_KIND_WORDS = {"codec": "a codec (compression)", "lm": "an LM (musicgen)"}
_EPOCH_CKPT = re.compile(r"^checkpoint_(\d+)\.th$")


class XPError(ValueError):
    """An XP cannot be resolved or read; the message names the path or signature and why."""


def kind_of_solver(solver: tp.Optional[str]) -> str:
    """``codec`` for AudioCraft's compression solver, ``lm`` for musicgen and its siblings, else ``generic``."""
    if solver in CODEC_SOLVERS:
        return "codec"
    if solver in LM_SOLVERS:
        return "lm"
    return "generic"


def _kind_arg(kind: tp.Optional[str]) -> tp.Optional[str]:
    aliases = {"compression": "codec", "musicgen": "lm", "codec": "codec", "lm": "lm"}
    if kind is None:
        return None
    if kind not in aliases:
        raise XPError(f"unknown XP kind {kind!r}: expected codec or lm")
    return aliases[kind]


def epoch_checkpoints(names: tp.Iterable[PathLike]) -> tp.Dict[int, str]:
    """``{epoch: name}`` of AudioCraft's per-epoch checkpoints (``checkpoint_<epoch>.th``) among ``names``.

    The latest checkpoint (``checkpoint.th``), named ones (``checkpoint_best.th``), FSDP shards
    (``checkpoint_3.th.1``) and temp files are not per-epoch checkpoints. Sorted by epoch.

    Example:
        >>> epoch_checkpoints(["a/checkpoint_10.th", "checkpoint_2.th", "checkpoint_best.th", "checkpoint_2.th.tmp"])
        {2: 'checkpoint_2.th', 10: 'checkpoint_10.th'}
    """
    found = {}
    for name in names:
        match = _EPOCH_CKPT.match(Path(name).name)
        if match:
            found[int(match.group(1))] = Path(name).name
    return dict(sorted(found.items()))


def _workspace_of(folder: Path) -> tp.Optional[Path]:
    """``<ws>`` for an XP folder ``<ws>/experiments/audiocraft/xps/<sig>``, else None."""
    parents = folder.parents
    if len(parents) >= 4 and parents[0].name == "xps" and parents[1].name == "audiocraft" \
            and parents[2].name == "experiments":
        return parents[3]
    return None


def is_export(folder: PathLike) -> bool:
    """A folder in AudioCraft's release layout (``state_dict.bin`` and/or ``compression_state_dict.bin``)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / LM_FILE).is_file() or (folder / CODEC_FILE).is_file())


@dataclasses.dataclass(frozen=True)
class XP:
    """A training run's folder (``source="xp"``) or an export/release folder (``source="export"``)."""

    folder: Path
    sig: tp.Optional[str] = None  # the Dora signature; None for an export folder
    workspace: tp.Optional[Path] = None  # the workspace the XP belongs to (None for an export)
    source: str = "xp"

    # --------------------------------------------------------------------------------------------- resolving

    @classmethod
    def from_sig(cls, sig: str, workspace: tp.Optional[PathLike] = None) -> "XP":
        """The XP ``sig`` of ``workspace`` (the folder must exist)."""
        ws = paths.workspace_root(workspace)
        folder = paths.xp_dir(sig, ws)
        if not folder.is_dir():
            raise XPError(f"{folder}: no such XP in workspace {ws} (is the signature or --workspace right?)")
        return cls(folder=folder, sig=sig, workspace=ws)

    @classmethod
    def resolve(cls, ref: tp.Union[str, PathLike, "XP"], workspace: tp.Optional[PathLike] = None, *,
                kind: tp.Optional[str] = None, dataset: tp.Optional[str] = None) -> "XP":
        """An XP from a signature, an XP folder, a checkpoint in one, an export folder or ``latest``.

        Args:
            ref: what the user typed (see the module docstring); an :class:`XP` is returned as is.
            workspace: the workspace for signatures and ``latest`` (default: ``$MUSICPIPE_WORKSPACE``...);
                for a folder, the workspace it sits in unless given.
            kind: ``codec`` or ``lm`` (``compression``/``musicgen`` accepted): required for ``latest``,
                and checked for every other form (XPError when the XP is of another kind).
            dataset: with ``latest``, only XPs trained on this dataset.
        """
        kind = _kind_arg(kind)
        if isinstance(ref, XP):
            xp = ref
        elif ref is None or str(ref) in ("", "latest"):
            if kind is None:
                raise XPError("`latest` needs a kind (codec or lm)")
            return cls.latest(kind, dataset=dataset, workspace=workspace)
        else:
            text = str(ref)
            given = Path(text).expanduser()
            if paths.SIG_RE.match(text) and not given.exists():
                xp = cls.from_sig(text, workspace)
            elif not given.exists():
                raise XPError(f"{text}: no such XP folder or checkpoint (nor an export folder, nor an "
                              "8-hex-digit XP signature)")
            elif given.is_dir() and is_export(given) and not (given / "checkpoint.th").exists():
                xp = cls(folder=given.resolve(), source="export")
            else:
                if given.is_dir() and (given / "checkpoint.th").exists():
                    given = given / "checkpoint.th"  # e.g. `Checkpoints Small/<sig>/`, whose link leads to the XP
                folder = given.resolve().parent if given.resolve().is_file() else given.resolve()
                if not paths.SIG_RE.match(folder.name):
                    raise XPError(f"{text}: {folder} is neither an XP folder (named by an 8-hex-digit signature) "
                                  f"nor an export folder ({LM_FILE} / {CODEC_FILE})")
                ws = paths.workspace_root(workspace) if workspace is not None else \
                    (_workspace_of(folder) or paths.workspace_root(None))
                xp = cls(folder=folder, sig=folder.name, workspace=ws)
        if kind is not None and xp.kind != kind:
            if not xp.is_export and xp.solver is None:
                xp.config  # raises XPError with the reason (missing or unreadable config)
            raise XPError(f"{xp.name}: solver {xp.solver!r}, not {_KIND_WORDS[kind]} XP"
                          + ("; it is a codec: give an LM trained on it" if kind == "lm" and xp.kind == "codec"
                             else ""))
        return xp

    @classmethod
    def all(cls, workspace: tp.Optional[PathLike] = None) -> tp.List["XP"]:
        """Every XP folder of the workspace, by signature."""
        ws = paths.workspace_root(workspace)
        root = paths.dora_dir(ws) / "xps"
        if not root.is_dir():
            return []
        return [cls(folder=f, sig=f.name, workspace=ws) for f in sorted(root.iterdir())
                if f.is_dir() and paths.SIG_RE.match(f.name)]

    @classmethod
    def latest(cls, kind: str, dataset: tp.Optional[str] = None, workspace: tp.Optional[PathLike] = None) -> "XP":
        """The XP of ``kind`` (on ``dataset`` when given) whose ``checkpoint.th`` was written last."""
        kind = _kind_arg(kind)
        found = []
        for xp in cls.all(workspace):
            ckpt = xp.checkpoint
            if ckpt.exists() and xp.kind == kind and (dataset is None or xp.dataset == dataset):
                found.append((ckpt.stat().st_mtime, xp.sig, xp))
        if not found:
            what = "codec" if kind == "codec" else "language model"
            on = f" for dataset {dataset!r}" if dataset else ""
            cmd = "train-codec" if kind == "codec" else "train-lm"
            raise XPError(f"no {what} XP{on} with a checkpoint under {paths.dora_dir(workspace) / 'xps'}: train one "
                          f"first (`musicpipe {cmd}`) or name one (a signature, an XP folder or an export folder)")
        return max(found, key=lambda t: (t[0], t[1]))[2]

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def name(self) -> str:
        """The signature, or the export folder's path."""
        return self.sig or str(self.folder)

    @property
    def is_export(self) -> bool:
        return self.source == "export"

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.th`` (the last epoch's state, what resuming reads); an export's weights file."""
        if self.is_export:
            return self.folder / (LM_FILE if (self.folder / LM_FILE).is_file() else CODEC_FILE)
        return self.folder / "checkpoint.th"

    @property
    def checkpoints(self) -> tp.Dict[int, Path]:
        """``{epoch: path}`` of the per-epoch checkpoints (``checkpoint_<epoch>.th``), sorted by epoch."""
        if self.is_export or not self.folder.is_dir():
            return {}
        return {e: self.folder / n for e, n in epoch_checkpoints(p.name for p in self.folder.iterdir()).items()}

    @functools.cached_property
    def config(self) -> tp.Dict[str, tp.Any]:
        """The resolved-at-launch config (``.hydra/config.yaml``; for an export, the stored ``xp.cfg``)."""
        import yaml

        if self.is_export:
            return self._export_config(self.checkpoint)
        path = self.folder / CONFIG
        if not path.is_file():
            raise XPError(f"{path} is missing: is {self.folder} a Dora XP that has started?")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise XPError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise XPError(f"{path} is malformed: not a mapping")
        return data

    @staticmethod
    def _export_config(path: Path) -> tp.Dict[str, tp.Any]:
        import torch
        import yaml

        try:
            pkg = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated / foreign file: the finding
            raise XPError(f"{path}: not a readable AudioCraft package ({type(exc).__name__}: {exc})") from None
        cfg = pkg.get("xp.cfg") if isinstance(pkg, dict) else None
        if isinstance(cfg, str):
            cfg = yaml.safe_load(cfg)
        if not isinstance(cfg, dict):
            raise XPError(f"{path}: no stored config (xp.cfg)")
        return cfg

    def try_config(self) -> tp.Optional[tp.Dict[str, tp.Any]]:
        """:attr:`config`, or None when it is missing or unreadable."""
        try:
            return self.config
        except XPError:
            return None

    @functools.cached_property
    def record(self) -> tp.Dict[str, tp.Any]:
        """``musicpipe.json``: what musicpipe launched here ({} when absent or unreadable)."""
        try:
            data = json.loads((self.folder / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def history(self) -> tp.List[tp.Dict[str, tp.Any]]:
        """``history.json``: one dict per finished epoch keyed by stage ([] before the first epoch)."""
        path = self.folder / HISTORY
        if self.is_export or not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise XPError(f"{path} is malformed: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise XPError(f"{path} is malformed: not a list of epochs")
        return data

    @property
    def epochs_done(self) -> int:
        """Finished epochs (0 when the history is missing or unreadable)."""
        try:
            return len(self.history)
        except XPError:
            return 0

    @property
    def solver(self) -> tp.Optional[str]:
        """The config's ``solver`` (``compression``, ``musicgen``...), else the recorded kind's solver."""
        if self.is_export:  # no need to open a GB-sized package to tell
            return "musicgen" if (self.folder / LM_FILE).is_file() else "compression"
        cfg = self.try_config()
        if cfg is not None and cfg.get("solver"):
            return str(cfg["solver"])
        recorded = self.record.get("kind")
        return str(recorded) if recorded else None

    @property
    def kind(self) -> str:
        """``codec``, ``lm`` or ``generic``: the one rule (see the module docstring)."""
        return kind_of_solver(self.solver)

    @property
    def dataset(self) -> tp.Optional[str]:
        """The dataset it trained on: musicpipe's record, else the config's ``datasource`` paths."""
        if self.record.get("dataset"):
            return str(self.record["dataset"])
        source = ((self.try_config() if not self.is_export else None) or {}).get("datasource") or {}
        for split in ("train", "valid"):
            match = re.search(rf"/data/([^/]+)/egs/{split}/?$", str(source.get(split) or ""))
            if match:
                return match.group(1)
        return None

    def egs_dir(self, split: str = "valid", dataset: tp.Optional[str] = None) -> tp.Tuple[tp.Optional[str], Path]:
        """``(dataset name, <ws>/data/<dataset>/egs/<split>)``: ``dataset`` if given, else the XP's own.

        An XP trained on a dset config outside the workspace's layout gives ``(None, its datasource path)``.
        """
        ws = self.workspace or paths.workspace_root(None)
        dataset = dataset or self.dataset
        if dataset:
            return dataset, paths.dataset_dir(dataset, ws) / "egs" / split
        cfg = self.try_config() if not self.is_export else None
        if cfg is not None:
            from omegaconf import OmegaConf

            raw = OmegaConf.select(OmegaConf.create(cfg), f"datasource.{split}", throw_on_resolution_failure=False)
            if raw:
                return None, Path(str(raw))
        raise XPError(f"{self.folder}: no dataset recorded ({RECORD}) nor datasource.{split} in {CONFIG}; "
                      "pass the dataset")

    @property
    def conditioners(self) -> tp.List[str]:
        """The names of the LM's conditioners ([] for an unconditional LM or a codec)."""
        cfg = self.try_config() or {}
        return sorted((cfg.get("conditioners") or {}).keys())

    @property
    def codec_ref(self) -> tp.Optional[str]:
        """An LM's ``compression_model_checkpoint`` as configured (``//sig/<sig>``, a path, ``//pretrained/..``)."""
        cfg = self.try_config() or {}
        ref = cfg.get("compression_model_checkpoint")
        return str(ref) if ref else None

    @property
    def codec(self) -> "XP":
        """The codec an LM was trained on (an XP of the same workspace, or the export folder itself)."""
        if self.kind != "lm":
            raise XPError(f"{self.name} is a {self.kind} XP: only a language model has a codec")
        if self.is_export:
            if not (self.folder / CODEC_FILE).is_file():
                raise XPError(f"{self.folder / CODEC_FILE} is missing: the export has no codec")
            return XP(folder=self.folder, source="export")
        ref = self.codec_ref or ""
        if ref.startswith("//sig/"):
            return XP.from_sig(ref[len("//sig/"):], self.workspace)
        if ref.startswith("//pretrained/") and is_export(ref[len("//pretrained/"):]):
            return XP(folder=Path(ref[len("//pretrained/"):]), source="export")  # a released codec's folder
        if ref.startswith("//pretrained/"):
            raise XPError(f"LM XP {self.sig} was trained on the released codec {ref[len('//pretrained/'):]} "
                          "(a Hugging Face id), not on a codec of this workspace")
        if ref and Path(ref).exists():
            return XP.resolve(ref, self.workspace)
        raise XPError(f"LM XP {self.sig} was not trained on a codec XP of this workspace ({ref!r})")

    def require_checkpoint(self) -> Path:
        """:attr:`checkpoint`, or XPError saying that no epoch has finished yet."""
        if not self.checkpoint.exists():
            raise XPError(f"{self.checkpoint} is missing: {self.name} has not saved a checkpoint yet")
        return self.checkpoint

    def codec_info(self) -> tp.Any:
        """``presets.CodecInfo`` (n_q, codebook size, sample rate, channels) of a codec XP with a checkpoint."""
        if self.kind != "codec":
            raise XPError(f"XP {self.name} is a {self.solver!r} run, not a compression (codec) run")
        self.require_checkpoint()
        cfg = self.config
        try:
            return presets.CodecInfo(sig=self.name, n_q=int(cfg["rvq"]["n_q"]), card=int(cfg["rvq"]["bins"]),
                                     sample_rate=int(cfg["sample_rate"]), channels=int(cfg["channels"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise XPError(f"codec {self.name}: its config lacks rvq.n_q / rvq.bins / sample_rate / channels "
                          f"({type(exc).__name__}: {exc})") from None

    def finished(self, epochs: tp.Optional[int]) -> bool:
        """The history holds ``epochs`` epochs and ``checkpoint.th`` exists."""
        return epochs is not None and self.checkpoint.exists() and self.epochs_done >= epochs

    @property
    def fad(self) -> tp.Dict[int, tp.Dict[str, tp.Any]]:
        """Per-epoch FAD results (``fad.json``, written by :mod:`musicpipe.evaluation`), by epoch; {} when none."""
        try:
            data = json.loads((self.folder / FAD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {int(k): v for k, v in data.items() if str(k).isdigit() and isinstance(v, dict)} \
            if isinstance(data, dict) else {}

    def write_record(self, **info: tp.Any) -> Path:
        """Write ``musicpipe.json`` (signature first, then ``info``) atomically."""
        path = atomic.write_text(self.folder / RECORD,
                                           json.dumps({"sig": self.sig, **info}, indent=1) + "\n")
        self.__dict__.pop("record", None)
        return path

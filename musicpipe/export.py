"""Sharing trained models: the seed's ``outputs/Checkpoints Small/<sig>/`` and self-contained export folders.

An export folder holds AudioCraft's release format: ``compression_state_dict.bin`` (the codec) and
``state_dict.bin`` (the LM), each ``{'best_state', 'xp.cfg', 'version', 'exported'}``, plus
``musicpipe.json``. AudioCraft 1.3.0's own loaders (``audiocraft.models.loaders``) open it; the
config of an unconditional LM is saved with ``conditioners: {}`` instead of ``null`` so that they do
(AudioCraft's builder iterates over it). :func:`load_exported` builds a ``MusicGen`` from it.

Example:
    >>> from musicpipe import export
    >>> folder = export.export_model("08e4d3f1", "/tmp/my_model")      # doctest: +SKIP
    >>> model = export.load_exported(folder)                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import typing as tp
from pathlib import Path

from musicpipe import atomic, audiocraft_env, dora, paths

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR_NAME = "Checkpoints Small"  # the seed's folder name, space included
CODEC_FILE = "compression_state_dict.bin"
LM_FILE = "state_dict.bin"


class ExportError(ValueError):
    """An XP cannot be exported or an export folder cannot be loaded (names the file and why)."""


def _export_package(checkpoint: Path, kind: str) -> tp.Dict[str, tp.Any]:
    """AudioCraft's export package for a training checkpoint, loadable by its own loaders."""
    import torch
    from audiocraft import __version__
    from omegaconf import OmegaConf

    audiocraft_env.enable_checkpoint_loading()
    pkg = torch.load(checkpoint, map_location="cpu")
    if kind == "musicgen" and pkg.get("fsdp_best_state"):
        best = pkg["fsdp_best_state"]["model"]
    else:
        if not pkg.get("best_state"):
            raise ExportError(f"{checkpoint}: no best_state (has the run finished an epoch?)")
        best = pkg["best_state"]["model"]
    cfg = OmegaConf.create(OmegaConf.to_container(pkg["xp.cfg"], resolve=False))  # as AudioCraft exports
    if kind == "musicgen" and cfg.get("conditioners") is None:
        cfg.conditioners = {}  # AudioCraft's builder cannot take null
    return {"best_state": best, "xp.cfg": OmegaConf.to_yaml(cfg), "version": __version__, "exported": True}


def _save_atomic(obj: tp.Any, target: Path) -> Path:
    import torch

    with atomic.atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return target


def _kind(sig: str, workspace: tp.Optional[tp.Union[str, Path]]) -> tp.Tuple[str, tp.Dict[str, tp.Any]]:
    cfg = dora.xp_config(paths.xp_dir(sig, workspace))
    kind = cfg.get("solver")
    if kind not in ("compression", "musicgen"):
        raise ExportError(f"XP {sig} is a {kind!r} run; only compression and musicgen XPs are exported")
    return kind, cfg


def codec_sig_of(lm_sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> str:
    """The codec XP an LM XP was trained on (its ``compression_model_checkpoint=//sig/<sig>``)."""
    _, cfg = _kind(lm_sig, workspace)
    ref = str(cfg.get("compression_model_checkpoint") or "")
    if not ref.startswith("//sig/"):
        raise ExportError(f"LM XP {lm_sig} was not trained on a codec XP of this workspace ({ref!r})")
    return ref[len("//sig/"):]


def export_model(lm_sig: str, out_dir: tp.Union[str, Path], workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Export LM XP ``lm_sig`` and its codec into ``out_dir`` (self-contained, for another machine)."""
    kind, cfg = _kind(lm_sig, workspace)
    if kind != "musicgen":
        raise ExportError(f"XP {lm_sig} is a codec; export the LM trained on it (it carries the codec along)")
    codec_sig = codec_sig_of(lm_sig, workspace)
    out = Path(out_dir)
    _save_atomic(_export_package(paths.xp_dir(codec_sig, workspace) / "checkpoint.th", "compression"), out / CODEC_FILE)
    _save_atomic(_export_package(paths.xp_dir(lm_sig, workspace) / "checkpoint.th", "musicgen"), out / LM_FILE)
    info = {"lm_xp": lm_sig, "codec_xp": codec_sig, "sample_rate": cfg.get("sample_rate"),
            "channels": cfg.get("channels"), "conditioners": sorted((cfg.get("conditioners") or {}).keys()),
            "segment_duration": cfg.get("dataset", {}).get("segment_duration")}
    atomic.write_json(out / "musicpipe.json", info, indent=1)
    logger.info("exported LM %s with codec %s to %s", lm_sig, codec_sig, out)
    return out


def load_exported(folder: tp.Union[str, Path], device: tp.Optional[str] = None) -> tp.Any:
    """A ``MusicGen`` from an export folder (AudioCraft's loaders; works for unconditional models too)."""
    import torch
    from audiocraft.models import MusicGen, loaders

    from musicpipe.generation import MAX_DURATION

    folder = Path(folder)
    for name in (CODEC_FILE, LM_FILE):
        if not (folder / name).exists():
            raise ExportError(f"{folder / name} is missing: not a musicpipe/AudioCraft export folder")
    audiocraft_env.enable_checkpoint_loading()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    compression = loaders.load_compression_model(folder, device=device)
    lm = loaders.load_lm_model(folder, device=device)
    return MusicGen(f"musicpipe-export-{folder.name}", compression, lm, max_duration=MAX_DURATION)


def publish_checkpoints(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None,
                        outputs: Path = paths.OUTPUTS_DIR) -> Path:
    """``outputs/Checkpoints Small/<sig>/``: the final checkpoint (a link), the best state, the config.

    - ``checkpoint.th``: symlink to the XP's last checkpoint (resumable; nothing copied);
    - ``best_state.th``: the best weights in AudioCraft's export format (a standalone file);
    - ``config.yaml`` and ``argv.json``: what produced them; ``xp.json``: signature and XP folder.
    """
    kind, _ = _kind(sig, workspace)
    xp = paths.xp_dir(sig, workspace)
    final = xp / "checkpoint.th"
    if not final.exists():
        raise ExportError(f"{final} is missing: the XP has not saved a checkpoint yet")
    dest = outputs / CHECKPOINTS_DIR_NAME / sig
    dest.mkdir(parents=True, exist_ok=True)
    atomic.symlink(dest / "checkpoint.th", final.resolve())
    best = dest / "best_state.th"
    if not best.exists() or best.stat().st_mtime < final.resolve().stat().st_mtime:  # else: already up to date
        _save_atomic(_export_package(final, kind), best)
    for src, name in ((xp / ".hydra" / "config.yaml", "config.yaml"), (xp / ".argv.json", "argv.json")):
        if src.exists():
            with atomic.atomic_path(dest / name) as tmp:
                shutil.copyfile(src, tmp)
    atomic.write_json(dest / "xp.json", {"sig": sig, "solver": kind, "xp_folder": str(xp)}, indent=1)
    return dest

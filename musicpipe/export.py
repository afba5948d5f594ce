"""Sharing trained models: the seed's ``outputs/Checkpoints Small/<sig>/`` and self-contained export folders.

An export folder holds AudioCraft's release format: ``compression_state_dict.bin`` (the codec) and
``state_dict.bin`` (the LM), each ``{'best_state', 'xp.cfg', 'version', 'exported'}``, plus
``musicpipe.json``. AudioCraft 1.3.0's own loaders (``audiocraft.models.loaders``) open it; the
config of an unconditional LM is saved with ``conditioners: {}`` instead of ``null`` so that they do
(AudioCraft's builder iterates over it). :func:`musicpipe.generation.load_exported` builds a ``MusicGen`` from it.

Example:
    >>> from musicpipe import export
    >>> folder = export.export_model("08e4d3f1", "/tmp/my_model")      # doctest: +SKIP
    >>> model = generation.load_exported(folder)                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import typing as tp
from pathlib import Path

from musicpipe import atomic, audiocraft_env, paths
from musicpipe.xp import CODEC_FILE, LM_FILE, XP, XPError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR_NAME = "Checkpoints Small"  # the seed's folder name, space included


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


def _xp(sig: str, workspace: tp.Optional[tp.Union[str, Path]], kind: tp.Optional[str] = None) -> XP:
    """The XP ``sig`` (a codec or an LM XP of the workspace), as an ExportError when it cannot be."""
    try:
        xp = XP.resolve(sig, workspace, kind=kind)
    except XPError as exc:
        raise ExportError(str(exc)) from None
    if xp.kind not in ("codec", "lm") or xp.is_export:
        raise ExportError(f"XP {xp.name} is a {xp.solver!r} run; only codec and LM XPs of a workspace are exported")
    return xp


def export_model(lm_sig: str, out_dir: tp.Union[str, Path], workspace: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Export LM XP ``lm_sig`` and its codec into ``out_dir`` (self-contained, for another machine)."""
    lm = _xp(lm_sig, workspace)
    if lm.kind != "lm":
        raise ExportError(f"XP {lm_sig} is a codec; export the LM trained on it (it carries the codec along)")
    ref = lm.codec_ref or ""
    out = Path(out_dir)
    if ref.startswith("//pretrained/") and not Path(ref[len("//pretrained/"):]).is_dir():
        # a released hub codec: AudioCraft's own pointer package (what facebook/musicgen-* ship)
        codec_sig = ref[len("//pretrained/"):]
        _save_atomic({"pretrained": codec_sig, "exported": True}, out / CODEC_FILE)
    else:
        try:
            codec = lm.codec
        except XPError as exc:
            raise ExportError(str(exc)) from None
        if codec.is_export:  # a release folder's codec: copied as it is
            codec_sig = str(codec.folder)
            with atomic.atomic_path(out / CODEC_FILE) as tmp:
                shutil.copyfile(codec.folder / CODEC_FILE, tmp)
        else:
            codec_sig = codec.sig
            _save_atomic(_export_package(codec.require_checkpoint(), "compression"), out / CODEC_FILE)
    cfg = lm.config
    _save_atomic(_export_package(lm.require_checkpoint(), "musicgen"), out / LM_FILE)
    info = {"lm_xp": lm_sig, "codec_xp": codec_sig, "sample_rate": cfg.get("sample_rate"),
            "channels": cfg.get("channels"), "conditioners": lm.conditioners,
            "segment_duration": cfg.get("dataset", {}).get("segment_duration"),
            "dataset": lm.dataset, "conditioning": lm.record.get("conditioning"),
            "init_from": lm.record.get("init_from"), "genres": _genres(lm)}
    atomic.write_json(out / "musicpipe.json", info, indent=1)
    logger.info("exported LM %s with codec %s to %s", lm_sig, codec_sig, out)
    return out


def _genres(lm: XP) -> tp.Optional[tp.List[str]]:
    """The genres a genre-conditioned LM trained on (what ``generate`` checks prompts against), else None."""
    if "genre" not in (lm.conditioners or []):
        return None
    from musicpipe import manifests

    try:
        return manifests.known_genres(manifests.read_manifest(lm.egs_dir("train")[1]))
    except (OSError, ValueError) as exc:
        logger.warning("LM %s: its genres are not recorded in the export (%s)", lm.name, exc)
        return None


def publish_checkpoints(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None,
                        outputs: Path = paths.OUTPUTS_DIR) -> Path:
    """``outputs/Checkpoints Small/<sig>/``: the final checkpoint (a link), the best state, the config.

    - ``checkpoint.th``: symlink to the XP's last checkpoint (resumable; nothing copied);
    - ``best_state.th``: the best weights in AudioCraft's export format (a standalone file);
    - ``config.yaml`` and ``argv.json``: what produced them; ``xp.json``: signature and XP folder.
    """
    run = _xp(sig, workspace)
    kind = run.solver
    xp = run.folder
    final = run.checkpoint
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

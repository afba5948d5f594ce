"""``musicpipe evaluate``: the FAD of an LM's samples against real valid audio, per epoch, with its floors.

For one epoch's weights of an LM XP: generate ``num_clips`` clips (fixed seeds, each conditioned like the
valid segment it is compared with), take the same number of real valid crops, and report

- ``lm``: FAD(generated, real): what the LM reaches;
- ``codec_floor``: FAD(codec reconstructions of the real crops, real): the codec's own distortion; an LM
  decoding through that codec cannot be expected to go below it;
- ``real_vs_real``: FAD between the two halves of the real crops (split by source file): sampling noise at
  this set size; differences between runs smaller than it mean little;
- ``noise``: FAD(white noise at each real crop's loudness, real): the ceiling. A codec floor above it means the
  codec does not reconstruct music yet (a warning says so); an LM above it produces nothing music-like.

Embeddings are log-mel frames by default (``mel``), or the LM's own codec's encoder latents (``codec``), or VGGish
(:mod:`musicpipe.fad`). Results go to
``<xp>/fad.json`` (keyed by epoch; :attr:`musicpipe.xp.XP.fad`), to the XP's TensorBoard folder (``fad/*``)
and, with the clips, to ``<outputs>/evaluate/<sig>/epoch_<N>/`` (``generated/``, ``real/``,
``reconstructed/``: :func:`musicpipe.fad.fad_of_folders` takes any two of them). An epoch already evaluated
with the same settings is not redone.

Example:
    >>> from musicpipe import evaluation
    >>> res = evaluation.evaluate_lm("<lm sig>", workspace="/tmp/ws", num_clips=16)   # doctest: +SKIP
    >>> res["fad"]                                                                     # doctest: +SKIP
    {'lm': 41.2, 'codec_floor': 3.1, 'real_vs_real': 5.7}
"""

from __future__ import annotations

import json
import logging
import random
import typing as tp
from pathlib import Path

from musicpipe import atomic, fad, generation, manifests, paths
from musicpipe.codec_metrics import write_wav
from musicpipe.xp import FAD_FILE, XP, XPError

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
FORMAT_VERSION = 1
MAX_CLIP_SECONDS = 10.0
GENERATION_BATCH = 8


class EvaluationError(ValueError):
    """The evaluation cannot run; the message names the XP or file and the reason."""


def real_crops(records: tp.Sequence[tp.Tuple[str, float]], num_clips: int, duration: float,
               seed: int = 0) -> tp.List[tp.Tuple[str, float]]:
    """``num_clips`` ``(path, offset)`` crops of ``duration`` s from ``(path, seconds)`` segments (pure, seeded).

    Non-overlapping crops; segments are drawn first (one crop each), further crops per segment only when
    there are fewer segments than clips. Sorted by path and offset.

    >>> real_crops([("b.wav", 10.0), ("a.wav", 10.0)], 3, 4.0)
    [('a.wav', 0.0), ('a.wav', 4.0), ('b.wav', 0.0)]
    """
    rng = random.Random(seed)
    per_file = {p: [k * duration for k in range(int(d // duration))] for p, d in sorted(records)}
    rounds: tp.List[tp.List[tp.Tuple[str, float]]] = []
    for path, offsets in per_file.items():
        for k, offset in enumerate(offsets):
            while len(rounds) <= k:
                rounds.append([])
            rounds[k].append((path, offset))
    chosen: tp.List[tp.Tuple[str, float]] = []
    for candidates in rounds:
        rng.shuffle(candidates)
        chosen.extend(candidates[:num_clips - len(chosen)])
        if len(chosen) >= num_clips:
            break
    return sorted(chosen)


def split_by_source(crops: tp.Sequence[tp.Tuple[str, float]]) -> tp.Tuple[tp.List[int], tp.List[int]]:
    """Indices of two halves of ``crops`` with no source file in both (the real-vs-real comparison).

    With a single source file, its crops are halved in time order instead.

    >>> split_by_source([("a", 0.0), ("a", 2.0), ("b", 0.0), ("c", 0.0)])
    ([0, 1], [2, 3])
    >>> split_by_source([("a", 0.0), ("a", 2.0), ("a", 4.0), ("a", 6.0)])
    ([0, 1], [2, 3])
    """
    sources = sorted({p for p, _ in crops})
    if len(sources) < 2:
        half = len(crops) // 2
        return list(range(half)), list(range(half, len(crops)))
    first = set(sources[:max(1, len(sources) // 2)])
    a = [i for i, (p, _) in enumerate(crops) if p in first]
    return a, [i for i in range(len(crops)) if i not in set(a)]


def _condition(path: str, conditioning: str) -> tp.Optional[str]:
    if conditioning not in ("genre", "text"):
        return None
    try:
        side = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = side.get("genre" if conditioning == "genre" else "description") if isinstance(side, dict) else None
    return str(value) if isinstance(value, str) and value and value != "None" else None


def _conditioning(xp: XP) -> str:
    recorded = xp.record.get("conditioning")
    if recorded in ("none", "genre", "text"):
        return str(recorded)
    names = set(xp.conditioners)
    return "genre" if "genre" in names else "text" if "description" in names else "none"


def _default_duration(xp: XP) -> float:
    seg = ((xp.try_config() or {}).get("dataset") or {}).get("segment_duration")
    return float(min(float(seg), MAX_CLIP_SECONDS)) if isinstance(seg, (int, float)) and seg > 0 else MAX_CLIP_SECONDS


def _log_tensorboard(folder: Path, epoch: int, values: tp.Mapping[str, float]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is missing: nothing to write to
        return
    writer = SummaryWriter(str(folder / "tensorboard"))
    try:
        for name, value in values.items():
            writer.add_scalar(f"fad/{name}", value, epoch)
    finally:
        writer.close()


def evaluate_lm(ref: str, workspace: tp.Optional[PathLike] = None, *, epoch: tp.Optional[int] = None,
                num_clips: int = 16, duration: tp.Optional[float] = None, seed: int = 0, embedding: str = "mel",
                device: tp.Optional[str] = None, outputs: tp.Optional[PathLike] = None,
                force: bool = False) -> tp.Dict[str, tp.Any]:
    """FAD of LM ``ref`` at ``epoch`` (default: the last) against real valid audio; see the module docstring.

    Args:
        ref: an LM XP (signature, folder, checkpoint or ``latest``).
        epoch: which epoch's weights (``checkpoint_<N>.th``); default the last trained epoch.
        num_clips: generated clips, and real crops (at least 4).
        duration: seconds per clip; default the LM's training segment, at most 10 s.
        embedding: ``mel`` (log-mel frames, default), ``codec`` (the LM's codec's encoder latents) or ``vggish``
            (:mod:`musicpipe.fad`).
        outputs: receives ``evaluate/<sig>/epoch_<N>/`` (default ``<repo>/outputs``).
        force: recompute even when ``fad.json`` holds this epoch with the same settings.

    Returns:
        ``{"xp", "epoch", "fad": {"lm", "codec_floor", "real_vs_real", "noise"}, "settings", "folder", "skipped",
        ...}``.
    """
    try:
        xp = XP.resolve(str(ref), workspace, kind="lm")
    except XPError as exc:
        raise EvaluationError(str(exc)) from None
    if num_clips < 4:
        raise EvaluationError(f"num_clips must be at least 4 (two halves of real audio), got {num_clips}")
    checkpoints = xp.checkpoints
    last = xp.epochs_done
    epoch = int(epoch) if epoch is not None else (max(checkpoints) if checkpoints else last)
    if epoch in checkpoints:
        checkpoint = checkpoints[epoch]
    elif epoch == last and xp.checkpoint.exists():
        checkpoint = xp.checkpoint
    else:
        raise EvaluationError(f"{xp.folder}: no checkpoint for epoch {epoch} (per-epoch checkpoints: "
                              f"{', '.join(map(str, checkpoints)) or 'none'}; last epoch {last})")
    duration = float(duration) if duration is not None else _default_duration(xp)
    conditioning = _conditioning(xp)
    _, egs = xp.egs_dir("valid")
    try:
        records = manifests.read_nonempty_manifest(egs)
    except manifests.ManifestError as exc:
        raise EvaluationError(str(exc)) from None
    crops = real_crops([(r.path, float(r.duration)) for r in records], num_clips, duration, seed)
    if len(crops) < 4:
        raise EvaluationError(f"{egs}: only {len(crops)} crops of {duration:g} s in the valid set; at least 4 "
                              "needed (shorter --duration?)")
    if len(crops) < num_clips:
        logger.warning("%s: only %d crops of %g s in the valid set: %d clips instead of %d", egs, len(crops), duration,
                       len(crops), num_clips)
    settings = {"format": FORMAT_VERSION, "epoch": epoch, "checkpoint": checkpoint.name,
                "checkpoint_mtime": checkpoint.stat().st_mtime_ns, "num_clips": len(crops), "duration": duration,
                "seed": seed, "embedding": embedding, "conditioning": conditioning, "valid": str(egs)}
    known = xp.fad.get(epoch)
    out = Path(outputs if outputs is not None else paths.OUTPUTS_DIR) / "evaluate" / str(xp.sig) / f"epoch_{epoch}"
    if known and known.get("settings") == settings and not force:
        logger.info("XP %s epoch %d: FAD already computed with these settings: %s", xp.sig, epoch, known["fad"])
        return {**known, "xp": xp.sig, "folder": str(out), "skipped": True}

    import torch

    model = generation.load_musicgen(str(xp.sig), xp.workspace, device)
    used, state = generation.epoch_weights(checkpoint)
    model.lm.load_state_dict(state)
    model.lm.eval()
    del state
    codec = model.compression_model.eval()
    rate, channels = int(model.sample_rate), int(model.audio_channels)
    real = [fad.read_clip(p, rate, off, duration, channels) for p, off in crops]
    n = min(w.shape[-1] for w in real)
    real = [w[..., :n] for w in real]
    prompts = [_condition(p, conditioning) for p, _ in crops]
    generated = []
    for start in range(0, len(crops), GENERATION_BATCH):
        chunk = prompts[start:start + GENERATION_BATCH]
        wav = generation.generate(model=model, num_samples=len(chunk), duration=duration,
                                  genres=chunk if conditioning == "genre" else None,
                                  descriptions=chunk if conditioning == "text" else None, seed=seed + start)
        generated.extend(w[..., :n] for w in wav)
    with torch.no_grad():
        recon = []
        for w in real:
            codes, scale = codec.encode(w[None].to(model.device))
            recon.append(codec.decode(codes, scale)[0].float().cpu()[..., :n])
    noise = loudness_matched_noise(real, seed)
    embedder = fad.make_embedder(embedding, model=codec) if embedding == "codec" else fad.make_embedder(embedding)

    def at_rate(clips: tp.List[tp.Any]) -> tp.List[tp.Any]:  # the embedder's rate (mel: 32 kHz, VGGish: 16 kHz)
        if embedder.sample_rate == rate:
            return clips
        import julius

        return [julius.resample_frac(w, rate, embedder.sample_rate) for w in clips]
    emb_real = [embedder(w) for w in at_rate(real)]
    emb_gen, emb_rec = fad.embed_clips(embedder, at_rate(generated)), fad.embed_clips(embedder, at_rate(recon))
    emb_noise = fad.embed_clips(embedder, at_rate(noise))
    import numpy as np

    all_real = np.concatenate(emb_real)
    half_a, half_b = split_by_source(crops)
    values = {"lm": fad.fad_from_embeddings(emb_gen, all_real),
              "codec_floor": fad.fad_from_embeddings(emb_rec, all_real),
              "real_vs_real": fad.fad_from_embeddings(np.concatenate([emb_real[i] for i in half_a]),
                                                      np.concatenate([emb_real[i] for i in half_b])),
              "noise": fad.fad_from_embeddings(emb_noise, all_real)}
    for name, clips in (("generated", generated), ("real", real), ("reconstructed", recon)):
        for k, w in enumerate(clips):
            write_wav(out / name / f"clip_{k:03d}.wav", w, rate)
    result = {"epoch": epoch, "fad": values, "settings": settings, "weights": used,
              "frames": {"generated": int(emb_gen.shape[0]), "real": int(all_real.shape[0])},
              "dim": int(all_real.shape[1]),
              "clips": [{"real": p, "offset": off, "condition": c} for (p, off), c in zip(crops, prompts)]}
    if values["codec_floor"] > values["noise"]:
        result["warning"] = (f"codec floor {values['codec_floor']:.4g} is above white noise's {values['noise']:.4g}: "
                             "the codec does not reconstruct music yet (train it longer); LM FADs are bounded by it")
        logger.warning("XP %s epoch %d: %s", xp.sig, epoch, result["warning"])
    atomic.write_json(out / "fad.json", {"xp": xp.sig, **result}, indent=1, ensure_ascii=False)
    table = {str(e): v for e, v in sorted({**xp.fad, epoch: result}.items())}
    atomic.write_json(xp.folder / FAD_FILE, table, indent=1, ensure_ascii=False)
    _log_tensorboard(xp.folder, epoch, values)
    logger.info("XP %s epoch %d: FAD lm %.4g, codec floor %.4g, real vs real %.4g (%d clips of %g s, %s "
                "embedding)", xp.sig, epoch, values["lm"], values["codec_floor"], values["real_vs_real"], len(crops),
                duration, embedding)
    return {**result, "xp": xp.sig, "folder": str(out), "skipped": False}


def loudness_matched_noise(clips: tp.Sequence[tp.Any], seed: int = 0) -> tp.List[tp.Any]:
    """White Gaussian noise the shape and RMS of each clip (seeded): the ceiling the other FADs are read against.

    >>> import torch
    >>> [n] = loudness_matched_noise([0.1 * torch.ones(1, 32000)])
    >>> tuple(n.shape), round(float(n.pow(2).mean().sqrt()), 3)
    ((1, 32000), 0.1)
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 7919)
    out = []
    for w in clips:
        w = torch.as_tensor(w, dtype=torch.float32)
        n = torch.randn(w.shape, generator=gen)
        out.append(n * (w.pow(2).mean().sqrt() / n.pow(2).mean().sqrt().clamp_min(1e-12)))
    return out


def evaluate_epochs(ref: str, workspace: tp.Optional[PathLike] = None, *,
                    epochs: tp.Optional[tp.Sequence[int]] = None, **kwargs: tp.Any) -> tp.List[tp.Dict[str, tp.Any]]:
    """:func:`evaluate_lm` for each epoch with a per-epoch checkpoint (default every one), oldest first."""
    try:
        xp = XP.resolve(str(ref), workspace, kind="lm")
    except XPError as exc:
        raise EvaluationError(str(exc)) from None
    wanted = sorted(epochs) if epochs is not None else sorted(xp.checkpoints) or [xp.epochs_done]
    return [evaluate_lm(str(xp.sig), xp.workspace, epoch=e, **kwargs) for e in wanted]


def summary_line(result: tp.Mapping[str, tp.Any]) -> str:
    """The CLI's one line.

    >>> summary_line({"xp": "ab12", "epoch": 2, "fad": {"lm": 40.0, "codec_floor": 3.0, "real_vs_real": 5.0,
    ...               "noise": 90.0}, "settings": {"num_clips": 16, "duration": 2.0, "embedding": "mel"}, "folder": "/o"})
    'evaluate: xp ab12 epoch 2: FAD 40 (codec floor 3, real vs real 5, noise 90; 16 clips of 2 s, mel embedding) -> /o'
    """
    f, s = result["fad"], result["settings"]
    return (f"evaluate: xp {result['xp']} epoch {result['epoch']}: FAD {f['lm']:.4g} (codec floor "
            f"{f['codec_floor']:.4g}, real vs real {f['real_vs_real']:.4g}"
            + (f", noise {f['noise']:.4g}" if "noise" in f else "") + f"; {s['num_clips']} clips of "
            f"{s['duration']:g} s, {s['embedding']} embedding) -> {result['folder']}"
            + (f"; WARNING: {result['warning']}" if result.get("warning") else ""))

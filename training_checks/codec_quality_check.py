"""How well does a trained codec reconstruct real audio? Encode/decode a few valid segments and measure.

Picks ``num_samples`` segments of the dataset's valid manifest with its own seeded RNG, runs each
through the codec (``encode`` -> codes -> ``decode``) and writes, under the output folder:
``sample_<k>_original.wav`` / ``sample_<k>_reconstructed.wav`` (16-bit PCM at the codec's rate) and
``summary.json`` (per-sample and mean SI-SNR, L1, MSE, log-mel distance, with the source files and
the settings). SI-SNR is reported in both conventions: ``si_snr_db`` is the standard one (dB, higher
is better) and ``audiocraft_sisnr_loss`` its negation, what ``audiocraft.losses.SISNR`` returns and
what AudioCraft's compression solver logs as ``sisnr`` (lower is better).

As a script (default: the latest codec XP of the workspace, 5 samples, seed 0)::

    python training_checks/codec_quality_check.py --checkpoint 08e4d3f1 --num-samples 5
    python training_checks/codec_quality_check.py --checkpoint "outputs/Checkpoints Small/08e4d3f1/checkpoint.th"

It prints a table and ends with one line such as
``codec_quality_check: 08e4d3f1: 5 samples, SI-SNR 3.2 dB (audiocraft loss -3.2), mel 1.23 -> outputs/...``.

Example:
    >>> import torch
    >>> from training_checks.codec_quality_check import si_snr_db, audiocraft_sisnr_loss
    >>> ref = torch.sin(torch.linspace(0, 100, 8000))
    >>> si_snr_db(ref, 3 * ref) > 60   # identical up to scale: very high
    True
    >>> est = ref + 0.1 * torch.cos(torch.linspace(0, 100, 8000))
    >>> round(si_snr_db(ref, est), 1), round(audiocraft_sisnr_loss(ref, est), 1)
    (20.0, -20.0)
    >>> from training_checks.codec_quality_check import run_check
    >>> summary = run_check("08e4d3f1", workspace="/tmp/ws", num_samples=3)   # doctest: +SKIP
    >>> summary["mean"]["si_snr_db"] == -summary["mean"]["audiocraft_sisnr_loss"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import json
import logging
import math
import random
import re
import typing as tp

from musicpipe import paths

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SIG_RE = paths.SIG_RE
METRICS = ("si_snr_db", "audiocraft_sisnr_loss", "l1", "mse", "mel_distance")
# log-mel parameters of :func:`mel_distance`
MEL_N_FFT = 1024
MEL_HOP = 256
MEL_N_MELS = 64
MEL_FLOOR = 1e-5
_SAMPLE_FILE = re.compile(r"^sample_(\d+)_(original|reconstructed)\.wav$")


class CodecCheckError(ValueError):
    """A codec check that cannot run; ``str()`` names the file or folder and the reason.

    Example:
        >>> str(CodecCheckError("/ws/data/x/egs/valid/data.jsonl: empty manifest"))
        '/ws/data/x/egs/valid/data.jsonl: empty manifest'
    """


# ---------------------------------------------------------------------------------------------------- metrics


def _as_tensor(x: tp.Any) -> tp.Tuple[tp.Any, bool]:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64), False
    return torch.as_tensor(x, dtype=torch.float64), True


def _result(value: tp.Any, numpy_in: bool) -> tp.Any:
    if value.dim() == 0:
        return float(value)
    return value.cpu().numpy() if numpy_in else value


def _pair(reference: tp.Any, estimate: tp.Any) -> tp.Tuple[tp.Any, tp.Any, bool]:
    ref, np_ref = _as_tensor(reference)
    est, np_est = _as_tensor(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate differ in shape: {tuple(ref.shape)} vs {tuple(est.shape)}")
    return ref, est.to(ref.device), np_ref and np_est


def si_snr_db(reference: tp.Any, estimate: tp.Any, eps: float = 1e-8) -> tp.Any:
    """Scale-invariant SNR in dB over the last axis (standard convention: higher is better).

    Both signals are made zero-mean; ``s_target = <est, ref> ref / ||ref||^2``, ``e_noise = est - s_target``
    and SI-SNR = ``10 log10(||s_target||^2 / ||e_noise||^2)`` (``eps`` added to each energy). Inputs are
    torch tensors or numpy arrays of shape ``[..., T]``; a single signal gives a float, a batch gives a
    tensor (or array, for numpy inputs) of shape ``[...]``. Computed in float64.

    Example:
        >>> import numpy as np
        >>> s = np.sin(np.arange(4000) / 5.0)
        >>> n = np.cos(np.arange(4000) / 5.0)   # (nearly) orthogonal to s, same energy
        >>> round(si_snr_db(s, s + 0.1 * n), 1)
        20.0
    """
    ref, est, numpy_in = _pair(reference, estimate)
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    dot = (ref * est).sum(-1, keepdim=True)
    target = dot * ref / (ref.pow(2).sum(-1, keepdim=True) + eps)
    noise = est - target
    value = 10 * ((target.pow(2).sum(-1) + eps).log10() - (noise.pow(2).sum(-1) + eps).log10())
    return _result(value, numpy_in)


def audiocraft_sisnr_loss(reference: tp.Any, estimate: tp.Any, eps: float = 1e-8) -> tp.Any:
    """``-si_snr_db(reference, estimate)``: AudioCraft's convention (``audiocraft.losses.SISNR``; lower is better).

    Equals ``SISNR(sample_rate=1, segment=T, overlap=0.0)(estimate[None, None], reference[None, None])``,
    i.e. AudioCraft's module over one window holding the whole signal (its default cuts 20 s windows).
    Note the argument order: reference first here, estimate first in AudioCraft's ``forward``. AudioCraft adds
    ``float32 eps * window length`` to each energy, so for a reconstruction nearly uncorrelated with its
    input (an undertrained codec) the loss it logs saturates (around +30..40) where this value keeps rising;
    for usable reconstructions the two agree to well under 0.01 dB.

    Example:
        >>> import numpy as np
        >>> s = np.sin(np.arange(4000) / 5.0)
        >>> round(audiocraft_sisnr_loss(s, s + 0.1 * np.cos(np.arange(4000) / 5.0)), 1)
        -20.0
    """
    return -si_snr_db(reference, estimate, eps)


def l1(reference: tp.Any, estimate: tp.Any) -> tp.Any:
    """Mean absolute difference over the last axis.

    Example:
        >>> l1([0.0, 1.0], [0.5, 0.5])
        0.5
    """
    ref, est, numpy_in = _pair(reference, estimate)
    return _result((ref - est).abs().mean(-1), numpy_in)


def mse(reference: tp.Any, estimate: tp.Any) -> tp.Any:
    """Mean squared difference over the last axis.

    Example:
        >>> mse([0.0, 1.0], [0.5, 0.5])
        0.25
    """
    ref, est, numpy_in = _pair(reference, estimate)
    return _result((ref - est).pow(2).mean(-1), numpy_in)


def mel_distance(reference: tp.Any, estimate: tp.Any, sample_rate: int) -> tp.Any:
    """L1 distance between log-mel spectrograms, averaged over mel bands and frames.

    ``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, win_length=1024, hop_length=256,
    f_min=0, f_max=sample_rate/2, n_mels=64, power=1.0)`` (magnitude, Hann window, centred frames, HTK mel
    scale), then ``log10(max(mel, 1e-5))``; the result is ``mean(|logmel(ref) - logmel(est)|)`` over the
    last two axes, so shape ``[...]`` for inputs ``[..., T]`` (a float for one signal). Computed in float32.

    Example:
        >>> import numpy as np
        >>> s = np.sin(np.arange(16000) / 5.0)
        >>> mel_distance(s, s, 16000)
        0.0
        >>> mel_distance(s, 0.5 * s, 16000) > 0
        True
    """
    import torch
    import torchaudio

    ref, est, numpy_in = _pair(reference, estimate)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=int(sample_rate), n_fft=MEL_N_FFT, win_length=MEL_N_FFT, hop_length=MEL_HOP, f_min=0.0,
        f_max=None, n_mels=MEL_N_MELS, power=1.0).to(ref.device)

    def logmel(x: torch.Tensor) -> torch.Tensor:
        return torch.log10(mel(x.to(torch.float32)).clamp(min=MEL_FLOOR))

    value = (logmel(ref) - logmel(est)).abs().mean(dim=(-2, -1)).to(torch.float64)
    return _result(value, numpy_in)


def sample_metrics(reference: tp.Any, estimate: tp.Any, sample_rate: int) -> tp.Dict[str, float]:
    """All metrics of one ``[C, T]`` pair (each averaged over channels), as plain floats.

    Example:
        >>> import numpy as np
        >>> m = sample_metrics(np.ones((1, 4000)), np.ones((1, 4000)), 8000)
        >>> m["l1"], m["mse"], m["mel_distance"]
        (0.0, 0.0, 0.0)
    """
    import numpy as np

    def mean(x: tp.Any) -> float:
        return float(np.mean(np.asarray(x, dtype=np.float64)))

    si = mean(si_snr_db(reference, estimate))
    return {"si_snr_db": si, "audiocraft_sisnr_loss": -si, "l1": mean(l1(reference, estimate)),
            "mse": mean(mse(reference, estimate)), "mel_distance": mean(mel_distance(reference, estimate, sample_rate))}


# ----------------------------------------------------------------------------------------------- check a codec


def select_segments(segments: tp.Sequence[PathLike], num_samples: int, seed: int = 0) -> tp.List[str]:
    """``num_samples`` of ``segments`` (all of them when fewer), chosen by ``random.Random(seed)``.

    The candidates are sorted first, so the choice depends only on the set of files and the seed.

    Example:
        >>> select_segments(["c.wav", "a.wav", "b.wav"], 2, seed=0) == select_segments(["a.wav", "b.wav", "c.wav"], 2)
        True
        >>> sorted(select_segments(["a.wav", "b.wav"], 5))
        ['a.wav', 'b.wav']
    """
    if num_samples < 1:
        raise CodecCheckError(f"num_samples must be at least 1, got {num_samples}")
    candidates = sorted(str(s) for s in segments)
    if not candidates:
        raise CodecCheckError("no segments to check (empty list)")
    if num_samples > len(candidates):
        logger.warning("asked for %d samples, only %d segments: checking all of them", num_samples, len(candidates))
    return random.Random(seed).sample(candidates, min(num_samples, len(candidates)))


def _read_segment(path: str, sample_rate: int, channels: int, segment_seconds: tp.Optional[float]) -> tp.Any:
    """``[channels, T]`` float32 tensor of ``path`` at ``sample_rate``, cropped to ``segment_seconds``."""
    import julius
    import soundfile as sf
    import torch

    if not Path(path).is_file():
        raise CodecCheckError(f"{path}: segment file not found")
    try:
        info = sf.info(path)
        frames = -1 if segment_seconds is None else int(math.ceil(segment_seconds * info.samplerate))
        data, file_sr = sf.read(path, frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:  # LibsndfileError subclasses RuntimeError
        raise CodecCheckError(f"{path}: cannot read audio ({e})") from e
    wav = torch.from_numpy(data.T.copy())
    if wav.shape[-1] == 0:
        raise CodecCheckError(f"{path}: no audio frames")
    if wav.shape[0] != channels:
        if channels == 1:
            wav = wav.mean(0, keepdim=True)
        elif wav.shape[0] == 1:
            wav = wav.expand(channels, -1).clone()
        else:
            raise CodecCheckError(f"{path}: {wav.shape[0]} channels, the codec takes {channels}")
    if int(file_sr) != int(sample_rate):
        wav = julius.resample_frac(wav, int(file_sr), int(sample_rate))
    if segment_seconds is not None:
        wav = wav[..., :max(1, int(round(segment_seconds * sample_rate)))]
    return wav.contiguous()


def _write_wav(path: Path, wav: tp.Any, sample_rate: int) -> None:
    """16-bit PCM WAV of a ``[C, T]`` tensor (clipped to [-1, 1]), written under a temp name first."""
    import numpy as np
    import soundfile as sf

    audio = np.clip(wav.detach().cpu().numpy().T.astype(np.float32), -1.0, 1.0)
    tmp = path.with_name(f".{path.name}.tmp.wav")
    try:
        sf.write(tmp, audio, int(sample_rate), subtype="PCM_16")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _model_device(model: tp.Any) -> tp.Any:
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def check_codec(model: tp.Any, segments: tp.Sequence[PathLike], out_dir: PathLike, *, num_samples: int = 5,
                seed: int = 0, segment_seconds: tp.Optional[float] = None, sample_rate: tp.Optional[int] = None,
                info: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> tp.Dict[str, tp.Any]:
    """Encode/decode ``num_samples`` of ``segments`` with ``model``; write WAV pairs and ``summary.json``.

    Args:
        model: an AudioCraft ``CompressionModel`` (``encode -> (codes, scale)``, ``decode(codes, scale)``);
            run under ``torch.no_grad`` in eval mode on the device of its parameters.
        segments: audio files (any rate soundfile reads; resampled to the model's rate, downmixed to its
            channels). Chosen by :func:`select_segments` (sorted, then ``random.Random(seed)``).
        out_dir: receives ``sample_<k>_original.wav``, ``sample_<k>_reconstructed.wav`` (k = 0..n-1,
            16-bit PCM at the model's rate) and ``summary.json``; older ``sample_<k>_*`` files with a
            larger k are removed, so the folder holds exactly this run.
        num_samples, seed: how many segments, and the seed of the choice.
        segment_seconds: crop each segment to this many seconds from its start (None: whole file).
        sample_rate: the model's rate; default ``model.sample_rate`` (must agree with it when both are set).
        info: extra top-level keys for the summary (``run_check`` records the XP and dataset there).

    Returns:
        The summary written to ``summary.json``: ``samples`` (per sample: ``source``, the WAV names,
        ``codes_shape`` and the metrics), ``mean`` (each metric averaged over samples), ``si_snr_conventions``,
        ``num_samples``, ``seed``, ``sample_rate``, ``channels``, ``n_q``, ``codes_shape``, ``settings``.

    Example:
        >>> summary = check_codec(model, ["/ws/a.wav", "/ws/b.wav"], "/tmp/out", num_samples=1)  # doctest: +SKIP
        >>> sorted(summary["mean"])                                                               # doctest: +SKIP
        ['audiocraft_sisnr_loss', 'l1', 'mel_distance', 'mse', 'si_snr_db']
    """
    import torch

    from musicpipe import manifests

    model_sr = getattr(model, "sample_rate", None)
    if sample_rate is None:
        sample_rate = model_sr
    elif model_sr is not None and int(model_sr) != int(sample_rate):
        raise CodecCheckError(f"sample_rate={sample_rate} disagrees with the model's {model_sr} Hz")
    if not sample_rate:
        raise CodecCheckError("the model has no sample_rate attribute: pass sample_rate=")
    sample_rate = int(sample_rate)
    if segment_seconds is not None and not segment_seconds > 0:
        raise CodecCheckError(f"segment_seconds must be positive, got {segment_seconds}")
    channels = int(getattr(model, "channels", 1))
    chosen = select_segments(segments, num_samples, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = _model_device(model)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    samples: tp.List[tp.Dict[str, tp.Any]] = []
    try:
        for k, source in enumerate(chosen):
            wav = _read_segment(source, sample_rate, channels, segment_seconds)
            with torch.no_grad():
                codes, scale = model.encode(wav[None].to(device))
                decoded = model.decode(codes, scale)[0].detach().float().cpu()
            length = wav.shape[-1]
            if decoded.shape[-1] >= length:
                decoded = decoded[..., :length]
            else:
                decoded = torch.nn.functional.pad(decoded, (0, length - decoded.shape[-1]))
            metrics = sample_metrics(wav, decoded, sample_rate)
            names = {"original": f"sample_{k}_original.wav", "reconstructed": f"sample_{k}_reconstructed.wav"}
            _write_wav(out / names["original"], wav, sample_rate)
            _write_wav(out / names["reconstructed"], decoded, sample_rate)
            samples.append({"index": k, "source": source, **names, "num_frames": int(length),
                            "duration": length / sample_rate, "codes_shape": list(codes.shape), **metrics})
            logger.info("sample %d (%s): SI-SNR %.2f dB, mel %.3f", k, source, metrics["si_snr_db"],
                        metrics["mel_distance"])
    finally:
        if was_training:
            model.train()
    for stale in out.glob("sample_*.wav"):
        match = _SAMPLE_FILE.match(stale.name)
        if match and int(match.group(1)) >= len(chosen):
            stale.unlink()
    mean = {name: float(sum(s[name] for s in samples) / len(samples)) for name in METRICS}
    mean["audiocraft_sisnr_loss"] = -mean["si_snr_db"]
    summary: tp.Dict[str, tp.Any] = {
        **dict(info or {}),
        "num_samples": len(samples),
        "seed": seed,
        "sample_rate": sample_rate,
        "channels": channels,
        "n_q": int(samples[0]["codes_shape"][1]),
        "codes_shape": samples[0]["codes_shape"],
        "mean": mean,
        "si_snr_conventions": {
            "si_snr_db": "standard SI-SNR in dB (zero-mean, projection on the reference); higher is better",
            "audiocraft_sisnr_loss": "-si_snr_db, what audiocraft.losses.SISNR returns and the compression "
                                     "solver logs as 'sisnr' (its epsilon floors it near +30..40 for "
                                     "uncorrelated output); lower is better",
        },
        "mel_distance": {"n_fft": MEL_N_FFT, "hop_length": MEL_HOP, "n_mels": MEL_N_MELS, "power": 1.0,
                         "log": "log10(max(mel, 1e-5))", "reduction": "mean |logmel(ref) - logmel(est)|"},
        "samples": samples,
        "settings": {"num_samples": num_samples, "seed": seed, "segment_seconds": segment_seconds,
                     "sample_rate": sample_rate, "num_candidates": len(segments), "out_dir": str(out),
                     "device": str(device)},
    }
    manifests.atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


# ------------------------------------------------------------------------------------------- find XP and data


def _xp_config(folder: Path) -> tp.Any:
    """The XP's ``.hydra/config.yaml`` as an OmegaConf object, or None when missing/unreadable."""
    from omegaconf import OmegaConf

    cfg_path = folder / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        return None
    try:
        return OmegaConf.load(cfg_path)
    except Exception:  # noqa: BLE001 - an unreadable config means "not a usable XP"
        logger.debug("cannot read %s", cfg_path, exc_info=True)
        return None


def _xp_record(folder: Path) -> tp.Dict[str, tp.Any]:
    try:
        return json.loads((folder / "musicpipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _solver(folder: Path) -> tp.Optional[str]:
    cfg = _xp_config(folder)
    solver = cfg.get("solver") if cfg is not None else None
    return str(solver) if solver is not None else _xp_record(folder).get("kind")


def latest_codec_xp(workspace: tp.Optional[PathLike] = None) -> str:
    """The most recently modified ``checkpoint.th`` of an XP whose config says ``solver: compression``."""
    xps = paths.dora_dir(workspace) / "xps"
    found = [(ckpt.stat().st_mtime, ckpt.parent.name) for ckpt in xps.glob("*/checkpoint.th")
             if _solver(ckpt.parent) == "compression"]
    if not found:
        raise CodecCheckError(f"{xps}: no codec XP (no */checkpoint.th with solver: compression); train one "
                              "first (`musicpipe train-codec`) or pass --checkpoint")
    return max(found)[1]


def _workspace_of(folder: Path) -> tp.Optional[Path]:
    """``<ws>`` for an XP folder ``<ws>/experiments/audiocraft/xps/<sig>``, else None."""
    parents = folder.parents
    if len(parents) >= 4 and parents[0].name == "xps" and parents[1].name == "audiocraft" \
            and parents[2].name == "experiments":
        return parents[3]
    return None


def resolve_xp(checkpoint: tp.Optional[str], dataset: tp.Optional[str] = None,
               workspace: tp.Optional[PathLike] = None) -> tp.Tuple[str, Path, Path]:
    """``(sig, xp folder, workspace)`` for a signature, an XP folder, a ``checkpoint.th`` or None (latest).

    Example:
        >>> resolve_xp("08e4d3f1", workspace="/tmp/ws")   # doctest: +SKIP
        ('08e4d3f1', PosixPath('/tmp/ws/experiments/audiocraft/xps/08e4d3f1'), PosixPath('/tmp/ws'))
    """
    if checkpoint is None or str(checkpoint) in ("", "latest"):
        ws = paths.workspace_root(workspace)
        if dataset:
            from musicpipe import training

            try:
                sig = training.latest_codec(dataset, ws)
            except ValueError as e:  # TrainingInputError
                raise CodecCheckError(str(e)) from e
        else:
            sig = latest_codec_xp(ws)
    elif SIG_RE.match(str(checkpoint)) and not Path(checkpoint).exists():
        sig, ws = str(checkpoint), paths.workspace_root(workspace)
    else:
        given = Path(checkpoint).expanduser()
        if not given.exists():
            raise CodecCheckError(f"{given}: no such XP folder or checkpoint (nor an 8-hex-digit XP signature)")
        if given.is_dir() and (given / "checkpoint.th").exists():
            given = given / "checkpoint.th"
        folder = given.resolve().parent if given.is_file() else given.resolve()
        sig = folder.name
        if not SIG_RE.match(sig):
            raise CodecCheckError(f"{checkpoint}: its XP folder {folder} is not named by an XP signature")
        ws = paths.workspace_root(workspace) if workspace is not None else \
            (_workspace_of(folder) or paths.workspace_root(None))
    folder = paths.xp_dir(sig, ws)
    if not folder.is_dir():
        raise CodecCheckError(f"{folder}: no such XP in workspace {ws} (pass --workspace?)")
    if not (folder / "checkpoint.th").exists():
        raise CodecCheckError(f"{folder / 'checkpoint.th'}: missing; XP {sig} has not finished an epoch")
    solver = _solver(folder)
    if solver != "compression":
        raise CodecCheckError(f"{folder}: solver is {solver!r}, not a codec (solver: compression) XP")
    return sig, folder, ws


def _valid_egs(folder: Path, dataset: tp.Optional[str], ws: Path) -> tp.Tuple[tp.Optional[str], Path]:
    """``(dataset name, valid egs folder)``: the given dataset, the XP's record, else its config."""
    dataset = dataset or _xp_record(folder).get("dataset")
    if dataset:
        return dataset, paths.dataset_dir(dataset, ws) / "egs" / "valid"
    from omegaconf import OmegaConf

    cfg = _xp_config(folder)
    raw = OmegaConf.select(cfg, "datasource.valid", throw_on_resolution_failure=False) if cfg is not None else None
    raw_text = None
    if cfg is not None:
        container = OmegaConf.to_container(cfg, resolve=False)
        raw_text = (container.get("datasource") or {}).get("valid") if isinstance(container, dict) else None
    match = re.search(r"/data/([^/]+)/egs/valid/?$", str(raw_text or ""))
    if match:
        return match.group(1), paths.dataset_dir(match.group(1), ws) / "egs" / "valid"
    if raw:
        return None, Path(str(raw))
    raise CodecCheckError(f"{folder}: no dataset recorded (musicpipe.json) nor datasource.valid in "
                          ".hydra/config.yaml; pass --dataset")


def valid_segments(egs_dir: Path) -> tp.List[str]:
    """The audio paths of ``<egs_dir>/data.jsonl``; a clear error when it is missing, invalid or empty."""
    from musicpipe import manifests

    try:
        records = manifests.read_nonempty_manifest(egs_dir)
    except manifests.ManifestError as e:
        raise CodecCheckError(f"{e}: no valid manifest to check (prepare the dataset first, or pass --dataset)") \
            from None
    return [r.path for r in records]


def run_check(checkpoint: tp.Optional[str] = None, *, dataset: tp.Optional[str] = None,
              workspace: tp.Optional[PathLike] = None, num_samples: int = 5, output: tp.Optional[PathLike] = None,
              seed: int = 0, segment_seconds: tp.Optional[float] = None) -> tp.Dict[str, tp.Any]:
    """Check codec XP ``checkpoint`` on its dataset's valid segments; see :func:`check_codec`.

    Args:
        checkpoint: an XP signature (8 hex digits), an XP folder, or a ``checkpoint.th`` in one (a published
            ``Checkpoints Small/<sig>/checkpoint.th`` link works too); None: the latest codec XP
            (:func:`musicpipe.training.latest_codec` when ``dataset`` is given, else :func:`latest_codec_xp`).
        dataset: whose ``egs/valid/data.jsonl`` to draw from; default the XP's own (``musicpipe.json``,
            else its config's ``datasource.valid``).
        workspace: the musicpipe workspace (default ``$MUSICPIPE_WORKSPACE`` or ``<repo>/workspace``; for a
            path ``checkpoint``, the workspace that holds it).
        output: default ``outputs/codec_quality_check/<sig>``.

    Example:
        >>> s = run_check("08e4d3f1", workspace="/tmp/ws", num_samples=2, output="/tmp/cq")  # doctest: +SKIP
        >>> s["xp"], s["num_samples"], sorted(p.name for p in Path("/tmp/cq").iterdir())[:2]  # doctest: +SKIP
        ('08e4d3f1', 2, ['sample_0_original.wav', 'sample_0_reconstructed.wav'])
    """
    from musicpipe import generation

    sig, folder, ws = resolve_xp(checkpoint, dataset, workspace)
    name, egs = _valid_egs(folder, dataset, ws)
    segments = valid_segments(egs)
    out = Path(output) if output is not None else paths.OUTPUTS_DIR / "codec_quality_check" / sig
    logger.info("codec %s on %d valid segments of %s -> %s", sig, len(segments), name or egs, out)
    model = generation.load_codec(sig, ws)
    info = {"xp": sig, "xp_folder": str(folder), "dataset": name, "manifest": str(egs / "data.jsonl"),
            "workspace": str(ws),
            "run_check": {"checkpoint": None if checkpoint is None else str(checkpoint), "dataset": dataset,
                          "workspace": None if workspace is None else str(workspace), "num_samples": num_samples,
                          "output": None if output is None else str(output), "seed": seed,
                          "segment_seconds": segment_seconds}}
    return check_codec(model, segments, out, num_samples=num_samples, seed=seed, segment_seconds=segment_seconds,
                       info=info)


# ------------------------------------------------------------------------------------------------------- CLI


def format_table(summary: tp.Mapping[str, tp.Any]) -> str:
    """The per-sample and mean metrics as a fixed-width text table.

    Example:
        >>> row = {"si_snr_db": 3.0, "audiocraft_sisnr_loss": -3.0, "l1": 0.1, "mse": 0.01, "mel_distance": 1.5}
        >>> print(format_table({"samples": [dict(row, index=0, source="/a.wav")], "mean": row}).splitlines()[-1])
        mean        3.00     -3.00   0.1000   0.010000    1.5000
    """
    head = f"{'sample':<6} {'SI-SNR dB':>9} {'AC loss':>9} {'L1':>8} {'MSE':>10} {'mel dist':>9}  source"

    def row(label: str, m: tp.Mapping[str, float]) -> str:
        return (f"{label:<6} {m['si_snr_db']:>9.2f} {m['audiocraft_sisnr_loss']:>9.2f} {m['l1']:>8.4f} "
                f"{m['mse']:>10.6f} {m['mel_distance']:>9.4f}")

    lines = [head] + [f"{row(str(s['index']), s)}  {s['source']}" for s in summary["samples"]]
    lines.append(row("mean", summary["mean"]))
    return "\n".join(lines)


def summary_line(summary: tp.Mapping[str, tp.Any], out_dir: PathLike) -> str:
    """``codec_quality_check: <sig>: N samples, SI-SNR x dB (audiocraft loss -x), mel m -> <dir>``.

    Example:
        >>> summary_line({"xp": "08e4d3f1", "num_samples": 5, "mean": {"si_snr_db": 3.21, "mel_distance": 1.234}},
        ...              "/tmp/cq")
        'codec_quality_check: 08e4d3f1: 5 samples, SI-SNR 3.2 dB (audiocraft loss -3.2), mel 1.23 -> /tmp/cq'
    """
    si = summary["mean"]["si_snr_db"]
    return (f"codec_quality_check: {summary.get('xp')}: {summary['num_samples']} samples, SI-SNR {si:.1f} dB "
            f"(audiocraft loss {-si + 0.0:.1f}), mel {summary['mean']['mel_distance']:.2f} -> {out_dir}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codec_quality_check",
        description="Encode/decode valid segments with a trained codec; write WAV pairs, summary.json and "
                    "SI-SNR (both conventions), L1, MSE and log-mel distance.")
    parser.add_argument("--checkpoint", default=None,
                        help="XP signature, XP folder or checkpoint.th (default: the latest codec XP)")
    parser.add_argument("--dataset", default=None, help="dataset whose valid manifest to use (default: the XP's)")
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--output", default=None, help="output folder (default outputs/codec_quality_check/<sig>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segment-seconds", type=float, default=None,
                        help="crop each segment to this many seconds from its start")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI: a table of metrics, then a one-line summary; 1 with the reason on a :class:`CodecCheckError`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_check(args.checkpoint, dataset=args.dataset, workspace=args.workspace,
                            num_samples=args.num_samples, output=args.output, seed=args.seed,
                            segment_seconds=args.segment_seconds)
    except CodecCheckError as e:
        print(f"codec_quality_check: error: {e}", file=sys.stderr)
        return 1
    print(format_table(summary))
    print(summary_line(summary, summary["settings"]["out_dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

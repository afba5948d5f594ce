"""Codec quality metrics and the codec check itself: encode/decode segments, measure, write WAV pairs.

The pure part of :mod:`training_checks.codec_quality_check` (which adds finding the XP and its data, and
the CLI): the Dora entry package's periodic codec check and the script both import it, so neither
imports the other's dependencies. SI-SNR is reported in both conventions: ``si_snr_db`` is the standard
one (dB, higher is better) and ``audiocraft_sisnr_loss`` its negation, what AudioCraft's compression
solver logs as ``sisnr`` (lower is better).

Example:
    >>> import torch
    >>> ref = torch.sin(torch.linspace(0, 100, 8000))
    >>> si_snr_db(ref, 3 * ref) > 60   # identical up to scale: very high
    True
    >>> est = ref + 0.1 * torch.cos(torch.linspace(0, 100, 8000))
    >>> round(si_snr_db(ref, est), 1), round(audiocraft_sisnr_loss(ref, est), 1)
    (20.0, -20.0)
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import typing as tp
from pathlib import Path

from musicpipe import atomic

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
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


def read_segment(path: str, sample_rate: int, channels: int, segment_seconds: tp.Optional[float]) -> tp.Any:
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


def write_wav(path: Path, wav: tp.Any, sample_rate: int) -> None:
    """16-bit PCM WAV of a ``[C, T]`` tensor (clipped to [-1, 1]), written under a temp name first."""
    import numpy as np
    import soundfile as sf

    audio = np.clip(wav.detach().cpu().numpy().T.astype(np.float32), -1.0, 1.0)
    with atomic.atomic_path(path) as tmp:
        sf.write(tmp, audio, int(sample_rate), format="WAV", subtype="PCM_16")


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
            wav = read_segment(source, sample_rate, channels, segment_seconds)
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
            write_wav(out / names["original"], wav, sample_rate)
            write_wav(out / names["reconstructed"], decoded, sample_rate)
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
    atomic.write_text(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary

"""Fréchet Audio Distance (FAD): the Fréchet distance of two Gaussians fitted to audio embeddings.

FAD (Kilgour et al. 2019, used by the MusicGen paper) fits a Gaussian to the embeddings of a set of
generated clips and one to those of real music, and reports

    FAD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)

Lower is closer; 0 means the two Gaussians are equal. The number depends on the embedding model,
the clip length and the number of clips (it is biased upwards for small sets), so compare FADs
computed the same way only.

Embeddings here are, by default, log-mel spectrogram frames (``mel``: 64 bands every 10 ms at 32 kHz, no
weights, the same for every model). A codec's own encoder latents (``codec``, "FAD-EnCodec": one vector per
codec frame) and VGGish (``vggish``, the original FAD's, when its weights are reachable) are the others. Frames
of all clips of a set are pooled. What each tells and does not tell is in the README ("Watching runs").

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(4000, 3))
    >>> round(fad_from_embeddings(a, a), 6)
    0.0
    >>> round(frechet_distance(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2)), 6)
    25.0
    >>> fad_of_folders("gen/", "real/", codec="<codec sig>", workspace="/tmp/ws")   # doctest: +SKIP
    {'fad': 12.3, 'clips_a': 16, 'clips_b': 16, ...}
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
EMBEDDINGS = ("mel", "codec", "vggish")
MEL_SAMPLE_RATE = 32000  # the mel embedding's settings: 64 log-mel bands of 32 ms windows every 10 ms
MEL_BANDS, MEL_FFT, MEL_HOP = 64, 1024, 320
MEL_FLOOR = 1e-4
VGGISH_REPO = "harritaylor/torchvggish"  # the VGGish port the frechet_audio_distance package loads
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"


class FADError(ValueError):
    """FAD cannot be computed from what was given (the message says which input and why)."""


# ------------------------------------------------------------------------------------------------ the maths


def gaussian_stats(embeddings: tp.Any) -> tp.Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, unbiased) of ``[N, D]`` embeddings; N >= 2.

    >>> mu, sigma = gaussian_stats(np.array([[0.0, 0.0], [2.0, 2.0]]))
    >>> mu.tolist(), sigma.tolist()
    ([1.0, 1.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise FADError(f"embeddings must be [N, D] with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise FADError("embeddings hold non-finite values")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding-error eigenvalues set to 0)."""
    sym = (sigma + sigma.T) / 2
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: tp.Any, sigma1: tp.Any, mu2: tp.Any, sigma2: tp.Any) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), stable for singular covariances.

    ``tr((S1 S2)^1/2)`` is computed as the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``S1^1/2 S2 S1^1/2`` (same spectrum as ``S1 S2``), all by ``eigh`` in float64, with rounding-error
    negatives clipped to 0. So rank-deficient covariances (fewer vectors than dimensions, constant
    dimensions) need no ``eps * I`` offset and give no complex parts, unlike the ``scipy.linalg.sqrtm(S1 @ S2)``
    route. The result is clipped at 0.

    >>> frechet_distance([0.0], [[4.0]], [1.0], [[1.0]])   # 1^2 + (2 - 1)^2
    2.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise FADError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def fad_from_embeddings(a: tp.Any, b: tp.Any) -> float:
    """FAD of two sets of ``[N, D]`` embeddings (one row per frame or clip)."""
    mu_a, s_a = gaussian_stats(a)
    mu_b, s_b = gaussian_stats(b)
    return frechet_distance(mu_a, s_a, mu_b, s_b)


# ----------------------------------------------------------------------------------------- audio and models


def audio_files(folder: PathLike) -> tp.List[Path]:
    """The audio files under ``folder`` (recursive, sorted); FADError when there are none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FADError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FADError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def read_clip(path: PathLike, sample_rate: int, offset: float = 0.0, duration: tp.Optional[float] = None,
              channels: int = 1) -> tp.Any:
    """``[channels, T]`` float32 tensor of ``path`` (any format FFmpeg reads) at ``sample_rate``, from ``offset`` s."""
    import torch

    from musicpipe.audio import stream_mono

    try:
        wav = np.concatenate(list(stream_mono(path, int(sample_rate), 10.0)))
    except Exception as exc:  # noqa: BLE001 - any decode failure names the file
        raise FADError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    start = int(round(offset * sample_rate))
    stop = None if duration is None else start + int(round(duration * sample_rate))
    wav = wav[start:stop]
    if wav.size == 0:
        raise FADError(f"{path}: no audio at {offset:g} s")
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None].expand(channels, -1).contiguous()


def load_codec_model(codec: str, workspace: tp.Optional[PathLike] = None, device: tp.Optional[str] = None) -> tp.Any:
    """A codec to embed with: a codec XP, an LM XP (its codec), a release folder or a Hugging Face id."""
    from musicpipe import generation, release
    from musicpipe.xp import CODEC_FILE, XP, XPError

    folder = Path(str(codec)).expanduser()
    if release.is_hub_id(str(codec)) or (folder.is_dir() and (folder / CODEC_FILE).is_file()
                                         and not (folder / "checkpoint.th").exists()):
        return generation.load_released_codec(str(codec), device)
    try:
        xp = XP.resolve(str(codec), workspace)
    except XPError as exc:
        raise FADError(f"codec {codec!r}: {exc}") from None
    if xp.kind == "lm":
        return generation.load_musicgen(xp.sig, xp.workspace, device).compression_model.eval()
    return generation.load_codec(xp.sig, xp.workspace, device)


def codec_latents(model: tp.Any, wav: tp.Any) -> np.ndarray:
    """``[frames, D]`` continuous encoder latents of one ``[C, T]`` clip (before quantization).

    AudioCraft's EnCodec: ``encoder(preprocess(x))``; other compression models: the decoded latents of their
    codes (``decode_latent``).
    """
    import torch

    device = next(model.parameters()).device
    x = wav[None].to(device)
    with torch.no_grad():
        if hasattr(model, "encoder") and hasattr(model, "preprocess"):
            x, _scale = model.preprocess(x)
            z = model.encoder(x)
        else:
            codes, _scale = model.encode(x)
            z = model.decode_latent(codes)
    return z[0].float().cpu().numpy().T


def mel_transform() -> tp.Any:
    """The ``mel`` embedding's transform (torchaudio): power mel spectrogram, 20 Hz to 16 kHz, Slaney scale."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate=MEL_SAMPLE_RATE, n_fft=MEL_FFT, hop_length=MEL_HOP,
                                                n_mels=MEL_BANDS, f_min=20.0, f_max=MEL_SAMPLE_RATE / 2,
                                                norm="slaney", mel_scale="slaney")


def log_mel_frames(transform: tp.Any, wav: tp.Any) -> np.ndarray:
    """``[frames, 64]`` log-mel vectors, ``ln(power + 1e-4)``, of one ``[C, T]`` clip (mono mix).

    The 1e-4 floor sits about 94 dB below a full-scale sine's band power (~2.6e5 with these settings): quieter
    bands read as silence instead of their numerical noise (with 1e-10, empty high bands dominated the distance:
    a mild low-pass then scored 5,400 against white noise's 14,700; with 1e-4, 12 against 2,200).

    >>> import torch
    >>> t = torch.arange(MEL_SAMPLE_RATE) / MEL_SAMPLE_RATE
    >>> frames = log_mel_frames(mel_transform(), 0.5 * torch.sin(2 * torch.pi * 440 * t)[None])
    >>> frames.shape, int(frames.mean(0).argmax()) == int(frames[50].argmax())
    ((101, 64), True)
    """
    import torch

    with torch.no_grad():
        power = transform(torch.as_tensor(wav, dtype=torch.float32).mean(0))
    return torch.log(power + MEL_FLOOR).T.contiguous().numpy().astype(np.float64)


@dataclasses.dataclass
class Embedder:
    """Turns clips into frame embeddings: ``name`` (``mel``, ``codec`` or ``vggish``), its model, its sample rate."""

    name: str
    model: tp.Any
    sample_rate: int
    channels: int = 1
    codec_ref: tp.Optional[str] = None

    def __call__(self, wav: tp.Any) -> np.ndarray:
        if self.name == "codec":
            return codec_latents(self.model, wav)
        if self.name == "mel":
            return log_mel_frames(self.model, wav)
        out = self.model.forward(wav.mean(0).numpy(), self.sample_rate)  # torchvggish: [frames, 128]
        return out.detach().float().cpu().numpy().reshape(-1, 128)


def check_vggish(timeout: float = 5.0) -> str:
    """Can the VGGish embedding load? ``"cache"`` (torch hub cache) or ``"hub"``; else FADError, in seconds.

    Offline, this refuses with the reason instead of waiting on GitHub (as the T5 check does for text).
    """
    import torch

    hub = Path(torch.hub.get_dir())
    cached = any(hub.glob("harritaylor_torchvggish_*")) and any((hub / "checkpoints").glob("vggish-*.pth"))
    if cached:
        return "cache"
    try:
        with urllib.request.urlopen(urllib.request.Request(VGGISH_URL, method="HEAD"), timeout=timeout) as resp:
            if resp.status < 400:
                return "hub"
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise FADError(f"the VGGish embedding ({VGGISH_REPO}) is not in the torch hub cache ({hub}) and {VGGISH_URL} "
                   f"cannot be reached ({reason}); use embedding='codec' (the codec's own latents, offline)")


def make_embedder(embedding: str = "mel", codec: tp.Optional[str] = None,
                  workspace: tp.Optional[PathLike] = None, device: tp.Optional[str] = None,
                  model: tp.Any = None) -> Embedder:
    """The embedder for ``embedding``: ``mel`` (64 log-mel bands every 10 ms at 32 kHz; no weights, the same for
    every model, so FADs of LMs on different codecs compare), ``codec`` (``codec``'s encoder latents, or the loaded
    ``model``'s: "FAD-EnCodec", meaningful once the codec is trained) or ``vggish`` (16 kHz VGGish, 128-d per
    0.96 s, as in the original FAD; needs its weights, see :func:`check_vggish`)."""
    if embedding not in EMBEDDINGS:
        raise FADError(f"unknown embedding {embedding!r}: expected one of {', '.join(EMBEDDINGS)}")
    if embedding == "mel":
        return Embedder("mel", mel_transform(), MEL_SAMPLE_RATE)
    if embedding == "vggish":
        import torch

        check_vggish()
        net = torch.hub.load(VGGISH_REPO, "vggish", trust_repo=True)
        net.eval()
        return Embedder("vggish", net, 16000)
    if model is None:
        if codec is None:
            raise FADError("embedding='codec' needs a codec: an XP signature, a release folder or a hub id")
        model = load_codec_model(codec, workspace, device)
    return Embedder("codec", model.eval(), int(model.sample_rate), int(getattr(model, "channels", 1)),
                    None if codec is None else str(codec))


def embed_clips(embedder: Embedder, clips: tp.Iterable[tp.Any]) -> np.ndarray:
    """``[frames, D]`` embeddings of ``[C, T]`` clips (at the embedder's rate), all frames pooled."""
    rows = [embedder(wav) for wav in clips]
    if not rows:
        raise FADError("no clips to embed")
    return np.concatenate(rows, axis=0)


def embed_files(embedder: Embedder, files: tp.Sequence[PathLike], duration: tp.Optional[float] = None) -> np.ndarray:
    """Embeddings of audio files (each read at the embedder's rate, the first ``duration`` s when given)."""
    return embed_clips(embedder, (read_clip(f, embedder.sample_rate, 0.0, duration, embedder.channels) for f in files))


def fad_of_folders(a: PathLike, b: PathLike, *, codec: tp.Optional[str] = None, embedding: str = "mel",
                   workspace: tp.Optional[PathLike] = None, duration: tp.Optional[float] = None,
                   device: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """FAD between the audio files of folder ``a`` and those of folder ``b`` (a notebook cell's entry).

    Args:
        a, b: folders of audio (searched recursively; wav, flac, mp3, ogg, opus, m4a).
        codec: with ``embedding="codec"``: a codec XP signature, an LM XP (its codec), a release folder
            (``compression_state_dict.bin``) or a Hugging Face id (``facebook/encodec_32khz``).
        embedding: ``mel`` (default, no weights), ``codec`` (offline, needs ``codec``) or ``vggish``.
        duration: use only the first ``duration`` seconds of each file.

    Returns:
        ``{"fad", "embedding", "codec", "clips_a", "clips_b", "frames_a", "frames_b", "dim"}``.

    Example:
        >>> fad_of_folders("outputs/evaluate/<lm>/epoch_2/generated", "outputs/evaluate/<lm>/epoch_2/real",
        ...                codec="<codec sig>")   # doctest: +SKIP
    """
    files_a, files_b = audio_files(a), audio_files(b)
    embedder = make_embedder(embedding, codec, workspace, device)
    emb_a, emb_b = embed_files(embedder, files_a, duration), embed_files(embedder, files_b, duration)
    value = fad_from_embeddings(emb_a, emb_b)
    logger.info("FAD(%s, %s) = %.4g (%s embedding, %d vs %d files)", a, b, value, embedding, len(files_a),
                len(files_b))
    return {"fad": value, "embedding": embedding, "codec": None if codec is None else str(codec),
            "clips_a": len(files_a), "clips_b": len(files_b), "frames_a": int(emb_a.shape[0]),
            "frames_b": int(emb_b.shape[0]), "dim": int(emb_a.shape[1])}

"""Loading trained models from their XP signatures, and generating audio from them.

Example:
    >>> from musicpipe import generation
    >>> wav = generation.generate("08e4d3f1", workspace="/tmp/ws", num_samples=2,
    ...                           duration=2.0, genres=["techno", "ambient"])   # doctest: +SKIP
    >>> wav.shape                                                               # doctest: +SKIP
    torch.Size([2, 1, 64000])
"""

from __future__ import annotations

import logging
import math
import typing as tp
from pathlib import Path

from musicpipe import atomic, audiocraft_env, dora, manifests
from musicpipe.audio import stream_mono
from musicpipe.export import ExportError
from musicpipe.xp import CODEC_FILE, LM_FILE, XP

logger = logging.getLogger(__name__)

# MusicGen's constructor asserts max_duration > extend_stride (18 s by default).
MAX_DURATION = 20.0


def _device(device: tp.Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_solver(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None, device: tp.Optional[str] = None):
    """The AudioCraft solver of XP ``sig`` with its best weights restored (codec or LM)."""
    main = dora.dora_main(workspace)
    from audiocraft.train import get_solver_from_xp

    # loading is not training: no TensorBoard writer or W&B run for this process
    override = {"device": _device(device), "dataset": {"num_workers": 0},
                "logging": {"log_tensorboard": False, "log_wandb": False}}
    if override["device"] == "cpu":
        override.update({"autocast": False, "optim": {"ema": {"device": "cpu"}}})
    return get_solver_from_xp(main.get_xp_from_sig(sig), override_cfg=override)


def load_codec(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None, device: tp.Optional[str] = None):
    """The trained compression model of codec XP ``sig`` (eval mode)."""
    solver = load_solver(sig, workspace, device)
    return solver.model.eval()


def load_musicgen(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None, device: tp.Optional[str] = None):
    """A ``MusicGen`` built from LM XP ``sig`` and the codec it was trained on."""
    from audiocraft.models import MusicGen

    XP.resolve(sig, workspace, kind="lm").require_checkpoint()  # XPError naming the XP, before AudioCraft
    solver = load_solver(sig, workspace, device)
    return MusicGen(f"musicpipe-{sig}", solver.compression_model, solver.model.eval(), max_duration=MAX_DURATION)


def epoch_weights(checkpoint: Path, weights: str = "auto") -> tp.Tuple[str, tp.Any]:
    """``(which, LM state dict)`` from a per-epoch checkpoint (read with mmap: the optimizer is not loaded).

    ``auto``: the EMA weights when the checkpoint has them (what AudioCraft validates and keeps as best),
    else the trained weights (``model``); ``best``: the best state up to that epoch.
    """
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", mmap=True)
    except RuntimeError:  # not the zip format: mmap is unavailable
        state = torch.load(checkpoint, map_location="cpu")
    ema = ((state.get("ema") or {}).get("state") or {}).get("model")
    candidates = {"ema": ema, "model": state.get("model"), "best": (state.get("best_state") or {}).get("model")}
    order = ["ema", "model", "best"] if weights == "auto" else [weights]
    for name in order:
        if candidates.get(name):
            return name, candidates[name]
    raise ValueError(f"{checkpoint}: no {' / '.join(order)} weights in it (keys: {sorted(state)}); "
                     "is checkpoint.keep_every_states dropping them?")


def load_released_codec(ref: str, device: tp.Optional[str] = None) -> tp.Any:
    """A released codec (a Hugging Face id or a folder holding ``compression_state_dict.bin``), eval mode.

    AudioCraft's own ``CompressionModel.get_pretrained``, as training's ``//pretrained/`` does.
    """
    from audiocraft.models import CompressionModel

    audiocraft_env.enable_checkpoint_loading()
    folder = Path(ref).expanduser()
    name = str(folder.resolve()) if folder.is_dir() else ref
    return CompressionModel.get_pretrained(name, device=_device(device)).eval()


def load_exported(folder: tp.Union[str, Path], device: tp.Optional[str] = None) -> tp.Any:
    """A ``MusicGen`` from an export folder (AudioCraft's loaders; works for unconditional models too)."""
    from audiocraft.models import MusicGen, loaders

    folder = Path(folder)
    for name in (CODEC_FILE, LM_FILE):
        if not (folder / name).exists():
            raise ExportError(f"{folder / name} is missing: not a musicpipe/AudioCraft export folder")
    audiocraft_env.enable_checkpoint_loading()
    device = _device(device)
    compression = loaders.load_compression_model(folder, device=device)
    lm = loaders.load_lm_model(folder, device=device)
    return MusicGen(f"musicpipe-export-{folder.name}", compression, lm, max_duration=MAX_DURATION)
def expand_prompts(num_samples: tp.Optional[int] = None, genres: tp.Optional[tp.Sequence[str]] = None,
                   descriptions: tp.Optional[tp.Sequence[str]] = None
                   ) -> tp.Tuple[int, tp.Optional[tp.List[str]], tp.Optional[tp.List[str]]]:
    """The samples to generate: ``num_samples`` per prompt, or that many unconditional ones.

    Each entry of ``genres``/``descriptions`` is one prompt (both given: paired entry by entry), repeated
    ``num_samples`` times side by side (default 1); without prompts, ``num_samples`` unconditional samples
    (default 2). Returns the total and the per-sample lists that :func:`generate` takes.

    >>> expand_prompts(None)
    (2, None, None)
    >>> expand_prompts(None, genres=["rock", "jazz"])
    (2, ['rock', 'jazz'], None)
    >>> expand_prompts(2, genres=["rock", "jazz"])
    (4, ['rock', 'rock', 'jazz', 'jazz'], None)
    """
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"the number of samples must be at least 1, got {num_samples}")
    if genres and descriptions and len(genres) != len(descriptions):
        raise ValueError(f"got {len(genres)} genres and {len(descriptions)} descriptions: give one of each per "
                         "prompt, or only one kind")
    prompts = genres or descriptions
    if not prompts:
        return (2 if num_samples is None else num_samples), None, None
    per = 1 if num_samples is None else num_samples

    def repeat(values: tp.Optional[tp.Sequence[str]]) -> tp.Optional[tp.List[str]]:
        return [v for v in values for _ in range(per)] if values else None

    return len(prompts) * per, repeat(genres), repeat(descriptions)


def generate(sig: tp.Optional[str] = None, workspace: tp.Optional[tp.Union[str, Path]] = None, num_samples: int = 2,
             duration: float = 2.0, genres: tp.Optional[tp.Sequence[str]] = None,
             descriptions: tp.Optional[tp.Sequence[str]] = None, seed: int = 0,
             device: tp.Optional[str] = None, model: tp.Any = None, prompt: tp.Any = None,
             prompt_sample_rate: tp.Optional[int] = None):
    """Generate ``[num_samples, channels, T]`` audio from LM XP ``sig`` (or a loaded ``model``).

    ``genres`` conditions a ``genre`` lookup-table model, ``descriptions`` a text model; with
    neither, generation is unconditional. ``prompt`` (``[C, T]`` or ``[B, C, T]`` audio at
    ``prompt_sample_rate``) makes it a continuation, which includes the prompt. Seeded.
    """
    import torch

    if model is None:
        if sig is None:
            raise ValueError("give an XP signature or a loaded model")
        model = load_musicgen(sig, workspace, device)
    model.set_generation_params(duration=float(duration), use_sampling=True, top_k=250)
    for name, values in (("genres", genres), ("descriptions", descriptions)):
        if values is not None and len(values) != num_samples:
            raise ValueError(f"got {len(values)} {name} for {num_samples} samples")
    prompt_tokens = None
    if prompt is not None:
        import julius

        prompt = torch.as_tensor(prompt, dtype=torch.float32)
        if prompt.dim() == 2:
            prompt = prompt[None].expand(num_samples, -1, -1)
        if prompt_sample_rate and prompt_sample_rate != model.sample_rate:
            prompt = julius.resample_frac(prompt, int(prompt_sample_rate), int(model.sample_rate))
        prompt = prompt.mean(dim=1, keepdim=True) if model.audio_channels == 1 else prompt
    torch.manual_seed(seed)
    texts = list(descriptions) if descriptions is not None else [None] * num_samples
    attributes, prompt_tokens = model._prepare_tokens_and_attributes(texts, prompt)
    conditioners = set(getattr(model.lm.condition_provider, "conditioners", {}) or {})
    if genres is not None or "genre" in conditioners:
        from audiocraft.data.info_audio_dataset import get_keyword  # how MusicInfo prepares training genres

        for k, attr in enumerate(attributes):
            genre = genres[k] if genres is not None else None  # None: the genre model's unconditional slot
            attr.text["genre"] = get_keyword(genre) if isinstance(genre, str) else None
    tokens = model._generate_tokens(attributes, prompt_tokens, progress=False)
    return model.generate_audio(tokens).cpu()


def prompt_warnings(conditioners: tp.Collection[str], genres: tp.Optional[tp.Sequence[str]] = None,
                    descriptions: tp.Optional[tp.Sequence[str]] = None,
                    known: tp.Optional[tp.Sequence[str]] = None) -> tp.List[str]:
    """What a user should hear before generating with prompts this LM cannot use (one line each).

    ``conditioners``: the LM's (``genre``, ``description``, ...); ``known``: the genres it trained on, when known.

    >>> prompt_warnings({"genre"}, genres=["Rock", "polka"], known=["jazz", "rock"])
    ["genre 'polka' was never seen in training: the LM gives it an untrained embedding; it knows: jazz, rock"]
    >>> prompt_warnings({"genre"}, descriptions=["calm piano"], known=["jazz"])
    ['this LM is conditioned on genre, not text: --description is ignored (an unconditional sample); use --genre (it knows: jazz)']
    """
    out = []
    names = sorted(conditioners)
    kinds = ", ".join(names) or "nothing (unconditional)"
    if descriptions and "description" not in conditioners:
        out.append(f"this LM is conditioned on {kinds}, not text: --description is ignored (an unconditional sample)"
                   + ("; use --genre" + (f" (it knows: {', '.join(known)})" if known else "")
                      if "genre" in conditioners else ""))
    if genres and "genre" not in conditioners:
        out.append(f"this LM is conditioned on {kinds}, not genre: --genre is ignored"
                   + ("; use --description" if "description" in conditioners else ""))
    if genres and "genre" in conditioners and known:
        unseen = sorted({g for g in genres if manifests.keyword(g) not in set(known)})
        if unseen:
            out.append(f"genre{'s' if len(unseen) > 1 else ''} {', '.join(repr(g) for g in unseen)} "
                       f"{'were' if len(unseen) > 1 else 'was'} never seen in training: the LM gives "
                       f"{'them' if len(unseen) > 1 else 'it'} an untrained embedding; it knows: {', '.join(known)}")
    return out


def _known_genres_of(sig: tp.Optional[str], export_dir: tp.Optional[tp.Union[str, Path]],
                     workspace: tp.Optional[tp.Union[str, Path]]) -> tp.Optional[tp.List[str]]:
    """The genres an LM trained on: an export's ``musicpipe.json``, else the XP's train manifest's sidecars."""
    import json

    if export_dir is not None:
        try:
            return json.loads((Path(export_dir) / "musicpipe.json").read_text(encoding="utf-8")).get("genres")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        _, egs = XP.resolve(sig, workspace, kind="lm").egs_dir("train")
        return manifests.known_genres(manifests.read_manifest(egs))
    except (OSError, ValueError):
        return None


def write_samples(wav: tp.Any, sample_rate: int, out_dir: Path, labels: tp.Sequence[str]) -> tp.List[Path]:
    """Peak-normalised 16-bit WAVs ``sample_<k>_<label>.wav``, each written under a temp name first."""
    import numpy as np
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (item, label) in enumerate(zip(wav, labels)):
        audio = item.numpy().T.astype(np.float32)
        peak = float(np.abs(audio).max()) or 1.0
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(label))[:40] or "sample"
        target = out_dir / f"sample_{k}_{safe}.wav"
        with atomic.atomic_path(target) as tmp:
            sf.write(tmp, 0.9 * audio / peak, sample_rate, format="WAV", subtype="PCM_16")
        written.append(target)
    return written


def generate_to_folder(out_dir: tp.Union[str, Path], *, sig: tp.Optional[str] = None,
                       export_dir: tp.Optional[tp.Union[str, Path]] = None,
                       workspace: tp.Optional[tp.Union[str, Path]] = None, num_samples: int = 2,
                       duration: float = 2.0, genres: tp.Optional[tp.Sequence[str]] = None,
                       descriptions: tp.Optional[tp.Sequence[str]] = None, seed: int = 0,
                       prompt_audio: tp.Optional[tp.Union[str, Path]] = None,
                       device: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """Generate from an XP signature or an export folder into ``out_dir``: WAVs + ``settings.json``."""
    if (sig is None) == (export_dir is None):
        raise ValueError("give exactly one of an XP signature or an export folder")
    if not num_samples >= 1:
        raise ValueError(f"the number of samples must be at least 1, got {num_samples}")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"the duration must be a positive number of seconds, got {duration}")
    if export_dir is not None:
        model = load_exported(export_dir, device)
    else:
        model = load_musicgen(sig, workspace, device)
    conditioners = set(getattr(model.lm.condition_provider, "conditioners", {}) or {})
    if genres or descriptions:
        known = _known_genres_of(sig, export_dir, workspace) if "genre" in conditioners else None
        for warning in prompt_warnings(conditioners, genres, descriptions, known):
            logger.warning("%s", warning)
    prompt = prompt_sr = None
    if prompt_audio is not None:
        import numpy as np

        prompt = np.concatenate(list(stream_mono(prompt_audio, int(model.sample_rate), 10.0)))[None]
        prompt_sr = int(model.sample_rate)
    wav = generate(num_samples=num_samples, duration=duration, genres=genres, descriptions=descriptions, seed=seed,
                   model=model, prompt=prompt, prompt_sample_rate=prompt_sr)
    labels = list(genres or descriptions or [f"{'cont' if prompt is not None else 'uncond'}{k}"
                                            for k in range(num_samples)])
    out = Path(out_dir)
    files = write_samples(wav, int(model.sample_rate), out, labels)
    settings = {"xp": sig, "export": str(export_dir) if export_dir else None, "num_samples": num_samples,
                "duration": duration, "genres": list(genres) if genres else None,
                "descriptions": list(descriptions) if descriptions else None, "seed": seed,
                "prompt_audio": str(prompt_audio) if prompt_audio else None, "sample_rate": int(model.sample_rate),
                "files": [f.name for f in files]}
    atomic.write_json(out / "settings.json", settings, indent=1)
    return settings

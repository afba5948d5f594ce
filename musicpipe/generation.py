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
import typing as tp
from pathlib import Path

from musicpipe import audiocraft_env

logger = logging.getLogger(__name__)

# MusicGen's constructor asserts max_duration > extend_stride (18 s by default).
MAX_DURATION = 20.0


def _device(device: tp.Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_solver(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None, device: tp.Optional[str] = None):
    """The AudioCraft solver of XP ``sig`` with its best weights restored (codec or LM)."""
    main = audiocraft_env.dora_main(workspace)
    from audiocraft.train import get_solver_from_xp

    override = {"device": _device(device), "dataset": {"num_workers": 0}}
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

    solver = load_solver(sig, workspace, device)
    return MusicGen(f"musicpipe-{sig}", solver.compression_model, solver.model.eval(), max_duration=MAX_DURATION)


def generate(sig: str, workspace: tp.Optional[tp.Union[str, Path]] = None, num_samples: int = 2,
             duration: float = 2.0, genres: tp.Optional[tp.Sequence[str]] = None,
             descriptions: tp.Optional[tp.Sequence[str]] = None, seed: int = 0,
             device: tp.Optional[str] = None, model: tp.Any = None):
    """Generate ``[num_samples, channels, T]`` audio from LM XP ``sig``.

    ``genres`` conditions a ``genre`` lookup-table model, ``descriptions`` a text model; with
    neither, generation is unconditional. Seeded: the same call gives the same audio.
    """
    import torch
    from audiocraft.modules.conditioners import ConditioningAttributes

    model = model or load_musicgen(sig, workspace, device)
    model.set_generation_params(duration=float(duration), use_sampling=True, top_k=250)
    torch.manual_seed(seed)
    if genres is not None:
        if len(genres) != num_samples:
            raise ValueError(f"got {len(genres)} genres for {num_samples} samples")
        attributes = [ConditioningAttributes(text={"genre": g}) for g in genres]
        tokens = model._generate_tokens(attributes, None, progress=False)
        return model.generate_audio(tokens).cpu()
    if descriptions is not None:
        return model.generate(list(descriptions), progress=False).cpu()
    return model.generate_unconditional(num_samples, progress=False).cpu()

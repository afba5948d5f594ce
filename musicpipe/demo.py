"""The tiny end-to-end loop on the built-in synthetic data (what ``make demo`` runs for now).

synthetic clips -> manifests -> tiny EnCodec (dora run) -> tiny MusicGen conditioned on genre
(dora run on the codec's XP) -> generated samples under ``outputs/samples/<lm sig>/``.

Example:
    >>> from musicpipe.demo import run_demo
    >>> summary = run_demo(workspace="/tmp/ws")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import typing as tp
from pathlib import Path

from musicpipe import generation, manifests, paths, synthetic, training

logger = logging.getLogger(__name__)


def write_samples(wav: tp.Any, sample_rate: int, out_dir: Path, labels: tp.Sequence[str]) -> tp.List[Path]:
    """Peak-normalised 16-bit WAVs ``sample_<k>_<label>.wav``, each written under a temp name first."""
    import numpy as np
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (item, label) in enumerate(zip(wav, labels)):
        audio = item.numpy().T.astype(np.float32)
        peak = float(np.abs(audio).max()) or 1.0
        target = out_dir / f"sample_{k}_{label}.wav"
        tmp = target.with_name(f".{target.name}.tmp.wav")
        sf.write(tmp, 0.9 * audio / peak, sample_rate, subtype="PCM_16")
        tmp.replace(target)
        written.append(target)
    return written


def run_demo(workspace: tp.Optional[tp.Union[str, Path]] = None, outputs: Path = paths.OUTPUTS_DIR,
             preset: str = "demo_cpu", dataset: str = "synthetic_demo", echo: bool = True) -> tp.Dict[str, tp.Any]:
    report = synthetic.prepare_synthetic(dataset, workspace, tracks_per_genre=4, duration=10.0, progress=echo)
    codec = training.train_codec(preset, dataset, workspace, echo=echo)
    lm = training.train_lm(preset, codec.sig, dataset, workspace, conditioning="genre", echo=echo)
    genres = list(synthetic.GENRES)
    wav = generation.generate(lm.sig, workspace, num_samples=len(genres), duration=2.0, genres=genres)
    samples = write_samples(wav, 32000, outputs / "samples" / lm.sig, genres)
    summary = {"dataset": dataset, "prepare_counts": report.get("counts", {}), "codec_xp": codec.sig, "lm_xp": lm.sig,
               "codec_checkpoint": str(codec.checkpoint), "lm_checkpoint": str(lm.checkpoint),
               "samples": [str(p) for p in samples]}
    manifests.atomic_write_text(outputs / "reports" / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary

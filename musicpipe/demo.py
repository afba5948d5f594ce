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


def run_demo(workspace: tp.Optional[tp.Union[str, Path]] = None, outputs: Path = paths.OUTPUTS_DIR,
             preset: str = "demo_cpu", dataset: str = "synthetic_demo", echo: bool = True) -> tp.Dict[str, tp.Any]:
    report = synthetic.prepare_synthetic(dataset, workspace, tracks_per_genre=4, duration=10.0, progress=echo)
    codec = training.train_codec(preset, dataset, workspace, echo=echo, outputs=outputs)
    lm = training.train_lm(preset, codec.sig, dataset, workspace, conditioning="genre", echo=echo, outputs=outputs)
    genres = list(synthetic.GENRES)
    settings = generation.generate_to_folder(outputs / "samples" / lm.sig, sig=lm.sig, workspace=workspace,
                                             num_samples=len(genres), duration=2.0, genres=genres)
    samples = [outputs / "samples" / lm.sig / name for name in settings["files"]]
    summary = {"dataset": dataset, "prepare_counts": report.get("counts", {}), "codec_xp": codec.sig, "lm_xp": lm.sig,
               "codec_checkpoint": str(codec.checkpoint), "lm_checkpoint": str(lm.checkpoint),
               "samples": [str(p) for p in samples]}
    manifests.atomic_write_text(outputs / "reports" / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary

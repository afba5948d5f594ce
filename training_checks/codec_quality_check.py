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

The metrics and the check itself live in :mod:`musicpipe.codec_metrics` (re-exported here: ``si_snr_db``,
``mel_distance``, ``check_codec``...); this module finds the XP (or the released codec) and its data.

Example:
    >>> from training_checks.codec_quality_check import run_check, si_snr_db
    >>> import torch; ref = torch.sin(torch.linspace(0, 100, 8000)); si_snr_db(ref, 2 * ref) > 60
    True
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
import logging
import typing as tp

from musicpipe import generation, manifests, paths, release
from musicpipe.codec_metrics import (  # noqa: F401 - re-exported: the check's public API
    MEL_FLOOR, MEL_HOP, MEL_N_FFT, MEL_N_MELS, METRICS, CodecCheckError, audiocraft_sisnr_loss, check_codec, l1,
    mel_distance, mse, read_segment, sample_metrics, select_segments, si_snr_db, write_wav)
from musicpipe.xp import CODEC_FILE, XP, XPError

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SIG_RE = paths.SIG_RE


# ------------------------------------------------------------------------------------------- find XP and data


def resolve_xp(checkpoint: tp.Optional[str], dataset: tp.Optional[str] = None,
               workspace: tp.Optional[PathLike] = None) -> tp.Tuple[str, Path, Path]:
    """``(sig, xp folder, workspace)`` of a codec XP with a checkpoint (:meth:`musicpipe.xp.XP.resolve`).

    ``checkpoint``: a signature, an XP folder, a ``checkpoint.th`` in one (the ``Checkpoints Small`` link
    too), or None / ``latest``: the codec XP (on ``dataset`` when given) whose checkpoint was written last.

    Example:
        >>> resolve_xp("08e4d3f1", workspace="/tmp/ws")   # doctest: +SKIP
        ('08e4d3f1', PosixPath('/tmp/ws/experiments/audiocraft/xps/08e4d3f1'), PosixPath('/tmp/ws'))
    """
    try:
        xp = XP.resolve(checkpoint, workspace, kind="codec", dataset=dataset)
        if xp.is_export:
            raise XPError(f"{xp.folder}: an export folder; the codec check needs a codec XP of a workspace")
        xp.require_checkpoint()
    except XPError as e:
        raise CodecCheckError(str(e)) from None
    assert xp.sig is not None and xp.workspace is not None
    return xp.sig, xp.folder, xp.workspace


def valid_segments(egs_dir: Path) -> tp.List[str]:
    """The audio paths of ``<egs_dir>/data.jsonl``; a clear error when it is missing, invalid or empty."""
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
            ``Checkpoints Small/<sig>/checkpoint.th`` link works too), or a released codec (a Hugging Face id or a
            folder holding ``compression_state_dict.bin``; ``dataset`` is then required); None: the latest codec XP
            (:meth:`musicpipe.xp.XP.latest`: the codec XP, on ``dataset`` when given, whose checkpoint is newest).
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
    if checkpoint not in (None, "", "latest") and _is_release(str(checkpoint)):
        return _run_release_check(str(checkpoint), dataset=dataset, workspace=workspace, num_samples=num_samples,
                                  output=output, seed=seed, segment_seconds=segment_seconds)
    sig, folder, ws = resolve_xp(checkpoint, dataset, workspace)
    try:
        name, egs = XP(folder=folder, sig=sig, workspace=ws).egs_dir("valid", dataset)
    except XPError as e:
        raise CodecCheckError(str(e)) from None
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


def _is_release(ref: str) -> bool:
    """A released codec: a Hugging Face id, or a folder with ``compression_state_dict.bin`` (not a Dora XP)."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return (folder / CODEC_FILE).is_file() and not (folder / "checkpoint.th").exists()
    return release.is_hub_id(ref)


def _run_release_check(ref: str, *, dataset: tp.Optional[str], workspace: tp.Optional[PathLike], num_samples: int,
                       output: tp.Optional[PathLike], seed: int, segment_seconds: tp.Optional[float]
                       ) -> tp.Dict[str, tp.Any]:
    """The check of a released codec (AudioCraft's ``CompressionModel.get_pretrained``) on ``dataset``."""
    if not dataset:
        raise CodecCheckError(f"{ref}: a released codec records no dataset; pass --dataset")
    ws = paths.workspace_root(workspace)
    egs = paths.dataset_dir(dataset, ws) / "egs" / "valid"
    segments = valid_segments(egs)
    name = Path(ref).name if Path(ref).expanduser().is_dir() else ref.replace("/", "--")
    out = Path(output) if output is not None else paths.OUTPUTS_DIR / "codec_quality_check" / name
    logger.info("released codec %s on %d valid segments of %s -> %s", ref, len(segments), dataset, out)
    model = generation.load_released_codec(ref)
    info = {"xp": None, "release": str(Path(ref).expanduser().resolve()) if Path(ref).expanduser().is_dir() else ref,
            "dataset": dataset, "manifest": str(egs / "data.jsonl"), "workspace": str(ws),
            "run_check": {"checkpoint": ref, "dataset": dataset, "workspace": None if workspace is None else
                          str(workspace), "num_samples": num_samples, "output": None if output is None else str(output),
                          "seed": seed, "segment_seconds": segment_seconds}}
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

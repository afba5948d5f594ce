"""``musicpipe``: every step of the pipeline from the command line (thin wrappers over the library).

Example:
    $ musicpipe doctor
    $ musicpipe prepare synthetic --name synthetic_demo
    $ musicpipe train-codec --preset demo_cpu --dataset synthetic_demo
    $ musicpipe train-lm --preset demo_cpu --dataset synthetic_demo --codec <sig> --conditioning genre
    $ musicpipe generate --xp <lm sig> --genre techno --genre ambient
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing as tp
from pathlib import Path

from musicpipe import __version__


def _add_workspace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default=None,
                   help="workspace root (default: $MUSICPIPE_WORKSPACE, else <repo>/workspace)")


def _add_training(p: argparse.ArgumentParser) -> None:
    _add_workspace(p)
    p.add_argument("--preset", default="demo_cpu", help="model_config/presets/<name>.yaml")
    p.add_argument("--dataset", default=None, help="dataset name (dset=audio/<name>); default: the preset's")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--segment-seconds", type=float, default=None)
    p.add_argument("--gpus", type=int, default=None, help="1: dora run; N>1: dora run -d with N workers")
    p.add_argument("--dry-run", action="store_true", help="print the dora command and exit")
    p.add_argument("--outputs", type=Path, default=None,
                   help="where `Checkpoints Small/<xp>/` goes (default <repo>/outputs)")
    p.add_argument("overrides", nargs="*", help="free Hydra overrides key=value (after --)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicpipe", description="Music generation training pipeline on AudioCraft.")
    parser.add_argument("--version", action="version", version=f"musicpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check ffmpeg, torch, AudioCraft, Dora, GPUs, disk, env, Hydra config sources")
    _add_workspace(p)

    p = sub.add_parser("download", help="download a public dataset (resumable, checksum-verified)")
    p.add_argument("source", choices=["fma", "mtg_jamendo"])
    _add_workspace(p)
    p.add_argument("--subset", default="fma_small_mini", help="fma: fma_small_mini, fma_small, ..., fma_full")
    p.add_argument("--num-tracks", type=int, default=0, help="fma mini subsets: how many tracks (default 100)")
    p.add_argument("--parts", default=None, help="mtg_jamendo: tar parts, e.g. 0-3 or 0,5,7-9")
    p.add_argument("--variant", choices=["audio", "audio-low"], default="audio-low", help="mtg_jamendo audio quality")
    p.add_argument("--mirror", default=None, help="base URL replacing the source's archive base")
    p.add_argument("--metadata-mirror", default=None, help="mtg_jamendo: base URL of the metadata TSVs")
    p.add_argument("--keep-archives", action="store_true", help="keep zips/tars after a verified extraction")
    p.add_argument("--force", action="store_true", help="download again")

    p = sub.add_parser("prepare", help="decode, resample, segment, filter, split: manifests + dset config")
    p.add_argument("source", choices=["fma", "mtg_jamendo", "folder", "synthetic"])
    _add_workspace(p)
    p.add_argument("--subset", default="fma_small_mini", help="fma subset")
    p.add_argument("--variant", choices=["audio", "audio-low"], default="audio-low", help="mtg_jamendo")
    p.add_argument("--input", type=Path, default=None, help="folder: the folder of audio (recursive)")
    p.add_argument("--metadata-csv", type=Path, default=None, help="folder: CSV overriding embedded tags")
    p.add_argument("--name", default=None, help="folder/synthetic: dataset name (dset=audio/<name>)")
    p.add_argument("--tracks-per-genre", type=int, default=4, help="synthetic")
    p.add_argument("--duration", type=float, default=10.0, help="synthetic: seconds per clip")
    p.add_argument("--sample-rate", type=int, default=32000)
    p.add_argument("--segment-seconds", type=float, default=10.0)
    p.add_argument("--min-last-segment", type=float, default=5.0, help="keep a last partial segment this long")
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    p.add_argument("--split", choices=["artist", "track", "official"], default="artist")
    p.add_argument("--valid-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="redo every track")

    p = sub.add_parser("combine", help="combine prepared datasets into one (symlinks, nothing copied)")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--name", required=True)
    _add_workspace(p)

    p = sub.add_parser("inspect", help="counts, durations, manifests and genre/artist balance of a dataset")
    p.add_argument("dataset")
    _add_workspace(p)

    p = sub.add_parser("train-codec", help="train (or resume) an EnCodec codec with dora run")
    _add_training(p)
    p.add_argument("--codec-check-every", type=int, default=None,
                   help="codec quality check every N epochs (default $CODEC_CHECK_EVERY or 10; 0 = off)")
    p.add_argument("--codec-check-samples", type=int, default=None,
                   help="validation segments per check (default $CODEC_CHECK_SAMPLES or 5)")

    p = sub.add_parser("train-lm", help="train (or resume) a MusicGen LM on a codec XP")
    _add_training(p)
    p.add_argument("--codec", required=True, help="XP signature of the trained codec, or `latest`")
    p.add_argument("--conditioning", choices=["none", "genre", "text"], default="none")

    p = sub.add_parser("generate", help="generate audio from a trained LM (XP signature or export folder)")
    _add_workspace(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--xp", help="XP signature of the trained LM")
    src.add_argument("--export", type=Path, help="an export folder (`musicpipe export`)")
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--genre", action="append", default=None, help="genre per sample (repeat; genre-conditioned LM)")
    p.add_argument("--description", action="append", default=None, help="text per sample (repeat; text LM)")
    p.add_argument("--prompt-audio", type=Path, default=None, help="continue this audio file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "--out", dest="out", type=Path, default=None,
                   help="folder (default outputs/samples/<xp or export name>)")

    p = sub.add_parser("export", help="a self-contained folder with the LM and its codec (AudioCraft's format)")
    p.add_argument("xp", help="XP signature of the trained LM")
    _add_workspace(p)
    p.add_argument("--out", type=Path, default=None, help="folder (default outputs/exports/<xp>)")

    p = sub.add_parser("report", help="plots and an HTML page of a training run: outputs/reports/<xp>/")
    p.add_argument("xp", help="XP signature")
    _add_workspace(p)

    p = sub.add_parser("pipeline", help="run a chain of the numbered notebooks headless with papermill")
    p.add_argument("--chain", default="fma_small_mini", help="fma_small_mini | all_files | fma_large")
    p.add_argument("--params", type=Path, default=None, help="YAML of notebook parameters (papermill -f)")
    p.add_argument("-p", "--param", dest="params_extra", action="append", default=[], metavar="KEY=VALUE",
                   help="one parameter (repeat), applied after --params")
    _add_workspace(p)
    p.add_argument("--outputs", type=Path, default=None, help="default <repo>/outputs")

    p = sub.add_parser("demo", help="the notebook chain on synthetic music with params/demo_cpu.yaml (CPU, minutes)")
    _add_workspace(p)
    p.add_argument("--outputs", type=Path, default=None, help="default <repo>/outputs")
    p.add_argument("-p", "--param", dest="params_extra", action="append", default=[], metavar="KEY=VALUE")
    return parser


class InputError(ValueError):
    """A command-line argument cannot work (the message says which and why)."""


def _download(args: argparse.Namespace) -> int:
    from musicpipe import download

    try:
        if args.source == "fma":
            from musicpipe.sources import fma

            dest = fma.download_fma(args.subset, args.workspace, args.mirror, force=args.force,
                                    num_tracks=args.num_tracks, keep_archive=args.keep_archives)
            files = sum(1 for _ in dest.rglob("*.mp3"))
            print(f"download: {args.subset}: {files} audio files in {dest}")
            return 0
        from musicpipe.sources import mtg_jamendo

        if not args.parts:
            raise InputError("mtg_jamendo needs --parts, e.g. --parts 0-3")
        dest = mtg_jamendo.download_mtg_jamendo(args.parts, args.workspace, variant=args.variant, mirror=args.mirror,
                                                metadata_mirror=args.metadata_mirror, force=args.force,
                                                keep_archives=args.keep_archives)
        files = sum(1 for _ in dest.rglob("*.mp3"))
        print(f"download: mtg_jamendo {args.variant} parts {args.parts}: {files} audio files in {dest}")
        return 0
    except download.DownloadError as exc:
        raise InputError(str(exc)) from None



def _prepare(args: argparse.Namespace) -> int:
    from musicpipe.prepare import PrepareConfig

    config = PrepareConfig(sample_rate=args.sample_rate, segment_seconds=args.segment_seconds,
                           min_last_segment_seconds=args.min_last_segment, audio_format=args.format,
                           valid_share=args.valid_share, split=args.split, seed=args.seed, num_jobs=args.num_jobs)
    if args.source == "fma":
        from musicpipe.sources import fma

        name, report = args.subset, fma.prepare_fma(args.subset, args.workspace, config, force=args.force)
    elif args.source == "mtg_jamendo":
        from musicpipe.sources import mtg_jamendo

        name = mtg_jamendo.NAME
        report = mtg_jamendo.prepare_mtg_jamendo(args.workspace, config, variant=args.variant, force=args.force)
    elif args.source == "folder":
        from musicpipe import folder

        if args.input is None or args.name is None:
            raise InputError("prepare folder needs --input DIR and --name NAME")
        if not args.input.is_dir():
            raise InputError(f"--input {args.input}: not a folder")
        name = args.name
        report = folder.prepare_folder(args.input, name, args.workspace, config, metadata_csv=args.metadata_csv,
                                       force=args.force)
    else:
        from musicpipe import synthetic

        name = args.name or "synthetic_demo"
        report = synthetic.prepare_synthetic(name, args.workspace, config, tracks_per_genre=args.tracks_per_genre,
                                             duration=args.duration, force=args.force)
    print(summarize_report(name, report))
    return 0


def summarize_report(name: str, report: tp.Mapping[str, tp.Any]) -> str:
    """One line: segments and hours per split, quarantined inputs, the dset name."""
    counts = report.get("counts", {})
    return (f"prepare: {name}: {counts.get('segments_train', 0)} train / {counts.get('segments_valid', 0)} valid "
            f"segments ({counts.get('hours_train', 0.0):.2f} h / {counts.get('hours_valid', 0.0):.2f} h), "
            f"{counts.get('quarantined', 0)} input(s) quarantined; dset=audio/{name}")


def _training_args(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    return dict(epochs=args.epochs, batch_size=args.batch_size, segment_seconds=args.segment_seconds,
                gpus=args.gpus, overrides=args.overrides)


def _outputs(args: argparse.Namespace) -> Path:
    from musicpipe import paths

    return args.outputs if getattr(args, "outputs", None) is not None else paths.OUTPUTS_DIR


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from musicpipe import dora, presets, training
    from musicpipe.notebooks import NotebookError
    from musicpipe.pipeline import PipelineError
    from musicpipe.sources import SourceError

    try:
        if args.command == "doctor":
            from musicpipe import doctor

            return doctor.main(args.workspace)
        if args.command == "download":
            return _download(args)
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "combine":
            from musicpipe import combine

            res = combine.combine_datasets(args.datasets, args.name, args.workspace)
            print(f"combine: {args.name}: {res['train']} train / {res['valid']} valid segments from "
                  f"{', '.join(args.datasets)}; dset=audio/{args.name}")
            return 0
        if args.command == "inspect":
            from musicpipe import inspection

            print(inspection.format_inspection(inspection.inspect_dataset(args.dataset, args.workspace)))
            return 0
        if args.command in ("train-codec", "train-lm"):
            preset = presets.load_preset(args.preset)
            if args.command == "train-codec":
                if args.dry_run:
                    print("dora " + " ".join(presets.dora_run_args(
                        preset, "compression", dset=args.dataset, **_training_args(args))))
                    return 0
                run = training.train_codec(args.preset, args.dataset, args.workspace, outputs=_outputs(args),
                                           codec_check_every=args.codec_check_every,
                                           codec_check_samples=args.codec_check_samples, **_training_args(args))
            else:
                if args.dry_run:
                    info = training.resolve_codec(args.codec, args.dataset or preset.dataset, args.workspace)
                    print("dora " + " ".join(presets.dora_run_args(
                        preset, "musicgen", dset=args.dataset, conditioning=args.conditioning, codec=info,
                        **_training_args(args))))
                    return 0
                run = training.train_lm(args.preset, args.codec, args.dataset, args.workspace,
                                        conditioning=args.conditioning, outputs=_outputs(args),
                                        **_training_args(args))
            epochs = len(run.history())
            print(f"{args.command}: xp {run.sig} done, {epochs} epoch(s) in history, checkpoint {run.checkpoint}")
            return 0
        if args.command == "generate":
            from musicpipe import generation, paths

            n = len(args.genre or args.description or []) or args.num_samples
            out = args.out or paths.OUTPUTS_DIR / "samples" / (args.xp or args.export.name)
            res = generation.generate_to_folder(out, sig=args.xp, export_dir=args.export, workspace=args.workspace,
                                                num_samples=n, duration=args.duration, genres=args.genre,
                                                descriptions=args.description, seed=args.seed,
                                                prompt_audio=args.prompt_audio)
            print(f"generate: {len(res['files'])} sample(s) of {args.duration:.1f} s at {res['sample_rate']} Hz "
                  f"in {out}")
            return 0
        if args.command == "export":
            from musicpipe import export, paths

            out = export.export_model(args.xp, args.out or paths.OUTPUTS_DIR / "exports" / args.xp, args.workspace)
            print(f"export: LM {args.xp} and its codec in {out}")
            return 0
        if args.command == "report":
            from musicpipe import report

            folder = report.write_report(args.xp, args.workspace)
            print(f"report: {folder / 'index.html'}")
            return 0
        if args.command == "pipeline":
            from musicpipe import notebooks

            res = notebooks.run_chain(args.chain, args.params, args.params_extra, workspace=args.workspace,
                                      outputs=args.outputs)
            print(f"pipeline: {args.chain}: {len(res['notebooks'])} notebooks in {res['seconds']:.0f} s; open "
                  + ", ".join(res["pages"]))
            return 0
        if args.command == "demo":
            from musicpipe import demo

            s = demo.run_demo(args.workspace, args.outputs, args.params_extra)
            print(f"demo: {s['seconds']:.0f} s: codec xp {s['codec_xp']} (SI-SNR {s['codec_si_snr_db']:.1f} dB), "
                  f"LM xp {s['lm_xp']} ({s['conditioning']}-conditioned); open " + ", ".join(s["pages"]))
            return 0
    except (presets.PresetError, training.TrainingInputError, dora.DoraError, InputError, ValueError,
            SourceError, NotebookError, PipelineError) as exc:
        print(f"musicpipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

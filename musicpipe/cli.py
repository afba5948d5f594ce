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
    p.add_argument("overrides", nargs="*", help="free Hydra overrides key=value (after --)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicpipe", description="Music generation training pipeline on AudioCraft.")
    parser.add_argument("--version", action="version", version=f"musicpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check ffmpeg, torch, AudioCraft, Dora, GPUs, disk, env, Hydra config sources")
    _add_workspace(p)

    p = sub.add_parser("prepare", help="prepare a dataset into manifests and a dset config")
    p.add_argument("source", choices=["synthetic"], help="data source")
    _add_workspace(p)
    p.add_argument("--name", default="synthetic_demo")
    p.add_argument("--tracks-per-genre", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per clip")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-codec", help="train (or resume) an EnCodec codec with dora run")
    _add_training(p)

    p = sub.add_parser("train-lm", help="train (or resume) a MusicGen LM on a codec XP")
    _add_training(p)
    p.add_argument("--codec", required=True, help="XP signature of the trained codec")
    p.add_argument("--conditioning", choices=["none", "genre", "text"], default="none")

    p = sub.add_parser("generate", help="generate audio from a trained LM XP")
    _add_workspace(p)
    p.add_argument("--xp", required=True, help="XP signature of the trained LM")
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--genre", action="append", default=None, help="genre per sample (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder (default outputs/samples/<xp>)")

    p = sub.add_parser("demo", help="the tiny end-to-end loop on synthetic data (CPU, minutes)")
    _add_workspace(p)
    return parser


def _training_args(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    return dict(epochs=args.epochs, batch_size=args.batch_size, segment_seconds=args.segment_seconds,
                gpus=args.gpus, overrides=args.overrides)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from musicpipe import dora, presets, training

    try:
        if args.command == "doctor":
            from musicpipe import doctor

            return doctor.main(args.workspace)
        if args.command == "prepare":
            from musicpipe import synthetic

            res = synthetic.make_dataset(args.name, args.workspace, tracks_per_genre=args.tracks_per_genre,
                                         duration=args.duration, seed=args.seed)
            print(f"prepare: {res['name']}: {res['train']} train / {res['valid']} valid clips; "
                  f"dset=audio/{res['name']} ({res['dset_config']})")
            return 0
        if args.command in ("train-codec", "train-lm"):
            preset = presets.load_preset(args.preset)
            if args.command == "train-codec":
                if args.dry_run:
                    print("dora " + " ".join(presets.dora_run_args(
                        preset, "compression", dset=args.dataset, **_training_args(args))))
                    return 0
                run = training.train_codec(args.preset, args.dataset, args.workspace, **_training_args(args))
            else:
                if args.dry_run:
                    info = dora.codec_info(args.codec, args.workspace)
                    print("dora " + " ".join(presets.dora_run_args(
                        preset, "musicgen", dset=args.dataset, conditioning=args.conditioning, codec=info,
                        **_training_args(args))))
                    return 0
                run = training.train_lm(args.preset, args.codec, args.dataset, args.workspace,
                                        conditioning=args.conditioning, **_training_args(args))
            epochs = len(run.history())
            print(f"{args.command}: xp {run.sig} done, {epochs} epoch(s) in history, checkpoint {run.checkpoint}")
            return 0
        if args.command == "generate":
            from musicpipe import demo, generation, paths

            labels = args.genre or [f"uncond{k}" for k in range(args.num_samples)]
            wav = generation.generate(args.xp, args.workspace, num_samples=len(labels), duration=args.duration,
                                      genres=args.genre, seed=args.seed)
            out = args.out or paths.OUTPUTS_DIR / "samples" / args.xp
            files = demo.write_samples(wav, 32000, out, labels)
            print(f"generate: {len(files)} sample(s) of {args.duration:.1f} s from xp {args.xp} in {out}")
            return 0
        if args.command == "demo":
            from musicpipe import demo

            s = demo.run_demo(args.workspace)
            print(f"demo: codec xp {s['codec_xp']}, LM xp {s['lm_xp']} (genre-conditioned), "
                  f"{len(s['samples'])} samples in {Path(s['samples'][0]).parent}")
            return 0
    except (presets.PresetError, training.TrainingInputError, dora.DoraError) as exc:
        print(f"musicpipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

"""``musicpipe``: every step of the pipeline from the command line (thin wrappers over the library).

Example:
    $ musicpipe doctor
    $ musicpipe prepare synthetic --name synthetic_demo
    $ musicpipe train-codec --preset demo_cpu --dataset synthetic_demo
    $ musicpipe train-lm --preset demo_cpu --dataset synthetic_demo --codec <sig> --conditioning genre
    $ musicpipe generate --xp <lm sig> --genre techno --genre ambient
    $ musicpipe evaluate --xp <lm sig> --epoch 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing as tp
from pathlib import Path

from musicpipe import __version__, sources


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
    p.add_argument("--dry-run", action="store_true",
                   help="print the dora command (with --nodes: every node's torchrun command) and exit")
    multi = p.add_argument_group("more than one machine (torchrun on every node, one shared workspace; default: "
                                 "$NNODES/$NUM_NODES, $NODE_RANK, $MASTER_ADDR/$PRIMARY_ADDR, $MASTER_PORT)")
    multi.add_argument("--nodes", type=int, default=None, help="machines taking part (run this command on each)")
    multi.add_argument("--node-rank", type=int, default=None, help="this machine's rank, 0..nodes-1 (0: the master)")
    multi.add_argument("--master-addr", default=None, help="node 0's address, reachable from every node")
    multi.add_argument("--master-port", type=int, default=None, help="a free TCP port on node 0 (default 29500)")
    multi.add_argument("--slurm", default=None, metavar="PARTITION",
                       help="instead: submit the XP to SLURM with Dora's launcher (dora launch), --nodes x --gpus")
    p.add_argument("--outputs", type=Path, default=None,
                   help="where `Checkpoints Small/<xp>/` goes (default <repo>/outputs)")
    p.add_argument("--wandb", default=None, metavar="PROJECT",
                   help="log to Weights & Biases project PROJECT (default $WANDB_PROJECT; unset: off); run name = "
                        "the XP signature; does not change the XP")
    p.add_argument("overrides", nargs="*", help="free Hydra overrides key=value (after --)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicpipe", description="Music generation training pipeline on AudioCraft.")
    parser.add_argument("--version", action="version", version=f"musicpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check ffmpeg, torch, AudioCraft, Dora, GPUs, disk, env, Hydra config sources")
    _add_workspace(p)
    p.set_defaults(func=_doctor)

    p = sub.add_parser("sources", help="list the data sources (the registry download and prepare read)")
    p.add_argument("--item", default=None,
                   help="resolve a download_script.sh item (fma_small_mini, mtg_jamendo:0-3): tab-separated "
                        "lines `dataset`, `download` and `prepare` with the musicpipe arguments")
    _add_workspace(p)
    p.set_defaults(func=_sources)

    p = sub.add_parser("download", help="download a public dataset (resumable, checksum-verified)")
    p.add_argument("source", choices=sources.with_step("download"))
    _add_workspace(p)
    _add_source_options(p, "download")
    p.add_argument("--force", action="store_true", help="download again")
    p.set_defaults(func=_download)

    p = sub.add_parser("prepare", help="decode, resample, segment, filter, split: manifests + dset config")
    p.add_argument("source", choices=sources.with_step("prepare"))
    _add_workspace(p)
    _add_source_options(p, "prepare")
    p.add_argument("--sample-rate", type=int, default=32000)
    p.add_argument("--segment-seconds", type=float, default=10.0)
    p.add_argument("--min-last-segment", type=float, default=5.0, help="keep a last partial segment this long")
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    p.add_argument("--split", choices=["artist", "track", "official"], default="artist")
    p.add_argument("--valid-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="redo every track")
    p.add_argument("--verify", action="store_true",
                   help="re-check every kept segment (content hash, header, sidecar) and re-convert damaged tracks")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("combine", help="combine prepared datasets into one (symlinks, nothing copied)")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--name", required=True)
    _add_workspace(p)
    p.set_defaults(func=_combine)

    p = sub.add_parser("inspect", help="counts, durations, manifests and genre/artist balance of a dataset")
    p.add_argument("dataset")
    _add_workspace(p)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("train-codec", help="train (or resume) an EnCodec codec with dora run")
    _add_training(p)
    p.add_argument("--codec-check-every", type=int, default=None,
                   help="codec quality check every N epochs (default $CODEC_CHECK_EVERY or 10; 0 = off)")
    p.add_argument("--codec-check-samples", type=int, default=None,
                   help="validation segments per check (default $CODEC_CHECK_SAMPLES or 5)")
    p.set_defaults(func=_train_codec)

    p = sub.add_parser("train-lm", help="train (or resume) a MusicGen LM on a codec, or fine-tune a released one")
    _add_training(p)
    p.add_argument("--codec", default=None,
                   help="a codec XP (signature, folder, `latest`) or a released codec (facebook/encodec_32khz, or a "
                        "folder holding compression_state_dict.bin); default with --init-from: the release's own")
    p.add_argument("--init-from", default=None, metavar="NAME_OR_DIR",
                   help="fine-tune a released MusicGen: a Hugging Face id (facebook/musicgen-small) or a release "
                        "folder (state_dict.bin + compression_state_dict.bin, as `musicpipe export` writes)")
    p.add_argument("--conditioning", choices=["none", "genre", "text"], default=None,
                   help="default: none from scratch; with --init-from, the release's own conditioners")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--token-cache", dest="token_cache", action="store_true", default=None,
                       help="train from the dataset's token store for this codec, building it first (`cache-tokens`); "
                            "default: the preset's token_cache (on for the pod presets)")
    cache.add_argument("--no-token-cache", dest="token_cache", action="store_false",
                       help="encode the audio every step (AudioCraft's own path)")
    p.add_argument("--cache-workers", type=int, default=0, help="decoding processes when the store is built")
    p.set_defaults(func=_train_lm)

    p = sub.add_parser("cache-tokens", help="encode a dataset once with a codec: the token store the LM trains from")
    _add_workspace(p)
    p.add_argument("--codec", required=True,
                   help="a codec XP (signature, folder, `latest`), a released codec (facebook/encodec_32khz) or a "
                        "release folder (compression_state_dict.bin)")
    p.add_argument("--dataset", required=True, help="a prepared dataset (both splits are encoded)")
    p.add_argument("--batch-size", type=int, default=16, help="segments of equal length encoded at once")
    p.add_argument("--num-workers", type=int, default=0, help="processes decoding audio for the encoder")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--chunk-segments", type=int, default=256,
                   help="segments per saved chunk: a killed run resumes from the last one")
    p.set_defaults(func=_cache_tokens)

    p = sub.add_parser("generate", help="generate audio from a trained LM (XP signature or export folder)")
    _add_workspace(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--xp", help="XP signature of the trained LM")
    src.add_argument("--export", type=Path, help="an export folder (`musicpipe export`)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="samples per --genre/--description prompt (default 1), or unconditional samples (default 2)")
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--genre", action="append", default=None, help="a genre prompt (repeat; genre-conditioned LM)")
    p.add_argument("--description", action="append", default=None, help="a text prompt (repeat; text LM)")
    p.add_argument("--prompt-audio", type=Path, default=None, help="continue this audio file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "--out", dest="out", type=Path, default=None,
                   help="folder (default outputs/samples/<xp or export name>)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("evaluate", help="FAD of an LM's samples against real valid audio, with the codec's floor")
    p.add_argument("--xp", required=True, help="the LM XP (signature, folder or `latest`)")
    _add_workspace(p)
    p.add_argument("--epoch", type=int, action="append", default=None,
                   help="evaluate this epoch's weights (repeatable; default the last; --all-epochs: every one)")
    p.add_argument("--all-epochs", action="store_true", help="every epoch with a per-epoch checkpoint")
    p.add_argument("--num-clips", type=int, default=16, help="generated clips, and real crops (default 16)")
    p.add_argument("--duration", type=float, default=None, help="seconds per clip (default: the LM's segment, <= 10)")
    p.add_argument("--embedding", choices=["mel", "codec", "vggish"], default="mel",
                   help="mel: log-mel frames (default; no weights, comparable across codecs); codec: the LM's "
                        "codec's encoder latents; vggish: needs its weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--outputs", type=Path, default=None, help="receives evaluate/<xp>/epoch_<N>/ (default outputs/)")
    p.add_argument("--force", action="store_true", help="recompute epochs already evaluated")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="a self-contained folder with the LM and its codec (AudioCraft's format)")
    p.add_argument("xp", help="XP signature of the trained LM")
    _add_workspace(p)
    p.add_argument("--out", type=Path, default=None, help="folder (default outputs/exports/<xp>)")
    p.set_defaults(func=_export)

    p = sub.add_parser("report", help="plots and an HTML page of a training run: outputs/reports/<xp>/")
    p.add_argument("xp", help="XP signature")
    _add_workspace(p)
    p.add_argument("--outputs", type=Path, default=None,
                   help="the outputs folder the run used (its codec checks, samples); receives reports/<xp>/ "
                        "(default <repo>/outputs)")
    p.set_defaults(func=_report)

    p = sub.add_parser("pipeline", help="run a chain of the numbered notebooks headless with papermill")
    p.add_argument("--chain", default="fma_small_mini", help="fma_small_mini | all_files | fma_large")
    p.add_argument("--params", type=Path, default=None, help="YAML of notebook parameters (papermill -f)")
    p.add_argument("-p", "--param", dest="params_extra", action="append", default=[], metavar="KEY=VALUE",
                   help="one parameter (repeat), applied after --params")
    _add_workspace(p)
    p.add_argument("--outputs", type=Path, default=None, help="default <repo>/outputs")
    p.set_defaults(func=_pipeline)

    p = sub.add_parser("demo", help="the notebook chain on synthetic music with params/demo_cpu.yaml (CPU, minutes)")
    _add_workspace(p)
    p.add_argument("--outputs", type=Path, default=None, help="default <repo>/outputs")
    p.add_argument("-p", "--param", dest="params_extra", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_demo)
    return parser


class InputError(ValueError):
    """A command-line argument cannot work (the message says which and why)."""


def _add_source_options(p: argparse.ArgumentParser, step: str) -> None:
    """The options of every source that has ``step``, each flag once.

    A flag only some of those sources take has their names before its help (``folder/synthetic: ...``).
    """
    names = sources.with_step(step)
    seen: tp.Dict[str, tp.Tuple[sources.Option, tp.List[str]]] = {}
    for name in names:
        for opt in sources.SOURCES[name].options(step):
            if opt.flag is None:
                continue
            if opt.flag not in seen:
                seen[opt.flag] = (opt, [name])
                continue
            first, users = seen[opt.flag]
            if (opt.dest, opt.help, opt.type, opt.default, opt.choices, opt.action, opt.metavar) != \
                    (first.dest, first.help, first.type, first.default, first.choices, first.action, first.metavar):
                raise ValueError(f"sources {users[0]} and {name} declare {opt.flag} differently")
            users.append(name)
    for flag, (opt, users) in sorted(seen.items(), key=lambda kv: len(kv[1][1]) == len(names)):
        shown = opt.help if len(users) == len(names) else f"{'/'.join(users)}: {opt.help}"
        p.add_argument(flag, help=shown, **opt.argparse_kwargs())


def _source_values(source: sources.Source, step: str, args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    """The values of ``source``'s ``step`` options from the command line."""
    return {o.dest: getattr(args, o.dest) for o in source.options(step) if o.flag is not None}


def _doctor(args: argparse.Namespace) -> int:
    from musicpipe import doctor

    return doctor.main(args.workspace)


def _sources(args: argparse.Namespace) -> int:
    if args.item is None:
        print(sources.describe_all())
        return 0
    import os

    from musicpipe import paths

    workspace = args.workspace if args.workspace is not None else str(paths.workspace_root(None))
    print(sources.batch_item(args.item, workspace, os.environ).lines())
    return 0


def _download(args: argparse.Namespace) -> int:
    from musicpipe import download

    source = sources.get(args.source)
    values = _source_values(source, "download", args)
    try:
        dest = source.download(args.workspace, force=args.force, **values)
    except download.DownloadError as exc:
        raise InputError(str(exc)) from None
    files = sum(1 for _ in dest.rglob("*.mp3"))
    print(f"download: {source.describe(values)}: {files} audio files in {dest}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from musicpipe.prepare import PrepareConfig

    config = PrepareConfig(sample_rate=args.sample_rate, segment_seconds=args.segment_seconds,
                           min_last_segment_seconds=args.min_last_segment, audio_format=args.format,
                           valid_share=args.valid_share, split=args.split, seed=args.seed, num_jobs=args.num_jobs,
                           verify=args.verify)
    source = sources.get(args.source)
    values = _source_values(source, "prepare", args)
    report = source.prepare(args.workspace, config, force=args.force, **values)
    print(summarize_report(tp.cast(str, source.dataset(values)), report))
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


def _node_args(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    return dict(nodes=args.nodes, node_rank=args.node_rank, master_addr=args.master_addr, master_port=args.master_port)


def _slurm(args: argparse.Namespace, dora_args: tp.Sequence[str]) -> int:
    """``--slurm``: print (``--dry-run``) or submit the ``dora launch`` command of the XP."""
    from musicpipe import multinode, training

    if args.dry_run:
        try:
            launch = multinode.slurm_launch_args(dora_args, args.slurm, args.nodes or 1, max(1, args.gpus or 1))
        except multinode.MultiNodeError as exc:
            raise training.TrainingInputError(str(exc)) from None
        print("dora " + " ".join(launch))
        return 0
    run = training.submit_slurm(dora_args, args.slurm, args.nodes, args.gpus, args.workspace)
    print(f"{args.command}: xp {run.sig} submitted to SLURM partition {args.slurm}; follow it with "
          f"`dora info` or in {run.folder}")
    return 0


def _print_commands(args: argparse.Namespace, dora_args: tp.Sequence[str]) -> None:
    """``--dry-run``: the dora command, or with several nodes each node's torchrun command."""
    import shlex

    from musicpipe import multinode, presets, training

    node = training.node_spec(presets.load_preset(args.preset), args.gpus, require_rank=False, **_node_args(args))
    if node is None:
        print("dora " + " ".join(dora_args))
        return
    for rank, cmd in enumerate(multinode.all_node_commands(dora_args, node)):
        here = " (this machine)" if rank == node.node_rank else ""
        print(f"# node {rank} of {node.nnodes}{here}: {node.nproc_per_node} process(es), world size {node.world_size}")
        print(shlex.join(cmd))


def _outputs(args: argparse.Namespace) -> Path:
    from musicpipe import paths

    return args.outputs if getattr(args, "outputs", None) is not None else paths.OUTPUTS_DIR


def _combine(args: argparse.Namespace) -> int:
    from musicpipe import combine

    res = combine.combine_datasets(args.datasets, args.name, args.workspace)
    print(f"combine: {args.name}: {res['train']} train / {res['valid']} valid segments from "
          f"{', '.join(args.datasets)}; dset=audio/{args.name}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from musicpipe import inspection

    print(inspection.format_inspection(inspection.inspect_dataset(args.dataset, args.workspace)))
    return 0


def _train_codec(args: argparse.Namespace) -> int:
    from musicpipe import presets, training

    preset = presets.load_preset(args.preset)
    if args.slurm:
        return _slurm(args, presets.dora_run_args(preset, "compression", dset=args.dataset, **_training_args(args)))
    if args.dry_run:
        _print_commands(args, presets.dora_run_args(preset, "compression", dset=args.dataset, **_training_args(args)))
        return 0
    run = training.train_codec(args.preset, args.dataset, args.workspace, outputs=_outputs(args),
                               codec_check_every=args.codec_check_every,
                               codec_check_samples=args.codec_check_samples, wandb=args.wandb,
                               **_training_args(args), **_node_args(args))
    print(f"{args.command}: xp {run.sig} done, {len(run.history())} epoch(s) in history, checkpoint {run.checkpoint}")
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    from musicpipe import training

    if args.dry_run or args.slurm:
        plan = training.plan_lm(args.preset, args.codec, args.dataset, args.workspace, conditioning=args.conditioning,
                                init_from=args.init_from, **_training_args(args))
        if args.slurm:
            return _slurm(args, plan.args)
        _print_commands(args, plan.args)
        return 0
    run = training.train_lm(args.preset, args.codec, args.dataset, args.workspace, conditioning=args.conditioning,
                            init_from=args.init_from, outputs=_outputs(args), wandb=args.wandb,
                            token_cache=args.token_cache, cache_workers=args.cache_workers, **_training_args(args),
                            **_node_args(args))
    print(f"{args.command}: xp {run.sig} done, {len(run.history())} epoch(s) in history, checkpoint {run.checkpoint}")
    return 0


def _cache_tokens(args: argparse.Namespace) -> int:
    from musicpipe import token_cache, training

    info = training.resolve_codec(args.codec, args.dataset, args.workspace)
    summary = token_cache.build_store(info.sig, args.dataset, args.workspace, checkpoint=info.compression_checkpoint,
                                      device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                                      chunk_segments=args.chunk_segments)
    print(summary.line())
    return 0


def _generate(args: argparse.Namespace) -> int:
    from musicpipe import generation, paths

    n, genres, descriptions = generation.expand_prompts(args.num_samples, args.genre, args.description)
    out = args.out or paths.OUTPUTS_DIR / "samples" / (args.xp or args.export.name)
    res = generation.generate_to_folder(out, sig=args.xp, export_dir=args.export, workspace=args.workspace,
                                        num_samples=n, duration=args.duration, genres=genres,
                                        descriptions=descriptions, seed=args.seed, prompt_audio=args.prompt_audio)
    print(f"generate: {len(res['files'])} sample(s) of {args.duration:.1f} s at {res['sample_rate']} Hz in {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from musicpipe import evaluation

    options = dict(num_clips=args.num_clips, duration=args.duration, seed=args.seed, embedding=args.embedding,
                   device=args.device, outputs=args.outputs, force=args.force)
    if args.all_epochs:
        results = evaluation.evaluate_epochs(args.xp, args.workspace, **options)
    else:
        results = [evaluation.evaluate_lm(args.xp, args.workspace, epoch=e, **options) for e in (args.epoch or [None])]
    for res in results:
        print(evaluation.summary_line(res))
    return 0


def _export(args: argparse.Namespace) -> int:
    from musicpipe import export, paths

    out = export.export_model(args.xp, args.out or paths.OUTPUTS_DIR / "exports" / args.xp, args.workspace)
    print(f"export: LM {args.xp} and its codec in {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from musicpipe import report

    folder = report.write_report(args.xp, args.workspace, _outputs(args))
    print(f"report: {folder / 'index.html'}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from musicpipe import notebooks

    res = notebooks.run_chain(args.chain, args.params, args.params_extra, workspace=args.workspace,
                              outputs=args.outputs)
    print(f"pipeline: {args.chain}: {len(res['notebooks'])} notebooks in {res['seconds']:.0f} s; open "
          + ", ".join(res["pages"]))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from musicpipe import demo

    s = demo.run_demo(args.workspace, args.outputs, args.params_extra)
    print(f"demo: {s['seconds']:.0f} s: codec xp {s['codec_xp']} (SI-SNR {s['codec_si_snr_db']:.1f} dB), "
          f"LM xp {s['lm_xp']} ({s['conditioning']}-conditioned); open " + ", ".join(s["pages"]))
    return 0


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from musicpipe import atomic, dora, presets, procs, training
    from musicpipe.notebooks import NotebookError
    from musicpipe.fad import FADError
    from musicpipe.pipeline import PipelineError

    try:
        return args.func(args)
    except (presets.PresetError, training.TrainingInputError, dora.DoraError, InputError, ValueError,
            sources.SourceError, NotebookError, PipelineError, FADError, procs.BusyError,
            atomic.DiskFullError) as exc:
        print(f"musicpipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command could not read or write: one line naming it
        if not exc.filename:
            raise
        print(f"musicpipe {args.command}: error: {file_error(exc)}", file=sys.stderr)
        return 2


def file_error(exc: OSError) -> str:
    """One line for an ``OSError`` that names its file, with what to do for the usual causes.

    >>> import errno
    >>> file_error(OSError(errno.EROFS, "Read-only file system", "/ws/data"))
    '/ws/data: Read-only file system (the workspace must be writable: give --workspace or MUSICPIPE_WORKSPACE a writable folder)'
    """
    import errno

    hints = {errno.EROFS: "the workspace must be writable: give --workspace or MUSICPIPE_WORKSPACE a writable folder",
             errno.EACCES: "permission denied: check the owner and mode of the file or its folder",
             errno.ENOENT: "no such file or folder"}
    hint = hints.get(exc.errno)
    text = f"{exc.filename}: {exc.strerror or exc}"
    if exc.filename2:
        text += f" (-> {exc.filename2})"
    return text + (f" ({hint})" if hint and hint.lower() not in text.lower() else "")


if __name__ == "__main__":
    sys.exit(main())

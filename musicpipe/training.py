"""Training steps: the codec (compression solver) and the language model (musicgen solver).

Each builds the ``dora run`` arguments from a preset (pure), checks the inputs it can check
cheaply, then launches. Re-running the same call resumes the same XP.

Example:
    >>> from musicpipe import training
    >>> codec = training.train_codec("demo_cpu", dataset="synthetic_demo")           # doctest: +SKIP
    >>> lm = training.train_lm("demo_cpu", codec=codec.sig, conditioning="genre")    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import urllib.error
import urllib.request
import typing as tp
from pathlib import Path

from musicpipe import datacheck, dora, export, manifests, multinode, paths, presets, procs, release, tracking
from musicpipe import token_cache as token_store
from musicpipe.xp import CODEC_FILE, XP, XPError

MIN_FREE_GB = 1.0
LOCK_FILE = ".musicpipe.lock"  # in the XP folder: one trainer per XP (musicpipe.procs.exclusive)
NODE_LOCK_FILE = ".musicpipe.node{}.lock"  # multi-node: node K > 0's launcher (node 0 holds LOCK_FILE)
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")  # torchrun of this interpreter

logger = logging.getLogger(__name__)


class TrainingInputError(ValueError):
    """What a training step was given cannot train (the message says which file and why)."""


def check_manifests(dataset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.Dict[str, int]:
    """Both splits' ``data.jsonl`` exist and list at least one file. Returns counts per split.

    Committed dset configs (``model_config/dset/audio``) and those ``prepare`` writes both point at
    ``<ws>/data/<dataset>/egs/<split>``.
    """
    counts = {}
    for split in ("train", "valid"):
        egs = paths.dataset_dir(dataset, workspace) / "egs" / split
        try:
            records = manifests.read_nonempty_manifest(egs)
        except manifests.ManifestError as exc:
            raise TrainingInputError(f"{exc}; prepare the dataset {dataset!r} first (`musicpipe prepare ...`)") \
                from None
        counts[split] = len(records)
    return counts


def check_data(dataset: str, workspace: tp.Optional[tp.Union[str, Path]] = None) -> datacheck.DataCheck:
    """:func:`musicpipe.datacheck.require_ok` (every file, header and sidecar; a decoded sample) before a launch."""
    try:
        result = datacheck.require_ok(dataset, workspace)
    except (datacheck.DataCheckError, manifests.ManifestError) as exc:
        raise TrainingInputError(str(exc)) from None
    print(f"data check: {result.message()} ({result.seconds:.1f} s)", flush=True)
    return result


def check_disk(workspace: tp.Optional[tp.Union[str, Path]] = None, min_free_gb: float = MIN_FREE_GB) -> float:
    """Free GiB under the workspace; refuses below ``min_free_gb`` (checkpoints would not fit)."""
    free = paths.free_gib(workspace)
    if free < min_free_gb:
        raise TrainingInputError(f"{paths.workspace_root(workspace)}: only {free:.2f} GiB free, at least {min_free_gb:g} GiB needed for "
                                 "checkpoints")
    return free


def target_epochs(args: tp.Sequence[str]) -> tp.Optional[int]:
    """``optim.epochs`` in a ``dora run`` argument list (the last one wins), None when absent.

    >>> target_epochs(["run", "solver=x", "optim.epochs=2", "optim.epochs=3"]), target_epochs(["run"])
    (3, None)
    """
    found = None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key == "optim.epochs":
            try:
                found = int(value)
            except ValueError:
                found = None
    return found


def _launch(args: tp.Sequence[str], workspace: tp.Optional[tp.Union[str, Path]], echo: bool,
            env: tp.Mapping[str, str], rerun: bool,
            before: tp.Optional[tp.Callable[[], tp.Mapping[str, str]]] = None,
            node: tp.Optional[multinode.NodeSpec] = None, dataset: tp.Optional[str] = None,
            codec_checkpoint: tp.Optional[str] = None) -> dora.DoraRun:
    """``dora run``, unless that XP already trained all its epochs (then nothing runs, unless ``rerun``).

    ``before``: called only when the run launches; the variables it returns join ``env``.
    One trainer per XP: the XP's lock (``<xp>/.musicpipe.lock``, held by this process and the Dora process) refuses
    a second launch with :class:`musicpipe.procs.BusyError` naming the PID; the kernel drops it when they die.
    ``node``: one node of a multi-node launch (:mod:`musicpipe.multinode`): torchrun runs the same arguments; node 0's
    launcher holds the XP lock (the workspace is shared, so one holder for all nodes), node K > 0 holds
    ``<xp>/.musicpipe.node<K>.lock`` (a second launch of the same node refuses, the others are not blocked by node 0);
    every node's Dora processes check, before training, that all nodes see the same workspace, manifests
    (``dataset``) and codec (``codec_checkpoint``).
    """
    sig = dora.xp_signature(args, workspace)
    folder = paths.xp_dir(sig, workspace)
    epochs = target_epochs(args)
    if not rerun and XP(folder=folder, sig=sig).finished(epochs):
        print(f"xp: {sig}", flush=True)
        logger.info("xp %s already trained its %d epochs (%s): skipped", sig, epochs, folder)
        return dora.DoraRun(sig=sig, folder=folder, returncode=0, output_tail="", skipped=True)
    lock_file, what, command = folder / LOCK_FILE, f"xp {sig}", None
    if node is not None:
        if node.node_rank:
            lock_file, what = folder / NODE_LOCK_FILE.format(node.node_rank), f"node {node.node_rank} of xp {sig}"
        command = multinode.torchrun_args(args, node, launcher=TORCHRUN)
    with procs.exclusive(lock_file, what) as lock:  # one trainer per XP (per node of a multi-node XP)
        if before is not None:
            env = {**env, **before()}
        if node is not None:
            facts = multinode.node_facts(workspace, dataset or "", codec_checkpoint)
            env = {**env, multinode.FACTS_ENV: json.dumps(facts)}
            logger.info("node %d of %d (%d process(es) each, rank 0 at %s:%d): %s", node.node_rank, node.nnodes,
                        node.nproc_per_node, node.master_addr, node.master_port, " ".join(command or []))
        return dora.run(args, workspace=workspace, echo=echo, env=env, sig=sig, lock_fd=lock, command=command)


def _wandb_env(project: tp.Optional[str], env: tp.Mapping[str, str], **config: tp.Any) -> tp.Dict[str, str]:
    """The W&B variables of a training call (:func:`musicpipe.tracking.wandb_env`), {} when W&B is off."""
    project = tracking.wandb_project(project)
    if not project:
        return {}
    logger.info("W&B: project %s, run named after the XP signature", project)
    return tracking.wandb_env(project, config, environ={**os.environ, **env})


def _finish(run: dora.DoraRun, workspace: tp.Optional[tp.Union[str, Path]], outputs: tp.Optional[Path],
            node: tp.Optional[multinode.NodeSpec] = None, **info: tp.Any) -> dora.DoraRun:
    if node is not None:
        info["nodes"] = node.nnodes
        info["processes"] = node.world_size
        if node.node_rank:  # node 0 records and publishes the XP (one writer, as rank 0 alone writes checkpoints)
            return run
    if not run.skipped or not run.xp.record:
        run.xp.write_record(**info)
    if outputs is not None:
        dest = export.publish_checkpoints(run.sig, workspace, outputs)
        logger.info("checkpoints of %s in %s", run.sig, dest)
    return run


T5_DEFAULT = "t5-base"  # AudioCraft's text2music conditioner


def check_t5(name: str = T5_DEFAULT, *, cache_dir: tp.Optional[str] = None, endpoint: tp.Optional[str] = None,
             timeout: float = 5.0) -> str:
    """Can text conditioning load T5 ``name``? ``"cache"`` (local HF cache) or ``"hub"``; else a clear error.

    Takes about 2 s either way, where the training run would otherwise retry silently for minutes
    (shared/docs/AUDIOCRAFT.md). ``endpoint`` defaults to ``$HF_ENDPOINT`` or https://huggingface.co.
    """
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name, local_files_only=True, cache_dir=cache_dir)
        return "cache"
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        pass
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    url = f"{base}/{name}/resolve/main/config.json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            if resp.status < 400:
                return "hub"
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrainingInputError(
        f"text conditioning needs the T5 model {name!r}, which is not in the local Hugging Face cache, and {url} "
        f"cannot be reached ({reason}). On a pod with internet access it downloads on first use; offline, train "
        "with --conditioning genre or none.")


def _is_release_codec(codec: str) -> bool:
    """A hub id, or a folder holding ``compression_state_dict.bin`` that is not a Dora XP folder."""
    if release.is_hub_id(codec):
        return True
    folder = Path(codec).expanduser()
    return folder.is_dir() and (folder / CODEC_FILE).is_file() and not (folder / "checkpoint.th").exists()


def resolve_codec(codec: str, dataset: tp.Optional[str] = None,
                  workspace: tp.Optional[tp.Union[str, Path]] = None) -> presets.CodecInfo:
    """The codec an LM trains on: a codec XP (signature, folder, checkpoint, ``latest``) or a released codec.

    ``latest`` is :meth:`musicpipe.xp.XP.latest`: the codec XP trained on ``dataset`` whose checkpoint was
    written last. A released codec is a Hugging Face id (``facebook/encodec_32khz``) or a folder holding
    ``compression_state_dict.bin`` (``musicpipe export`` writes one). TrainingInputError naming it otherwise.
    """
    if _is_release_codec(str(codec)):
        try:
            return release.codec_info(str(codec))
        except release.ReleaseError as exc:
            raise TrainingInputError(str(exc)) from None
    try:
        codec_xp = XP.resolve(codec, workspace, kind="codec", dataset=dataset)
        info = codec_xp.codec_info()
    except XPError as exc:
        raise TrainingInputError(str(exc)) from None
    if codec != codec_xp.sig:
        logger.info("codec %s%s: %s", codec, f" for {dataset}" if dataset else "", codec_xp.sig)
    hop = _codec_hop(codec_xp.config)
    return dataclasses.replace(info, frame_rate=info.sample_rate / hop if hop else None)


def _codec_hop(cfg: tp.Mapping[str, tp.Any]) -> tp.Optional[int]:
    ratios = (cfg.get("seanet") or {}).get("ratios")
    try:
        return math.prod(int(r) for r in ratios) if ratios else None
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class LMPlan:
    """What ``train-lm`` launches: the ``dora run`` arguments and what they were built from."""

    args: tp.List[str]
    dataset: str
    codec: presets.CodecInfo
    conditioning: str
    init_from: tp.Optional[str] = None  # the release's ref (hub id or absolute folder) when fine-tuning
    env: tp.Dict[str, str] = dataclasses.field(default_factory=dict)


def _conditioning_name(names: tp.Iterable[str]) -> str:
    names = set(names)
    return "none" if not names else "genre" if names == {"genre"} else "text" if names == {"description"} \
        else "+".join(sorted(names))


def plan_lm(preset: str, codec: tp.Optional[str] = None, dataset: tp.Optional[str] = None,
            workspace: tp.Optional[tp.Union[str, Path]] = None, *, conditioning: tp.Optional[str] = None,
            init_from: tp.Optional[str] = None, epochs: tp.Optional[int] = None,
            batch_size: tp.Optional[int] = None, segment_seconds: tp.Optional[float] = None,
            gpus: tp.Optional[int] = None, overrides: tp.Sequence[str] = (), check_text: bool = True) -> LMPlan:
    """Resolve the codec, the release and the conditioning of an LM run and build its ``dora run`` arguments.

    Launches nothing (``train-lm --dry-run`` and preflight use it too). From scratch, ``codec`` is required and
    ``conditioning`` defaults to ``none``. With ``init_from`` (a Hugging Face id or a release folder), the LM's
    architecture and conditioners are the release's own (its stored ``xp.cfg``), the preset contributes the
    optimizer, schedule, batch and data settings, ``codec`` defaults to the release's own codec, and a codec or a
    conditioning that does not fit the release is refused, naming both. ``check_text``: for text conditioning,
    check that T5 loads (:func:`check_t5`) and set ``HF_HUB_OFFLINE`` accordingly in the plan's ``env``.
    """
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    finetune = None
    ref = None
    if init_from not in (None, ""):
        try:
            rel = release.Release.resolve(str(init_from))
            lm_cfg = rel.lm_config
            own_checkpoint, own_spec = rel.codec
        except release.ReleaseError as exc:
            raise TrainingInputError(f"--init-from {init_from}: {exc}") from None
        ref = rel.ref
        if codec in (None, ""):
            info = presets.CodecInfo(sig=own_checkpoint[len("//pretrained/"):], n_q=own_spec.n_q, card=own_spec.card,
                                     sample_rate=own_spec.sample_rate, channels=own_spec.channels,
                                     checkpoint=own_checkpoint, frame_rate=own_spec.frame_rate)
        else:
            info = resolve_codec(codec, dataset, workspace)
        try:
            release.check_codec_fits(lm_cfg, rel.ref, info, own_spec.frame_rate)
        except release.ReleaseError as exc:
            raise TrainingInputError(str(exc)) from None
        stored = _conditioning_name((lm_cfg.get("conditioners") or {}).keys())
        if conditioning not in (None, "") and conditioning != stored:
            raise TrainingInputError(f"--conditioning {conditioning}: the released model {rel.ref} is conditioned on "
                                     f"{stored} (its stored conditioners: "
                                     f"{', '.join(sorted((lm_cfg.get('conditioners') or {}).keys())) or 'none'}); "
                                     "fine-tuning keeps the released conditioners (leave --conditioning unset)")
        conditioning = stored
        finetune = presets.FineTune(continue_from=rel.pretrained, conditioner=release.write_conditioner_config(
            rel, workspace), architecture=tuple(release.architecture_overrides(lm_cfg)))
    else:
        if codec in (None, ""):
            raise TrainingInputError("an LM trains on a codec: pass --codec (a codec XP, `latest`, a released codec "
                                     "such as facebook/encodec_32khz or an export folder), or --init-from a release")
        info = resolve_codec(codec, dataset, workspace)
        conditioning = conditioning or "none"
    env: tp.Dict[str, str] = {}
    if check_text and (conditioning == "text" or "description" in conditioning.split("+")):
        t5 = presets.parse_overrides(overrides).get("conditioners.description.t5.name")
        if t5 is None and finetune is not None:
            t5 = (((lm_cfg.get("conditioners") or {}).get("description") or {}).get("t5") or {}).get("name")
        t5 = t5 or T5_DEFAULT
        source = check_t5(t5)
        env["HF_HUB_OFFLINE"] = "1" if source == "cache" else "0"
        logger.info("T5 %s: loading from the %s", t5, "local cache" if source == "cache" else "Hugging Face hub")
    args = presets.dora_run_args(spec, "musicgen", dset=dataset, conditioning=conditioning if finetune is None
                                 else "none", codec=info, epochs=epochs, batch_size=batch_size,
                                 segment_seconds=segment_seconds, gpus=gpus, overrides=overrides, finetune=finetune)
    return LMPlan(args=args, dataset=dataset, codec=info, conditioning=conditioning, init_from=ref, env=env)


def node_spec(spec: presets.Preset, gpus: tp.Optional[int] = None, nodes: tp.Optional[int] = None,
              node_rank: tp.Optional[int] = None, master_addr: tp.Optional[str] = None,
              master_port: tp.Optional[int] = None, *, require_rank: bool = True,
              environ: tp.Optional[tp.Mapping[str, str]] = None) -> tp.Optional[multinode.NodeSpec]:
    """The multi-node launch of a training call (flags first, then the cluster's variables); None: one machine.

    Processes per node: ``gpus``, else ``$NUM_TRAINERS``/``$NPROC_PER_NODE``, else the preset's ``gpus`` (at least 1).
    TrainingInputError (naming the flag) when it is incomplete.
    """
    try:
        return multinode.resolve_nodes(nodes, node_rank, master_addr, master_port, gpus=gpus, environ=environ,
                                       require_rank=require_rank, default_gpus=max(1, spec.gpus))
    except multinode.MultiNodeError as exc:
        raise TrainingInputError(str(exc)) from None


def submit_slurm(args: tp.Sequence[str], partition: str, nodes: tp.Optional[int] = None, gpus: tp.Optional[int] = None,
                 workspace: tp.Optional[tp.Union[str, Path]] = None, echo: bool = True,
                 env: tp.Optional[tp.Mapping[str, str]] = None) -> dora.DoraRun:
    """Hand the XP of ``args`` (:func:`musicpipe.presets.dora_run_args`) to Dora's SLURM launcher (``dora launch``).

    ``nodes`` x ``gpus`` per node (:func:`musicpipe.multinode.slurm_launch_args`); returns once the job is
    submitted (``dora info`` / ``squeue`` follow it). Every node of the job must see the workspace; Dora's SLURM
    jobs set the distributed variables themselves (``dora.distrib``), so the torchrun checks do not run there.
    """
    try:
        launch = multinode.slurm_launch_args(args, partition, int(nodes or 1), max(1, int(gpus or 1)))
    except multinode.MultiNodeError as exc:
        raise TrainingInputError(str(exc)) from None
    logger.info("SLURM: dora %s", " ".join(launch))
    return dora.run(args, workspace=workspace, echo=echo, env=env,
                    command=[sys.executable, "-m", "dora", *launch])


def train_codec(preset: str, dataset: tp.Optional[str] = None,
                workspace: tp.Optional[tp.Union[str, Path]] = None, *, epochs: tp.Optional[int] = None,
                batch_size: tp.Optional[int] = None, segment_seconds: tp.Optional[float] = None,
                gpus: tp.Optional[int] = None, overrides: tp.Sequence[str] = (), echo: bool = True,
                outputs: tp.Optional[Path] = paths.OUTPUTS_DIR, codec_check_every: tp.Optional[int] = None,
                codec_check_samples: tp.Optional[int] = None, rerun: bool = False,
                env: tp.Optional[tp.Mapping[str, str]] = None, wandb: tp.Optional[str] = None,
                nodes: tp.Optional[int] = None, node_rank: tp.Optional[int] = None,
                master_addr: tp.Optional[str] = None, master_port: tp.Optional[int] = None) -> dora.DoraRun:
    """Train (or resume) an EnCodec codec with ``dora run`` on the compression solver.

    An XP that already trained all its epochs is not launched again (``rerun=True`` launches it anyway;
    AudioCraft then reloads it and re-runs its final evaluation stages).
    ``env``: extra environment variables for the Dora processes (e.g. ``STABILITY_MAX_NAN_RATIO``, which
    tune the run without changing its XP signature). Checks manifests and disk first; afterwards records the run in the XP folder and publishes its
    checkpoints to ``<outputs>/Checkpoints Small/<sig>/`` (``outputs=None``: not published).
    Every ``codec_check_every`` epochs (default ``$CODEC_CHECK_EVERY`` or 10; 0 = off) a codec quality
    check of ``codec_check_samples`` validation segments goes to ``<outputs>/codec_quality_check/<sig>/``.
    ``wandb``: a W&B project (default ``$WANDB_PROJECT``; None and unset: off); see :mod:`musicpipe.tracking`.
    ``nodes``/``node_rank``/``master_addr``/``master_port`` (default: ``$NNODES``/``$NODE_RANK``/``$MASTER_ADDR``/
    ``$MASTER_PORT`` and the other names of :data:`musicpipe.multinode.ENV_NAMES`): more than one node runs this
    node's share under torchrun (:func:`node_spec`); run the same call on every node, over one shared workspace.
    """
    spec = presets.load_preset(preset)
    dataset = dataset or spec.dataset
    node = node_spec(spec, gpus, nodes, node_rank, master_addr, master_port)
    counts = check_manifests(dataset, workspace)
    check_data(dataset, workspace)
    check_disk(workspace)
    args = presets.dora_run_args(spec, "compression", dset=dataset, epochs=epochs, batch_size=batch_size,
                                 segment_seconds=segment_seconds, gpus=gpus, overrides=overrides)
    logger.info("codec on %s (%d train / %d valid files), preset %s", dataset, counts["train"], counts["valid"],
                preset)
    env = {**(env or {}), **({"MUSICPIPE_OUTPUTS": str(outputs)} if outputs is not None else {})}
    if codec_check_every is not None:
        env["CODEC_CHECK_EVERY"] = str(int(codec_check_every))
    if codec_check_samples is not None:
        env["CODEC_CHECK_SAMPLES"] = str(int(codec_check_samples))
    env.update(_wandb_env(wandb, env, kind="compression", preset=preset, dataset=dataset))
    run = _launch(args, workspace, echo, env, rerun, node=node, dataset=dataset)
    return _finish(run, workspace, outputs, kind="compression", preset=preset, dataset=dataset, args=args,
                   node=node)


def train_lm(preset: str, codec: tp.Optional[str] = None, dataset: tp.Optional[str] = None,
             workspace: tp.Optional[tp.Union[str, Path]] = None, *, conditioning: tp.Optional[str] = None,
             init_from: tp.Optional[str] = None, epochs: tp.Optional[int] = None,
             batch_size: tp.Optional[int] = None, segment_seconds: tp.Optional[float] = None,
             gpus: tp.Optional[int] = None, overrides: tp.Sequence[str] = (), echo: bool = True,
             outputs: tp.Optional[Path] = paths.OUTPUTS_DIR, rerun: bool = False,
             env: tp.Optional[tp.Mapping[str, str]] = None, wandb: tp.Optional[str] = None,
             token_cache: tp.Optional[bool] = None, cache_workers: int = 0, nodes: tp.Optional[int] = None,
             node_rank: tp.Optional[int] = None, master_addr: tp.Optional[str] = None,
             master_port: tp.Optional[int] = None) -> dora.DoraRun:
    """Train (or resume) a MusicGen LM: from scratch on ``codec``, or fine-tuning the release ``init_from``.

    ``codec``: a signature, an XP folder or checkpoint, ``latest`` (:meth:`musicpipe.xp.XP.latest`: the codec
    trained on ``dataset`` whose checkpoint was written last), or a released codec (:func:`resolve_codec`).
    ``init_from``: a Hugging Face id (``facebook/musicgen-small``) or a release folder (``musicpipe export``);
    see :func:`plan_lm`. The XP signature changes with the init source; re-running the same call resumes the
    same XP (its own checkpoint, not the release again). Refuses a codec whose sample rate differs from the
    dataset's. ``env``, ``wandb`` and re-runs as in :func:`train_codec`.
    ``token_cache`` (default: the preset's ``token_cache``): train from the dataset's token store for this codec
    (:mod:`musicpipe.token_cache`), building or updating it first (``cache_workers`` decoding processes); the
    XP signature is the same with or without it, and the XP's record names the store.
    ``nodes``...``master_port``: a multi-node launch, as in :func:`train_codec`; with the token cache, node 0 builds
    the store and the other nodes refuse until it is complete (build it first: ``musicpipe cache-tokens``).
    """
    node = node_spec(presets.load_preset(preset), gpus, nodes, node_rank, master_addr, master_port)
    check_manifests(dataset or presets.load_preset(preset).dataset, workspace)
    check_data(dataset or presets.load_preset(preset).dataset, workspace)
    check_disk(workspace)
    plan = plan_lm(preset, codec, dataset, workspace, conditioning=conditioning, init_from=init_from, epochs=epochs,
                   batch_size=batch_size, segment_seconds=segment_seconds, gpus=gpus, overrides=overrides)
    info = plan.codec
    rates = {r.sample_rate for r in manifests.read_manifest(paths.dataset_dir(plan.dataset, workspace) / "egs" /
                                                            "train")}
    if rates != {info.sample_rate}:
        raise TrainingInputError(f"codec {info.sig} works at {info.sample_rate} Hz but dataset {plan.dataset!r} is at "
                                 f"{sorted(rates)} Hz: prepare the data at the codec's rate or train a codec on it")
    logger.info("LM on %s with codec %s (n_q=%d, card=%d), conditioning %s%s", plan.dataset, info.sig, info.n_q,
                info.card, plan.conditioning, f", fine-tuning {plan.init_from}" if plan.init_from else "")
    env = {**plan.env, **(env or {})}
    env.update(_wandb_env(wandb, env, kind="musicgen", preset=preset, dataset=plan.dataset, codec=info.sig,
                          conditioning=plan.conditioning, **({"init_from": plan.init_from} if plan.init_from else {})))
    use_cache = presets.load_preset(preset).token_cache if token_cache is None else bool(token_cache)
    store: tp.Dict[str, str] = {}

    def build_store() -> tp.Dict[str, str]:
        if node is not None and node.node_rank:
            state = token_store.store_state(info.sig, plan.dataset, workspace, checkpoint=info.compression_checkpoint)
            if state.get("state") != "current":
                raise TrainingInputError(f"node {node.node_rank}: the token store of codec {info.sig} on "
                                         f"{plan.dataset} is {state.get('state')} ({state.get('message')}): node 0 "
                                         "builds it; run `musicpipe cache-tokens` once before starting the nodes")
            store["path"] = str(state["path"])
            return {token_store.ENV: str(state["path"])}
        summary = token_store.build_store(info.sig, plan.dataset, workspace, checkpoint=info.compression_checkpoint,
                                          num_workers=cache_workers)
        print(summary.line(), flush=True)
        store["path"] = str(summary.path)
        return {token_store.ENV: str(summary.path)}

    run = _launch(plan.args, workspace, echo, env, rerun, before=build_store if use_cache else None, node=node,
                  dataset=plan.dataset, codec_checkpoint=info.compression_checkpoint)
    return _finish(run, workspace, outputs, node=node, kind="musicgen", preset=preset, dataset=plan.dataset,
                   codec=info.sig,
                   conditioning=plan.conditioning, args=plan.args,
                   **({"init_from": plan.init_from} if plan.init_from else {}),
                   **({"token_cache": store["path"]} if store else {}))

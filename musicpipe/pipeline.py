"""The notebooks' steps: one call per notebook cell, each idempotent and returning what the cell shows.

The numbered notebooks in ``notebooks/`` stay thin (imports, a ``parameters`` cell, one call per cell);
the logic is here and in the modules it calls, so it is unit-tested and usable without Jupyter.
Every step can run twice: downloads, conversions and finished trainings are detected and skipped,
and the second run returns the same results. Each notebook ends with :func:`write_summary`.

Example:
    >>> from musicpipe import pipeline
    >>> pipeline.dataset_name("fma", dataset=None, subset="fma_small_mini")
    'fma_small_mini'
    >>> pipeline.table([{"check": "ffmpeg", "status": "PASS"}]).shape
    (1, 2)
    >>> ds = pipeline.get_dataset("synthetic", "synthetic_demo", "/tmp/ws")            # doctest: +SKIP
    >>> codec = pipeline.train_codec("demo_cpu", ds["dataset"], "/tmp/ws")              # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import typing as tp
from pathlib import Path

from musicpipe import combine as combine_mod
from musicpipe import atomic, doctor, evaluation, inspection, install, multinode, notebooks, paths, presets, release
from musicpipe import tracking
from musicpipe import training
from musicpipe import report as report_mod
from musicpipe.xp import XP
from training_checks import codec_quality_check as cqc
from training_checks import fixed_seed_sampler as fss
from training_checks.preflight import run_preflight
from training_checks.validate_conditioning import validate_conditioning

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]


class PipelineError(RuntimeError):
    """A notebook step cannot continue; the message says which file/XP and why (and what to do)."""


def table(rows: tp.Union[tp.Sequence[tp.Mapping[str, tp.Any]], tp.Mapping[str, tp.Any]]) -> tp.Any:
    """A pandas DataFrame of ``rows`` (a list of dicts, or one dict shown as key/value rows) for display."""
    import pandas as pd

    if isinstance(rows, tp.Mapping):
        return pd.DataFrame({"key": list(rows), "value": [str(v) for v in rows.values()]})
    return pd.DataFrame(list(rows))


def _outputs(outputs: tp.Optional[PathLike]) -> Path:
    return Path(outputs) if outputs not in (None, "") else paths.OUTPUTS_DIR


# ----------------------------------------------------------------------------------------------- environment


def check_environment(workspace: tp.Optional[PathLike] = None, install_missing: bool = False) -> tp.Dict[str, tp.Any]:
    """The doctor's checks; with ``install_missing``, missing system tools are installed first (root + apt)."""
    installed = []
    if install_missing:
        for command in install.SYSTEM_TOOLS:
            if install.shutil.which(command) is None and install.ensure_tool(command) is not None:
                installed.append(command)
    rows = doctor.run_checks(workspace)
    checks = [{"check": r.name, "status": r.status, "detail": r.detail} for r in rows]
    failed = [c for c in checks if c["status"] == doctor.FAIL]
    logger.info("environment: %d checks, %d failed%s", len(checks), len(failed),
                f", installed {', '.join(installed)}" if installed else "")
    return {"ok": not failed, "checks": checks, "failed": [c["check"] for c in failed], "installed": installed,
            "workspace": str(paths.workspace_root(workspace))}


def require(result: tp.Mapping[str, tp.Any], what: str) -> None:
    """Stop the notebook (raise) when a check result is not ok, naming what failed."""
    if not result.get("ok", False):
        raise PipelineError(f"{what} failed: {', '.join(map(str, result.get('failed', []))) or 'see above'}")


# -------------------------------------------------------------------------------------------------- datasets


def dataset_name(source: str, dataset: tp.Optional[str], subset: str = "fma_small_mini") -> str:
    """The dataset name a source prepares: FMA's is its subset, MTG-Jamendo's is fixed, others are chosen.

    >>> dataset_name("synthetic", "my_set"), dataset_name("mtg_jamendo", None)
    ('my_set', 'mtg_jamendo')
    """
    from musicpipe import sources

    try:
        name = sources.get(source).dataset({"subset": subset, "name": dataset})
    except sources.SourceError as exc:
        raise PipelineError(str(exc)) from None
    if not name:
        raise PipelineError(f"source {source!r} needs a dataset name")
    return name


def get_dataset(source: str, dataset: tp.Optional[str] = None, workspace: tp.Optional[PathLike] = None, *,
                subset: str = "fma_small_mini", num_tracks: int = 0, parts: str = "0-3",
                variant: str = "audio-low", mirror: tp.Optional[str] = None,
                metadata_mirror: tp.Optional[str] = None, input_dir: tp.Optional[PathLike] = None,
                metadata_csv: tp.Optional[PathLike] = None, tracks_per_genre: int = 4, duration: float = 10.0,
                seed: int = 0, segment_seconds: float = 10.0, sample_rate: int = 32000,
                num_jobs: tp.Optional[int] = None, split: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """Download (public sources) and prepare a dataset; both skip what is already done.

    ``source``: a name in :data:`musicpipe.sources.SOURCES`: ``fma`` (``subset``, ``num_tracks`` for the mini
    subsets), ``mtg_jamendo`` (``parts``, ``variant``), ``folder`` (``input_dir``, ``metadata_csv``) or
    ``synthetic`` (``tracks_per_genre``, ``duration``, ``seed``); each step gets the arguments it takes.
    ``split``: ``artist`` | ``track`` | ``official``; default the source's (``official`` for MTG-Jamendo: its
    published split-0, artist-disjoint, so it combines with others without leaks; else ``artist``).
    Returns the dataset name, prepare's counts and where things are.
    """
    from musicpipe import sources
    from musicpipe.prepare import PrepareConfig

    name = dataset_name(source, dataset, subset)
    src = sources.get(source)
    config = PrepareConfig(sample_rate=sample_rate, segment_seconds=segment_seconds, num_jobs=num_jobs, seed=seed,
                           split=split or src.default_split)
    values = dict(subset=subset, num_tracks=num_tracks, parts=parts, variant=variant, mirror=mirror,
                  metadata_mirror=metadata_mirror, input_dir=input_dir, metadata_csv=metadata_csv, name=name,
                  tracks_per_genre=tracks_per_genre, duration=duration, seed=seed)
    try:
        if src.download is not None:
            src.download(workspace, **src.pick("download", values))
        report = src.prepare(workspace, config, **src.pick("prepare", values))
    except sources.SourceError as exc:
        raise PipelineError(f"{source}: {exc}") from None
    root = paths.dataset_dir(name, workspace)
    return {"dataset": name, "source": source, "counts": dict(report.get("counts", {})), "folder": str(root),
            "manifests": {s: str(root / "egs" / s / "data.jsonl") for s in ("train", "valid")}}


def inspect(dataset: str, workspace: tp.Optional[PathLike] = None) -> str:
    """The dataset's inspection as text (counts, durations, genre/artist balance)."""
    return inspection.format_inspection(inspection.inspect_dataset(dataset, workspace))


def combine(datasets: tp.Sequence[str], name: str, workspace: tp.Optional[PathLike] = None) -> tp.Dict[str, tp.Any]:
    """Combine prepared datasets into ``name`` (symlinks; re-running rewrites the same manifests)."""
    return combine_mod.combine_datasets(list(datasets), name, workspace)


# -------------------------------------------------------------------------------------------------- training


def _run_info(run: tp.Any) -> tp.Dict[str, tp.Any]:
    return {"xp": run.sig, "folder": str(run.folder), "checkpoint": str(run.checkpoint),
            "epochs": len(run.history()), "skipped": bool(run.skipped), "dataset": run.xp.dataset,
            "tensorboard": tracking.tensorboard_command(run.folder.parents[3])}


def _check_report(report: tp.Any, lines_key: str) -> tp.Dict[str, tp.Any]:
    """A training_checks report (PASS/WARN/FAIL lines under ``lines_key``) as the dict the notebooks show."""
    data = report.to_dict()
    failed = [c["name"] for c in data.get(lines_key, []) if c.get("status") == "FAIL"]
    return {**data, "ok": report.ok, "failed": failed, "text": report.format()}


def preflight(dataset: str, solver: str = "compression", workspace: tp.Optional[PathLike] = None, *,
              preset: str = "demo_cpu", codec: tp.Optional[str] = None, conditioning: tp.Optional[str] = None,
              gpus: tp.Optional[int] = None, init_from: tp.Optional[str] = None,
              token_cache: tp.Optional[bool] = None, nodes: tp.Optional[int] = None) -> tp.Dict[str, tp.Any]:
    """``training_checks.preflight`` as a dict (``ok``, ``failed``, ``text``); :func:`require` stops on FAIL.
    ``nodes``: a multi-node launch (default ``$NNODES``/``$NUM_NODES``... as training reads them)."""
    if nodes is None:
        try:
            nodes = multinode.nodes_from_env()
        except multinode.MultiNodeError as exc:
            raise PipelineError(str(exc)) from None
    report = run_preflight(dataset, solver=solver, codec=codec, preset=preset, workspace=workspace,
                           conditioner=_checkable(conditioning), init_from=init_from, gpus=gpus,
                           token_cache=token_cache, nodes=nodes)
    return _check_report(report, "results")


def train_codec(preset: str, dataset: str, workspace: tp.Optional[PathLike] = None, *,
                outputs: tp.Optional[PathLike] = None, epochs: tp.Optional[int] = None,
                batch_size: tp.Optional[int] = None, gpus: tp.Optional[int] = None,
                codec_check_every: tp.Optional[int] = None, codec_check_samples: tp.Optional[int] = None,
                overrides: tp.Sequence[str] = (), wandb_project: tp.Optional[str] = None,
                nodes: tp.Optional[int] = None, node_rank: tp.Optional[int] = None,
                master_addr: tp.Optional[str] = None, master_port: tp.Optional[int] = None) -> tp.Dict[str, tp.Any]:
    """Train (resume, or skip when finished) the codec; returns its XP, folder, checkpoint, epochs and the
    command that opens TensorBoard. ``wandb_project``: log to W&B (default ``$WANDB_PROJECT``; unset: off).
    ``nodes``...``master_port``: this machine's share of a multi-node run (default: the cluster's variables,
    ``$NUM_NODES``/``$NODE_RANK``/``$MASTER_ADDR``...); run the same notebook on every node."""
    run = training.train_codec(preset, dataset, workspace, epochs=epochs, batch_size=batch_size, gpus=gpus,
                               overrides=overrides, outputs=_outputs(outputs), codec_check_every=codec_check_every,
                               codec_check_samples=codec_check_samples, wandb=wandb_project, nodes=nodes,
                               node_rank=node_rank, master_addr=master_addr, master_port=master_port)
    return _run_info(run)


def train_lm(preset: str, dataset: str, codec: tp.Optional[str] = "latest",
             workspace: tp.Optional[PathLike] = None, *, conditioning: tp.Optional[str] = None,
             init_from: tp.Optional[str] = None, outputs: tp.Optional[PathLike] = None,
             epochs: tp.Optional[int] = None, batch_size: tp.Optional[int] = None, gpus: tp.Optional[int] = None,
             overrides: tp.Sequence[str] = (), wandb_project: tp.Optional[str] = None,
             token_cache: tp.Optional[bool] = None, nodes: tp.Optional[int] = None,
             node_rank: tp.Optional[int] = None, master_addr: tp.Optional[str] = None,
             master_port: tp.Optional[int] = None) -> tp.Dict[str, tp.Any]:
    """Train (resume, or skip when finished) the MusicGen LM on ``codec``, or fine-tune the release ``init_from``.

    Returns the XP, folder, checkpoint, epochs, conditioning, the codec and dataset it trained on, the
    release it started from (``init_from``, None from scratch), the token store it trained from (None: audio)
    and the command that opens TensorBoard. ``wandb_project``: log to W&B (default ``$WANDB_PROJECT``; unset: off).
    ``token_cache``: train from the dataset's token store (None: the preset's setting).
    ``nodes``...``master_port``: a multi-node run, as in :func:`train_codec`.
    """
    run = training.train_lm(preset, codec, dataset, workspace, conditioning=conditioning, init_from=init_from,
                            epochs=epochs, batch_size=batch_size, gpus=gpus, overrides=overrides,
                            outputs=_outputs(outputs), wandb=wandb_project, token_cache=token_cache, nodes=nodes,
                            node_rank=node_rank, master_addr=master_addr, master_port=master_port)
    record = run.xp.record
    return {**_run_info(run), "conditioning": record.get("conditioning"), "codec": record.get("codec"),
            "dataset": run.xp.dataset, "init_from": record.get("init_from"), "token_cache": record.get("token_cache")}


def _checkable(conditioning: tp.Optional[str]) -> tp.Optional[str]:
    """What the checks know (none/genre/text) for a release's conditioner set, e.g. ``description+self_wav``."""
    if conditioning is None or conditioning in ("none", "genre", "text"):
        return conditioning
    names = conditioning.split("+")
    return "text" if "description" in names else "genre" if "genre" in names else "none"


def check_conditioning(dataset: str, conditioning: str = "none", workspace: tp.Optional[PathLike] = None, *,
                       num_samples: int = 100) -> tp.Dict[str, tp.Any]:
    """``training_checks.validate_conditioning`` as a dict (``ok``, ``failed``, ``text``, shares, tokens)."""
    report = validate_conditioning(dataset, num_samples=num_samples, conditioner=_checkable(conditioning) or "none",
                                   workspace=workspace)
    return _check_report(report, "checks")


def fixed_seed_samples(xp: str, workspace: tp.Optional[PathLike] = None, *, outputs: tp.Optional[PathLike] = None,
                       duration: float = 5.0, seed: int = 0, prompt_seconds: tp.Optional[float] = None
                       ) -> tp.Dict[str, tp.Any]:
    """``training_checks.fixed_seed_sampler`` on every epoch not yet sampled: ``<outputs>/samples/``.

    Returns the sampler's summary plus ``generated_epochs`` (what this call sampled: empty on a re-run),
    ``rows`` (one per epoch, for a table) and ``latest_files`` (the last epoch's WAVs, to listen to).
    ``prompt_seconds`` (of real audio the continuation starts from): default 2 s, at most half of ``duration``.
    """
    prompt = prompt_seconds if prompt_seconds is not None else min(2.0, duration / 2)
    summary = fss.run_sampler(xp, workspace=workspace, outputs=_outputs(outputs), duration=duration, seed=seed,
                              prompt_seconds=prompt)
    samples = Path(summary["samples_dir"])
    rows = [{"epoch": e, "folder": str(samples / fss.epoch_dir_name(e)),
             "wavs": len(list((samples / fss.epoch_dir_name(e)).glob("*.wav"))),
             "status": "sampled now" if e in summary["sampled"] else "already sampled"} for e in summary["epochs"]]
    latest = sorted((samples / fss.epoch_dir_name(max(summary["epochs"]))).glob("*.wav"))
    return {**summary, "generated_epochs": list(summary["sampled"]), "rows": rows,
            "latest_files": [str(f) for f in latest]}


def evaluate(xp: str, workspace: tp.Optional[PathLike] = None, *, outputs: tp.Optional[PathLike] = None,
             num_clips: int = 16, seed: int = 0) -> tp.Dict[str, tp.Any]:
    """``musicpipe evaluate`` on every epoch with a checkpoint (epochs already evaluated are skipped).

    Returns ``rows`` (one per epoch: FAD of the LM, the codec floor, real vs real) and ``folder``.
    """
    results = evaluation.evaluate_epochs(xp, workspace, num_clips=num_clips, seed=seed, outputs=_outputs(outputs))
    rows = [{"epoch": r["epoch"], "fad_lm": r["fad"]["lm"], "fad_codec_floor": r["fad"]["codec_floor"],
             "fad_real_vs_real": r["fad"]["real_vs_real"], "clips": r["settings"]["num_clips"],
             "status": "already evaluated" if r["skipped"] else "evaluated now"} for r in results]
    return {"xp": xp, "rows": rows, "folder": str(Path(results[-1]["folder"]).parent) if results else None}


def codec_quality(xp: str, workspace: tp.Optional[PathLike] = None, *, outputs: tp.Optional[PathLike] = None,
                  num_samples: int = 5, seed: int = 0) -> tp.Dict[str, tp.Any]:
    """The codec quality check of XP ``xp``; reused when it already ran on this checkpoint with these settings."""
    out = _outputs(outputs) / "codec_quality_check" / xp
    ckpt = XP.resolve(xp, workspace).checkpoint
    stamp = {"checkpoint_mtime_ns": ckpt.stat().st_mtime_ns if ckpt.exists() else None,
             "num_samples": num_samples, "seed": seed}
    stamp_file = out / ".musicpipe-check.json"
    summary_file = out / "summary.json"
    if summary_file.exists() and stamp_file.exists():  # the same check already ran: show its results
        try:
            if json.loads(stamp_file.read_text()) == stamp:
                logger.info("codec quality check of %s already done for this checkpoint: %s", xp, summary_file)
                return {**json.loads(summary_file.read_text()), "skipped": True, "folder": str(out)}
        except ValueError:
            pass
    summary = cqc.run_check(xp, workspace=workspace, num_samples=num_samples, output=out, seed=seed)
    atomic.write_json(stamp_file, stamp)
    return {**summary, "skipped": False, "folder": str(out)}


def codec_pairs(check: tp.Mapping[str, tp.Any]) -> tp.Tuple[tp.List[str], tp.List[str]]:
    """Files and labels of a codec check's original/reconstructed pairs, for :func:`listen`."""
    files, labels = [], []
    for s in check.get("samples", []):
        for role in ("original", "reconstructed"):
            files.append(str(Path(check["folder"]) / s[role]))
            labels.append(f"sample {s['index']} {role} ({s['si_snr_db']:.1f} dB SI-SNR)")
    return files, labels


def report(xp: str, workspace: tp.Optional[PathLike] = None, *, outputs: tp.Optional[PathLike] = None
           ) -> tp.Dict[str, tp.Any]:
    """Plots, health findings and the HTML page of a run: ``page``, ``health``, ``findings``, ``plots``."""
    folder = report_mod.write_report(xp, workspace, _outputs(outputs))
    data = json.loads((folder / "summary.json").read_text())
    findings = [{k: f.get(k) for k in ("level", "code", "message")} for f in data.get("findings", [])]
    return {"xp": xp, "page": str(folder / "index.html"), "health": data.get("health"), "findings": findings,
            "plots": [str(folder / f) for f in data.get("files", []) if str(f).endswith(".png")]}


def listen(files: tp.Sequence[PathLike], labels: tp.Optional[tp.Sequence[str]] = None) -> tp.Any:
    """Audio players for ``files`` (one per line, labelled) to show in a notebook cell."""
    import html

    from IPython.display import HTML, Audio

    labels = list(labels) if labels is not None else [Path(f).name for f in files]
    rows = [f"<div><b>{html.escape(str(label))}</b>{Audio(filename=str(f))._repr_html_()}</div>"
            for f, label in zip(files, labels)]
    return HTML("".join(rows))


def images(files: tp.Sequence[PathLike]) -> tp.List[tp.Any]:
    """``IPython.display.Image`` objects for PNG files (e.g. a report's plots) to display."""
    from IPython.display import Image

    return [Image(filename=str(f)) for f in files]


# -------------------------------------------------------------------------------------------------- summaries


def summary_path(notebook: str, outputs: tp.Optional[PathLike] = None) -> Path:
    """``outputs/notebooks/<notebook>.summary.json`` (``notebook``: its path in notebooks/ without ``.ipynb``)."""
    return notebooks.summary_path(notebook, outputs)


def write_summary(notebook: str, data: tp.Mapping[str, tp.Any], outputs: tp.Optional[PathLike] = None,
                  produced: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> Path:
    """The notebook's last cell: what it produced and where; ``produced`` is what later notebooks default to."""
    return notebooks.write_summary(notebook, data, outputs, produced)


def read_summary(notebook: str, outputs: tp.Optional[PathLike] = None) -> tp.Dict[str, tp.Any]:
    """A notebook's summary (e.g. the codec XP notebook 02 trained)."""
    try:
        return notebooks.read_summary(notebook, outputs)
    except notebooks.NotebookError as exc:
        raise PipelineError(str(exc)) from None


def chain_inputs(notebook: str, outputs: tp.Optional[PathLike] = None, *, preset: tp.Optional[str] = None,
                 dataset: tp.Optional[str] = None, codec: tp.Optional[str] = None,
                 needs_codec: bool = False, init_from: tp.Optional[str] = None,
                 conditioning: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """What a training notebook works on: its own parameters when set, else what the chain handed forward.

    - ``dataset``: the parameter; else the dataset the newest earlier notebook produced (01d's combined set
      after 01b/01c, 02's dataset before 03); else the preset's dataset.
    - ``codec`` (``needs_codec``): the parameter; else, fine-tuning (``init_from``), None: the release's own
      codec; else the codec XP notebook 02 produced, when it trained on this dataset; else ``latest``
      (:meth:`musicpipe.xp.XP.latest`: the newest codec on the dataset).
    - ``conditioning`` (``needs_codec``): the parameter; else the release's own conditioners when fine-tuning;
      else ``none``.

    Returns ``{"dataset", "dataset_from"}`` plus, with ``needs_codec``, ``"codec", "codec_from",
    "conditioning"`` (``*_from``: ``parameter``, the upstream summary's path, ``preset <name>``, ``latest`` or
    ``release``).

    >>> chain_inputs("03_audiocraft_train_musicgen_uncond_debug", "/nonexistent", dataset="d", codec="0a1b2c3d",
    ...              needs_codec=True)
    {'dataset': 'd', 'dataset_from': 'parameter', 'codec': '0a1b2c3d', 'codec_from': 'parameter', 'conditioning': 'none'}
    """
    out: tp.Dict[str, tp.Any] = {}
    if dataset not in (None, ""):
        out.update(dataset=dataset, dataset_from="parameter")
    else:
        found = notebooks.produced_upstream(notebook, "dataset", outputs)
        if found is not None:
            out.update(dataset=found[1]["dataset"], dataset_from=str(summary_path(found[0], outputs)))
        elif preset:
            out.update(dataset=presets.load_preset(preset).dataset, dataset_from=f"preset {preset}")
        else:
            raise PipelineError(f"{notebook}: no dataset given, none produced by an earlier notebook and no preset")
    if needs_codec:
        found = notebooks.produced_upstream(notebook, "codec", outputs)
        if codec not in (None, "", "latest"):
            out.update(codec=codec, codec_from="parameter")
        elif init_from not in (None, "") and codec in (None, ""):
            out.update(codec=None, codec_from="release")
        elif codec != "latest" and found is not None and found[1].get("dataset") == out["dataset"]:
            out.update(codec=found[1]["codec"], codec_from=str(summary_path(found[0], outputs)))
        else:
            out.update(codec="latest", codec_from="latest")
        if conditioning not in (None, ""):
            out["conditioning"] = conditioning
        elif init_from not in (None, ""):
            try:
                out["conditioning"] = release.Release.resolve(init_from).conditioning
            except release.ReleaseError as exc:
                raise PipelineError(f"init_from {init_from}: {exc}") from None
        else:
            out["conditioning"] = "none"
    logger.info("%s works on %s", notebook, ", ".join(f"{k}={v}" for k, v in out.items()))
    return out

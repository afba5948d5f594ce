"""Run the numbered notebooks headless with papermill, one chain after another (``make demo``, ``make pipeline``).

A chain is an ordered list of notebooks. Parameters come from a YAML file (papermill's ``-f``, e.g.
``params/demo_cpu.yaml``) plus ``key=value`` overrides; each notebook receives only the parameters
its ``parameters`` cell declares. Executed copies go to ``outputs/notebooks/<same relative path>``;
each notebook writes ``outputs/notebooks/<name>.summary.json`` (:func:`musicpipe.pipeline.write_summary`).

Example:
    >>> from musicpipe.notebooks import CHAINS, chain_for
    >>> [Path(p).name for p in CHAINS["fma_small_mini"]][:2]
    ['01_fma_small_mini_setup.ipynb', '01b_fma_small_mini_downloader.ipynb']
    >>> chain_for("fma_large") == CHAINS["fma_large"]
    True
    >>> run_chain("all_files", params_file="params/demo_cpu.yaml")    # doctest: +SKIP

From the shell (what ``make demo`` runs)::

    musicpipe pipeline --chain all_files --params params/demo_cpu.yaml
"""

from __future__ import annotations

import json
import logging
import time
import typing as tp
from pathlib import Path

from musicpipe import atomic, paths

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = paths.REPO_ROOT / "notebooks"
PARAMS_DIR = paths.REPO_ROOT / "params"
_SMALL = "fma/small/"
_LARGE = "fma/large/"
_LM = "03_audiocraft_train_musicgen_uncond_debug.ipynb"
CHAINS: tp.Dict[str, tp.List[str]] = {
    # FMA small mini on a pod: environment, download + prepare, codec, LM
    "fma_small_mini": [_SMALL + "01_fma_small_mini_setup.ipynb", _SMALL + "01b_fma_small_mini_downloader.ipynb",
                       _SMALL + "02_audiocraft_train_compression_debug.ipynb", _LM],
    # FMA small mini + MTG-Jamendo combined ("all files"); the demo runs this chain on synthetic sources
    "all_files": [_SMALL + "01_fma_small_mini_setup.ipynb", _SMALL + "01b_fma_small_mini_downloader.ipynb",
                  _SMALL + "01c_mtg_jamendo_downloader.ipynb", _SMALL + "01d_all_files.ipynb",
                  _SMALL + "02_audiocraft_train_compression_debug.ipynb", _LM],
    "fma_large": [_LARGE + "01_fma_large_setup.ipynb", _LARGE + "01b_fma_large_downloader.ipynb",
                  _LARGE + "02_audiocraft_train_compression_debug.ipynb", _LM],
    # fine-tune a released MusicGen instead of training a codec: environment, your data, notebook 03 with init_from
    "finetune": [_SMALL + "01_fma_small_mini_setup.ipynb", _SMALL + "01b_fma_small_mini_downloader.ipynb", _LM],
}
# the parameters file a chain runs with when none is given (`make pipeline DATASET=finetune`)
DEFAULT_PARAMS: tp.Dict[str, Path] = {"finetune": PARAMS_DIR / "finetune_small.yaml"}
# the parameters the runner sets itself in every notebook that declares them
RUNNER_PARAMS = ("workspace", "outputs")


class NotebookError(RuntimeError):
    """A notebook of the chain failed; the message names it, the error and the executed copy to open."""


# ---------------------------------------------------------------------------------- summaries: results forward


def summary_path(notebook: str, outputs: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """``outputs/notebooks/<notebook>.summary.json`` (``notebook``: its path in notebooks/ without ``.ipynb``)."""
    return (Path(outputs) if outputs not in (None, "") else paths.OUTPUTS_DIR) / "notebooks" / f"{notebook}.summary.json"


def write_summary(notebook: str, data: tp.Mapping[str, tp.Any], outputs: tp.Optional[tp.Union[str, Path]] = None,
                  produced: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> Path:
    """A notebook's last cell: what it produced and where, as JSON (written atomically).

    ``produced``: what the next notebooks take as their default (``{"dataset": name}``, ``{"codec": sig}``);
    see :func:`handed_forward`.
    """
    path = summary_path(notebook, outputs)
    payload = {"notebook": notebook, **data, **({"produced": dict(produced)} if produced else {})}
    atomic.write_json(path, payload, indent=1, default=str, sort_keys=True)
    logger.info("%s: summary in %s", notebook, path)
    return path


def read_summary(notebook: str, outputs: tp.Optional[tp.Union[str, Path]] = None) -> tp.Dict[str, tp.Any]:
    """A notebook's summary; NotebookError naming the file when it is missing or not JSON."""
    path = summary_path(notebook, outputs)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NotebookError(f"{path} is missing: run the notebook {notebook} first") from None
    except ValueError as exc:
        raise NotebookError(f"{path}: not valid JSON ({exc})") from None


def upstream_notebooks(notebook: str) -> tp.List[str]:
    """The notebooks that come before ``notebook`` in any chain (names without ``.ipynb``).

    >>> upstream_notebooks("fma/large/02_audiocraft_train_compression_debug")
    ['fma/large/01_fma_large_setup', 'fma/large/01b_fma_large_downloader']
    """
    found: tp.Dict[str, None] = {}
    for chain in CHAINS.values():
        names = [n[:-len(".ipynb")] for n in chain]
        if notebook in names:
            found.update(dict.fromkeys(names[:names.index(notebook)]))
    return list(found)


def produced_upstream(notebook: str, name: str, outputs: tp.Optional[tp.Union[str, Path]] = None
                      ) -> tp.Optional[tp.Tuple[str, tp.Dict[str, tp.Any]]]:
    """``(upstream notebook, its produced dict)``: the newest summary before ``notebook`` that produced ``name``.

    The rule: among the notebooks that precede ``notebook`` in a chain, the one whose summary was written
    last and that ``produced`` ``name`` (e.g. ``dataset``: 01d's combined set after 01b and 01c ran;
    ``codec``: the XP notebook 02 trained). None when no such summary exists.
    """
    found = []
    for upstream in upstream_notebooks(notebook):
        path = summary_path(upstream, outputs)
        try:
            produced = read_summary(upstream, outputs).get("produced") or {}
        except NotebookError:
            continue
        if isinstance(produced, dict) and produced.get(name) not in (None, ""):
            found.append((path.stat().st_mtime_ns, upstream, produced))
    if not found:
        return None
    _, upstream, produced = max(found, key=lambda t: t[0])
    return upstream, produced


def handed_forward(notebook: str, name: str, given: tp.Any = None,
                   outputs: tp.Optional[tp.Union[str, Path]] = None, default: tp.Any = None) -> tp.Any:
    """``given`` when set, else what an earlier notebook produced (:func:`produced_upstream`), else ``default``."""
    if given not in (None, ""):
        return given
    found = produced_upstream(notebook, name, outputs)
    if found is None:
        logger.info("%s = %r (no earlier notebook produced one)", name, default)
        return default
    upstream, produced = found
    logger.info("%s = %r, as produced by %s", name, produced[name], summary_path(upstream, outputs))
    return produced[name]


def chain_for(name: str) -> tp.List[str]:
    if name not in CHAINS:
        raise NotebookError(f"unknown chain {name!r}: expected one of {', '.join(CHAINS)}")
    return list(CHAINS[name])


def load_params(params_file: tp.Optional[tp.Union[str, Path]] = None,
                overrides: tp.Sequence[str] = ()) -> tp.Dict[str, tp.Any]:
    """Parameters from a YAML mapping plus ``key=value`` overrides (values parsed as YAML: 3, true, [a, b]).

    >>> load_params(None, ["epochs=3", "dataset=fma_small_mini", "gpus=null"])
    {'epochs': 3, 'dataset': 'fma_small_mini', 'gpus': None}
    """
    import yaml

    params: tp.Dict[str, tp.Any] = {}
    if params_file is not None:
        path = Path(params_file)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise NotebookError(f"{path}: cannot read the parameters file ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise NotebookError(f"{path}: not valid YAML ({exc})") from None
        if data is not None and not isinstance(data, dict):
            raise NotebookError(f"{path}: expected a mapping of parameter: value")
        params.update(data or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NotebookError(f"parameter {item!r} is not of the form key=value")
        params[key.strip()] = yaml.safe_load(value) if value != "" else ""
    return params


def declared_parameters(notebook: tp.Union[str, Path]) -> tp.List[str]:
    """Names assigned in the notebook's ``parameters`` cell (papermill's own inspection)."""
    import papermill as pm

    return list(pm.inspect_notebook(str(notebook)).keys())


def notebook_parameters(notebook: str, params: tp.Mapping[str, tp.Any], declared: tp.Sequence[str]
                        ) -> tp.Dict[str, tp.Any]:
    """The parameters ``notebook`` receives: the flat ones it declares, then its own section's (which win).

    A section is keyed by the notebook's name without ``.ipynb``, with or without its folder.

    >>> notebook_parameters("fma/small/01c_mtg_jamendo_downloader.ipynb",
    ...                     {"seed": 0, "mtg_seed": 0, "01c_mtg_jamendo_downloader": {"mtg_seed": 1}},
    ...                     ["workspace", "mtg_seed"])
    {'mtg_seed': 1}
    """
    chosen = {k: v for k, v in params.items() if k in declared}
    stem = notebook[:-len(".ipynb")] if notebook.endswith(".ipynb") else notebook
    for key in dict.fromkeys((Path(stem).name, stem)):
        section = params.get(key)
        if isinstance(section, tp.Mapping):
            unknown = sorted(set(section) - set(declared))
            if unknown:
                raise NotebookError(f"parameters for {key}: {', '.join(unknown)} not declared by {notebook} "
                                    f"(it declares {', '.join(declared)})")
            chosen.update(section)
    return chosen


def output_path(notebook: str, outputs: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Where the executed copy of ``notebook`` (relative to notebooks/) goes."""
    return (Path(outputs) if outputs else paths.OUTPUTS_DIR) / "notebooks" / notebook


def run_notebook(notebook: str, params: tp.Mapping[str, tp.Any], outputs: tp.Optional[tp.Union[str, Path]] = None,
                 *, progress: bool = True, log_output: bool = True) -> Path:
    """Execute ``notebooks/<notebook>`` with the parameters it declares; returns the executed copy.

    ``params`` is flat (each notebook takes the names its ``parameters`` cell declares), and may hold a
    section per notebook (its name without ``.ipynb``, with or without its folder) whose values apply to that
    notebook only and win over the flat ones. ``progress``: papermill's per-cell progress bar; ``log_output``: the cells' output (training logs
    included) streamed to the log as it arrives.
    """
    import papermill as pm

    source = NOTEBOOKS_DIR / notebook
    if not source.exists():
        raise NotebookError(f"{source}: no such notebook")
    chosen = notebook_parameters(notebook, params, declared_parameters(source))
    out = output_path(notebook, outputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s with %s", notebook, chosen)
    try:
        pm.execute_notebook(str(source), str(out), parameters=chosen, kernel_name="python3", progress_bar=progress,
                            log_output=log_output, cwd=str(paths.REPO_ROOT))
    except pm.PapermillExecutionError as exc:
        raise NotebookError(f"{notebook} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                            f"  the executed copy with the full traceback: {out}") from None
    return out


def run_chain(chain: str, params_file: tp.Optional[tp.Union[str, Path]] = None, overrides: tp.Sequence[str] = (),
              *, workspace: tp.Optional[tp.Union[str, Path]] = None,
              outputs: tp.Optional[tp.Union[str, Path]] = None, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """Run every notebook of ``chain`` in order; returns their summaries and the HTML pages to open.

    ``params_file`` defaults to the chain's own (:data:`DEFAULT_PARAMS`, e.g. ``finetune``'s), else none.
    """
    notebooks = chain_for(chain)
    if params_file is None and chain in DEFAULT_PARAMS:
        params_file = DEFAULT_PARAMS[chain]
        logger.info("chain %s with %s", chain, params_file)
    params = load_params(params_file, overrides)
    out_root = Path(outputs) if outputs else paths.OUTPUTS_DIR
    params["workspace"] = str(paths.workspace_root(workspace if workspace is not None else params.get("workspace")))
    params["outputs"] = str(out_root)
    summaries: tp.Dict[str, tp.Any] = {}
    start = time.monotonic()
    for k, notebook in enumerate(notebooks, 1):
        t0 = time.monotonic()
        print(f"[{k}/{len(notebooks)}] {notebook} ...", flush=True)
        executed = run_notebook(notebook, params, out_root, progress=progress)
        name = notebook[:-len(".ipynb")]
        summaries[name] = read_summary(name, out_root)
        print(f"[{k}/{len(notebooks)}] {notebook}: done in {time.monotonic() - t0:.0f} s -> {executed}", flush=True)
    pages = sorted({str(p) for s in summaries.values() for p in s.get("pages", [])})
    result = {"chain": chain, "notebooks": notebooks, "summaries": summaries, "pages": pages,
              "seconds": round(time.monotonic() - start, 1), "workspace": params["workspace"],
              "outputs": str(out_root)}
    (out_root / "notebooks").mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_root / "notebooks" / f"chain_{chain}.json", result, indent=1, default=str)
    return result

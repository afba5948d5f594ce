"""``make demo``: the notebook chain through papermill on the demo parameters (synthetic music, CPU).

Runs the ``all_files`` chain (environment -> two synthetic sources prepared and combined -> codec with
its quality checks -> genre-conditioned LM with fixed-seed samples -> reports) with
``params/demo_cpu.yaml``, writes ``outputs/reports/demo_summary.json`` and returns the summary with the
HTML pages to open.

Example:
    >>> from musicpipe.demo import DEMO_PARAMS
    >>> DEMO_PARAMS.name
    'demo_cpu.yaml'
    >>> summary = run_demo(workspace="/tmp/ws")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

from musicpipe import atomic, notebooks, paths

logger = logging.getLogger(__name__)

DEMO_PARAMS = notebooks.PARAMS_DIR / "demo_cpu.yaml"
DEMO_CHAIN = "all_files"
_CODEC_NB = "fma/small/02_audiocraft_train_compression_debug"
_LM_NB = "03_audiocraft_train_musicgen_uncond_debug"


def run_demo(workspace: tp.Optional[tp.Union[str, Path]] = None, outputs: tp.Optional[Path] = None,
             overrides: tp.Sequence[str] = (), progress: bool = True) -> tp.Dict[str, tp.Any]:
    out = Path(outputs) if outputs else paths.OUTPUTS_DIR
    chain = notebooks.run_chain(DEMO_CHAIN, DEMO_PARAMS, overrides, workspace=workspace, outputs=out,
                                progress=progress)
    codec = chain["summaries"][_CODEC_NB]
    lm = chain["summaries"][_LM_NB]
    summary = {"chain": DEMO_CHAIN, "params": str(DEMO_PARAMS), "seconds": chain["seconds"],
               "workspace": chain["workspace"], "codec_xp": codec["codec"]["xp"], "lm_xp": lm["lm"]["xp"],
               "codec_si_snr_db": codec["quality"]["mean"]["si_snr_db"], "conditioning": lm["lm"]["conditioning"],
               "samples_index": lm["samples"]["index"], "pages": chain["pages"],
               "executed_notebooks": [str(notebooks.output_path(n, out)) for n in chain["notebooks"]]}
    atomic.write_json(out / "reports" / "demo_summary.json", summary, indent=2)
    return summary

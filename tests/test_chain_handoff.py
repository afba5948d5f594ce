"""Notebooks hand their results forward: a notebook's unset dataset/codec is what the chain produced before it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from musicpipe import notebooks, pipeline

B = "fma/small/01b_fma_small_mini_downloader"
C = "fma/small/01c_mtg_jamendo_downloader"
D = "fma/small/01d_all_files"
CODEC = "fma/small/02_audiocraft_train_compression_debug"
LARGE_B = "fma/large/01b_fma_large_downloader"
LARGE_CODEC = "fma/large/02_audiocraft_train_compression_debug"
LM = "03_audiocraft_train_musicgen_uncond_debug"


def _ran(out: Path, notebook: str, when: float, **produced) -> None:
    """A notebook that ran at time ``when`` (seconds ago) and produced ``produced``."""
    path = pipeline.write_summary(notebook, {"ok": True}, out, produced=produced)
    os.utime(path, (time.time() - when, time.time() - when))


def test_upstream_notebooks_come_from_the_chains() -> None:
    assert notebooks.upstream_notebooks(CODEC) == ["fma/small/01_fma_small_mini_setup", B, C, D]
    assert set(notebooks.upstream_notebooks(LM)) >= {B, C, D, CODEC, LARGE_B, LARGE_CODEC}
    assert notebooks.upstream_notebooks("fma/small/01_fma_small_mini_setup") == []


def test_all_files_chain_hands_the_combined_set_and_the_codec_forward(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    _ran(out, B, 50, dataset="fma_small_mini")
    _ran(out, C, 40, dataset="mtg_jamendo")
    _ran(out, D, 30, dataset="all_files")
    got = pipeline.chain_inputs(CODEC, out, preset="fma_small_mini")
    assert got == {"dataset": "all_files", "dataset_from": str(pipeline.summary_path(D, out))}
    _ran(out, CODEC, 20, codec="0a1b2c3d", dataset="all_files")
    lm = pipeline.chain_inputs(LM, out, preset="fma_small_mini", needs_codec=True)
    assert lm == {"dataset": "all_files", "dataset_from": str(pipeline.summary_path(CODEC, out)),
                  "codec": "0a1b2c3d", "codec_from": str(pipeline.summary_path(CODEC, out)), "conditioning": "none"}
    # explicit parameters still win, and "latest" keeps its meaning
    assert pipeline.chain_inputs(LM, out, dataset="other", codec="12345678", needs_codec=True,
                                 conditioning="genre") == {
        "dataset": "other", "dataset_from": "parameter", "codec": "12345678", "codec_from": "parameter",
        "conditioning": "genre"}
    # fine-tuning: no codec given means the release's own, not 02's
    got = pipeline.chain_inputs(LM, out, needs_codec=True, init_from="facebook/musicgen-small", conditioning="text")
    assert (got["codec"], got["codec_from"], got["conditioning"]) == (None, "release", "text")
    assert pipeline.chain_inputs(LM, out, codec="latest", needs_codec=True)["codec"] == "latest"
    # a dataset other than the one 02 trained on: the codec is not taken from 02 but found as `latest` on it
    assert pipeline.chain_inputs(LM, out, dataset="other", needs_codec=True)["codec"] == "latest"


def test_a_later_chain_is_not_fooled_by_stale_summaries(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    _ran(out, D, 500, dataset="all_files")  # an earlier all_files run
    _ran(out, CODEC, 400, codec="0a1b2c3d", dataset="all_files")
    _ran(out, B, 30, dataset="fma_small_mini")  # now the fma_small_mini chain: 01b, then 02
    assert pipeline.chain_inputs(CODEC, out, preset="fma_small_mini")["dataset"] == "fma_small_mini"
    _ran(out, CODEC, 20, codec="99999999", dataset="fma_small_mini")
    assert pipeline.chain_inputs(LM, out, needs_codec=True)["codec"] == "99999999"
    # fma_large's notebook 02 never looks at fma/small's notebooks
    _ran(out, LARGE_B, 10, dataset="fma_large")
    assert pipeline.chain_inputs(LARGE_CODEC, out, preset="fma_large")["dataset"] == "fma_large"


def test_nothing_upstream_falls_back_to_the_preset(tmp_path: Path) -> None:
    got = pipeline.chain_inputs(CODEC, tmp_path, preset="fma_large")
    assert got == {"dataset": "fma_large", "dataset_from": "preset fma_large"}
    assert pipeline.chain_inputs(LM, tmp_path, preset="demo_cpu", needs_codec=True)["codec"] == "latest"
    with pytest.raises(pipeline.PipelineError, match="no dataset given"):
        pipeline.chain_inputs(CODEC, tmp_path)
    # an unreadable summary is skipped, not fatal
    bad = pipeline.summary_path(B, tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert pipeline.chain_inputs(CODEC, tmp_path, preset="fma_large")["dataset"] == "fma_large"


def test_parameters_per_notebook_section() -> None:
    nb = "fma/small/01c_mtg_jamendo_downloader.ipynb"
    declared = notebooks.declared_parameters(notebooks.NOTEBOOKS_DIR / nb)
    flat = notebooks.load_params(None, ["mtg_seed=3", "seed=5", "workspace=/w"])
    assert notebooks.notebook_parameters(nb, flat, declared) == {"mtg_seed": 3, "workspace": "/w"}
    sectioned = {**flat, "01c_mtg_jamendo_downloader": {"mtg_source": "synthetic", "mtg_seed": 1},
                 "fma/small/01d_all_files": {"combined_name": "x"}}
    assert notebooks.notebook_parameters(nb, sectioned, declared) == {"mtg_seed": 1, "workspace": "/w",
                                                                      "mtg_source": "synthetic"}
    with pytest.raises(notebooks.NotebookError, match="nope not declared by fma/small/01d_all_files.ipynb"):
        notebooks.notebook_parameters("fma/small/01d_all_files.ipynb", {"fma/small/01d_all_files": {"nope": 1}},
                                      ["combined_name"])

"""The pod chain with the notebooks' own defaults (real FMA and MTG-Jamendo sources), against loopback servers.

Only the archive servers are replaced (the notebooks' ``mirror`` parameters); everything else is the real pod
run. On this CPU machine it must get through download, prepare and combine, then stop at the codec notebook's
preflight with a message naming the notebook, the cell and the failed check (the preset wants a GPU).
"""

from __future__ import annotations

import json

import nbformat
import pytest

from loopback import LoopbackServer
from musicpipe import notebooks
from public_fixtures import build_fma, build_mtg

pytestmark = [pytest.mark.integration, pytest.mark.notebooks]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("pod corpus")
    facts = {"fma": build_fma(root), "mtg": build_mtg(root)}
    with LoopbackServer(root) as srv:
        yield srv, facts


def test_pod_chain_downloads_prepares_combines_then_stops_at_the_gpu_preflight(server, tmp_path):
    srv, facts = server
    ws, out = tmp_path / "pod ws", tmp_path / "out"
    overrides = [f"mirror={srv.url}fma/", "num_tracks=16", "install_missing=false", "parts=0-1",
                 f"mtg_mirror={srv.url}mtg/", f"mtg_metadata_mirror={srv.url}mtgmeta/", "num_jobs=1"]
    with pytest.raises(notebooks.NotebookError) as info:
        notebooks.run_chain("all_files", None, overrides, workspace=ws, outputs=out, progress=False)
    message = str(info.value)
    assert message.startswith("fma/small/02_audiocraft_train_compression_debug.ipynb failed in cell ")
    assert "PipelineError: preflight failed: gpu" in message
    executed = out / "notebooks" / "fma" / "small" / "02_audiocraft_train_compression_debug.ipynb"
    assert str(executed) in message
    book = nbformat.read(executed, as_version=4)
    printed = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert "FAIL  gpu" in printed and "preset fma_small_mini trains on device=cuda" in printed

    summary = lambda name: json.loads((out / "notebooks" / f"{name}.summary.json").read_text())  # noqa: E731
    fma = summary("fma/small/01b_fma_small_mini_downloader")
    assert fma["dataset"] == "fma_small_mini" and fma["source"] == "fma"
    assert fma["counts"]["inputs"] == 16 and fma["counts"]["segments_train"] > 0
    mtg = summary("fma/small/01c_mtg_jamendo_downloader")
    assert mtg["dataset"] == "mtg_jamendo" and mtg["counts"]["inputs"] == len(facts["mtg"]["tracks"])
    combined = summary("fma/small/01d_all_files")
    assert combined["name"] == "all_files"
    assert combined["train"] == fma["counts"]["segments_train"] + mtg["counts"]["segments_train"]
    assert (ws / "data" / "all_files" / "egs" / "train" / "data.jsonl").exists()
    assert not (out / "notebooks" / "fma" / "small" / "02_audiocraft_train_compression_debug.summary.json").exists()

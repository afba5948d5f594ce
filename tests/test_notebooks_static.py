"""The committed notebooks: thin, stripped, parameterised, and consistent with the chains and demo parameters."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from musicpipe import notebooks, pipeline

NOTEBOOKS = sorted(notebooks.NOTEBOOKS_DIR.rglob("*.ipynb"))
REL = [p.relative_to(notebooks.NOTEBOOKS_DIR).as_posix() for p in NOTEBOOKS]
SEED_NAMES = {
    "fma/small/01_fma_small_mini_setup.ipynb", "fma/small/01b_fma_small_mini_downloader.ipynb",
    "fma/small/01c_mtg_jamendo_downloader.ipynb", "fma/small/01d_all_files.ipynb",
    "fma/small/02_audiocraft_train_compression_debug.ipynb", "fma/large/01_fma_large_setup.ipynb",
    "fma/large/01b_fma_large_downloader.ipynb", "fma/large/02_audiocraft_train_compression_debug.ipynb",
    "03_audiocraft_train_musicgen_uncond_debug.ipynb",
}


def test_the_seeds_notebooks_exist():
    assert set(REL) == SEED_NAMES


@pytest.mark.parametrize("rel", REL)
def test_notebook_is_thin_stripped_and_parameterised(rel):
    book = nbformat.read(notebooks.NOTEBOOKS_DIR / rel, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{rel}: exactly one cell tagged `parameters`"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{rel}: outputs committed"
        tree = ast.parse(cell.source)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{rel}: logic belongs in the package, not a `def` in the notebook"
    declared = notebooks.declared_parameters(notebooks.NOTEBOOKS_DIR / rel)
    assert {"workspace", "outputs"} <= set(declared)
    # the last cell writes the notebook's own summary
    assert f'pipeline.write_summary("{rel[:-len(".ipynb")]}"' in code[-1].source
    # every call is to a function that exists in the package
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pipeline":
                assert hasattr(pipeline, node.attr), f"{rel}: pipeline.{node.attr} does not exist"


@pytest.mark.parametrize("chain", sorted(notebooks.CHAINS))
def test_chains_name_existing_notebooks(chain):
    for rel in notebooks.chain_for(chain):
        assert rel in SEED_NAMES


def test_demo_parameters_are_all_declared_by_the_demo_chain():
    """A typo in params/demo_cpu.yaml would silently leave a pod default in the demo: refuse it."""
    params = notebooks.load_params(notebooks.PARAMS_DIR / "demo_cpu.yaml")
    declared = set()
    for rel in notebooks.chain_for("all_files"):
        declared |= set(notebooks.declared_parameters(notebooks.NOTEBOOKS_DIR / rel))
    assert set(params) - declared == set()
    assert params["preset"] == "demo_cpu" and params["source"] == "synthetic"


def test_finetune_chain_parameters_are_declared_and_fine_tune():
    """`make pipeline DATASET=finetune`: its default parameters reach notebook 03 as a fine-tune of a release."""
    assert notebooks.DEFAULT_PARAMS["finetune"] == notebooks.PARAMS_DIR / "finetune_small.yaml"
    params = notebooks.load_params(notebooks.DEFAULT_PARAMS["finetune"])
    declared = set()
    for rel in notebooks.chain_for("finetune"):
        declared |= set(notebooks.declared_parameters(notebooks.NOTEBOOKS_DIR / rel))
    assert set(params) - declared == set()
    lm = notebooks.notebook_parameters("03_audiocraft_train_musicgen_uncond_debug.ipynb", params,
                                       notebooks.declared_parameters(notebooks.NOTEBOOKS_DIR /
                                                                     "03_audiocraft_train_musicgen_uncond_debug.ipynb"))
    assert lm == {"preset": "finetune_small", "init_from": "facebook/musicgen-small"}
    assert "02_audiocraft_train_compression_debug.ipynb" not in " ".join(notebooks.chain_for("finetune"))


def test_load_params_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(notebooks.NotebookError, match="bad.yaml: not valid YAML"):
        notebooks.load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(notebooks.NotebookError, match="bad.yaml: expected a mapping"):
        notebooks.load_params(bad)
    with pytest.raises(notebooks.NotebookError, match="missing.yaml: cannot read"):
        notebooks.load_params(tmp_path / "missing.yaml")
    with pytest.raises(notebooks.NotebookError, match="not of the form key=value"):
        notebooks.load_params(None, ["epochs"])
    assert notebooks.load_params(None, ["datasets=[a, b]", "x="]) == {"datasets": ["a", "b"], "x": ""}
    with pytest.raises(notebooks.NotebookError, match="unknown chain 'nope'"):
        notebooks.chain_for("nope")


def test_summaries_round_trip_and_name_missing_files(tmp_path):
    path = pipeline.write_summary("fma/small/01d_all_files", {"train": 3, "where": Path("/x")}, tmp_path)
    assert path == tmp_path / "notebooks" / "fma" / "small" / "01d_all_files.summary.json"
    assert json.loads(path.read_text()) == {"notebook": "fma/small/01d_all_files", "train": 3, "where": "/x"}
    assert pipeline.read_summary("fma/small/01d_all_files", tmp_path)["train"] == 3
    with pytest.raises(pipeline.PipelineError, match="02_x.summary.json is missing: run the notebook 02_x first"):
        pipeline.read_summary("02_x", tmp_path)
    (tmp_path / "notebooks" / "bad.summary.json").write_text("{")
    with pytest.raises(pipeline.PipelineError, match="bad.summary.json: not valid JSON"):
        pipeline.read_summary("bad", tmp_path)


def test_require_stops_with_what_failed():
    pipeline.require({"ok": True}, "preflight")
    with pytest.raises(pipeline.PipelineError, match="preflight failed: manifests, disk"):
        pipeline.require({"ok": False, "failed": ["manifests", "disk"]}, "preflight")
    with pytest.raises(pipeline.PipelineError, match="unknown source 'ftp'"):
        pipeline.dataset_name("ftp", "x")
    with pytest.raises(pipeline.PipelineError, match="needs a dataset name"):
        pipeline.dataset_name("folder", None)


def test_pipeline_command_refuses_bad_input_with_exit_2(tmp_path):
    from conftest import run_cli

    res = run_cli("pipeline", "--chain", "nope", "--workspace", str(tmp_path))
    assert res.returncode == 2 and "musicpipe pipeline: error: unknown chain 'nope'" in res.stderr
    bad = tmp_path / "p.yaml"
    bad.write_text("[1, 2]\n")
    res = run_cli("pipeline", "--params", str(bad), "--workspace", str(tmp_path))
    assert res.returncode == 2 and f"{bad}: expected a mapping" in res.stderr

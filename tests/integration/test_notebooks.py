"""`musicpipe demo`: the whole notebook chain through papermill on params/demo_cpu.yaml, run twice.

The slowest test of the suite (about 4 minutes on 2 cores): deselect locally with ``-m "not notebooks"``.
The first run trains everything from an empty workspace; the second must skip every finished step
and leave manifests, checkpoints and samples as they were. The pages the chain wrote are then
opened in headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from browser import inspect_page

pytestmark = [pytest.mark.integration, pytest.mark.notebooks]

REPO = Path(__file__).resolve().parents[2]
CODEC_NB = "fma/small/02_audiocraft_train_compression_debug"
LM_NB = "03_audiocraft_train_musicgen_uncond_debug"
DATASETS = ("synthetic_demo", "synthetic_jamendo", "synthetic_all")


def _demo(ws: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MUSICPIPE_WORKSPACE"}
    return subprocess.run([sys.executable, "-m", "musicpipe", "demo", "--workspace", str(ws), "--outputs", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=1500)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(ws: Path, out: Path, summaries: dict) -> dict:
    """What must not change when the chain runs again: manifests, checkpoints, histories, samples."""
    state = {}
    for name in DATASETS:
        for split in ("train", "valid"):
            path = ws / "data" / name / "egs" / split / "data.jsonl"
            state[str(path)] = _digest(path)
    for xp in (summaries[CODEC_NB]["codec"]["xp"], summaries[LM_NB]["lm"]["xp"]):
        folder = ws / "experiments" / "audiocraft" / "xps" / xp
        state[str(folder / "history.json")] = _digest(folder / "history.json")
        state[str(folder / "checkpoint.th")] = (folder / "checkpoint.th").stat().st_mtime_ns
    for wav in sorted((out / "samples").rglob("*.wav")) + sorted((out / "codec_quality_check").rglob("*.wav")):
        state[str(wav)] = (wav.stat().st_mtime_ns, _digest(wav))
    return state


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook chain")
    ws, out = root / "demo ws", root / "outputs"
    first = _demo(ws, out)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary1 = json.loads((out / "reports" / "demo_summary.json").read_text())
    chain1 = json.loads((out / "notebooks" / "chain_all_files.json").read_text())
    state1 = _state(ws, out, chain1["summaries"])
    second = _demo(ws, out)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    chain2 = json.loads((out / "notebooks" / "chain_all_files.json").read_text())
    return {"ws": ws, "out": out, "first": first, "second": second, "summary": summary1, "chain1": chain1,
            "chain2": chain2, "state1": state1, "state2": _state(ws, out, chain2["summaries"])}


def test_first_run_produces_every_stage(demo_runs):
    out, chain, summary = demo_runs["out"], demo_runs["chain1"], demo_runs["summary"]
    last = demo_runs["first"].stdout.strip().splitlines()[-1]
    assert last.startswith("demo: ") and "genre-conditioned" in last and "index.html" in last
    for k, name in enumerate(chain["notebooks"], 1):
        assert f"[{k}/{len(chain['notebooks'])}] {name}: done" in demo_runs["first"].stdout
        executed = nbformat.read(out / "notebooks" / name, as_version=4)
        code = [c for c in executed.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), name  # every cell ran
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], name
        injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and str(demo_runs["ws"]) in injected[0].source
    s = chain["summaries"]
    assert s["fma/small/01_fma_small_mini_setup"]["ok"] is True
    demo = s["fma/small/01b_fma_small_mini_downloader"]
    assert demo["dataset"] == "synthetic_demo" and demo["counts"]["segments_train"] >= 12
    assert s["fma/small/01c_mtg_jamendo_downloader"]["dataset"] == "synthetic_jamendo"
    combined = s["fma/small/01d_all_files"]
    assert combined["train"] == demo["counts"]["segments_train"] + \
        s["fma/small/01c_mtg_jamendo_downloader"]["counts"]["segments_train"]
    codec = s[CODEC_NB]
    assert codec["codec"]["epochs"] == 2 and codec["codec"]["skipped"] is False
    # results handed forward: the parameters name the combined set only in combined_name, and set no
    # dataset or codec; 02 trains on 01d's set, 03 on that set with 02's codec
    assert combined["produced"] == {"dataset": "synthetic_all"}
    assert codec["codec"]["dataset"] == "synthetic_all"
    assert codec["produced"] == {"codec": codec["codec"]["xp"], "dataset": "synthetic_all"}
    assert s[LM_NB]["lm"]["dataset"] == "synthetic_all" and s[LM_NB]["lm"]["codec"] == codec["codec"]["xp"]
    assert math.isfinite(codec["quality"]["mean"]["si_snr_db"])
    checks = out / "codec_quality_check" / codec["codec"]["xp"]
    assert (checks / "epoch_1" / "summary.json").exists() and (checks / "epoch_2" / "summary.json").exists()
    assert len(list(checks.glob("sample_*_reconstructed.wav"))) == 3
    lm = s[LM_NB]
    assert lm["lm"]["conditioning"] == "genre" and lm["lm"]["epochs"] == 2 and lm["lm"]["skipped"] is False
    assert lm["conditioning"]["ok"] is True
    index = Path(lm["samples"]["index"])
    assert index == out / "samples" / "index.html" and index.exists()
    for epoch in (1, 2):
        assert list((out / "samples" / f"epoch_{epoch}").glob("*.wav"))
    for xp in (codec["codec"]["xp"], lm["lm"]["xp"]):
        assert (out / "reports" / xp / "index.html").exists()
        assert (out / "Checkpoints Small" / xp / "best_state.th").exists()
    assert summary["codec_xp"] == codec["codec"]["xp"] and summary["lm_xp"] == lm["lm"]["xp"]
    assert set(summary["pages"]) == {str(index), str(out / "reports" / codec["codec"]["xp"] / "index.html"),
                                     str(out / "reports" / lm["lm"]["xp"] / "index.html")}


def test_second_run_skips_finished_work_and_changes_nothing(demo_runs):
    s2 = demo_runs["chain2"]["summaries"]
    assert s2[CODEC_NB]["codec"]["skipped"] is True
    assert s2[CODEC_NB]["quality"]["skipped"] is True
    assert s2[LM_NB]["lm"]["skipped"] is True
    assert s2[LM_NB]["samples"]["generated_epochs"] == []
    assert s2[CODEC_NB]["codec"]["xp"] == demo_runs["chain1"]["summaries"][CODEC_NB]["codec"]["xp"]
    assert demo_runs["state2"] == demo_runs["state1"]  # manifests byte-identical, nothing retrained or resampled
    assert "already trained its 2 epochs" in demo_runs["second"].stdout + demo_runs["second"].stderr
    # the same results are shown
    q1 = demo_runs["chain1"]["summaries"][CODEC_NB]["quality"]["mean"]
    assert s2[CODEC_NB]["quality"]["mean"] == q1


def test_pages_render_in_headless_chromium(demo_runs):
    for page_path in demo_runs["summary"]["pages"]:
        page = inspect_page(page_path)
        assert page.console_errors == [], (page_path, page.console_errors)
        assert not page.timed_out, page_path
        for img in page.images:
            assert img["naturalWidth"] > 0, (page_path, img)
        for audio in page.audio:
            assert audio["error"] is None and audio["readyState"] >= 1, (page_path, audio)
            assert audio["duration"] and audio["duration"] > 0.5, (page_path, audio)
    samples = inspect_page(demo_runs["summary"]["samples_index"])
    assert len(samples.audio) >= 2 * 3  # two epochs (and the oracle) of the fixed prompts

"""Reports of the real tiny EnCodec and MusicGen XPs trained by the session fixtures (2 epochs each).

Reports go to the session's ``outputs`` folder (tests/conftest.py), under ``reports/<sig>/``.
"""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from musicpipe import report

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_pngs(folder: Path, summary: dict) -> None:
    import matplotlib.image

    pngs = [f for f in summary["files"] if f.endswith(".png")]
    assert pngs
    for name in pngs:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        img = matplotlib.image.imread(folder / name)
        assert img.shape[0] >= 300 and img.shape[1] >= 400 and img.std() > 0.01, (name, img.shape)


def all_series(summary: dict):
    for plot in summary["plots"]:
        for panel in plot["panels"]:
            for s in panel["series"]:
                yield plot["file"], s


def check_series_match_history(summary: dict, history: list) -> None:
    """Every per-epoch series has one point per epoch that logged it, with history's value (SI-SNR negated)."""
    checked = 0
    for file, s in all_series(summary):
        if file == "updates.png":
            continue
        expected = [(k, e[s["stage"]][s["metric"]]) for k, e in enumerate(history, start=1)
                    if s["metric"] in e.get(s["stage"], {})]
        assert s["epochs"] == [k for k, _ in expected], (file, s["label"])
        sign = -1.0 if s["transform"] else 1.0
        assert s["values"] == pytest.approx([sign * v for _, v in expected]), (file, s["label"])
        if s["stage"] in ("train", "valid"):
            assert s["epochs"] == [1, 2], (file, s["metric"], s["stage"])
        checked += 1
    assert checked >= 3


def check_table(page: str, history: list, stage: str, metrics: tuple) -> None:
    for name in metrics:
        value = history[-1][stage][name]
        assert f'title="{html.escape(repr(value), quote=True)}">{html.escape(f"{value:.4g}")}<' in page, (stage, name)


def test_codec_report(workspace, codec, outputs):
    folder = report.write_report(codec.sig, workspace, outputs)
    assert folder == outputs / "reports" / codec.sig
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    history = codec.history()
    assert len(history) == 2
    assert (summary["sig"], summary["solver"], summary["kind"], summary["epochs"]) == (codec.sig, "compression",
                                                                                       "codec", 2)
    assert summary["dataset"] == "synthetic_demo" and summary["xp_folder"] == str(codec.folder)
    assert summary["hyperparameters"]["rvq.n_q"] == 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(summary["files"])
    assert {"losses.png", "sisnr.png", "mel.png", "updates.png"} <= set(summary["files"])
    check_pngs(folder, summary)
    check_series_match_history(summary, history)
    sisnr = {s["stage"]: s for f, s in all_series(summary) if f == "sisnr.png"}
    assert sisnr["valid"]["values"] == pytest.approx([-e["valid"]["sisnr"] for e in history])
    assert sisnr["evaluate"]["epochs"] == [2]  # evaluate.every=2
    assert summary["last_metrics"]["valid"] == history[-1]["valid"]
    assert all(f["level"] in ("ok", "warn", "fail") for f in summary["findings"])
    assert "sisnr_level" in {f["code"] for f in summary["findings"]}
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert codec.sig in page and "compression" in page and html.escape(str(codec.folder)) in page
    check_table(page, history, "train", ("mel", "l1", "msspec", "g_loss", "sisnr"))
    check_table(page, history, "valid", ("mel", "l1", "msspec", "sisnr"))
    assert "SI-SNR (dB, higher is better)" in page
    for f in summary["findings"]:
        assert f">{f['level'].upper()}</span>{html.escape(f['message'])}" in page


def test_lm_report(workspace, lm_none, outputs):
    folder = report.write_report(lm_none.sig, workspace, outputs)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    history = lm_none.history()
    assert (summary["solver"], summary["kind"], summary["epochs"], summary["planned_epochs"]) == ("musicgen", "lm",
                                                                                                  2, 2)
    assert {"losses.png", "codebooks.png", "optim.png", "updates.png"} <= set(summary["files"])
    check_pngs(folder, summary)
    check_series_match_history(summary, history)
    n_q = summary["hyperparameters"]["transformer_lm.n_q"]
    codebook_panels = next(p for p in summary["plots"] if p["file"] == "codebooks.png")["panels"]
    assert [len(p["series"]) for p in codebook_panels] == [n_q] * 4
    updates = next(p for p in summary["plots"] if p["file"] == "updates.png")["panels"][0]["series"][0]
    assert updates["x"] and all(0 < x <= 2 for x in updates["x"]) and all(math.isfinite(v) for v in updates["values"])
    codes = {f["code"]: f for f in summary["findings"]}
    assert codes["complete"]["level"] == "ok" and "ppl_uniform" in codes
    page = (folder / "index.html").read_text(encoding="utf-8")
    check_table(page, history, "train", ("ce", "ppl", "lr", "grad_norm", "ce_q1", f"ce_q{n_q}"))
    check_table(page, history, "valid", ("ce", "ppl", "ce_q1", f"ppl_q{n_q}"))
    assert summary["overrides"]["conditioner"] == "none" and "<code>conditioner</code>" in page


def test_report_from_the_command_line(workspace, lm_none, tmp_path):
    res = subprocess.run([sys.executable, "-m", "musicpipe.report", lm_none.sig, "--workspace", str(workspace),
                          "--outputs", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    folder = tmp_path / "reports" / lm_none.sig
    assert res.stdout.strip() == str(folder / "index.html")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["sig"] == lm_none.sig and summary["epochs"] == 2
    check_pngs(folder, summary)


def test_missing_xp_is_a_clear_error(workspace, outputs):
    with pytest.raises(report.ReportError, match="does not exist"):
        report.write_report("00000000", workspace, outputs)

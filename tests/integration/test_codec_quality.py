"""training_checks/codec_quality_check.py on the session's trained demo codec: library call and script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

import training_checks.codec_quality_check as cqc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _assert_outputs(out: Path, summary: dict, num_samples: int, workspace: Path) -> None:
    valid = workspace / "data" / "synthetic_demo" / "egs" / "valid"
    sources = {json.loads(line)["path"] for line in (valid / "data.jsonl").read_text().splitlines() if line.strip()}
    # the demo's valid split may hold fewer segments than asked for: then all of them are checked
    assert summary["num_samples"] == min(num_samples, len(sources)) and summary["sample_rate"] == 32000
    assert summary["settings"]["num_samples"] == num_samples
    assert len({s["source"] for s in summary["samples"]}) == summary["num_samples"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["dataset"] == "synthetic_demo"
    assert Path(summary["manifest"]).resolve() == (valid / "data.jsonl").resolve()
    wavs = sorted(p.name for p in out.glob("*.wav"))
    assert wavs == sorted(f"sample_{k}_{kind}.wav" for k in range(summary["num_samples"])
                          for kind in ("original", "reconstructed"))
    assert summary["n_q"] >= 1 and summary["codes_shape"][1] == summary["n_q"]
    for k, s in enumerate(summary["samples"]):
        assert s["source"] in sources
        orig, sr_o = sf.read(out / f"sample_{k}_original.wav", dtype="float32")
        rec, sr_r = sf.read(out / f"sample_{k}_reconstructed.wav", dtype="float32")
        assert sr_o == sr_r == 32000 and orig.shape == rec.shape and len(orig) == s["num_frames"]
        assert abs(len(orig) - 10 * 32000) <= 32  # the 10 s valid segments
        for name in cqc.METRICS:
            assert math.isfinite(s[name]), (name, s)
        assert s["audiocraft_sisnr_loss"] == -s["si_snr_db"]
    for name in cqc.METRICS:
        assert math.isfinite(summary["mean"][name])
    assert summary["mean"]["audiocraft_sisnr_loss"] == -summary["mean"]["si_snr_db"]
    assert summary["mean"]["mel_distance"] > 0 and summary["mean"]["l1"] > 0


def test_run_check(workspace: Path, codec, tmp_path: Path) -> None:
    out = tmp_path / "cq lib"
    summary = cqc.run_check(codec.sig, workspace=workspace, output=out, num_samples=3)
    assert summary["xp"] == codec.sig
    _assert_outputs(out, summary, 3, workspace)
    # the same by checkpoint path, same seed: the same segments and metrics
    again = cqc.run_check(str(codec.checkpoint), workspace=workspace, output=tmp_path / "again", num_samples=3)
    assert [s["source"] for s in again["samples"]] == [s["source"] for s in summary["samples"]]
    assert again["mean"]["si_snr_db"] == pytest.approx(summary["mean"]["si_snr_db"], abs=1e-4)
    # and the default checkpoint: the workspace's latest (here its only) codec XP
    assert cqc.resolve_xp(None, workspace=workspace)[0] == codec.sig
    assert cqc.resolve_xp(None, "synthetic_demo", workspace=workspace)[0] == codec.sig


def test_cli_script(workspace: Path, codec, tmp_path: Path) -> None:
    out = tmp_path / "cq cli"
    res = subprocess.run([sys.executable, "training_checks/codec_quality_check.py", "--checkpoint", codec.sig,
                          "--workspace", str(workspace), "--num-samples", "2", "--output", str(out)],
                         cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    _assert_outputs(out, summary, 2, workspace)
    lines = res.stdout.strip().splitlines()
    si = summary["mean"]["si_snr_db"]
    assert lines[-1] == (f"codec_quality_check: {codec.sig}: {summary['num_samples']} samples, SI-SNR {si:.1f} dB "
                         f"(audiocraft loss {-si + 0.0:.1f}), mel {summary['mean']['mel_distance']:.2f} -> {out}")
    assert lines[0].split()[:3] == ["sample", "SI-SNR", "dB"] and lines[-2].startswith("mean")

    bad = subprocess.run([sys.executable, "training_checks/codec_quality_check.py", "--checkpoint", codec.sig,
                          "--workspace", str(workspace), "--dataset", "no_such_dataset", "--output",
                          str(tmp_path / "bad")], cwd=REPO, capture_output=True, text=True, env=dict(os.environ),
                         timeout=600)
    assert bad.returncode == 1
    assert "no_such_dataset" in bad.stderr and "data.jsonl: missing: no valid manifest" in bad.stderr

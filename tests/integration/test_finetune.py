"""Fine-tuning a released model, for real on CPU: the demo's genre LM, exported, stands in for facebook/musicgen-*.

The export is copied to another folder ("another machine") and fine-tuned there on a different prepared dataset
through the seed's script; the run is killed after its first epoch and the same command resumes it. A second LM
trains on the exported codec alone (`--codec DIR`), which the codec check and the sampler's oracle read too.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from musicpipe import export, generation, paths, report, training
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic
from musicpipe.xp import XP
from training_checks import codec_quality_check as cqc
from training_checks import fixed_seed_sampler as fss

pytestmark = pytest.mark.integration
OTHER = "synthetic_ft"


@pytest.fixture(scope="module")
def released(workspace, lm_genre, tmp_path_factory) -> Path:
    """The demo genre LM exported, then copied to a folder of another 'machine' (nothing points back)."""
    exported = export.export_model(lm_genre, tmp_path_factory.mktemp("export") / "out", workspace)
    other_machine = tmp_path_factory.mktemp("other machine") / "musicgen demo é"
    shutil.copytree(exported, other_machine)
    shutil.rmtree(exported)
    return other_machine


@pytest.fixture(scope="module")
def other_data(workspace):
    # other clips and artists than synthetic_demo (another seed), the same genres
    return synthetic.prepare_synthetic(OTHER, workspace, PrepareConfig(num_jobs=1, seed=1), tracks_per_genre=2,
                                       seed=1, progress=False)


def _sig(text: str) -> str | None:
    return next((line[4:].strip() for line in text.splitlines() if line.startswith("xp: ")), None)


@pytest.fixture(scope="module")
def finetuned(workspace, outputs, released, other_data, tmp_path_factory) -> dict:
    """`musicgen_train.py --init-from <folder>`, killed after epoch 1, then the same command again."""
    logs = tmp_path_factory.mktemp("finetune logs")
    cmd = [sys.executable, str(REPO / "notebooks" / "musicgen_train.py"), "--preset", "demo_cpu", "--dataset", OTHER,
           "--init-from", str(released), "--workspace", str(workspace), "--outputs", str(outputs), "--",
           "evaluate.every=10", "generate.every=10"]
    with open(logs / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        sig, deadline = None, time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            sig = sig or _sig((logs / "first.log").read_text(errors="replace"))
            if sig and XP(paths.xp_dir(sig, workspace)).epochs_done >= 1:
                break
            time.sleep(0.5)
        assert sig and proc.poll() is None, (logs / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = XP(paths.xp_dir(sig, workspace)).history
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"sig": sig, "first": first, "second": res, "xp": XP.resolve(sig, workspace)}


def test_finetune_loads_the_released_weights_and_resumes_its_own_checkpoint(workspace, lm_genre, released,
                                                                             finetuned):
    xp = finetuned["xp"]
    assert xp.kind == "lm" and xp.dataset == OTHER
    assert xp.record["init_from"] == str(released.resolve()) and xp.record["conditioning"] == "genre"
    assert xp.config["continue_from"] == f"//pretrained/{released.resolve()}"
    assert xp.config["compression_model_checkpoint"] == f"//pretrained/{released.resolve()}"
    scratch = XP.resolve(lm_genre, workspace)
    # the release's own architecture and conditioning, not a preset's
    for key in ("dim", "num_heads", "num_layers", "n_q", "card"):
        assert xp.config["transformer_lm"][key] == scratch.config["transformer_lm"][key], key
    assert xp.conditioners == ["genre"]
    # the weights were really loaded: epoch 1 starts where the released model ended, far below a first epoch
    # of the same preset from scratch
    ft_ce, scratch_ce = xp.history[0]["train"]["ce"], scratch.history[0]["train"]["ce"]
    assert ft_ce < 0.6 * scratch_ce, (ft_ce, scratch_ce)
    # killed after epoch 1 and re-run: the same XP resumed from its own checkpoint (not the release again)
    res = finetuned["second"]
    assert f"xp: {finetuned['sig']}" in res.stdout.splitlines()
    assert "Loading existing checkpoint" in res.stdout
    assert len(xp.history) == 2 and xp.history[0] == finetuned["first"][0]


def test_finetuned_xp_generates_and_reports(workspace, outputs, finetuned):
    sig = finetuned["sig"]
    wav = generation.generate(sig, workspace, num_samples=2, duration=1.0, genres=["rock", "techno"], seed=3)
    assert wav.shape[0] == 2 and wav.shape[-1] >= 32000
    assert bool(wav.isfinite().all()) and float(wav.abs().max()) > 1e-3
    folder = report.write_report(sig, workspace, outputs)
    page = (folder / "index.html").read_text()
    assert sig in page and (folder / "summary.json").exists()


def test_an_lm_trains_on_an_exported_codec_alone(workspace, outputs, codec, released, other_data, tmp_path):
    codec_only = tmp_path / "codec only"
    codec_only.mkdir()
    shutil.copy(released / "compression_state_dict.bin", codec_only)
    run = training.train_lm("demo_cpu", str(codec_only), OTHER, workspace, conditioning="genre", echo=False,
                            outputs=outputs, overrides=["evaluate.every=10", "generate.every=10"])
    xp = run.xp
    assert xp.config["compression_model_checkpoint"] == f"//pretrained/{codec_only.resolve()}"
    assert xp.record["codec"] == str(codec_only.resolve()) and "init_from" not in xp.record
    assert len(xp.history) == 2 and all(math.isfinite(e["train"]["ce"]) for e in xp.history)
    # the codec check reads the folder: the same weights as the codec XP it was exported from
    from_folder = cqc.run_check(str(codec_only), dataset=OTHER, workspace=workspace, num_samples=2,
                                output=tmp_path / "check folder")
    from_xp = cqc.run_check(codec.sig, dataset=OTHER, workspace=workspace, num_samples=2, output=tmp_path / "check xp")
    assert from_folder["release"] == str(codec_only.resolve())
    assert from_folder["mean"]["si_snr_db"] == pytest.approx(from_xp["mean"]["si_snr_db"], abs=1e-4)
    assert (tmp_path / "check folder" / "sample_0_reconstructed.wav").exists()
    # the sampler's oracle column (real audio through the codec) works from the folder too
    summary = fss.run_sampler(run.sig, workspace=workspace, outputs=tmp_path / "sampler", duration=1.0,
                              prompt_seconds=0.5, epochs=[2], max_conditions=1, num_unconditional=1)
    oracle = Path(summary["samples_dir"]) / fss.ORACLE
    assert list(oracle.glob("*.wav")) and summary["sampled"] == [2]
    # and the LM exports with that codec, for another machine
    out = export.export_model(run.sig, tmp_path / "export", workspace)
    assert (out / "compression_state_dict.bin").read_bytes() == (codec_only / "compression_state_dict.bin").read_bytes()

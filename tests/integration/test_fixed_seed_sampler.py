"""training_checks/fixed_seed_sampler.py on the session's genre-conditioned demo LM (2 epochs), run as users run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import soundfile as sf

from browser import inspect_page
from conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "training_checks" / "fixed_seed_sampler.py"
DURATION = 2.0
GENRES = {"ambient", "chiptune", "rock", "techno"}  # the synthetic_demo dataset's


def run_sampler(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                         env=dict(os.environ), cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def sampler_args(sig: str, workspace: Path, outputs: Path, *extra: str) -> list:
    return ["--xp", sig, "--workspace", str(workspace), "--outputs", str(outputs), "--duration", str(DURATION),
            "--prompt-seconds", "1", *extra]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sampled(lm_genre, workspace, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("fixed seed")
    res = run_sampler(*sampler_args(lm_genre, workspace, outputs))
    return {"sig": lm_genre, "outputs": outputs, "samples": outputs / "samples", "first": res}


def test_list_epochs(lm_genre, workspace):
    res = run_sampler("--xp", lm_genre, "--workspace", str(workspace), "--list-epochs")
    epochs = [int(m) for m in re.findall(r"^epoch\s+(\d+)\s+checkpoint_\d+\.th", res.stdout, re.M)]
    assert epochs == [1, 2], res.stdout
    assert f"fixed_seed_sampler: {lm_genre}: 2 epoch checkpoint(s) (1, 2)" in res.stdout


def test_sampling_writes_every_epoch(sampled):
    samples, sig = sampled["samples"], sampled["sig"]
    assert f"fixed_seed_sampler: {sig}: sampled epochs 1, 2; skipped none;" in sampled["first"].stdout
    assert sorted(p.name for p in samples.iterdir()) == ["epoch_1", "epoch_2", "index.html", "oracle"]
    for epoch in (1, 2):
        folder = samples / f"epoch_{epoch}"
        data = json.loads((folder / "settings.json").read_text())
        settings = data["settings"]
        assert settings["epoch"] == epoch and settings["checkpoint"]["name"] == f"checkpoint_{epoch}.th"
        assert settings["conditioning"] == "genre" and settings["seed"] == 0 and settings["duration"] == DURATION
        ids = [p["id"] for p in settings["prompts"]]
        assert ids[:2] == ["uncond_0", "uncond_1"] and ids[-1] == "continuation"
        assert sorted(ids[2:-1]) == sorted(f"genre_{g}" for g in GENRES)
        assert {p["genre"] for p in settings["prompts"] if p["kind"] == "genre"} == GENRES
        cont = settings["prompts"][-1]
        assert cont["genre"] == Path(cont["audio"]).parent.name.split("_")[0]  # the prompt's own genre
        assert Path(cont["audio"]).is_file() and "/egs/" not in cont["audio"]
        expected = {"settings.json"} | {f"{i}.{ext}" for i in ids for ext in ("wav", "png")}
        assert {p.name for p in folder.iterdir()} == expected
        for i in ids:
            info = sf.info(folder / f"{i}.wav")
            assert (info.samplerate, info.subtype, info.channels) == (32000, "PCM_16", 1)
            assert abs(info.duration - DURATION) < 1e-3 and data["files"][i]["wav"] == f"{i}.wav"
    oracle = samples / "oracle"
    assert {p.name for p in oracle.iterdir()} == {"settings.json", "continuation.wav", "continuation.png",
                                                  "reference.wav", "reference.png"}
    assert abs(sf.info(oracle / "continuation.wav").duration - DURATION) < 1e-3
    # the epochs differ (different weights), the same seed across genres gives different audio too
    rock_1, rock_2, techno_1 = ((samples / f"epoch_{e}" / f"genre_{g}.wav").read_bytes()
                                for e, g in ((1, "rock"), (2, "rock"), (1, "techno")))
    assert rock_1 != rock_2 and rock_1 != techno_1


def test_rerun_skips_finished_epochs(sampled, workspace):
    before = snapshot(sampled["samples"])
    res = run_sampler(*sampler_args(sampled["sig"], workspace, sampled["outputs"]))
    assert "sampled epochs none; skipped 1, 2;" in res.stdout
    assert "epoch 1: skipped" in res.stderr and "epoch 2: skipped" in res.stderr
    assert "Loading existing checkpoint" not in res.stderr  # no model was even loaded
    assert snapshot(sampled["samples"]) == before  # nothing rewritten, index.html included


def test_changed_settings_resample(sampled, workspace, tmp_path):
    outputs = tmp_path / "out"
    shutil.copytree(sampled["samples"], outputs / "samples")
    before = snapshot(outputs / "samples")
    res = run_sampler(*sampler_args(sampled["sig"], workspace, outputs, "--epoch", "2", "--seed", "5"))
    assert "sampled epochs 2; skipped none;" in res.stdout
    after = snapshot(outputs / "samples")
    assert all(after[k] == v for k, v in before.items() if k.startswith("epoch_1/"))
    assert after["epoch_2/genre_rock.wav"] != before["epoch_2/genre_rock.wav"]
    assert json.loads((outputs / "samples" / "epoch_2" / "settings.json").read_text())["settings"]["seed"] == 5
    assert "other settings than epoch 2 (seed 0," in (outputs / "samples" / "index.html").read_text()


def test_same_seed_same_bytes(sampled, workspace, tmp_path):
    run_sampler(*sampler_args(sampled["sig"], workspace, tmp_path, "--epoch", "1"))
    first, again = sampled["samples"], tmp_path / "samples"
    assert sorted(p.name for p in again.iterdir()) == ["epoch_1", "index.html", "oracle"]
    wavs = sorted(p.relative_to(again) for p in again.rglob("*.wav"))
    assert len(wavs) == len(list((first / "epoch_1").glob("*.wav"))) + 2
    for rel in wavs:
        assert (again / rel).read_bytes() == (first / rel).read_bytes(), rel


def test_generate_index_rewrites_the_page(sampled, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(sampled["samples"], copy / "samples")
    page = (copy / "samples" / "index.html").read_text()
    (copy / "samples" / "index.html").unlink()
    res = run_sampler("--xp", sampled["sig"], "--outputs", str(copy), "--generate-index")
    assert "index of 2 epoch(s)" in res.stdout
    assert (copy / "samples" / "index.html").read_text() == page


def check_page(samples: Path) -> None:
    """Open index.html in headless Chromium: no errors, every audio plays its WAV's duration, images load."""
    check = inspect_page(samples / "index.html", timeout=60)
    assert not check.timed_out, check
    assert check.console_errors == []
    wavs = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*.wav"))
    pngs = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*.png"))
    assert sorted(a["src"] for a in check.audio) == wavs  # each WAV once, by a relative link
    assert sorted(i["src"] for i in check.images) == pngs
    for audio in check.audio:
        target = samples / urllib.parse.unquote(audio["src"])
        assert Path(urllib.parse.unquote(urllib.parse.urlparse(audio["current_src"]).path)) == target
        assert audio["error"] is None and audio["readyState"] >= 1, audio
        assert abs(audio["duration"] - sf.info(target).duration) < 0.05, audio
    for image in check.images:
        assert image["naturalWidth"] > 0, image


def test_index_in_headless_chromium(sampled):
    check_page(sampled["samples"])


def test_index_works_when_copied_elsewhere(sampled, tmp_path):
    elsewhere = tmp_path / "shared folder é" / "samples copy"
    shutil.copytree(sampled["samples"], elsewhere)
    check_page(elsewhere)

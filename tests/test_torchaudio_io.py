"""torchaudio.load/save work in the project's environment (torchaudio 2.11 does its I/O through TorchCodec)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch
import torchaudio

from conftest import REPO


def test_torchaudio_save_then_load_round_trips_a_wav(tmp_path):
    t = np.arange(8000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    path = tmp_path / "round trip é.wav"
    torchaudio.save(str(path), torch.from_numpy(stereo), 16000)
    assert path.stat().st_size > 8000 * 2 * 2
    loaded, sample_rate = torchaudio.load(str(path))
    assert sample_rate == 16000 and tuple(loaded.shape) == (2, 8000)
    assert torch.allclose(loaded, torch.from_numpy(stereo), atol=1e-4)


def test_torchaudio_reads_what_soundfile_wrote(tmp_path):
    rng = np.random.default_rng(0)
    mono = (0.3 * rng.standard_normal(3200)).astype(np.float32)
    path = tmp_path / "pcm16.wav"
    sf.write(path, mono, 32000, subtype="PCM_16")
    expected, _ = sf.read(path, dtype="float32")
    loaded, sample_rate = torchaudio.load(str(path))
    assert sample_rate == 32000 and tuple(loaded.shape) == (1, 3200)
    assert np.allclose(loaded[0].numpy(), expected, atol=1e-4)


def test_doctor_names_the_fix_when_torchaudio_cannot_load(tmp_path):
    # torchaudio imports torchcodec when it loads a file; a torchcodec that cannot be imported is what a venv
    # without it (or without FFmpeg's shared libraries) looks like to torchaudio.
    broken = tmp_path / "site" / "torchcodec"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('torchcodec is broken here')\n")
    code = "from musicpipe import doctor; c = doctor.check_torchaudio_io(); print(c.status); print(c.detail)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    status, detail = res.stdout.strip().splitlines()[-2:]
    assert status == "FAIL"
    assert "make setup" in detail and "torchcodec==0.11.1" in detail and "ffmpeg" in detail


def test_the_pinned_torchcodec_is_installed_and_named_by_the_doctor():
    import importlib.metadata
    import re

    from musicpipe import doctor

    pin = re.search(r'"torchcodec==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert doctor.TORCHCODEC_VERSION == pin
    assert importlib.metadata.version("torchcodec") == pin

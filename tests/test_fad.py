"""The FAD maths (musicpipe.fad): closed forms, scipy's sqrtm route, singular covariances; folders of audio."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from musicpipe import evaluation, fad, tracking


def scipy_frechet(mu1, s1, mu2, s2, eps=1e-6):
    """The usual route (pytorch-fid, frechet_audio_distance): scipy.linalg.sqrtm of the product, eps offset."""
    from scipy import linalg

    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_identical_sets_give_zero() -> None:
    x = np.random.default_rng(0).normal(size=(3000, 8))
    assert fad.fad_from_embeddings(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_gaussians_equal_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 4))
    shift = np.array([1.0, -2.0, 0.5, 3.0])
    # same covariance: FAD is exactly |shift|^2, whatever the samples
    assert fad.fad_from_embeddings(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # diagonal covariances: |dmu|^2 + sum (sqrt(v1) - sqrt(v2))^2
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 1.0, 1.0])
    expected = 3.0 + float(((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert fad.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_matches_scipy_sqrtm_route_on_full_rank_covariances() -> None:
    rng = np.random.default_rng(2)
    for dim in (2, 8, 32):
        a = rng.normal(size=(500, dim)) @ rng.normal(size=(dim, dim))
        b = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim)) + 0.3
        mu1, s1 = fad.gaussian_stats(a)
        mu2, s2 = fad.gaussian_stats(b)
        ours = fad.frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_singular_covariances_are_finite_and_right() -> None:
    rng = np.random.default_rng(3)
    # fewer samples than dimensions, and a constant dimension: rank-deficient covariances
    a = np.hstack([rng.normal(size=(10, 40)), np.zeros((10, 1))])
    b = np.hstack([rng.normal(size=(12, 40)) + 1.0, np.ones((12, 1))])
    value = fad.fad_from_embeddings(a, b)
    assert math.isfinite(value) and value > 0
    assert fad.fad_from_embeddings(a, a) == pytest.approx(0.0, abs=1e-6)
    # rank-1 covariances along the same axis: closed form |dmu|^2 + (sqrt(v1) - sqrt(v2))^2
    s1, s2 = np.diag([4.0, 0.0, 0.0]), np.diag([1.0, 0.0, 0.0])
    assert fad.frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(1.0, abs=1e-12)
    # a zero covariance against a full one: tr(S2)
    assert fad.frechet_distance(np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.eye(2) * 3) == pytest.approx(6.0)
    # near-singular: agrees with scipy's route where that one still works
    c = rng.normal(size=(200, 5)) @ np.diag([1, 1, 1, 1e-6, 1e-9])
    d = rng.normal(size=(200, 5)) @ np.diag([1, 2, 1, 1e-6, 1e-9])
    mu1, s1 = fad.gaussian_stats(c)
    mu2, s2 = fad.gaussian_stats(d)
    assert fad.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), abs=1e-4)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(fad.FADError, match="N >= 2"):
        fad.gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(fad.FADError, match="non-finite"):
        fad.gaussian_stats(np.array([[0.0], [np.nan]]))
    with pytest.raises(fad.FADError, match="shapes"):
        fad.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_audio_files_and_clip_reading(tmp_path: Path) -> None:
    import soundfile as sf

    with pytest.raises(fad.FADError, match="no audio files"):
        fad.audio_files(tmp_path)
    sf.write(tmp_path / "b.wav", np.zeros(16000 * 3, dtype=np.float32), 16000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.flac", np.full(8000, 0.5, dtype=np.float32), 8000)
    assert [p.name for p in fad.audio_files(tmp_path)] == ["b.wav", "a.flac"]
    clip = fad.read_clip(tmp_path / "b.wav", 32000, offset=1.0, duration=1.5)
    assert tuple(clip.shape) == (1, 48000)


def test_real_crops_and_halves() -> None:
    crops = evaluation.real_crops([("a", 10.0), ("b", 10.0), ("c", 3.0)], 4, 2.0, seed=0)
    assert len(crops) == 4 and len(set(crops)) == 4
    assert {p for p, _ in crops} == {"a", "b", "c"}  # one crop per file before a second one
    a, b = evaluation.split_by_source(crops)
    assert a and b and not {crops[i][0] for i in a} & {crops[i][0] for i in b}


def test_wandb_env_without_key_goes_offline_and_says_so(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level("WARNING"):
        env = tracking.wandb_env("proj", {"preset": "demo_cpu"}, environ={"NETRC": str(tmp_path / "none")})
    assert env["WANDB_MODE"] == "offline" and env["MUSICPIPE_WANDB_PROJECT"] == "proj"
    assert len([r for r in caplog.records if "no API key" in r.getMessage()]) == 1
    env = tracking.wandb_env("proj", {}, environ={"WANDB_API_KEY": "k"})
    assert "WANDB_MODE" not in env


# ------------------------------------------------------------------------------------- the mel embedding


def _music_like(seed: int, seconds: float = 2.0, sr: int = fad.MEL_SAMPLE_RATE) -> "torch.Tensor":
    """A mono clip of harmonic notes with decaying envelopes (a new melody per seed)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    x = torch.zeros_like(t)
    note = 0.25
    for k in range(int(seconds / note)):
        f0 = 110.0 * 2 ** (float(torch.randint(0, 24, (1,), generator=gen)) / 12)
        start = int(k * note * sr)
        tt = t[start:start + int(note * sr)] - t[start]
        env = torch.exp(-6 * tt)
        x[start:start + tt.numel()] += sum(env * torch.sin(2 * torch.pi * f0 * h * tt) / h for h in range(1, 6))
    return (0.3 * x / x.abs().max())[None]


def test_mel_embedding_shape_determinism_and_separation():
    import torch

    embedder = fad.make_embedder("mel")
    assert embedder.name == "mel" and embedder.sample_rate == 32000
    clip = _music_like(0)
    a, b = embedder(clip), embedder(clip.clone())
    assert a.shape == (201, fad.MEL_BANDS) and np.array_equal(a, b)
    t = torch.arange(32000) / 32000
    sine = embedder((0.5 * torch.sin(2 * torch.pi * 440 * t))[None])
    noise = embedder(0.35 * torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)))
    assert int(sine.mean(0).argmax()) == int(sine[50].argmax())  # one band holds the tone
    assert sine.std(axis=1).mean() > 3 * noise.std(axis=1).mean()  # a tone is peaked, noise is flat across bands


def test_mel_fad_orders_mild_degradation_below_noise_and_real_halves_below_both():
    import julius
    import torch

    from musicpipe import evaluation

    embedder = fad.make_embedder("mel")
    real_a = [_music_like(s) for s in range(8)]
    real_b = [_music_like(s) for s in range(100, 108)]
    # a codec that works: 8 kHz band limit and 8-bit quantisation, a mild loss
    degraded = [torch.round(julius.lowpass_filter(w, 8000 / 32000) * 127) / 127 for w in real_a]
    noise = evaluation.loudness_matched_noise(real_a, seed=0)
    ref = fad.embed_clips(embedder, real_a)
    values = {name: fad.fad_from_embeddings(fad.embed_clips(embedder, clips), ref)
              for name, clips in (("real_b", real_b), ("degraded", degraded), ("noise", noise))}
    assert values["degraded"] < values["noise"] and values["real_b"] < values["noise"], values

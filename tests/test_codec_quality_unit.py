"""Unit tests of training_checks/codec_quality_check.py: metrics with known answers, and check_codec on a tiny
real (untrained) AudioCraft EnCodec over synthetic WAVs."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import training_checks.codec_quality_check as cqc

MODEL_SR = 8000


def _signal_with_noise(snr_db: float, length: int = 16000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference and reference + noise at exactly ``snr_db`` SI-SNR (noise zero-mean and orthogonal)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    ref = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 97 * t) + 0.3  # DC offset on purpose
    s = ref - ref.mean()
    noise = rng.standard_normal(length)
    noise -= noise.mean()
    noise -= (noise @ s) / (s @ s) * s  # orthogonal to the zero-mean reference, still zero-mean
    noise *= math.sqrt((s @ s) / (noise @ noise) / 10 ** (snr_db / 10))
    return ref, ref + noise


@pytest.mark.parametrize("snr", [10.0, 20.0, -5.0])
def test_si_snr_known_answer(snr: float) -> None:
    ref, est = _signal_with_noise(snr)
    assert cqc.si_snr_db(ref, est) == pytest.approx(snr, abs=0.01)
    assert cqc.si_snr_db(torch.from_numpy(ref), torch.from_numpy(est)) == pytest.approx(snr, abs=0.01)
    # scale invariance (and an offset, removed by zero-meaning)
    assert cqc.si_snr_db(ref, 3 * est) == pytest.approx(snr, abs=0.01)
    assert cqc.si_snr_db(ref, 0.25 * est + 1.0) == pytest.approx(snr, abs=0.01)


def test_si_snr_identical_is_very_high_and_batched() -> None:
    ref, est = _signal_with_noise(10.0)
    assert cqc.si_snr_db(ref, ref) > 60
    assert cqc.si_snr_db(ref, 2 * ref) > 60
    batch_ref = torch.from_numpy(np.stack([ref, ref]))[None]  # [1, 2, T]
    batch_est = torch.from_numpy(np.stack([est, ref]))[None]
    out = cqc.si_snr_db(batch_ref, batch_est)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2)
    assert float(out[0, 0]) == pytest.approx(10.0, abs=0.01) and float(out[0, 1]) > 60
    np_out = cqc.si_snr_db(np.stack([ref, ref]), np.stack([est, ref]))
    assert isinstance(np_out, np.ndarray) and np_out.shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        cqc.si_snr_db(ref, est[:-1])


def test_audiocraft_loss_is_negation_and_matches_audiocraft() -> None:
    from audiocraft.losses.sisnr import SISNR

    for snr in (10.0, 20.0, 3.0):
        ref, est = _signal_with_noise(snr, seed=int(snr))
        assert cqc.audiocraft_sisnr_loss(ref, est) == pytest.approx(-cqc.si_snr_db(ref, est), abs=1e-12)
        r = torch.from_numpy(ref).float()[None, None]
        e = torch.from_numpy(est).float()[None, None]
        length = r.shape[-1]
        # one window over the whole signal; AudioCraft's forward takes (estimate, reference) and returns -SI-SNR
        ac = SISNR(sample_rate=1, segment=length, overlap=0.0)(e, r)
        assert float(ac) == pytest.approx(cqc.audiocraft_sisnr_loss(r, e), abs=1e-3)
        assert float(ac) == pytest.approx(-snr, abs=0.01)
        assert float(ac) < 0  # a decent reconstruction is negative in AudioCraft's convention
    # batched [B, C, T]: AudioCraft averages over B and C
    refs, ests = zip(*(_signal_with_noise(s, seed=i) for i, s in enumerate((5.0, 15.0, 25.0))))
    r = torch.from_numpy(np.stack(refs)).float()[:, None]
    e = torch.from_numpy(np.stack(ests)).float()[:, None]
    ac = SISNR(sample_rate=1, segment=r.shape[-1], overlap=0.0)(e, r)
    ours = cqc.audiocraft_sisnr_loss(r, e)
    assert ours.shape == (3, 1)
    assert float(ac) == pytest.approx(float(ours.mean()), abs=1e-3) == pytest.approx(-15.0, abs=0.01)


def test_l1_mse_mel_zero_for_identical_positive_otherwise() -> None:
    ref, est = _signal_with_noise(10.0)
    for fn in (cqc.l1, cqc.mse, lambda a, b: cqc.mel_distance(a, b, 16000)):
        assert fn(ref, ref) == 0.0
        assert fn(ref, est) > 0
        assert fn(torch.from_numpy(ref), torch.from_numpy(est)) == pytest.approx(fn(ref, est), rel=1e-6)
    assert cqc.l1([0.0, 0.0], [1.0, -1.0]) == 1.0
    assert cqc.mse([0.0, 0.0], [1.0, -3.0]) == 5.0
    mel = cqc.mel_distance(np.stack([ref, ref]), np.stack([ref, est]), 16000)
    assert mel.shape == (2,) and mel[0] == 0.0 and mel[1] > 0


def test_module_doctests() -> None:
    from musicpipe import codec_metrics

    results = [doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in (cqc, codec_metrics)]
    assert all(r.failed == 0 for r in results) and sum(r.attempted for r in results) > 10


# ---------------------------------------------------------------------------------------------- check_codec


@pytest.fixture(scope="module")
def tiny_codec() -> torch.nn.Module:
    """A real AudioCraft EncodecModel, tiny and untrained (SEANet 4x4 = hop 16, 2 codebooks of 32)."""
    from audiocraft.models.encodec import EncodecModel
    from audiocraft.modules import SEANetDecoder, SEANetEncoder
    from audiocraft.quantization import ResidualVectorQuantizer

    torch.manual_seed(0)
    kw = dict(channels=1, dimension=16, n_filters=4, n_residual_layers=1, ratios=[4, 4], lstm=0)
    model = EncodecModel(SEANetEncoder(**kw), SEANetDecoder(**kw),
                         ResidualVectorQuantizer(dimension=16, n_q=2, bins=32, kmeans_init=False),
                         frame_rate=MODEL_SR // 16, sample_rate=MODEL_SR, channels=1)
    return model.eval()


@pytest.fixture()
def wavs(tmp_path: Path) -> list[Path]:
    """Six short tones: three at the model's 8 kHz, three at 16 kHz (resampled), one of those stereo."""
    files = []
    for k in range(6):
        sr = MODEL_SR if k % 2 == 0 else 16000
        t = np.arange(int(1.5 * sr)) / sr
        audio = (0.4 * np.sin(2 * np.pi * (220 + 50 * k) * t)).astype(np.float32)
        if k == 5:
            audio = np.stack([audio, 0.5 * audio], axis=1)
        path = tmp_path / "segs" / f"seg_{k}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, audio, sr, subtype="PCM_16")
        files.append(path)
    return files


def test_check_codec_writes_pairs_and_summary(tiny_codec, wavs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = cqc.check_codec(tiny_codec, wavs, out, num_samples=4, seed=3)
    assert summary["num_samples"] == 4 and summary["seed"] == 3 and summary["sample_rate"] == MODEL_SR
    assert summary["n_q"] == 2 and summary["codes_shape"][:2] == [1, 2]
    assert json.loads((out / "summary.json").read_text()) == summary
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["summary.json"] + [f"sample_{k}_{kind}.wav" for k in range(4)
                                               for kind in ("original", "reconstructed")])
    sources = [s["source"] for s in summary["samples"]]
    assert len(set(sources)) == 4 and set(sources) <= {str(w) for w in wavs}
    for s in summary["samples"]:
        orig, sr_o = sf.read(out / s["original"], dtype="float32")
        rec, sr_r = sf.read(out / s["reconstructed"], dtype="float32")
        assert sr_o == sr_r == MODEL_SR
        assert orig.shape == rec.shape == (int(1.5 * MODEL_SR),)  # 16 kHz files resampled, stereo downmixed
        assert sf.info(out / s["original"]).subtype == "PCM_16"
        assert s["codes_shape"] == [1, 2, math.ceil(1.5 * MODEL_SR / 16)]
        for name in cqc.METRICS:
            assert math.isfinite(s[name])
        assert s["audiocraft_sisnr_loss"] == -s["si_snr_db"]
        assert s["l1"] > 0 and s["mse"] > 0 and s["mel_distance"] > 0  # untrained: far from identical
    for name in cqc.METRICS:
        assert summary["mean"][name] == pytest.approx(np.mean([s[name] for s in summary["samples"]]))
    assert summary["mean"]["audiocraft_sisnr_loss"] == -summary["mean"]["si_snr_db"]
    assert summary["settings"]["num_candidates"] == 6 and summary["settings"]["segment_seconds"] is None
    assert "higher is better" in summary["si_snr_conventions"]["si_snr_db"]


def test_check_codec_deterministic_and_crops(tiny_codec, wavs, tmp_path: Path) -> None:
    a = cqc.check_codec(tiny_codec, wavs, tmp_path / "a", num_samples=3, seed=7, segment_seconds=0.5)
    b = cqc.check_codec(tiny_codec, list(reversed(wavs)), tmp_path / "b", num_samples=3, seed=7,
                        segment_seconds=0.5)
    assert [s["source"] for s in a["samples"]] == [s["source"] for s in b["samples"]]
    for sa, sb in zip(a["samples"], b["samples"]):
        assert sa["si_snr_db"] == pytest.approx(sb["si_snr_db"], abs=1e-6)
        assert sa["num_frames"] == int(0.5 * MODEL_SR)
        assert sf.info(tmp_path / "a" / sa["reconstructed"]).frames == int(0.5 * MODEL_SR)
    other = [tuple(s["source"] for s in cqc.check_codec(tiny_codec, wavs, tmp_path / f"s{seed}", num_samples=3,
                                                          seed=seed)["samples"]) for seed in range(4)]
    assert len(set(other)) > 1  # the seed matters
    # a re-run with fewer samples leaves exactly its own files
    cqc.check_codec(tiny_codec, wavs, tmp_path / "a", num_samples=1, seed=7)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "sample_0_original.wav", "sample_0_reconstructed.wav", "summary.json"]
    # more samples than segments: all of them
    assert cqc.check_codec(tiny_codec, wavs[:2], tmp_path / "c", num_samples=5)["num_samples"] == 2


def test_check_codec_restores_training_mode(tiny_codec, wavs, tmp_path: Path) -> None:
    tiny_codec.train()
    try:
        cqc.check_codec(tiny_codec, wavs, tmp_path / "o", num_samples=1)
        assert tiny_codec.training
    finally:
        tiny_codec.eval()


def test_check_codec_errors(tiny_codec, wavs, tmp_path: Path) -> None:
    with pytest.raises(cqc.CodecCheckError, match="empty list"):
        cqc.check_codec(tiny_codec, [], tmp_path / "o")
    with pytest.raises(cqc.CodecCheckError, match="at least 1"):
        cqc.check_codec(tiny_codec, wavs, tmp_path / "o", num_samples=0)
    with pytest.raises(cqc.CodecCheckError, match="not found"):
        cqc.check_codec(tiny_codec, [tmp_path / "missing.wav"], tmp_path / "o")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(cqc.CodecCheckError, match="bad.wav: cannot read audio"):
        cqc.check_codec(tiny_codec, [bad], tmp_path / "o")
    with pytest.raises(cqc.CodecCheckError, match="disagrees"):
        cqc.check_codec(tiny_codec, wavs, tmp_path / "o", sample_rate=16000)
    with pytest.raises(cqc.CodecCheckError, match="positive"):
        cqc.check_codec(tiny_codec, wavs, tmp_path / "o", segment_seconds=0)
    assert issubclass(cqc.CodecCheckError, ValueError)


# ----------------------------------------------------------------------------------- XP and manifest lookup


def _fake_xp(ws: Path, sig: str, solver: str = "compression", dataset: str | None = None) -> Path:
    folder = ws / "experiments" / "audiocraft" / "xps" / sig
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"solver: {solver}\ndatasource:\n  valid: ${{oc.env:MUSICPIPE_WORKSPACE,'{ws}'}}/data/demo_set/egs/valid\n")
    (folder / "checkpoint.th").write_bytes(b"")
    if dataset:
        (folder / "musicpipe.json").write_text(json.dumps({"sig": sig, "kind": solver, "dataset": dataset}))
    return folder


def _egs(folder: Path, dataset: str | None, ws: Path) -> tuple:
    from musicpipe.xp import XP

    return XP(folder=folder, sig=folder.name, workspace=ws.resolve()).egs_dir("valid", dataset)


def test_resolve_xp_and_manifest_errors(tmp_path: Path) -> None:
    import os
    import time

    ws = tmp_path / "ws"
    with pytest.raises(cqc.CodecCheckError, match="no codec XP"):
        cqc.resolve_xp(None, workspace=ws)
    old = _fake_xp(ws, "aaaaaaaa")
    _fake_xp(ws, "cccccccc", solver="musicgen")
    new = _fake_xp(ws, "bbbbbbbb", dataset="other_set")
    os.utime(old / "checkpoint.th", (time.time() - 100, time.time() - 100))
    assert cqc.resolve_xp(None, workspace=ws)[0] == "bbbbbbbb"  # newest codec, the LM XP ignored
    assert cqc.resolve_xp("aaaaaaaa", workspace=ws) == ("aaaaaaaa", old, ws.resolve())
    # a path: the XP folder, or checkpoint.th in it (through a link, as in `Checkpoints Small/<sig>/`)
    pub = tmp_path / "Checkpoints Small" / "aaaaaaaa"
    pub.mkdir(parents=True)
    (pub / "checkpoint.th").symlink_to(old / "checkpoint.th")
    for given in (old, old / "checkpoint.th", pub / "checkpoint.th", pub):
        sig, folder, found_ws = cqc.resolve_xp(str(given))
        assert (sig, folder.resolve(), found_ws.resolve()) == ("aaaaaaaa", old.resolve(), ws.resolve())
    with pytest.raises(cqc.CodecCheckError, match="not a codec"):
        cqc.resolve_xp("cccccccc", workspace=ws)
    with pytest.raises(cqc.CodecCheckError, match="no such XP"):
        cqc.resolve_xp("dddddddd", workspace=ws)
    with pytest.raises(cqc.CodecCheckError, match="no such XP folder or checkpoint"):
        cqc.resolve_xp(str(tmp_path / "nowhere" / "checkpoint.th"), workspace=ws)
    # dataset: the record first, else the config's datasource.valid
    assert _egs(new, None, ws) == ("other_set", ws.resolve() / "data" / "other_set" / "egs" /
                                                       "valid")
    name, egs = _egs(old, None, ws)
    assert name == "demo_set" and egs == ws.resolve() / "data" / "demo_set" / "egs" / "valid"
    assert _egs(old, "given", ws)[0] == "given"
    with pytest.raises(cqc.CodecCheckError, match=r"data\.jsonl: missing: no valid manifest"):
        cqc.valid_segments(egs)
    egs.mkdir(parents=True)
    (egs / "data.jsonl").write_text("\n")
    with pytest.raises(cqc.CodecCheckError, match=r"data\.jsonl: empty, lists no audio file"):
        cqc.valid_segments(egs)
    (egs / "data.jsonl").write_text('{"path": "relative.wav", "duration": 1.0, "sample_rate": 8000}\n')
    with pytest.raises(cqc.CodecCheckError, match="not a valid AudioCraft manifest"):
        cqc.valid_segments(egs)
    (egs / "data.jsonl").write_text('{"path": "/x/a.wav", "duration": 1.0, "sample_rate": 8000}\n')
    assert cqc.valid_segments(egs) == ["/x/a.wav"]
    # run_check fails on the manifest before loading any model
    (egs / "data.jsonl").write_text("")
    with pytest.raises(cqc.CodecCheckError, match="empty, lists no audio file"):
        cqc.run_check("aaaaaaaa", workspace=ws)


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cqc.main(["--workspace", str(tmp_path / "ws")]) == 1
    err = capsys.readouterr().err
    assert "codec_quality_check: error:" in err and "no codec XP" in err

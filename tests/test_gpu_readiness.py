"""Issue 14 on CPU: checkpoint retention, the disk forecast, padding, loader workers, exact epochs, FSDP settings,
multi-rank metric averaging, and the GPU benchmark's pure parts."""

import math
import os
import socket
import types
from pathlib import Path

import pytest
import torch

from musicpipe import config, presets, sizing
from musicpipe.dora_entry import loader_workers, retention
from musicpipe.dora_entry.stability_hooks import aligned_average_metrics
from training_checks import preflight

GPU_PRESETS = [n for n in presets.available_presets() if presets.load_preset(n).gpus >= 1]


def _compose(name, kind, overrides=()):
    preset = presets.load_preset(name)
    codec = presets.CodecInfo("00000000", 4, 2048) if kind == "musicgen" else None
    dset = "fma_small_mini" if name == "demo_cpu" else None  # synthetic_demo's dset config is written by prepare
    return config.compose(presets.hydra_overrides(presets.dora_run_args(preset, kind, dset=dset, codec=codec,
                                                                        overrides=overrides)))


@pytest.fixture(scope="module")
def large_lm():
    return _compose("fma_large", "musicgen")


# ----------------------------------------------------------------------------------------------- retention


def _touch(folder: Path, *names):
    for name in names:
        (folder / name).write_bytes(b"x")


def test_retention_keeps_last_and_never_touches_checkpoint_th(tmp_path):
    _touch(tmp_path, "checkpoint.th", "checkpoint_best.th", "checkpoint_10.th", "checkpoint_20.th",
           "checkpoint_30.th", "checkpoint_30.th.tmp", "checkpoint_40.th")
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=2) == [10, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.th", "checkpoint_30.th", "checkpoint_30.th.tmp",
                                                         "checkpoint_40.th", "checkpoint_best.th"]
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=None) == []
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=0) == []


def test_retention_prunes_sampled_epochs_first_and_bounds_the_rest(tmp_path):
    _touch(tmp_path, "checkpoint.th", *(f"checkpoint_{e}.th" for e in (1, 2, 3, 4, 5)))
    retention.record_sampled(tmp_path, [3, 4])
    # 3 of 5 may stay: the sampled 3 and 4 go, the unsampled 1 and 2 wait for the sampler
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=3) == [3, 4]
    _touch(tmp_path, "checkpoint_6.th")
    # nothing sampled left: the oldest unsampled goes, the newest always stays
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=3) == [1]
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.th")) == ["checkpoint_2.th", "checkpoint_5.th",
                                                                        "checkpoint_6.th"]
    assert (tmp_path / "checkpoint.th").exists()


def test_retention_fsdp_shards_prune_their_own_rank(tmp_path):
    _touch(tmp_path, "checkpoint_1.th.1", "checkpoint_2.th.1", "checkpoint_1.th", "checkpoint_2.th")
    assert retention.prune_epoch_checkpoints(tmp_path, keep_last=1, suffix=".1") == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.th", "checkpoint_2.th", "checkpoint_2.th.1"]


def test_retention_wrapper_prunes_after_the_save(tmp_path):
    calls = []

    def save(self):
        calls.append("saved")
        _touch(tmp_path, f"checkpoint_{len(calls)}.th", "checkpoint.th")

    wrapped = retention._wrap_save_checkpoints(save)
    cfg = types.SimpleNamespace(fsdp=types.SimpleNamespace(use=False), checkpoint={"keep_last": 1})
    solver = types.SimpleNamespace(cfg=cfg, folder=tmp_path)
    for _ in range(3):
        wrapped(solver)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.th", "checkpoint_3.th"]


# ----------------------------------------------------------------------------------------- presets, epochs


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_have_exact_epochs_retention_and_unpadded_crops(name):
    preset = presets.load_preset(name)
    for kind in presets.SOLVERS:
        spec = getattr(preset, kind)
        if spec is None:
            continue
        o = spec.overrides
        plan = sizing.epoch_plan(o["dataset.batch_size"], preset.gpus, o["optim.updates_per_epoch"],
                                 o["dataset.train.num_samples"])
        assert plan.exact, (name, kind, plan)
        assert o["checkpoint.keep_last"] >= 1 and o["checkpoint.keep_every_states"]
        assert o["dataset.min_segment_ratio"] == 1.0
        if kind == "musicgen":
            assert o["+dataset.min_audio_duration"] == o["dataset.segment_duration"]
            ema = o.get("optim.ema.use", False)
            assert o["checkpoint.keep_every_states"] == (["ema"] if ema else ["model"])


def test_epoch_arithmetic_of_audiocraft_defaults_is_ragged():
    plan = sizing.epoch_plan(512, 4, 2000, 1_000_000)
    assert (plan.loader_batches, plan.steps, plan.last_batch, plan.exact) == (1954, 1954, 16, False)
    assert "set" not in (plan.problem() or "") and "1954 steps" in plan.problem()
    assert sizing.epoch_plan(512, 4, 2000, 1_024_000).exact


def test_fsdp_setting_composes(large_lm):
    cfg = _compose("fma_large", "musicgen", ["fsdp.use=true", "autocast=false", "fsdp.param_dtype=bfloat16"])
    assert cfg.fsdp.use is True and cfg.autocast is False
    assert (cfg.fsdp.param_dtype, cfg.fsdp.reduce_dtype, cfg.fsdp.buffer_dtype) == ("bfloat16", "float32", "float32")
    # the checkpoint estimate follows: best state in the FSDP param dtype
    assert sizing.checkpoint_sizes_from_cfg(cfg).states == sizing.checkpoint_sizes_from_cfg(large_lm).states


# --------------------------------------------------------------------------------------------- forecast


def test_lm_parameter_count_matches_audiocraft():
    from audiocraft.models import builders

    for overrides in ([], ["conditioner=genre_lut"]):
        cfg = _compose("demo_cpu", "musicgen", overrides)
        lm = builders.get_lm_model(cfg)  # demo_cpu: device=cpu, the xsmall scale
        assert sizing.lm_parameters_from_cfg(cfg) == sum(p.numel() for p in lm.parameters()), overrides


def test_fma_large_forecast_arithmetic(large_lm):
    sizes = sizing.checkpoint_sizes_from_cfg(large_lm)
    p = 318_871_552  # MusicGen small, dim 1024 x 24 layers, 4 x 2048 codebooks, no cross-attention
    assert sizing.lm_parameters_from_cfg(large_lm) == p
    assert sizes.states == {"model": 4 * p, "optimizer": 8 * p, "ema": 4 * p, "best_state": 2 * p}
    assert sizes.full == 18 * p and round(sizes.full / 1e9, 2) == 5.74
    forecast = sizing.disk_forecast(large_lm, sizes)
    by_label = {part.label: part for part in forecast.parts}
    assert by_label["per-epoch checkpoints (ema only)"].count == 11  # keep_last 10 + the one being written
    assert by_label["per-epoch checkpoints (ema only)"].each == 4 * p
    assert by_label["checkpoint.th (last + the copy being written)"].count == 2
    samples = by_label["generate-stage sample sets"]
    assert samples.count == 200 // large_lm.generate.every
    assert forecast.total == 2 * 18 * p + 11 * 4 * p + samples.total
    line = forecast.line(64e9)
    assert line.startswith("needs ~25.7 GB: 2 checkpoint.th (last + the copy being written) x 5.7 GB + 11 per-epoch")
    assert line.endswith("; 64.0 GB free") and forecast.status(64e9) == "PASS"
    assert forecast.status(30e9) == "WARN" and forecast.status(20e9) == "FAIL"
    # without retention (AudioCraft's behaviour) the 20 full copies alone are 115 GB
    assert round(20 * sizes.full / 1e9) == 115


def test_preflight_disk_check_fails_when_it_cannot_fit(tmp_path, large_lm):
    forecast = sizing.disk_forecast(large_lm)
    huge = sizing.DiskForecast(forecast.parts + [sizing.Part("more", 1, 1e18)])
    result = preflight.check_disk_forecast(tmp_path, huge, 1.0)
    assert result.status == "FAIL" and "needs ~" in result.message and "GB free" in result.message
    assert preflight.check_disk_forecast(tmp_path, sizing.DiskForecast([]), 1.0).status == "PASS"
    assert preflight.check_disk_forecast(tmp_path, sizing.DiskForecast([]), 1e9).status == "FAIL"  # the floor


# ----------------------------------------------------------------------------------------------- padding


def _records(durations):
    return {"train": [types.SimpleNamespace(duration=d, path=f"/d/{i}.wav") for i, d in enumerate(durations)]}


def test_padding_check_on_composed_configs(large_lm):
    # AudioCraft's defaults (ratio 0.8) on 10 s files: 10 % of the LM's audio is padding
    default = _compose("fma_large", "musicgen", ["dataset.min_segment_ratio=0.8", "+dataset.min_audio_duration=null"])
    result = preflight.check_padding(default, _records([10.0] * 9), Path("/m"))
    assert result.status == "WARN" and result.details["padded_share"] == pytest.approx(0.1)
    assert "min_segment_ratio: 1.0" in result.message
    # the preset: ratio 1.0 and min_audio_duration 10 leave a 6 s last segment out: no padding
    result = preflight.check_padding(large_lm, _records([10.0] * 9 + [6.0]), Path("/m"))
    assert result.status == "PASS" and result.details["padded_share"] == 0.0 and result.details["files_used"] == 9
    assert preflight.check_padding(large_lm, _records([6.0]), Path("/m")).status == "FAIL"


def test_padded_share_exact():
    assert sizing.padded_share([10.0], 10.0, 0.8) == pytest.approx(0.1)
    assert sizing.padded_share([10.0], 1.0, 0.8) == pytest.approx(0.02 / 9.2)
    assert sizing.padded_share([10.0, 5.0], 10.0, 1.0) == pytest.approx(5 / 15 * 5 / 10)
    # Monte Carlo of AudioCraft's rule agrees
    g = torch.Generator().manual_seed(0)
    seek = torch.rand(200_000, generator=g) * (10.0 - 10.0 * 0.5)
    assert float((seek + 10.0 - 10.0).clamp(min=0).mean() / 10) == pytest.approx(
        sizing.padded_share([10.0], 10.0, 0.5), rel=0.01)


# ------------------------------------------------------------------------------------------- loaders, shm


def test_loader_workers_pure():
    assert [sizing.loader_workers(c, 4) for c in (8, 16, 32, 64, 128, 512)] == [1, 1, 2, 4, 8, 8]
    assert sizing.loader_workers(16, 1) == 4
    assert loader_workers.effective_workers(10, 64, 4, "auto") == 4
    assert loader_workers.effective_workers(2, 64, 4, "auto") == 2
    assert loader_workers.effective_workers(0, 64, 4, "auto") == 0
    assert loader_workers.effective_workers(10, 64, 4, "config") == 10
    assert loader_workers.effective_workers(10, 64, 4, "3") == 3


def test_shm_check_fails_on_dockers_default(large_lm, monkeypatch):
    monkeypatch.setattr(loader_workers, "usable_cores", lambda: 64)
    monkeypatch.delenv("MUSICPIPE_LOADER_WORKERS", raising=False)
    result = preflight.check_shm(large_lm, world=4, total=64 * 2**20)
    assert result.status == "FAIL" and "--shm-size" in result.message
    assert result.details["need_bytes"] == 4 * 4 * 2 * 128 * 320_000 * 4
    assert preflight.check_shm(large_lm, world=4, total=64e9).status == "PASS"


# --------------------------------------------------------------------------------------------------- FLOPs


def test_lm_flops_per_step_for_fma_large(large_lm):
    lm = large_lm.transformer_lm
    steps = int(large_lm.dataset.segment_duration * 50)  # 50 frames/s
    flops = sizing.lm_train_flops(128, steps, int(lm.dim), int(lm.num_layers), int(lm.n_q), int(lm.card))
    d, h = 1024, 4096
    per_token = 24 * (2 * (4 * d * d + 2 * d * h) + 4 * 500 * d) + 4 * 2 * d * 2048
    assert flops == 3 * 128 * 500 * per_token
    assert round(flops / 1e12) == 129  # ~129 TFLOP per step and GPU (128 x 10 s): ~0.13 s at 100 % of 989 TFLOP/s


def test_gpu_benchmark_refuses_on_cpu():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_training.py")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("gpu_training: no CUDA GPU here")


# ---------------------------------------------------------------------------- multi-rank metric averaging


def _average_worker(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    if rank == 0:
        metrics, counts = {"ce": 1.0, "grad_norm": 2.0, "lr": 1e-3}, {"ce": 5, "grad_norm": 5, "lr": 5}
    else:  # dropped ce/grad_norm in its first step: the averager lists them after lr; ppl never finite here
        metrics, counts = {"lr": 1e-3, "ce": 3.0, "grad_norm": 4.0, "ppl": float("nan")}, {"lr": 5, "ce": 4,
                                                                                           "grad_norm": 4}
    result = aligned_average_metrics(metrics, 5, counts)
    torch.save(result, os.path.join(out, f"{rank}.pt"))
    dist.destroy_process_group()


def test_aligned_average_two_gloo_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_average_worker, args=(port, str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    assert results[0] == results[1]
    assert list(results[0]) == ["ce", "grad_norm", "lr"]
    assert results[0]["ce"] == pytest.approx((1.0 * 5 + 3.0 * 4) / 9)
    assert results[0]["grad_norm"] == pytest.approx((2.0 * 5 + 4.0 * 4) / 9)
    assert results[0]["lr"] == pytest.approx(1e-3) and math.isfinite(results[0]["lr"])

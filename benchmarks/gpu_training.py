"""Training throughput on a GPU at the presets' real shapes and per-GPU batch sizes, in one run.

    .venv/bin/python benchmarks/gpu_training.py [--steps 300] [--warmup 20] [--runs lm:fma_large,codec:fma_large]
                                                [--json outputs/reports/gpu_training.json]

Runs (``kind:preset``; default ``lm:fma_small_mini,lm:fma_large,codec:fma_large``): the preset's configs are
composed as training composes them (:func:`musicpipe.presets.dora_run_args`), the models built with AudioCraft's
own builders (random weights: timing does not depend on them), and ``--steps`` real training steps run at the
preset's batch per GPU (``dataset.batch_size / gpus``) on synthetic audio (uniform noise, the preset's segment
length and rate) served by a DataLoader with the workers :func:`musicpipe.sizing.loader_workers` gives this
machine, through pinned memory.

- ``lm``: data wait -> encode (the codec turns audio into tokens each step, as the musicgen solver does;
  no token cache: that feature has not landed) -> forward/backward (bf16 autocast, cross-entropy over the
  delayed codebooks) -> optimizer (grad-norm clipping, AdamW). FLOPs per step: :func:`musicpipe.sizing.lm_train_flops`.
- ``codec``: data wait -> forward/backward of the generator (L1 + the MS-STFT discriminator's adversarial and
  feature losses) and the discriminator's own step -> optimizer. FLOPs per step: counted once with
  ``torch.utils.flop_counter.FlopCounterMode`` on the first step.

Each phase is timed with CUDA events (synchronised once per step); the first ``--warmup`` steps are not
counted. Prints, per run: tokens/s (LM) or audio seconds/s, the median step split, achieved TFLOP/s and MFU
against the GPU's bf16 dense peak (H200/H100 SXM: 989 TFLOP/s; ``--peak-tflops`` for others), peak memory.
On a machine without CUDA it refuses in one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_RUNS = "lm:fma_small_mini,lm:fma_large,codec:fma_large"
FRAME_RATE = 50  # the 32 kHz EnCodec's frames per second


class NoiseAudio:
    """``n`` items of uniform noise ``[channels, samples]`` (a map-style dataset for the DataLoader)."""

    def __init__(self, n: int, samples: int, channels: int):
        self.n, self.samples, self.channels = n, samples, channels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tp.Any:
        import torch

        g = torch.Generator().manual_seed(i)
        return torch.rand(self.channels, self.samples, generator=g) * 0.2 - 0.1


def compose(preset_name: str, kind: str) -> tp.Tuple[tp.Any, tp.Any]:
    """The preset's (codec cfg, LM cfg) as training composes them (LM: conditioner none, a 4 x 2048 codec)."""
    from musicpipe import config, presets

    preset = presets.load_preset(preset_name)
    codec_cfg = config.compose(presets.hydra_overrides(presets.dora_run_args(preset, "compression"))) \
        if preset.compression is not None else None
    lm_cfg = config.compose(presets.hydra_overrides(presets.dora_run_args(
        preset, "musicgen", codec=presets.CodecInfo("00000000", 4, 2048)))) if kind == "lm" else None
    return codec_cfg, lm_cfg


def loader(cfg: tp.Any, batch: int, steps: int) -> tp.Any:
    import torch

    from musicpipe import sizing

    samples = int(round(float(cfg.dataset.segment_duration) * int(cfg.sample_rate)))
    workers = sizing.loader_workers(len(os.sched_getaffinity(0)), 1)
    data = NoiseAudio(batch * steps, samples, int(cfg.channels))
    return torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers, pin_memory=True,
                                       persistent_workers=True, drop_last=True), workers


class Timer:
    """CUDA events around named phases of one step."""

    def __init__(self) -> None:
        self.marks: tp.List[tp.Tuple[str, tp.Any]] = []

    def mark(self, name: str) -> None:
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.marks.append((name, event))

    def split(self) -> tp.Dict[str, float]:
        import torch

        torch.cuda.synchronize()
        return {name: start.elapsed_time(end) / 1000 for (_, start), (name, end) in zip(self.marks, self.marks[1:])}


def bench_lm(preset_name: str, steps: int, warmup: int) -> tp.Dict[str, tp.Any]:
    import torch
    import torch.nn.functional as F
    from audiocraft.models import builders

    from musicpipe import presets, sizing

    codec_cfg, cfg = compose(preset_name, "lm")
    preset = presets.load_preset(preset_name)
    batch = int(cfg.dataset.batch_size) // max(1, preset.gpus)
    device = "cuda"
    codec_cfg = codec_cfg if codec_cfg is not None else cfg
    codec = builders.get_compression_model(codec_cfg).to(device).eval()
    lm = builders.get_lm_model(cfg).to(device).train()
    optimizer = torch.optim.AdamW(lm.parameters(), lr=float(cfg.optim.lr), betas=tuple(cfg.optim.adam.betas),
                                  weight_decay=float(cfg.optim.adam.weight_decay))
    dtype = torch.bfloat16 if str(cfg.autocast_dtype) == "bfloat16" else torch.float16
    data, workers = loader(cfg, batch, steps + warmup)
    splits, t_steps = [], int(float(cfg.dataset.segment_duration) * FRAME_RATE)
    torch.cuda.reset_peak_memory_stats()
    it = iter(data)
    for step in range(steps + warmup):
        timer = Timer()
        timer.mark("start")
        audio = next(it).to(device, non_blocking=True)
        timer.mark("data wait")
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=bool(cfg.autocast)):
            codes, _ = codec.encode(audio)
        timer.mark("encode")
        with torch.autocast("cuda", dtype=dtype, enabled=bool(cfg.autocast)):
            out = lm.compute_predictions(codes, [], {})
            mask = out.mask
            loss = F.cross_entropy(out.logits[mask].float(), codes[mask])
        loss.backward()
        timer.mark("forward/backward")
        torch.nn.utils.clip_grad_norm_(lm.parameters(), float(cfg.optim.max_norm or 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark("optimizer")
        split = timer.split()
        if step >= warmup:
            splits.append(split)
    lm_cfg = cfg.transformer_lm
    flops = sizing.lm_train_flops(batch, t_steps, int(lm_cfg.dim), int(lm_cfg.num_layers), int(lm_cfg.n_q),
                                  int(lm_cfg.card), float(lm_cfg.hidden_scale))
    result = summarise(splits, flops)
    tokens = batch * t_steps * int(lm_cfg.n_q)
    result.update({"run": f"lm:{preset_name}", "batch_per_gpu": batch, "tokens_per_step": tokens,
                   "tokens_per_s": tokens / result["step_s"], "loader_workers": workers,
                   "parameters": sizing.lm_parameters_from_cfg(cfg), "token_cache": False})
    return result


def bench_codec(preset_name: str, steps: int, warmup: int) -> tp.Dict[str, tp.Any]:
    import torch
    import torch.nn.functional as F
    from audiocraft.models import builders
    from audiocraft.solvers import builders as solver_builders
    from torch.utils.flop_counter import FlopCounterMode

    from musicpipe import presets

    cfg, _ = compose(preset_name, "codec")
    preset = presets.load_preset(preset_name)
    batch = int(cfg.dataset.batch_size) // max(1, preset.gpus)
    device = "cuda"
    model = builders.get_compression_model(cfg).to(device).train()
    adversaries = solver_builders.get_adversarial_losses(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.optim.lr), betas=tuple(cfg.optim.adam.betas))
    data, workers = loader(cfg, batch, steps + warmup)
    splits: tp.List[tp.Dict[str, float]] = []
    flops = 0.0
    torch.cuda.reset_peak_memory_stats()
    it = iter(data)
    for step in range(steps + warmup):
        counter = FlopCounterMode(display=False) if step == 0 else None
        timer = Timer()
        timer.mark("start")
        audio = next(it).to(device, non_blocking=True)
        timer.mark("data wait")
        with counter if counter is not None else _null():
            out = model(audio)
            loss = F.l1_loss(out.x, audio) + out.penalty
            for adversary in adversaries.values():
                adversary.train_adv(out.x.detach(), audio)
                adv_loss, feat_loss = adversary(out.x, audio)
                loss = loss + adv_loss + feat_loss
            loss.backward()
        timer.mark("forward/backward")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark("optimizer")
        if counter is not None:
            flops = float(counter.get_total_flops())
        split = timer.split()
        if step >= warmup:
            splits.append(split)
    result = summarise(splits, flops)
    seconds = batch * float(cfg.dataset.segment_duration)
    result.update({"run": f"codec:{preset_name}", "batch_per_gpu": batch, "audio_s_per_s": seconds / result["step_s"],
                   "loader_workers": workers, "parameters": sum(p.numel() for p in model.parameters())})
    return result


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: tp.Any) -> None:
        return None


def summarise(splits: tp.Sequence[tp.Mapping[str, float]], flops: float, peak: tp.Optional[float] = None) \
        -> tp.Dict[str, tp.Any]:
    """Median seconds per phase and per step, achieved TFLOP/s, MFU and peak memory of a run's steps."""
    import torch

    from musicpipe import sizing

    phases = {name: statistics.median(s[name] for s in splits) for name in splits[0]}
    step = statistics.median(sum(s.values()) for s in splits)
    peak = sizing.H200_BF16_DENSE_TFLOPS if peak is None else peak
    return {"steps": len(splits), "step_s": step, "phases_s": phases, "flops_per_step": flops,
            "tflops": flops / step / 1e12, "mfu": sizing.mfu(flops, step, peak),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "gpu": torch.cuda.get_device_name(0)}


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"kind:preset, comma-separated (default {DEFAULT_RUNS})")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak (default H200's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_training: no CUDA GPU here (torch.cuda.is_available() is False): this benchmark runs on a GPU "
              "machine only", file=sys.stderr)
        return 2
    from musicpipe import audiocraft_env, sizing

    audiocraft_env.activate()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    results = []
    for run in [r.strip() for r in args.runs.split(",") if r.strip()]:
        kind, _, preset_name = run.partition(":")
        started = time.time()
        result = (bench_lm if kind == "lm" else bench_codec)(preset_name, args.steps, args.warmup)
        if args.peak_tflops:
            result["mfu"] = sizing.mfu(result["flops_per_step"], result["step_s"], args.peak_tflops)
        result["wall_s"] = time.time() - started
        results.append(result)
        rate = (f"{result['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in result
                else f"{result['audio_s_per_s']:,.0f} audio s/s")
        phases = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in result["phases_s"].items())
        print(f"{run}: batch {result['batch_per_gpu']}/GPU, step {result['step_s'] * 1000:.1f} ms ({phases}); {rate}; "
              f"{result['tflops']:.0f} TFLOP/s, MFU {result['mfu']:.1%}; peak memory "
              f"{result['peak_memory_gib']:.1f} GiB ({result['gpu']})", flush=True)
        torch.cuda.empty_cache()
    if args.json:
        from musicpipe import atomic

        atomic.write_json(Path(args.json), results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

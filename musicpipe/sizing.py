"""What a training run will cost before it runs: disk, padding, loader workers, epoch arithmetic, FLOPs.

Pure arithmetic on a composed AudioCraft config (or plain numbers), shared by preflight, ``musicpipe doctor``,
the Dora entry package and ``benchmarks/gpu_training.py``. Nothing here touches a GPU or the disk.

- :func:`lm_parameters`: a MusicGen LM's parameter count from ``transformer_lm`` and the conditioners.
- :func:`checkpoint_bytes` / :func:`disk_forecast`: what a run writes (``checkpoint.th``, the per-epoch
  checkpoints after ``checkpoint.keep_last`` retention, generate-stage samples, codec checks).
- :func:`padded_share`: the exact expected share of zero padding in training crops (AudioCraft's
  ``AudioDataset``: ``seek ~ U[0, max(0, d - segment * min_segment_ratio)]``, the end zero-padded).
- :func:`loader_workers` / :func:`shm_bytes`: DataLoader workers per rank from the machine, and what the
  batches in flight hold in ``/dev/shm``.
- :func:`epoch_plan`: steps per epoch from ``train.num_samples``, the batch and the ranks.
- :func:`lm_train_flops`: training FLOPs of one LM step (for the GPU benchmark's MFU).

Example:
    >>> p = lm_parameters(dim=1024, num_layers=24, n_q=4, card=2048)
    >>> round(p / 1e6, 1)
    318.9
    >>> round(padded_share([10.0], segment=10.0, min_segment_ratio=0.8), 4)
    0.1
    >>> loader_workers(cpu_cores=64, gpus=4)
    4
    >>> epoch_plan(batch_size=512, world=4, updates_per_epoch=2000, num_samples=1_000_000).steps
    1954
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

GB = 1e9                      # disk and forecast figures are decimal GB, as `df -H` and cloud volumes are sold
PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
FIT_MARGIN = 0.2              # WARN when the forecast is within 20 % of the free space
MAX_PADDED_SHARE = 0.01       # preflight WARNs above 1 % of training audio being zero padding
OPTIMIZER_MOMENTS = {"adam": 2, "adamw": 2, "dadam": 3, "sgd": 0, "lion": 1}
MAX_WORKERS_PER_RANK = 8
PREFETCH_FACTOR = 2           # torch DataLoader's default: batches prefetched per worker
MP3_BYTES_PER_S = 40_000      # AudioCraft writes generate-stage samples as 320 kbit/s mp3 (ffmpeg)
H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM (as H100 SXM) dense bf16 peak, TFLOP/s


# ------------------------------------------------------------------------------------------- parameters


def lm_parameters(dim: int, num_layers: int, n_q: int, card: int, hidden_scale: float = 4.0,
                  cross_attention: bool = False, bias_ff: bool = False, bias_attn: bool = False,
                  bias_proj: bool = False, norm_first: bool = True, layer_scale: tp.Optional[float] = None,
                  conditioner_params: int = 0) -> int:
    """Trainable parameters of AudioCraft's ``LMModel`` (``norm: layer_norm``, ``kv_repeat: 1``).

    Per layer: self-attention ``4 d^2`` (+``4 d`` biases), feed-forward ``2 d h`` (``h = hidden_scale x d``),
    two LayerNorms ``4 d``; cross-attention adds ``4 d^2`` and a LayerNorm. Around them: ``n_q`` embeddings of
    ``card + 1`` rows, the output LayerNorm, ``n_q`` output heads ``d x card``. ``conditioner_params``: the
    conditioners' own trainable weights (LUT embeddings, output projections).

    >>> lm_parameters(dim=16, num_layers=1, n_q=1, card=4)   # 5x16 + (4x256 + 2x16x64 + 64) + 32 + 64
    3312
    """
    d, h = int(dim), int(hidden_scale * dim)
    attn = 4 * d * d + (4 * d if bias_attn else 0)
    layer = attn + 2 * d * h + ((h + d) if bias_ff else 0) + 4 * d
    if cross_attention:
        layer += attn + 2 * d
    if layer_scale is not None:
        layer += d * (3 if cross_attention else 2)
    head = n_q * d * card + (n_q * card if bias_proj else 0)
    return num_layers * layer + n_q * (card + 1) * d + (2 * d if norm_first else 0) + head + int(conditioner_params)


def _get(cfg: tp.Any, key: str, default: tp.Any = None) -> tp.Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def conditioner_parameters(cfg: tp.Any) -> int:
    """Trainable parameters of the composed config's conditioners (T5 itself is frozen and not saved)."""
    dim = int(_get(cfg, "transformer_lm.dim"))
    total = 0
    for name, spec in (_get(cfg, "conditioners", {}) or {}).items():
        model = str(spec.get("model"))
        if model == "lut":
            lut = spec.get("lut")
            total += int(lut.n_bins) * int(lut.dim) + int(lut.dim) * dim + dim
        elif model == "t5":
            t5_dims = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
                       "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024}
            total += t5_dims.get(str(spec.t5.name), 768) * dim + dim
    return total


def lm_parameters_from_cfg(cfg: tp.Any) -> int:
    """:func:`lm_parameters` of a composed musicgen config."""
    lm = cfg.transformer_lm
    cross = bool(lm.get("cross_attention")) or bool(list(_get(cfg, "fuser.cross", []) or []))
    return lm_parameters(dim=int(lm.dim), num_layers=int(lm.num_layers), n_q=int(lm.n_q), card=int(lm.card),
                         hidden_scale=float(lm.hidden_scale), cross_attention=cross, bias_ff=bool(lm.bias_ff),
                         bias_attn=bool(lm.bias_attn), bias_proj=bool(lm.bias_proj), norm_first=bool(lm.norm_first),
                         layer_scale=lm.get("layer_scale"), conditioner_params=conditioner_parameters(cfg))


def codec_parameters_from_cfg(cfg: tp.Any) -> tp.Tuple[int, int]:
    """``(codec, discriminators)`` trainable parameters of a composed compression config.

    Built on PyTorch's ``meta`` device (no memory, no weights): AudioCraft's own builders decide the shapes.
    """
    import torch
    from audiocraft.models import builders as model_builders
    from audiocraft.solvers import builders as solver_builders

    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        cfg.device = "meta"  # the builders move the model to cfg.device
    with torch.device("meta"):
        model = model_builders.get_compression_model(cfg)
        adversaries = solver_builders.get_adversarial_losses(cfg)
    n_model = sum(p.numel() for p in model.parameters())
    n_adv = sum(p.numel() for adv in adversaries.values() for p in adv.parameters())
    return n_model, n_adv


# -------------------------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass(frozen=True)
class CheckpointSizes:
    """Bytes of each state in one ``checkpoint.th`` (AudioCraft's ``solver.state_dict()``), by state name."""

    states: tp.Dict[str, int]

    @property
    def full(self) -> int:
        return sum(self.states.values())

    def kept(self, keep_every_states: tp.Optional[tp.Sequence[str]]) -> int:
        """Bytes of a per-epoch checkpoint (``checkpoint.keep_every_states``: only those states; empty: all)."""
        if not keep_every_states:
            return self.full
        return sum(v for k, v in self.states.items() if k in set(keep_every_states))


def checkpoint_bytes(params: int, *, optimizer: str = "adamw", ema: bool = True,
                     best_state_bytes_per_param: int = 4, adversary_params: int = 0) -> CheckpointSizes:
    """Bytes per state of one checkpoint of a model with ``params`` fp32 parameters.

    ``model`` 4 B/param; ``optimizer`` 4 B per moment (AdamW: 2); ``ema`` 4 B; ``best_state`` 4 B, or 2 B under
    bf16/fp16 autocast (AudioCraft keeps it in the autocast dtype); the codec's ``adv_losses``: discriminator
    weights and their Adam moments, 12 B/param.

    >>> s = checkpoint_bytes(100, optimizer="adamw", ema=True, best_state_bytes_per_param=2)
    >>> s.states, s.full, s.kept(["ema"])
    ({'model': 400, 'optimizer': 800, 'ema': 400, 'best_state': 200}, 1800, 400)
    """
    moments = OPTIMIZER_MOMENTS.get(str(optimizer).lower(), 2)
    states = {"model": 4 * params, "optimizer": 4 * moments * params}
    if ema:
        states["ema"] = 4 * params
    states["best_state"] = best_state_bytes_per_param * params
    if adversary_params:
        states["adv_losses"] = 12 * adversary_params
    return CheckpointSizes(states)


def checkpoint_sizes_from_cfg(cfg: tp.Any) -> CheckpointSizes:
    """:func:`checkpoint_bytes` of a composed compression or musicgen config."""
    autocast = bool(_get(cfg, "autocast", False)) or bool(_get(cfg, "fsdp.use", False))
    best = 2 if autocast else 4
    common = dict(optimizer=str(_get(cfg, "optim.optimizer", "adamw")), ema=bool(_get(cfg, "optim.ema.use", False)),
                  best_state_bytes_per_param=best)
    if _get(cfg, "transformer_lm") is not None:
        return checkpoint_bytes(lm_parameters_from_cfg(cfg), **common)
    model, adv = codec_parameters_from_cfg(cfg)
    return checkpoint_bytes(model, adversary_params=adv, **common)


def epoch_saves(epochs: int, save_every: tp.Optional[int]) -> int:
    """Per-epoch checkpoints AudioCraft writes: after every epoch ``e`` with ``e % save_every == 0``.

    >>> epoch_saves(200, 10), epoch_saves(2, 1), epoch_saves(5, None)
    (20, 2, 0)
    """
    return int(epochs) // int(save_every) if save_every else 0


def kept_epoch_checkpoints(saves: int, keep_last: tp.Optional[int]) -> int:
    """Per-epoch checkpoints on disk at the worst moment: ``keep_last`` plus the one just written before the
    oldest is pruned (all of them when ``keep_last`` is unset or 0, AudioCraft's "keep everything").

    >>> kept_epoch_checkpoints(20, 10), kept_epoch_checkpoints(3, 10), kept_epoch_checkpoints(20, None)
    (11, 3, 20)
    """
    if not keep_last or keep_last <= 0:
        return saves
    return min(saves, int(keep_last) + 1)


@dataclasses.dataclass(frozen=True)
class Part:
    """One line of a forecast: ``count`` items of ``each`` bytes."""

    label: str
    count: int
    each: float

    @property
    def total(self) -> float:
        return self.count * self.each

    def text(self) -> str:
        return f"{self.count} {self.label} x {fmt_gb(self.each)}" if self.count != 1 else \
            f"{self.label} {fmt_gb(self.each)}"


def fmt_gb(n: float) -> str:
    """Bytes as GB with sensible precision.

    >>> fmt_gb(5.7e9), fmt_gb(134e9), fmt_gb(2.5e6)
    ('5.7 GB', '134 GB', '0.0025 GB')
    """
    gb = n / GB
    if gb >= 100:
        return f"{gb:.0f} GB"
    if gb >= 1:
        return f"{gb:.1f} GB"
    return f"{gb:.2g} GB"


@dataclasses.dataclass(frozen=True)
class DiskForecast:
    """What a run will write (estimate): its parts, their total, and the verdict against free space.

    >>> f = DiskForecast([Part("per-epoch checkpoints", 11, 5.7e9), Part("checkpoint.th", 2, 5.7e9)])
    >>> f.line(64e9)
    'needs ~74.1 GB: 11 per-epoch checkpoints x 5.7 GB + 2 checkpoint.th x 5.7 GB; 64.0 GB free'
    >>> f.status(64e9), f.status(80e9), f.status(200e9)
    ('FAIL', 'WARN', 'PASS')
    """

    parts: tp.List[Part]

    @property
    def total(self) -> float:
        return sum(p.total for p in self.parts)

    def status(self, free: float) -> str:
        if self.total > free:
            return FAIL
        if self.total > free * (1 - FIT_MARGIN):
            return WARN
        return PASS

    def line(self, free: tp.Optional[float] = None) -> str:
        parts = " + ".join(p.text() for p in self.parts if p.count and p.each) or "nothing"
        tail = f"; {fmt_gb(free)} free" if free is not None else ""
        return f"needs ~{fmt_gb(self.total)}: {parts}{tail}"

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"total_bytes": self.total, "parts": [dataclasses.asdict(p) for p in self.parts]}


def disk_forecast(cfg: tp.Any, sizes: tp.Optional[CheckpointSizes] = None, *, codec_check_every: int = 10,
                  codec_check_samples: int = 5, valid_seconds: float = 10.0) -> DiskForecast:
    """What training ``cfg`` (a composed compression or musicgen config) writes into its XP folder (estimate).

    Parts: ``checkpoint.th`` twice (the last one and the copy AudioCraft writes before replacing it); the
    per-epoch checkpoints after ``checkpoint.keep_last`` retention (:func:`kept_epoch_checkpoints`), each holding
    ``checkpoint.keep_every_states`` only when set; generate-stage samples (mp3, every ``generate.every``
    epochs, generated + reference); for the codec, the in-training codec checks (``CODEC_CHECK_EVERY``: two
    16-bit WAVs per checked segment of ``valid_seconds``).
    """
    sizes = sizes or checkpoint_sizes_from_cfg(cfg)
    epochs = int(_get(cfg, "optim.epochs", 1))
    saves = epoch_saves(epochs, _get(cfg, "checkpoint.save_every"))
    keep_every = list(_get(cfg, "checkpoint.keep_every_states", []) or [])
    kept = kept_epoch_checkpoints(saves, _get(cfg, "checkpoint.keep_last"))
    parts = [Part("checkpoint.th (last + the copy being written)", 2, sizes.full),
             Part("per-epoch checkpoints" + (f" ({'+'.join(keep_every)} only)" if keep_every else ""), kept,
                  sizes.kept(keep_every))]
    gen_every = _get(cfg, "generate.every")
    if gen_every:
        runs = epochs // int(gen_every)
        n = int(_get(cfg, "dataset.generate.num_samples", 0))
        rate = int(_get(cfg, "sample_rate", 32000))
        seconds = float(_get(cfg, "dataset.generate.segment_duration", None) or _get(cfg, "dataset.segment_duration", 10))
        files = 3 if _get(cfg, "transformer_lm") is not None else 2  # LM: generated, prompted, reference
        parts.append(Part("generate-stage sample sets", runs, n * files * seconds * MP3_BYTES_PER_S * rate / 32000))
    if _get(cfg, "transformer_lm") is None and codec_check_every:
        checks = epochs // int(codec_check_every)
        channels = int(_get(cfg, "channels", 1))
        wav = 2 * codec_check_samples * valid_seconds * int(_get(cfg, "sample_rate", 32000)) * 2 * channels
        parts.append(Part("codec checks", checks, wav))
    return DiskForecast(parts)


# ---------------------------------------------------------------------------------------------- padding


def expected_padding(duration: float, segment: float, min_segment_ratio: float) -> float:
    """Expected seconds of zero padding in one crop of a ``duration`` s file (AudioCraft's ``AudioDataset``).

    ``seek ~ U[0, m]``, ``m = max(0, duration - segment x ratio)``; padding ``max(0, seek + segment - duration)``.

    >>> expected_padding(10.0, 10.0, 0.8), expected_padding(10.0, 10.0, 1.0), expected_padding(8.0, 10.0, 1.0)
    (1.0, 0.0, 2.0)
    >>> round(expected_padding(10.0, 1.0, 0.8), 6)   # 1 s codec crops: pad only when seeking past 9 s
    0.002174
    """
    m = max(0.0, duration - segment * min_segment_ratio)
    if duration < segment:  # every crop pads (segment - duration) plus its seek
        return m / 2 + segment - duration
    free = duration - segment  # seeks up to here are not padded; beyond, the pad grows linearly
    if m <= free:
        return 0.0
    return (m - free) ** 2 / (2 * m)


def padded_share(durations: tp.Iterable[float], segment: float, min_segment_ratio: float,
                 min_audio_duration: tp.Optional[float] = None, max_audio_duration: tp.Optional[float] = None,
                 sample_on_duration: bool = True, weights: tp.Optional[tp.Iterable[float]] = None) -> float:
    """Expected share of zero padding in the training crops of files of these ``durations``.

    Files outside ``[min_audio_duration, max_audio_duration]`` are dropped (AudioCraft filters them); a file is
    drawn with probability proportional to its duration when ``sample_on_duration`` (AudioCraft's default), times
    its ``weights`` entry when given.

    >>> padded_share([10.0, 10.0, 4.0], segment=10.0, min_segment_ratio=1.0)   # the 4 s file: 6 s of 10 s, drawn 4/24
    0.1
    >>> padded_share([10.0, 10.0, 4.0], segment=10.0, min_segment_ratio=1.0, min_audio_duration=10.0)
    0.0
    """
    durs = [float(d) for d in durations]
    ws = [1.0] * len(durs) if weights is None else [float(w) for w in weights]
    picked = [(d, w) for d, w in zip(durs, ws)
              if (min_audio_duration is None or d >= min_audio_duration)
              and (max_audio_duration is None or d <= max_audio_duration)]
    if not picked or not segment:
        return 0.0
    probs = [w * (d if sample_on_duration else 1.0) for d, w in picked]
    total = sum(probs)
    if total <= 0:
        return 0.0
    pad = sum(p * expected_padding(d, segment, min_segment_ratio) for (d, _), p in zip(picked, probs)) / total
    return pad / segment


# ------------------------------------------------------------------------------------------------ loaders


def loader_workers(cpu_cores: int, gpus: int, max_per_rank: int = MAX_WORKERS_PER_RANK) -> int:
    """DataLoader workers per rank: a quarter of the cores shared by the ranks of this machine, 1 to ``max_per_rank``.

    The project's promise is "CPU cores / 4, at least 1" for one process; with one process per GPU each rank
    gets its share (``cores // (4 x gpus)``), so the loaders of all ranks together use at most a quarter of the
    cores and leave the rest to the trainers, their CUDA launch threads and decoding in the main processes.
    AudioCraft's default is 10 per rank whatever the machine: 40 processes plus 4 trainers on a 4-GPU pod.

    >>> [loader_workers(c, g) for c, g in ((64, 4), (16, 4), (2, 1), (256, 4), (32, 0))]
    [4, 1, 1, 8, 8]
    """
    ranks = max(1, int(gpus))
    return max(1, min(int(max_per_rank), int(cpu_cores) // (4 * ranks)))


def shm_bytes(batch_per_rank: int, segment_seconds: float, sample_rate: int, channels: int, workers: int,
              ranks: int, prefetch_factor: int = PREFETCH_FACTOR) -> int:
    """``/dev/shm`` held by the batches in flight: float32 audio, ``prefetch_factor`` batches per worker, every
    rank of this machine (a worker hands its batch to the trainer through shared memory).

    >>> shm_bytes(128, 10, 32000, 1, workers=4, ranks=4) / 1e9   # fma_large LM, 4 workers per rank
    5.24288
    """
    batch = int(batch_per_rank) * int(round(segment_seconds * sample_rate)) * int(channels) * 4
    return batch * max(1, int(workers)) * int(prefetch_factor) * max(1, int(ranks))


# ------------------------------------------------------------------------------------------------- epochs


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Steps of one training epoch as AudioCraft runs them (``StandardSolver.common_train_valid``)."""

    batch_per_rank: int
    loader_batches: int       # len(loader) on each rank: ceil(num_samples / world / batch_per_rank)
    steps: int                # min(loader_batches, updates_per_epoch)
    last_batch: int           # samples in the last batch a rank sees
    updates_per_epoch: int

    @property
    def exact(self) -> bool:
        """Every epoch runs ``updates_per_epoch`` full batches (the LR schedule's horizon is reached)."""
        return self.steps == self.updates_per_epoch and self.last_batch == self.batch_per_rank

    def problem(self) -> tp.Optional[str]:
        if self.exact:
            return None
        if self.loader_batches < self.updates_per_epoch:
            return (f"the train loader has {self.loader_batches} batches per rank, fewer than optim.updates_per_epoch="
                    f"{self.updates_per_epoch}: epochs stop at {self.steps} steps"
                    + (f" and the last batch holds {self.last_batch} of {self.batch_per_rank}"
                       if self.last_batch != self.batch_per_rank else "")
                    + " (the LR schedule counts updates_per_epoch steps, so it never reaches its end)")
        return None


def epoch_plan(batch_size: int, world: int, updates_per_epoch: tp.Optional[int], num_samples: int) -> EpochPlan:
    """Steps per epoch from the global ``batch_size``, the ranks, ``optim.updates_per_epoch`` and
    ``dataset.train.num_samples`` (split over the ranks by the DistributedSampler, no ``drop_last``).

    >>> p = epoch_plan(512, 4, 2000, 1_000_000); (p.steps, p.last_batch, p.exact)
    (1954, 16, False)
    >>> epoch_plan(512, 4, 2000, exact_num_samples(512, 2000)).exact
    True
    """
    world = max(1, int(world))
    per_rank = int(batch_size) // world
    samples_per_rank = math.ceil(int(num_samples) / world)
    batches = math.ceil(samples_per_rank / per_rank)
    updates = int(updates_per_epoch) if updates_per_epoch else batches
    steps = min(batches, updates)
    last = samples_per_rank - (batches - 1) * per_rank if steps == batches else per_rank
    return EpochPlan(per_rank, batches, steps, last, updates)


def exact_num_samples(batch_size: int, updates_per_epoch: int) -> int:
    """``dataset.train.num_samples`` that makes every epoch exactly ``updates_per_epoch`` full batches.

    >>> exact_num_samples(512, 2000), exact_num_samples(256, 2000)
    (1024000, 512000)
    """
    return int(batch_size) * int(updates_per_epoch)


# -------------------------------------------------------------------------------------------------- FLOPs


def lm_train_flops(batch: int, steps: int, dim: int, num_layers: int, n_q: int, card: int,
                   hidden_scale: float = 4.0, cross_attention: bool = False, cond_len: int = 0) -> float:
    """Training FLOPs of one LM step on ``batch`` sequences of ``steps`` timesteps (forward x 3).

    Forward, per timestep (matmuls only, 2 FLOPs per multiply-add): each layer's projections ``2 x (4 d^2 +
    2 d h)``, causal self-attention scores and values ``2 x 2 x T x d / 2`` on average (SDPA skips nothing
    but half the matrix is masked; counted as full here, as the kernels compute it: ``4 T d``), cross-attention
    ``2 x 4 d^2`` over queries plus ``4 x cond_len x d``; the ``n_q`` output heads ``2 d card`` each.
    Embedding lookups are free. Backward = 2 x forward.

    >>> lm_train_flops(1, 1, dim=16, num_layers=1, n_q=1, card=4)   # 3 x (2x(1024+2048) + 4x16 + 2x16x4)
    19008.0
    """
    d, h, t = int(dim), int(hidden_scale * dim), int(steps)
    per_layer = 2 * (4 * d * d + 2 * d * h) + 4 * t * d
    if cross_attention:
        per_layer += 2 * 4 * d * d + 4 * int(cond_len) * d
    forward = batch * t * (num_layers * per_layer + n_q * 2 * d * card)
    return 3.0 * forward


def mfu(flops_per_step: float, step_seconds: float, peak_tflops: float = H200_BF16_DENSE_TFLOPS) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak.

    >>> round(mfu(1e15, 2.0, peak_tflops=1000.0), 3)
    0.5
    """
    return flops_per_step / step_seconds / (peak_tflops * 1e12)

"""``musicpipe doctor``: is this machine ready to train? One table, non-zero exit when it is not.

Example:
    >>> from musicpipe import doctor
    >>> rows = doctor.run_checks()            # doctest: +SKIP
    >>> print(doctor.format_table(rows))      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import subprocess
import sys
import typing as tp
from pathlib import Path

from musicpipe import audiocraft_env, config, paths, presets, sizing

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_FREE_GB = 10.0
TORCHCODEC_VERSION = "0.11.1"  # pyproject.toml's pin, for the doctor's message


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def _version(dist: str) -> tp.Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_ffmpeg() -> Check:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return Check("ffmpeg", FAIL, "not found on PATH (AudioCraft writes audio through it): "
                                     "apt-get install -y ffmpeg, or run `make setup` as root")
    try:
        first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", FAIL, f"{exe} does not run: {exc}")
    version = first[0].split(" Copyright")[0] if first else "unknown version"
    return Check("ffmpeg", OK, f"{version} ({exe})")


def check_packages() -> tp.List[Check]:
    rows = [Check("python", OK if sys.version_info[:2] == (3, 11) else WARN, sys.version.split()[0])]
    for dist, label in (("torch", "torch"), ("torchaudio", "torchaudio"), ("audiocraft", "audiocraft"),
                        ("dora-search", "dora"), ("hydra-core", "hydra"), ("xformers", "xformers")):
        version = _version(dist)
        rows.append(Check(label, OK if version else FAIL, version or "not installed: run `make setup`"))
    return rows


def check_torchaudio_io() -> Check:
    """``torchaudio.load`` of a small WAV works (torchaudio 2.11 reads and writes through TorchCodec + FFmpeg).

    >>> check_torchaudio_io().status
    'OK'
    """
    import tempfile

    fix = (f"run `make setup` (installs torchcodec=={TORCHCODEC_VERSION}, which torchaudio 2.11 loads audio with; "
           "it needs FFmpeg's shared libraries 4-8: apt-get install -y ffmpeg)")
    try:
        import numpy as np
        import soundfile as sf
        import torchaudio

        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "probe.wav"
            sf.write(wav, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
            audio, sample_rate = torchaudio.load(str(wav))
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Check("torchaudio load", FAIL, f"{type(exc).__name__}: {first[:200]}; {fix}")
    if tuple(audio.shape) != (1, 1600) or sample_rate != 16000:
        return Check("torchaudio load", FAIL, f"read {tuple(audio.shape)} at {sample_rate} Hz from a 1600-sample "
                                              f"16 kHz WAV; {fix}")
    return Check("torchaudio load", OK, f"a WAV reads back (torchcodec {_version('torchcodec')})")


def check_gpus() -> Check:
    try:
        import torch
    except ImportError:
        return Check("cuda", FAIL, "torch is not importable")
    if not torch.cuda.is_available():
        return Check("cuda", OK, f"CPU only (torch {torch.__version__}, {os.cpu_count()} CPU cores)")
    parts = []
    for i in range(torch.cuda.device_count()):
        prop = torch.cuda.get_device_properties(i)
        parts.append(f"{i}: {prop.name} {prop.total_memory / 2**30:.0f} GiB")
    return Check("cuda", OK, f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): " + "; ".join(parts))


def check_disk(workspace: tp.Optional[tp.Union[str, Path]] = None) -> Check:
    ws = paths.workspace_root(workspace)
    free_gb = paths.free_gib(ws)
    status = OK if free_gb >= MIN_FREE_GB else WARN
    return Check("disk", status, f"{free_gb:.1f} GiB free under {ws}" +
                 ("" if status == OK else f" (less than {MIN_FREE_GB:.0f} GiB: checkpoints and data will not fit)"))


SHM_MIN_BYTES = 1e9  # below this /dev/shm cannot hold even one LM batch per worker (Docker's default: 64 MB)
SHM_FIX = "docker run --shm-size=32g (or the pod's shared-memory setting), or MUSICPIPE_LOADER_WORKERS=0"


def check_shm(total: tp.Optional[float] = None) -> Check:
    """``/dev/shm``: DataLoader workers hand every batch to the trainer through it."""
    if total is None:
        try:
            total = float(shutil.disk_usage("/dev/shm").total)
        except OSError:
            return Check("shm", WARN, f"no /dev/shm: loader workers cannot share batches; {SHM_FIX}")
    if total < SHM_MIN_BYTES:
        return Check("shm", WARN, f"/dev/shm is {sizing.fmt_gb(total)}: loader workers will die with a bus error on "
                                  f"audio batches; {SHM_FIX}")
    return Check("shm", OK, f"/dev/shm {sizing.fmt_gb(total)}")


def check_preset_forecasts(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[Check]:
    """For each GPU preset whose dataset is prepared in the workspace: what its codec and LM runs will write
    (:func:`musicpipe.sizing.disk_forecast`, an estimate) against the workspace volume's free space, and the
    ``/dev/shm`` its LM's loader workers need on this machine."""
    from musicpipe.dora_entry.loader_workers import ENV_VAR, effective_workers, usable_cores

    ws = paths.workspace_root(workspace)
    free = paths.free_gib(ws) * 2**30
    rows = []
    for name in presets.available_presets():
        preset = presets.load_preset(name)
        if preset.gpus < 1 or not (paths.dataset_dir(preset.dataset, ws) / "egs" / "train").is_dir():
            continue
        try:
            parts, lm_cfg = [], None
            for kind in presets.SOLVERS:
                if getattr(preset, kind) is None:
                    continue
                codec = presets.CodecInfo("00000000", 4, 2048) if kind == "musicgen" else None
                cfg = config.compose(presets.hydra_overrides(presets.dora_run_args(preset, kind, codec=codec)), ws)
                label = "codec" if kind == "compression" else "LM"
                parts += [sizing.Part(f"{label} {p.label}", p.count, p.each) for p in sizing.disk_forecast(cfg).parts]
                lm_cfg = cfg if kind == "musicgen" else lm_cfg
        except Exception as exc:  # noqa: BLE001 - a preset that does not compose is this row's finding
            rows.append(Check(f"disk {name}", WARN, f"cannot forecast: {type(exc).__name__}: {exc}"))
            continue
        forecast = sizing.DiskForecast(parts)
        status = OK if forecast.status(free) == sizing.PASS else WARN
        rows.append(Check(f"disk {name}", status, f"{forecast.line(free)} under {ws} (estimate)"))
        if lm_cfg is not None:
            ranks = max(1, preset.gpus)
            workers = effective_workers(int(lm_cfg.dataset.num_workers), usable_cores(), ranks,
                                        os.environ.get(ENV_VAR, "auto"))
            need = sizing.shm_bytes(int(lm_cfg.dataset.batch_size) // ranks, float(lm_cfg.dataset.segment_duration),
                                    int(lm_cfg.sample_rate), int(lm_cfg.channels), workers, ranks)
            try:
                total = float(shutil.disk_usage("/dev/shm").total)
            except OSError:
                total = 0.0
            rows.append(Check(f"shm {name}", OK if need <= total else WARN,
                              f"LM loaders: {ranks} rank(s) x {workers} worker(s) need ~{sizing.fmt_gb(need)}; "
                              f"/dev/shm has {sizing.fmt_gb(total)}" + ("" if need <= total else f": {SHM_FIX}")))
    return rows


def check_environment(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[Check]:
    env = audiocraft_env.environment(workspace)
    rows = []
    for key in ("MUSICPIPE_WORKSPACE", "USER", "AUDIOCRAFT_TEAM", "AUDIOCRAFT_DORA_DIR", "DORA_PACKAGE"):
        origin = "set" if os.environ.get(key) == env[key] else "set by musicpipe when it runs AudioCraft"
        rows.append(Check(f"env {key}", OK, f"{env[key]} ({origin})"))
    return rows


def check_hydra(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[Check]:
    """AudioCraft's config tree and model_config/ are both config sources, and ours resolve."""
    try:
        sources = config.search_path(workspace)
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        return [Check("hydra", FAIL, f"cannot build AudioCraft's Hydra search path: {type(exc).__name__}: {exc}")]
    rows = []
    audiocraft_cfg = [s for s in sources if s.endswith("/config") and "audiocraft" in s]
    ours = [s for s in sources if s.endswith(str(paths.MODEL_CONFIG_DIR))]
    rows.append(Check("hydra audiocraft configs", OK if audiocraft_cfg else FAIL,
                      audiocraft_cfg[0] if audiocraft_cfg else "AudioCraft's config/ is not a config source: "
                      "AudioCraft must be installed editable from its sdist (`make setup`)"))
    rows.append(Check("hydra model_config", OK if ours else FAIL,
                      ours[0] if ours else "model_config/ is not a config source: the hydra_plugins "
                      "SearchPathPlugin was not found (is the project installed with `make setup`?)"))
    if audiocraft_cfg and ours:
        try:
            cfg = config.compose(["solver=musicgen/musicgen_base_32khz", "conditioner=genre_lut",
                                  "dset=audio/fma_small_mini"], workspace, resolve=False)
            ok = list(cfg.conditioners.keys()) == ["genre"] and cfg.datasource.max_sample_rate == 32000
            rows.append(Check("hydra compose", OK if ok else FAIL,
                              "solver=musicgen/... conditioner=genre_lut dset=audio/fma_small_mini resolve"
                              if ok else "our conditioner/dset configs composed to unexpected values"))
        except Exception as exc:  # noqa: BLE001
            rows.append(Check("hydra compose", FAIL, f"{type(exc).__name__}: {exc}"))
    return rows


def run_checks(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[Check]:
    rows = [check_ffmpeg(), *check_packages(), check_torchaudio_io(), check_gpus(), check_disk(workspace),
            *check_environment(workspace)]
    rows.append(check_shm())
    if all(r.status != FAIL for r in rows if r.name in ("audiocraft", "dora", "hydra", "torch")):
        rows += check_hydra(workspace)
        if all(r.status == OK for r in rows if r.name.startswith("hydra")):
            rows += check_preset_forecasts(workspace)
    return rows


def format_table(rows: tp.Sequence[Check]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'check'.ljust(width)}  status  detail", f"{'-' * width}  ------  {'-' * 40}"]
    lines += [f"{r.name.ljust(width)}  {r.status.ljust(6)}  {r.detail}" for r in rows]
    return "\n".join(lines)


def main(workspace: tp.Optional[tp.Union[str, Path]] = None) -> int:
    rows = run_checks(workspace)
    print(format_table(rows))
    failed = [r for r in rows if r.status == FAIL]
    warned = [r for r in rows if r.status == WARN]
    if failed:
        print(f"doctor: {len(failed)} required check(s) failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed))
        return 1
    print(f"doctor: ready ({len(rows)} checks, {len(warned)} warning(s))")
    return 0

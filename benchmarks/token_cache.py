"""MusicGen training from the token store against AudioCraft's own path (audio read and encoded every step).

    .venv/bin/python benchmarks/token_cache.py [--configs demo,large] [--epochs 2] [--workspace DIR] [--json F]

Both paths train the same LM XP config on the same data (the synthetic demo set: 12 segments of 10 s), one after
the other in this run, through ``musicpipe train-lm`` (``--no-token-cache``, then ``--token-cache``, each in its
own fresh XP folder). A probe installed in the Dora process (``MUSICPIPE_EXTRA_HOOKS``) times every train stage
and counts the data bytes the train loader reads: for audio, the samples AudioCraft's ``MusicDataset`` decodes
times the file's bytes per sample; for tokens, the int16 tokens each example takes from the store. The last
epoch is reported (the first pays for warm-up); steps/s = ``optim.updates_per_epoch`` / train-stage seconds.

Configurations (CPU-feasible):
- ``demo``: the demo_cpu preset as the tests train it: its tiny codec (SEANet 16 dims, 4 filters), xsmall LM,
  batch 2 of 2 s crops.
- ``large``: the 32 kHz EnCodec architecture of the real presets (``compression/encodec_musicgen_32khz``:
  SEANet 128 dims, 64 filters, 4 x 2048 codes; random weights, which encode at the same cost as trained ones,
  as a release folder), an LM of dim 512 x 8 layers, batch 4 of 10 s: the shape of a pod step at CPU scale.
Also reported: the store's size and build time, and its bytes per hour of audio.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_ENV = "TOKEN_BENCH_OUT"


# ----------------------------------------------------------------------------------- the probe (Dora process)

def install_probe() -> None:
    """Time each train stage and count the bytes its loader reads; one JSON line per epoch to $TOKEN_BENCH_OUT."""
    import soundfile
    from audiocraft.data.music_dataset import MusicDataset
    from audiocraft.solvers.musicgen import MusicGenSolver

    from musicpipe.dora_entry.token_cache_hook import TokenSegments

    state = {"on": False, "bytes": 0}
    width = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8, "PCM_U8": 1, "PCM_S8": 1}

    @functools.lru_cache(maxsize=None)
    def bytes_per_sample(path: str) -> int:
        return width.get(soundfile.info(path).subtype, 2)

    audio_get, token_get, train = MusicDataset.__getitem__, TokenSegments.__getitem__, MusicGenSolver.train

    def audio_item(self, index):
        wav, info = audio_get(self, index)
        if state["on"]:
            state["bytes"] += int(info.n_frames) * int(info.channels) * bytes_per_sample(info.meta.path)
        return wav, info

    def token_item(self, index):
        info = token_get(self, index)
        if state["on"]:
            state["bytes"] += int(info.audio_tokens.numel()) * 2
        return info

    def train_stage(self):
        state.update(on=True, bytes=0)
        t0 = time.perf_counter()
        try:
            return train(self)
        finally:
            seconds = time.perf_counter() - t0
            state["on"] = False
            with open(os.environ[OUT_ENV], "a") as f:
                f.write(json.dumps({"epoch": self.epoch, "cached": self._cached_batch_loader is not None,
                                    "seconds": seconds, "steps": self.train_updates_per_epoch,
                                    "bytes": state["bytes"]}) + "\n")

    MusicDataset.__getitem__ = audio_item
    TokenSegments.__getitem__ = token_item
    MusicGenSolver.train = train_stage


# ----------------------------------------------------------------------------------- the benchmark

CONFIGS = {
    "demo": {"overrides": [], "segment": 2.0, "batch": 2},
    "large": {"overrides": ["transformer_lm.dim=512", "transformer_lm.num_heads=8", "transformer_lm.num_layers=8"],
              "segment": 10.0, "batch": 4},
}


def large_codec(workspace: Path) -> Path:
    """A release folder holding the 32 kHz EnCodec architecture of the real presets (random weights)."""
    import torch
    from audiocraft import __version__
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    from musicpipe import audiocraft_env, config, presets

    folder = workspace / "encodec_32khz_architecture"
    if (folder / "compression_state_dict.bin").exists():
        return folder
    args = presets.dora_run_args(presets.load_preset("fma_large"), "compression", dset="synthetic_demo",
                                 overrides=["device=cpu", "autocast=false"])
    cfg = config.compose(presets.hydra_overrides(args), workspace)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    torch.manual_seed(0)
    model = builders.get_compression_model(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"best_state": model.state_dict(), "xp.cfg": OmegaConf.to_yaml(cfg), "version": __version__,
                "exported": True}, folder / "compression_state_dict.bin")
    audiocraft_env.enable_checkpoint_loading()
    return folder


def train(codec: str, workspace: Path, name: str, cached: bool, epochs: int, out: Path) -> dict:
    from musicpipe import training

    conf = CONFIGS[name]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")])),
           "MUSICPIPE_EXTRA_HOOKS": "token_cache:install_probe", OUT_ENV: str(out)}
    out.unlink(missing_ok=True)
    run = training.train_lm("demo_cpu", codec, "synthetic_demo", workspace, conditioning="genre", epochs=epochs,
                            batch_size=conf["batch"], segment_seconds=conf["segment"], echo=False, outputs=None,
                            token_cache=cached, env=env,
                            overrides=[*conf["overrides"], f"label=bench_{name}_{'tokens' if cached else 'audio'}"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    last = rows[-1]
    return {"xp": run.sig, "steps_per_s": last["steps"] / last["seconds"], "bytes_per_step": last["bytes"] / last["steps"],
            "epochs": rows, "ce": [h["train"]["ce"] for h in run.history()]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="demo,large")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import logging

    logging.basicConfig(level=logging.WARNING)
    from musicpipe import token_cache, training
    from musicpipe.prepare import PrepareConfig
    from musicpipe.sources import synthetic

    ws = args.workspace or Path(tempfile.mkdtemp(prefix="token_bench_"))
    if not (ws / "data" / "synthetic_demo" / "egs" / "train" / "data.jsonl").exists():
        synthetic.prepare_synthetic("synthetic_demo", ws, PrepareConfig(num_jobs=1), tracks_per_genre=3,
                                    progress=False)
    results = {}
    for name in args.configs.split(","):
        if name == "demo":
            codec = training.train_codec("demo_cpu", "synthetic_demo", ws, echo=False, outputs=None).sig
        else:
            codec = str(large_codec(ws))
        info = training.resolve_codec(codec, "synthetic_demo", ws)
        t0 = time.perf_counter()
        store = token_cache.build_store(info.sig, "synthetic_demo", ws, checkpoint=info.compression_checkpoint,
                                        device="cpu", progress=False)
        build_s = time.perf_counter() - t0
        audio = train(codec, ws, name, False, args.epochs, ws / f"bench_{name}_audio.jsonl")
        tokens = train(codec, ws, name, True, args.epochs, ws / f"bench_{name}_tokens.jsonl")
        results[name] = {"audio": audio, "tokens": tokens, "speedup": tokens["steps_per_s"] / audio["steps_per_s"],
                         "store": {"path": str(store.path), "bytes": store.bytes, "segments": store.segments,
                                   "audio_hours": store.audio_hours, "build_seconds": build_s,
                                   "bytes_per_audio_hour": store.bytes / store.audio_hours}}
        r = results[name]
        print(f"{name}: audio {audio['steps_per_s']:.3f} steps/s, {audio['bytes_per_step'] / 1e3:.1f} kB/step; tokens "
              f"{tokens['steps_per_s']:.3f} steps/s, {tokens['bytes_per_step'] / 1e3:.2f} kB/step; "
              f"{r['speedup']:.2f}x steps/s, {audio['bytes_per_step'] / tokens['bytes_per_step']:.0f}x fewer bytes; "
              f"store {r['store']['bytes_per_audio_hour'] / 1e6:.2f} MB per audio hour, built in {build_s:.1f} s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

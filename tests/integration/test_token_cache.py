"""The LM token cache, for real: a store built with the session's codec from the demo dataset's WAVs, compared
with AudioCraft's own encoding; no-op, kill-and-resume and incremental re-runs; an LM trained from it (one
process, and `dora run -d` with 2 gloo workers). The store lives under a copy of the demo dataset so the
shared dataset stays as the other tests expect it."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
from musicpipe import manifests, paths, report, token_cache, training

pytestmark = pytest.mark.integration
DATASET = "tokens_demo"


def copy_dataset(workspace: Path, name: str) -> Path:
    """``synthetic_demo`` (audio, sidecars, manifests, dset config) copied to dataset ``name``."""
    src, dst = paths.dataset_dir("synthetic_demo", workspace), paths.dataset_dir(name, workspace)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src / "audio", dst / "audio")
    for split in ("train", "valid"):
        records = manifests.read_manifest(src / "egs" / split)
        manifests.write_manifest([dataclasses.replace(r, path=r.path.replace(str(src), str(dst))) for r in records],
                                 dst / "egs" / split)
    manifests.write_dset_config(name, workspace)
    return dst


@pytest.fixture(scope="module")
def dataset(workspace, demo_data):
    return copy_dataset(workspace, DATASET)


@pytest.fixture(scope="module")
def model(codec, workspace):
    return token_cache.load_codec(f"//sig/{codec.sig}", workspace, "cpu")


@pytest.fixture(scope="module")
def store(codec, workspace, dataset, model):
    return token_cache.build_store(codec.sig, DATASET, workspace, batch_size=4, progress=False)


def _files(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()}


def test_store_holds_exactly_what_the_codec_encodes(store, model):
    from audiocraft.data.audio import audio_read

    s = token_cache.Store.open(store.path)
    assert s.codec["weights"] == token_cache.weights_hash(model) and s.codec["n_q"] == 4
    assert store.segments == 12 and store.encoded == 12 and (store.path / token_cache.MARKER).is_file()
    assert not (store.path / "pending").exists()
    rng = random.Random(0)
    for split in ("train", "valid"):
        index = s.split(split)
        assert index.tokens.dtype == np.int16 and index.tokens.shape[1] == 4
        assert index.paths == [r.path for r in manifests.read_manifest(store.path.parents[1] / "egs" / split)]
        for i in rng.sample(range(len(index)), min(3, len(index))):
            wav, sr = audio_read(index.paths[i])
            with torch.no_grad():
                codes, _ = model.encode(wav[None])
            assert np.array_equal(index.segment(i), codes[0].numpy().T), (split, i)
            assert index.samples[i] == wav.shape[-1] == 320000
    # 10 s at 50 frames/s, 4 codebooks, 2 bytes: 4 KB of tokens per segment (plus the .npy headers)
    assert store.frames == 12 * 500
    assert store.bytes == 12 * 500 * 4 * 2 + 2 * 128


def test_second_run_writes_nothing_and_says_so(store, codec, workspace):
    before = _files(store.path)
    res = run_cli("cache-tokens", "--codec", codec.sig, "--dataset", DATASET, "--workspace", str(workspace))
    assert res.returncode == 0, res.stderr[-3000:]
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("cache-tokens: 12 segments (up to date, nothing written), 6000 frames"), line
    assert str(store.path) in line
    assert _files(store.path) == before


def test_killed_build_resumes_to_the_identical_store(store, codec, workspace):
    other = "tokens_demo_kill"
    copy_dataset(workspace, other)
    cmd = [sys.executable, "-m", "musicpipe", "cache-tokens", "--codec", codec.sig, "--dataset", other, "--workspace",
           str(workspace), "--batch-size", "1", "--chunk-segments", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tokens = paths.dataset_dir(other, workspace) / "tokens"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(tokens.glob("*/pending/chunk-*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = next(tokens.iterdir())
    assert not (folder / token_cache.MARKER).exists()  # not complete, so never used
    done = len(list(folder.glob("pending/chunk-*.json")))
    assert 2 <= done < 12

    res = run_cli("cache-tokens", "--codec", codec.sig, "--dataset", other, "--workspace", str(workspace))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"({12 - done} encoded, {done} reused)" in res.stdout.splitlines()[-1] or \
        f"({12 - done - 1} encoded, {done + 1} reused)" in res.stdout.splitlines()[-1], res.stdout[-500:]
    assert folder.name == store.path.name  # the same codec and weights: the same store name
    a, b = token_cache.Store.open(store.path), token_cache.Store.open(folder)
    for split in ("train", "valid"):
        x, y = a.split(split), b.split(split)
        assert np.array_equal(np.asarray(x.tokens), np.asarray(y.tokens))
        assert x.offsets.tolist() == y.offsets.tolist() and x.samples.tolist() == y.samples.tolist()
    assert not (folder / "pending").exists()


def test_changed_manifest_reencodes_only_what_changed(codec, workspace, model):
    other = "tokens_demo_edit"
    dst = copy_dataset(workspace, other)
    first = token_cache.build_store(codec.sig, other, workspace, model=model, progress=False)
    egs = dst / "egs" / "train"
    records = manifests.read_manifest(egs)
    dropped, rewritten = records[0], records[1]
    manifests.write_manifest(records[1:], egs)
    data = Path(rewritten.path).read_bytes()
    time.sleep(0.01)
    Path(rewritten.path).write_bytes(data)  # prepare re-writing a segment: same path, new modification time
    state = token_cache.store_state(codec.sig, other, workspace, model=model)
    assert state["state"] == "stale" and state["stale"] == ["train"]

    again = token_cache.build_store(codec.sig, other, workspace, model=model, progress=False)
    assert again.path == first.path and again.segments == 11 and again.encoded == 1 and again.reused == 10
    index = token_cache.Store.open(again.path).split("train")
    assert dropped.path not in index.paths and len(index) == 10
    assert token_cache.store_state(codec.sig, other, workspace, model=model)["state"] == "current"

    # the same codec XP with other weights (trained further) gets its own store, never a mixed one
    changed = token_cache.load_codec(f"//sig/{codec.sig}", workspace, "cpu")
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    state = token_cache.store_state(codec.sig, other, workspace, model=changed)
    assert state["state"] == "missing" and state["path"] != str(again.path)
    assert again.path.name in state["message"]  # names the stores of the codec's other weights


def test_first_batch_matches_what_audiocraft_encodes_on_the_fly(store, workspace, model):
    """Same seed, no random crops (10 s examples of 10 s segments): the cached loader's first batch holds exactly
    the tokens the solver would compute from the audio loader's first batch, with the same conditioning."""
    from audiocraft.data.music_dataset import MusicDataset
    from audiocraft.utils.utils import get_loader

    from musicpipe.dora_entry.token_cache_hook import TokenSegments

    audio = MusicDataset.from_meta(str(paths.dataset_dir(DATASET, workspace) / "egs" / "train"),
                                   segment_duration=10.0, sample_rate=32000, channels=1, num_samples=8, shuffle=True,
                                   return_info=True, min_segment_ratio=1.0)
    audio.current_epoch = 3
    tokens = TokenSegments(audio, token_cache.Store.open(store.path))
    batches = []
    for dataset, collate in ((audio, audio.collater), (tokens, TokenSegments.collater)):
        loader = get_loader(dataset, 8, batch_size=4, num_workers=0, seed=0, collate_fn=collate, shuffle=True)
        torch.manual_seed(1234)
        batches.append(next(iter(loader)))
    (wav, audio_infos), (token_infos,) = batches
    with torch.no_grad():
        expected, _ = model.encode(wav)
    got = torch.stack([i.audio_tokens for i in token_infos]).long()
    assert got.shape == expected.shape == (4, 4, 500)
    assert torch.equal(got, expected)
    assert [i.meta.path for i in token_infos] == [i.meta.path for i in audio_infos]
    assert [i.genre for i in token_infos] == [i.genre for i in audio_infos] and all(i.genre for i in token_infos)
    assert [i.n_frames for i in token_infos] == [i.n_frames for i in audio_infos] == [320000] * 4


def test_lm_trained_from_the_cache_learns_and_records_its_store(store, codec, workspace, outputs):
    run = training.train_lm("demo_cpu", codec.sig, DATASET, workspace, conditioning="genre", epochs=3, echo=False,
                            outputs=None, token_cache=True)
    ce = [h["train"]["ce"] for h in run.history()]
    assert len(ce) == 3 and ce[2] < ce[1] < ce[0], ce
    assert run.xp.record["token_cache"] == str(store.path)
    log = (run.folder / "solver.log.0").read_text(errors="replace")
    assert f"training from the token store {store.path}" in log
    folder = report.write_report(run.sig, workspace, outputs=outputs)
    assert str(store.path) in (folder / "index.html").read_text()


def test_two_gloo_workers_each_train_on_their_share_of_the_cache(store, codec, workspace):
    run = training.train_lm("demo_cpu", codec.sig, DATASET, workspace, conditioning="genre", gpus=2, echo=False,
                            outputs=None, token_cache=True, overrides=["optim.epochs=1", "label=tokens_ddp"])
    assert len(run.history()) == 1 and run.checkpoint.exists()
    logs = {p.name: p.read_text(errors="replace") for p in run.folder.glob("solver.log.*")}
    # batch 2 over 2 ranks, 5 updates per epoch, num_samples = 1,000,000 by default: each rank its half
    for rank in (0, 1):
        assert f"rank {rank}/2 draws" in logs[f"solver.log.{rank}"], logs.get(f"solver.log.{rank}", "")[-2000:]
    halves = {int(line.split(" draws ")[1].split()[0]) for log in logs.values() for line in log.splitlines()
              if " draws " in line}
    assert len(halves) == 1
    assert run.xp.record["token_cache"] == str(store.path)
    assert json.loads((run.folder / ".argv.json").read_text()).count("optim.epochs=1") == 1

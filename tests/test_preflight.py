"""Unit tests of training_checks/preflight.py on small real datasets (synthetic source through prepare), broken
on purpose: every check's status and that its message names the file and the reason."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import training_checks.preflight as pf
from musicpipe import manifests, paths
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic

NAME = "synth"
ENV_KEYS = ("MUSICPIPE_WORKSPACE", "AUDIOCRAFT_DORA_DIR", "HF_HUB_OFFLINE", "AUDIOCRAFT_TEAM", "DORA_PACKAGE",
            "DORA_MAIN_MODULE")
CLEAN = ["config", "manifest train", "manifest valid", "files", "sample rate", "channels", "segment length", "padding",
         "split leak", "disk", "workspace", "shm", "epoch", "gpu", "batch", "env MUSICPIPE_WORKSPACE", "env AUDIOCRAFT_DORA_DIR"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test states the environment it checks (the session may have set the workspace variables)."""
    monkeypatch.delenv("MUSICPIPE_WORKSPACE", raising=False)
    monkeypatch.delenv("AUDIOCRAFT_DORA_DIR", raising=False)


def _prepare(ws: Path, config: PrepareConfig | None = None, duration: float = 4.0) -> Path:
    """8 synthetic tracks (4 genres x 2, one artist each) of ``duration`` s at 32 kHz mono; returns the dataset dir."""
    synthetic.prepare_synthetic(NAME, ws, config or PrepareConfig(num_jobs=1), tracks_per_genre=2, duration=duration,
                                progress=False)
    return paths.dataset_dir(NAME, ws)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    _prepare(ws)
    return ws


def _records(ws: Path, split: str) -> list:
    return manifests.read_manifest(paths.dataset_dir(NAME, ws) / "egs" / split)


def _statuses(report: pf.PreflightReport) -> dict:
    return {r.name: r.status for r in report.results}


def _broken(report: pf.PreflightReport, name: str, status: str = pf.FAIL) -> str:
    """The message of check ``name``, asserting it has ``status`` and every other check passed."""
    statuses = _statuses(report)
    assert statuses[name] == status, report.format()
    others = {n: s for n, s in statuses.items() if n != name and s != pf.PASS}
    assert not others, report.format()
    assert report.ok == (status != pf.FAIL)
    return report.get(name).message


def test_clean_dataset_passes_every_check_and_leaves_the_environment(ws: Path) -> None:
    before = {k: os.environ.get(k) for k in ENV_KEYS}
    report = pf.run_preflight(NAME, workspace=ws)
    assert [r.name for r in report.results] == CLEAN
    assert set(_statuses(report).values()) == {pf.PASS}, report.format()
    assert report.ok and report.status == pf.PASS and not report.failures
    # values come from the composed AudioCraft config of the demo_cpu preset
    config = report.get("config").details
    assert (config["sample_rate"], config["channels"], config["segment_duration"], config["min_segment_ratio"],
            config["batch_size"], config["device"]) == (32000, 1, 1.0, 1.0, 2, "cpu")
    assert config["datasource"]["train"] == str(paths.dataset_dir(NAME, ws) / "egs" / "train")
    train, valid = _records(ws, "train"), _records(ws, "valid")
    assert report.get("files").details["checked"] == {"train": len(train), "valid": len(valid)}
    assert report.get("manifest train").details["files"] == len(train) == 7
    assert report.get("split leak").details["split_method"] == "artist"
    assert "CPU-only preset demo_cpu" in report.get("gpu").message
    assert report.summary_line() == f"preflight: {NAME} (compression, preset demo_cpu): ready: 17 checks, 17 passed"
    # composing activates AudioCraft's environment for a moment; the caller's is left as it was
    assert {k: os.environ.get(k) for k in ENV_KEYS} == before
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and [r["name"] for r in data["results"]] == CLEAN


def test_sampling_is_seeded_and_bounded(ws: Path) -> None:
    a = pf.run_preflight(NAME, workspace=ws, sample=3, seed=1)
    b = pf.run_preflight(NAME, workspace=ws, sample=3, seed=1)
    assert a.get("files").details["checked"] == {"train": 3, "valid": 1}
    assert a.get("files").message == b.get("files").message == \
        "a sample (seed 1) of 4 file(s) (3 train, 1 valid) exist and decode"
    paths_ = [r.path for r in _records(ws, "train")]
    assert pf.select(paths_, 3, seed=1) == pf.select(list(reversed(paths_)), 3, seed=1)
    assert len(set(pf.select(paths_, 3, seed=1))) == 3


def test_empty_train_manifest(ws: Path) -> None:
    manifest = paths.dataset_dir(NAME, ws) / "egs" / "train" / "data.jsonl"
    manifest.write_text("")
    report = pf.run_preflight(NAME, workspace=ws)
    statuses = _statuses(report)
    assert statuses["manifest train"] == pf.FAIL and statuses["manifest valid"] == pf.PASS
    assert report.get("manifest train").message.startswith(f"{manifest}: empty, lists no audio file")
    assert "split leak" not in statuses  # nothing to compare with
    assert statuses["files"] == pf.PASS and report.get("files").details["checked"] == {"valid": 1}
    assert not report.ok and report.summary_line().startswith(f"preflight: {NAME} (compression, preset demo_cpu): "
                                                              "NOT ready: 1 failed (manifest train)")


def test_missing_and_invalid_manifests(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    root = _prepare(ws)
    (root / "egs" / "valid" / "data.jsonl").unlink()
    (root / "egs" / "train" / "data.jsonl").write_text("{not json\n")
    report = pf.run_preflight(NAME, workspace=ws)
    assert report.get("manifest valid").message.startswith(f"{root / 'egs' / 'valid' / 'data.jsonl'}: missing")
    assert report.get("manifest train").message.startswith(
        f"{root / 'egs' / 'train' / 'data.jsonl'}: not a valid AudioCraft manifest")
    assert "files" not in _statuses(report) and not report.ok


def test_dataset_never_prepared(tmp_path: Path) -> None:
    report = pf.run_preflight("nothing_here", workspace=tmp_path / "empty ws")
    statuses = _statuses(report)
    assert statuses["config"] == statuses["manifest train"] == statuses["manifest valid"] == pf.FAIL
    assert "Could not find 'dset/audio/nothing_here'" in report.get("config").message
    assert str(tmp_path / "empty ws" / "data" / "nothing_here" / "egs" / "train" / "data.jsonl") in \
        report.get("manifest train").message
    # what does not need the data still ran
    assert statuses["gpu"] == statuses["batch"] == statuses["disk"] == pf.PASS


def test_missing_file(ws: Path) -> None:
    victim = _records(ws, "train")[2].path
    Path(victim).unlink()
    message = _broken(pf.run_preflight(NAME, workspace=ws), "files")
    assert message == f"1 of 8 file(s) checked are unusable: {victim}: file not found (listed in train)"


def test_corrupted_wav_bytes(ws: Path) -> None:
    victim = Path(_records(ws, "valid")[0].path)
    data = bytearray(victim.read_bytes())
    data[:64] = os.urandom(64)  # the RIFF header: no longer an audio file
    victim.write_bytes(bytes(data))
    message = _broken(pf.run_preflight(NAME, workspace=ws), "files")
    assert message.startswith(f"1 of 8 file(s) checked are unusable: {victim}: not a readable audio file")
    assert message.endswith("(listed in valid)")


def test_truncated_wav(ws: Path) -> None:
    victim = Path(_records(ws, "train")[0].path)
    victim.write_bytes(victim.read_bytes()[:44 + 2 * 3200])  # header + 0.1 s of the 4 s
    message = _broken(pf.run_preflight(NAME, workspace=ws), "files")
    assert f"{victim}: truncated: 6444 bytes, its header says 256044 (listed in train)" in message


def test_file_at_another_sample_rate(ws: Path) -> None:
    victim = Path(_records(ws, "train")[1].path)
    t = np.arange(int(4.0 * 44100)) / 44100
    sf.write(victim, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100, subtype="PCM_16")
    message = _broken(pf.run_preflight(NAME, workspace=ws), "sample rate")
    assert f"1 sampled file(s) are not at 32000 Hz: {victim}: 44100 Hz" in message
    assert "the config trains at 32000 Hz" in message


def test_stereo_file(ws: Path) -> None:
    victim = Path(_records(ws, "train")[1].path)
    audio = np.zeros((int(4.0 * 32000), 2), dtype=np.float32)
    audio[:, 0] = 0.1
    sf.write(victim, audio, 32000, subtype="PCM_16")
    message = _broken(pf.run_preflight(NAME, workspace=ws), "channels")
    assert f"1 sampled file(s) do not have 1 channel(s): {victim}: 2 channel(s)" in message


def test_manifest_declares_another_rate(ws: Path) -> None:
    egs = paths.dataset_dir(NAME, ws) / "egs" / "valid"
    recs = [manifests.AudioRecord(path=r.path, duration=r.duration, sample_rate=16000) for r in _records(ws, "valid")]
    manifests.write_manifest(recs, egs)
    message = _broken(pf.run_preflight(NAME, workspace=ws), "sample rate")
    assert message.startswith(f"1 manifest line(s) declare another rate than 32000 Hz: {recs[0].path} "
                              "(16000 Hz, valid)")


def test_track_leaked_across_splits(ws: Path) -> None:
    train = _records(ws, "train")
    leaked = train[0]
    egs = paths.dataset_dir(NAME, ws) / "egs" / "valid"
    manifests.write_manifest(_records(ws, "valid") + [leaked], egs)
    message = _broken(pf.run_preflight(NAME, workspace=ws), "split leak")
    track = f"{NAME}/{Path(leaked.path).parent.name}"  # qualified by its dataset (combined sets reuse ids)
    assert message == (f"1 track(s) have segments in train and in valid, e.g. {track!r} (train has {leaked.path}, "
                       f"valid has {leaked.path}): re-run prepare's split")


def test_artist_leaked_across_splits(ws: Path) -> None:
    train_path = _records(ws, "train")[3].path
    valid_path = _records(ws, "valid")[0].path
    train_artist = json.loads(Path(train_path).with_suffix(".json").read_text())["artist"]
    sidecar = Path(valid_path).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["artist"] = train_artist.upper()  # artist names compare case-insensitively
    sidecar.write_text(json.dumps(data))
    message = _broken(pf.run_preflight(NAME, workspace=ws), "split leak")
    assert message.startswith(f"1 artist(s) on both sides of an artist split, e.g. {train_artist!r} "
                              f"(train has {train_path}, valid has {valid_path})")
    # a split prepare made by track (its fallback) puts artists on both sides on purpose: a warning
    report_path = paths.dataset_dir(NAME, ws) / "prepare_report.json"
    report = json.loads(report_path.read_text())
    report["split"]["method_used"] = "track"
    report_path.write_text(json.dumps(report))
    message = _broken(pf.run_preflight(NAME, workspace=ws), "split leak", pf.WARN)
    assert "fell back to a track split" in message


def test_segments_shorter_than_the_solver_needs(ws: Path) -> None:
    report = pf.run_preflight(NAME, workspace=ws, overrides=["dataset.segment_duration=30", "dataset.min_segment_ratio=0.5"])
    message = _broken(report, "segment length")
    train = paths.dataset_dir(NAME, ws) / "egs" / "train" / "data.jsonl"
    longest = max(_records(ws, "train"), key=lambda r: r.duration)  # all 4 s: the first in manifest order
    assert message.startswith(f"{train}: no file is at least 15 s long (segment_duration 30 s x min_segment_ratio "
                              f"0.5); the longest, {longest.path}, is 4 s")
    assert "set dataset.segment_duration <= 8" in message
    assert report.get("segment length").details["train"] == {"files": 7, "long_enough": 0, "share": 0.0}


def test_short_segments_warn_below_the_share(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    # 4 s tracks cut into 3 s segments + 1 s tails: 75 % of the audio in files of 3 s
    _prepare(ws, PrepareConfig(num_jobs=1, segment_seconds=3.0, min_last_segment_seconds=0.5))
    overrides = ["dataset.segment_duration=5", "dataset.min_segment_ratio=0.5"]  # needs 2.5 s (x 0.5)
    report = pf.run_preflight(NAME, workspace=ws, overrides=overrides)
    assert report.get("segment length").status == pf.PASS
    assert report.get("segment length").details["train"]["share"] == pytest.approx(0.75)
    report = pf.run_preflight(NAME, workspace=ws, overrides=overrides, min_long_share=0.8)
    message = _broken(report, "segment length", pf.WARN)
    assert "only 75% of the audio (7 of 14 files) is in files at least 2.5 s long" in message


def test_not_enough_disk(ws: Path) -> None:
    message = _broken(pf.run_preflight(NAME, workspace=ws, min_free_gb=1e9), "disk")
    assert message.startswith(f"{ws}: needs ~") and "GB free (estimate); below the 1e+09 GiB floor" in message


def test_batch_not_divisible_by_processes(ws: Path) -> None:
    report = pf.run_preflight(NAME, workspace=ws, gpus=3)
    message = _broken(report, "batch")
    assert message.startswith("preset demo_cpu: dataset.batch_size=2, dataset.evaluate.batch_size=2, "
                              "dataset.generate.batch_size=2 not divisible by the 3 processes")
    assert report.get("gpu").message.startswith("CPU-only preset demo_cpu (device=cpu, 3 DDP processes over gloo)")
    ok = pf.run_preflight(NAME, workspace=ws, gpus=2)
    assert ok.get("batch").status == pf.PASS and ok.settings["dora_args"][:4] == ["run", "-d", "--ddp_workers", "2"]


def test_nodes_multiply_the_processes_and_show_the_allreduce_arithmetic(ws: Path, monkeypatch) -> None:
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    report = pf.run_preflight(NAME, workspace=ws, nodes=2)  # demo_cpu: 1 process per node, world size 2
    assert report.get("batch").status == pf.PASS and report.settings["processes"] == 2
    nodes = report.get("nodes")
    assert nodes.status == pf.PASS, report.format()  # the tiny codec's gradients are small
    params = nodes.details["parameters"]
    assert nodes.message.startswith("2 nodes x 1 process = world size 2; gloo picks the interface")
    assert f"{params / 1e6:.1f}M parameters x 4 B" in nodes.message and "2 x (2-1)/2" in nodes.message
    assert nodes.details["allreduce_bytes_per_step"] == pytest.approx(params * 4)  # 2 x 1/2 x G
    # 3 nodes: batch 2 cannot be split in 3
    assert "not divisible by the 3 processes" in _broken(pf.run_preflight(NAME, workspace=ws, nodes=3), "batch")


def test_nodes_check_on_a_gpu_preset_names_the_interface_and_warns_about_bandwidth() -> None:
    # musicgen-small's LM (dim 1024, 24 layers, 4 codebooks of 2048: musicpipe.sizing.lm_parameters), 2 nodes x 4 GPUs
    params = 318_871_552
    result = pf.check_nodes(2, 4, "cuda", params, env={})
    assert result.status == pf.WARN
    assert "NCCL_SOCKET_IFNAME is unset" in result.message and "ens1, not eth0" in result.message
    assert "318.9M parameters x 4 B = 1.28 GB of fp32 gradients" in result.message
    assert "2 x (8-1)/8 x that = 2.23 GB per process per step (17.9 Gbit at 1 step/s)" in result.message
    named = pf.check_nodes(2, 4, "cuda", params, env={"NCCL_SOCKET_IFNAME": "ens1"})
    assert "NCCL_SOCKET_IFNAME=ens1" in named.message and "must be fast" in named.message


def test_gpu_preset(ws: Path) -> None:
    report = pf.run_preflight(NAME, workspace=ws, preset="fma_small_mini")
    assert report.get("config").details["device"] == "cuda"
    gpu = report.get("gpu")
    if torch.cuda.is_available():
        assert gpu.status in (pf.PASS, pf.WARN) and gpu.details["gpus"]
    else:
        assert gpu.status == pf.FAIL and not report.ok
        assert gpu.message.startswith("preset fma_small_mini trains on device=cuda with 1 process but torch ")
        assert "sees no CUDA device" in gpu.message
    assert report.settings["min_free_gb"] == pf.GPU_MIN_FREE_GB


def test_environment_variables(ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other ws"
    monkeypatch.setenv("MUSICPIPE_WORKSPACE", str(other))
    monkeypatch.setenv("AUDIOCRAFT_DORA_DIR", str(other / "xps"))
    report = pf.run_preflight(NAME, workspace=ws)
    statuses = _statuses(report)
    assert statuses["env MUSICPIPE_WORKSPACE"] == statuses["env AUDIOCRAFT_DORA_DIR"] == pf.WARN
    assert report.ok and [n for n, s in statuses.items() if s != pf.PASS] == ["env MUSICPIPE_WORKSPACE",
                                                                              "env AUDIOCRAFT_DORA_DIR"]
    assert report.get("env MUSICPIPE_WORKSPACE").message.startswith(f"{other} in this shell, but the workspace "
                                                                    f"checked is {ws}")
    assert str(paths.dora_dir(ws)) in report.get("env AUDIOCRAFT_DORA_DIR").message
    assert os.environ["MUSICPIPE_WORKSPACE"] == str(other)  # restored after composing
    # the variables pointing at the checked workspace pass (the Dora dir through a symlink too)
    monkeypatch.setenv("MUSICPIPE_WORKSPACE", str(ws))
    link = tmp_path / "dora link"
    paths.dora_dir(ws).mkdir(parents=True, exist_ok=True)
    link.symlink_to(paths.dora_dir(ws), target_is_directory=True)
    monkeypatch.setenv("AUDIOCRAFT_DORA_DIR", str(link))
    report = pf.run_preflight(NAME)
    assert report.workspace == str(ws) and set(_statuses(report).values()) == {pf.PASS}, report.format()


def test_text_conditioning_without_t5(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = pf.run_preflight(NAME, "musicgen", workspace=ws, conditioner="text", t5_timeout=2.0,
                              overrides=["conditioners.description.t5.name=musicpipe-test/no-such-t5"])
    t5 = report.get("T5 (text conditioning)")
    assert t5.status == pf.FAIL
    assert t5.message.startswith("text conditioning needs the T5 model 'musicpipe-test/no-such-t5'")
    assert "http://127.0.0.1:9/musicpipe-test/no-such-t5/resolve/main/config.json cannot be reached" in t5.message
    assert t5.message.endswith("(HF_HUB_OFFLINE=1 is set in this shell)")
    assert report.get("config").message.startswith("solver=musicgen/musicgen_base_32khz")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_codec_xp_that_does_not_exist(ws: Path) -> None:
    report = pf.run_preflight(NAME, "musicgen", codec="0badc0de", workspace=ws)
    codec = report.get("codec")
    assert report.results[-1] is codec and codec.status == pf.FAIL and report.codec == "0badc0de"
    assert codec.message == (f"codec XP 0badc0de: {paths.xp_dir('0badc0de', ws)}: no such XP in workspace {ws} (is "
                             "the signature or --workspace right?)")
    # the data checks still ran on the LM's config (MusicGen: 2 s segments x 1.0 in the demo preset)
    assert report.get("config").details["segment_duration"] == 2.0
    assert report.get("config").details["min_segment_ratio"] == 1.0
    assert [n for n, s in _statuses(report).items() if s != pf.PASS] == ["codec"]
    # no codec trained for the dataset: "latest" names the experiments folder
    latest = pf.run_preflight(NAME, "musicgen", workspace=ws)
    assert latest.get("codec").message.startswith(f"no codec XP for dataset {NAME!r} with a checkpoint under "
                                                  f"{paths.dora_dir(ws) / 'xps'}")


def _codec_xp(ws: Path, sig: str, *, sample_rate: int = 32000, solver: str = "compression",
              checkpoint: bool = True) -> Path:
    """An XP folder as Dora leaves it, with the config keys musicpipe.xp.XP.codec_info reads."""
    folder = paths.xp_dir(sig, ws)
    (folder / ".hydra").mkdir(parents=True)
    cfg = {"solver": solver, "sample_rate": sample_rate, "channels": 1, "rvq": {"n_q": 3, "bins": 128}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if checkpoint:
        torch.save({"model": {}}, folder / "checkpoint.th")  # a real (small) checkpoint: preflight opens it
    return folder


def test_codec_xp_checks(ws: Path) -> None:
    _codec_xp(ws, "1234abcd")
    report = pf.run_preflight(NAME, "musicgen", codec="1234abcd", workspace=ws)
    codec = report.get("codec")
    assert report.ok and codec.status == pf.PASS, report.format()
    assert codec.details == {"sig": "1234abcd", "n_q": 3, "card": 128, "sample_rate": 32000, "channels": 1}
    assert codec.message == ("codec XP 1234abcd: n_q=3, card=128, 32000 Hz, 1 channel(s); LM: transformer_lm.n_q=3, "
                             "card=128, sample_rate=32000, data at 32000 Hz")
    assert "transformer_lm.n_q=3" in report.settings["dora_args"]

    _codec_xp(ws, "16000abc", sample_rate=16000)
    codec = pf.run_preflight(NAME, "musicgen", codec="16000abc", workspace=ws).get("codec")
    assert codec.status == pf.FAIL
    assert codec.message.startswith("codec XP 16000abc: n_q=3, card=128, 16000 Hz, 1 channel(s): the LM config has "
                                    "sample_rate=32000, the codec 16000")
    assert "the dataset's manifests are at [32000] Hz, the codec works at 16000 Hz" in codec.message

    folder = _codec_xp(ws, "0000beef", solver="musicgen")
    codec = pf.run_preflight(NAME, "musicgen", codec="0000beef", workspace=ws).get("codec")
    assert codec.status == pf.FAIL and codec.message == ("codec XP 0000beef: 0000beef: solver 'musicgen', not a codec "
                                                         "(compression) XP")
    folder = _codec_xp(ws, "0000cafe", checkpoint=False)
    codec = pf.run_preflight(NAME, "musicgen", codec="0000cafe", workspace=ws).get("codec")
    assert codec.status == pf.FAIL and codec.message == (f"codec XP 0000cafe: {folder / 'checkpoint.th'} is missing: "
                                                         "0000cafe has not saved a checkpoint yet")
    folder = paths.xp_dir("0000f00d", ws)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("solver: [unclosed\n")
    codec = pf.run_preflight(NAME, "musicgen", codec="0000f00d", workspace=ws).get("codec")
    assert codec.status == pf.FAIL and codec.message.startswith(
        f"codec XP 0000f00d: {folder / '.hydra' / 'config.yaml'} is unreadable")


def test_bad_arguments(ws: Path) -> None:
    cases = [(dict(solver="lm"), "unknown solver 'lm'"), (dict(preset="nope"), "no preset 'nope'"),
             (dict(codec="1234abcd"), "--codec applies to the musicgen solver only"),
             (dict(solver="musicgen", conditioner="lyrics"), "unknown conditioner 'lyrics'"),
             (dict(conditioner="genre"), "--conditioner applies to the musicgen solver only"),
             (dict(sample=0), "sample must be at least 1"), (dict(overrides=["novalue"]), "not of the form key=value")]
    for kwargs, match in cases:
        with pytest.raises(pf.PreflightError, match=match):
            pf.run_preflight(NAME, workspace=ws, **kwargs)


def test_cli(ws: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert pf.main(["--dataset", NAME, "--workspace", str(ws), "--sample", "all", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"preflight {NAME}: solver compression, preset demo_cpu, workspace {ws}"
    assert [line.split()[0] for line in lines[1:-1]] == [pf.PASS] * len(CLEAN)
    assert lines[-1] == f"preflight: {NAME} (compression, preset demo_cpu): ready: 17 checks, 17 passed"
    assert json.loads(out.read_text())["settings"]["sample"] is None

    Path(_records(ws, "train")[0].path).unlink()
    assert pf.main(["--dataset", NAME, "--workspace", str(ws)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("FAIL  files") for line in lines)
    assert lines[-1].startswith(f"preflight: {NAME} (compression, preset demo_cpu): NOT ready: 1 failed (files)")

    assert pf.main(["--dataset", NAME, "--workspace", str(ws), "--preset", "nope"]) == 2
    assert "preflight: error: no preset 'nope'" in capsys.readouterr().err
    for argv in (["--workspace", str(ws)], ["--dataset", NAME, "--solver", "lm"], ["--dataset", NAME, "--sample", "0"]):
        with pytest.raises(SystemExit) as exc:
            pf.main(argv)
        assert exc.value.code == 2


def test_module_doctests() -> None:
    result = doctest.testmod(pf, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 9  # select()'s doctest moved to musicpipe.datacheck

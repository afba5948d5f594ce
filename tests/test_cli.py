"""The command line as users run it: doctor, dry runs, clear refusals."""

import os

from conftest import run_cli


def test_doctor_prints_the_table_and_passes_here(workspace):
    res = run_cli("doctor", "--workspace", str(workspace))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    for name in ("ffmpeg", "torch", "torchaudio", "audiocraft", "dora", "cuda", "disk"):
        assert name in rows and " OK " in rows[name], rows.get(name)
    assert "2.11.0" in rows["torch"] and "1.3.0" in rows["audiocraft"]
    assert "hydra model_config" in res.stdout and "hydra compose" in res.stdout
    assert str(workspace) in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith("doctor: ready")


def test_doctor_fails_with_the_reason_when_ffmpeg_is_missing(workspace, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # an empty PATH: no ffmpeg
    res = run_cli("doctor", "--workspace", str(workspace), env=env)
    assert res.returncode == 1
    assert "ffmpeg" in res.stdout.splitlines()[-1] and "apt-get install -y ffmpeg" in res.stdout


def test_train_codec_dry_run_prints_the_dora_command(workspace):
    res = run_cli("train-codec", "--preset", "fma_large", "--dataset", "fma_large", "--dry-run", "--", "optim.lr=1e-4")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("dora run -d --ddp_workers 4 solver=compression/encodec_musicgen_32khz dset=audio/fma_large")
    assert line.endswith("optim.lr=1e-4")


def test_training_refuses_a_dataset_without_manifests(workspace):
    res = run_cli("train-codec", "--preset", "demo_cpu", "--dataset", "never_prepared", "--workspace", str(workspace))
    assert res.returncode == 2
    assert "never_prepared/egs/train/data.jsonl: missing" in res.stderr


def test_help_lists_every_step():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("doctor", "prepare", "train-codec", "train-lm", "generate", "demo"):
        assert cmd in res.stdout


def test_prepare_folder_then_inspect_from_the_command_line(tmp_path):
    from media import make_audio, zero_bytes

    music = tmp_path / "my music"
    make_audio(music / "Artist A" / "one.mp3", 12.0, channels=2, tags={"genre": "Rock"})
    make_audio(music / "Artist B" / "two.flac", 11.0, sample_rate=48000, freq=330.0, tags={"genre": "Jazz"})
    zero_bytes(music / "Artist B" / "broken.mp3")
    ws = str(tmp_path / "ws")
    res = run_cli("prepare", "folder", "--input", str(music), "--name", "mine", "--workspace", ws, "--num-jobs", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("prepare: mine: ") and "1 input(s) quarantined" in last and "dset=audio/mine" in last
    res = run_cli("inspect", "mine", "--workspace", ws)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "broken.mp3" in res.stdout or "quarantined" in res.stdout
    assert "data.jsonl" in res.stdout or '"path"' in res.stdout
    res = run_cli("prepare", "folder", "--input", str(tmp_path / "nope"), "--name", "x", "--workspace", ws)
    assert res.returncode == 2 and "not a folder" in res.stderr

"""scripts/startup_script.sh and scripts/download_script.sh, run as on a pod, in scratch HOMEs and workspaces.

The startup script runs for real (apt only when a package is missing, `make setup`, which is a no-op when
nothing changed, the kernel registration, the doctor) with HOME, TMPDIR and the workspace in a temporary
folder; the download script runs against the loopback FMA/MTG-Jamendo servers of the datasets tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing as tp
from pathlib import Path

import pytest

from loopback import LoopbackServer
from public_fixtures import build_fma, build_mtg

REPO = Path(__file__).resolve().parent.parent
STARTUP = REPO / "scripts" / "startup_script.sh"
DOWNLOAD = REPO / "scripts" / "download_script.sh"
SCRIPTS = (STARTUP, DOWNLOAD)
# Variables of the caller that must not leak into a scratch run (the test session may have set some).
_SCRUB = ("MUSICPIPE_", "AUDIOCRAFT_", "DORA_", "JUPYTER_", "XDG_", "VIRTUAL_ENV", "PYTHONPATH", "FMA_", "MTG_",
          "DOWNLOAD_ARGS", "PREPARE_ARGS")


def scratch_env(home: Path, tmp: Path, **extra: str) -> tp.Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(HOME=str(home), TMPDIR=str(tmp), LANG="C.UTF-8")
    real_pip_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if "PIP_CONFIG_FILE" not in env and real_pip_conf.is_file():
        env["PIP_CONFIG_FILE"] = str(real_pip_conf)  # read only: where pip finds its index if setup must run
    env.update(extra)
    return env


def files_under(*roots: Path) -> tp.Dict[str, tp.Tuple[bytes, int]]:
    """path -> (bytes, mtime_ns) of every regular file under the roots (symlinks not followed)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def state_of(path: Path) -> tp.Optional[tp.Tuple[int, int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


# -- both scripts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_bash_with_usage(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    res = subprocess.run([str(script), "-h"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("Usage: scripts/") and "MUSICPIPE_" in res.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script):
    exe = shutil.which("shellcheck")
    assert exe, "shellcheck is missing: `make setup` installs it (Debian: apt-get install shellcheck)"
    res = subprocess.run([exe, "--severity=info", str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout


# -- startup_script.sh -----------------------------------------------------------------------------------

def test_startup_script_sets_up_a_scratch_pod_and_a_second_run_changes_nothing(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    ws = tmp_path / "pod work" / "workspace"
    home.mkdir()
    tmp.mkdir()
    (home / ".bashrc").write_text("# the user's own bashrc\nalias ll='ls -l'")  # no final newline
    real_home = Path.home()
    outside = [real_home / ".musicpipe_env", real_home / ".bashrc", Path("/root/workspace"),
               real_home / ".local" / "share" / "jupyter" / "kernels" / "musicpipe" / "kernel.json"]
    before_outside = [state_of(p) for p in outside]

    env = scratch_env(home, tmp, MUSICPIPE_WORKSPACE=str(ws))
    first = subprocess.run([str(STARTUP)], capture_output=True, text=True, env=env, timeout=1800)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    assert "[startup] system packages: ffmpeg already installed" in out
    assert "[startup] setup: make setup" in out and "[setup] done: .venv ready" in out
    assert f"[startup] profile: written {home}/.musicpipe_env" in out
    assert f"[startup] bashrc: added one line to {home}/.bashrc" in out
    assert "[startup] jupyter kernel: registered musicpipe" in out
    # the doctor's table, seeing the environment the script wrote
    assert "check " in out and "status  detail" in out
    assert f"env MUSICPIPE_WORKSPACE   OK      {ws} (set)" in out
    assert "env AUDIOCRAFT_TEAM       OK      default (set)" in out
    assert "doctor: ready" in out
    assert out.strip().splitlines()[-1].startswith("[startup] done: pod ready")
    assert ws.is_dir() and (ws / "experiments" / "audiocraft").is_dir()

    # the profile: valid shell that sets the environment (sourced by a bare bash)
    profile = home / ".musicpipe_env"
    show = 'printf "%s\\n" "$MUSICPIPE_WORKSPACE" "$USER" "$AUDIOCRAFT_TEAM" "$AUDIOCRAFT_DORA_DIR" "$DORA_PACKAGE" "$PATH"'
    res = subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "bash", "--noprofile", "--norc", "-c",
                          f'. "$HOME/.musicpipe_env"; . "$HOME/.musicpipe_env"; {show}'],
                         capture_output=True, text=True, check=True)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert res.stdout.splitlines() == [str(ws), user, "default", str(ws / "experiments" / "audiocraft"),
                                       "musicpipe.dora_entry", f"/usr/bin:/bin:{REPO}/.venv/bin"]  # PATH once
    # ~/.bashrc: the user's text kept, one managed line that an interactive shell runs
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith("# the user's own bashrc\nalias ll='ls -l'\n")
    assert bashrc.count("musicpipe-env") == 1 and bashrc.endswith("\n")
    res = subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "bash", "-i", "-c",
                          'echo "ws=$MUSICPIPE_WORKSPACE"'], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert f"ws={ws}" in res.stdout.splitlines()
    # the Jupyter kernel: the repo's venv python, carrying the same environment
    kernel = json.loads((home / ".local" / "share" / "jupyter" / "kernels" / "musicpipe" / "kernel.json").read_text())
    assert kernel["argv"][0] == str(REPO / ".venv" / "bin" / "python") and "ipykernel_launcher" in kernel["argv"]
    assert kernel["language"] == "python"
    assert kernel["env"]["MUSICPIPE_WORKSPACE"] == str(ws) and kernel["env"]["AUDIOCRAFT_TEAM"] == "default"
    assert kernel["env"]["AUDIOCRAFT_DORA_DIR"] == str(ws / "experiments" / "audiocraft")
    assert kernel["env"]["USER"] == user

    # a second run (apt skipped this time) changes nothing: byte-identical files, nothing rewritten
    snapshot = files_under(home, ws)
    env2 = dict(env, MUSICPIPE_SKIP_APT="1")
    second = subprocess.run([str(STARTUP)], capture_output=True, text=True, env=env2, timeout=1800)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    out2 = second.stdout
    assert "[startup] system packages: skipped (MUSICPIPE_SKIP_APT=1)" in out2
    assert "everything already installed" in out2  # setup did not reinstall anything
    assert f"[startup] profile: unchanged {profile}" in out2
    assert "[startup] bashrc: " in out2 and "already sources" in out2
    assert "[startup] jupyter kernel: musicpipe unchanged" in out2
    assert "doctor: ready" in out2
    assert files_under(home, ws) == snapshot
    assert (home / ".bashrc").read_text().count("musicpipe-env") == 1

    # nothing was written outside the scratch HOME, TMPDIR and workspace
    assert [state_of(p) for p in outside] == before_outside


# -- download_script.sh ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pod corpus")
    build_fma(root, tracks_per_genre=2)
    build_mtg(root)
    return root


def archive_requests(server: LoopbackServer) -> tp.List[tp.Tuple[str, str, tp.Optional[str]]]:
    return [r for r in server.requests if r[1].endswith((".zip", ".tar"))]


def test_download_script_goes_past_a_failure_and_a_rerun_skips_finished_work(corpus, tmp_path):
    ws = tmp_path / "work space é"
    items = tmp_path / "datasets.txt"
    items.write_text("# what this pod needs\nfma_small_mini\n\nfma_tiny   # no such subset\n"
                     "fma_medium mtg_jamendo:0-1  # the server has no fma_medium.zip\n")
    with LoopbackServer(corpus) as server:
        env = scratch_env(tmp_path, tmp_path, FMA_MIRROR=server.url + "fma/", MTG_MIRROR=server.url + "mtg/",
                          MTG_METADATA_MIRROR=server.url + "mtgmeta/", DOWNLOAD_ARGS="--num-tracks 8",
                          PREPARE_ARGS="--num-jobs 2")
        first = subprocess.run([str(DOWNLOAD), "-w", str(ws), "-f", str(items)], capture_output=True, text=True,
                               env=env, timeout=1800)
        assert first.returncode == 1, first.stdout[-4000:] + first.stderr[-4000:]
        lines = first.stdout.strip().splitlines()
        # the failure is listed at the end, with musicpipe's reason and the log
        assert lines[-3] == "[download] summary: 4 item(s): 2 done now, 0 already done, 2 failed"
        assert lines[-2].startswith("[download] FAILED fma_tiny: download: ") and "unknown FMA subset" in lines[-2]
        assert f"(log: {ws}/logs/download_script/fma_tiny.log)" in lines[-2]
        assert lines[-1].startswith("[download] FAILED fma_medium: download: ") and "HTTP 404" in lines[-1]
        # what musicpipe was asked: mirrors and extra arguments forwarded
        assert any("download fma --subset fma_small_mini" in l and "--mirror" in l and "--num-tracks 8" in l
                   for l in lines)
        assert any("download mtg_jamendo --parts 0-1 --variant audio-low" in l and "--metadata-mirror" in l
                   for l in lines)
        assert any("prepare mtg_jamendo --variant audio-low" in l and "--num-jobs 2" in l for l in lines)

        # both good items were downloaded and prepared: manifests pointing at real audio with sidecars
        for dataset, item in (("fma_small_mini", "fma_small_mini"), ("mtg_jamendo", "mtg_jamendo_0-1")):
            egs = ws / "data" / dataset / "egs"
            records = [json.loads(l) for split in ("train", "valid")
                       for l in (egs / split / "data.jsonl").read_text().splitlines()]
            assert records, dataset
            for rec in records:
                assert Path(rec["path"]).is_file() and rec["sample_rate"] == 32000
                assert json.loads(Path(rec["path"]).with_suffix(".json").read_text())["artist"]
            assert (ws / "data" / dataset / f".download_script.{item}.prepare.done").is_file()
        assert len(json.loads((ws / "data" / "fma_small_mini" / "downloads" / ".completed").read_text())["tracks"]) == 8
        assert archive_requests(server)  # the archives were read from the loopback server
        manifest = ws / "data" / "fma_small_mini" / "egs" / "train" / "data.jsonl"
        manifest_state = state_of(manifest)

        # a re-run (items as arguments, workspace from the environment) skips finished work: not one request
        n_requests = len(server.requests)
        env2 = dict(env, MUSICPIPE_WORKSPACE=str(ws))
        second = subprocess.run([str(DOWNLOAD), "fma_small_mini", "fma_tiny", "fma_medium", "mtg_jamendo:0-1",
                                 "soundcloud"],
                                capture_output=True, text=True, env=env2, timeout=1800)
        assert second.returncode == 1, second.stdout[-4000:] + second.stderr[-4000:]
        out = second.stdout
        assert "[download] fma_small_mini: already done" in out and "[download] mtg_jamendo:0-1: already done" in out
        # the only request is the failed item's retry
        assert {r[1] for r in server.requests[n_requests:]} == {"/fma/fma_medium.zip"}
        assert state_of(manifest) == manifest_state
        tail = out.strip().splitlines()[-4:]
        assert tail[0] == "[download] summary: 5 item(s): 0 done now, 2 already done, 3 failed"
        assert tail[1].startswith("[download] FAILED fma_tiny: download: ")
        assert tail[2].startswith("[download] FAILED fma_medium: download: ")
        assert tail[3].startswith("[download] FAILED soundcloud: unknown item")
        n_requests = len(server.requests)

        # a prepared dataset whose manifest went missing is prepared again (the download is not repeated)
        manifest.unlink()
        third = subprocess.run([str(DOWNLOAD), "fma_small_mini"], capture_output=True, text=True, env=env2,
                               timeout=1800)
        assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-4000:]
        assert "fma_small_mini: download already done" in third.stdout
        assert manifest.is_file() and len(server.requests) == n_requests
        assert third.stdout.strip().splitlines()[-1] == \
            "[download] summary: 1 item(s): 1 done now, 0 already done, 0 failed"


def test_download_script_usage_errors_and_dry_run(tmp_path):
    env = scratch_env(tmp_path, tmp_path, FMA_MIRROR="http://127.0.0.1:9/fma/")
    res = subprocess.run([str(DOWNLOAD)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "no items" in res.stderr
    res = subprocess.run([str(DOWNLOAD), "-f", str(tmp_path / "missing.txt")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 2 and "cannot read the list file" in res.stderr
    res = subprocess.run([str(DOWNLOAD), "-n", "-w", str(tmp_path / "ws"), "fma_small_mini", "mtg_jamendo"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert "download fma --subset fma_small_mini --workspace" in res.stdout and "--mirror http://127.0.0.1:9/fma/" \
        in res.stdout
    assert "FAILED mtg_jamendo: mtg_jamendo needs its parts" in res.stdout
    assert not (tmp_path / "ws").exists()  # a dry run writes nothing

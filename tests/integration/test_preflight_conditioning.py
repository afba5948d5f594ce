"""training_checks/preflight.py and validate_conditioning.py on the session's demo data and trained demo codec:
library calls, and the scripts as users run them (``python training_checks/X.py`` in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import training_checks.preflight as pf
import training_checks.validate_conditioning as vc
from musicpipe import manifests, paths
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATASET = "synthetic_demo"


def _script(name: str, *args: str, workspace: Path) -> subprocess.CompletedProcess:
    """``python training_checks/<name>.py ...`` with the workspace given by MUSICPIPE_WORKSPACE only."""
    env = dict(os.environ, MUSICPIPE_WORKSPACE=str(workspace))
    return subprocess.run([sys.executable, f"training_checks/{name}.py", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)


def _codec_config(codec) -> dict:
    return yaml.safe_load((codec.folder / ".hydra" / "config.yaml").read_text())


def test_preflight_compression_on_demo_data(workspace: Path, demo_data: dict) -> None:
    report = pf.run_preflight(DATASET, workspace=workspace, sample=None)
    assert report.ok and {r.status for r in report.results} == {pf.PASS}, report.format()
    train = manifests.read_manifest(paths.dataset_dir(DATASET, workspace) / "egs" / "train")
    valid = manifests.read_manifest(paths.dataset_dir(DATASET, workspace) / "egs" / "valid")
    assert len(train) == demo_data["counts"]["segments_train"] and len(valid) == demo_data["counts"]["segments_valid"]
    assert report.get("files").details["checked"] == {"train": len(train), "valid": len(valid)}
    assert report.get("split leak").details["tracks"] == {"train": demo_data["counts"]["tracks_train"],
                                                          "valid": demo_data["counts"]["tracks_valid"]}
    assert report.get("config").details["sample_rate"] == 32000 and report.get("config").details["channels"] == 1


def test_preflight_musicgen_reports_the_codec(workspace: Path, codec) -> None:
    cfg = _codec_config(codec)
    n_q, card = int(cfg["rvq"]["n_q"]), int(cfg["rvq"]["bins"])
    report = pf.run_preflight(DATASET, "musicgen", codec=codec.sig, workspace=workspace)
    assert report.ok and {r.status for r in report.results} == {pf.PASS}, report.format()
    result = report.get("codec")
    assert result.details == {"sig": codec.sig, "n_q": n_q, "card": card, "sample_rate": 32000, "channels": 1}
    assert result.message.startswith(f"codec XP {codec.sig}: n_q={n_q}, card={card}, 32000 Hz, 1 channel(s); "
                                     f"LM: transformer_lm.n_q={n_q}, card={card}")
    assert f"compression_model_checkpoint=//sig/{codec.sig}" in report.settings["dora_args"]
    # without --codec: the dataset's latest codec, the session's only one
    assert pf.run_preflight(DATASET, "musicgen", workspace=workspace).codec == codec.sig


def test_preflight_scripts(workspace: Path, codec) -> None:
    n_q, card = int(_codec_config(codec)["rvq"]["n_q"]), int(_codec_config(codec)["rvq"]["bins"])
    res = _script("preflight", "--dataset", DATASET, workspace=workspace)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0] == f"preflight {DATASET}: solver compression, preset demo_cpu, workspace {workspace}"
    assert lines[-1] == f"preflight: {DATASET} (compression, preset demo_cpu): ready: 17 checks, 17 passed"
    assert "Traceback" not in res.stderr

    res = _script("preflight", "--dataset", DATASET, "--solver", "musicgen", "--codec", codec.sig,
                  "--conditioner", "genre", workspace=workspace)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    codec_line = next(line for line in lines if line.startswith("PASS  codec"))
    assert f"codec XP {codec.sig}: n_q={n_q}, card={card}, 32000 Hz" in codec_line
    assert lines[-1] == f"preflight: {DATASET} (musicgen, preset demo_cpu): ready: 18 checks, 18 passed"

    res = _script("preflight", "--dataset", DATASET, "--solver", "musicgen", "--codec", "0badc0de",
                  workspace=workspace)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = res.stdout.strip().splitlines()
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL  codec                    codec XP 0badc0de: {paths.xp_dir('0badc0de', workspace)}: "
        f"no such XP in workspace {workspace} (is the signature or --workspace right?)"]
    assert lines[-1] == (f"preflight: {DATASET} (musicgen, preset demo_cpu): NOT ready: 1 failed (codec); "
                         "18 checks, 17 passed")

    for args in (["--dataset", DATASET, "--codec", codec.sig], ["--dataset", DATASET, "--solver", "lm"],
                 ["--dataset", DATASET, "--preset", "no_such_preset"]):
        res = _script("preflight", *args, workspace=workspace)
        assert res.returncode == 2 and "error:" in res.stderr and not res.stdout, res.stderr[-2000:]


def test_preflight_script_on_a_broken_dataset(workspace: Path, tmp_path: Path) -> None:
    ws = tmp_path / "broken ws"
    synthetic.prepare_synthetic("broken", ws, PrepareConfig(num_jobs=1), tracks_per_genre=2, duration=3.0,
                                progress=False)
    victim = Path(manifests.read_manifest(paths.dataset_dir("broken", ws) / "egs" / "train")[0].path)
    victim.write_bytes(b"not audio at all")
    res = _script("preflight", "--dataset", "broken", "--sample", "all", workspace=ws)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    fail = [line for line in res.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith("FAIL  files") and f"{victim}: not a readable audio file" in fail[0]
    assert res.stdout.strip().splitlines()[-1].startswith(
        "preflight: broken (compression, preset demo_cpu): NOT ready: 1 failed (files)")


def _sidecars(workspace: Path) -> list[dict]:
    train = manifests.read_manifest(paths.dataset_dir(DATASET, workspace) / "egs" / "train")
    return [json.loads(Path(r.path).with_suffix(".json").read_text()) for r in train]


def test_validate_conditioning_on_demo_data(workspace: Path, demo_data: dict) -> None:
    sidecars = _sidecars(workspace)
    # what the synthetic source writes: a description, a genre, moods... for every segment, never a key
    expected = {field: 100.0 * sum(1 for s in sidecars if s.get(field) not in (None, "", [])) / len(sidecars)
                for field in ("description", "genre", "moods", "instrument", "key")}
    assert expected == {"description": 100.0, "genre": 100.0, "moods": 100.0, "instrument": 100.0, "key": 0.0}
    report = vc.validate_conditioning(DATASET, num_samples=100, conditioner="genre", workspace=workspace,
                                      tokenizer="whitespace")
    assert report.num_sampled == report.num_segments == len(sidecars) == demo_data["counts"]["segments_train"]
    assert {f: report.percent(f) for f in expected} == expected
    lengths = [len(s["description"].split()) for s in sidecars]
    assert report.tokens["mean"] == round(sum(lengths) / len(lengths), 2)
    assert _statuses(report) == {"sidecars": pf.PASS, "conditioner genre": pf.PASS}
    none = vc.validate_conditioning(DATASET, workspace=workspace)
    assert _statuses(none) == {"sidecars": pf.PASS, "conditioner none": pf.WARN} and none.ok


def _statuses(report: vc.ConditioningReport) -> dict:
    return {c.name: c.status for c in report.checks}


def test_validate_conditioning_script(workspace: Path, demo_data: dict, tmp_path: Path) -> None:
    n = demo_data["counts"]["segments_train"]
    res = _script("validate_conditioning", "--dataset", DATASET, "--conditioner", "text", "--num-samples", "5",
                  "--tokenizer", "whitespace", workspace=workspace)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith(f"validate_conditioning {DATASET}: 5 of {n} train segments sampled (seed 0)")
    assert "  description  100.0%  (5 of 5)" in lines and "  key            0.0%  (0 of 5)" in lines
    assert "PASS  conditioner text  100% of the sampled segments have a description (>= 50% required)" in lines
    assert lines[-1].startswith(f"validate_conditioning: {DATASET}: 5 segments sampled, description 100%, genre 100%, "
                                "moods 100%; ")
    assert lines[-1].endswith("tokens per description (whitespace); conditioner text: PASS")

    res = _script("validate_conditioning", "--dataset", DATASET, workspace=workspace)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1].endswith("conditioner none: WARN")

    # a dataset whose sidecars lost their descriptions: text conditioning fails, naming the sidecars
    ws = tmp_path / "nodesc ws"
    synthetic.prepare_synthetic("nodesc", ws, PrepareConfig(num_jobs=1), tracks_per_genre=2, duration=3.0,
                                progress=False)
    for rec in manifests.read_manifest(paths.dataset_dir("nodesc", ws) / "egs" / "train"):
        sidecar = Path(rec.path).with_suffix(".json")
        sidecar.write_text(json.dumps(dict(json.loads(sidecar.read_text()), description=None)))
    res = _script("validate_conditioning", "--dataset", "nodesc", "--conditioner", "text", workspace=ws)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    fail = next(line for line in res.stdout.splitlines() if line.startswith("FAIL  conditioner text"))
    assert "only 0% of the sampled segments have a description (< 50% required), e.g. without one: " in fail
    assert str(paths.dataset_dir("nodesc", ws) / "audio") in fail

    res = _script("validate_conditioning", "--dataset", "no_such_dataset", workspace=workspace)
    assert res.returncode == 1 and "no_such_dataset/egs/train/data.jsonl: missing" in res.stderr
    res = _script("validate_conditioning", "--dataset", DATASET, "--min-text-share", "1.5", workspace=workspace)
    assert res.returncode == 2

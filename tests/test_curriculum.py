"""Unit tests of training_checks/curriculum_train.py and musicpipe/dora_entry/carry_state.py: stage configs and
their errors, the plan from records in a tmp workspace, the segment-length check, and the dry run's exact
`dora run` commands (real XP signatures, computed in a subprocess; nothing trains)."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import training_checks.curriculum_train as ct
from musicpipe import dora, manifests, paths, presets
from musicpipe.dora_entry import carry_state

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "training_checks" / "curriculum_train.py"
CODEC = "c0dec0de"


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _stage_yaml(name: str, order: int, seg: float, batch: int, epochs: int, extra: str = "") -> str:
    return (f"name: {name}\norder: {order}\nsegment_duration: {seg}\nbatch_size: {batch}\nepochs: {epochs}\n"
            + extra)


@pytest.fixture()
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    _write(folder, "warm.yaml", _stage_yaml("warm", 1, 2, 2, 1))
    _write(folder, "longer.yaml", _stage_yaml("longer", 2, 3, 2, 1, "overrides:\n  optim.lr: 5.0e-4\n"))
    _write(folder, "longest.yaml", _stage_yaml("longest", 3, 4, 2, 2))
    return folder


# -------------------------------------------------------------------------------------------------- configs


def test_module_doctests() -> None:
    result = doctest.testmod(ct, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 20
    result = doctest.testmod(carry_state, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 8


def test_the_shipped_curriculum() -> None:
    cur = ct.load_curriculum()
    assert cur.name == "segment_length" and cur.config_dir == ct.DEFAULT_CONFIG_DIR
    assert [(s.name, s.order, s.segment_duration, s.batch_size, s.epochs, s.overrides) for s in cur.stages] == [
        ("short_10s", 1, 10.0, 128, 50, {}), ("medium_20s", 2, 20.0, 64, 50, {}), ("full_30s", 3, 30.0, 32, 100, {})]
    assert cur.previous(cur.stage("medium_20s")).name == "short_10s" and cur.previous(cur.stages[0]) is None
    assert cur.following(cur.stage("full_30s")) is None
    with pytest.raises(ct.CurriculumError, match="no stage 'long'.*short_10s, medium_20s, full_30s"):
        cur.stage("long")


def test_tiny_curriculum_is_sorted_by_order_and_named_after_its_folder(tiny_dir: Path) -> None:
    cur = ct.load_curriculum(tiny_dir)
    assert cur.name == "tiny"
    assert [s.name for s in cur.stages] == ["warm", "longer", "longest"]
    assert cur.stage("longer").override_args() == ["optim.lr=0.0005"]


@pytest.mark.parametrize("text, message", [
    ("name: a\norder: [1\n", r"a\.yaml: invalid YAML"),
    ("- just\n- a list\n", r"a\.yaml: expected a mapping of stage keys, got list"),
    (_stage_yaml("a", 1, 2, 2, 1).replace("epochs: 1\n", ""), r"a\.yaml: missing key 'epochs'"),
    (_stage_yaml("a", 1, 2, 2, 1).replace("batch_size", "batchsize"), r"a\.yaml: missing key 'batch_size'"),
    (_stage_yaml("a", 1, 2, 2, 1, "epoch: 3\n"), r"a\.yaml: unknown key\(s\) epoch"),
    (_stage_yaml("b", 1, 2, 2, 1), r"a\.yaml: name 'b' differs from the file's name 'a'"),
    (_stage_yaml("a", "first", 2, 2, 1), r"a\.yaml: order must be an integer, got 'first'"),
    (_stage_yaml("a", 1, 0, 2, 1), r"a\.yaml: segment_duration must be positive, got 0"),
    (_stage_yaml("a", 1, 2, 2.5, 1), r"a\.yaml: batch_size must be an integer, got 2\.5"),
    (_stage_yaml("a", 1, 2, 2, "true"), r"a\.yaml: epochs must be an integer, got True"),
    (_stage_yaml("a", 1, 2, 2, 1, "overrides: [optim.lr=1]\n"), r"a\.yaml: overrides must be a mapping"),
    (_stage_yaml("a", 1, 2, 2, 1, "overrides:\n  optim.epochs: 3\n"),
     r"a\.yaml: overrides may not set optim\.epochs \(the tool sets it from epochs\)"),
    (_stage_yaml("a", 1, 2, 2, 1, "overrides:\n  continue_from: //sig/12345678\n"),
     r"a\.yaml: overrides may not set continue_from"),
])
def test_a_bad_stage_file_is_named_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "bad"
    _write(folder, "a.yaml", text)
    with pytest.raises(ct.CurriculumError, match=message) as info:
        ct.load_curriculum(folder)
    assert str(folder / "a.yaml") in str(info.value)


def test_duplicate_order_names_both_files(tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    _write(folder, "a.yaml", _stage_yaml("a", 1, 2, 2, 1))
    _write(folder, "b.yaml", _stage_yaml("b", 1, 3, 2, 1))
    with pytest.raises(ct.CurriculumError) as info:
        ct.load_curriculum(folder)
    assert str(info.value) == f"{folder / 'b.yaml'}: order 1 duplicates {folder / 'a.yaml'}"


def test_folder_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ct.CurriculumError, match="no such curriculum config folder"):
        ct.load_curriculum(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ct.CurriculumError, match=r"empty: no stage files \(\*\.yaml\)"):
        ct.load_curriculum(tmp_path / "empty")
    folder = tmp_path / "mixed"
    _write(folder, "a.yaml", _stage_yaml("a", 1, 2, 2, 1, "curriculum: one\n"))
    _write(folder, "b.yaml", _stage_yaml("b", 2, 3, 2, 1, "curriculum: two\n"))
    with pytest.raises(ct.CurriculumError, match=r"stages name different curricula \(a\.yaml: one, b\.yaml: two\)"):
        ct.load_curriculum(folder)


# --------------------------------------------------------------------------------------------- segment fit


def test_segment_fit_counts_files_long_enough() -> None:
    tens = [10.0] * 8 + [7.5, 5.2]  # prepare's 10 s segments and two tracks' shorter last segments
    fit = ct.segment_fit(tens, 10.0)
    assert fit.ok and (fit.files, fit.full, fit.longest) == (10, 8, 10.0)
    assert ct.segment_fit([9.99999] * 4, 10.0).ok  # rounding of frames/sample rate
    for seg in (20.0, 30.0):
        fit = ct.segment_fit(tens, seg)
        assert not fit.ok and fit.full == 0
        assert f"0/10 train files (0%) are at least {seg:g} s long (longest 10 s; at least 50% needed)" in fit.message
        assert f"zero-pad every shorter file to {seg:g} s" in fit.message
        assert f"--segment-seconds {seg:g}" in fit.message
    assert ct.segment_fit([30.0] * 4 + [10.0] * 6, 20.0).ok is False
    assert ct.segment_fit([30.0] * 4 + [10.0] * 6, 20.0, min_full_fraction=0.4).ok
    assert not ct.segment_fit([], 1.0).ok


# ---------------------------------------------------------------------------------------------------- plan


KEY_ARGS = ("demo_cpu", "tinyset", CODEC, "none")


def _fake_xp(ws: Path, sig: str, stage: ct.Stage, cur: ct.Curriculum, *, epochs_done: int | None = None,
             checkpoint: bool = True, continue_from_sig: str | None = None, finished_at: str = "2026-01-01T00:00:00",
             **key_changes: str) -> Path:
    """An XP folder as a finished (or not) stage leaves it: history.json, checkpoint.th, curriculum.json."""
    folder = paths.xp_dir(sig, ws)
    folder.mkdir(parents=True)
    n = stage.epochs if epochs_done is None else epochs_done
    (folder / "history.json").write_text(json.dumps([{"train": {"ce": 5.0}, "valid": {"ce": 5.0}}] * n))
    if checkpoint:
        (folder / "checkpoint.th").write_bytes(b"not a real checkpoint")
    key = dict(ct.identity(cur, *KEY_ARGS), **key_changes)
    record = dict(key, stage=stage.name, sig=sig, stage_config=stage.spec(), finished_at=finished_at,
                  continue_from=f"//sig/{continue_from_sig}" if continue_from_sig else None,
                  continue_from_sig=continue_from_sig)
    (folder / ct.RECORD).write_text(json.dumps(record))
    return folder


def _plan(ws: Path, cur: ct.Curriculum) -> ct.Plan:
    return ct.plan_curriculum(cur, ct.scan_records(ws), ct.identity(cur, *KEY_ARGS))


def _summary(plan: ct.Plan) -> list:
    return [(p.stage.name, p.status, p.sig, p.continue_from_sig) for p in plan.stages]


def test_plan_from_records_step_by_step(tmp_path: Path, tiny_dir: Path) -> None:
    ws, cur = tmp_path / "ws", ct.load_curriculum(tiny_dir)
    warm, longer, longest = cur.stages
    assert _summary(_plan(ws, cur)) == [("warm", "next", None, None), ("longer", "pending", None, None),
                                        ("longest", "pending", None, None)]
    _fake_xp(ws, "aaaa0001", warm, cur)
    assert _summary(_plan(ws, cur)) == [("warm", "finished", "aaaa0001", None),
                                        ("longer", "next", None, "aaaa0001"), ("longest", "pending", None, None)]
    _fake_xp(ws, "aaaa0002", longer, cur, continue_from_sig="aaaa0001")
    _fake_xp(ws, "aaaa0003", longest, cur, continue_from_sig="aaaa0002")
    plan = _plan(ws, cur)
    assert plan.all_done and plan.next is None and [p.sig for p in plan.finished] == ["aaaa0001", "aaaa0002",
                                                                                       "aaaa0003"]
    assert plan.notes == ()


def test_plan_ignores_records_of_other_runs_and_unfinished_xps(tmp_path: Path, tiny_dir: Path) -> None:
    ws, cur = tmp_path / "ws", ct.load_curriculum(tiny_dir)
    warm, longer, _ = cur.stages
    _fake_xp(ws, "bbbb0001", warm, cur, codec="0ther0de")           # another codec: another curriculum run
    _fake_xp(ws, "bbbb0002", warm, cur, conditioning="genre")
    _fake_xp(ws, "bbbb0003", warm, cur, curriculum="other")
    _fake_xp(ws, "bbbb0004", warm, cur, epochs_done=0)              # interrupted before its first epoch ended
    _fake_xp(ws, "bbbb0005", warm, cur, checkpoint=False)
    changed = ct.Stage(**{**warm.__dict__, "epochs": 7})            # the YAML said 7 epochs back then
    _fake_xp(ws, "bbbb0006", changed, cur)
    plan = _plan(ws, cur)
    assert _summary(plan)[0] == ("warm", "next", None, None)
    assert len(plan.notes) == 3
    assert "xp bbbb0004 of stage warm ignored: 0/1 epochs" in plan.notes
    assert "xp bbbb0005 of stage warm ignored: 1/1 epochs, no checkpoint.th" in plan.notes
    assert any(n.startswith("xp bbbb0006 of stage warm ignored: trained with another stage config") for n in plan.notes)


def test_plan_takes_the_latest_record_and_the_last_finished_stage(tmp_path: Path, tiny_dir: Path) -> None:
    ws, cur = tmp_path / "ws", ct.load_curriculum(tiny_dir)
    warm, longer, longest = cur.stages
    _fake_xp(ws, "cccc0001", warm, cur, finished_at="2026-01-01T00:00:00")
    _fake_xp(ws, "cccc0002", warm, cur, finished_at="2026-02-01T00:00:00")
    assert _summary(_plan(ws, cur))[:2] == [("warm", "finished", "cccc0002", None),
                                            ("longer", "next", None, "cccc0002")]
    # `--stage longest --continue-from <some LM>` finished: the stages before it are passed over
    ws2 = tmp_path / "ws2"
    _fake_xp(ws2, "dddd0003", longer, cur, continue_from_sig="12345678")
    assert _summary(_plan(ws2, cur)) == [("warm", "not-run", None, None),
                                         ("longer", "finished", "dddd0003", "12345678"),
                                         ("longest", "next", None, "dddd0003")]


def test_unreadable_records_are_skipped(tmp_path: Path, tiny_dir: Path) -> None:
    ws, cur = tmp_path / "ws", ct.load_curriculum(tiny_dir)
    _fake_xp(ws, "eeee0001", cur.stages[0], cur)
    _write(paths.xp_dir("eeee0002", ws), ct.RECORD, "{ not json")
    _write(paths.xp_dir("eeee0003", ws), ct.RECORD, "[1, 2]")
    records = ct.scan_records(ws)
    assert [r["sig"] for r in records] == ["eeee0001"]
    assert records[0]["epochs_done"] == 1 and records[0]["has_checkpoint"] is True


# ------------------------------------------------------------------------------------------ CLI, dry run


@pytest.fixture()
def fake_ws(tmp_path: Path) -> Path:
    """A workspace with a prepared-looking dataset (10 s files; manifests only) and a codec XP's config."""
    ws = tmp_path / "ws"
    for split in ("train", "valid"):
        recs = [manifests.AudioRecord(path=str(ws / "data" / "tinyset" / "audio" / f"{split}{k}.wav"), duration=10.0,
                                      sample_rate=32000) for k in range(4)]
        manifests.write_manifest(recs, ws / "data" / "tinyset" / "egs" / split)
    manifests.write_dset_config("tinyset", ws)
    codec = paths.xp_dir(CODEC, ws)
    _write(codec / ".hydra", "config.yaml",
           "solver: compression\nsample_rate: 32000\nchannels: 1\nrvq:\n  n_q: 4\n  bins: 256\n")
    (codec / "checkpoint.th").write_bytes(b"a codec checkpoint")
    return ws


def _cli(*args: str, ws: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUSICPIPE_WORKSPACE=str(ws))
    return subprocess.run([sys.executable, str(SCRIPT), "--preset", "demo_cpu", "--dataset", "tinyset", "--codec",
                           CODEC, "--workspace", str(ws), *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def _main(*args: str, ws: Path, capsys: pytest.CaptureFixture) -> tuple:
    """``curriculum_train.main`` in this process: (exit code, stdout, stderr)."""
    try:
        code = ct.main(["--preset", "demo_cpu", "--dataset", "tinyset", "--codec", CODEC, "--workspace", str(ws),
                        *args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _xp_folders(ws: Path) -> set:
    return {p.name for p in (paths.dora_dir(ws) / "xps").iterdir()}


DEMO_LM = ("dora run solver=musicgen/musicgen_base_32khz dset=audio/tinyset conditioner=none "
           "logging.log_tensorboard=true model/lm/model_scale=xsmall device=cpu autocast=false "
           "optim.ema.use=false optim.ema.device=cpu deadlock.use=false optim.optimizer=adamw optim.lr={lr} "
           "schedule.lr_scheduler=null optim.epochs={epochs} optim.updates_per_epoch=5 dataset.batch_size=2 "
           "dataset.segment_duration={seg} dataset.num_workers=0 dataset.valid.num_samples=4 "
           "dataset.generate.num_samples=2 generate.every=2 evaluate.every=2 checkpoint.save_every=1 "
           "checkpoint.keep_last=2 dataset.min_segment_ratio=1.0 "
           "compression_model_checkpoint=//sig/c0dec0de transformer_lm.n_q=4 transformer_lm.card=256")


def test_dry_run_prints_the_exact_commands_and_runs_nothing(fake_ws: Path, tiny_dir: Path) -> None:
    before = _xp_folders(fake_ws)
    res = _cli("--config-dir", str(tiny_dir), "--dry-run", ws=fake_ws)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.splitlines()
    plan = {line.split()[1]: line for line in out if line.startswith("  ") and line.split()[0] in ("1.", "2.", "3.")}
    sig1 = plan["warm"].split("NEXT: would run as xp ")[1][:8]
    sig2 = plan["longer"].split(" as xp ")[1][:8]
    assert "from scratch" in plan["warm"] and f"continuing from warm (xp {sig1})" in plan["longer"]
    assert "data: 4/4 train files (100%) are at least 2 s long" in plan["warm"]
    commands = [line for line in out if line.startswith("dora run ")]
    assert commands == [
        DEMO_LM.format(lr="0.001", epochs=1, seg="2.0"),
        DEMO_LM.format(lr="0.0005", epochs=1, seg="3.0") + f" continue_from=//sig/{sig1}",
        DEMO_LM.format(lr="0.001", epochs=2, seg="4.0") + f" continue_from=//sig/{sig2}",
    ]
    # the planned signature is Dora's own (computed here the way `musicpipe.dora.run` does)
    assert dora.xp_signature(commands[0].split()[1:], fake_ws) == sig1
    assert out[-1] == f"curriculum_train: tiny: dry run: 0/3 stages finished, next warm as xp {sig1} (from scratch); " \
                      "nothing was run"
    assert _xp_folders(fake_ws) == before  # no XP folder was created

    # once warm has finished (its record), the plan starts at longer, from warm's XP
    cur = ct.load_curriculum(tiny_dir)
    stage = cur.stages[0]
    folder = paths.xp_dir("5151a1a1", fake_ws)
    folder.mkdir()
    (folder / "history.json").write_text(json.dumps([{"train": {}, "valid": {}}]))
    (folder / "checkpoint.th").write_bytes(b"x")
    (folder / ct.RECORD).write_text(json.dumps(dict(ct.identity(cur, *KEY_ARGS), stage="warm", sig="5151a1a1",
                                                    stage_config=stage.spec(), finished_at="2026-01-01")))
    res = _cli("--config-dir", str(tiny_dir), "--dry-run", ws=fake_ws)
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [line for line in res.stdout.splitlines() if line.startswith("dora run ")]
    assert commands[0] == DEMO_LM.format(lr="0.0005", epochs=1, seg="3.0") + " continue_from=//sig/5151a1a1"
    assert len(commands) == 2 and commands[1].startswith(DEMO_LM.format(lr="0.001", epochs=2, seg="4.0"))
    assert "1. warm     segment 2 s, batch 2, 1 epoch: finished: xp 5151a1a1, 1 epoch, from scratch" in res.stdout


def test_refusals_run_nothing_and_say_why(fake_ws: Path, tiny_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    before = _xp_folders(fake_ws)
    kw = {"ws": fake_ws, "capsys": capsys}
    # a later stage without a finished previous stage
    code, out, err = _main("--config-dir", str(tiny_dir), "--stage", "longer", **kw)
    assert code == 1
    assert "curriculum_train: error: stage longer continues from stage warm, which has no finished XP for " \
           "curriculum tiny (preset demo_cpu, dataset tinyset, codec c0dec0de, conditioning none" in err
    assert "run --stage warm (or --auto) first, or pass --continue-from SIG|CHECKPOINT" in err
    # segments longer than the data's files
    long_dir = tmp_path / "long"
    _write(long_dir, "twenty.yaml", _stage_yaml("twenty", 1, 20, 2, 1))
    code, out, err = _main("--config-dir", str(long_dir), "--auto", **kw)
    assert code == 1
    assert "curriculum_train: error: stage twenty refused: dataset 'tinyset': 0/4 train files (0%) are at least " \
           "20 s long (longest 10 s; at least 50% needed): AudioCraft would zero-pad every shorter file" in err
    code, out, err = _main("--config-dir", str(long_dir), "--dry-run", **kw)
    assert code == 0 and "data: WOULD BE REFUSED: 0/4 train files (0%)" in out
    # --continue-from: unknown XP, a codec XP, an LM on another codec
    code, out, err = _main("--config-dir", str(tiny_dir), "--stage", "longer", "--continue-from", "0badf00d", **kw)
    assert code == 1 and "--continue-from 0badf00d: no XP 0badf00d in" in err
    code, out, err = _main("--config-dir", str(tiny_dir), "--stage", "longer", "--continue-from", CODEC, **kw)
    assert code == 1 and f"XP {CODEC} is a 'compression' XP, not a MusicGen LM" in err
    other = paths.xp_dir("1a2b3c4d", fake_ws)
    _write(other / ".hydra", "config.yaml", "solver: musicgen\ncompression_model_checkpoint: //sig/99999999\n")
    (other / "checkpoint.th").write_bytes(b"x")
    code, out, err = _main("--config-dir", str(tiny_dir), "--stage", "longer", "--continue-from", str(other), **kw)
    assert code == 1
    assert "XP 1a2b3c4d was trained on codec //sig/99999999, this curriculum uses //sig/c0dec0de" in err
    # usage errors
    code, out, err = _main("--config-dir", str(tiny_dir), "--auto", "--continue-from", "1a2b3c4d", **kw)
    assert code == 2 and "--continue-from needs --stage" in err
    code, out, err = _main("--config-dir", str(tiny_dir), "--auto", "--dry-run", **kw)
    assert code == 2 and "not allowed with argument" in err
    assert _xp_folders(fake_ws) == before | {"1a2b3c4d"}


def test_continue_from_values(fake_ws: Path, tiny_dir: Path, tmp_path: Path) -> None:
    setup = ct.Setup(curriculum=ct.load_curriculum(tiny_dir), preset_name="demo_cpu",
                     preset=presets.load_preset("demo_cpu"), dataset="tinyset",
                     codec=presets.CodecInfo(CODEC, 4, 256), conditioning="none", workspace=fake_ws)
    lm = paths.xp_dir("1a2b3c4d", fake_ws)
    _write(lm / ".hydra", "config.yaml", f"solver: musicgen\ncompression_model_checkpoint: //sig/{CODEC}\n")
    (lm / "checkpoint.th").write_bytes(b"x")
    assert ct.resolve_continue_from("1a2b3c4d", setup) == ("//sig/1a2b3c4d", "1a2b3c4d")
    assert ct.resolve_continue_from(str(lm), setup) == ("//sig/1a2b3c4d", "1a2b3c4d")
    assert ct.resolve_continue_from(str(lm / "checkpoint.th"), setup) == ("//sig/1a2b3c4d", "1a2b3c4d")
    _write(lm, "musicpipe.json", json.dumps({"sig": "1a2b3c4d", "conditioning": "genre"}))
    with pytest.raises(ct.CurriculumError, match="trained with conditioning 'genre', not 'none'"):
        ct.resolve_continue_from("1a2b3c4d", setup)
    outside = _write(tmp_path / "shared ckpts é", "lm.th", "x")
    assert ct.resolve_continue_from(str(outside), setup) == (str(outside.resolve()), None)
    assert ct.hydra_value(str(outside.resolve())) == f"'{outside.resolve()}'"


# -------------------------------------------------------------------------------------- carry_state, pure


def test_optimizer_state_merges_only_into_the_same_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    old = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    old.step()
    saved = old.state_dict()
    new = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    shapes = [tuple(p.shape) for p in model.parameters()]
    merged = carry_state.merge_optimizer_state(new.state_dict(), saved, shapes)
    new.load_state_dict(merged)
    assert new.param_groups[0]["lr"] == 5e-4 and new.param_groups[0]["weight_decay"] == 0.1  # the new stage's
    assert carry_state.state_digest(new.state_dict()["state"]) == carry_state.state_digest(saved["state"])
    assert carry_state.optimizer_steps(new.state_dict()) == 1
    with pytest.raises(ValueError, match="another optimizer kind"):
        carry_state.merge_optimizer_state(torch.optim.SGD(model.parameters(), lr=0.1).state_dict(), saved, shapes)
    with pytest.raises(ValueError, match="saved parameters, the optimizer has"):
        carry_state.merge_optimizer_state(torch.optim.AdamW(model[0].parameters()).state_dict(), saved, shapes[:2])
    with pytest.raises(ValueError, match=r"parameter 0: saved exp_avg has shape \(2, 3\), the parameter \(3, 3\)"):
        carry_state.merge_optimizer_state(new.state_dict(), saved, [(3, 3)] + shapes[1:])


def test_carry_is_opt_in() -> None:
    assert carry_state.carry_enabled({"MUSICPIPE_CARRY_STATE": "1"})
    assert not carry_state.carry_enabled({"MUSICPIPE_CARRY_STATE": "off"}) and not carry_state.carry_enabled({})

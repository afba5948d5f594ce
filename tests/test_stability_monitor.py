"""The stability monitor's pure core, and its torch guard on real tiny models, optimizers, schedulers and a real
CPU GradScaler (no AudioCraft here: tests/integration/test_stability.py runs the real solvers)."""

import json
import math

import pytest
import torch

from musicpipe.dora_entry.stability_hooks import (StepGuard, _finite_only_averager, epoch_metrics, grad_total_norm,
                                                  nonfinite_tensors)
from training_checks import stability_monitor as sm
from training_checks.stability_monitor import (StabilityConfig, StabilityConfigError, StabilityMonitor, StepKind,
                                               TrainingDivergedError, classify_step)

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------------------------------- config


def test_config_defaults_and_validation():
    cfg = StabilityConfig()
    assert (cfg.max_nan_ratio_per_epoch, cfg.max_inf_grad_ratio_per_epoch, cfg.enable_adaptive_lr) == (0.1, 0.3, True)
    for bad, name in ((dict(max_nan_ratio_per_epoch=-0.1), "max_nan_ratio_per_epoch"),
                      (dict(max_inf_grad_ratio_per_epoch=2), "max_inf_grad_ratio_per_epoch"),
                      (dict(lr_decrease_factor=0), "lr_decrease_factor"),
                      (dict(lr_decrease_factor=1.5), "lr_decrease_factor"),
                      (dict(min_lr_scale=0), "min_lr_scale"),
                      (dict(lr_recovery_factor=0.9), "lr_recovery_factor"),
                      (dict(lr_recovery_steps=0), "lr_recovery_steps"),
                      (dict(min_grad_scale=-1), "min_grad_scale")):
        with pytest.raises(StabilityConfigError, match=f"^{name}="):
            StabilityConfig(**bad)


def test_config_from_env_names_the_variable():
    env = {"STABILITY_MAX_NAN_RATIO": "0.2", "STABILITY_MAX_INF_RATIO": "0.5", "STABILITY_ADAPTIVE_LR": "off",
           "STABILITY_LR_FACTOR": "0.25", "STABILITY_MIN_LR_SCALE": "0.1", "STABILITY_LR_RECOVERY_FACTOR": "2",
           "STABILITY_LR_RECOVERY_STEPS": "3", "STABILITY_MIN_GRAD_SCALE": "1e-3", "UNRELATED": "x"}
    cfg = StabilityConfig.from_env(env)
    assert cfg == StabilityConfig(0.2, 0.5, False, 0.25, 0.1, 2.0, 3, 1e-3)
    assert StabilityConfig.from_env({"STABILITY_MAX_NAN_RATIO": " "}) == StabilityConfig()
    with pytest.raises(StabilityConfigError, match=r"STABILITY_LR_RECOVERY_STEPS='2.5': not an integer"):
        StabilityConfig.from_env({"STABILITY_LR_RECOVERY_STEPS": "2.5"})
    with pytest.raises(StabilityConfigError, match=r"STABILITY_ADAPTIVE_LR='maybe': not a boolean"):
        StabilityConfig.from_env({"STABILITY_ADAPTIVE_LR": "maybe"})
    with pytest.raises(StabilityConfigError, match=r"max_nan_ratio_per_epoch=3.0: must be in \[0, 1\] "
                                                   r"\(from \$STABILITY_MAX_NAN_RATIO\)"):
        StabilityConfig.from_env({"STABILITY_MAX_NAN_RATIO": "3"})
    assert sm.enabled_from_env({}) and sm.enabled_from_env({"MUSICPIPE_STABILITY": "1"})
    assert not sm.enabled_from_env({"MUSICPIPE_STABILITY": "0"})
    with pytest.raises(StabilityConfigError, match="MUSICPIPE_STABILITY='2'"):
        sm.enabled_from_env({"MUSICPIPE_STABILITY": "2"})


# ----------------------------------------------------------------------------------------------- the core


def test_classify_step_order():
    assert classify_step(1.0, 0.5) is StepKind.OK
    assert classify_step(None, None) is StepKind.OK
    assert classify_step(NAN, 0.5) is StepKind.NAN_LOSS
    assert classify_step(INF, INF) is StepKind.NAN_LOSS
    assert classify_step(1.0, NAN) is StepKind.INF_GRAD
    # a lowered GradScaler scale means the scaler skipped: not an inf-gradient step
    assert classify_step(1.0, INF, scale_before=1024.0, scale_after=512.0) is StepKind.SCALER_SKIPPED
    assert classify_step(1.0, 0.5, scale_before=1024.0, scale_after=2048.0) is StepKind.OK  # growth
    # a non-finite loss is divergence even when the scaler also skipped
    assert classify_step(NAN, INF, scale_before=1024.0, scale_after=512.0) is StepKind.NAN_LOSS
    assert classify_step(1.0, INF, scale_before=1e-4, scale_after=5e-5) is StepKind.SCALE_COLLAPSED
    assert classify_step(1.0, INF, 1e-4, 5e-5, min_grad_scale=1e-5) is StepKind.SCALER_SKIPPED


def test_nan_ratio_stops_as_soon_as_the_epoch_cannot_pass():
    mon = StabilityMonitor(StabilityConfig(max_nan_ratio_per_epoch=0.1))
    mon.start_epoch(3, expected_steps=10)
    assert mon.observe(1.0, 1.0, lr=1e-3).kind is StepKind.OK
    first = mon.observe(NAN, NAN, lr=1e-3)
    assert (first.kind, first.skip_update, first.stop) == (StepKind.NAN_LOSS, True, False)  # 1/10 is not > 0.1
    mon.observe(1.0, INF, lr=1e-3)
    second = mon.observe(NAN, NAN, lr=1e-3)
    assert second.stop and second.skip_update
    assert second.reason == ("training diverged in epoch 3: 2 of the epoch's 10 planned steps had a NaN/non-finite "
                             "loss (ratio >= 0.200 > max_nan_ratio_per_epoch=0.1; stopped at step 4 of 10, as the "
                             "ratio can no longer end at or below the limit; inf-gradient steps: 1, GradScaler "
                             "skips: 0)")
    report = mon.end_epoch()
    assert (report.verdict, report.steps, report.nan_steps, report.inf_grad_steps, report.updates) == \
        ("diverged", 4, 2, 1, 1)
    assert report.stopped_at_step == 4 and report.reason == second.reason and report.nan_ratio == 0.5
    error = TrainingDivergedError(report.reason, report)
    assert "epoch 3" in str(error) and error.report.nan_steps == 2


def test_nan_ratio_without_a_planned_count_is_decided_at_the_epoch_end():
    mon = StabilityMonitor(StabilityConfig(max_nan_ratio_per_epoch=0.1))
    mon.start_epoch(1)
    decisions = [mon.observe(NAN if i in (2, 5) else 1.0, 1.0) for i in range(10)]
    assert not any(d.stop for d in decisions)
    report = mon.end_epoch()
    assert report.verdict == "diverged" and report.stopped_at_step is None
    assert report.reason == ("training diverged in epoch 1: 2 of 10 steps had a NaN/non-finite loss (ratio 0.200 > "
                             "max_nan_ratio_per_epoch=0.1; inf-gradient steps: 0, GradScaler skips: 0)")
    # exactly at the limit passes; a new epoch starts from zero
    mon.start_epoch(2, expected_steps=10)
    assert not mon.observe(NAN, NAN).stop
    for _ in range(9):
        mon.observe(1.0, 1.0)
    assert mon.end_epoch().verdict == "ok"


@pytest.mark.parametrize("limit,stops_at", [(0.0, 1), (1.0, None)])
def test_nan_ratio_limits_at_the_extremes(limit, stops_at):
    mon = StabilityMonitor(StabilityConfig(max_nan_ratio_per_epoch=limit))
    mon.start_epoch(1, expected_steps=4)
    stops = [i + 1 for i in range(4) if mon.observe(NAN, NAN).stop]
    assert (stops[0] if stops else None) == stops_at


def test_inf_ratio_warns_once_and_never_stops():
    mon = StabilityMonitor(StabilityConfig(max_inf_grad_ratio_per_epoch=0.3))
    mon.start_epoch(2, expected_steps=10)
    decisions = [mon.observe(1.0, INF if i < 5 else 1.0) for i in range(10)]
    assert not any(d.stop for d in decisions)
    warnings = [(i, d.warning) for i, d in enumerate(decisions) if d.warning]
    assert len(warnings) == 1 and warnings[0][0] == 3  # the 4th: 4/10 > 0.3
    assert warnings[0][1].startswith("epoch 2: 4 of the epoch's 10 planned steps had non-finite gradients")
    report = mon.end_epoch()
    assert (report.verdict, report.inf_grad_steps, report.inf_grad_ratio, report.updates) == ("warning", 5, 0.5, 5)
    assert "max_inf_grad_ratio_per_epoch=0.3" in report.reason
    # during the epoch the planned count is the denominator (1 of 10: no warning yet); at its end, the steps
    # that actually ran (a loader shorter than updates_per_epoch ends the epoch early): 1 of 1
    mon.start_epoch(3, expected_steps=10)
    assert mon.observe(1.0, INF).warning is None
    assert mon.end_epoch().verdict == "warning"


def test_lr_goes_down_to_the_floor_and_recovers_gradually_up_to_the_scheduler_lr():
    mon = StabilityMonitor(StabilityConfig(lr_decrease_factor=0.5, min_lr_scale=0.1, lr_recovery_factor=2.0,
                                           lr_recovery_steps=3))
    mon.start_epoch(1)
    down = [mon.observe(1.0, INF, lr=1e-3).lr_scale for _ in range(5)]
    assert down == [0.5, 0.25, 0.125, 0.1, 0.1]
    up = [mon.observe(1.0, 1.0, lr=1e-3).lr_scale for _ in range(15)]
    assert up == [0.1, 0.1, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]  # capped at 1
    assert mon.observe(NAN, NAN).lr_scale == 0.5  # a NaN loss lowers it too
    # a GradScaler skip neither lowers it nor counts as healthy: the streak goes on
    assert mon.observe(1.0, 1.0).lr_scale == 0.5
    assert mon.observe(1.0, INF, scale_before=8.0, scale_after=4.0).lr_scale == 0.5
    assert mon.observe(1.0, 1.0).lr_scale == 0.5
    assert mon.observe(1.0, 1.0).lr_scale == 1.0
    report = mon.end_epoch()
    assert report.min_lr == pytest.approx(1e-4) and report.max_lr == pytest.approx(1e-3)
    assert mon.state_dict() == {"lr_scale": 1.0, "healthy_streak": 0}


def test_effective_lr_never_exceeds_the_scheduler_lr():
    mon = StabilityMonitor(StabilityConfig(lr_recovery_steps=1, lr_recovery_factor=3.0))
    mon.start_epoch(1)
    pattern = [1.0, INF, 1.0, 1.0, INF, INF, 1.0, 1.0, 1.0, 1.0] * 3
    for step, norm in enumerate(pattern):
        scheduler_lr = 1e-3 * (0.9 ** step)  # a decaying schedule
        d = mon.observe(1.0, norm, lr=scheduler_lr)
        assert d.lr_scale <= 1.0
        if d.effective_lr is not None:
            assert d.effective_lr <= scheduler_lr * (1 + 1e-12)


def test_adaptive_lr_off_still_skips_bad_updates():
    mon = StabilityMonitor(StabilityConfig(enable_adaptive_lr=False), lr_scale=0.3)
    assert mon.lr_scale == 1.0
    mon.start_epoch(1)
    d = mon.observe(1.0, INF, lr=1e-3)
    assert (d.kind, d.skip_update, d.lr_scale) == (StepKind.INF_GRAD, True, 1.0)


def test_restored_scale_is_clamped_and_observe_needs_an_epoch():
    assert StabilityMonitor(StabilityConfig(min_lr_scale=0.05), lr_scale=0.001).lr_scale == 0.05
    assert StabilityMonitor(lr_scale=7.0).lr_scale == 1.0
    assert StabilityMonitor(lr_scale=NAN).lr_scale == 1.0
    with pytest.raises(RuntimeError, match="start_epoch"):
        StabilityMonitor().observe(1.0, 1.0)


# ------------------------------------------------------------------------------- torch: the step guard


def _loss(model, x):
    return (model(x) ** 2).mean()


def test_real_loop_with_inf_grads_skips_updates_scales_lr_and_keeps_weights_finite():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # a chainable scheduler (it multiplies the LR it finds): the guard must not let the scale compound into it
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    guard = StepGuard(StabilityMonitor(StabilityConfig(lr_recovery_steps=3, lr_recovery_factor=2.0)))
    guard.guard_optimizer(opt, primary=True)
    guard.monitor.start_epoch(1, expected_steps=12)
    x = torch.randn(16, 4)
    bad_steps = {3, 4, 9}
    scales, sched_lrs = [], []
    for step in range(12):
        before = [p.detach().clone() for p in model.parameters()]
        sched_lr = opt.param_groups[0]["lr"]
        scale = guard.monitor.lr_scale
        guard.begin_step()
        loss = _loss(model, x)
        guard.record_loss(loss)
        loss.backward()
        if step in bad_steps:
            model[0].weight.grad[0, 0] = INF
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
        opt.zero_grad()
        sched.step()
        d = guard.end_step()
        scales.append(d.lr_scale)
        sched_lrs.append(opt.param_groups[0]["lr"])
        after = list(model.parameters())
        if step in bad_steps:
            assert d.kind is StepKind.INF_GRAD and d.skip_update
            assert all(torch.equal(a, b) for a, b in zip(after, before))  # no update at all
        else:
            assert d.kind is StepKind.OK and d.effective_lr == pytest.approx(sched_lr * scale)
            for a, b, g in zip(after, before, grads):  # plain SGD: w -= lr_scheduler * lr_scale * grad
                torch.testing.assert_close(a.detach(), b - sched_lr * scale * g)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.25, 0.5, 0.5, 0.25, 0.25, 0.25]
    # the scheduler's own LR is untouched by the stability scale: 0.1 * 0.9^k exactly
    assert sched_lrs == pytest.approx([0.1 * 0.9 ** (k + 1) for k in range(12)])
    report = guard.monitor.end_epoch()
    assert (report.inf_grad_steps, report.nan_steps, report.updates, report.verdict) == (3, 0, 9, "ok")
    assert report.min_lr == pytest.approx(0.1 * 0.9 ** 11 * 0.25) and report.max_lr == pytest.approx(0.1)


def test_nan_loss_is_skipped_with_adam_and_clipping_and_moments_stay_finite():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    guard = StepGuard(StabilityMonitor(StabilityConfig(max_nan_ratio_per_epoch=0.5)))
    guard.guard_optimizer(opt, primary=True)
    guard.monitor.start_epoch(1, expected_steps=4)
    kinds = []
    for step in range(4):
        guard.begin_step()
        loss = _loss(model, torch.randn(5, 3))
        if step == 1:
            loss = loss * NAN
        guard.record_loss(loss)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # NaN total norm -> NaN grads, as in AudioCraft
        opt.step()
        opt.zero_grad()
        kinds.append(guard.end_step(grad_norm=norm).kind)
    assert kinds == [StepKind.OK, StepKind.NAN_LOSS, StepKind.OK, StepKind.OK]
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert state and all(bool(torch.isfinite(t).all()) for t in state)
    assert int(opt.state[model.weight]["step"]) == 3  # three real updates


def test_optimizer_steps_outside_a_monitored_step_run_unguarded():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = StepGuard(StabilityMonitor())
    guard.guard_optimizer(opt, primary=True)
    guard.guard_optimizer(opt, primary=True)  # once only
    _loss(model, torch.ones(1, 2)).backward()
    before = model.weight.detach().clone()
    opt.step()
    assert not torch.equal(model.weight, before)
    assert hasattr(opt.step, "__func__")  # still a bound method: torch's LR schedulers patch it


def test_real_cpu_gradscaler_skip_is_not_divergence_but_a_collapsed_scale_is():
    torch.manual_seed(2)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** -12, growth_interval=1000)
    guard = StepGuard(StabilityMonitor(StabilityConfig(min_grad_scale=1e-4)))
    guard.guard_optimizer(opt, primary=True)
    guard.monitor.start_epoch(1, expected_steps=5)
    x = torch.randn(8, 4)
    decisions = []
    for step in range(4):
        before = model.weight.detach().clone()
        scale_before = scaler.get_scale()
        guard.begin_step()
        loss = _loss(model, x)
        guard.record_loss(loss)
        scaler.scale(loss).backward()
        if step in (1, 3):
            model.weight.grad[0, 0] = INF  # overflow, as fp16 gradients do
        scaler.unscale_(opt)  # the order of MusicGenSolver.run_step
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        d = guard.end_step(grad_norm=norm, scale_before=scale_before, scale_after=scaler.get_scale())
        decisions.append(d)
        if step in (1, 3):
            assert torch.equal(model.weight, before)  # the scaler skipped the update
    assert [d.kind for d in decisions] == [StepKind.OK, StepKind.SCALER_SKIPPED, StepKind.OK,
                                           StepKind.SCALE_COLLAPSED]
    skip = decisions[1]
    assert skip.skip_update and not skip.stop and skip.lr_scale == 1.0  # routine: no LR change
    collapse = decisions[3]
    assert collapse.stop and "GradScaler scale fell to 6.10352e-05, below min_grad_scale=0.0001" in collapse.reason
    report = guard.monitor.end_epoch()
    assert (report.scaler_skipped, report.inf_grad_steps, report.nan_steps, report.verdict) == (1, 0, 0, "diverged")
    assert report.grad_scale == 2.0 ** -14
    assert torch.isfinite(model.weight).all()


def test_grad_norm_and_nonfinite_tensors():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=1.0)
    assert grad_total_norm(opt) == 0.0
    p.grad = torch.tensor([0.0, 3.0, 4.0])
    assert grad_total_norm(opt) == 5.0
    p.grad[0] = NAN
    assert math.isnan(grad_total_norm(opt))
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert nonfinite_tensors(model, None) == []
    model[1].running_mean.fill_(INF)  # a buffer poisoned in a forward pass
    assert nonfinite_tensors(model) == ["1.running_mean"]


def test_balancer_averager_keeps_its_running_state_clean():
    import flashy

    avg = _finite_only_averager(flashy.averager(0.5))
    assert avg({"a": torch.tensor(NAN), "b": 1.0}) == pytest.approx({"a": NAN, "b": 1.0}, nan_ok=True)  # first step
    assert avg({"a": 2.0, "b": 2.0}) == {"a": 2.0, "b": 2.0}
    assert math.isinf(avg({"a": INF, "b": 1.0})["a"])
    assert avg({"a": 4.0, "b": 2.0}) == {"a": pytest.approx(10 / 3), "b": pytest.approx(2.0)}


def test_epoch_metrics_for_history():
    mon = StabilityMonitor()
    mon.start_epoch(1)
    mon.observe(1.0, INF, lr=1e-3)
    mon.observe(1.0, 1.0, lr=1e-3)
    metrics = epoch_metrics(mon.end_epoch())
    assert metrics == {"stability_nan_steps": 0, "stability_inf_grad_steps": 1, "stability_scaler_skipped": 0,
                       "stability_skipped_updates": 1, "stability_lr_scale": 0.5, "stability_min_lr": 5e-4,
                       "stability_max_lr": 5e-4}
    mon.start_epoch(2)
    mon.observe(NAN, NAN, lr=1e-3)
    assert "stability_min_lr" not in epoch_metrics(mon.end_epoch())  # no update, no LR range


# ----------------------------------------------------------------------------------------- log and CLI


def test_log_append_read_and_cli(tmp_path, capsys):
    folder = tmp_path / "xps" / "0123abcd"
    folder.mkdir(parents=True)
    mon = StabilityMonitor()
    for epoch, norms in ((1, [1.0, INF]), (2, [NAN, NAN])):
        mon.start_epoch(epoch, expected_steps=2)
        for n in norms:
            mon.observe(NAN if math.isnan(n) else 1.0, n, lr=1e-3)
        sm.append_record(folder, mon.end_epoch().to_dict())
    sm.append_record(folder, {**mon.end_epoch().to_dict(), "verdict": "ok", "nan_steps": 0})  # epoch 2 redone
    lines = (folder / "stability.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # each epoch once: the redone epoch 2 replaced
    records = sm.read_log(folder)
    assert [r["verdict"] for r in records] == ["warning", "ok"]  # 1 of 2 steps > 0.3
    assert [(r["epoch"], r["verdict"]) for r in sm.read_superseded(folder)] == [(2, "diverged")]  # kept aside

    assert sm.main(["--xp", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["epoch", "steps", "nan", "inf_grad", "scaler_skip", "lr_scale", "min_lr", "max_lr",
                              "verdict"]
    assert out[1].split() == ["1", "2", "0", "1", "0", "0.5000", "1.00e-03", "1.00e-03", "warning"]
    assert out[2].split()[0] == "2" and out[2].split()[-1] == "ok"
    assert any(line.startswith("earlier attempts of epoch(s) [2]") for line in out)
    assert any(line.split()[:1] == ["2"] and line.split()[-1] == "diverged" for line in out)
    assert any(line.startswith("training diverged in epoch 2: 1 of the epoch's 2 planned steps") for line in out)
    assert any(line.startswith("epoch 1: 1 of 2 steps had non-finite gradients") for line in out)
    assert out[-1] == ("stability_monitor: 0123abcd: 2 epoch(s), 0 NaN-loss step(s), 1 inf-gradient step(s), "
                       "0 GradScaler skip(s), lr_scale 0.125 at the end: ok")
    assert sm.main(["--xp", str(folder), "--json"]) == 0
    assert [json.loads(line)["epoch"] for line in capsys.readouterr().out.splitlines()[:-1]] == [1, 2]

    empty = tmp_path / "xps" / "fedcba98"
    empty.mkdir()
    assert sm.main(["--xp", str(empty)]) == 1
    assert "stability.jsonl: no stability log" in capsys.readouterr().err
    assert sm.main(["--xp", "deadbeef", "--workspace", str(tmp_path / "ws")]) == 1
    assert "no such XP in workspace" in capsys.readouterr().err
    (empty / "stability.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(sm.StabilityLogError, match=r"stability.jsonl:2: not a JSON record with an 'epoch' key"):
        sm.read_log(empty)

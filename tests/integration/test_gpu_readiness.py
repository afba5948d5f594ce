"""Issue 14 in real demo_cpu runs: checkpoint.keep_last applied with the fixed-seed sampler and continue_from, and
the epoch metrics of a 2-rank gloo run where only rank 1 saw a NaN in the first step of an epoch."""

import math
import os
from pathlib import Path

import pytest

from musicpipe import training
from musicpipe.dora_entry import retention
from training_checks import fixed_seed_sampler as fss
from training_checks import stability_monitor as sm

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parent.parent


def test_keep_last_with_the_sampler_and_continue_from(workspace, codec, tmp_path, monkeypatch):
    run = training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, echo=False, outputs=None,
                            overrides=["label=retention", "optim.epochs=3", "checkpoint.keep_last=1",
                                       "checkpoint.keep_every_states=[model]"])
    names = sorted(p.name for p in run.folder.glob("checkpoint*"))
    assert names == ["checkpoint.th", "checkpoint_3.th"]  # epochs 1 and 2 pruned, the full checkpoint kept
    assert len(run.history()) == 3

    from musicpipe import audiocraft_env

    audiocraft_env.enable_checkpoint_loading()
    import torch

    per_epoch = torch.load(run.folder / "checkpoint_3.th", map_location="cpu", weights_only=True)
    assert sorted(per_epoch) == ["model"]  # weights only
    full = torch.load(run.folder / "checkpoint.th", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "best_state", "history"} <= set(full) and len(full["history"]) == 3

    summary = fss.run_sampler(run.sig, workspace=workspace, outputs=tmp_path / "fss", duration=1.0,
                              prompt_seconds=0.5, num_unconditional=1)
    assert summary["sampled"] == [3] and summary["epochs"] == [3]
    assert retention.read_sampled(run.folder) == {3}

    # the curriculum's next stage and resume read checkpoint.th, which retention never touches
    from audiocraft.utils.checkpoint import resolve_checkpoint_path

    for key, value in audiocraft_env.environment(workspace).items():
        monkeypatch.setenv(key, value)
    resolved = resolve_checkpoint_path(f"//sig/{run.sig}")
    assert resolved.name == "checkpoint.th" and resolved.resolve() == (run.folder / "checkpoint.th").resolve()


def test_two_ranks_nan_on_one_rank_keeps_epoch_metrics_aligned(workspace, codec, monkeypatch):
    for var in ("MUSICPIPE_STABILITY", "FAULT_NAN_STEPS", "FAULT_INF_GRAD_STEPS", *sm.ENV_FIELDS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("MUSICPIPE_EXTRA_HOOKS", "fault_injection:install")
    # the first step of epoch 2 (5 updates per epoch), on rank 1 only; 1 NaN step in 5 is allowed here
    monkeypatch.setenv("FAULT_NAN_STEPS", "6")
    monkeypatch.setenv("FAULT_RANKS", "1")
    monkeypatch.setenv("STABILITY_MAX_NAN_RATIO", "0.5")
    run = training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, echo=False, outputs=None, gpus=2,
                            overrides=["label=two_ranks_nan"])
    history = run.history()
    assert len(history) == 2
    one, two = history[0]["train"], history[1]["train"]
    assert two["stability_nan_steps"] == 1 and one["stability_nan_steps"] == 0
    assert set(two) == set(one)  # the same keys, none lost to the NaN step
    for metrics in (one, two):
        assert all(math.isfinite(v) for v in metrics.values())
        # each value under its own name: the LR is the configured one (no scheduler), ce is the mean of the
        # per-codebook ce_q (an exact relation on every step), ppl = mean(exp(ce)) >= exp(mean(ce)) (Jensen)
        assert metrics["lr"] == pytest.approx(1e-3)
        assert metrics["ppl"] >= math.exp(metrics["ce"]) * 0.999
        assert metrics["ce"] == pytest.approx(sum(metrics[f"ce_q{k}"] for k in range(1, 5)) / 4, rel=1e-3)

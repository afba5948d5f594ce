"""The integration layer: environment, weights-only checkpoint loading, gloo fallback."""

import collections

import pytest
import torch
from omegaconf import OmegaConf

from musicpipe import audiocraft_env


def test_environment_is_pure_and_complete(tmp_path):
    env = audiocraft_env.environment(tmp_path / "ws", base={"PATH": "/bin"})
    assert env["MUSICPIPE_WORKSPACE"] == str(tmp_path / "ws")
    assert env["AUDIOCRAFT_DORA_DIR"] == str(tmp_path / "ws" / "experiments" / "audiocraft")
    assert env["AUDIOCRAFT_TEAM"] == "default"
    assert env["USER"]  # filled in when the container has none
    assert env["DORA_PACKAGE"] == "musicpipe.dora_entry" and env["DORA_MAIN_MODULE"] == "train"
    assert env["PATH"] == "/bin"
    kept = audiocraft_env.environment(tmp_path, base={"USER": "alice", "AUDIOCRAFT_TEAM": "labs"})
    assert (kept["USER"], kept["AUDIOCRAFT_TEAM"]) == ("alice", "labs")


def _state_like_audiocraft():
    """What a solver checkpoint holds: tensors, EMA state in a defaultdict, the xp config."""
    OmegaConf.register_new_resolver("mp_twice", lambda x: 2 * int(x), use_cache=True, replace=True)
    cfg = OmegaConf.create({"optim": {"lr": 1e-3}, "when": "${mp_twice:21}", "dims": [1, 2]})
    assert cfg.when == 42  # fills the resolver cache (a defaultdict), as Hydra's `now` resolver does
    assert cfg._metadata.resolver_cache["mp_twice"]
    ema = collections.defaultdict(dict)
    ema["model"]["w"] = torch.ones(2)
    return {"model": {"w": torch.arange(4.0)}, "ema": {"state": ema, "count": 3}, "xp.cfg": cfg, "epoch": 2}


def test_checkpoints_load_weights_only_after_conversion(tmp_path):
    audiocraft_env.enable_checkpoint_loading()
    state = _state_like_audiocraft()
    path = tmp_path / "ckpt.th"
    torch.save(audiocraft_env.loadable_state(state), path)
    loaded = torch.load(path, map_location="cpu")  # torch >= 2.6: weights_only=True by default
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert torch.equal(loaded["ema"]["state"]["model"]["w"], torch.ones(2))
    assert loaded["xp.cfg"].optim.lr == 1e-3 and list(loaded["xp.cfg"].dims) == [1, 2]
    # the live config keeps omegaconf's defaultdict caches; only the saved copy changed
    assert isinstance(state["xp.cfg"]._metadata.resolver_cache, collections.defaultdict)
    assert loaded["xp.cfg"].when == 42


def test_without_the_conversion_weights_only_load_fails(tmp_path):
    audiocraft_env.enable_checkpoint_loading()
    path = tmp_path / "raw.th"
    torch.save(_state_like_audiocraft(), path)
    with pytest.raises(Exception, match="defaultdict|Unsupported|weights_only"):
        torch.load(path, map_location="cpu")


def test_activate_patches_save_and_distributed_init_once(workspace):
    audiocraft_env.activate(workspace)
    audiocraft_env.activate(workspace)
    import flashy.distrib
    from audiocraft.utils import checkpoint

    assert getattr(checkpoint.save_checkpoint, "_musicpipe", False)
    assert getattr(flashy.distrib.init, "_musicpipe", False)
    assert not getattr(flashy.distrib.init, "__wrapped__", None)  # wrapped once, not twice


def test_workspace_with_spaces_gets_a_hydra_safe_dora_dir(tmp_path):
    ws = tmp_path / "my work é"
    env = audiocraft_env.environment(ws, base={})
    dora_dir = env["AUDIOCRAFT_DORA_DIR"]
    assert " " not in dora_dir and "é" not in dora_dir
    link = audiocraft_env.hydra_safe_dora_dir(ws)
    assert str(link) == dora_dir and link.is_symlink()
    assert link.resolve() == (ws / "experiments" / "audiocraft").resolve()
    (link / "probe").write_text("x")  # experiments land in the workspace itself
    assert (ws / "experiments" / "audiocraft" / "probe").read_text() == "x"
    plain = tmp_path / "plain"
    assert audiocraft_env.hydra_safe_dora_dir(plain) == plain / "experiments" / "audiocraft"


def test_codec_check_schedule():
    from musicpipe.dora_entry.hooks import codec_check_due

    assert [e for e in range(1, 8) if codec_check_due(e, 3)] == [3, 6]
    assert not any(codec_check_due(e, 0) for e in range(1, 20))

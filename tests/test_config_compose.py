"""Every preset composes under Hydra exactly as Dora composes it; a broken override fails here."""

import pytest

from musicpipe import config, manifests, presets

CODEC = presets.CodecInfo(sig="abc12345", n_q=4, card=2048)
CASES = [(name, "compression", None) for name in presets.available_presets()
         if presets.load_preset(name).compression is not None] + [
    (name, "musicgen", cond) for name in presets.available_presets() for cond in ("none", "genre", "text")]


@pytest.mark.parametrize("name, kind, conditioning", CASES)
def test_every_preset_composes(workspace, demo_data, name, kind, conditioning):
    preset = presets.load_preset(name)
    args = presets.dora_run_args(preset, kind, conditioning=conditioning,
                                 codec=CODEC if kind == "musicgen" else None)
    cfg = config.compose(presets.hydra_overrides(args), workspace)
    assert cfg.solver == kind
    assert cfg.sample_rate == 32000 and cfg.channels == 1
    # every preset value landed in the composed config
    for key, value in preset.for_solver(kind).overrides.items():
        if "/" in key:  # a config group choice, not a value
            continue
        node = cfg
        for part in key.lstrip("+").split("."):  # "+key": appended by Hydra
            node = node[part]
        assert node == value, f"{name}/{kind}: {key} composed to {node!r}, preset says {value!r}"
    assert cfg.datasource.train.endswith(f"/data/{preset.dataset}/egs/train")
    assert cfg.datasource.train.startswith(str(workspace))
    if kind == "musicgen":
        assert cfg.transformer_lm.n_q == 4 and cfg.transformer_lm.card == 2048
        assert cfg.compression_model_checkpoint == "//sig/abc12345"
        expected = {"none": None, "genre": ["genre"], "text": ["description"]}[conditioning]
        assert (list(cfg.conditioners.keys()) if cfg.conditioners else None) == expected


def test_model_scale_group_override_applies(workspace, demo_data):
    args = presets.dora_run_args(presets.load_preset("demo_cpu"), "musicgen", codec=CODEC)
    cfg = config.compose(presets.hydra_overrides(args), workspace)
    assert (cfg.transformer_lm.dim, cfg.transformer_lm.num_layers) == (64, 2)  # xsmall


def test_a_broken_override_fails_composition(workspace, demo_data):
    args = presets.dora_run_args(presets.load_preset("demo_cpu"), "compression",
                                 overrides=["seanet.dimensionn=16"])
    with pytest.raises(Exception, match="dimensionn"):
        config.compose(presets.hydra_overrides(args), workspace)
    with pytest.raises(Exception, match="no_such_conditioner"):
        config.compose(["solver=musicgen/musicgen_base_32khz", "conditioner=no_such_conditioner"], workspace)


def test_workspace_dset_configs_are_a_config_source(workspace):
    manifests.write_dset_config("only_in_workspace", workspace, sample_rate=16000)
    cfg = config.compose(["solver=compression/encodec_musicgen_32khz", "dset=audio/only_in_workspace"], workspace)
    assert cfg.datasource.max_sample_rate == 16000
    assert cfg.datasource.valid == f"{workspace}/data/only_in_workspace/egs/valid"
    sources = config.search_path(workspace)
    assert any(s.endswith("/model_config") for s in sources)
    assert any(s.endswith(f"{workspace}/config") for s in sources)
    assert sources.index(next(s for s in sources if s.endswith("/model_config"))) > 0  # after AudioCraft's


@pytest.fixture(scope="module")
def stored_release(tmp_path_factory, workspace, demo_data):
    """Release folders whose state_dict.bin stores a MusicGen config as AudioCraft composes it (text, T5)."""
    import torch
    import yaml
    from omegaconf import OmegaConf

    made = {}
    for scale in ("small", "medium"):
        cfg = config.compose(["solver=musicgen/musicgen_base_32khz", "dset=audio/synthetic_demo",
                              f"model/lm/model_scale={scale}", "conditioner=text2music"], workspace)
        folder = tmp_path_factory.mktemp("releases") / f"musicgen-{scale}"
        folder.mkdir()
        text = yaml.safe_dump(OmegaConf.to_container(cfg, resolve=False))
        torch.save({"best_state": {}, "xp.cfg": text, "version": "1.0.0", "exported": True}, folder / "state_dict.bin")
        torch.save({"pretrained": "facebook/encodec_32khz", "exported": True}, folder / "compression_state_dict.bin")
        made[scale] = folder
    return made


@pytest.mark.parametrize("name, scale, dims", [("finetune_small", "small", (1024, 16, 24)),
                                               ("finetune_medium", "medium", (1536, 24, 48))])
def test_finetune_presets_compose_with_the_stored_release_config(workspace, stored_release, name, scale, dims):
    from musicpipe import training

    folder = stored_release[scale]
    plan = training.plan_lm(name, None, "synthetic_demo", workspace, init_from=str(folder), check_text=False)
    assert plan.conditioning == "text" and plan.init_from == str(folder.resolve())
    assert plan.codec.checkpoint == "//pretrained/facebook/encodec_32khz" and (plan.codec.n_q, plan.codec.card) == \
        (4, 2048)
    cfg = config.compose(presets.hydra_overrides(plan.args), workspace)
    # the architecture and conditioning are the release's, whatever the preset
    assert (cfg.transformer_lm.dim, cfg.transformer_lm.num_heads, cfg.transformer_lm.num_layers) == dims
    assert list(cfg.conditioners.keys()) == ["description"] and cfg.conditioners.description.model == "t5"
    assert list(cfg.fuser.cross) == ["description"]
    assert cfg.continue_from == f"//pretrained/{folder.resolve()}"
    assert cfg.compression_model_checkpoint == "//pretrained/facebook/encodec_32khz"
    # what fine-tuning changes comes from the preset
    preset = presets.load_preset(name)
    for key in ("optim.lr", "optim.optimizer", "schedule.lr_scheduler", "schedule.cosine.warmup", "dataset.batch_size",
                "autocast_dtype"):
        node = cfg
        for part in key.lstrip("+").split("."):  # "+key": appended by Hydra
            node = node[part]
        assert node == preset.musicgen.overrides[key], key
    assert plan.args[:4] == (["run", "-d", "--ddp_workers", "4"] if preset.gpus > 1 else ["run"] + plan.args[1:4])
    with pytest.raises(presets.PresetError, match="has no compression solver"):
        preset.for_solver("compression")


"""The pure preset -> `dora run` argument function."""

import pytest

from musicpipe import presets

CODEC = presets.CodecInfo(sig="abc12345", n_q=4, card=256)


def test_all_presets_load():
    names = presets.available_presets()
    assert {"demo_cpu", "fma_small_mini", "fma_large", "finetune_small", "finetune_medium"} <= set(names)
    for name in names:
        p = presets.load_preset(name)
        if name.startswith("finetune_"):
            assert p.compression is None  # fine-tuning presets train the LM only
        else:
            assert p.compression.solver.startswith("compression/")
        assert p.musicgen.solver.startswith("musicgen/")


def test_compression_args_spell_out_every_override():
    p = presets.load_preset("demo_cpu")
    args = presets.dora_run_args(p, "compression", dset="mydata")
    assert args[0] == "run" and "-d" not in args
    assert args[1:3] == ["solver=compression/encodec_musicgen_32khz", "dset=audio/mydata"]
    for key, value in p.compression.overrides.items():
        assert f"{key}={presets.format_value(value)}" in args
    assert "rvq.bins=256" in args and "autocast=false" in args


def test_musicgen_args_take_token_layout_from_the_codec():
    p = presets.load_preset("demo_cpu")
    args = presets.dora_run_args(p, "musicgen", codec=CODEC, conditioning="genre")
    assert "compression_model_checkpoint=//sig/abc12345" in args
    assert "transformer_lm.n_q=4" in args and "transformer_lm.card=256" in args
    assert "conditioner=genre_lut" in args
    assert "conditioner=text2music" in presets.dora_run_args(p, "musicgen", codec=CODEC, conditioning="text")
    assert "conditioner=none" in presets.dora_run_args(p, "musicgen", codec=CODEC)


def test_musicgen_needs_a_codec_and_rejects_a_contradicting_override():
    p = presets.load_preset("demo_cpu")
    with pytest.raises(presets.PresetError, match="needs a codec"):
        presets.dora_run_args(p, "musicgen")
    with pytest.raises(presets.PresetError, match="contradicts the codec"):
        presets.dora_run_args(p, "musicgen", codec=CODEC, overrides=["transformer_lm.card=2048"])
    with pytest.raises(presets.PresetError, match="unknown conditioning"):
        presets.dora_run_args(p, "musicgen", codec=CODEC, conditioning="mood")


def test_shortcuts_and_user_overrides_replace_preset_values_once():
    p = presets.load_preset("demo_cpu")
    args = presets.dora_run_args(p, "compression", epochs=7, batch_size=8, segment_seconds=2,
                                 overrides=["optim.lr=3e-4", "dataset.batch_size=16"])
    assert "optim.epochs=7" in args and "dataset.segment_duration=2.0" in args
    assert [a for a in args if a.startswith("dataset.batch_size=")] == ["dataset.batch_size=16"]
    assert args[-1] == "optim.lr=3e-4"
    keys = [a.split("=", 1)[0] for a in args[1:]]
    assert len(keys) == len(set(keys))


def test_gpus_select_distributed_run():
    p = presets.load_preset("fma_large")
    args = presets.dora_run_args(p, "compression")
    assert args[:4] == ["run", "-d", "--ddp_workers", "4"]
    assert presets.dora_run_args(p, "compression", gpus=1)[1].startswith("solver=")
    assert presets.hydra_overrides(args)[0] == "solver=compression/encodec_musicgen_32khz"


def test_format_value_quotes_what_hydra_would_split():
    assert presets.format_value("a b") == "'a b'"
    assert presets.format_value([1, "x"]) == "[1,x]"
    assert presets.format_value(False) == "false"
    with pytest.raises(presets.PresetError, match="key=value"):
        presets.parse_overrides(["novalue"])


def test_missing_and_malformed_presets_say_why(tmp_path):
    with pytest.raises(presets.PresetError, match="no preset 'nope'"):
        presets.load_preset("nope")
    (tmp_path / "bad.yaml").write_text("dataset: x\ncompression: {solver: compression/debug}\n")
    with pytest.raises(presets.PresetError, match="missing key 'musicgen'"):
        presets.load_preset("bad", presets_dir=tmp_path)

"""The source registry: one mapping drives the CLI's choices and flags, pipeline.get_dataset and the
download script's items; `generate --num-samples` with prompts."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from musicpipe import cli, generation, pipeline, sources
from musicpipe.sources import synthetic
from musicpipe.sources.base import Option, Source


def test_every_source_has_the_uniform_entry_points():
    assert list(sources.SOURCES) == ["fma", "mtg_jamendo", "folder", "synthetic"]
    for name, src in sources.SOURCES.items():
        assert src.name == name and callable(src.prepare)
        assert all(o.dest.isidentifier() for o in (*src.download_options, *src.prepare_options))
    assert sources.with_step("download") == ["fma", "mtg_jamendo"]
    with pytest.raises(sources.SourceError, match="unknown source 'ftp': expected one of fma, mtg_jamendo, "
                                                  "folder, synthetic"):
        sources.get("ftp")


def test_cli_choices_and_flags_come_from_the_registry():
    res = run_cli("prepare", "--help")
    assert res.returncode == 0
    assert "{fma,mtg_jamendo,folder,synthetic}" in res.stdout
    assert "folder/synthetic: dataset name (dset=audio/<name>)" in " ".join(res.stdout.split())
    res = run_cli("download", "folder")
    assert res.returncode == 2 and "invalid choice: 'folder'" in res.stderr
    res = run_cli("download", "mtg_jamendo", "--workspace", "/nonexistent")
    assert res.returncode == 2 and "mtg_jamendo needs --parts, e.g. --parts 0-3" in res.stderr
    res = run_cli("sources")
    assert res.returncode == 0
    assert [line.split()[0] for line in res.stdout.splitlines()] == list(sources.SOURCES)
    assert "variables: MTG_VARIANT, MTG_MIRROR, MTG_METADATA_MIRROR" in res.stdout


def test_a_registered_source_reaches_the_cli_and_get_dataset(tmp_path, monkeypatch):
    def prepare(workspace, config, *, name=None, force=False, progress=True, clips=1):
        return synthetic.prepare_synthetic(name, workspace, config, tracks_per_genre=clips, duration=3.0,
                                           genres=["rock", "techno"], force=force, progress=progress)

    tiny = Source("tiny", "two genres, short", prepare=prepare, dataset=lambda o: o.get("name"),
                  prepare_options=(sources.base.NAME, Option("clips", "--clips", "clips per genre", type=int,
                                                             default=1)))
    monkeypatch.setitem(sources.SOURCES, "tiny", tiny)
    args = cli.build_parser().parse_args(["prepare", "tiny", "--name", "t", "--clips", "2"])
    assert (args.source, args.name, args.clips, args.func) == ("tiny", "t", 2, cli._prepare)
    assert "tiny" not in sources.with_step("download")
    got = pipeline.get_dataset("tiny", "t", tmp_path, num_jobs=1, split="track")
    assert got["dataset"] == "t" and got["source"] == "tiny"
    records = [json.loads(line) for s in ("train", "valid")
               for line in open(got["manifests"][s], encoding="utf-8").read().splitlines()]
    assert len(records) == 2 and {r["duration"] for r in records} == {3.0}


def test_get_dataset_dispatches_with_each_steps_arguments(tmp_path):
    got = pipeline.get_dataset("synthetic", "syn", tmp_path, tracks_per_genre=1, duration=3.0, num_jobs=1,
                               split="track")
    assert got["counts"]["segments_train"] + got["counts"]["segments_valid"] == 4
    report = json.loads((tmp_path / "data" / "syn" / "prepare_report.json").read_text())
    assert report["counts"]["quarantined"] == 0
    with pytest.raises(pipeline.PipelineError, match="folder: source 'folder' needs input_dir"):
        pipeline.get_dataset("folder", "mine", tmp_path)
    with pytest.raises(pipeline.PipelineError, match="not a folder"):
        pipeline.get_dataset("folder", "mine", tmp_path, input_dir=tmp_path / "missing")
    with pytest.raises(pipeline.PipelineError, match="unknown source 'ftp'"):
        pipeline.get_dataset("ftp", "x", tmp_path)


def test_download_script_items_resolve_through_the_registry():
    env = {"FMA_MIRROR": "http://m/fma/", "MTG_VARIANT": "audio", "MTG_METADATA_MIRROR": "http://m/meta/"}
    fma = sources.batch_item("fma_large", "/w s", env)
    assert (fma.source, fma.dataset) == ("fma", "fma_large")
    assert fma.download == ["fma", "--subset", "fma_large", "--workspace", "/w s", "--mirror", "http://m/fma/"]
    assert fma.prepare == ["fma", "--subset", "fma_large", "--workspace", "/w s"]
    assert sources.batch_item("fma:fma_small", "/w", {}).dataset == "fma_small"
    mtg = sources.batch_item("mtg_jamendo:0,5,7-9", "/w", env)
    assert mtg.download == ["mtg_jamendo", "--parts", "0,5,7-9", "--variant", "audio", "--workspace", "/w",
                            "--metadata-mirror", "http://m/meta/"]
    assert mtg.prepare == ["mtg_jamendo", "--variant", "audio", "--workspace", "/w"]
    assert mtg.lines().splitlines()[0] == "dataset\tmtg_jamendo"
    for item, message in (("mtg_jamendo", "mtg_jamendo needs its parts, e.g. mtg_jamendo:0-3"),
                          ("soundcloud", "unknown item"), ("synthetic:x", "unknown item"),
                          ("fma:a;b", "unexpected characters in fma:a;b")):
        with pytest.raises(sources.SourceError, match=message):
            sources.batch_item(item, "/w", {})
    with pytest.raises(sources.SourceError, match="MTG_VARIANT must be one of audio, audio-low, got mp3"):
        sources.batch_item("mtg_jamendo:0", "/w", {"MTG_VARIANT": "mp3"})


def test_generate_gives_num_samples_per_prompt():
    assert generation.expand_prompts(None) == (2, None, None)
    assert generation.expand_prompts(3) == (3, None, None)
    assert generation.expand_prompts(None, ["rock", "jazz"]) == (2, ["rock", "jazz"], None)
    assert generation.expand_prompts(2, ["rock", "jazz"]) == (4, ["rock", "rock", "jazz", "jazz"], None)
    assert generation.expand_prompts(2, None, ["calm piano"]) == (2, None, ["calm piano", "calm piano"])
    assert generation.expand_prompts(2, ["rock"], ["loud"]) == (2, ["rock", "rock"], ["loud", "loud"])
    with pytest.raises(ValueError, match="at least 1, got 0"):
        generation.expand_prompts(0, ["rock"])
    with pytest.raises(ValueError, match="got 2 genres and 1 descriptions"):
        generation.expand_prompts(None, ["rock", "jazz"], ["loud"])
    res = run_cli("generate", "--export", "/nonexistent", "--genre", "rock", "--num-samples", "0")
    assert res.returncode == 2 and "at least 1, got 0" in res.stderr

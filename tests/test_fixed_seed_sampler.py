"""Unit tests of training_checks/fixed_seed_sampler.py's pure parts, and of the headless-Chromium page helper."""

from __future__ import annotations

import doctest
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import training_checks.fixed_seed_sampler as fss
from browser import chromium_paths, inspect_page

SR = 16000


def _sine(seconds: float, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_module_doctests() -> None:
    result = doctest.testmod(fss, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


# ------------------------------------------------------------------------------------------ epoch discovery


def test_epoch_checkpoints_from_names() -> None:
    names = ["checkpoint.th", "checkpoint_1.th", "checkpoint_2.th", "checkpoint_10.th", "checkpoint_best.th",
             "checkpoint_3.th.1", "checkpoint_4.th.tmp", "checkpoint_4.th.tmp.done", ".checkpoint_5.th",
             "checkpoint_x.th", "history.json", "/abs/xps/08e4d3f1/checkpoint_7.th"]
    found = fss.epoch_checkpoints(names)
    assert list(found) == [1, 2, 7, 10]  # numeric order, not lexical
    assert found[7] == "checkpoint_7.th" and found[10] == "checkpoint_10.th"
    assert fss.epoch_checkpoints([]) == {}


def test_list_epochs_reads_the_xp_folder(tmp_path: Path) -> None:
    for name in ("checkpoint.th", "checkpoint_2.th", "checkpoint_1.th", "checkpoint_1.th.1"):
        (tmp_path / name).write_bytes(b"x")
    xp = fss.XPInfo(sig="deadbeef", folder=tmp_path, workspace=tmp_path, conditioning="none", dataset=None,
                    sample_rate=SR, channels=1, codec=None, fsdp=False)
    assert fss.list_epochs(xp) == {1: tmp_path / "checkpoint_1.th", 2: tmp_path / "checkpoint_2.th"}


def test_resolve_lm_xp_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(fss.SamplerError, match="not an XP signature"):
        fss.resolve_lm_xp("../etc", tmp_path)
    with pytest.raises(fss.SamplerError, match="no such XP"):
        fss.resolve_lm_xp("0123abcd", tmp_path)
    codec = tmp_path / "experiments" / "audiocraft" / "xps" / "0123abcd"
    (codec / ".hydra").mkdir(parents=True)
    (codec / ".hydra" / "config.yaml").write_text("solver: compression\nsample_rate: 32000\n")
    with pytest.raises(fss.SamplerError, match="not an LM"):
        fss.resolve_lm_xp("0123abcd", tmp_path)


# ------------------------------------------------------------------------------------------------- prompts


def test_prompts_per_conditioning() -> None:
    none = fss.build_prompts("none", ["rock"], prompt_audio="/d/a.wav", prompt_condition="rock", seed=3)
    assert [(p.id, p.kind, p.seed, p.genre) for p in none] == [
        ("uncond_0", "unconditional", 3, None), ("uncond_1", "unconditional", 4, None),
        ("continuation", "continuation", 3, None)]
    genre = fss.build_prompts("genre", [" Rock ", "rock", "Hip-Hop/Rap", "hip hop rap"], prompt_audio="/d/a.wav",
                              prompt_condition="ROCK", num_unconditional=0)
    # lower-cased and stripped as AudioCraft's MusicInfo does in training; duplicates dropped; ids unique
    assert [(p.id, p.genre) for p in genre] == [("genre_rock", "rock"), ("genre_hip-hop_rap", "hip-hop/rap"),
                                                ("genre_hip_hop_rap", "hip hop rap"), ("continuation", "rock")]
    clash = fss.build_prompts("genre", ["a b", "a_b"], num_unconditional=0)
    assert [p.id for p in clash] == ["genre_a_b", "genre_a_b_2"]
    with pytest.raises(fss.SamplerError, match="unknown conditioning"):
        fss.build_prompts("t5", [])


def test_pick_conditions_is_deterministic() -> None:
    values = [f"description {k}" for k in range(30)]
    first = fss.pick_conditions(values, "text", 5, seed=1)
    assert first == fss.pick_conditions(list(reversed(values)), "text", 5, seed=1)
    assert len(first) == 5 and first == sorted(first)
    assert fss.pick_conditions(["rock"] * 3 + ["pop"] * 3 + ["jazz"], "genre", 2) == ["pop", "rock"]
    assert fss.pick_conditions(["rock"], "none", 5) == []


# ---------------------------------------------------------------------------------------------- index page


def _epoch(prompts, files, checkpoint="checkpoint_1.th", valid=None):
    return {"settings": {"xp": "08e4d3f1", "conditioning": "text", "seed": 0, "duration": 1.0,
                         "prompts": [p.to_dict() for p in prompts], "checkpoint": {"name": checkpoint}},
            "files": files, "info": {"valid": valid or {}}}


def _entry(name: str, duration: float = 1.0) -> dict:
    return {"wav": f"{name}.wav", "png": f"{name}.png", "duration": duration}


def test_render_index_rows_columns_relative_paths_and_escaping() -> None:
    nasty = 'loud <script>alert("x")</script> & "quoted"'
    prompts = fss.build_prompts("text", ["calm", nasty], prompt_audio="/data/<a>.wav", num_unconditional=1)
    ids = [p.id for p in prompts]
    assert ids == ["uncond_0", "text_0", "text_1", "continuation"]
    files = {i: _entry(i) for i in ids}
    files["text_1"] = {"wav": "odd name&x.wav", "png": "odd name&x.png", "duration": 1.0}
    older = _epoch(prompts[:2], {i: files[i] for i in ids[:2]}, "checkpoint_2.th")
    oracle = {"settings": {"xp": "08e4d3f1"}, "files": {"continuation": _entry("continuation"),
                                                        "reference": _entry("reference")}}
    page = fss.render_index("08e4d3f1", {10: _epoch(prompts, files, "checkpoint_10.th", {"ce": 2.5}), 2: older},
                            oracle)

    # columns: prompt, epoch 2, epoch 10 (numeric order), oracle
    head = re.search(r"<thead><tr>(.*?)</tr></thead>", page, re.S).group(1)
    assert re.findall(r"<th>(prompt|epoch \d+|oracle)", head) == ["prompt", "epoch 2", "epoch 10", "oracle"]
    assert "valid ce 2.5" in head
    assert head.count("other settings than epoch 10") == 1  # epoch 2 was sampled with other prompts
    # rows: one per prompt, the latest epoch's order
    body = re.search(r"<tbody>\s*(<tr><th><code>.*)</tbody></table>", page, re.S).group(1)
    rows = re.findall(r"<tr><th><code>([^<]*)</code>", body)
    assert rows == ids
    row_cells = {r: body.split(f"<tr><th><code>{r}</code>")[1].split("</tr>")[0] for r in rows}
    assert all(row_cells[r].count("<td") == 3 for r in rows)
    # epoch 2 has no text_1/continuation: a dash cell; only the continuation row has oracle media
    assert row_cells["text_1"].count('<td class="muted">-</td>') == 2
    assert 'src="oracle/continuation.wav"' in row_cells["continuation"]
    assert 'src="oracle/reference.wav"' in row_cells["continuation"]
    assert row_cells["uncond_0"].count("<audio") == 2

    srcs = re.findall(r'(?:src)="([^"]*)"', page)
    assert srcs and all(not s.startswith(("/", "file:", "http")) and ".." not in s for s in srcs)
    assert 'src="epoch_10/odd%20name%26x.wav"' in page and 'src="epoch_2/uncond_0.png"' in page
    assert all('preload="metadata"' in a and "controls" in a for a in re.findall(r"<audio[^>]*>", page))
    assert "<script>" not in page and html.escape(nasty) in page
    assert "&lt;a&gt;.wav" in page  # the prompt file name, escaped


def test_render_index_without_samples() -> None:
    page = fss.render_index("08e4d3f1", {}, None)
    assert "No samples yet" in page and "<audio" not in page


def _write_folder(folder: Path, prompt_ids, duration: float) -> dict:
    folder.mkdir(parents=True)
    files = {i: fss.write_sample(_sine(duration), SR, folder, i, i) for i in prompt_ids}
    data = _epoch([fss.Prompt(i, "unconditional", 0) for i in prompt_ids], files)
    (folder / fss.SETTINGS).write_text(json.dumps(data))
    return data


def test_write_index_uses_complete_folders_only(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    _write_folder(samples / "epoch_1", ["uncond_0"], 0.5)
    _write_folder(samples / "epoch_3", ["uncond_0"], 0.5)
    _write_folder(samples / "epoch_4", ["uncond_0"], 0.5)
    (samples / "epoch_3" / "uncond_0.png").unlink()      # incomplete: a file is missing
    (samples / "epoch_4" / fss.SETTINGS).unlink()         # incomplete: no marker
    (samples / "epoch_x").mkdir()
    assert list(fss.sampled_epochs(samples)) == [1]
    index = fss.write_index(samples, "08e4d3f1")
    page = index.read_text()
    assert "epoch_1/uncond_0.wav" in page and "epoch_3/" not in page and "epoch_4/" not in page
    mtime = index.stat().st_mtime_ns
    assert fss.write_index(samples, "08e4d3f1").stat().st_mtime_ns == mtime  # unchanged page: not rewritten
    assert not [p for p in samples.rglob("*") if ".tmp" in p.name]


def test_write_sample_files(tmp_path: Path) -> None:
    entry = fss.write_sample(_sine(0.75) * 10, SR, tmp_path, "loud", "a loud sine")
    data, sr = sf.read(tmp_path / "loud.wav")
    info = sf.info(tmp_path / "loud.wav")
    assert (sr, info.subtype, len(data)) == (SR, "PCM_16", int(0.75 * SR)) and entry["duration"] == 0.75
    assert abs(np.abs(data).max() - fss.PEAK) < 1e-3    # peak-normalised, not clipped
    assert (tmp_path / "loud.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loud.png", "loud.wav"]


# ------------------------------------------------------------------------------------- headless Chromium


def test_chromium_is_installed() -> None:
    chromium, driver = chromium_paths()
    assert Path(chromium).is_file() and Path(driver).is_file()


def _hand_page(folder: Path, durations: dict, missing: tuple = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cells = []
    for name, seconds in durations.items():
        sf.write(folder / f"{name}.wav", _sine(seconds), SR, subtype="PCM_16")
        cells.append(f'<audio controls preload="metadata" src="{name}.wav"></audio>')
    for name in missing:
        cells.append(f'<audio controls preload="metadata" src="{name}.wav"></audio>')
    fss.write_spectrogram(_sine(0.5), SR, folder / "spec.png", "a sine")
    cells.append('<img src="spec.png" alt="spectrogram">')
    page = folder / "page.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title></head><body>'
                    + "\n".join(cells) + "</body></html>", encoding="utf-8")
    return page


def test_browser_reports_audio_durations_and_images(tmp_path: Path) -> None:
    durations = {"short": 0.37, "one": 1.0, "odd": 2.345}
    check = inspect_page(_hand_page(tmp_path / "page é", durations))
    assert not check.timed_out and check.console_errors == []
    assert [a["src"] for a in check.audio] == ["short.wav", "one.wav", "odd.wav"]
    for audio, (name, seconds) in zip(check.audio, durations.items()):
        assert audio["error"] is None and audio["readyState"] >= 1, audio
        assert abs(audio["duration"] - seconds) < 0.05, (name, audio)
    assert [(i["src"], i["naturalWidth"] > 0) for i in check.images] == [("spec.png", True)]


def test_browser_reports_a_missing_file(tmp_path: Path) -> None:
    page = _hand_page(tmp_path, {"here": 0.5}, missing=("gone",))
    (tmp_path / "spec.png").unlink()
    check = inspect_page(page)
    here, gone = check.audio
    assert here["readyState"] >= 1 and here["error"] is None
    assert gone["readyState"] == 0 and gone["duration"] is None and gone["error"] is not None
    assert check.images[0]["naturalWidth"] == 0
    assert any("gone.wav" in e for e in check.console_errors), check.console_errors
    assert any("spec.png" in e for e in check.console_errors), check.console_errors


def test_browser_on_a_rendered_index(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    data = _write_folder(samples / "epoch_1", ["uncond_0", "text_0"], 1.25)
    check = inspect_page(fss.write_index(samples, "08e4d3f1"))
    assert check.console_errors == [] and len(check.audio) == 2 and len(check.images) == 2
    assert all(a["readyState"] >= 1 and abs(a["duration"] - 1.25) < 0.05 for a in check.audio), check.audio
    assert all(i["naturalWidth"] > 0 for i in check.images)
    assert {a["src"] for a in check.audio} == {f"epoch_1/{e['wav']}" for e in data["files"].values()}


def test_render_index_escapes_hostile_genre_sig_and_file_names() -> None:
    genre = "<script>alert(1)</script>"
    prompts = fss.build_prompts("genre", [genre], prompt_audio=None, num_unconditional=0)
    files = {prompts[0].id: {"wav": 'a&"<b.wav', "png": 'a&"<b.png', "duration": 1.0}}
    page = fss.render_index('&"<sig', {1: _epoch(prompts, files)})
    assert "<script>" not in page and '"<' not in page
    assert "<title>musicpipe fixed-seed samples: XP &amp;&quot;&lt;sig</title>" in page
    assert "<h1>Fixed-seed samples of XP <code>&amp;&quot;&lt;sig</code>, per epoch</h1>" in page
    assert "genre: &lt;script&gt;alert(1)&lt;/script&gt;" in page  # the row's label
    # the file name: percent-encoded in the links, escaped in the alt text (no attribute is broken out of)
    assert 'src="epoch_1/a%26%22%3Cb.wav"' in page and 'src="epoch_1/a%26%22%3Cb.png"' in page
    assert 'alt="spectrogram of epoch_1/a&amp;&quot;&lt;b.wav"' in page


def test_both_pages_share_the_base_layout() -> None:
    from musicpipe import report

    samples = fss.render_index("08e4d3f1", {}, None)
    summary = {"sig": "08e4d3f1", "solver": "musicgen", "kind": "lm", "dataset": None, "epochs": 0,
               "xp_folder": "/ws/x", "findings": [], "plots": [], "hyperparameters": {}, "overrides": {},
               "sources": ["history.json"]}
    page = report.render_html(summary, {})
    head = samples[:samples.index("<title>")]
    assert head.startswith("<!DOCTYPE html>") and page.startswith(head)
    css = re.search(r"<style>(.*)</style>", page, re.S).group(1)
    assert css.strip() and re.search(r"<style>(.*)</style>", samples, re.S).group(1).startswith(css)
    assert "table.samples" in samples and "table.samples" not in page  # the samples page adds its own rules
    for text in (page, samples):
        assert text.endswith('.</p>\n</body>\n</html>\n') and '<p class="muted">Written by ' in text

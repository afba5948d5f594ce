"""``generate`` warns about prompts the LM cannot use and refuses a codec XP in one line (issue 18 item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from musicpipe import manifests

pytestmark = pytest.mark.integration


def test_generate_on_a_codec_xp_is_one_line(workspace, codec, tmp_path):
    res = run_cli("generate", "--xp", codec.sig, "--workspace", str(workspace), "--output", str(tmp_path / "o"))
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("musicpipe generate: error: ") and codec.sig in last and "codec" in last
    assert not (tmp_path / "o").exists()


def test_unknown_genre_and_description_on_a_genre_model_warn_listing_what_it_knows(workspace, lm_genre, demo_data,
                                                                                   tmp_path):
    train = manifests.read_manifest(workspace / "data" / "synthetic_demo" / "egs" / "train")
    known = sorted({json.loads(Path(r.path).with_suffix(".json").read_text())["genre"].strip().lower()
                    for r in train})
    assert len(known) >= 2
    out = tmp_path / "genre"
    res = run_cli("generate", "--xp", lm_genre, "--workspace", str(workspace), "--genre", known[0].upper(),
                  "--genre", "polka", "--duration", "0.5", "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    warning = [line for line in res.stderr.splitlines() if "never seen in training" in line]
    assert len(warning) == 1 and "genre 'polka' was never seen" in warning[0], res.stderr[-3000:]
    assert warning[0].endswith("it knows: " + ", ".join(known))
    assert known[0].upper() not in warning[0]  # case as AudioCraft normalises it: a known genre
    assert len(json.loads((out / "settings.json").read_text())["files"]) == 2

    res = run_cli("generate", "--xp", lm_genre, "--workspace", str(workspace), "--description", "calm piano",
                  "--duration", "0.5", "--output", str(tmp_path / "text"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "this LM is conditioned on genre, not text: --description is ignored" in res.stderr
    assert "use --genre (it knows: " + ", ".join(known) + ")" in res.stderr

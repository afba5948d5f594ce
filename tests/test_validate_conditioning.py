"""Unit tests of training_checks/validate_conditioning.py on small real datasets whose sidecars are then broken
(blank descriptions, no genres, invalid JSON, missing keys...): shares, token counts, verdicts, named files."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import training_checks.validate_conditioning as vc
from musicpipe import manifests, paths
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import synthetic
from training_checks.preflight import FAIL, PASS, WARN

NAME = "synth"
FIELDS = ["title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "name", "instrument"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    synthetic.prepare_synthetic(NAME, ws, PrepareConfig(num_jobs=1), tracks_per_genre=2, duration=4.0,
                                progress=False)
    return ws


def _train(ws: Path) -> list[str]:
    return [r.path for r in manifests.read_manifest(paths.dataset_dir(NAME, ws) / "egs" / "train")]


def _sidecar(audio: str) -> Path:
    return Path(audio).with_suffix(".json")


def _edit(audio: str, **changes) -> Path:
    path = _sidecar(audio)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def _statuses(report: vc.ConditioningReport) -> dict:
    return {c.name: c.status for c in report.checks}


def test_synthetic_sidecars(ws: Path) -> None:
    train = _train(ws)
    report = vc.validate_conditioning(NAME, workspace=ws, tokenizer="whitespace")
    assert report.num_segments == report.num_sampled == len(train) == 7
    assert list(report.fields) == FIELDS
    # the synthetic source fills every MusicInfo field but the musical key
    assert {f: report.percent(f) for f in FIELDS} == {f: (0.0 if f == "key" else 100.0) for f in FIELDS}
    descriptions = [json.loads(_sidecar(p).read_text())["description"] for p in train]
    lengths = [len(d.split()) for d in descriptions]
    assert report.tokenizer == "whitespace"
    assert report.tokens == {"count": 7, "mean": round(sum(lengths) / 7, 2), "min": min(lengths), "max": max(lengths)}
    assert not (report.missing or report.unreadable or report.invalid)
    assert _statuses(report) == {"sidecars": PASS, "conditioner none": WARN}
    assert report.get("conditioner none").message.startswith(
        "training unconditionally, but 100% of the sampled segments have a description and 100% a genre")
    assert report.ok and report.status == WARN
    assert report.summary_line() == (f"validate_conditioning: {NAME}: 7 segments sampled, description 100%, "
                                     f"genre 100%, moods 100%; {report.tokens['mean']:.1f} tokens per description "
                                     "(whitespace); conditioner none: WARN")
    for conditioner in ("genre", "text"):
        report = vc.validate_conditioning(NAME, conditioner=conditioner, workspace=ws, tokenizer="whitespace")
        assert _statuses(report) == {"sidecars": PASS, f"conditioner {conditioner}": PASS}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["fields"]["description"] == {"count": 7, "percent": 100.0} and data["ok"] is True


def test_sidecars_without_descriptions(ws: Path) -> None:
    train = _train(ws)
    blanked = sorted(str(_edit(p, description="  ")) for p in train[:5])  # whitespace: empty for AudioCraft
    report = vc.validate_conditioning(NAME, conditioner="text", workspace=ws, tokenizer="whitespace")
    assert report.fields["description"] == 2 and report.percent("description") == pytest.approx(28.6)
    assert report.percent("genre") == 100.0 and report.tokens["count"] == 2
    assert sorted(report.without["description"]) == blanked
    text = report.get("conditioner text")
    assert text.status == FAIL and not report.ok
    assert text.message.startswith("only 29% of the sampled segments have a description (< 50% required), e.g. "
                                   "without one: ")
    assert all(p in text.message for p in report.without["description"][:5])
    # a lower bar passes; genre conditioning does not need descriptions
    assert vc.validate_conditioning(NAME, conditioner="text", min_text_share=0.25, workspace=ws).ok
    assert vc.validate_conditioning(NAME, conditioner="genre", workspace=ws).ok


def test_no_genres_and_no_descriptions(ws: Path) -> None:
    for p in _train(ws):
        _edit(p, genre=None, description="")
    report = vc.validate_conditioning(NAME, conditioner="genre", workspace=ws)
    assert report.percent("genre") == report.percent("description") == 0.0
    assert report.tokens == {"count": 0, "mean": 0.0, "min": 0, "max": 0}
    assert _statuses(report) == {"sidecars": PASS, "conditioner genre": FAIL}
    assert report.get("conditioner genre").message.startswith("only 0% of the sampled segments have a genre")
    none = vc.validate_conditioning(NAME, workspace=ws)
    assert _statuses(none) == {"sidecars": PASS, "conditioner none": PASS} and none.ok


def test_broken_sidecars_are_named(ws: Path) -> None:
    from audiocraft.data.music_dataset import MusicInfo

    train = _train(ws)
    bad_json = _sidecar(train[0])
    bad_json.write_text('{"description": "rock", ')
    missing = _sidecar(train[1])
    missing.unlink()
    no_key = _sidecar(train[2])
    data = json.loads(no_key.read_text())
    del data["key"], data["genre"]
    no_key.write_text(json.dumps(data))
    bad_bpm = _edit(train[3], bpm=[120])
    a_list = _sidecar(train[4])
    a_list.write_text("[1, 2]")
    not_utf8 = _sidecar(train[5])
    not_utf8.write_bytes(b'{"description": "\xff\xfe"}')

    report = vc.validate_conditioning(NAME, conditioner="genre", workspace=ws)
    assert report.missing == [str(missing)]
    assert {p["path"]: p["reason"].split(" (")[0] for p in report.invalid} == {
        str(bad_json): "invalid JSON", str(no_key): "missing key(s) key, genre",
        str(bad_bpm): "field bpm=[120]: AudioCraft cannot convert it", str(a_list): "not a JSON object but a list"}
    assert [p["path"] for p in report.unreadable] == [str(not_utf8)]
    assert report.unreadable[0]["reason"].startswith("cannot read (UnicodeDecodeError")
    sidecars = report.get("sidecars")
    assert sidecars.status == FAIL
    assert sidecars.message.startswith("5 of 7 sampled sidecar(s) would stop MusicGen training")
    for path in (bad_json, no_key, bad_bpm, a_list, not_utf8):
        assert str(path) in sidecars.message
    # only the one good sidecar counts
    assert report.fields["genre"] == 1 and report.get("conditioner genre").status == FAIL
    summary = report.summary_line()
    assert ", 6 sidecar problem(s); " in summary and summary.endswith("conditioner genre: FAIL")
    # what is called invalid here is what AudioCraft itself refuses
    with pytest.raises(KeyError):
        MusicInfo.from_dict(data, fields_required=True)
    with pytest.raises(TypeError):
        MusicInfo.from_dict(json.loads(bad_bpm.read_text()), fields_required=False)


def test_missing_sidecars_only_warn(ws: Path) -> None:
    train = _train(ws)
    gone = [_sidecar(p) for p in train[:2]]
    for p in gone:
        p.unlink()
    report = vc.validate_conditioning(NAME, conditioner="genre", workspace=ws)
    assert _statuses(report) == {"sidecars": WARN, "conditioner genre": PASS}
    assert report.percent("genre") == pytest.approx(71.4)
    assert report.get("sidecars").message == (f"2 of 7 sampled segment(s) have no sidecar and train without metadata: "
                                              f"{gone[0]}; {gone[1]}")


def test_sample_is_seeded(ws: Path) -> None:
    a = vc.validate_conditioning(NAME, num_samples=3, workspace=ws, seed=4)
    b = vc.validate_conditioning(NAME, num_samples=3, workspace=ws, seed=4)
    assert a.num_sampled == 3 and a.num_segments == 7 and a.to_dict() == b.to_dict()
    # the 3 chosen are reported: blank the descriptions of exactly those and only the share moves
    train = _train(ws)
    chosen = vc.select(train, 3, seed=4)
    for p in chosen[:2]:
        _edit(p, description="")
    c = vc.validate_conditioning(NAME, num_samples=3, workspace=ws, seed=4)
    assert c.fields["description"] == 1 and sorted(c.without["description"]) == sorted(str(_sidecar(p))
                                                                                      for p in chosen[:2])


def test_tokenizer_from_local_files(ws: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder = tmp_path / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(folder)

    words = vc.validate_conditioning(NAME, workspace=ws, tokenizer="whitespace")
    report = vc.validate_conditioning(NAME, workspace=ws, tokenizer=str(folder))
    assert report.tokenizer == str(folder) and "local files" in report.tokenizer_note
    # one token per whitespace-separated word plus the end-of-sequence token
    assert report.tokens["mean"] == pytest.approx(words.tokens["mean"] + 1)
    assert report.tokens["max"] == words.tokens["max"] + 1

    missing = vc.validate_conditioning(NAME, workspace=ws, tokenizer="musicpipe-test/no-such-tokenizer")
    assert missing.tokenizer == "whitespace" and missing.tokens == words.tokens
    assert "'musicpipe-test/no-such-tokenizer' tokenizer is not available from local files" in missing.tokenizer_note


def test_unusable_manifest_and_bad_arguments(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(vc.ConditioningError, match="egs/train/data.jsonl: missing; prepare the dataset 'nope'"):
        vc.validate_conditioning("nope", workspace=ws)
    (paths.dataset_dir(NAME, ws) / "egs" / "train" / "data.jsonl").write_text("\n")
    with pytest.raises(vc.ConditioningError, match="empty, lists no audio file"):
        vc.validate_conditioning(NAME, workspace=ws)
    for kwargs, match in ((dict(conditioner="lyrics"), "unknown conditioner"), (dict(num_samples=0), "at least 1"),
                          (dict(min_text_share=1.5), r"in \[0, 1\]")):
        with pytest.raises(vc.ConditioningError, match=match):
            vc.validate_conditioning(NAME, workspace=ws, **kwargs)


def test_cli(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "conditioning.json"
    code = vc.main(["--dataset", NAME, "--workspace", str(ws), "--conditioner", "genre", "--tokenizer", "whitespace",
                    "--json", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1].endswith("conditioner genre: PASS")
    assert "PASS  conditioner genre  100% of the sampled segments have a genre (>= 50% required)" in lines
    assert json.loads(out.read_text())["fields"]["genre"]["percent"] == 100.0
    for p in _train(ws):
        _edit(p, description=None)
    assert vc.main(["--dataset", NAME, "--workspace", str(ws), "--conditioner", "text"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("conditioner text: FAIL")
    assert vc.main(["--dataset", "nope", "--workspace", str(ws)]) == 1
    assert "validate_conditioning: error: " in capsys.readouterr().err
    for argv in (["--workspace", str(ws)], ["--dataset", NAME, "--min-text-share", "2"],
                 ["--dataset", NAME, "--num-samples", "0"], ["--dataset", NAME, "--conditioner", "lyrics"]):
        with pytest.raises(SystemExit) as exc:
            vc.main(argv)
        assert exc.value.code == 2


def test_module_doctests() -> None:
    result = doctest.testmod(vc, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 8

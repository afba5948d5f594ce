"""FMA and MTG-Jamendo end to end against a loopback HTTP server with Range support:
download (mini subsets by Range, full archives resumable and verified), then prepare."""

import json
import logging
import zipfile

import pytest

from musicpipe import download, manifests
from musicpipe.prepare import PrepareConfig
from musicpipe.sources import fma, mtg_jamendo
from conftest import run_cli
from loopback import LoopbackServer
from public_fixtures import build_fma, build_mtg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_fma(root), build_mtg(root)


@pytest.fixture()
def server(corpus):
    with LoopbackServer(corpus[0]) as srv:
        yield srv


def _members(zip_path, names):
    with zipfile.ZipFile(zip_path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    return sum(infos[n].compress_size for n in names)


def test_fma_mini_fetches_only_the_chosen_members(corpus, server, tmp_path):
    _, facts, _ = corpus
    dest = fma.download_fma("fma_small_mini", tmp_path, mirror=server.url + "fma/", num_tracks=16)
    marker = json.loads((dest / fma.MARKER).read_text())
    chosen = marker["tracks"]
    assert marker["method"] == "range" and len(chosen) == 16
    assert facts["medium_only"] not in chosen
    meta = fma.load_metadata(fma.metadata_dir(tmp_path) / "fma_metadata")
    per_genre = {}
    for t in chosen:
        per_genre[meta[t]["genre_top"]] = per_genre.get(meta[t]["genre_top"], 0) + 1
    assert sorted(per_genre.values()) == [2] * 8  # balanced over the 8 genres
    for t in chosen:
        path = dest / fma.member_name("fma_small", t)
        assert download.file_hash(path) == facts["audio_sha1"][t]
    members = [fma.member_name("fma_small", t) for t in chosen]
    sent = server.bytes_sent["/fma/fma_small.zip"]
    checksums_size = _members(facts["small_zip"], ["fma_small/checksums"])
    assert sent <= 1.2 * (_members(facts["small_zip"], members) + checksums_size) + 64 * 1024
    assert sent < 0.8 * facts["small_zip"].stat().st_size  # 16 of 24 tracks: about 2/3 of the zip
    # metadata: tracks.csv and genres.csv only, never the 2.5 MB of feature tables
    assert server.bytes_sent["/fma/fma_metadata.zip"] < 300_000
    # a second call is a no-op, without a request
    n = len(server.requests)
    assert fma.download_fma("fma_small_mini", tmp_path, mirror=server.url + "fma/", num_tracks=16) == dest
    assert len(server.requests) == n


def test_mini_choice_is_deterministic_and_seeded(corpus, tmp_path, server):
    fma.download_fma_metadata(tmp_path, server.url + "fma/")
    meta = fma.load_metadata(fma.metadata_dir(tmp_path) / "fma_metadata")
    available = corpus[1]["tracks"]
    a = fma.choose_mini_tracks(meta, available, num_tracks=8)
    assert a == fma.choose_mini_tracks(meta, list(reversed(available)), num_tracks=8)
    assert a != fma.choose_mini_tracks(meta, available, num_tracks=8, seed=1)


def test_fma_mini_falls_back_to_the_full_zip_without_range(corpus, server, tmp_path, caplog):
    _, facts, _ = corpus
    server.support_range = False
    with caplog.at_level(logging.WARNING):
        dest = fma.download_fma("fma_small_mini", tmp_path, mirror=server.url + "fma/", num_tracks=8,
                                expected_sha1=facts["small_sha1"], metadata_sha1=facts["meta_sha1"])
    assert "refuses HTTP Range" in caplog.text
    marker = json.loads((dest / fma.MARKER).read_text())
    assert marker["method"] == "full-zip" and len(marker["tracks"]) == 8
    for t in marker["tracks"]:
        assert download.file_hash(dest / fma.member_name("fma_small", t)) == facts["audio_sha1"][t]


def test_fma_full_subset_is_verified_and_a_bad_checksum_keeps_nothing(corpus, server, tmp_path):
    _, facts, _ = corpus
    with pytest.raises(download.ChecksumError):
        fma.download_fma("fma_small", tmp_path, mirror=server.url + "fma/", expected_sha1="0" * 40)
    assert not list(fma.downloads_dir("fma_small", tmp_path).rglob("*.zip*"))
    dest = fma.download_fma("fma_small", tmp_path, mirror=server.url + "fma/", expected_sha1=facts["small_sha1"])
    mp3s = sorted(dest.rglob("*.mp3"))
    assert len(mp3s) == len(facts["tracks"])
    assert not (dest / "fma_small.zip").exists()  # removed after a verified extraction
    assert json.loads((dest / fma.MARKER).read_text())["files"] == len(facts["tracks"])


def test_prepare_fma_mini_writes_segments_sidecars_and_split(corpus, server, tmp_path):
    fma.download_fma("fma_small_mini", tmp_path, mirror=server.url + "fma/", num_tracks=16)
    report = fma.prepare_fma("fma_small_mini", tmp_path, PrepareConfig(num_jobs=1), progress=False)
    egs = tmp_path / "data" / "fma_small_mini" / "egs"
    train, valid = manifests.read_manifest(egs / "train"), manifests.read_manifest(egs / "valid")
    assert train and valid
    sides = {}
    for side, recs in (("train", train), ("valid", valid)):
        for rec in recs:
            assert rec.sample_rate == 32000 and rec.duration == pytest.approx(10.0, abs=0.05)
            info = json.loads(open(rec.path[:-4] + ".json").read())
            assert info["genre"] and info["artist"].startswith("Artist ") and info["description"]
            sides.setdefault(info["artist"], set()).add(side)
    assert all(len(s) == 1 for s in sides.values())  # artist-disjoint
    assert report is not None
    # the committed dset config names this dataset; prepare did not write a workspace copy
    assert not (tmp_path / "config" / "dset" / "audio" / "fma_small_mini.yaml").exists()


def test_mtg_parts_download_verify_and_prepare_with_the_official_split(corpus, server, tmp_path):
    _, _, facts = corpus
    kwargs = dict(variant="audio-low", mirror=server.url + "mtg/", metadata_mirror=server.url + "mtgmeta/")
    audio = mtg_jamendo.download_mtg_jamendo("0-1", tmp_path, **kwargs)
    assert len(list(audio.rglob("*.low.mp3"))) == len(facts["tracks"])
    assert not list(audio.glob("*.tar"))
    n = sum(1 for r in server.requests if r[1].endswith(".tar"))
    mtg_jamendo.download_mtg_jamendo([0, 1], tmp_path, **kwargs)
    assert sum(1 for r in server.requests if r[1].endswith(".tar")) == n  # markers: nothing fetched again

    inputs = {t.track_id: t for t in mtg_jamendo.track_inputs(tmp_path)}
    assert set(inputs) == set(facts["tracks"])
    some = inputs[next(iter(facts["tracks"]))]
    assert some.genre == facts["tracks"][some.track_id]["genre"] and some.title.startswith("Song ")
    report = mtg_jamendo.prepare_mtg_jamendo(tmp_path, PrepareConfig(num_jobs=1, split="official"), progress=False)
    valid = manifests.read_manifest(tmp_path / "data" / "mtg_jamendo" / "egs" / "valid")
    valid_tracks = {json.loads(open(r.path[:-4] + ".json").read())["track_id"] for r in valid}
    assert valid_tracks == {t for t, f in facts["tracks"].items() if f["split"] == "validation"}
    assert report is not None


def test_mtg_checksum_mismatch_is_refused(corpus, server, tmp_path):
    root = corpus[0]
    sums = root / "mtgmeta" / "data" / "download" / "raw_30s_audio-low_sha256_tars.txt"
    original = sums.read_text()
    sums.write_text(original.replace(original[:8], "00000000", 1))
    try:
        with pytest.raises(download.ChecksumError):
            mtg_jamendo.download_mtg_jamendo("0", tmp_path, mirror=server.url + "mtg/",
                                             metadata_mirror=server.url + "mtgmeta/")
    finally:
        sums.write_text(original)
    assert not list((tmp_path / "data" / "mtg_jamendo" / "downloads" / "audio-low").rglob("*.mp3"))


def test_parse_helpers_reject_bad_input():
    assert mtg_jamendo.parse_parts("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(mtg_jamendo.MTGError, match="0..99"):
        mtg_jamendo.parse_parts("98-100")
    with pytest.raises(mtg_jamendo.MTGError, match="reversed"):
        mtg_jamendo.parse_parts("5-2")
    with pytest.raises(download.DownloadError, match="FMA checksums line 1"):
        fma.parse_checksums("nothex  000/000002.mp3")
    with pytest.raises(fma.FMAError, match="unknown FMA subset"):
        fma.download_fma("fma_tiny")


def test_cli_download_then_prepare_fma_mini(corpus, server, tmp_path):
    ws = str(tmp_path / "ws")
    res = run_cli("download", "fma", "--subset", "fma_small_mini", "--mirror", server.url + "fma/",
                  "--num-tracks", "8", "--workspace", ws)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "download: fma_small_mini" in res.stdout.strip().splitlines()[-1]
    res = run_cli("prepare", "fma", "--subset", "fma_small_mini", "--workspace", ws, "--num-jobs", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("prepare: fma_small_mini") and "dset=audio/fma_small_mini" in last


def test_cli_names_the_reason_for_bad_source_arguments(tmp_path):
    res = run_cli("download", "fma", "--subset", "fma_tiny", "--workspace", str(tmp_path))
    assert res.returncode == 2 and "unknown FMA subset 'fma_tiny'" in res.stderr
    res = run_cli("prepare", "fma", "--subset", "fma_small", "--workspace", str(tmp_path))
    assert res.returncode == 2 and "fma_small is not downloaded" in res.stderr
    res = run_cli("download", "mtg_jamendo", "--parts", "5-2", "--workspace", str(tmp_path))
    assert res.returncode == 2 and "reversed" in res.stderr

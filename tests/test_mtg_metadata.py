"""MTG-Jamendo metadata validated before it is kept: a mirror serving HTML over real HTTP (loopback)."""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli
from loopback import LoopbackServer
from musicpipe.sources import mtg_jamendo
from public_fixtures import build_mtg

HTML = b"<!DOCTYPE html>\n<html><head><title>Mirror</title></head><body>Welcome to our mirror!</body></html>\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtgcorpus")
    return root, build_mtg(root, parts=1, tracks_per_part=2, seconds=3.0)


@pytest.fixture()
def html_mirror(corpus, tmp_path):
    """A copy of the corpus whose metadata mirror answers every TSV with an HTML page (status 200)."""
    root = tmp_path / "served"
    shutil.copytree(corpus[0], root)
    for tsv in (root / "mtgmeta").rglob("*.tsv"):
        tsv.write_bytes(HTML)
    with LoopbackServer(root) as srv:
        yield root, srv


def _meta(ws):
    return mtg_jamendo.downloads_dir(ws) / "metadata"


def test_html_page_is_not_cached_and_a_good_mirror_repairs(corpus, html_mirror, tmp_path):
    root, srv = html_mirror
    ws = tmp_path / "ws"
    kwargs = dict(variant="audio-low", mirror=srv.url + "mtg/", metadata_mirror=srv.url + "mtgmeta/")
    with pytest.raises(mtg_jamendo.MTGError) as err:
        mtg_jamendo.download_mtg_jamendo("0", ws, **kwargs)
    tags = _meta(ws) / mtg_jamendo.TAGS_TSV
    assert str(err.value) == (f"{srv.url}mtgmeta/{mtg_jamendo.TAGS_TSV} did not serve MTG-Jamendo's "
                              f"{mtg_jamendo.TAGS_TSV} (an HTML page, not a TSV): deleted {tags}; check "
                              "--metadata-mirror (or $MTG_METADATA_MIRROR)")
    assert not tags.exists() and not tags.with_name(tags.name + ".part").exists()
    assert not list(_meta(ws).rglob("*.tsv"))  # nothing of the HTML kept
    # the same command against a good mirror completes, and the metadata is the real one
    with LoopbackServer(corpus[0]) as good:
        good_kwargs = dict(variant="audio-low", mirror=good.url + "mtg/", metadata_mirror=good.url + "mtgmeta/")
        mtg_jamendo.download_mtg_jamendo("0", ws, **good_kwargs)
    assert tags.read_bytes() == (corpus[0] / "mtgmeta" / mtg_jamendo.TAGS_TSV).read_bytes()
    assert {t.track_id for t in mtg_jamendo.track_inputs(ws)} == set(corpus[1]["tracks"])


def test_kept_html_from_an_older_run_is_replaced_and_suspect_files_named(corpus, tmp_path):
    ws = tmp_path / "ws"
    with LoopbackServer(corpus[0]) as srv:
        kwargs = dict(variant="audio-low", mirror=srv.url + "mtg/", metadata_mirror=srv.url + "mtgmeta/")
        mtg_jamendo.download_mtg_jamendo("0", ws, **kwargs)
        meta_tsv = _meta(ws) / mtg_jamendo.META_TSV
        meta_tsv.write_bytes(HTML)   # what an older musicpipe kept from a bad mirror
        # prepare's input listing refuses it, naming the file and suggesting --force
        with pytest.raises(mtg_jamendo.MTGError) as err:
            mtg_jamendo.track_inputs(ws)
        assert str(err.value) == (f"{meta_tsv}: not MTG-Jamendo's {mtg_jamendo.META_TSV} (an HTML page, not a "
                                  "TSV): download it again with `musicpipe download mtg_jamendo --parts ... --force`")
        srv.reset_counters()
        mtg_jamendo.download_mtg_jamendo("0", ws, **kwargs)  # no --force needed: the invalid copy is replaced
        fetched = [r[1] for r in srv.requests]
    assert any(p.endswith(mtg_jamendo.META_TSV) for p in fetched)
    assert not any(p.endswith(mtg_jamendo.TAGS_TSV) for p in fetched)  # valid copies are kept
    assert meta_tsv.read_bytes() == (corpus[0] / "mtgmeta" / mtg_jamendo.META_TSV).read_bytes()
    assert len(mtg_jamendo.track_inputs(ws)) == len(corpus[1]["tracks"])


def test_wrong_columns_rejected(corpus, tmp_path):
    root = tmp_path / "served"
    shutil.copytree(corpus[0], root)
    split = root / "mtgmeta" / mtg_jamendo.SPLIT_TSV.format(split="split-0", part="train")
    split.write_text("id,artist,path\n1,2,3\n", encoding="utf-8")   # a CSV, not the TSV
    ws = tmp_path / "ws"
    with LoopbackServer(root) as srv:
        res = run_cli("download", "mtg_jamendo", "--parts", "0", "--mirror", srv.url + "mtg/",
                      "--metadata-mirror", srv.url + "mtgmeta/", "--workspace", str(ws), timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    rel = mtg_jamendo.SPLIT_TSV.format(split="split-0", part="train")
    assert f"did not serve MTG-Jamendo's {rel} (its first line is 'id,artist,path', not the header" in res.stderr
    assert not (_meta(ws) / rel).exists()
    assert (_meta(ws) / mtg_jamendo.TAGS_TSV).exists()  # what was good stays

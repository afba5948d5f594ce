"""musicpipe.download against a real HTTP server on 127.0.0.1 (tests/loopback.py): what lands on disk and
what went over the wire."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import stat
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from loopback import LoopbackServer

from musicpipe import download
from musicpipe.download import (ChecksumError, DownloadError, HTTPRangeFile, RangeNotSupported, RemoteZip,
                                file_hash, http_download, safe_extract_tar, safe_extract_zip, supports_range)

FAST = dict(backoff=0.01, progress=False)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def server(www: Path):
    with LoopbackServer(www) as srv:
        yield srv


@pytest.fixture
def big(www: Path) -> bytes:
    data = random_bytes(3_000_000, seed=1)
    (www / "data").mkdir()
    (www / "data" / "big.bin").write_bytes(data)
    return data


BIG = "/data/big.bin"


# -- file_hash / supports_range ---------------------------------------------------------------------------------

def test_file_hash_is_chunked_and_matches_hashlib(tmp_path):
    data = random_bytes(1_000_003, seed=2)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_hash(path) == sha1(data)
    assert file_hash(path, "sha256", chunk_size=4096) == hashlib.sha256(data).hexdigest()


def test_supports_range(www, big):
    with LoopbackServer(www) as server:
        assert supports_range(server.url_for(BIG)) is True
        assert server.requests == [("GET", BIG, "bytes=0-0")]
        server.support_range = False
        assert supports_range(server.url_for(BIG)) is False
        with pytest.raises(DownloadError, match="404"):
            supports_range(server.url_for("missing.bin"))


# -- http_download ------------------------------------------------------------------------------------------

def test_full_download_with_sha1(tmp_path, server, big):
    dest = tmp_path / "out" / "big.bin"
    assert http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST) == dest
    assert dest.read_bytes() == big
    assert not Path(f"{dest}.part").exists()
    assert server.requests == [("GET", BIG, None)]
    assert server.bytes_sent[BIG] == len(big)


def test_resume_after_dropped_connection(tmp_path, server, big):
    server.drop_after[BIG] = 1_000_000
    dest = tmp_path / "big.bin"
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
    assert server.requests == [("GET", BIG, None), ("GET", BIG, "bytes=1000000-")]
    assert dest.read_bytes() == big
    assert server.bytes_sent[BIG] == len(big)  # nothing sent twice
    assert BIG not in server.drop_after


def test_stale_part_is_resumed(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    Path(f"{dest}.part").write_bytes(big[:1_234_567])
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
    assert server.requests == [("GET", BIG, "bytes=1234567-")]
    assert server.bytes_sent[BIG] == len(big) - 1_234_567
    assert dest.read_bytes() == big
    assert not Path(f"{dest}.part").exists()


def test_complete_part_is_finished_on_416(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    Path(f"{dest}.part").write_bytes(big)
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
    assert server.requests == [("GET", BIG, f"bytes={len(big)}-")]
    assert server.bytes_sent.get(BIG, 0) == 0
    assert dest.read_bytes() == big


def test_checksum_mismatch_keeps_nothing(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    wrong = "0" * 40
    with pytest.raises(ChecksumError) as info:
        http_download(server.url_for(BIG), dest, expected_hash=wrong, **FAST)
    message = str(info.value)
    assert str(dest) in message and wrong in message and sha1(big) in message
    assert (info.value.expected, info.value.actual) == (wrong, sha1(big))
    assert not dest.exists() and not Path(f"{dest}.part").exists()
    assert str(pickle.loads(pickle.dumps(info.value))) == message
    ready = ChecksumError(f"{dest}: sha1 is wrong")  # a ready message works too
    assert str(pickle.loads(pickle.dumps(ready))) == str(ready) and ready.path is None


def test_corrupt_stale_part_is_detected(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    Path(f"{dest}.part").write_bytes(b"x" * 1000)  # not the file's first 1000 bytes
    with pytest.raises(ChecksumError):
        http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
    assert not dest.exists() and not Path(f"{dest}.part").exists()
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)  # a second call starts over
    assert dest.read_bytes() == big


def test_404_fails_at_once(tmp_path, server):
    url = server.url_for("nope.bin")
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        http_download(url, tmp_path / "nope.bin", retries=5, backoff=10, progress=False)
    assert time.monotonic() - start < 5  # no backoff sleeps
    assert url in str(info.value) and "404" in str(info.value)
    assert server.requests == [("GET", "/nope.bin", None)]
    assert not (tmp_path / "nope.bin").exists()


def test_5xx_is_retried_then_given_up(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    server.errors[BIG] = [503, 500]
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
    assert [r[1] for r in server.requests] == [BIG] * 3
    assert dest.read_bytes() == big

    server.requests.clear()
    server.errors[BIG] = [503, 503, 503]
    with pytest.raises(DownloadError, match="gave up after 2 retries"):
        http_download(server.url_for(BIG), tmp_path / "again.bin", retries=2, **FAST)
    assert len(server.requests) == 3


def test_retry_waits_with_exponential_backoff(tmp_path, server, big, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    server.errors[BIG] = [502, 502, 502]
    http_download(server.url_for(BIG), tmp_path / "b.bin", backoff=0.5, progress=False)
    assert sleeps == [0.5, 1.0, 2.0]


def test_server_without_range_restarts_from_zero(tmp_path, www, big):
    dest = tmp_path / "big.bin"
    Path(f"{dest}.part").write_bytes(big[:1000])
    with LoopbackServer(www, support_range=False) as server:
        http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST)
        assert server.requests == [("GET", BIG, "bytes=1000-")]  # answered 200: rewritten from zero
        assert server.bytes_sent[BIG] == len(big)
    assert dest.read_bytes() == big


def test_existing_dest_is_skipped_or_replaced(tmp_path, server, big):
    dest = tmp_path / "big.bin"
    dest.write_bytes(big)
    assert http_download(server.url_for(BIG), dest, expected_hash=sha1(big), **FAST) == dest
    assert http_download(server.url_for(BIG), dest, **FAST) == dest  # no hash: kept as is
    assert server.requests == []

    dest.write_bytes(b"stale")
    http_download(server.url_for(BIG), dest, expected_hash=sha1(big).upper(), **FAST)
    assert server.requests == [("GET", BIG, None)]
    assert dest.read_bytes() == big


def test_progress_bar_runs(tmp_path, server, big, capsys):
    http_download(server.url_for(BIG), tmp_path / "b.bin", backoff=0.01, progress=True)
    assert (tmp_path / "b.bin").read_bytes() == big


# -- HTTPRangeFile ------------------------------------------------------------------------------------------

def test_range_file_seek_and_read(server, www):
    data = random_bytes(300_000, seed=3)
    (www / "r.bin").write_bytes(data)
    with HTTPRangeFile(server.url_for("r.bin"), block_size=4096, backoff=0.01) as f:
        assert (f.size, f.tell(), f.seekable(), f.readable(), f.writable()) == (len(data), 0, True, True, False)
        assert f.read(10) == data[:10]
        assert f.bytes_downloaded <= 1 + 4096  # the size probe's byte + one small read-ahead
        assert f.tell() == 10
        assert f.seek(100) == 100 and f.seek(50, io.SEEK_CUR) == 150
        assert f.read(3) == data[150:153]
        assert f.seek(-5, io.SEEK_END) == len(data) - 5
        assert f.read() == data[-5:]
        assert f.read() == b"" and f.read(10) == b""
        f.seek(len(data) + 10)
        assert f.read(5) == b""
        with pytest.raises(ValueError):
            f.seek(-1)
        f.seek(1000)
        buffer = bytearray(7)
        assert f.readinto(buffer) == 7 and bytes(buffer) == data[1000:1007]

        before = f.bytes_downloaded
        f.seek(100_000)
        assert f.read(50_000) == data[100_000:150_000]
        assert f.bytes_downloaded - before == 50_000  # a big read: exactly its bytes, no read-ahead
        assert server.requests[-1] == ("GET", "/r.bin", "bytes=100000-149999")

        f.seek(0)
        assert io.BufferedReader(f).read() == data
    with pytest.raises(ValueError):
        f.read(1)


def test_range_file_retries_a_dropped_connection(server, www):
    data = random_bytes(300_000, seed=4)
    (www / "r.bin").write_bytes(data)
    with HTTPRangeFile(server.url_for("r.bin"), backoff=0.01) as f:
        server.drop_after["/r.bin"] = 1000
        f.seek(200_000)
        assert f.read(80_000) == data[200_000:280_000]
        assert server.requests[-2:] == [("GET", "/r.bin", "bytes=200000-279999"),
                                        ("GET", "/r.bin", "bytes=201000-279999")]
        assert f.bytes_downloaded == 1 + 80_000


def test_range_file_keeps_one_connection_alive(server, www):
    data = random_bytes(200_000, seed=6)
    (www / "r.bin").write_bytes(data)
    with HTTPRangeFile(server.url_for("r.bin"), block_size=1024, backoff=0.01) as f:
        for start in range(0, 200_000, 10_000):
            f.seek(start)
            assert f.read(5000) == data[start:start + 5000]
        assert f.request_count == len(server.requests) == 21
    assert server.connections == 1


def test_redirects_are_followed(tmp_path, server, www, big):
    server.redirects["/latest.bin"] = "/data/big.bin"
    dest = http_download(server.url_for("latest.bin"), tmp_path / "big.bin", expected_hash=sha1(big), **FAST)
    assert dest.read_bytes() == big
    with HTTPRangeFile(server.url_for("latest.bin")) as f:
        f.seek(123_456)
        assert f.read(100) == big[123_456:123_556]
    assert [path for _, path, _ in server.requests] == ["/latest.bin", BIG, "/latest.bin", BIG, "/latest.bin", BIG]


def test_range_file_needs_range_support(www, server):
    (www / "r.bin").write_bytes(b"abc")
    server.support_range = False
    with pytest.raises(RangeNotSupported, match="r.bin"):
        HTTPRangeFile(server.url_for("r.bin"))
    with pytest.raises(DownloadError, match="404"):
        HTTPRangeFile(server.url_for("missing.bin"))


# -- RemoteZip ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fma_zip(tmp_path_factory) -> dict:
    """A ~4 MB zip laid out like FMA's: 20 tracks (bzip2, deflate, stored), a checksums file, a README."""
    root = tmp_path_factory.mktemp("zipwww")
    (root / "fma").mkdir()
    path = root / "fma" / "fma_small.zip"
    tracks = {}
    methods = [zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]
    rng = random.Random(5)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(20):
            n = rng.randint(150_000, 400_000)
            # Half noise, half a repeated pattern: compressed sizes differ from file sizes.
            data = rng.randbytes(n // 2) + bytes(rng.randbytes(64)) * (n // 2 // 64)
            name = f"fma_small/{i // 10:03d}/{i:06d}.mp3"
            zf.writestr(name, data, compress_type=methods[i % 3])
            tracks[name] = data
        zf.writestr("fma_small/checksums", "".join(f"{sha1(d)}  {n}\n" for n, d in tracks.items()),
                    compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("fma_small/README.txt", "FMA small\n")
    with zipfile.ZipFile(path) as zf:
        central = path.stat().st_size - zf.start_dir  # central directory + end records
        infos = {i.filename: i for i in zf.infolist()}
    return dict(root=root, path=path, tracks=tracks, central=central, infos=infos, url_path="/fma/fma_small.zip")


@pytest.fixture
def zip_server(fma_zip):
    with LoopbackServer(fma_zip["root"]) as srv:
        yield srv


def test_remote_zip_fetches_members_for_their_compressed_size(tmp_path, fma_zip, zip_server):
    path = fma_zip["url_path"]
    assert fma_zip["path"].stat().st_size > 3_000_000
    with RemoteZip(zip_server.url_for(path), backoff=0.01) as rz:
        with zipfile.ZipFile(fma_zip["path"]) as local:
            assert rz.namelist() == local.namelist()
        assert [i.compress_size for i in rz.infolist()] == [i.compress_size for i in fma_zip["infos"].values()]
        index_bytes = zip_server.bytes_sent[path]
        assert index_bytes == rz.bytes_downloaded <= fma_zip["central"] + 128  # end records read twice

        sums = dict(line.split()[::-1] for line in rz.read("fma_small/checksums").decode().splitlines())
        assert len(sums) == 20

        wanted = ["fma_small/000/000003.mp3", "fma_small/001/000013.mp3"]  # bzip2 and deflate
        assert {fma_zip["infos"][n].compress_type for n in wanted} == {zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED}
        before = zip_server.bytes_sent[path]
        for name in wanted:
            dest = rz.fetch(name, tmp_path / name, expected_sha1=sums[name])
            assert dest.read_bytes() == fma_zip["tracks"][name]
        fetched = zip_server.bytes_sent[path] - before
        assert rz.bytes_downloaded == zip_server.bytes_sent[path]

    compressed = sum(fma_zip["infos"][n].compress_size for n in wanted)
    assert compressed > 200_000
    assert zip_server.bytes_sent[path] <= 1.2 * compressed + fma_zip["central"] + 64 * 1024
    # Tighter: local headers are the only overhead (no read-ahead past a member's end).
    assert compressed <= fetched <= compressed + len(wanted) * 200


def test_remote_zip_stored_member_and_skip(tmp_path, fma_zip, zip_server):
    name = "fma_small/000/000002.mp3"
    assert fma_zip["infos"][name].compress_type == zipfile.ZIP_STORED
    data = fma_zip["tracks"][name]
    dest = tmp_path / "a" / "000002.mp3"
    with RemoteZip(zip_server.url_for(fma_zip["url_path"]), backoff=0.01) as rz:
        assert rz.fetch(name, dest, expected_sha1=sha1(data)) == dest
        assert dest.read_bytes() == data
        requests = len(zip_server.requests)
        rz.fetch(name, dest, expected_sha1=sha1(data))  # matching: skipped
        rz.fetch(name, dest)                            # no hash, same size: skipped
        assert len(zip_server.requests) == requests
        assert rz.read("fma_small/README.txt") == b"FMA small\n"


def test_remote_zip_checksum_mismatch_leaves_nothing(tmp_path, fma_zip, zip_server):
    name = "fma_small/000/000001.mp3"
    dest = tmp_path / "out" / "000001.mp3"
    with RemoteZip(zip_server.url_for(fma_zip["url_path"]), backoff=0.01) as rz:
        with pytest.raises(ChecksumError) as info:
            rz.fetch(name, dest, expected_sha1="f" * 40)
    assert name in str(info.value) and "f" * 40 in str(info.value)
    assert info.value.actual == sha1(fma_zip["tracks"][name])
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temp file left beside it


def test_remote_zip_survives_a_dropped_connection(tmp_path, fma_zip, zip_server):
    name = "fma_small/001/000010.mp3"
    path = fma_zip["url_path"]
    with RemoteZip(zip_server.url_for(path), backoff=0.01) as rz:
        zip_server.drop_after[path] = 5000
        n = len(zip_server.requests)
        rz.fetch(name, tmp_path / "t.mp3")
        assert path not in zip_server.drop_after  # it fired
        assert len(zip_server.requests) > n + 1
    assert (tmp_path / "t.mp3").read_bytes() == fma_zip["tracks"][name]


def test_remote_zip_bad_crc_is_a_download_error(tmp_path, fma_zip):
    name = "fma_small/000/000005.mp3"  # stored: flipping a byte corrupts the content, not the stream
    info = fma_zip["infos"][name]
    assert info.compress_type == zipfile.ZIP_STORED
    www = tmp_path / "www"
    www.mkdir()
    raw = bytearray(fma_zip["path"].read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + 1000] ^= 0xFF
    (www / "bad.zip").write_bytes(raw)
    dest = tmp_path / "out" / "t.mp3"
    with LoopbackServer(www) as server, RemoteZip(server.url_for("bad.zip"), backoff=0.01) as rz:
        with pytest.raises(DownloadError, match="CRC") as err:
            rz.fetch(name, dest)
    assert name in str(err.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_remote_zip_needs_range_support(fma_zip):
    with LoopbackServer(fma_zip["root"], support_range=False) as server:
        with pytest.raises(RangeNotSupported):
            RemoteZip(server.url_for(fma_zip["url_path"]))


# -- safe extraction ------------------------------------------------------------------------------------------

def _zip(path: Path, members: list) -> Path:
    """members: (name, bytes) or (name, link target, "symlink")."""
    with zipfile.ZipFile(path, "w") as zf:
        for member in members:
            if len(member) == 3:
                info = zipfile.ZipInfo(member[0])
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, member[1])
            else:
                zf.writestr(member[0], member[1], compress_type=zipfile.ZIP_DEFLATED)
    return path


def _tar(path: Path, members: list) -> Path:
    """members: (name, bytes) or (name, linkname, tarfile type)."""
    with tarfile.open(path, "w:gz") as tf:
        for member in members:
            info = tarfile.TarInfo(member[0])
            if len(member) == 3:
                info.type, info.linkname = member[2], member[1]
                tf.addfile(info)
            else:
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def _outside_is_untouched(box: Path, dest: Path) -> None:
    """``box`` holds only ``dest`` (and the archive), and ``dest`` is empty."""
    assert sorted(p.name for p in box.iterdir() if p.suffix not in (".zip", ".gz")) == [dest.name]
    assert list(dest.rglob("*")) == []


def test_safe_extract_zip_writes_members(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("top.txt", b"top"), ("a/b/c.txt", b"c"), ("a/empty/", b""),
                                        ("a/link", "b/c.txt", "symlink")])
    dest = tmp_path / "dest"
    written = safe_extract_zip(archive, dest)
    assert written == [dest / "top.txt", dest / "a" / "b" / "c.txt", dest / "a" / "link"]
    assert (dest / "a" / "b" / "c.txt").read_bytes() == b"c"
    assert (dest / "a" / "empty").is_dir()
    assert os.readlink(dest / "a" / "link") == "b/c.txt" and (dest / "a" / "link").read_bytes() == b"c"
    assert not [p for p in dest.rglob(".*.tmp")]

    only = safe_extract_zip(archive, tmp_path / "only", members=["a/b/c.txt"])
    assert only == [tmp_path / "only" / "a" / "b" / "c.txt"]
    assert [p.name for p in (tmp_path / "only").rglob("*") if p.is_file()] == ["c.txt"]


@pytest.mark.parametrize("bad", [
    ("../evil.txt", b"x"),
    ("a/../../evil.txt", b"x"),
    ("/tmp/musicpipe-evil.txt", b"x"),
    ("link", "../outside", "symlink"),
    ("link", "/etc", "symlink"),
    ("a/link", "../../outside", "symlink"),
])
def test_safe_extract_zip_refuses_escapes(tmp_path, bad):
    box = tmp_path / "box"
    box.mkdir()
    archive = _zip(box / "evil.zip", [("good.txt", b"good"), bad])
    dest = box / "dest"
    with pytest.raises(DownloadError) as info:
        safe_extract_zip(archive, dest)
    assert repr(bad[0]) in str(info.value) and str(archive) in str(info.value)
    _outside_is_untouched(box, dest)  # checked before anything is written
    assert not Path("/tmp/musicpipe-evil.txt").exists()


def test_safe_extract_tar_writes_members(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("d/f.txt", b"f"), ("d/sub/g.txt", b"g"), ("d/sub/link", "../f.txt",
                                                                                         tarfile.SYMTYPE),
                                           ("d/hard", "d/f.txt", tarfile.LNKTYPE)])
    dest = tmp_path / "dest"
    written = safe_extract_tar(archive, dest)
    assert written == [dest / "d" / "f.txt", dest / "d" / "sub" / "g.txt", dest / "d" / "sub" / "link",
                       dest / "d" / "hard"]
    assert (dest / "d" / "sub" / "g.txt").read_bytes() == b"g"
    assert (dest / "d" / "sub" / "link").is_symlink() and (dest / "d" / "sub" / "link").read_bytes() == b"f"
    assert (dest / "d" / "hard").read_bytes() == b"f"


@pytest.mark.parametrize("bad", [
    ("../evil.txt", b"x"),
    ("/tmp/musicpipe-evil.txt", b"x"),
    ("link", "../outside", tarfile.SYMTYPE),
    ("link", "/etc", tarfile.SYMTYPE),
    ("hard", "../outside.txt", tarfile.LNKTYPE),
    ("dev", "", tarfile.CHRTYPE),
])
def test_safe_extract_tar_refuses_escapes(tmp_path, bad):
    box = tmp_path / "box"
    box.mkdir()
    archive = _tar(box / "evil.tar.gz", [("good.txt", b"good"), bad])
    dest = box / "dest"
    with pytest.raises(DownloadError) as info:
        safe_extract_tar(archive, dest)
    assert repr(bad[0]) in str(info.value)
    _outside_is_untouched(box, dest)
    assert not Path("/tmp/musicpipe-evil.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_safe_extract_refuses_links_escaping_through_other_links(tmp_path, kind):
    box = tmp_path / "box"
    box.mkdir()
    dest = box / "dest"
    # Each link alone stays inside dest; "up/x" climbs out through "up" -> ".".
    if kind == "zip":
        archive = _zip(box / "evil.zip", [("up", ".", "symlink"), ("up/x", "../outside", "symlink")])
        extract = safe_extract_zip
    else:
        archive = _tar(box / "evil.tar.gz", [("up", ".", tarfile.SYMTYPE), ("up/x", "../outside", tarfile.SYMTYPE)])
        extract = safe_extract_tar
    with pytest.raises(DownloadError, match="up/x"):
        extract(archive, dest)
    assert sorted(p.name for p in box.iterdir()) == sorted([archive.name, "dest"])
    assert [p.name for p in dest.iterdir()] in ([], ["up"])  # "up" itself is harmless
    assert not any(os.path.islink(p) and not os.path.realpath(p).startswith(str(dest.resolve()))
                   for p in dest.rglob("*"))


def test_safe_extract_refuses_dotdot_inside_a_link_target(tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    dest = box / "dest"
    # "up" -> "." then "esc" -> "up/..": lexically inside, really dest's parent. Refused before writing.
    archive = _tar(box / "evil.tar.gz", [("up", ".", tarfile.SYMTYPE), ("esc", "up/..", tarfile.SYMTYPE),
                                         ("esc/evil.txt", b"x")])
    with pytest.raises(DownloadError, match="esc"):
        safe_extract_tar(archive, dest)
    _outside_is_untouched(box, dest)

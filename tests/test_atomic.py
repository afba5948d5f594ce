"""musicpipe.atomic: content, permissions, no temp file left and the old file intact after a failure."""

from __future__ import annotations

import json
import os
import stat
import typing as tp
from pathlib import Path

import pytest

from musicpipe import atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027() -> tp.Iterator[int]:
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_writes_content_creates_folders_and_leaves_only_the_target(tmp_path: Path) -> None:
    text = atomic.write_text(tmp_path / "a" / "b" / "t.txt", "héllo\nwörld\n")
    data = atomic.write_bytes(tmp_path / "d.bin", b"\x00\xff")
    js = atomic.write_json(tmp_path / "j.json", {"b": [1, 2], "a": "é"}, indent=1, ensure_ascii=False, sort_keys=True)
    assert text.read_bytes() == "héllo\nwörld\n".encode("utf-8")
    assert data.read_bytes() == b"\x00\xff"
    assert js.read_text(encoding="utf-8") == '{\n "a": "é",\n "b": [\n  1,\n  2\n ]\n}\n'
    assert json.loads(js.read_text(encoding="utf-8")) == {"a": "é", "b": [1, 2]}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a", "a/b", "a/b/t.txt", "d.bin", "j.json"]


def test_permissions_follow_the_umask_like_open(tmp_path: Path, umask_027: int) -> None:
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    for path in (atomic.write_text(tmp_path / "t.txt", "x"), atomic.write_bytes(tmp_path / "b.bin", b"x")):
        assert _mode(path) == 0o640 == _mode(tmp_path / "plain.txt")
    with atomic.atomic_path(tmp_path / "p.bin") as tmp:
        tmp.write_bytes(b"by name")
    assert _mode(tmp_path / "p.bin") == 0o640


def test_explicit_permissions(tmp_path: Path, umask_027: int) -> None:
    assert _mode(atomic.write_text(tmp_path / "r.html", "<p>", permissions=0o644)) == 0o644
    with atomic.atomic_open(tmp_path / "r.png", "wb", permissions=0o644) as f:
        f.write(b"png")
    assert _mode(tmp_path / "r.png") == 0o644
    with atomic.atomic_path(tmp_path / "r.th", permissions=0o600) as tmp:
        tmp.unlink()  # a writer that replaces the file instead of writing into it
        tmp.write_bytes(b"weights")
    assert _mode(tmp_path / "r.th") == 0o600 and (tmp_path / "r.th").read_bytes() == b"weights"


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic.write_json(target, {"v": 1})
    atomic.write_json(target, {"v": 2})
    assert target.read_text() == '{"v": 2}\n' and [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("how", ["atomic_open", "atomic_path"])
def test_failure_inside_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, how: str) -> None:
    target = tmp_path / "data.txt"
    target.write_text("old content")
    with pytest.raises(RuntimeError, match="writer died"):
        if how == "atomic_open":
            with atomic.atomic_open(target, "w") as f:
                f.write("half of the new")
                raise RuntimeError("writer died")
        else:
            with atomic.atomic_path(target) as tmp:
                tmp.write_text("half of the new")
                raise RuntimeError("writer died")
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]


def test_failure_on_a_new_target_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "new.json", {"x": object()})  # not JSON: fails before any file exists
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_open(tmp_path / "new.bin", "wb") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_temp_file_is_a_hidden_tmp_beside_the_target(tmp_path: Path) -> None:
    with atomic.atomic_open(tmp_path / "page.html", "w") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write("x")
    assert len(seen) == 1 and seen[0].startswith(".page.html.") and seen[0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_atomic_open_refuses_read_and_append_modes(tmp_path: Path) -> None:
    for mode in ("r", "a", "r+b"):
        with pytest.raises(ValueError, match="mode must be"):
            with atomic.atomic_open(tmp_path / "x", mode):
                pass
    assert list(tmp_path.iterdir()) == []


def test_symlink_creates_and_repoints(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "f.txt").write_text("two")
    link = atomic.symlink(tmp_path / "current", tmp_path / "v1", target_is_directory=True)
    atomic.symlink(link, "v2", target_is_directory=True)  # relative: from the link's folder
    assert os.readlink(link) == "v2" and (link / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1", "v2"]


def test_symlink_does_not_replace_a_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("kept")
    with pytest.raises(OSError):
        atomic.symlink(tmp_path / "real", "elsewhere")
    assert (tmp_path / "real" / "keep.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real"]

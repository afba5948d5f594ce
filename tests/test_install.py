"""make setup's pure parts: the torch build choice, nvidia-smi parsing, safe extraction."""

import io
import tarfile

import pytest

from musicpipe import install

SMI_124 = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_parse_driver_cuda_reads_the_header():
    assert install.parse_driver_cuda(SMI_124) == (12, 4)
    assert install.parse_driver_cuda("| NVIDIA-SMI 580.65  Driver Version: 580.65  CUDA Version: 13.0 |") == (13, 0)
    assert install.parse_driver_cuda("NVIDIA-SMI has failed because it couldn't communicate") is None


@pytest.mark.parametrize("cuda, tag", [
    (None, "pypi"), ((13, 0), "pypi"), ((13, 1), "pypi"),
    ((12, 9), "cu128"), ((12, 8), "cu128"), ((12, 7), "cu126"), ((12, 6), "cu126"),
    ((12, 4), "cu126"), ((12, 0), "cu126"),
])
def test_choose_torch_build(cuda, tag):
    choice = install.choose_torch_build(cuda)
    assert choice.tag == tag
    if tag == "pypi":
        assert choice.index_url is None
    else:
        assert choice.index_url == f"https://download.pytorch.org/whl/{tag}"
    assert choice.reason


def test_old_driver_is_refused_with_the_reason():
    with pytest.raises(install.SetupError, match="CUDA 11.8.*driver >= 525"):
        install.choose_torch_build((11, 8))


def test_override_wins_and_is_validated():
    assert install.choose_torch_build((12, 4), override="cu128").tag == "cu128"
    assert install.choose_torch_build(None, override="pypi").index_url is None
    assert install.choose_torch_build(None, override="cpu").index_url.endswith("/whl/cpu")
    with pytest.raises(install.SetupError, match="not one of"):
        install.choose_torch_build(None, override="rocm; rm -rf /")


def _tar_with(tmp_path, name, data=b"x"):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_safe_extract_refuses_path_traversal(tmp_path):
    archive = _tar_with(tmp_path, "../evil.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(install.SetupError, match="outside"):
        install._safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_extracts_normal_members(tmp_path):
    archive = _tar_with(tmp_path, "pkg-1.0/setup.py", b"print('hi')")
    dest = tmp_path / "dest"
    dest.mkdir()
    install._safe_extract(archive, dest)
    assert (dest / "pkg-1.0" / "setup.py").read_bytes() == b"print('hi')"


def test_print_torch_choice_cli(capsys, monkeypatch):
    monkeypatch.setenv("MUSICPIPE_TORCH_BUILD", "cu126")
    assert install.main(["--print-torch-choice"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cu126\thttps://download.pytorch.org/whl/cu126\t")

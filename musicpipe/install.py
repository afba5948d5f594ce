"""``make setup``: one idempotent command that installs everything the project needs.

Standard library only: it runs under the system ``python3`` before the virtual environment exists.

Steps (each skipped when already done):

1. ffmpeg: found on PATH, else installed with ``apt-get`` when we are root, else a clear stop.
2. ``.venv`` created with the running Python (3.11 required).
3. torch/torchaudio 2.11.0 in the build the machine's NVIDIA driver can run (:func:`choose_torch_build`).
4. The project itself, editable, with its pinned dependencies (``pyproject.toml``).
5. AudioCraft 1.3.0 from its PyPI sdist, unpacked into ``third_party/`` and installed editable
   with ``--no-deps`` (the wheel lacks AudioCraft's Hydra configs; see shared/docs/AUDIOCRAFT.md).

Example:
    $ python3 -m musicpipe.install          # what `make setup` runs
    $ python3 -m musicpipe.install --print-torch-choice
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import typing as tp
from pathlib import Path

from musicpipe import atomic
from musicpipe.paths import REPO_ROOT, THIRD_PARTY_DIR

TORCH_VERSION = "2.11.0"
TORCHAUDIO_VERSION = "2.11.0"
AUDIOCRAFT_VERSION = "1.3.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
# CUDA builds PyTorch publishes for the pinned release (PyTorch's release matrix), newest first.
# PyPI's default Linux wheel of torch 2.11.0 is the CUDA 13.0 build.
PYPI_DEFAULT_CUDA = (13, 0)
INDEX_BUILDS: tp.Tuple[tp.Tuple[int, int], ...] = ((12, 8), (12, 6))
# CUDA 12.x builds run on any 12.x driver (>= 525) through NVIDIA's minor-version compatibility.
OLDEST_SUPPORTED_DRIVER_CUDA = (12, 0)
VENV = REPO_ROOT / ".venv"
STAMP = VENV / ".musicpipe-setup.json"
AUDIOCRAFT_SRC = THIRD_PARTY_DIR / f"audiocraft-{AUDIOCRAFT_VERSION}"


class SetupError(RuntimeError):
    """A step of setup cannot proceed; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TorchChoice:
    """Which torch build to install and why.

    Attributes:
        tag: ``"pypi"`` (PyPI's default build, CUDA 13.0, also runs on CPU) or a PyTorch index tag
            such as ``"cu126"``.
        index_url: the ``--index-url`` to pass to pip, or None for PyPI.
        reason: one sentence for the log.
    """

    tag: str
    index_url: tp.Optional[str]
    reason: str


def parse_driver_cuda(nvidia_smi_output: str) -> tp.Optional[tp.Tuple[int, int]]:
    """The CUDA version the driver supports, from ``nvidia-smi``'s header.

    >>> parse_driver_cuda("| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |")
    (12, 4)
    >>> parse_driver_cuda("command not found") is None
    True
    """
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", nvidia_smi_output)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def choose_torch_build(driver_cuda: tp.Optional[tp.Tuple[int, int]],
                       override: tp.Optional[str] = None) -> TorchChoice:
    """Pick the torch 2.11.0 build for a machine whose driver supports ``driver_cuda``.

    A pure function: ``driver_cuda`` is what :func:`parse_driver_cuda` read (None: no NVIDIA driver).
    ``override`` (``$MUSICPIPE_TORCH_BUILD``: ``pypi``, ``cpu``, ``cu126``, ``cu128``, ``cu130``) wins.

    >>> choose_torch_build(None).tag
    'pypi'
    >>> choose_torch_build((12, 4)).tag
    'cu126'
    >>> choose_torch_build((13, 0)).tag
    'pypi'
    """
    if override:
        tag = override.strip().lower()
        if tag == "pypi":
            return TorchChoice("pypi", None, "MUSICPIPE_TORCH_BUILD=pypi: PyPI's default build")
        if not re.fullmatch(r"cpu|cu\d{3}", tag):
            raise SetupError(f"MUSICPIPE_TORCH_BUILD={override!r} is not one of pypi, cpu, cu126, cu128, cu130")
        return TorchChoice(tag, PYTORCH_INDEX.format(tag=tag), f"MUSICPIPE_TORCH_BUILD={tag}")
    if driver_cuda is None:
        return TorchChoice("pypi", None,
                           "no NVIDIA driver found: PyPI's default build (CUDA 13.0), which also runs on CPU")
    shown = f"{driver_cuda[0]}.{driver_cuda[1]}"
    if driver_cuda >= PYPI_DEFAULT_CUDA:
        return TorchChoice("pypi", None, f"driver supports CUDA {shown} >= 13.0: PyPI's default build (CUDA 13.0)")
    if driver_cuda < OLDEST_SUPPORTED_DRIVER_CUDA:
        raise SetupError(
            f"the NVIDIA driver supports CUDA {shown} only; torch {TORCH_VERSION} needs a driver for CUDA 12.0 "
            "or newer (driver >= 525). Use a pod image with a newer driver.")
    for build in INDEX_BUILDS:
        if driver_cuda >= build:
            tag = f"cu{build[0]}{build[1]}"
            return TorchChoice(tag, PYTORCH_INDEX.format(tag=tag),
                               f"driver supports CUDA {shown} < 13.0: PyTorch's {tag} build")
    oldest = INDEX_BUILDS[-1]
    tag = f"cu{oldest[0]}{oldest[1]}"
    return TorchChoice(tag, PYTORCH_INDEX.format(tag=tag),
                       f"driver supports CUDA {shown}: PyTorch's {tag} build, which runs on any CUDA 12 driver "
                       "through NVIDIA's minor-version compatibility")


def detect_driver_cuda() -> tp.Optional[tp.Tuple[int, int]]:
    """Run ``nvidia-smi`` when it exists; None when there is no driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_driver_cuda(out)


def log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def run(cmd: tp.Sequence[str], **kwargs: tp.Any) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


# command -> (Debian package, why, required). Required tools stop setup when missing; others warn.
SYSTEM_TOOLS = {
    "ffmpeg": ("ffmpeg", "AudioCraft writes audio through it", True),
    "ssh": ("openssh-client", "runpod_ssh_sync.py's config is checked with `ssh -G` in the tests", False),
    "shellcheck": ("shellcheck", "the tests lint scripts/*.sh with it", False),
    "chromium": ("chromium", "the tests render HTML pages in headless Chromium", False),
    "chromedriver": ("chromium-driver", "the tests drive headless Chromium through it (selenium)", False),
}


def ensure_tool(command: str, allow_apt: bool = True) -> tp.Optional[str]:
    """``command`` on PATH, installing its Debian package when missing and we are root."""
    package, why, required = SYSTEM_TOOLS[command]
    exe = shutil.which(command)
    if exe:
        return exe
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if allow_apt and is_root and shutil.which("apt-get"):
        log(f"{command} not found: installing Debian's {package} package")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env)
        exe = shutil.which(command)
        if exe:
            return exe
    message = (f"{command} is {'required' if required else 'recommended'} ({why}) and was not found on PATH. "
               f"Install it, e.g. `sudo apt-get install -y {package}` (Debian/Ubuntu), then run `make setup` again.")
    if required:
        raise SetupError(message)
    log("warning: " + message)
    return None


def ensure_ffmpeg(allow_apt: bool = True) -> str:
    """ffmpeg on PATH, installing Debian's package when missing and we are root."""
    exe = ensure_tool("ffmpeg", allow_apt)
    assert exe is not None
    return exe


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    if sys.version_info[:2] != (3, 11):
        raise SetupError(f"Python 3.11 is required, this is {sys.version.split()[0]} ({sys.executable}). "
                         "Run `make setup PY=python3.11`.")
    if not venv_python().exists():
        log(f"creating {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)])
    return venv_python()


def installed_torch(python: Path) -> tp.Optional[str]:
    """``torch.__version__`` in the venv (e.g. ``2.11.0+cu130``), without importing torch."""
    code = "import importlib.metadata as m; print(m.version('torch'))"
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_torch(python: Path, choice: TorchChoice) -> None:
    """Install torch/torchaudio in the chosen build unless that build is already there."""
    current = installed_torch(python)
    local = current.partition("+")[2] if current else None
    if current is not None and current.partition("+")[0] == TORCH_VERSION:
        if choice.index_url is None and local in ("", "cu130"):
            return
        if choice.index_url is not None and local == choice.tag:
            return
    force = ["--force-reinstall"] if current else []
    if choice.index_url is None:
        run([python, "-m", "pip", "install", "-q", *force, f"torch=={TORCH_VERSION}",
             f"torchaudio=={TORCHAUDIO_VERSION}"])
        return
    run([python, "-m", "pip", "install", "-q", *force, "--index-url", choice.index_url,
         "--extra-index-url", "https://pypi.org/simple",
         f"torch=={TORCH_VERSION}+{choice.tag}", f"torchaudio=={TORCHAUDIO_VERSION}+{choice.tag}"])


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar.gz refusing members that would land outside ``dest``."""
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if dest not in target.parents and target != dest:
                raise SetupError(f"{archive}: member {member.name!r} would be extracted outside {dest}")
            if member.issym() or member.islnk():
                raise SetupError(f"{archive}: member {member.name!r} is a link; refusing")
        tar.extractall(dest, filter="data")


def ensure_audiocraft_source(python: Path) -> Path:
    """Unpack AudioCraft's sdist into ``third_party/`` (once)."""
    marker = AUDIOCRAFT_SRC / ".musicpipe-unpacked"
    if marker.exists():
        return AUDIOCRAFT_SRC
    THIRD_PARTY_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=THIRD_PARTY_DIR, prefix=".download-") as tmp:
        run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"audiocraft=={AUDIOCRAFT_VERSION}", "-d", tmp])
        archives = sorted(Path(tmp).glob(f"audiocraft-{AUDIOCRAFT_VERSION}.tar.gz"))
        if not archives:
            raise SetupError(f"pip download of audiocraft=={AUDIOCRAFT_VERSION} produced no sdist in {tmp}")
        unpack = Path(tmp) / "unpacked"
        unpack.mkdir()
        _safe_extract(archives[0], unpack)
        src = unpack / f"audiocraft-{AUDIOCRAFT_VERSION}"
        if not (src / "config" / "config.yaml").exists():
            raise SetupError(f"{archives[0]} has no config/config.yaml: not the AudioCraft sdist we expect")
        if AUDIOCRAFT_SRC.exists():
            shutil.rmtree(AUDIOCRAFT_SRC)
        src.rename(AUDIOCRAFT_SRC)
    marker.write_text(f"audiocraft {AUDIOCRAFT_VERSION} from PyPI sdist\n")
    return AUDIOCRAFT_SRC


def _fingerprint(choice: TorchChoice) -> str:
    digest = hashlib.sha256()
    for path in (REPO_ROOT / "pyproject.toml", Path(__file__)):
        digest.update(path.read_bytes())
    digest.update(choice.tag.encode())
    return digest.hexdigest()


def _smoke_test(python: Path) -> bool:
    code = ("import audiocraft, audiocraft.solvers, musicpipe, dora, torch, torchaudio; "
            "from pathlib import Path; "
            "assert (Path(audiocraft.__file__).parent.parent / 'config' / 'config.yaml').exists()")
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        log("import check failed:\n" + res.stderr[-2000:])
    return res.returncode == 0


def setup(force: bool = False, allow_apt: bool = True) -> TorchChoice:
    """Run every step; returns the torch choice. Raises :class:`SetupError` with a reason."""
    ffmpeg = ensure_ffmpeg(allow_apt=allow_apt)
    for tool in (t for t in SYSTEM_TOOLS if t != "ffmpeg"):
        ensure_tool(tool, allow_apt=allow_apt)
    log(f"ffmpeg: {ffmpeg}")
    choice = choose_torch_build(detect_driver_cuda(), os.environ.get("MUSICPIPE_TORCH_BUILD"))
    log(f"torch {TORCH_VERSION}: {choice.tag} ({choice.reason})")
    python = ensure_venv()
    fingerprint = _fingerprint(choice)
    if not force and STAMP.exists() and AUDIOCRAFT_SRC.exists():
        try:
            done = json.loads(STAMP.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            done = False
        if done and _smoke_test(python):
            log("everything already installed (delete .venv or run `make setup FORCE=1` to redo)")
            return choice
    run([python, "-m", "pip", "install", "-q", "--upgrade", "pip==25.3"])
    ensure_torch(python, choice)
    run([python, "-m", "pip", "install", "-q", "--config-settings", "editable_mode=compat", "-e",
         f"{REPO_ROOT}[dev]"])
    src = ensure_audiocraft_source(python)
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--config-settings", "editable_mode=compat",
         "-e", str(src)])
    if not _smoke_test(python):
        raise SetupError("the environment was installed but `import audiocraft.solvers` fails (see above)")
    atomic.write_text(STAMP, json.dumps({"fingerprint": fingerprint, "torch": choice.tag}, indent=2))
    return choice


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--no-apt", action="store_true", help="never call apt-get")
    parser.add_argument("--print-torch-choice", action="store_true",
                        help="print the torch build this machine gets, install nothing")
    args = parser.parse_args(argv)
    try:
        if args.print_torch_choice:
            choice = choose_torch_build(detect_driver_cuda(), os.environ.get("MUSICPIPE_TORCH_BUILD"))
            print(f"{choice.tag}\t{choice.index_url or 'PyPI'}\t{choice.reason}")
            return 0
        choice = setup(force=args.force, allow_apt=not args.no_apt)
    except SetupError as exc:
        print(f"[setup] FAILED: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"[setup] FAILED: command exited with {exc.returncode}: {' '.join(map(str, exc.cmd))}",
              file=sys.stderr)
        return 1
    log(f"done: .venv ready (torch {TORCH_VERSION} {choice.tag}, audiocraft {AUDIOCRAFT_VERSION}, ffmpeg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Released models to fine-tune from or train on: a Hugging Face id (``facebook/musicgen-small``) or a folder.

A release is AudioCraft's export layout: ``state_dict.bin`` (the LM: ``best_state`` plus the ``xp.cfg`` it was
trained with) and ``compression_state_dict.bin`` (its codec, or a ``pretrained`` pointer such as
``facebook/encodec_32khz``). ``musicpipe export`` writes exactly this, so a model trained here, exported and
copied to another pod is a release there. AudioCraft loads releases itself (``//pretrained/<id or folder>``
for ``continue_from`` and ``compression_model_checkpoint``, through ``audiocraft.models.loaders``); this module
reads what musicpipe must know before launching: the LM's stored architecture and conditioners, and the
codec's token layout, so a mismatch is refused in seconds instead of failing inside training.

On a pod the hub answers; offline (here) a hub id fails within seconds, never a hang: the local Hugging Face
cache is tried first, then one HEAD request with a short timeout (as for T5, :func:`musicpipe.training.check_t5`).

Example:
    >>> is_hub_id("facebook/musicgen-small"), is_hub_id("/data/my export"), is_hub_id("musicgen-small")
    (True, False, False)
    >>> KNOWN_CODECS["facebook/encodec_32khz"].frame_rate
    50.0
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import typing as tp
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from musicpipe import atomic, paths, presets
from musicpipe.xp import CODEC_FILE, LM_FILE

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What the LM's stored config says about its architecture: passed as overrides so the composed config
# builds exactly the released model, whatever the preset's model scale.
ARCH_KEYS = ("lm_model", "transformer_lm", "codebooks_pattern")
# The conditioning part of the stored config: written as a conditioner group file in the workspace.
COND_KEYS = ("conditioners", "fuser", "classifier_free_guidance", "attribute_dropout")


class ReleaseError(ValueError):
    """A release cannot be used (missing files, unreachable hub, mismatching codec); names it and why."""


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    """The token layout of a codec: what an LM trained on it must agree with."""

    n_q: int
    card: int
    sample_rate: int
    channels: int = 1
    frame_rate: tp.Optional[float] = None


# Released codecs whose layout is documented (AudioCraft's MODEL_CARD / musicgen_base_32khz.yaml), so a hub id
# is checked without downloading it.
KNOWN_CODECS = {"facebook/encodec_32khz": CodecSpec(n_q=4, card=2048, sample_rate=32000, channels=1, frame_rate=50.0)}


def is_hub_id(text: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    return bool(_HUB_ID.match(str(text))) and not Path(str(text)).expanduser().exists()


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_file(repo_id: str, filename: str, *, timeout: float = 5.0) -> Path:
    """``filename`` of hub repo ``repo_id``: from the local cache, else downloaded after a quick reachability check.

    ReleaseError within about ``timeout`` seconds when it is not cached and the hub cannot be reached.
    """
    from huggingface_hub import hf_hub_download

    cache_dir = os.environ.get("AUDIOCRAFT_CACHE_DIR")
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (any reason): ask the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise ReleaseError(f"{repo_id}: {filename} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                           "set; download it on a machine with internet access, or pass a local release folder")
    url = f"{_endpoint()}/{repo_id}/resolve/main/{filename}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ReleaseError(f"{repo_id}: {filename} is not in the local Hugging Face cache and {url} cannot be "
                           f"reached ({getattr(exc, 'reason', exc)}); on a pod with internet access it downloads "
                           "on first use; offline, pass a local release folder (`musicpipe export` writes one)") \
            from None
    if status >= 400:
        raise ReleaseError(f"{repo_id}: {url} answered HTTP {status} (no such model or file, or a private repo)")
    logger.info("downloading %s from %s", filename, repo_id)
    return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))


def _load_package(path: Path) -> tp.Dict[str, tp.Any]:
    import torch

    try:
        try:
            pkg = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # not the zip format: mmap unavailable
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file: the finding
        raise ReleaseError(f"{path}: not a readable AudioCraft package ({type(exc).__name__}: {exc})") from None
    if not isinstance(pkg, dict):
        raise ReleaseError(f"{path}: not an AudioCraft package (a {type(pkg).__name__})")
    return pkg


def _config(pkg: tp.Mapping[str, tp.Any], path: Path) -> tp.Dict[str, tp.Any]:
    cfg = pkg.get("xp.cfg")
    if isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    elif cfg is not None and not isinstance(cfg, dict):  # an OmegaConf object (AudioCraft's own releases)
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(cfg, dict):
        raise ReleaseError(f"{path}: no stored training config (xp.cfg)")
    return cfg


@dataclasses.dataclass(frozen=True)
class Release:
    """A released model: ``ref`` is what AudioCraft's ``//pretrained/`` takes (a hub id or an absolute folder)."""

    ref: str
    hub: bool

    @classmethod
    def resolve(cls, name_or_dir: PathLike) -> "Release":
        text = str(name_or_dir).strip()
        if not text:
            raise ReleaseError("an empty release name")
        if is_hub_id(text):
            return cls(ref=text, hub=True)
        folder = Path(text).expanduser()
        if not folder.exists():
            raise ReleaseError(f"{text}: no such folder, and not a Hugging Face id (owner/name)")
        if not folder.is_dir():
            raise ReleaseError(f"{text}: not a folder; a release folder holds {LM_FILE} and {CODEC_FILE}")
        return cls(ref=str(folder.resolve()), hub=False)

    @property
    def pretrained(self) -> str:
        """``//pretrained/<ref>``: how AudioCraft's configs name it."""
        return f"//pretrained/{self.ref}"

    def file(self, name: str) -> Path:
        """A file of the release (downloaded, or found in the cache, for a hub id)."""
        if self.hub:
            return hub_file(self.ref, name)
        path = Path(self.ref) / name
        if not path.is_file():
            raise ReleaseError(f"{path} is missing: a release folder holds {LM_FILE} (the LM) and {CODEC_FILE} "
                               "(its codec), as `musicpipe export` writes them")
        return path

    @functools.cached_property
    def lm_config(self) -> tp.Dict[str, tp.Any]:
        """The LM's stored training config (``xp.cfg`` in ``state_dict.bin``)."""
        path = self.file(LM_FILE)
        pkg = _load_package(path)
        if "best_state" not in pkg:
            raise ReleaseError(f"{path}: no best_state (not an exported LM)")
        cfg = _config(pkg, path)
        if "transformer_lm" not in cfg:
            raise ReleaseError(f"{path}: its config has no transformer_lm: not a MusicGen LM")
        return cfg

    @functools.cached_property
    def codec(self) -> tp.Tuple[str, CodecSpec]:
        """``(compression_model_checkpoint value, layout)`` of the release's own codec."""
        path = self.file(CODEC_FILE)
        pkg = _load_package(path)
        pointer = pkg.get("pretrained")
        if isinstance(pointer, str):  # e.g. facebook/musicgen-small -> facebook/encodec_32khz
            return f"//pretrained/{pointer}", codec_spec_of_release(pointer)
        return self.pretrained, spec_from_config(_config(pkg, path), str(path))

    @property
    def conditioning(self) -> str:
        """``none``/``genre``/``text``: what the LM is conditioned on (its stored conditioners)."""
        names = set((self.lm_config.get("conditioners") or {}).keys())
        if not names:
            return "none"
        if names == {"genre"}:
            return "genre"
        if names == {"description"}:
            return "text"
        return "+".join(sorted(names))

    @property
    def key(self) -> str:
        """A short content key of the stored LM config (names the workspace's conditioner file)."""
        text = json.dumps({k: self.lm_config.get(k) for k in COND_KEYS}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def spec_from_config(cfg: tp.Mapping[str, tp.Any], where: str) -> CodecSpec:
    """A codec's layout from its stored config (an EnCodec trained by AudioCraft's compression solver)."""
    try:
        sr = int(cfg["sample_rate"])
        ratios = (cfg.get("seanet") or {}).get("ratios")
        hop = math.prod(int(r) for r in ratios) if ratios else None
        return CodecSpec(n_q=int(cfg["rvq"]["n_q"]), card=int(cfg["rvq"]["bins"]), sample_rate=sr,
                         channels=int(cfg.get("channels", 1)), frame_rate=sr / hop if hop else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"{where}: the codec config lacks rvq.n_q / rvq.bins / sample_rate "
                           f"({type(exc).__name__}: {exc})") from None


def codec_spec_of_release(ref: str) -> CodecSpec:
    """The layout of a released codec: a hub id (known, or its ``config.json``) or a folder's package."""
    if ref in KNOWN_CODECS:
        return KNOWN_CODECS[ref]
    release = Release.resolve(ref)
    if release.hub:
        path = hub_file(ref, "config.json")  # a transformers EncodecModel
        try:
            cfg = json.loads(path.read_text())
            sr = int(cfg["sampling_rate"])
            hop = math.prod(int(r) for r in cfg["upsampling_ratios"])
            bandwidth = max(float(b) for b in cfg["target_bandwidths"])
            card = int(cfg["codebook_size"])
            n_q = int(round(bandwidth * 1000 / ((sr / hop) * math.log2(card))))
            return CodecSpec(n_q=n_q, card=card, sample_rate=sr, channels=int(cfg.get("audio_channels", 1)),
                             frame_rate=sr / hop)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"{ref}: cannot read its codec layout from config.json ({exc})") from None
    return release.codec[1]


def codec_info(ref: str) -> presets.CodecInfo:
    """``CodecInfo`` of a released codec (hub id, folder with ``compression_state_dict.bin``), for ``--codec``."""
    release = Release.resolve(ref)
    if release.hub:
        checkpoint, spec = f"//pretrained/{ref}", codec_spec_of_release(ref)
    else:
        checkpoint, spec = release.codec
    return presets.CodecInfo(sig=release.ref, n_q=spec.n_q, card=spec.card, sample_rate=spec.sample_rate,
                             channels=spec.channels, checkpoint=checkpoint, frame_rate=spec.frame_rate)


def _leaves(prefix: str, value: tp.Any) -> tp.Iterator[tp.Tuple[str, tp.Any]]:
    if isinstance(value, dict) and value:
        for k in sorted(value):
            yield from _leaves(f"{prefix}.{k}", value[k])
    else:
        yield prefix, value


def architecture_overrides(cfg: tp.Mapping[str, tp.Any]) -> tp.List[str]:
    """``++key=value`` for every leaf of the stored LM architecture (lm_model, transformer_lm, codebooks_pattern).

    ``++`` sets a key whether or not the composed config has it, so the model built is the released one.

    >>> architecture_overrides({"lm_model": "transformer_lm", "transformer_lm": {"dim": 64, "n_q": 4},
    ...                         "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1]}}})
    ['++lm_model=transformer_lm', '++transformer_lm.dim=64', '++transformer_lm.n_q=4', \
'++codebooks_pattern.delay.delays=[0,1]', '++codebooks_pattern.modeling=delay']
    """
    out = []
    for key in ARCH_KEYS:
        if key in cfg:
            out += [f"++{k}={presets.format_value(v)}" for k, v in _leaves(key, cfg[key])]
    return out


def write_conditioner_config(release: Release, workspace: tp.Optional[PathLike] = None) -> str:
    """Write the release's conditioning as ``<ws>/config/conditioner/release_<key>.yaml``; return the group name.

    The file is the stored config's conditioners, fuser, classifier-free guidance and attribute dropout, so
    ``conditioner=release_<key>`` composes exactly the released conditioning (the name changes with it).
    """
    name = f"release_{release.key}"
    body = {k: release.lm_config.get(k) for k in COND_KEYS}
    body["conditioners"] = body["conditioners"] or None
    text = ("# @package __global__\n"
            f"# Written by musicpipe: the conditioning stored with {release.ref} (do not edit)\n"
            + yaml.safe_dump(body, sort_keys=True))
    path = paths.workspace_config_dir(workspace) / "conditioner" / f"{name}.yaml"
    if not path.exists() or path.read_text() != text:
        atomic.write_text(path, text)
    return name


def check_codec_fits(lm_cfg: tp.Mapping[str, tp.Any], lm_name: str, codec: presets.CodecInfo,
                     lm_frame_rate: tp.Optional[float]) -> None:
    """ReleaseError naming both when the codec's codebooks, card, sample rate or frame rate differ from the LM's."""
    tl = lm_cfg.get("transformer_lm") or {}
    problems = []
    for what, ours, theirs in (("codebooks (n_q)", tl.get("n_q"), codec.n_q), ("codebook size (card)", tl.get("card"),
                                                                                 codec.card),
                               ("sample rate", lm_cfg.get("sample_rate"), codec.sample_rate),
                               ("frame rate", lm_frame_rate, codec.frame_rate)):
        if ours is not None and theirs is not None and float(ours) != float(theirs):
            problems.append(f"{what} {ours:g} vs {theirs:g}" if isinstance(ours, float) or isinstance(theirs, float)
                            else f"{what} {ours} vs {theirs}")
    if problems:
        raise ReleaseError(f"the codec {codec.sig} does not fit the LM {lm_name}: " + "; ".join(problems)
                           + " (LM vs codec)")

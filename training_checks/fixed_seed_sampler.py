"""How does an LM sound as it trains? The same prompts, with the same seeds, from every per-epoch checkpoint.

AudioCraft keeps ``checkpoint_<epoch>.th`` in the XP folder when ``checkpoint.save_every`` is set. For
each of them this loads the epoch's LM weights into one model (the XP's codec is shared) and generates a
fixed set of prompts (:func:`build_prompts`): unconditional samples; one per genre (or description) the
XP was trained on when it is conditioned (its ``musicpipe.json``, else its config's conditioners); and a
continuation of a fixed real audio prompt (default: a deterministic pick from the dataset's valid
manifest). The codec's reconstruction of that real audio is the oracle: the best the LM could sound.

Under ``<outputs>/samples/`` (default ``outputs/fixed_seed_sampler/<sig>/samples/``)::

    epoch_<N>/<prompt_id>.wav, <prompt_id>.png, settings.json    one folder per epoch
    oracle/continuation.wav, reference.wav (+ .png), settings.json   codec reconstruction, real audio
    index.html     one row per prompt, one column per epoch (plus the oracle); relative links only

WAVs are 16-bit PCM at the model's rate, peak-normalised to 0.9; PNGs are log spectrograms on a fixed
dBFS scale. Every file is written under a temp name then renamed; ``settings.json`` is written last and
marks the folder complete, so a re-run skips epochs already sampled with the same settings (seed,
prompts, durations, checkpoint identity) and redoes the others. Same seed, same bytes (on one device).
The epochs sampled are also recorded in the XP folder (``sampled_epochs.json``): checkpoint retention
(``checkpoint.keep_last``, :mod:`musicpipe.dora_entry.retention`) prunes those first, so run the sampler
during a long training to see every epoch it saves.

As a script::

    python training_checks/fixed_seed_sampler.py --xp 08e4d3f1 --list-epochs
    python training_checks/fixed_seed_sampler.py --xp 08e4d3f1                # every epoch not yet sampled
    python training_checks/fixed_seed_sampler.py --xp 08e4d3f1 --epoch 2 --duration 8
    python training_checks/fixed_seed_sampler.py --xp 08e4d3f1 --generate-index

It ends with one line such as
``fixed_seed_sampler: 08e4d3f1: sampled epochs 1, 2; skipped none; 8 prompts -> outputs/.../index.html``.

Example:
    >>> from training_checks.fixed_seed_sampler import epoch_checkpoints, build_prompts
    >>> sorted(epoch_checkpoints(["checkpoint.th", "checkpoint_2.th", "checkpoint_10.th", "checkpoint_1.th.1"]))
    [2, 10]
    >>> [p.id for p in build_prompts("genre", ["Rock", "ambient"], prompt_audio="/d/a.wav", num_unconditional=1)]
    ['uncond_0', 'genre_rock', 'genre_ambient', 'continuation']
    >>> from training_checks.fixed_seed_sampler import run_sampler
    >>> summary = run_sampler("08e4d3f1", workspace="/tmp/ws", outputs="/tmp/fss")   # doctest: +SKIP
    >>> summary["sampled"], summary["index"]                                         # doctest: +SKIP
    ([1, 2], '/tmp/fss/samples/index.html')
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import dataclasses
import json
import logging
import random
import re
import typing as tp
import urllib.parse

from musicpipe import atomic, evaluation, generation, manifests, pages, paths
from musicpipe.codec_metrics import read_segment, write_wav
from musicpipe.dora_entry import retention
from musicpipe.xp import XP, XPError, epoch_checkpoints  # noqa: F401 - epoch_checkpoints: part of this API
from training_checks import codec_quality_check as cqc

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
SETTINGS = "settings.json"
INDEX = "index.html"
ORACLE = "oracle"
FORMAT_VERSION = 1
CONDITIONINGS = ("none", "genre", "text")
WEIGHTS = ("auto", "model", "ema", "best")
PEAK = 0.9               # WAVs are peak-normalised to this, as musicpipe.generation.write_samples does
SPEC_N_FFT = 1024        # spectrogram PNGs: Hann window, hop n_fft/4, dB re. full scale on a fixed range
SPEC_RANGE_DB = (-100.0, 0.0)
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class SamplerError(ValueError):
    """The sampler cannot run; ``str()`` names the file or folder and the reason.

    Example:
        >>> str(SamplerError("/ws/xps/08e4d3f1: no checkpoint_<epoch>.th"))
        '/ws/xps/08e4d3f1: no checkpoint_<epoch>.th'
    """


# ------------------------------------------------------------------------------------------------ pure parts


def epoch_dir_name(epoch: int) -> str:
    """``epoch_<N>``, the folder of one epoch's samples.

    Example:
        >>> epoch_dir_name(3)
        'epoch_3'
    """
    return f"epoch_{int(epoch)}"


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe id part: lower case ASCII letters, digits and ``-``; other runs become ``_``.

    Example:
        >>> slug("Hip-Hop / Rap"), slug("Électro!"), slug("***")
        ('hip-hop_rap', 'lectro', 'x')
    """
    out = re.sub(r"[^a-z0-9-]+", "_", text.lower()).strip("_")[:max_len].strip("_")
    return out or "x"


def _keyword(value: tp.Any) -> tp.Optional[str]:
    """A genre as AudioCraft's MusicInfo preprocesses it for training (``info_audio_dataset.get_keyword``)."""
    if not isinstance(value, str) or not value or value == "None":
        return None
    return value.strip().lower()


def _string(value: tp.Any) -> tp.Optional[str]:
    """A description as MusicInfo preprocesses it (``info_audio_dataset.get_string``)."""
    if not isinstance(value, str) or not value or value == "None":
        return None
    return value.strip()


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One row of the sampler: what is generated and with which seed.

    ``kind``: ``unconditional``, ``genre``, ``text`` or ``continuation`` (of ``audio``'s first seconds;
    ``genre``/``description`` then condition it too, when the XP is conditioned).
    """

    id: str
    kind: str
    seed: int
    genre: tp.Optional[str] = None
    description: tp.Optional[str] = None
    audio: tp.Optional[str] = None

    def label(self) -> str:
        """A short human description.

        Example:
            >>> Prompt("genre_rock", "genre", 0, genre="rock").label()
            'genre: rock'
        """
        parts = {"unconditional": ["unconditional"], "genre": [], "text": [],
                 "continuation": [f"continuation of {Path(self.audio).name}" if self.audio else "continuation"]}
        out = list(parts.get(self.kind, [self.kind]))
        if self.genre:
            out.append(f"genre: {self.genre}")
        if self.description:
            out.append(f"description: {self.description}")
        return "; ".join(out)

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: tp.Mapping[str, tp.Any]) -> "Prompt":
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


def build_prompts(conditioning: str, conditions: tp.Sequence[str] = (), *, prompt_audio: tp.Optional[str] = None,
                  prompt_condition: tp.Optional[str] = None, seed: int = 0,
                  num_unconditional: int = 2) -> tp.List[Prompt]:
    """The fixed prompt set of an XP (pure).

    ``uncond_<k>`` (seed ``seed + k``, so they differ); then, when ``conditioning`` is ``genre`` or
    ``text``, one prompt per entry of ``conditions`` (genres are lower-cased as AudioCraft does in
    training; ids ``genre_<slug>`` / ``text_<k>``), all with ``seed`` so that only the condition differs;
    then ``continuation`` of ``prompt_audio`` (seed ``seed``, conditioned on ``prompt_condition``).

    Example:
        >>> ps = build_prompts("text", ["calm piano", "loud <drums>"], prompt_audio="/a.wav",
        ...                    prompt_condition="calm piano", seed=7, num_unconditional=2)
        >>> [(p.id, p.seed, p.description) for p in ps]  # doctest: +NORMALIZE_WHITESPACE
        [('uncond_0', 7, None), ('uncond_1', 8, None), ('text_0', 7, 'calm piano'),
         ('text_1', 7, 'loud <drums>'), ('continuation', 7, 'calm piano')]
        >>> [p.id for p in build_prompts("none", ["ignored"], num_unconditional=1)]
        ['uncond_0']
    """
    if conditioning not in CONDITIONINGS:
        raise SamplerError(f"unknown conditioning {conditioning!r}: expected one of {', '.join(CONDITIONINGS)}")
    prompts = [Prompt(f"uncond_{k}", "unconditional", seed + k) for k in range(num_unconditional)]
    used = {p.id for p in prompts}

    def unique(base: str) -> str:
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    if conditioning == "genre":
        genres = list(dict.fromkeys(g for g in (_keyword(c) for c in conditions) if g))
        prompts += [Prompt(unique(f"genre_{slug(g)}"), "genre", seed, genre=g) for g in genres]
    elif conditioning == "text":
        texts = list(dict.fromkeys(t for t in (_string(c) for c in conditions) if t))
        prompts += [Prompt(unique(f"text_{k}"), "text", seed, description=t) for k, t in enumerate(texts)]
    if prompt_audio is not None:
        genre = _keyword(prompt_condition) if conditioning == "genre" else None
        description = _string(prompt_condition) if conditioning == "text" else None
        prompts.append(Prompt(unique("continuation"), "continuation", seed, genre=genre, description=description,
                              audio=str(prompt_audio)))
    return prompts


def pick_conditions(values: tp.Sequence[tp.Optional[str]], conditioning: str, max_conditions: int,
                    seed: int = 0) -> tp.List[str]:
    """Which training conditions to prompt with: at most ``max_conditions`` (pure, deterministic).

    Genres: the most frequent first (ties by name), as AudioCraft lower-cases them. Descriptions:
    ``random.Random(seed)`` picks among the sorted distinct ones, kept in sorted order.

    Example:
        >>> pick_conditions(["rock", "Rock", "jazz", "pop", "pop", "pop", None], "genre", 2)
        ['pop', 'rock']
        >>> pick_conditions(["b", "a", "c"], "text", 5)
        ['a', 'b', 'c']
    """
    if max_conditions <= 0 or conditioning == "none":
        return []
    if conditioning == "genre":
        counts: tp.Dict[str, int] = {}
        for value in values:
            genre = _keyword(value)
            if genre:
                counts[genre] = counts.get(genre, 0) + 1
        return [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_conditions]]
    distinct = sorted({t for t in (_string(v) for v in values) if t})
    if len(distinct) <= max_conditions:
        return distinct
    return sorted(random.Random(seed).sample(distinct, max_conditions))


# ------------------------------------------------------------------------------------------------ index page


def _href(*parts: str) -> str:
    """A relative URL, each part percent-encoded (the page's template escapes it for the attribute).

    Example:
        >>> _href("epoch_1", "a b&c.wav")
        'epoch_1/a%20b%26c.wav'
    """
    return "/".join(urllib.parse.quote(p) for p in parts)


def _media(folder: str, entry: tp.Mapping[str, tp.Any], caption: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """One audio player + spectrogram of the samples page (the fields ``samples.html.j2`` shows)."""
    duration = entry.get("duration")
    return {"src": _href(folder, entry["wav"]), "png": _href(folder, entry["png"]),
            "alt": f"spectrogram of {folder}/{entry['wav']}", "caption": caption,
            "title": f"{duration:.2f} s" if isinstance(duration, (int, float)) else None}


def _comparable(settings: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    return {k: v for k, v in settings.items() if k not in ("epoch", "checkpoint")}


def settings_brief(data: tp.Mapping[str, tp.Any]) -> str:
    """``seed 0, 2.0 s, prompt rock_003_0.wav`` from a ``settings.json``.

    Example:
        >>> settings_brief({"settings": {"seed": 5, "duration": 2.0, "prompt_audio": "/d/a.wav"}})
        'seed 5, 2.0 s, prompt a.wav'
    """
    s = data.get("settings", {})
    prompt = Path(str(s["prompt_audio"])).name if s.get("prompt_audio") else "-"
    return f"seed {s.get('seed', '-')}, {s.get('duration', '-')} s, prompt {prompt}"


def render_index(sig: str, epochs: tp.Mapping[int, tp.Mapping[str, tp.Any]],
                 oracle: tp.Optional[tp.Mapping[str, tp.Any]] = None,
                 fad: tp.Optional[tp.Mapping[int, tp.Mapping[str, tp.Any]]] = None) -> str:
    """The ``index.html`` of a samples folder (pure): one row per prompt, one column per epoch, then the oracle.

    Args:
        sig: the XP signature (title).
        epochs: ``{epoch: settings}``, each the ``settings.json`` of ``epoch_<N>/``: ``settings.prompts``
            (dicts of :class:`Prompt`) give the rows, ``files`` maps a prompt id to ``{"wav", "png",
            "duration"}`` (names inside the epoch's folder).
        oracle: the ``settings.json`` of ``oracle/`` (its ``files`` keyed by prompt id, plus
            ``reference``), or None.
        fad: per-epoch FAD results (:attr:`musicpipe.xp.XP.fad`): shown in the epoch's header beside valid ce.

    Every link is relative (``epoch_2/genre_rock.wav``), so the folder works wherever it is copied;
    every string is escaped (``musicpipe/templates/samples.html.j2``, :mod:`musicpipe.pages`).

    Example:
        >>> s = {"settings": {"prompts": [{"id": "uncond_0", "kind": "unconditional", "seed": 0}]},
        ...      "files": {"uncond_0": {"wav": "uncond_0.wav", "png": "uncond_0.png", "duration": 2.0}}}
        >>> page = render_index("08e4d3f1", {2: s, 1: s})
        >>> page.index("epoch 1") < page.index("epoch 2"), page.count('src="epoch_2/uncond_0.wav"')
        (True, 1)
    """
    order = sorted(epochs)
    rows: tp.Dict[str, Prompt] = {}
    for epoch in reversed(order):  # the latest epoch's prompt order first, then prompts only older ones have
        for data in epochs[epoch].get("settings", {}).get("prompts", []):
            prompt = Prompt.from_dict(data)
            rows.setdefault(prompt.id, prompt)
    oracle_files = dict((oracle or {}).get("files", {}))
    for prompt_id in oracle_files:
        if prompt_id != "reference" and prompt_id not in rows:
            rows[prompt_id] = Prompt(prompt_id, "continuation", 0)

    latest = epochs[order[-1]].get("settings", {}) if order else dict((oracle or {}).get("settings", {}))
    facts = [("XP", sig), ("conditioning", latest.get("conditioning", "-")), ("seed", latest.get("seed", "-")),
             ("duration", f"{latest['duration']} s" if "duration" in latest else "-"),
             ("prompt audio", latest.get("prompt_audio") or "-"),
             ("continuation prompt", f"{latest['prompt_seconds']} s" if "prompt_seconds" in latest else "-"),
             ("weights", latest.get("weights", "-")), ("epochs", ", ".join(map(str, order)) or "none yet")]
    columns = []
    for epoch in order:
        info = epochs[epoch].get("info", {})
        detail = [str(epochs[epoch].get("settings", {}).get("checkpoint", {}).get("name", ""))]
        if _comparable(epochs[epoch].get("settings", {})) != _comparable(latest):
            detail.append("other settings than epoch %d (%s)" % (order[-1], settings_brief(epochs[epoch])))
        for name, value in sorted((info.get("valid") or {}).items()):
            detail.append(f"valid {name} {value:.3g}" if isinstance(value, (int, float)) else f"valid {name} {value}")
        values = ((fad or {}).get(epoch) or {}).get("fad") or {}
        if isinstance(values.get("lm"), (int, float)):
            floor = values.get("codec_floor")
            detail.append(f"FAD {values['lm']:.3g}" + (f" (codec floor {floor:.3g})"
                                                       if isinstance(floor, (int, float)) else ""))
        columns.append({"epoch": epoch, "detail": " · ".join(d for d in detail if d)})
    body = []
    for prompt_id, prompt in rows.items():
        cells: tp.List[tp.Optional[tp.List[tp.Dict[str, tp.Any]]]] = []
        for epoch in order:
            entry = epochs[epoch].get("files", {}).get(prompt_id)
            cells.append([_media(epoch_dir_name(epoch), entry)] if entry else None)
        if oracle is not None:
            if prompt_id in oracle_files:
                media = [_media(ORACLE, oracle_files[prompt_id], "codec reconstruction")]
                if "reference" in oracle_files:
                    media.append(_media(ORACLE, oracle_files["reference"], "real audio"))
                cells.append(media)
            else:
                cells.append(None)
        body.append({"id": prompt_id, "label": prompt.label(), "seed": prompt.seed, "cells": cells})
    return pages.render("samples.html.j2", sig=sig, facts=facts, columns=columns, has_oracle=oracle is not None,
                        rows=body, spec_range=f"{SPEC_RANGE_DB[0]:g} to {SPEC_RANGE_DB[1]:g}", peak=PEAK)


def _read_settings(folder: Path) -> tp.Optional[tp.Dict[str, tp.Any]]:
    try:
        data = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(folder: Path, data: tp.Optional[tp.Mapping[str, tp.Any]]) -> bool:
    if not data or not isinstance(data.get("files"), dict):
        return False
    return all((folder / entry[key]).is_file() for entry in data["files"].values() for key in ("wav", "png"))


def sampled_epochs(samples_dir: PathLike) -> tp.Dict[int, tp.Dict[str, tp.Any]]:
    """``{epoch: settings.json}`` of the complete ``epoch_<N>`` folders under ``samples_dir``, by epoch."""
    samples = Path(samples_dir)
    found = {}
    if samples.is_dir():
        for folder in samples.iterdir():
            match = _EPOCH_DIR.match(folder.name)
            if match and folder.is_dir():
                data = _read_settings(folder)
                if _complete(folder, data):
                    found[int(match.group(1))] = data
    return dict(sorted(found.items()))


def write_index(samples_dir: PathLike, sig: tp.Optional[str] = None,
                fad: tp.Optional[tp.Mapping[int, tp.Mapping[str, tp.Any]]] = None) -> Path:
    """Write ``<samples_dir>/index.html`` from the complete folders found there (unless unchanged); return its path.

    ``fad``: per-epoch FAD results for the epochs' headers (:attr:`musicpipe.xp.XP.fad`).
    """
    samples = Path(samples_dir)
    epochs = sampled_epochs(samples)
    oracle = _read_settings(samples / ORACLE)
    if not _complete(samples / ORACLE, oracle):
        oracle = None
    if sig is None:
        for data in list(epochs.values()) + [oracle or {}]:
            sig = data.get("settings", {}).get("xp") or sig
    page, target = render_index(sig or "?", epochs, oracle, fad), samples / INDEX
    try:
        if target.read_text(encoding="utf-8") == page:
            return target  # unchanged: leave it (and its mtime) alone
    except (OSError, UnicodeDecodeError):
        pass
    return atomic.write_text(target, page)


# ------------------------------------------------------------------------------------------------- audio out


def spectrogram_db(audio: tp.Any, n_fft: int = SPEC_N_FFT) -> tp.Any:
    """``[freq, frames]`` log magnitude in dB re. full scale of mono ``audio`` (numpy, ``[T]`` or ``[C, T]``).

    A full-scale sine reads about 0 dB (the magnitude is divided by the window's sum / 2).

    Example:
        >>> import numpy as np
        >>> sr, f = 16000, 1000.0
        >>> spec = spectrogram_db(np.sin(2 * np.pi * f * np.arange(sr) / sr))
        >>> spec.shape[0], abs(float(spec.max())) < 0.1
        (513, True)
    """
    import numpy as np

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    hop = n_fft // 4
    if x.shape[-1] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[-1]))
    window = np.hanning(n_fft + 1)[:-1]
    frames = 1 + (x.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * window, axis=-1)).T / (window.sum() / 2)
    return 20 * np.log10(np.maximum(mag, 1e-10))


def write_spectrogram(audio: tp.Any, sample_rate: int, path: Path, title: str) -> Path:
    """A small PNG (about 400 x 220 px) of :func:`spectrogram_db`, written atomically."""
    import numpy as np

    from musicpipe import report

    spec = spectrogram_db(audio)
    length = np.asarray(audio).shape[-1]
    fig, (ax,) = report.new_figure(1, 1, width=4.0)
    fig.set_size_inches(4.0, 2.2)
    image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=SPEC_RANGE_DB[0], vmax=SPEC_RANGE_DB[1],
                      extent=(0.0, length / sample_rate, 0.0, sample_rate / 2000.0), interpolation="nearest")
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("kHz", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    cbar = fig.colorbar(image, ax=ax)
    cbar.ax.tick_params(labelsize=6)
    cbar.set_label("dBFS", fontsize=7)
    return report.save_png(fig, path)


def _normalised(wav: tp.Any) -> tp.Any:
    """``[C, T]`` float32 numpy, peak-normalised to :data:`PEAK` (silence stays silent)."""
    import numpy as np

    audio = np.asarray(wav.detach().cpu().float().numpy() if hasattr(wav, "detach") else wav, dtype=np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * (PEAK / peak) if peak > 0 else audio


def write_sample(wav: tp.Any, sample_rate: int, folder: Path, name: str, title: str) -> tp.Dict[str, tp.Any]:
    """``<name>.wav`` (16-bit PCM, peak-normalised) and ``<name>.png`` under ``folder``; their index entry."""
    import torch

    audio = _normalised(wav)
    write_wav(folder / f"{name}.wav", torch.from_numpy(audio), sample_rate)
    write_spectrogram(audio, sample_rate, folder / f"{name}.png", title)
    return {"wav": f"{name}.wav", "png": f"{name}.png", "num_frames": int(audio.shape[-1]),
            "duration": audio.shape[-1] / sample_rate}


def _clear(folder: Path, keep: tp.Iterable[str]) -> None:
    """Remove the marker, then WAV/PNG/temp files that are not in ``keep`` (a redo starts from a clean folder)."""
    (folder / SETTINGS).unlink(missing_ok=True)
    keep = set(keep)
    for path in folder.iterdir():
        if path.is_file() and path.name not in keep and (path.suffix in (".wav", ".png", ".tmp")
                                                         or path.name.startswith(".")):
            path.unlink()


# ------------------------------------------------------------------------------------------- XP and its data


@dataclasses.dataclass
class XPInfo:
    """What the sampler needs to know about an LM XP, read without loading any model."""

    sig: str
    folder: Path
    workspace: Path
    conditioning: str
    dataset: tp.Optional[str]
    sample_rate: int
    channels: int
    codec: tp.Optional[str]  # the config's compression_model_checkpoint
    fsdp: bool


def _file_id(path: Path) -> tp.Dict[str, tp.Any]:
    """Identity of a file for the skip test (not a hash: checkpoints are GBs): name, size, mtime."""
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def conditioning_of(record: tp.Mapping[str, tp.Any], conditioners: tp.Optional[tp.Iterable[str]]) -> str:
    """``none``/``genre``/``text``: musicpipe's record (``musicpipe.json``) first, else the config's conditioners.

    Example:
        >>> conditioning_of({"conditioning": "genre"}, None), conditioning_of({}, ["description"])
        ('genre', 'text')
        >>> conditioning_of({}, [])
        'none'
    """
    recorded = record.get("conditioning")
    if recorded in CONDITIONINGS:
        return str(recorded)
    names = set(conditioners or ())
    if "genre" in names:
        return "genre"
    if "description" in names:
        return "text"
    if names:
        raise SamplerError(f"conditioners {sorted(names)}: the sampler knows genre and description only")
    return "none"


def resolve_lm_xp(sig: str, workspace: tp.Optional[PathLike] = None) -> XPInfo:
    """Check that ``sig`` is an LM XP of the workspace and read its conditioning, dataset and audio format."""
    if not paths.SIG_RE.match(str(sig)):
        raise SamplerError(f"{sig!r} is not an XP signature (8 hex digits)")
    try:
        xp = XP.resolve(str(sig), workspace, kind="lm")
        cfg = xp.config
    except XPError as e:
        raise SamplerError(str(e)) from None
    assert xp.workspace is not None
    return XPInfo(sig=str(sig), folder=xp.folder, workspace=xp.workspace,
                  conditioning=conditioning_of(xp.record, xp.conditioners), dataset=xp.dataset,
                  sample_rate=int(cfg.get("sample_rate")), channels=int(cfg.get("channels", 1)), codec=xp.codec_ref,
                  fsdp=bool((cfg.get("fsdp") or {}).get("use", False)))


def _xp(info: XPInfo) -> XP:
    return XP(folder=info.folder, sig=info.sig, workspace=info.workspace)


def list_epochs(xp: XPInfo) -> tp.Dict[int, Path]:
    """``{epoch: checkpoint path}`` of the XP's per-epoch checkpoints."""
    return _xp(xp).checkpoints


def _valid_egs(xp: XPInfo) -> Path:
    try:
        return _xp(xp).egs_dir("valid", xp.dataset)[1]
    except XPError as e:
        raise SamplerError(str(e)) from None


def _sidecar(audio: str) -> tp.Dict[str, tp.Any]:
    try:
        data = json.loads(Path(audio).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def training_conditions(xp: XPInfo, max_conditions: int, seed: int) -> tp.List[str]:
    """The genres (or descriptions) to prompt with, from the sidecars of the XP's train manifest."""
    if xp.conditioning == "none" or max_conditions <= 0:
        return []
    from tqdm import tqdm

    valid = _valid_egs(xp)
    try:
        records = manifests.read_nonempty_manifest(valid.parent / "train")
    except manifests.ManifestError as e:
        raise SamplerError(f"{e}: the {xp.conditioning} conditions the XP was trained on are read from its train "
                           "manifest's sidecars (prepare the dataset in this workspace)") from None
    field = "genre" if xp.conditioning == "genre" else "description"
    values = [_sidecar(r.path).get(field) for r in tqdm(records, desc=f"reading {field}s", unit="file",
                                                         disable=len(records) < 2000)]
    picked = pick_conditions(values, xp.conditioning, max_conditions, seed)
    if not picked:
        raise SamplerError(f"{valid.parent / 'train' / 'data.jsonl'}: no {field} in any sidecar, yet XP {xp.sig} is "
                           f"conditioned on {field}s")
    return picked


def default_prompt_audio(xp: XPInfo, seed: int) -> str:
    """A deterministic pick from the valid manifest (:func:`codec_quality_check.select_segments`)."""
    valid = _valid_egs(xp)
    try:
        return cqc.select_segments(cqc.valid_segments(valid), 1, seed)[0]
    except cqc.CodecCheckError as e:
        raise SamplerError(f"{e} (or pass --prompt-audio)") from None


def _codec_id(xp: XPInfo) -> tp.Dict[str, tp.Any]:
    codec = str(xp.codec or "")
    found = None
    if codec.startswith("//sig/"):
        found = paths.xp_dir(codec[len("//sig/"):], xp.workspace) / "checkpoint.th"
    elif codec and Path(codec).is_file():
        found = Path(codec)
    return {"checkpoint": codec, **({"file": _file_id(found)} if found is not None and found.is_file() else {})}


# --------------------------------------------------------------------------------------------------- sampling


def _history_valid(xp: XPInfo, epoch: int) -> tp.Dict[str, float]:
    try:
        valid = _xp(xp).history[epoch - 1].get("valid", {})
    except (XPError, IndexError, AttributeError, TypeError):
        return {}
    return {k: valid[k] for k in ("ce", "ppl") if isinstance(valid.get(k), (int, float))}


def epoch_weights(checkpoint: Path, weights: str = "auto") -> tp.Tuple[str, tp.Any]:
    """:func:`musicpipe.generation.epoch_weights`, with a :class:`SamplerError` naming the checkpoint."""
    try:
        return generation.epoch_weights(checkpoint, weights)
    except ValueError as exc:
        raise SamplerError(str(exc)) from None


def _generate(model: tp.Any, xp: XPInfo, prompt: Prompt, duration: float, prompt_wav: tp.Any) -> tp.Any:
    # A genre LM needs the key even for unconditional samples: genres=[None] (genres=None raises KeyError).
    genres = [prompt.genre] if xp.conditioning == "genre" else None
    descriptions = [prompt.description] if xp.conditioning == "text" else None
    wav = generation.generate(model=model, num_samples=1, duration=duration, genres=genres,
                              descriptions=descriptions, seed=prompt.seed,
                              prompt=prompt_wav if prompt.kind == "continuation" else None,
                              prompt_sample_rate=xp.sample_rate)
    return wav[0]


def _sample_epoch(model: tp.Any, xp: XPInfo, epoch: int, checkpoint: Path, out: Path, settings: tp.Dict[str, tp.Any],
                  prompts: tp.Sequence[Prompt], prompt_wav: tp.Any, weights: str) -> tp.Dict[str, tp.Any]:
    used, state = epoch_weights(checkpoint, weights)
    model.lm.load_state_dict(state)
    model.lm.eval()
    del state
    out.mkdir(parents=True, exist_ok=True)
    _clear(out, [])
    files = {}
    for prompt in prompts:
        wav = _generate(model, xp, prompt, settings["duration"], prompt_wav)
        files[prompt.id] = write_sample(wav, xp.sample_rate, out, prompt.id, f"epoch {epoch}: {prompt.id}")
        logger.info("epoch %d: %s (%s) -> %s", epoch, prompt.id, prompt.label(), out / files[prompt.id]["wav"])
    data = {"settings": settings, "files": files,
            "info": {"weights_used": used, "checkpoint_path": str(checkpoint), "device": str(model.device),
                     "generation_params": {k: v for k, v in model.generation_params.items()
                                           if isinstance(v, (int, float, bool, str, type(None)))},
                     "valid": _history_valid(xp, epoch)}}
    atomic.write_json(out / SETTINGS, data, indent=1, ensure_ascii=False)
    return data


def _write_oracle(model: tp.Any, xp: XPInfo, out: Path, settings: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    _clear(out, [])
    real = read_segment(settings["prompt_audio"], xp.sample_rate, xp.channels, settings["duration"])
    codec = model.compression_model
    with torch.no_grad():
        codes, scale = codec.encode(real[None].to(model.device))
        decoded = codec.decode(codes, scale)[0].detach().float().cpu()[..., :real.shape[-1]]
    files = {"continuation": write_sample(decoded, xp.sample_rate, out, "continuation", "oracle: codec reconstruction"),
             "reference": write_sample(real, xp.sample_rate, out, "reference", "real audio")}
    data = {"settings": settings, "files": files, "info": {"codes_shape": list(codes.shape)}}
    atomic.write_json(out / SETTINGS, data, indent=1, ensure_ascii=False)
    logger.info("oracle: codec reconstruction of %s -> %s", settings["prompt_audio"], out)
    return data


def run_sampler(sig: str, *, epochs: tp.Optional[tp.Sequence[int]] = None, workspace: tp.Optional[PathLike] = None,
                outputs: tp.Optional[PathLike] = None, duration: float = 5.0, prompt_seconds: float = 2.0,
                prompt_audio: tp.Optional[PathLike] = None, seed: int = 0, num_unconditional: int = 2,
                max_conditions: int = 8, weights: str = "auto", device: tp.Optional[str] = None,
                force: bool = False, fad_clips: int = 0) -> tp.Dict[str, tp.Any]:
    """Sample the per-epoch checkpoints of LM XP ``sig``; write ``<outputs>/samples/`` and its ``index.html``.

    Args:
        sig: the LM XP's signature.
        epochs: which epochs (each must have a ``checkpoint_<N>.th``); None: every epoch not yet sampled
            with these settings. An epoch already complete with the same settings is skipped unless ``force``.
        outputs: receives ``samples/`` (default ``outputs/fixed_seed_sampler/<sig>``).
        duration: seconds generated per prompt (a continuation includes its prompt); at most 20.
        prompt_seconds: how much of the real audio prompts the continuation.
        prompt_audio: the real audio (default: :func:`default_prompt_audio`); its sidecar's genre or
            description conditions the continuation of a conditioned XP.
        seed: base seed (see :func:`build_prompts`); num_unconditional: unconditional prompts;
        max_conditions: at most this many genres/descriptions (:func:`pick_conditions`).
        weights: ``auto`` | ``model`` | ``ema`` | ``best`` (:func:`epoch_weights`).
        fad_clips: when > 0, also :func:`musicpipe.evaluation.evaluate_lm` every wanted epoch with that many
            clips (skipped when done); the FAD of every evaluated epoch shows in the page's header row.

    Returns:
        ``{"xp", "samples_dir", "index", "epochs" (available), "sampled", "skipped", "prompts", "oracle"}``.
    """
    if weights not in WEIGHTS:
        raise SamplerError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if not 0 < duration <= generation.MAX_DURATION:
        raise SamplerError(f"duration must be in (0, {generation.MAX_DURATION:g}] s, got {duration}")
    if not 0 < prompt_seconds < duration:
        raise SamplerError(f"prompt_seconds must be in (0, duration={duration:g}) s, got {prompt_seconds}")
    xp = resolve_lm_xp(sig, workspace)
    available = list_epochs(xp)
    if not available:
        raise SamplerError(f"{xp.folder}: no checkpoint_<epoch>.th; train with checkpoint.save_every=1 to keep one "
                           "per epoch")
    if xp.fsdp:
        raise SamplerError(f"{xp.folder}: trained with fsdp.use=true, whose per-epoch checkpoints are sharded")
    wanted = sorted(available) if epochs is None else sorted(set(int(e) for e in epochs))
    missing = [e for e in wanted if e not in available]
    if missing:
        raise SamplerError(f"{xp.folder}: no checkpoint for epoch(s) {', '.join(map(str, missing))}; available: "
                           f"{', '.join(map(str, available))}")
    if prompt_audio is None:
        prompt_audio = default_prompt_audio(xp, seed)
    prompt_path = Path(prompt_audio).expanduser().resolve()
    if not prompt_path.is_file():
        raise SamplerError(f"{prompt_path}: prompt audio not found")
    side = _sidecar(str(prompt_path))
    prompts = build_prompts(xp.conditioning, training_conditions(xp, max_conditions, seed),
                            prompt_audio=str(prompt_path), seed=seed, num_unconditional=num_unconditional,
                            prompt_condition=side.get("genre" if xp.conditioning == "genre" else "description"))
    samples = Path(outputs if outputs is not None else paths.OUTPUTS_DIR / "fixed_seed_sampler" / xp.sig) / "samples"
    common = {"format": FORMAT_VERSION, "xp": xp.sig, "conditioning": xp.conditioning, "seed": seed,
              "duration": float(duration), "prompt_seconds": float(prompt_seconds), "prompt_audio": str(prompt_path),
              "prompt_audio_file": _file_id(prompt_path), "sample_rate": xp.sample_rate, "channels": xp.channels,
              "normalisation": f"peak {PEAK}", "codec": _codec_id(xp)}
    epoch_settings = {e: {**common, "weights": weights, "prompts": [p.to_dict() for p in prompts],
                          "epoch": e, "checkpoint": _file_id(available[e])} for e in wanted}
    oracle_settings = {k: common[k] for k in common if k != "prompt_seconds"}

    def up_to_date(folder: Path, settings: tp.Mapping[str, tp.Any]) -> bool:
        data = _read_settings(folder)
        return not force and _complete(folder, data) and data is not None and data.get("settings") == settings

    todo = [e for e in wanted if not up_to_date(samples / epoch_dir_name(e), epoch_settings[e])]
    skipped = [e for e in wanted if e not in todo]
    for e in skipped:
        logger.info("epoch %d: skipped, already sampled with the same settings in %s", e,
                    samples / epoch_dir_name(e))
    oracle_todo = not up_to_date(samples / ORACLE, oracle_settings)
    if todo or oracle_todo:
        from tqdm import tqdm

        logger.info("XP %s (%s conditioning): %d prompts, epochs to sample: %s", xp.sig, xp.conditioning,
                    len(prompts), ", ".join(map(str, todo)) or "none (oracle only)")
        model = generation.load_musicgen(xp.sig, xp.workspace, device)
        prompt_wav = read_segment(str(prompt_path), xp.sample_rate, xp.channels, prompt_seconds)
        if oracle_todo:
            _write_oracle(model, xp, samples / ORACLE, oracle_settings)
        for e in tqdm(todo, desc=f"sampling XP {xp.sig}", unit="epoch", disable=len(todo) < 2):
            _sample_epoch(model, xp, e, available[e], samples / epoch_dir_name(e), epoch_settings[e], prompts,
                          prompt_wav, weights)
    try:  # checkpoint retention (checkpoint.keep_last) prunes sampled epochs first
        retention.record_sampled(xp.folder, [*todo, *skipped])
    except OSError as exc:
        logger.warning("could not record the sampled epochs in %s: %s", xp.folder, exc)
    if fad_clips > 0:
        for e in wanted:
            evaluation.evaluate_lm(xp.sig, xp.workspace, epoch=e, num_clips=fad_clips, device=device,
                                   outputs=samples.parent)
    index = write_index(samples, xp.sig, _xp(xp).fad)
    return {"xp": xp.sig, "samples_dir": str(samples), "index": str(index), "epochs": sorted(available),
            "sampled": todo, "skipped": skipped, "prompts": [p.id for p in prompts], "oracle": oracle_todo}


# ------------------------------------------------------------------------------------------------------- CLI


def summary_line(summary: tp.Mapping[str, tp.Any]) -> str:
    """``fixed_seed_sampler: <sig>: sampled epochs 1, 2; skipped none; N prompts -> <index>``.

    Example:
        >>> summary_line({"xp": "08e4d3f1", "sampled": [2], "skipped": [1], "prompts": ["a", "b"],
        ...               "index": "/o/samples/index.html"})
        'fixed_seed_sampler: 08e4d3f1: sampled epochs 2; skipped 1; 2 prompts -> /o/samples/index.html'
    """
    def epochs(values: tp.Sequence[int]) -> str:
        return ", ".join(map(str, values)) or "none"

    return (f"fixed_seed_sampler: {summary['xp']}: sampled epochs {epochs(summary['sampled'])}; skipped "
            f"{epochs(summary['skipped'])}; {len(summary['prompts'])} prompts -> {summary['index']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fixed_seed_sampler",
        description="Generate the same prompts with the same seeds from every per-epoch checkpoint of an LM XP; "
                    "write WAVs, spectrograms, settings.json and an index.html to compare epochs.")
    parser.add_argument("--xp", required=True, help="the LM XP signature")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--epoch", type=int, action="append", default=None,
                      help="sample this epoch (repeatable; default: every epoch not yet sampled)")
    what.add_argument("--list-epochs", action="store_true", help="list the per-epoch checkpoints and exit")
    what.add_argument("--generate-index", action="store_true", help="only (re)write samples/index.html")
    parser.add_argument("--outputs", default=None, help="receives samples/ (default outputs/fixed_seed_sampler/<sig>)")
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per sample (default 5)")
    parser.add_argument("--prompt-seconds", type=float, default=2.0,
                        help="seconds of real audio the continuation starts from (default 2)")
    parser.add_argument("--prompt-audio", default=None,
                        help="real audio to continue (default: a deterministic pick from the valid manifest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-unconditional", type=int, default=2)
    parser.add_argument("--max-conditions", type=int, default=8, help="at most this many genres/descriptions")
    parser.add_argument("--weights", choices=WEIGHTS, default="auto",
                        help="auto: EMA weights when saved, else the trained ones; best: best state so far")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--force", action="store_true", help="resample even epochs already done")
    parser.add_argument("--fad-clips", type=int, default=0,
                        help="also compute each sampled epoch's FAD with N clips (musicpipe evaluate; 0 = off)")
    return parser


def _samples_dir(args: argparse.Namespace) -> Path:
    return Path(args.outputs if args.outputs is not None else paths.OUTPUTS_DIR / "fixed_seed_sampler" / args.xp) \
        / "samples"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI; 1 with the reason on a :class:`SamplerError`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.list_epochs:
            xp = resolve_lm_xp(args.xp, args.workspace)
            available = list_epochs(xp)
            done = sampled_epochs(_samples_dir(args))
            for epoch, path in available.items():
                mark = "sampled" if epoch in done else "not sampled"
                print(f"epoch {epoch:>4}  {path.name:<22} {path.stat().st_size / 2**20:9.1f} MiB  {mark}")
            print(f"fixed_seed_sampler: {xp.sig}: {len(available)} epoch checkpoint(s) "
                  f"({', '.join(map(str, available)) or 'none'}) in {xp.folder}")
            return 0
        if args.generate_index:
            xp = resolve_lm_xp(args.xp, args.workspace)
            index = write_index(_samples_dir(args), args.xp, _xp(xp).fad)
            print(f"fixed_seed_sampler: {args.xp}: index of {len(sampled_epochs(index.parent))} epoch(s) -> {index}")
            return 0
        summary = run_sampler(args.xp, epochs=args.epoch, workspace=args.workspace, outputs=args.outputs,
                              duration=args.duration, prompt_seconds=args.prompt_seconds,
                              prompt_audio=args.prompt_audio, seed=args.seed,
                              num_unconditional=args.num_unconditional, max_conditions=args.max_conditions,
                              weights=args.weights, device=args.device, force=args.force,
                              fad_clips=args.fad_clips)
    except SamplerError as e:
        print(f"fixed_seed_sampler: error: {e}", file=sys.stderr)
        return 1
    print(summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

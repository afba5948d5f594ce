"""A built-in source of short synthetic music clips with metadata, deterministic for a seed.

Genres differ audibly in tempo and timbre (chords, a bass line, a drum pattern), so a genre-
conditioned model has something to learn. Used by the demo and the tests; no download needed:
:func:`render_sources` writes the clips and :func:`prepare_synthetic` runs them through ``prepare``.

Example:
    >>> from musicpipe.sources.synthetic import render_clip
    >>> clip = render_clip("techno", seed=0, duration=1.0, sample_rate=16000)
    >>> clip.shape, bool(abs(clip).max() <= 1.0)
    ((16000,), True)
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
from pathlib import Path

import numpy as np

from musicpipe import atomic, paths
from musicpipe.sources.base import NAME, Option, Source

logger = logging.getLogger(__name__)

DEFAULT_NAME = "synthetic_demo"


@dataclasses.dataclass(frozen=True)
class Style:
    bpm: float
    wave: str           # timbre of chords and bass: sine | square | saw
    kick_every: int     # drum pattern: kick on every n-th eighth note (0: no drums)
    hat: bool           # hi-hat noise on off-beats
    root_midi: int      # key centre
    moods: str
    instrument: str


GENRES: tp.Dict[str, Style] = {
    "ambient": Style(bpm=70, wave="sine", kick_every=0, hat=False, root_midi=57, moods="calm, dreamy",
                     instrument="pad"),
    "techno": Style(bpm=128, wave="saw", kick_every=2, hat=True, root_midi=45, moods="driving, dark",
                    instrument="synthesizer"),
    "rock": Style(bpm=110, wave="square", kick_every=4, hat=True, root_midi=52, moods="energetic",
                  instrument="guitar"),
    "chiptune": Style(bpm=150, wave="square", kick_every=2, hat=False, root_midi=64, moods="playful, happy",
                      instrument="synthesizer"),
}
PROGRESSION = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4))  # I IV V vi, semitones from the root


def _osc(wave: str, freq: float, t: np.ndarray) -> np.ndarray:
    phase = (freq * t) % 1.0
    if wave == "sine":
        return np.sin(2 * np.pi * phase)
    if wave == "square":
        return np.where(phase < 0.5, 1.0, -1.0) * 0.6
    if wave == "saw":
        return (2.0 * phase - 1.0) * 0.7
    raise ValueError(f"unknown wave {wave!r}")


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def render_clip(genre: str, seed: int, duration: float, sample_rate: int = 32000) -> np.ndarray:
    """A mono float32 clip in [-1, 1] of ``duration`` seconds for ``genre``."""
    if genre not in GENRES:
        raise ValueError(f"unknown genre {genre!r}; known: {', '.join(GENRES)}")
    style = GENRES[genre]
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    bpm = style.bpm * rng.uniform(0.95, 1.05)
    beat = 60.0 / bpm
    root = style.root_midi + int(rng.integers(-2, 3))
    out = np.zeros(n, dtype=np.float64)
    bar = 4 * beat
    for start_bar in np.arange(0.0, duration, bar):
        chord = PROGRESSION[int(start_bar / bar) % len(PROGRESSION)]
        a, b = int(start_bar * sample_rate), min(n, int((start_bar + bar) * sample_rate))
        seg = t[a:b] - start_bar
        env = np.minimum(1.0, seg / 0.02) * np.exp(-seg / (bar * 0.8))
        for interval in chord:
            out[a:b] += 0.15 * env * _osc(style.wave, _midi_hz(root + 12 + interval), seg)
        for k in range(4):  # bass: root then fifth, one note per beat
            ba, bb = int((start_bar + k * beat) * sample_rate), int((start_bar + (k + 1) * beat) * sample_rate)
            if ba >= n:
                break
            bb = min(bb, n)
            bs = t[ba:bb] - (start_bar + k * beat)
            note = root + chord[0] + (7 if k % 2 else 0)
            out[ba:bb] += 0.25 * np.exp(-bs / (beat * 0.6)) * _osc(style.wave, _midi_hz(note - 12), bs)
    eighth = beat / 2
    for i, start in enumerate(np.arange(0.0, duration, eighth)):
        a = int(start * sample_rate)
        if style.kick_every and i % style.kick_every == 0:
            m = min(n - a, int(0.15 * sample_rate))
            s = np.arange(m) / sample_rate
            out[a:a + m] += 0.6 * np.exp(-s / 0.04) * np.sin(2 * np.pi * (50 + 100 * np.exp(-s / 0.02)) * s)
        if style.hat and i % 2 == 1:
            m = min(n - a, int(0.03 * sample_rate))
            out[a:a + m] += 0.08 * np.exp(-np.arange(m) / (0.01 * sample_rate)) * rng.standard_normal(m)
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.8 * out / peak).astype(np.float32)


def render_sources(name: str = "synthetic_demo", workspace: tp.Optional[tp.Union[str, Path]] = None,
                   tracks_per_genre: int = 4, duration: float = 10.0, sample_rate: int = 44100, seed: int = 0,
                   genres: tp.Optional[tp.Sequence[str]] = None) -> tp.List[tp.Any]:
    """Render the clips into ``<ws>/data/<name>/downloads/`` (the source's "download") as prepare inputs.

    Each track has its own artist (a seed other than 0 gives other artists). Clips already rendered with the same parameters are kept.
    Rendered at 44.1 kHz so ``prepare`` really resamples, as it does for real music.
    """
    import soundfile as sf
    from tqdm import tqdm

    from musicpipe.prepare import TrackInput

    chosen = list(genres or GENRES)
    unknown = [g for g in chosen if g not in GENRES]
    if unknown:
        raise ValueError(f"unknown genres {unknown}; known: {', '.join(GENRES)}")
    out = paths.dataset_dir(name, workspace) / "downloads"
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(g_index, genre, k) for g_index, genre in enumerate(chosen) for k in range(tracks_per_genre)]
    inputs = []
    for g_index, genre, k in tqdm(jobs, desc=f"synthetic {name}", unit="clip", disable=len(jobs) < 50):
        track = f"{genre}_{k:03d}"
        wav = out / f"{track}.wav"
        clip_seed = seed * 100_003 + g_index * 1_009 + k
        stamp = f"{clip_seed}:{duration}:{sample_rate}"
        stamp_path = wav.with_suffix(".params")
        if not (wav.exists() and stamp_path.exists() and stamp_path.read_text() == stamp):
            with atomic.atomic_path(wav) as tmp:
                sf.write(tmp, render_clip(genre, clip_seed, duration, sample_rate), sample_rate, format="WAV",
                         subtype="PCM_16")
            atomic.write_text(stamp_path, stamp)
        style = GENRES[genre]
        # another seed renders other music: other "artists", so combined synthetic sets split cleanly
        artist = f"synth artist {genre} {k}" + (f" seed {seed}" if seed else "")
        moods = [m.strip() for m in style.moods.split(",")]
        inputs.append(TrackInput(
            path=wav, track_id=track, artist=artist, title=f"{genre} study {k}",
            album="musicpipe synthetic", genre=genre, genres=[genre], tags=["synthetic", genre], moods=moods,
            instrument=style.instrument,
            description=f"{style.moods} {genre} track at {style.bpm:.0f} bpm with {style.instrument}",
            license="CC0", extra={"source": "synthetic", "bpm": style.bpm}))
    return inputs


def prepare_synthetic(name: str = "synthetic_demo", workspace: tp.Optional[tp.Union[str, Path]] = None,
                      config: tp.Any = None, *, tracks_per_genre: int = 4, duration: float = 10.0, seed: int = 0,
                      genres: tp.Optional[tp.Sequence[str]] = None, force: bool = False,
                      progress: bool = True) -> tp.Dict[str, tp.Any]:
    """Render the synthetic source and run it through ``prepare`` like any other source.

    Returns prepare's report; ``dset=audio/<name>`` works afterwards.
    """
    from musicpipe.prepare import PrepareConfig, prepare_tracks

    inputs = render_sources(name, workspace, tracks_per_genre, duration, seed=seed, genres=genres)
    return prepare_tracks(inputs, name, workspace, config or PrepareConfig(), force=force, write_dset_config=True,
                          progress=progress)


def source_prepare(workspace: tp.Optional[tp.Union[str, Path]] = None, config: tp.Any = None, *,
                   name: tp.Optional[str] = None, tracks_per_genre: int = 4, duration: float = 10.0, seed: int = 0,
                   force: bool = False, progress: bool = True) -> tp.Dict[str, tp.Any]:
    """The registry's prepare step: :func:`prepare_synthetic` (``name`` defaults to ``synthetic_demo``)."""
    return prepare_synthetic(name or DEFAULT_NAME, workspace, config, tracks_per_genre=tracks_per_genre,
                             duration=duration, seed=seed, force=force, progress=progress)


SOURCE = Source(
    name="synthetic", help="built-in clips in 4 audibly different genres, deterministic (CC0; the demo's data)",
    prepare=source_prepare, dataset=lambda o: o.get("name") or DEFAULT_NAME,
    prepare_options=(
        NAME,
        Option("tracks_per_genre", "--tracks-per-genre", "clips per genre", type=int, default=4),
        Option("duration", "--duration", "seconds per clip", type=float, default=10.0),
        Option("seed", None, "which clips (another seed: other clips and artists)", type=int, default=0),
    ),
)

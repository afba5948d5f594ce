"""MusicGen trains from a token store (:mod:`musicpipe.token_cache`) instead of encoding audio every step.

``train-lm --token-cache`` sets ``MUSICPIPE_TOKEN_CACHE=<store folder>`` in the Dora processes' environment
(outside the XP signature: the tokens are the codec's own, so the XP is the same XP with or without the
cache and a run can resume either way). :func:`install_token_cache_hook` wraps ``MusicGenSolver.__init__``:
once AudioCraft has built its audio loaders and its compression model, the hook

1. opens the store and refuses (naming the store) unless its codec is the solver's compression model (same
   weights hash, codebooks, cardinality, rates) and its train split was built from the train manifest the
   solver reads (same segments, sizes, modification times);
2. replaces the train loader with one over :class:`TokenSegments`, which draws exactly the examples the audio
   dataset would (same file sampling and random seek, seeded by index and epoch as AudioCraft does), crops the
   tokens at the frame where the seek falls, and builds the conditioning attributes from the same sidecars
   (genre, description, text augmentations) as ``MusicDataset``;
3. uses AudioCraft's own cached-batch path in ``_prepare_tokens_and_attributes`` (``_cached_batch_loader``):
   tokens go to the LM directly, classifier-free dropout and the padding mask apply as for audio.

Valid, evaluate and generate stages keep reading audio. Under ``dora run -d`` the loader is built the way
AudioCraft builds the audio one (``flashy.distrib.loader``: a DistributedSampler, each rank its share).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import typing as tp
from pathlib import Path

from musicpipe import token_cache

logger = logging.getLogger(__name__)


class TokenSegments:
    """A torch Dataset of training examples from a store, mirroring an AudioCraft ``MusicDataset`` (``audio``)."""

    def __init__(self, audio: tp.Any, store: token_cache.Store, split: str = "train"):
        self.audio = audio
        self.store = store
        self.index = store.split(split)
        self.frame_rate = float(store.codec["frame_rate"])

    def __len__(self) -> int:
        return len(self.audio)

    def _draw(self, index: int) -> tp.Tuple[tp.Any, float]:
        """The file and seek time AudioCraft's ``AudioDataset.__getitem__`` draws for ``index`` (same RNG use)."""
        import torch

        ds = self.audio
        rng = torch.Generator()
        if ds.shuffle:
            if ds.current_epoch is None:
                rng.manual_seed(index + ds.num_samples * random.randint(0, 2**24))
            else:
                rng.manual_seed(index + ds.num_samples * (ds.current_epoch + ds.shuffle_seed))
        else:
            rng.manual_seed(index)
        meta = ds.sample_file(index, rng)
        max_seek = max(0, meta.duration - ds.segment_duration * ds.min_segment_ratio)
        return meta, torch.rand(1, generator=rng).item() * max_seek

    def __getitem__(self, index: int) -> tp.Any:
        import torch
        from audiocraft.data.audio_dataset import SegmentInfo
        from audiocraft.data.info_audio_dataset import AudioInfo

        ds = self.audio
        meta, seek = self._draw(index)
        i = self.index.position(meta.path)
        tokens, seek, n_samples, total = token_cache.crop(self.index.segment(i), int(self.index.samples[i]), seek,
                                                          ds.segment_duration, ds.sample_rate, self.frame_rate)
        segment = SegmentInfo(meta, seek, n_frames=n_samples, total_frames=total, sample_rate=ds.sample_rate,
                              channels=ds.channels)
        info = music_info(ds, AudioInfo(**segment.to_dict()))
        info.audio_tokens = torch.from_numpy(tokens)
        return info

    @staticmethod
    def collater(samples: tp.List[tp.Any]) -> tp.Tuple[tp.List[tp.Any]]:
        """A batch as AudioCraft's cached path unpacks it (``infos, = batch``)."""
        return (list(samples),)


def music_info(ds: tp.Any, info: tp.Any) -> tp.Any:
    """``MusicDataset.__getitem__``'s metadata for a segment, without its audio (same sidecar, same augmentations)."""
    from audiocraft.data.music_dataset import MusicInfo, augment_music_info_description

    info_data = info.to_dict()
    sidecar = Path(info.meta.path).with_suffix(".json")
    if sidecar.exists():
        with open(sidecar, "r") as f:
            music_data = json.load(f)
        music_data.update(info_data)
        out = MusicInfo.from_dict(music_data, fields_required=ds.info_fields_required)
        if ds.paraphraser is not None:
            out.description = ds.paraphraser.sample(out.meta.path, out.description)
        if ds.merge_text_p:
            out = augment_music_info_description(out, ds.merge_text_p, ds.drop_desc_p, ds.drop_other_p)
    else:
        out = MusicInfo.from_dict(info_data, fields_required=False)
    return out


class TokenLoader:
    """The train loader over :class:`TokenSegments`; ``start_epoch`` as AudioCraft's cached loader has."""

    def __init__(self, dataset: TokenSegments, loader: tp.Any):
        self.dataset = dataset
        self.loader = loader

    @property
    def sampler(self) -> tp.Any:
        return self.loader.sampler

    def start_epoch(self, epoch: int) -> None:
        self.dataset.audio.current_epoch = epoch  # read by the workers, forked when iteration starts

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> tp.Iterator[tp.Any]:
        return iter(self.loader)


def build_loader(solver: tp.Any, store: token_cache.Store) -> TokenLoader:
    """A train loader from ``store`` mirroring the solver's audio train loader (batch, workers, sampling)."""
    from audiocraft.data.music_dataset import MusicDataset
    from audiocraft.utils.utils import get_dataset_from_loader, get_loader

    original = solver.dataloaders["train"]
    audio = get_dataset_from_loader(original)
    if not isinstance(audio, MusicDataset):
        raise token_cache.TokenCacheError(f"the token cache trains MusicGen from a MusicDataset, not {type(audio)}")
    if audio.joint_embed_attributes:
        raise token_cache.TokenCacheError("joint-embedding conditioners (CLAP) need the audio: train without "
                                          "--token-cache")
    if audio.segment_duration is None:
        raise token_cache.TokenCacheError("the token cache needs dataset.segment_duration")
    dataset = TokenSegments(audio, store)
    loader = get_loader(dataset, audio.num_samples, batch_size=original.batch_size, num_workers=original.num_workers,
                        seed=solver.cfg.seed, collate_fn=TokenSegments.collater, shuffle=audio.shuffle)
    return TokenLoader(dataset, loader)


def attach(solver: tp.Any, folder: str) -> None:
    """Check the store against the solver's codec and train manifest, then train from it."""
    store = token_cache.Store.open(folder)
    store.check_codec(token_cache.codec_meta(solver.compression_model, str(solver.cfg.compression_model_checkpoint)))
    train_egs = Path(str(solver.cfg.datasource.train))
    from musicpipe import manifests

    keys = [token_cache.segment_key(r.path) for r in manifests.read_manifest(train_egs)]
    if store.marker.get("splits", {}).get("train", {}).get("sha") != token_cache.keys_hash(keys):
        raise token_cache.TokenCacheError(f"{folder}: built from another train manifest than {train_egs} (segments "
                                          "added, removed or rewritten since): run `musicpipe cache-tokens` again")
    loader = build_loader(solver, store)
    solver.dataloaders["original_train"] = solver.dataloaders["train"]
    solver.dataloaders["train"] = loader
    solver._cached_batch_loader = loader
    import flashy

    logger.info("training from the token store %s (%d train segments, %d frames); rank %d/%d draws %d examples "
                "per epoch", folder, len(loader.dataset.index), int(loader.dataset.index.offsets[-1]),
                flashy.distrib.rank(), flashy.distrib.world_size(), len(loader.sampler))


def install_token_cache_hook() -> None:
    """Wrap ``MusicGenSolver.__init__`` (once) to train from ``$MUSICPIPE_TOKEN_CACHE`` when it is set."""
    from audiocraft.solvers.musicgen import MusicGenSolver

    if getattr(MusicGenSolver.__init__, "_musicpipe_token_cache", False):
        return
    original = MusicGenSolver.__init__

    @functools.wraps(original)
    def __init__(self: tp.Any, cfg: tp.Any) -> None:
        original(self, cfg)
        folder = os.environ.get(token_cache.ENV)
        if folder and "train" in self.dataloaders:
            if cfg.cache.path:
                raise token_cache.TokenCacheError("cache.path (AudioCraft's per-epoch batch cache) and the musicpipe "
                                                  "token cache exclude each other")
            attach(self, folder)

    __init__._musicpipe_token_cache = True  # type: ignore[attr-defined]
    MusicGenSolver.__init__ = __init__

"""Composing AudioCraft configs exactly as Dora does, without training (checks, doctor, tests).

Example:
    >>> from musicpipe import config, presets
    >>> args = presets.dora_run_args(presets.load_preset("demo_cpu"), "compression", dset="fma_small_mini")
    >>> cfg = config.compose(presets.hydra_overrides(args))      # doctest: +SKIP
    >>> cfg.rvq.n_q                                              # doctest: +SKIP
    4
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

from musicpipe import dora


def compose(overrides: tp.Sequence[str], workspace: tp.Optional[tp.Union[str, Path]] = None,
            resolve: bool = True) -> tp.Any:
    """The config Dora would build for ``overrides`` (a DictConfig), resolved unless ``resolve=False``.

    Raises Hydra's own exception when an override names a missing key, group or option.
    """
    from omegaconf import OmegaConf

    main = dora.dora_main(workspace)
    xp = main.get_xp(list(overrides))
    cfg = xp.cfg
    if resolve:
        OmegaConf.resolve(cfg)
    return cfg


def search_path(workspace: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[str]:
    """The config sources Hydra uses for AudioCraft's app (AudioCraft's own, then ours)."""
    from hydra._internal.utils import create_config_search_path

    main = dora.dora_main(workspace)
    config_dir = Path(main.full_config_path).resolve()
    sp = create_config_search_path(str(config_dir))
    return [f"{entry.provider}: {entry.path}" for entry in sp.get_path()]

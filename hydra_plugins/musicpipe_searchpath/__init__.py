"""Hydra SearchPathPlugin: makes ``model_config/`` and ``<workspace>/config/`` config sources.

Hydra imports every module under the ``hydra_plugins`` namespace package (this folder has no
``__init__.py`` on purpose) and calls the plugin for each app it composes, AudioCraft's included.
Both sources come after AudioCraft's own configs, so ``dset=audio/<name>``,
``conditioner=genre_lut`` and our solver overrides resolve as if they were AudioCraft's, and XP
signatures do not depend on where the project or workspace lives.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from musicpipe import paths


class MusicpipeSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="musicpipe", path=f"file://{paths.MODEL_CONFIG_DIR}")
        ws_config = paths.workspace_config_dir()
        if ws_config.is_dir():
            search_path.append(provider="musicpipe-workspace", path=f"file://{ws_config}")

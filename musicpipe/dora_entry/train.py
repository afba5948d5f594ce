"""AudioCraft's ``train.main`` with the musicpipe integration layer active.

Importing this module (which every Dora process does) sets the environment, lets torch load
AudioCraft checkpoints, falls back to gloo without CUDA and registers training hooks; then it
re-exports AudioCraft's Hydra/Dora main unchanged, so XP signatures are AudioCraft's own.

Example (what :mod:`musicpipe.dora` runs for you):
    $ DORA_PACKAGE=musicpipe.dora_entry python -m dora run solver=compression/debug device=cpu ...
"""

from musicpipe import audiocraft_env

audiocraft_env.activate()

from audiocraft.train import get_solver_from_sig, get_solver_from_xp, main  # noqa: E402

from musicpipe.dora_entry.hooks import install_codec_check_hook  # noqa: E402

install_codec_check_hook()

# Spawned DDP workers run `python -m dora -P <package> --main_module <module> run ...`.
main.package = audiocraft_env.DORA_PACKAGE
main.main_module = audiocraft_env.DORA_MAIN_MODULE

__all__ = ["main", "get_solver_from_sig", "get_solver_from_xp"]

if __name__ == "__main__":
    main()

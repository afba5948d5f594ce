"""AudioCraft's ``train.main`` with the musicpipe integration layer active.

Importing this module (which every Dora process does) sets the environment, lets torch load
AudioCraft checkpoints, falls back to gloo without CUDA and registers training hooks; then it
re-exports AudioCraft's Hydra/Dora main unchanged, so XP signatures are AudioCraft's own.
Hooks: the multi-node agreement check (:mod:`.node_agreement`, ``MUSICPIPE_NODE_FACTS``), codec quality checks
(:mod:`.hooks`), training stability (:mod:`.stability_hooks`, ``MUSICPIPE_STABILITY`` and ``STABILITY_*``), the LM
token cache (:mod:`.token_cache_hook`, ``MUSICPIPE_TOKEN_CACHE``), curriculum state carry-over (:mod:`.carry_state`,
``MUSICPIPE_CARRY_STATE``), a full disk at a checkpoint (:mod:`.disk_full`), W&B (:mod:`.wandb_hooks`,
``MUSICPIPE_WANDB_PROJECT``), then ``MUSICPIPE_EXTRA_HOOKS=module:function[,module:function]`` (:func:`install_extra_hooks`).

Example (what :mod:`musicpipe.dora` runs for you):
    $ DORA_PACKAGE=musicpipe.dora_entry python -m dora run solver=compression/debug device=cpu ...
"""

import os

from musicpipe import audiocraft_env, procs

if os.environ.get(procs.DIE_WITH_PARENT_ENV) == "1":  # set by musicpipe.dora.run: DDP workers die with Dora's launcher
    procs.die_with_parent()
audiocraft_env.activate()

from audiocraft.train import get_solver_from_sig, get_solver_from_xp, main  # noqa: E402

from musicpipe.dora_entry.carry_state import install_carry_state_hook  # noqa: E402
from musicpipe.dora_entry.disk_full import install_disk_full_hook  # noqa: E402
from musicpipe.dora_entry.hooks import install_codec_check_hook  # noqa: E402
from musicpipe.dora_entry.loader_workers import install_loader_workers_hook  # noqa: E402
from musicpipe.dora_entry.node_agreement import install_node_agreement_hook  # noqa: E402
from musicpipe.dora_entry.retention import install_retention_hook  # noqa: E402
from musicpipe.dora_entry.stability_hooks import install_stability_hooks  # noqa: E402
from musicpipe.dora_entry.token_cache_hook import install_token_cache_hook  # noqa: E402
from musicpipe.dora_entry.wandb_hooks import install_wandb_hook  # noqa: E402

EXTRA_HOOKS_ENV = "MUSICPIPE_EXTRA_HOOKS"


def install_extra_hooks(spec: str | None = None) -> list[str]:
    """Import and call each ``module:function`` of ``$MUSICPIPE_EXTRA_HOOKS`` (comma-separated), in order.

    For researchers' own instrumentation (and the tests' fault injection): the functions run in every Dora
    process, after musicpipe's hooks, so what they wrap wraps ours. The modules must be importable there:
    put their folder on ``PYTHONPATH``. A malformed entry or a failed import stops the process with a message
    naming the entry. Returns the entries called.

    Example:
        $ MUSICPIPE_EXTRA_HOOKS=my_probes:install PYTHONPATH=~/probes musicpipe train-lm ...
    """
    import importlib
    import os

    spec = os.environ.get(EXTRA_HOOKS_ENV, "") if spec is None else spec
    done = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        module_name, sep, func_name = entry.partition(":")
        if not sep or not module_name or not func_name:
            raise ValueError(f"{EXTRA_HOOKS_ENV}: {entry!r} is not module:function")
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"{EXTRA_HOOKS_ENV}: cannot load {entry!r} ({type(e).__name__}: {e}); is its folder "
                              "on PYTHONPATH?") from e
        func()
        done.append(entry)
    return done


install_codec_check_hook()
install_stability_hooks()
install_carry_state_hook()
install_wandb_hook()
install_retention_hook()  # checkpoint.keep_last; after the stability hooks: prunes only once a save succeeded
install_loader_workers_hook()  # dataset.num_workers sized to this machine
install_node_agreement_hook()  # MUSICPIPE_NODE_FACTS (multi-node launch): all ranks see one workspace, before training
install_token_cache_hook()  # MUSICPIPE_TOKEN_CACHE: train the LM from a token store (musicpipe.token_cache)
install_disk_full_hook()  # a checkpoint write that fills the disk: one line, no partial file
# Keep last (after any other install_* line): researchers' hooks wrap ours.
install_extra_hooks()

# Spawned DDP workers run `python -m dora -P <package> --main_module <module> run ...`.
main.package = audiocraft_env.DORA_PACKAGE
main.main_module = audiocraft_env.DORA_MAIN_MODULE

__all__ = ["main", "get_solver_from_sig", "get_solver_from_xp"]

if __name__ == "__main__":
    main()

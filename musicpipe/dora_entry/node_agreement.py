"""Before a multi-node run trains, every rank agrees it sees rank 0's workspace, codec and manifests.

AudioCraft writes checkpoints from rank 0 only and every rank reads ``checkpoint.th`` on resume; weights are never
broadcast. A node that does not see the shared workspace would start from scratch while the others resume.
:func:`install_node_agreement_hook` (called by :mod:`musicpipe.dora_entry.train`) wraps ``flashy.distrib.init``
(AudioCraft's DDP init, called before the solver is built): when the launcher set ``MUSICPIPE_NODE_FACTS``
(:func:`musicpipe.multinode.node_facts`, a multi-node launch), right after the process group is up

1. rank 0 writes a fresh token into its XP folder (``.musicpipe-nodes.json``, temp-then-rename);
2. every rank receives rank 0's token (``all_gather_object``: also the barrier after the write) and reads the file
   back through its own XP folder;
3. every rank gathers every rank's facts and what it read, and :func:`musicpipe.multinode.disagreements` decides.

On a disagreement every rank prints ``musicpipe: refused: <which node and why>`` and exits with status 3 before
any model is built; the launcher shows that line as the error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import typing as tp
import uuid

from musicpipe import atomic, multinode

logger = logging.getLogger(__name__)

MARK = "_musicpipe_node_agreement"
EXIT_REFUSED = 3


def _read_token(path: str) -> tp.Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("token")
    except FileNotFoundError:
        return f"missing ({os.path.realpath(path)} does not exist)"
    except (OSError, ValueError) as exc:
        return f"unreadable ({os.path.realpath(path)}: {exc})"


def agree(facts: tp.Mapping[str, tp.Any], xp_folder: str) -> tp.List[str]:
    """Steps 1-3 of the module docstring on the initialised process group; the disagreements ([] when none)."""
    import torch.distributed as dist

    rank = dist.get_rank()
    path = os.path.join(xp_folder, multinode.TOKEN_FILE)
    token = None
    if rank == 0:
        token = uuid.uuid4().hex
        atomic.write_json(path, {"token": token, "host": facts.get("host"), "workspace": facts.get("workspace")})
    tokens: tp.List[tp.Any] = [None] * dist.get_world_size()
    dist.all_gather_object(tokens, token)
    read = _read_token(path)
    mine = {**facts, "rank": rank, "node": int(os.environ.get("GROUP_RANK", "0")),
            "token": True if read == tokens[0] else read}
    gathered: tp.List[tp.Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return multinode.disagreements(gathered)


def install_node_agreement_hook() -> bool:
    """Wrap ``flashy.distrib.init`` as the module docstring says; no-op (False) outside a multi-node launch."""
    raw = os.environ.get(multinode.FACTS_ENV)
    if not raw:
        return False
    import flashy.distrib

    if getattr(flashy.distrib.init, MARK, False):
        return True
    facts = json.loads(raw)
    original = flashy.distrib.init

    @functools.wraps(original)
    def init(*args: tp.Any, **kwargs: tp.Any) -> None:
        original(*args, **kwargs)
        import torch.distributed as dist
        from dora import get_xp

        if not dist.is_initialized():
            return
        problems = agree(facts, str(get_xp().folder))
        if problems:
            message = multinode.REFUSED + "the nodes do not agree: " + " | ".join(problems)
            logger.error("%s", message)
            print(message, file=sys.stderr, flush=True)
            sys.exit(EXIT_REFUSED)
        logger.info("all %d ranks see workspace %s, the same manifests%s", dist.get_world_size(),
                    facts.get("workspace"), " and codec" if facts.get("codec") else "")

    setattr(init, MARK, True)
    flashy.distrib.init = init
    return True

"""Fault injection for real AudioCraft training runs, loaded through ``MUSICPIPE_EXTRA_HOOKS``.

In the Dora process (``PYTHONPATH`` holding this folder)::

    MUSICPIPE_EXTRA_HOOKS=fault_injection:install FAULT_NAN_STEPS=7,8 FAULT_INF_GRAD_STEPS=3 musicpipe train-lm ...

``install()`` wraps ``run_step`` of the compression and musicgen solvers (after musicpipe's hooks, so around
them). On the chosen training steps, counted from 1 across epochs (``(epoch - 1) * updates_per_epoch + idx + 1``,
so a resumed run counts the same way):

- ``FAULT_NAN_STEPS``: the model's output is multiplied by NaN (a forward hook on ``solver.model``: the LM's
  logits, the codec's reconstruction), so the loss and every gradient are NaN. The input batch is left
  alone: a NaN batch would also poison a codec's RVQ codebook buffers, which update in the forward pass.
- ``FAULT_INF_GRAD_STEPS``: the gradient of the model's first trainable parameter is replaced by +inf (a
  tensor hook), the loss stays finite.

Both hooks exist only during that step. Each injection logs ``fault_injection: ...`` (WARNING).
``FAULT_RANKS`` (e.g. ``1``) limits the faults to those DDP ranks (default: every rank).

Example:
    >>> parse_steps("7, 8,,3"), parse_steps(None)
    ([3, 7, 8], [])
    >>> global_step(epoch=2, idx=1, updates_per_epoch=5)
    7
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import typing as tp

logger = logging.getLogger("fault_injection")

NAN_ENV = "FAULT_NAN_STEPS"
INF_ENV = "FAULT_INF_GRAD_STEPS"
RANKS_ENV = "FAULT_RANKS"
MARK = "_fault_injection"


def parse_steps(text: tp.Optional[str]) -> tp.List[int]:
    """Sorted step numbers of a comma-separated list (empty items ignored)."""
    return sorted({int(part) for part in (text or "").split(",") if part.strip()})


def global_step(epoch: int, idx: int, updates_per_epoch: int) -> int:
    """The 1-based training step across epochs of step ``idx`` (0-based) of ``epoch`` (1-based)."""
    return (epoch - 1) * updates_per_epoch + idx + 1


def _rank_selected() -> bool:
    ranks = parse_steps(os.environ.get(RANKS_ENV))
    if not ranks:
        return True
    import flashy

    return flashy.distrib.rank() in ranks


def _nan_output(module: tp.Any, inputs: tp.Any, output: tp.Any) -> tp.Any:
    if dataclasses.is_dataclass(output) and hasattr(output, "x"):  # the codec's QuantizedResult
        return dataclasses.replace(output, x=output.x * float("nan"))
    return output * float("nan")  # the LM's logits


def _first_trainable(model: tp.Any) -> tp.Any:
    return next(p for p in model.parameters() if p.requires_grad)


def _wrap(original: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    @functools.wraps(original)
    def run_step(self: tp.Any, idx: int, batch: tp.Any, metrics: dict) -> tp.Any:
        if not self.is_training or not _rank_selected():
            return original(self, idx, batch, metrics)
        step = global_step(self.epoch, idx, self.train_updates_per_epoch)
        handles = []
        if step in parse_steps(os.environ.get(NAN_ENV)):
            logger.warning("fault_injection: NaN model output at training step %d (epoch %d, step %d)", step,
                           self.epoch, idx + 1)
            handles.append(self.model.register_forward_hook(_nan_output))
        if step in parse_steps(os.environ.get(INF_ENV)):
            import torch

            logger.warning("fault_injection: inf gradient at training step %d (epoch %d, step %d)", step,
                           self.epoch, idx + 1)
            handles.append(_first_trainable(self.model).register_hook(lambda g: torch.full_like(g, float("inf"))))
        try:
            return original(self, idx, batch, metrics)
        finally:
            for handle in handles:
                handle.remove()

    setattr(run_step, MARK, True)
    return run_step


def install() -> None:
    """Wrap ``run_step`` of the compression and musicgen solvers (once)."""
    from audiocraft.solvers.compression import CompressionSolver
    from audiocraft.solvers.musicgen import MusicGenSolver

    for cls in (CompressionSolver, MusicGenSolver):
        if not getattr(cls.__dict__.get("run_step"), MARK, False):
            cls.run_step = _wrap(cls.run_step)

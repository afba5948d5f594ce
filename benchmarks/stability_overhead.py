"""Cost of the stability monitor per training step, against the same steps without it, in one run.

    .venv/bin/python benchmarks/stability_overhead.py [--steps 30] [--repeats 5] [--device cpu|cuda]

A transformer LM step of the kind MusicGen takes (AudioCraft's own ``LMModel``, xsmall scale: 4 codebooks of
256 entries, 2 s of 50 Hz tokens, batch 4; AdamW + grad-norm clipping as the musicgen solver does) is timed
plain, then with :class:`musicpipe.dora_entry.stability_hooks.StepGuard` observing it the way the Dora hook
does (loss recorded, the optimizer's step guarded: total gradient norm, finiteness, LR scale, then the
monitor's decision). Plain and guarded runs alternate ``--repeats`` times; the best of each is kept.
Prints steps per second for both and the ratio guarded / plain (1.0 = free).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build(device: str):
    import torch
    from audiocraft.models.lm import LMModel
    from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
    from audiocraft.modules.conditioners import ConditionFuser, ConditioningProvider

    torch.manual_seed(0)
    lm = LMModel(DelayedPatternProvider(n_q=4), n_q=4, card=256, dim=256, num_heads=4, num_layers=4, hidden_scale=4,
                 condition_provider=ConditioningProvider({}), fuser=ConditionFuser({"sum": [], "prepend": [], "cross": [], "input_interpolate": []}),
                 norm_first=True, bias_proj=False, bias_ff=False, bias_attn=False).to(device)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    codes = torch.randint(0, 256, (4, 4, 100), device=device)
    return lm, opt, codes


def run(steps: int, device: str, guarded: bool) -> float:
    import torch
    import torch.nn.functional as F

    from musicpipe.dora_entry.stability_hooks import StepGuard
    from training_checks.stability_monitor import StabilityMonitor

    lm, opt, codes = build(device)
    guard = None
    if guarded:
        guard = StepGuard(StabilityMonitor(), device=device)
        guard.guard_optimizer(opt, primary=True)
        guard.monitor.start_epoch(1, expected_steps=steps + 2)

    def step() -> None:
        if guard is not None:
            guard.begin_step()
        out = lm.compute_predictions(codes, [], condition_tensors={})
        loss = F.cross_entropy(out.logits[out.mask].float(), codes[out.mask])
        if guard is not None:
            guard.record_loss(loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if guard is not None:
            guard.end_step()

    for _ in range(2):  # warm-up
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from musicpipe import audiocraft_env

    audiocraft_env.activate()
    plain, guarded = [], []
    for _ in range(args.repeats):
        plain.append(run(args.steps, args.device, False))
        guarded.append(run(args.steps, args.device, True))
    result = {"device": args.device, "steps": args.steps, "repeats": args.repeats,
              "plain_steps_per_s": round(max(plain), 2), "guarded_steps_per_s": round(max(guarded), 2),
              "guarded_over_plain": round(max(guarded) / max(plain), 3)}
    print(json.dumps(result))
    print(f"stability_overhead: {result['guarded_steps_per_s']} vs {result['plain_steps_per_s']} steps/s "
          f"({args.device}): guarded/plain {result['guarded_over_plain']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

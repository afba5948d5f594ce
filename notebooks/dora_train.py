"""Train (or resume) an EnCodec codec with `dora run`: a thin CLI over `musicpipe train-codec`.

One GPU:            python notebooks/dora_train.py --dataset fma_small_mini --preset fma_small_mini
4 GPUs (DDP):       python notebooks/dora_train.py --dataset fma_large --preset fma_large --gpus 4
Tiny CPU run:       python notebooks/dora_train.py --dataset synthetic_demo --preset demo_cpu
Hydra overrides:    python notebooks/dora_train.py --preset fma_small_mini -- optim.lr=3e-4

Prints `xp: <sig>`; re-running the same command resumes that XP from its last checkpoint.
Checkpoints are published to `outputs/Checkpoints Small/<sig>/`.
"""

import sys

from musicpipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-codec", *sys.argv[1:]]))

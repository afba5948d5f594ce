"""Train (or resume) a MusicGen LM on a trained codec: a thin CLI over `musicpipe train-lm`.

Unconditional debug run (the seed's):
    python notebooks/musicgen_train.py --dataset fma_small_mini --preset fma_small_mini --codec latest
Genre-conditioned (lookup table on the sidecars' genre; works offline):
    python notebooks/musicgen_train.py --dataset fma_small_mini --preset fma_small_mini --codec <sig> --conditioning genre
Text-conditioned (T5; pods that reach the Hugging Face hub):
    python notebooks/musicgen_train.py --dataset fma_large --preset fma_large --gpus 4 --codec <sig> --conditioning text

`transformer_lm.n_q`/`card` come from the codec's XP; prints `xp: <sig>`; re-running resumes.
"""

import sys

from musicpipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-lm", *sys.argv[1:]]))

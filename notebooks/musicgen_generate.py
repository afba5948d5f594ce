"""Generate samples from a trained LM: a thin CLI over `musicpipe generate`.

From an XP:          python notebooks/musicgen_generate.py --xp <sig> --genre rock --genre jazz --duration 10
From an export:      python notebooks/musicgen_generate.py --export outputs/exports/<sig> --num-samples 4
Continuation:        python notebooks/musicgen_generate.py --xp <sig> --prompt-audio intro.wav --duration 12
Output:              --output DIR (WAVs at the model's rate + settings.json; default outputs/samples/<sig>)
"""

import sys

from musicpipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))

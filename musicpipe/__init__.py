"""musicpipe: a training pipeline for music generation on AudioCraft.

Importing this package is cheap and has no side effects: heavy dependencies (torch, AudioCraft,
Dora) are imported inside the functions that need them, so ``python3 -m musicpipe.install`` runs
with nothing but the standard library.
"""

__version__ = "0.1.0"

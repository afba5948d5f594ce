"""Dora entry package (``DORA_PACKAGE=musicpipe.dora_entry``): AudioCraft's trainer, adapted.

``dora run`` imports ``musicpipe.dora_entry.train``; so do the workers ``dora run -d`` spawns, because
the entry points ``main.package`` at this package. See :mod:`musicpipe.dora_entry.train`.
"""

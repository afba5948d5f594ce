"""Bootstrap for running a check as a script: ``python training_checks/<check>.py``.

Python then puts ``training_checks/`` itself first on ``sys.path``, so ``musicpipe`` and ``training_checks``
are importable only when the project is installed. Each check starts with the same one-line guard::

    if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
        import _script  # noqa: F401

which imports this module (found beside the script); it puts the repository root on ``sys.path`` when either
package is missing. ``python -m training_checks.<check>`` and imports skip the guard (``__package__`` is set).

Example:
    >>> from training_checks import _script
    >>> (_script.REPO_ROOT / "training_checks" / "_script.py").is_file()
    True
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

if any(importlib.util.find_spec(name) is None for name in ("musicpipe", "training_checks")):
    sys.path.insert(0, str(REPO_ROOT))

"""Data sources: one module per corpus with ``download_<corpus>`` (network) and ``prepare_<corpus>`` (offline).

``fma`` and ``mtg_jamendo`` are public corpora; ``musicpipe.folder`` handles any local folder and
``musicpipe.synthetic`` generates clips; ``combine`` merges prepared datasets.
"""


class SourceError(RuntimeError):
    """A source's download or prepare step cannot proceed (names the file and the reason)."""

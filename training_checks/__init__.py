"""Checks run on trained musicpipe models (each module is importable and runnable as a script).

Example:
    >>> import training_checks.codec_quality_check as cqc
    >>> callable(cqc.run_check)
    True
"""

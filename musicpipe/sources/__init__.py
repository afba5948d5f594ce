"""Data sources: one module per source, and :data:`SOURCES`, the one mapping of them.

``fma`` and ``mtg_jamendo`` are public corpora (download, then prepare); ``folder`` prepares any local
folder of audio and ``synthetic`` generates clips (prepare only). Each module keeps its lhotse-style
functions (``download_fma``, ``prepare_fma``, ...) and ends with a :class:`~musicpipe.sources.base.Source`
record whose ``download``/``prepare`` have one signature for all sources. The CLI's ``download``/``prepare``
choices and flags, ``pipeline.get_dataset`` and ``scripts/download_script.sh`` (through
``musicpipe sources``) all read :data:`SOURCES`: adding a source is a module with a ``SOURCE`` and one
entry in the tuple below. ``combine`` merges prepared datasets.

Example:
    >>> from musicpipe import sources
    >>> list(sources.SOURCES)
    ['fma', 'mtg_jamendo', 'folder', 'synthetic']
    >>> sources.get("fma").steps
    ('download', 'prepare')
    >>> sources.get("ftp")
    Traceback (most recent call last):
    ...
    musicpipe.sources.base.SourceError: unknown source 'ftp': expected one of fma, mtg_jamendo, folder, synthetic
"""

from __future__ import annotations

import dataclasses
import re
import typing as tp

from musicpipe.sources import fma, folder, mtg_jamendo, synthetic
from musicpipe.sources.base import Option, Source, SourceError

__all__ = ["SOURCES", "Option", "Source", "SourceError", "BatchItem", "get", "with_step", "batch_item"]

SOURCES: tp.Dict[str, Source] = {s.name: s for s in (fma.SOURCE, mtg_jamendo.SOURCE, folder.SOURCE,
                                                      synthetic.SOURCE)}
_ITEM_VALUE = re.compile(r"[A-Za-z0-9_,.-]+")


def get(name: str) -> Source:
    """The source called ``name``; an unknown name raises :class:`SourceError` listing the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceError(f"unknown source {name!r}: expected one of {', '.join(SOURCES)}") from None


def with_step(step: str) -> tp.List[str]:
    """The names of the sources that have ``step`` (``download`` or ``prepare``), in registry order.

    >>> with_step("download")
    ['fma', 'mtg_jamendo']
    """
    return [name for name, src in SOURCES.items() if step in src.steps]


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One item of ``scripts/download_script.sh`` resolved: the dataset and both musicpipe argument lists."""

    source: str
    dataset: str
    download: tp.List[str]
    prepare: tp.List[str]

    def lines(self) -> str:
        """Tab-separated lines the script reads: ``dataset``, ``download`` and ``prepare``."""
        return "\n".join("\t".join(row) for row in (["dataset", self.dataset], ["download", *self.download],
                                                   ["prepare", *self.prepare]))


def _item_source(item: str) -> tp.Tuple[Source, str]:
    name, sep, value = item.partition(":")
    batchable = [s for s in SOURCES.values() if s.download is not None and s.item]
    if sep:
        src = SOURCES.get(name)
        if src is not None and src in batchable:
            return src, value
    elif name in SOURCES and SOURCES[name] in batchable:
        src = SOURCES[name]
        raise SourceError(f"{name} needs its {src.item}, e.g. {name}:{src.item_example}")
    else:
        for src in batchable:
            if src.item_pattern and re.fullmatch(src.item_pattern, item):
                return src, item
    known = "; ".join(f"{s.name}:{s.item.upper()}" + (f" or a bare {s.item} such as {s.item_example}"
                                                       if s.item_pattern else f" e.g. {s.name}:{s.item_example}")
                      for s in batchable)
    raise SourceError(f"unknown item (expected {known})")


def batch_item(item: str, workspace: str, environ: tp.Mapping[str, str]) -> BatchItem:
    """Resolve a download-script item (``fma_small_mini``, ``fma:fma_large``, ``mtg_jamendo:0-9``).

    Each step's arguments are: the source, the item's option, the options read from ``environ`` that have a
    default (always passed), ``--workspace``, then those without a default that ``environ`` sets.

    >>> b = batch_item("mtg_jamendo:0-1", "/ws", {"MTG_MIRROR": "http://m/"})
    >>> b.dataset, " ".join(b.download)
    ('mtg_jamendo', 'mtg_jamendo --parts 0-1 --variant audio-low --workspace /ws --mirror http://m/')
    >>> batch_item("fma_small_mini", "/ws", {}).prepare
    ['fma', '--subset', 'fma_small_mini', '--workspace', '/ws']
    """
    src, value = _item_source(item)
    if not _ITEM_VALUE.fullmatch(value):
        raise SourceError(f"unexpected characters in {item}")
    values: tp.Dict[str, tp.Any] = {tp.cast(str, src.item): value}
    args: tp.Dict[str, tp.List[str]] = {}
    for step in ("download", "prepare"):
        head, tail = [src.name], []
        for opt in src.options(step):
            if opt.flag is None:
                continue
            if opt.dest == src.item:
                head += [opt.flag, value]
            elif opt.env is not None:
                given = environ.get(opt.env) or None
                if given is not None and opt.choices is not None and given not in opt.choices:
                    raise SourceError(f"{opt.env} must be one of {', '.join(opt.choices)}, got {given}")
                if opt.default is not None:
                    values[opt.dest] = given or opt.default
                    head += [opt.flag, str(values[opt.dest])]
                elif given is not None:
                    tail += [opt.flag, given]
        args[step] = [*head, "--workspace", str(workspace), *tail]
    dataset = src.dataset(values)
    assert dataset is not None, f"{src.name}: a downloadable source names its dataset"
    return BatchItem(src.name, dataset, args["download"], args["prepare"])


def describe_all() -> str:
    """``musicpipe sources``: one line per source (name, steps, what it is, the script's item and variables).

    >>> describe_all().splitlines()[2].split()[:2]
    ['folder', 'prepare']
    """
    rows = []
    for src in SOURCES.values():
        extra = ""
        if src.download is not None and src.item:
            extra = f" [download_script.sh item: {src.name}:{src.item.upper()}, e.g. {src.name}:{src.item_example}"
            envs = [o.env for o in (*src.download_options, *src.prepare_options) if o.env]
            envs = list(dict.fromkeys(envs))
            extra += (f"; variables: {', '.join(envs)}]" if envs else "]")
        rows.append(f"{src.name:<12} {' + '.join(src.steps):<19} {src.help}{extra}")
    return "\n".join(rows)

"""What every data source declares: a :class:`Source` record with its steps and their options.

A source module (``fma``, ``mtg_jamendo``, ``folder``, ``synthetic``) ends with ``SOURCE = Source(...)``;
:mod:`musicpipe.sources` collects them into one mapping, which the CLI, the notebooks' ``get_dataset`` and
``scripts/download_script.sh`` read. Every source has the same two entry points:

- ``download(workspace, *, force=False, **options) -> Path`` (network; ``None`` when there is nothing to
  download), and
- ``prepare(workspace, config, *, force=False, progress=True, **options) -> report`` (offline; prepare's
  report with its ``counts``),

where ``options`` are exactly the :class:`Option` ``dest`` names the source lists for that step.

Example:
    >>> opt = Option("parts", "--parts", "tar parts, e.g. 0-3")
    >>> opt.dest, opt.flag, opt.default
    ('parts', '--parts', None)
    >>> src = Source("demo", "an example", prepare=lambda workspace, config, **o: {}, dataset=lambda o: "demo")
    >>> src.steps
    ('prepare',)
"""

from __future__ import annotations

import dataclasses
import typing as tp


class SourceError(RuntimeError):
    """A source's download or prepare step cannot proceed (names the file and the reason)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword a source's step takes, and how the command line spells it.

    Attributes:
        dest: the keyword passed to ``download``/``prepare`` (and the notebooks' ``get_dataset`` argument).
        flag: the CLI flag (``--parts``), or None for a keyword only the library and notebooks pass.
        help: the CLI help, without the source's name (the CLI prefixes the names of the sources using it).
        type, default, choices, action, metavar: as for ``argparse.add_argument`` (``action="store_true"``
            for a switch).
        env: the environment variable ``scripts/download_script.sh`` reads the value from, if any.
    """

    dest: str
    flag: tp.Optional[str]
    help: str = ""
    type: tp.Optional[tp.Callable[[str], tp.Any]] = None
    default: tp.Any = None
    choices: tp.Optional[tp.Tuple[str, ...]] = None
    action: tp.Optional[str] = None
    env: tp.Optional[str] = None
    metavar: tp.Optional[str] = None

    def argparse_kwargs(self) -> tp.Dict[str, tp.Any]:
        """The keyword arguments of ``parser.add_argument(self.flag, **...)`` (without ``help``).

        >>> Option("force", "--force", action="store_true").argparse_kwargs()
        {'dest': 'force', 'action': 'store_true'}
        """
        if self.action:
            return {"dest": self.dest, "action": self.action}
        out: tp.Dict[str, tp.Any] = {"dest": self.dest, "default": self.default}
        if self.type is not None:
            out["type"] = self.type
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.metavar is not None:
            out["metavar"] = self.metavar
        return out


@dataclasses.dataclass(frozen=True)
class Source:
    """A data source: its steps, their options, and how its dataset is named.

    Attributes:
        name: the registry key and CLI choice (``musicpipe prepare <name>``).
        help: one line for ``musicpipe sources``.
        prepare: ``prepare(workspace, config, *, force=False, progress=True, **options) -> report``.
        dataset: the dataset name the source prepares, from the step options (None: a name must be given).
        download: ``download(workspace, *, force=False, **options) -> Path``, or None (nothing to download).
        download_options, prepare_options: the keywords each step takes.
        label: how ``musicpipe download`` names what it fetched, from the options (default: the dataset).
        item: for ``download_script.sh``: the option an item ``<name>:VALUE`` sets (e.g. ``parts``).
        item_pattern: a regular expression for bare items that are such values (e.g. ``fma_\\w+``).
        item_example: a VALUE to show in messages.
        default_split: the split the notebooks use for this source (the CLI's ``--split`` default is ``artist``).
    """

    name: str
    help: str
    prepare: tp.Callable[..., tp.Dict[str, tp.Any]]
    dataset: tp.Callable[[tp.Mapping[str, tp.Any]], tp.Optional[str]]
    download: tp.Optional[tp.Callable[..., tp.Any]] = None
    download_options: tp.Tuple[Option, ...] = ()
    prepare_options: tp.Tuple[Option, ...] = ()
    label: tp.Optional[tp.Callable[[tp.Mapping[str, tp.Any]], str]] = None
    item: tp.Optional[str] = None
    item_pattern: tp.Optional[str] = None
    item_example: str = ""
    default_split: str = "artist"

    @property
    def steps(self) -> tp.Tuple[str, ...]:
        """``("download", "prepare")`` or ``("prepare",)``."""
        return ("download", "prepare") if self.download is not None else ("prepare",)

    def options(self, step: str) -> tp.Tuple[Option, ...]:
        """The options of ``step`` (``download`` or ``prepare``)."""
        if step not in ("download", "prepare"):
            raise ValueError(f"step must be download or prepare, got {step!r}")
        return self.download_options if step == "download" else self.prepare_options

    def pick(self, step: str, values: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
        """The entries of ``values`` that ``step`` takes (keys not given keep the step's own defaults).

        >>> src = Source("s", "", prepare=print, dataset=lambda o: "s",
        ...              prepare_options=(Option("name", "--name"), Option("seed", None)))
        >>> src.pick("prepare", {"name": "x", "parts": "0-3"})
        {'name': 'x'}
        """
        return {o.dest: values[o.dest] for o in self.options(step) if o.dest in values}

    def describe(self, values: tp.Mapping[str, tp.Any]) -> str:
        """What a download of these options is called in the CLI's summary line."""
        if self.label is not None:
            return self.label(values)
        return self.dataset(values) or self.name


# Options several sources share (the CLI shows one flag for all of them).
MIRROR = Option("mirror", "--mirror", "base URL replacing the source's archive base")
KEEP_ARCHIVES = Option("keep_archives", "--keep-archives", "keep zips/tars after a verified extraction",
                       action="store_true")
NAME = Option("name", "--name", "dataset name (dset=audio/<name>)")

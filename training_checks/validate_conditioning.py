"""Does the metadata beside the audio support the conditioning an LM run will use?

Over a seeded sample of the train manifest's segments, reads each segment's sidecar (``<audio>.json``, where
AudioCraft's ``MusicDataset`` looks for it) the way AudioCraft does: every ``MusicInfo`` field (title, artist,
key, bpm, genre, moods, keywords, description, name, instrument) goes through ``MusicInfo.attribute_getter``
(lower-casing, keyword-list splitting, float bpm...), and a field counts as present when what comes out is not
empty. It reports:

- the share of sampled segments with each field (``description``, ``genre``, ``moods``...);
- the description length in tokens: T5's tokenizer (``t5-base``, as the ``text2music`` conditioner) when it is
  in the local Hugging Face cache, else whitespace-separated words; the report says which;
- sidecars that are missing (those segments train without metadata: WARN), unreadable or invalid (bad JSON, not
  an object, a ``MusicInfo`` key missing, a value AudioCraft cannot convert): FAIL, because ``MusicDataset``
  opens every sidecar that exists with ``info_fields_required=True`` and one bad file stops training. Each is
  named with its reason.

Then the verdict for ``conditioner``: ``none`` warns when the data has descriptions or genres (training
unconditionally ignores them); ``text`` (the ``description`` field, what ``text2music`` feeds T5) and ``genre``
(the ``genre`` field, what ``genre_lut`` reads) fail when under ``min_text_share`` of the segments have it.

As a script (exit 0 when nothing failed, 1 on any FAIL or when the manifest is unusable, 2 on bad arguments)::

    python training_checks/validate_conditioning.py --dataset synthetic_demo --conditioner genre
    python training_checks/validate_conditioning.py --dataset fma_small_mini --num-samples 500 --conditioner text

It prints the shares, token counts and verdicts, and ends with one line such as
``validate_conditioning: synthetic_demo: 9 segments sampled, description 100%, genre 100%, moods 100%; 7.0
tokens per description (whitespace); conditioner genre: PASS``.

Example:
    >>> tokens = description_tokens(["calm ambient track", "rock"], None)
    >>> tokens["mean"], tokens["max"]
    (2.0, 3)
    >>> report = validate_conditioning("synthetic_demo", num_samples=50, conditioner="genre")   # doctest: +SKIP
    >>> report.percent("genre"), report.ok                                                     # doctest: +SKIP
    (100.0, True)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python training_checks/X.py`: see _script.py
    import _script  # noqa: F401

import argparse
import dataclasses
import json
import logging
import typing as tp

from musicpipe import atomic, manifests, paths
from training_checks.preflight import FAIL, PASS, WARN, CheckResult, select, worst_status

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
CONDITIONERS = ("none", "genre", "text")
# The sidecar field each conditioner reads: text2music feeds `description` to T5, genre_lut looks up `genre`.
CONDITIONED_FIELD = {"text": "description", "genre": "genre"}
# MusicInfo.from_dict(fields_required=True) lets these keys be absent (audiocraft/data/music_dataset.py).
OPTIONAL_FIELDS = ("keywords",)
SUMMARY_FIELDS = ("description", "genre", "moods")
MAX_NAMED = 5


class ConditioningError(ValueError):
    """A conditioning check that cannot run: a missing, invalid or empty manifest, or a bad argument.

    Example:
        >>> str(ConditioningError("/ws/data/x/egs/train/data.jsonl: missing"))
        '/ws/data/x/egs/train/data.jsonl: missing'
    """


def musicinfo_fields() -> tp.Tuple[tp.List[str], tp.List[str]]:
    """``(fields, required)``: AudioCraft's ``MusicInfo`` metadata fields, and those a sidecar must hold as keys.

    Read from AudioCraft itself (the dataclass fields MusicInfo adds to AudioInfo, minus the two it fills at run
    time, ``self_wav`` and ``joint_embed``).

    Example:
        >>> fields, required = musicinfo_fields()
        >>> fields
        ['title', 'artist', 'key', 'bpm', 'genre', 'moods', 'keywords', 'description', 'name', 'instrument']
        >>> [f for f in fields if f not in required]
        ['keywords']
    """
    from audiocraft.data.info_audio_dataset import AudioInfo
    from audiocraft.data.music_dataset import MusicInfo

    base = {f.name for f in dataclasses.fields(AudioInfo)} | {"self_wav", "joint_embed"}
    names = [f.name for f in dataclasses.fields(MusicInfo) if f.name not in base]
    return names, [n for n in names if n not in OPTIONAL_FIELDS]


def _present(value: tp.Any) -> bool:
    return value is not None and value != "" and value != []


def read_music_info(audio_path: PathLike) -> tp.Tuple[str, tp.Union[tp.Dict[str, tp.Any], str]]:
    """``(status, values_or_reason)`` for the sidecar of one segment, read as AudioCraft's MusicDataset reads it.

    ``status`` is ``ok`` (``values``: each MusicInfo field after AudioCraft's preprocessing), ``missing``,
    ``unreadable`` or ``invalid`` (with the reason). Never raises for bad files.

    Example:
        >>> import tempfile
        >>> wav = Path(tempfile.mkdtemp()) / "a.wav"
        >>> read_music_info(wav)[0]
        'missing'
        >>> _ = wav.with_suffix(".json").write_text("{not json")
        >>> status, reason = read_music_info(wav)
        >>> status, reason.startswith("invalid JSON")
        ('invalid', True)
    """
    from audiocraft.data.music_dataset import MusicInfo

    sidecar = Path(audio_path).with_suffix(".json")
    if not sidecar.exists():
        return "missing", "no sidecar"
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        return "unreadable", f"cannot read ({type(exc).__name__}: {exc})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return "invalid", f"invalid JSON ({exc})"
    if not isinstance(data, dict):
        return "invalid", f"not a JSON object but a {type(data).__name__}"
    fields, required = musicinfo_fields()
    absent = [f for f in required if f not in data]
    if absent:
        return "invalid", (f"missing key(s) {', '.join(absent)} (AudioCraft's MusicDataset raises KeyError: every "
                           "MusicInfo field but keywords must be a key, null when unknown)")
    values: tp.Dict[str, tp.Any] = {}
    for name in fields:
        if name not in data:
            values[name] = None
            continue
        convert = MusicInfo.attribute_getter(name)
        try:
            values[name] = convert(data[name]) if convert else data[name]
        except Exception as exc:  # noqa: BLE001 - whatever AudioCraft's converters raise stops training
            return "invalid", f"field {name}={data[name]!r}: AudioCraft cannot convert it ({type(exc).__name__}: {exc})"
    return "ok", values


def load_tokenizer(name: str = "t5-base") -> tp.Tuple[tp.Any, str, str]:
    """``(tokenizer or None, label, note)``: ``name`` from local files only, else None (whitespace tokens).

    ``name`` is a Hugging Face model id (looked up in the local cache, never downloaded) or a local folder;
    ``"whitespace"`` asks for whitespace tokens.

    Example:
        >>> load_tokenizer("whitespace")[:2]
        (None, 'whitespace')
    """
    if name == "whitespace":
        return None, "whitespace", "whitespace-separated words (asked for)"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
        logger.debug("tokenizer %s unavailable", name, exc_info=True)
        return None, "whitespace", (f"whitespace-separated words: the {name!r} tokenizer is not available from local "
                                    f"files ({type(exc).__name__})")
    return tok, name, f"{name!r} tokenizer (local files), special tokens included as the T5 conditioner sees them"


def description_tokens(descriptions: tp.Sequence[str], tokenizer: tp.Any) -> tp.Dict[str, tp.Any]:
    """``{"count", "mean", "min", "max"}`` of the token lengths of ``descriptions`` (whitespace when no tokenizer).

    Example:
        >>> description_tokens([], None)
        {'count': 0, 'mean': 0.0, 'min': 0, 'max': 0}
    """
    if tokenizer is None:
        lengths = [len(d.split()) for d in descriptions]
    else:
        lengths = [len(tokenizer(d)["input_ids"]) for d in descriptions]
    if not lengths:
        return {"count": 0, "mean": 0.0, "min": 0, "max": 0}
    return {"count": len(lengths), "mean": round(sum(lengths) / len(lengths), 2), "min": min(lengths),
            "max": max(lengths)}


@dataclasses.dataclass
class ConditioningReport:
    """What :func:`validate_conditioning` found (shares are over all sampled segments)."""

    dataset: str
    manifest: str
    conditioner: str
    min_text_share: float
    seed: int
    num_segments: int
    num_sampled: int
    fields: tp.Dict[str, int]
    missing: tp.List[str]
    unreadable: tp.List[tp.Dict[str, str]]
    invalid: tp.List[tp.Dict[str, str]]
    without: tp.Dict[str, tp.List[str]]
    tokenizer: str
    tokenizer_note: str
    tokens: tp.Dict[str, tp.Any]
    checks: tp.List[CheckResult]

    def share(self, field: str) -> float:
        """Fraction (0..1) of sampled segments whose sidecar has a non-empty ``field``."""
        return self.fields.get(field, 0) / self.num_sampled if self.num_sampled else 0.0

    def percent(self, field: str) -> float:
        return round(100.0 * self.share(field), 1)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def status(self) -> str:
        return worst_status(self.checks)

    def get(self, name: str) -> tp.Optional[CheckResult]:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"dataset": self.dataset, "manifest": self.manifest, "conditioner": self.conditioner,
                "min_text_share": self.min_text_share, "seed": self.seed, "num_segments": self.num_segments,
                "num_sampled": self.num_sampled,
                "fields": {f: {"count": n, "percent": self.percent(f)} for f, n in self.fields.items()},
                "missing": list(self.missing), "unreadable": list(self.unreadable), "invalid": list(self.invalid),
                "without": {f: list(v) for f, v in self.without.items()}, "tokenizer": self.tokenizer,
                "tokenizer_note": self.tokenizer_note, "description_tokens": dict(self.tokens),
                "ok": self.ok, "status": self.status, "checks": [c.to_dict() for c in self.checks]}

    def format(self) -> str:
        lines = [f"validate_conditioning {self.dataset}: {self.num_sampled} of {self.num_segments} train segments "
                 f"sampled (seed {self.seed}) from {self.manifest}"]
        width = max([len(f) for f in self.fields] + [5])
        for field, n in self.fields.items():
            lines.append(f"  {field:<{width}}  {self.percent(field):5.1f}%  ({n} of {self.num_sampled})")
        t = self.tokens
        lines.append(f"  description length: mean {t['mean']:.1f}, min {t['min']}, max {t['max']} tokens over "
                     f"{t['count']} description(s); tokens: {self.tokenizer_note}")
        check_width = max(len(c.name) for c in self.checks)
        lines += [c.line(check_width) for c in self.checks]
        return "\n".join(lines)

    def summary_line(self) -> str:
        shares = ", ".join(f"{f} {self.percent(f):.0f}%" for f in SUMMARY_FIELDS if f in self.fields)
        bad = len(self.missing) + len(self.unreadable) + len(self.invalid)
        problems = f", {bad} sidecar problem(s)" if bad else ""
        return (f"validate_conditioning: {self.dataset}: {self.num_sampled} segments sampled, {shares}{problems}; "
                f"{self.tokens['mean']:.1f} tokens per description ({self.tokenizer}); "
                f"conditioner {self.conditioner}: {self.status}")


def _named(items: tp.Sequence[str]) -> str:
    text = "; ".join(items[:MAX_NAMED])
    return text + (f"; and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def _verdicts(report: ConditioningReport) -> tp.List[CheckResult]:
    checks = []
    crash = [f"{p['path']}: {p['reason']}" for p in report.unreadable + report.invalid]
    if crash:
        checks.append(CheckResult("sidecars", FAIL, f"{len(crash)} of {report.num_sampled} sampled sidecar(s) would "
                                  "stop MusicGen training (AudioCraft's MusicDataset opens every sidecar that exists): "
                                  + _named(crash), {"unreadable": len(report.unreadable),
                                                    "invalid": len(report.invalid)}))
    elif report.missing:
        checks.append(CheckResult("sidecars", WARN, f"{len(report.missing)} of {report.num_sampled} sampled segment(s) "
                                  "have no sidecar and train without metadata: " + _named(report.missing),
                                  {"missing": len(report.missing)}))
    else:
        checks.append(CheckResult("sidecars", PASS, f"all {report.num_sampled} sampled sidecars load as AudioCraft's "
                                  "MusicInfo"))
    name = f"conditioner {report.conditioner}"
    desc, genre = report.percent("description"), report.percent("genre")
    if report.conditioner == "none":
        if report.fields.get("description") or report.fields.get("genre"):
            checks.append(CheckResult(name, WARN, f"training unconditionally, but {desc:.0f}% of the sampled segments "
                                      f"have a description and {genre:.0f}% a genre: --conditioning genre (offline) or "
                                      "text (T5) would use them"))
        else:
            checks.append(CheckResult(name, PASS, "no descriptions or genres in the sample: unconditional training "
                                      "is the choice"))
        return checks
    field = CONDITIONED_FIELD[report.conditioner]
    share = report.share(field)
    detail = {"field": field, "share": round(share, 6), "min_text_share": report.min_text_share}
    if share < report.min_text_share:
        examples = report.without.get(field, [])
        checks.append(CheckResult(name, FAIL, f"only {100 * share:.0f}% of the sampled segments have a {field} "
                                  f"(< {100 * report.min_text_share:.0f}% required), e.g. without one: "
                                  f"{_named(examples) or 'none listed'}; the conditioner would mostly see nothing",
                                  detail))
    else:
        checks.append(CheckResult(name, PASS, f"{100 * share:.0f}% of the sampled segments have a {field} "
                                  f"(>= {100 * report.min_text_share:.0f}% required)", detail))
    return checks


def validate_conditioning(dataset: str, num_samples: int = 100, conditioner: str = "none", *,
                          min_text_share: float = 0.5, workspace: tp.Optional[PathLike] = None, seed: int = 0,
                          tokenizer: str = "t5-base") -> ConditioningReport:
    """Check the sidecars of ``num_samples`` train segments of ``dataset`` against ``conditioner``.

    Args:
        dataset: the prepared dataset (``<ws>/data/<dataset>/egs/train/data.jsonl``).
        num_samples: segments to read (all when the manifest has fewer), chosen by ``random.Random(seed)`` from the
            sorted paths.
        conditioner: ``none`` | ``genre`` | ``text`` (as ``train-lm --conditioning``).
        min_text_share: the share (0..1) of segments that must carry the conditioned field.
        workspace: default ``$MUSICPIPE_WORKSPACE`` or ``<repo>/workspace``.
        tokenizer: Hugging Face id or local folder of the tokenizer for description lengths (local files only),
            or ``"whitespace"``.

    Raises:
        ConditioningError: the train manifest is missing, invalid or empty, or an argument is out of range.
    """
    if conditioner not in CONDITIONERS:
        raise ConditioningError(f"unknown conditioner {conditioner!r}: expected one of {', '.join(CONDITIONERS)}")
    if num_samples < 1:
        raise ConditioningError(f"num_samples must be at least 1, got {num_samples}")
    if not 0.0 <= min_text_share <= 1.0:
        raise ConditioningError(f"min_text_share must be in [0, 1], got {min_text_share}")
    egs = paths.dataset_dir(dataset, workspace) / "egs" / "train"
    try:
        records = manifests.read_nonempty_manifest(egs)
    except manifests.ManifestError as exc:
        raise ConditioningError(f"{exc}; prepare the dataset {dataset!r} first") from None
    except (OSError, UnicodeError) as exc:
        raise ConditioningError(f"{egs / 'data.jsonl'}: unreadable ({exc})") from None
    chosen = select([r.path for r in records], num_samples, seed)
    fields, _ = musicinfo_fields()
    counts = {f: 0 for f in fields}
    without: tp.Dict[str, tp.List[str]] = {f: [] for f in CONDITIONED_FIELD.values()}
    missing: tp.List[str] = []
    unreadable: tp.List[tp.Dict[str, str]] = []
    invalid: tp.List[tp.Dict[str, str]] = []
    descriptions: tp.List[str] = []
    for path in chosen:
        sidecar = str(Path(path).with_suffix(".json"))
        status, got = read_music_info(path)
        if status == "missing":
            missing.append(sidecar)
        elif status == "unreadable":
            unreadable.append({"path": sidecar, "reason": str(got)})
        elif status == "invalid":
            invalid.append({"path": sidecar, "reason": str(got)})
        if status != "ok":
            for field in without:
                without[field].append(sidecar)
            continue
        assert isinstance(got, dict)
        for field in fields:
            if _present(got[field]):
                counts[field] += 1
            elif field in without:
                without[field].append(sidecar)
        if _present(got["description"]):
            descriptions.append(str(got["description"]))
    tok, label, note = load_tokenizer(tokenizer)
    report = ConditioningReport(
        dataset=dataset, manifest=str(egs / "data.jsonl"), conditioner=conditioner, min_text_share=min_text_share,
        seed=seed, num_segments=len(records), num_sampled=len(chosen), fields=counts, missing=missing,
        unreadable=unreadable, invalid=invalid, without=without, tokenizer=label, tokenizer_note=note,
        tokens=description_tokens(descriptions, tok), checks=[])
    report.checks = _verdicts(report)
    return report


# ------------------------------------------------------------------------------------------------------- CLI


def _share_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="validate_conditioning",
        description="Share of train segments whose sidecar has a description, genre, moods...; description length "
                    "in tokens; verdict for the conditioner. Exit 0: fine (warnings allowed); 1: a check failed or "
                    "the manifest is unusable; 2: bad arguments.")
    parser.add_argument("--dataset", required=True, help="prepared dataset name")
    parser.add_argument("--num-samples", type=_positive, default=100, help="segments to read (default 100)")
    parser.add_argument("--conditioner", "--conditioning", dest="conditioner", choices=CONDITIONERS, default="none")
    parser.add_argument("--min-text-share", type=_share_arg, default=0.5,
                        help="share (0..1) of segments that must carry the conditioned field (default 0.5)")
    parser.add_argument("--workspace", default=None, help="musicpipe workspace (default $MUSICPIPE_WORKSPACE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", default="t5-base",
                        help="tokenizer for description lengths (local files only), or 'whitespace'")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The CLI: shares, token counts and verdicts, then one summary line; 1 on FAIL, 2 on bad arguments."""
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = validate_conditioning(args.dataset, args.num_samples, args.conditioner,
                                       min_text_share=args.min_text_share, workspace=args.workspace, seed=args.seed,
                                       tokenizer=args.tokenizer)
    except ConditioningError as exc:
        print(f"validate_conditioning: error: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    if args.json:
        atomic.write_text(Path(args.json), json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    print(report.summary_line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The run records: what ``erf.json`` and ``summary.json`` hold, as typed, validated dataclasses (the schema).

This module is the lowest layer of the results package: it depends only on the standard library and
:mod:`erftools._io`, so the engines (:mod:`erftools.erf.run`, :mod:`erftools.shapebias.run`) import it to write
their records and every reader (report, dashboard, CLI) reads them back through it.

* :class:`ErfRecord` (``"kind": "erf"``, file ``erf.json``) and :class:`ShapeBiasRecord` (``"kind": "shape-bias"``,
  file ``summary.json``) have one attribute per field the writers write (see ``docs/results.md``), ``schema`` (the
  format version, :data:`SCHEMA`) and ``extra``: every field this version does not know, kept as it was, so a
  record written by a newer release reads and writes back unchanged (forward compatible).
* ``from_dict`` checks every known field's type and raises :class:`ResultError` naming the file and the field;
  ``to_dict`` gives the JSON object back (the keys of a record read from disk in their order, nothing added).
* :func:`base_record` starts the dict a writer fills; :func:`validate` checks it before it is written.
* The decision-maker kinds have one spelling each (:data:`MAKER_KINDS`); :func:`maker_kind` maps the old ones.
* :func:`checked_path` confines a path to a folder (symbolic links and ``..`` included): every reader of result
  folders uses it, the engines too when they follow a file name written in a record.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .._io import ErftoolsError

#: the version of the record format; a reader refuses records of a newer schema (an upgrade reads them)
SCHEMA = 1
ERF_RECORD = "erf.json"
ERF_MATRIX = "erf.npy"
ERF_FIGURE = "erf.png"
SB_RECORD = "summary.json"
SB_DECISIONS = "decisions.csv"
SB_COMBINED = "combined.json"
ERF_KIND = "erf"
SB_KIND = "shape-bias"
COMBINED_KIND = "shape-bias-combined"  # the index ``erftools shape-bias`` writes above several runs
RECORD_FILES = {ERF_KIND: ERF_RECORD, SB_KIND: SB_RECORD}
# What an interrupted run leaves for its resume (the engines write it; the readers show such a folder as
# interrupted): ERF checkpoints, and shape-bias partial decisions (rank 0's; other ranks add ``.r<R>.csv`` files).
ERF_CHECKPOINT = ".erf_checkpoint"
SB_PARTIAL = ".decisions.partial.csv"
SB_PARTIAL_META = ".partial.json"
RESUME_STATE = {ERF_KIND: ERF_CHECKPOINT, SB_KIND: SB_PARTIAL}
#: written by a run that failed with an error (not an interruption): its message, so that readers show the folder as
#: failed (the same command fails again until the cause is fixed), not as interrupted; removed when a run starts
FAILURE_FILE = "failed.json"

# ------------------------------------------------------------------------------------ decision-maker kinds
HUMANS = "humans"  # observers pooled (the 10 subjects of Geirhos et al.)
HUMAN = "human"  # one observer
MODEL = "model"  # a network erftools evaluated (``erftools shape-bias --model``)
NETWORK = "network"  # a network's published decisions, analysed by erftools
PUBLISHED = "published"  # a value printed in a paper (no decisions)
MAKER_KINDS = (HUMANS, HUMAN, MODEL, NETWORK, PUBLISHED)
_OLD_KINDS = {"cnn": NETWORK, "cnns": NETWORK, "paper": PUBLISHED, "subject": HUMAN, "observer": HUMAN}


def maker_kind(value: Any) -> str | None:
    """The decision-maker kind ``value`` in its one spelling (:data:`MAKER_KINDS`); old spellings (``cnn``,
    ``paper``, ...) are mapped; None for anything else."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    return v if v in MAKER_KINDS else _OLD_KINDS.get(v)


def slug(text: Any) -> str:
    """A run folder name made from a label or model name: letters, digits, ``.``, ``_`` and ``-`` only (other runs of
    characters become ``-``), never starting or ending with ``-`` or ``.``; ``run`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "run"


class ResultError(ErftoolsError):
    """A result folder is missing, partial or malformed."""


# --------------------------------------------------------------------------------------------- field types
_NUM = "number"
_INT = "integer"
_TEXT = "text"
_BOOL = "true/false"
_DICT = "object"
_LIST = "list"
_ANY = "any"
_PY_TYPES = {_NUM: (int, float), _INT: int, _TEXT: str, _BOOL: bool, _DICT: dict, _LIST: list, _ANY: object}


def _is(value: Any, kind: str) -> bool:
    """Whether ``value`` has the JSON type ``kind`` (true/false is not a number)."""
    return isinstance(value, _PY_TYPES[kind]) and not (isinstance(value, bool) and kind in (_NUM, _INT))


def _meta(*kinds: str, check=None) -> dict:
    """Field metadata: the JSON types a value may have (None is always allowed), and an extra check."""
    return {"kinds": kinds, "check": check}


def _opt(*kinds: str, default: Any = None, check=None):
    return field(default=default, metadata=_meta(*kinds, check=check))


def _pair_of_numbers(v) -> str | None:
    if len(v) != 2 or not all(x is None or _is(x, _NUM) for x in v):
        return "should be a list of two numbers (or nulls)"
    return None


def _size(v) -> str | None:
    if len(v) != 2 or not all(_is(x, _INT) and x > 0 for x in v):
        return "should be [height, width] in pixels (two positive integers)"
    return None


def _positive(v) -> str | None:
    return None if v >= 1 else "should be a positive integer"


def _area_ratios(v) -> str | None:
    for i, row in enumerate(v):
        if not isinstance(row, dict) or not _is(row.get("threshold"), _NUM):
            return f"item {i} should be an object with a numeric 'threshold'"
        if row.get("side") is not None and not _is(row["side"], _INT):
            return f"item {i}: 'side' should be an integer or null"
        if row.get("area_ratio") is not None and not _is(row["area_ratio"], _NUM):
            return f"item {i}: 'area_ratio' should be a number or null"
    return None


def _profile(v) -> str | None:
    r, c = v.get("radius"), v.get("cumulative")
    if not isinstance(r, list) or not isinstance(c, list) or len(r) != len(c):
        return "should hold the lists 'radius' and 'cumulative' of the same length"
    if not all(_is(x, _NUM) for x in r + c):
        return "'radius' and 'cumulative' should hold numbers"
    return None


def _per_category(v) -> str | None:
    for cat, item in v.items():
        val = item.get("shape_bias") if isinstance(item, dict) else item
        if val is not None and not _is(val, _NUM):
            return f"category {cat!r}: the shape bias should be a number or null"
    return None


# ------------------------------------------------------------------------------------------------ records
@dataclass
class Record:
    """The fields every run record has. Use :class:`ErfRecord` or :class:`ShapeBiasRecord`."""
    KIND: ClassVar[str] = ""
    FILE: ClassVar[str] = ""

    schema: int = _opt(_INT, default=SCHEMA)
    complete: bool = _opt(_BOOL, default=False)  # written true last, once every file of the folder is in place
    created: str | None = _opt(_TEXT)  # ISO 8601 time (UTC)
    versions: dict | None = _opt(_DICT)  # python, platform, erftools, torch, timm, numpy, ...
    label: str | None = _opt(_TEXT)
    model: dict | None = _opt(_DICT)  # name, family, arch, preprocessing, weights, weights_sha256, ...
    device: Any = _opt(_DICT, _TEXT)
    fingerprint: dict | None = _opt(_DICT)  # what a resumed or repeated run must match
    extra: dict = field(default_factory=dict, metadata=_meta(_ANY))  # fields this version does not know
    _keys: tuple | None = field(default=None, repr=False, compare=False, metadata=_meta(_ANY))

    # ------------------------------------------------------------------------------------------- conversion
    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of the known fields (the JSON keys), in writing order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "_keys"))

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None):
        """The record of the JSON object ``data`` (read from ``source``, named in errors); raise
        :class:`ResultError` naming the file and the field when a field has the wrong type or the record is of
        another kind or of a newer schema."""
        where = str(source) if source is not None else f"a {cls.KIND} record"
        if not isinstance(data, dict):
            raise ResultError(f"{where} is not a {cls.KIND} record (a JSON object was expected, got "
                              f"{type(data).__name__})")
        if data.get("kind") != cls.KIND:
            raise ResultError(f"{where} is not a {cls.KIND} record (kind={data.get('kind')!r})")
        known = set(cls.fields())
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("schema", SCHEMA)  # records written before the field existed
        values.setdefault("complete", False)
        extra = {k: v for k, v in data.items() if k not in known and k != "kind"}
        rec = cls(**values, extra=extra, _keys=tuple(data))
        rec.validate(where)
        return rec

    def to_dict(self) -> dict:
        """The JSON object: ``kind``, the fields, then ``extra``; for a record read from disk exactly its keys in
        their order, plus known fields that were set since."""
        names = self.fields()
        if self._keys is None:
            order = ["kind", *names, *self.extra]
        else:
            order = list(self._keys) if "kind" in self._keys else ["kind", *self._keys]
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            order += [n for n in names if n not in order and getattr(self, n) != defaults[n]]
            order += [k for k in self.extra if k not in order]
        values = {**self.extra, **{n: getattr(self, n) for n in names}, "kind": self.KIND}
        return {key: values[key] for key in order if key in values}

    def validate(self, source: str | os.PathLike | None = None) -> None:
        """Raise :class:`ResultError` naming ``source`` and the field whose value has the wrong type."""
        where = str(source) if source is not None else f"a {self.KIND} record"
        if _is(self.schema, _INT) and self.schema > SCHEMA:  # first: a newer format may have other field types
            raise ResultError(f"{where} has schema {self.schema}, newer than this erftools reads ({SCHEMA}); "
                              "upgrade erftools")
        _check_types(self, where)

    def update(self, fields: dict) -> "Record":
        """Set ``fields`` (known ones as attributes, others in ``extra``), in place; returns the record. The
        validating writer (:func:`write_record`) checks the types."""
        known = set(self.fields())
        for key, value in fields.items():
            if key in known:
                setattr(self, key, value)
            else:
                self.extra[key] = value
        return self

    # ----------------------------------------------------------------------------------------------- views
    @property
    def model_name(self) -> str | None:
        name = (self.model or {}).get("name")
        return name if isinstance(name, str) else None

    @property
    def name(self) -> str | None:
        """The label, else the model's name."""
        return self.label or self.model_name


def _check_types(obj, where: str) -> None:
    """The one field check of every record and nested entry: each known field's JSON type and its extra check;
    :class:`ResultError` naming ``where`` and the field."""
    for f in dataclasses.fields(obj):
        if f.name in ("extra", "_keys"):
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        kinds = f.metadata.get("kinds", (_ANY,))
        if not any(_is(value, k) for k in kinds):
            raise ResultError(f"{where}: field {f.name!r} should be {' or '.join(kinds)}, got "
                              f"{type(value).__name__} {_short(value)}; the folder was not written by "
                              "erftools or was edited; write it again with the erftools command")
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ResultError(f"{where}: field {f.name!r} {problem} (got {_short(value)})")


# ------------------------------------------------------------------------------------------ nested entries
@dataclass
class Entry:
    """A typed nested part of a record (a layer entry, the timings): known fields typed and checked as a record's
    are (:func:`_check_types`), the others kept in ``extra``; ``OPTIONAL`` fields are left out of the JSON when
    unset."""
    OPTIONAL: ClassVar[tuple] = ()
    extra: dict = field(default_factory=dict, metadata=_meta(_ANY))

    @classmethod
    def from_dict(cls, data: Any, where: str = "an entry"):
        if not isinstance(data, dict):
            raise ResultError(f"{where} should be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        entry = cls(**{k: v for k, v in data.items() if k in known},
                    extra={k: v for k, v in data.items() if k not in known})
        _check_types(entry, where)
        return entry

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None or k not in self.OPTIONAL}, **self.extra}


def _nested(cls: type[Entry], many: bool = False):
    """The field check of a nested entry (``many``: a list of them): the entry's own message, or None."""
    def check(value) -> str | None:
        try:
            for i, item in enumerate(value if many else [value]):
                cls.from_dict(item, f"item {i}" if many else "it")
        except ResultError as exc:
            return f"is malformed: {exc}"
        return None
    return check


@dataclass
class LayerEntry(Entry):
    """One target of an ERF run (``erf.json`` ``layers``): its matrix and figure files, counts, area ratios,
    radial profile, statistics."""
    layer: str | None = _opt(_TEXT)  # None: the final feature map
    target: str | None = _opt(_TEXT)
    feature_shape: list | None = _opt(_LIST)
    central_point: list | None = _opt(_LIST)
    num_images: int | None = _opt(_INT)
    num_nan: int | None = _opt(_INT)
    area_ratios: list | None = _opt(_LIST, check=_area_ratios)
    radial_profile: dict | None = _opt(_DICT, check=_profile)
    statistics: dict | None = _opt(_DICT)
    matrix_stats: dict | None = _opt(_DICT)
    matrix: str | None = _opt(_TEXT)
    figure: str | None = _opt(_TEXT)


@dataclass
class ErfTimings(Entry):
    """An ERF run's timings (``erf.json`` ``timings``; the slowest process's compute time)."""
    OPTIONAL: ClassVar[tuple] = ("peak_rss_bytes", "cuda_peak_bytes", "run_compute_s", "run_seconds_per_image")
    wall_s: float | None = _opt(_NUM)
    compute_s: float | None = _opt(_NUM)
    prepare_s: float | None = _opt(_NUM)
    load_s: float | None = _opt(_NUM)
    images_computed_this_session: int | None = _opt(_INT)
    seconds_per_image: float | None = _opt(_NUM)
    images_per_second: float | None = _opt(_NUM)
    peak_rss_bytes: int | None = _opt(_INT)
    cuda_peak_bytes: int | None = _opt(_INT)
    #: the whole run, every session and process (a resumed run: more than this session's ``compute_s``)
    run_compute_s: float | None = _opt(_NUM)
    run_seconds_per_image: float | None = _opt(_NUM)


#: fingerprint keys that only explain a difference of the image list (``images_sha256``): they never refuse on their
#: own, and a fingerprint written before they existed is not refused for lacking them
EXPLAINING_KEYS = ("num_images", "sampler", "sample_seed")


@dataclass
class Fingerprint:
    """What a resumed or repeated run must match (``fingerprint`` of every record), and how another differs."""
    values: dict

    def differences(self, other: "dict | Fingerprint", keys=None) -> list[str]:
        """The keys (``keys``, default: all of both) whose values differ between this fingerprint and ``other``."""
        other = other.values if isinstance(other, Fingerprint) else other
        keys = list(keys) if keys is not None else list(dict.fromkeys([*other, *self.values]))
        images_differ = self.values.get("images_sha256") != other.get("images_sha256")
        return [k for k in keys if self.values.get(k) != other.get(k)
                and (k not in EXPLAINING_KEYS or (images_differ and k in self.values))]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ErfRecord(Record):
    """``erf.json``: an ERF run (``erftools erf``, :func:`erftools.erf.run.run_erf`)."""
    KIND: ClassVar[str] = ERF_KIND
    FILE: ClassVar[str] = ERF_RECORD

    images: dict | None = _opt(_DICT)  # source, files, sha256, sampler, seed, num_requested, num_available
    size: list | None = _opt(_LIST, check=_size)  # [H, W] of the full-resolution matrix
    num_images: int | None = _opt(_INT)
    num_skipped: int | None = _opt(_INT)
    num_nan: int | None = _opt(_INT)
    skipped: list | None = _opt(_LIST)
    converted: list | None = _opt(_LIST)
    processed: list | None = _opt(_LIST)
    thresholds: list | None = _opt(_LIST)
    area_ratios: list | None = _opt(_LIST, check=_area_ratios)  # [{threshold, side, area_ratio}], full resolution
    radial_profile: dict | None = _opt(_DICT, check=_profile)  # {radius, cumulative, ...}, full resolution
    stored_downsample: int = _opt(_INT, default=1, check=_positive)  # erf.npy block-summed by this factor
    statistics: dict | None = _opt(_DICT)  # erftools.erf.statistics.erf_statistics of the matrix
    matrix_stats: dict | None = _opt(_DICT)
    target: dict | None = _opt(_DICT)
    layers: list | None = _opt(_LIST, check=_nested(LayerEntry, many=True))  # one LayerEntry per requested layer
    growth_figure: str | None = _opt(_TEXT)
    baseline: dict | None = _opt(_DICT)  # summary of the untrained-baseline run in a sub-folder
    baseline_of: str | None = _opt(_TEXT)  # in a baseline run: the folder of the run it is the baseline of
    prepared: dict | None = _opt(_DICT)
    conv_backends_report: list | None = _opt(_LIST)  # per process: erftools.ops.backend_report()
    precision: str | None = _opt(_TEXT)  # what ran: "fp32" (the paper's), "tf32" or "bf16"
    precision_requested: str | None = _opt(_TEXT)
    precision_note: str | None = _opt(_TEXT)
    objective: str | None = _opt(_TEXT)  # what was differentiated: "paper" (absent in older records) or "unit"
    reduction: str | None = _opt(_TEXT)  # input gradient -> map: "relu" (absent in older records), "abs", "l2"
    sweep: dict | None = _opt(_DICT)  # a run of an input-size sweep: {"size", "sizes", "label"} (erftools.erf.sweep)
    batch_size: int | None = _opt(_INT)
    world_size: int | None = _opt(_INT)
    resumed: bool | None = _opt(_BOOL)
    timings: dict | None = _opt(_DICT, check=_nested(ErfTimings))
    files: dict | None = _opt(_DICT)
    model_kwargs: dict | None = _opt(_DICT)  # written by the CLI
    command: str | None = _opt(_TEXT)  # the command line (CLI)

    @property
    def weights(self) -> Any:
        return (self.model or {}).get("weights")

    def area_ratio_map(self) -> dict[float, float | None]:
        """``{threshold: area ratio}`` as recorded (computed at full resolution; None: no square)."""
        return {round(float(r["threshold"]), 6): (None if r.get("area_ratio") is None else float(r["area_ratio"]))
                for r in self.area_ratios or []}

    def side_map(self) -> dict[float, int | None]:
        """``{threshold: side of the square in pixels}`` as recorded."""
        return {round(float(r["threshold"]), 6): r.get("side") for r in self.area_ratios or []}


@dataclass
class ShapeBiasRecord(Record):
    """``summary.json``: a shape-bias run (``erftools shape-bias``, :mod:`erftools.shapebias.run`)."""
    KIND: ClassVar[str] = SB_KIND
    FILE: ClassVar[str] = SB_RECORD

    source: str | None = _opt(_TEXT)  # "model" (evaluated) or "decisions" (published decisions analysed)
    decision_maker_kind: str | None = _opt(_TEXT)  # as written; :attr:`maker_kind` gives the one spelling
    weights: dict | None = _opt(_DICT)
    preprocessing: dict | None = _opt(_DICT)
    stimuli: dict | None = _opt(_DICT)
    decisions: str | None = _opt(_TEXT)
    probabilities: str | None = _opt(_TEXT)
    decisions_files: list | None = _opt(_LIST)
    categories: list | None = _opt(_LIST)
    batch_size: int | None = _opt(_INT)
    conv_backend: Any = _opt(_ANY)
    conv_backends_report: list | None = _opt(_LIST)  # per process: erftools.ops.backend_report()
    precision: str | None = _opt(_TEXT)  # "fp32" or "bf16"
    precision_check: dict | None = _opt(_DICT)  # decisions changed by a lower precision, against fp32
    prepared: dict | None = _opt(_DICT)  # what the inference preparation did
    world_size: int | None = _opt(_INT)
    timing: dict | None = _opt(_DICT)
    num_nonfinite: int | None = _opt(_INT)
    nonfinite: list | None = _opt(_LIST)
    num_unreadable: int | None = _opt(_INT)  # stimuli that failed to decode during the run (skipped, retried on resume)
    unreadable: list | None = _opt(_LIST)
    published: dict | None = _opt(_DICT)
    zero_shot: dict | None = _opt(_DICT)  # openclip: models: prompts, class names, text classifier (docs/shape-bias.md)
    shape_bias: float | None = _opt(_NUM)
    fraction_correct_shape: float | None = _opt(_NUM)
    fraction_correct_texture: float | None = _opt(_NUM)
    ci95: list | None = _opt(_LIST, check=_pair_of_numbers)
    accuracy_no_conflict: float | None = _opt(_NUM)
    num_trials: int | None = _opt(_INT)
    n_shape: int | None = _opt(_INT)
    n_texture: int | None = _opt(_INT)
    n_conflict_trials: int | None = _opt(_INT)
    n_no_conflict_trials: int | None = _opt(_INT)
    n_no_answer: int | None = _opt(_INT)
    fraction_cue_decisions: float | None = _opt(_NUM)
    num_images: int | None = _opt(_INT)
    per_category: dict | None = _opt(_DICT, check=_per_category)
    ci_method: dict | None = _opt(_DICT)
    subjects: dict | None = _opt(_DICT)
    shape_bias_mean_of_subjects: float | None = _opt(_NUM)
    shape_bias_range_of_subjects: list | None = _opt(_LIST)
    plots: list | None = _opt(_LIST)
    references: list | None = _opt(_LIST)
    plots_removed: str | None = _opt(_TEXT)
    error_consistency: dict | None = _opt(_DICT)  # kappa against human observers (shapebias.consistency)

    @property
    def maker_kind(self) -> str:
        """The decision maker's kind (:data:`MAKER_KINDS`): the recorded one (old spellings mapped); for a record
        without one, ``model`` for an evaluated network, else ``network``."""
        kind = maker_kind(self.decision_maker_kind)
        if kind is not None:
            return kind
        return MODEL if self.source in (None, "model") else NETWORK

    def category_bias(self) -> dict[str, float | None]:
        """``{category: shape bias}``."""
        return {str(c): (v.get("shape_bias") if isinstance(v, dict) else v) for c, v in (self.per_category or {}).items()}


RECORD_TYPES: dict[str, type[Record]] = {ERF_KIND: ErfRecord, SB_KIND: ShapeBiasRecord}


def checked_path(root: str | os.PathLike, path: str | os.PathLike, shown: str | os.PathLike | None = None) -> Path:
    """The real path of ``path`` (already joined to ``root``, or absolute) when it lies inside ``root``; else
    :class:`ResultError`. The message names ``path`` relative to ``root`` (or ``shown``), never where it leads."""
    root_r = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target != root_r and root_r not in target.parents:
        if shown is None:
            try:
                shown = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
            except ValueError:
                shown = Path(path).name
        raise ResultError(f"refusing to read {shown}: it resolves outside the results folder "
                          "(a symbolic link or '..' leading out of it)")
    return target


def record_from_dict(data: Any, kind: str | None = None, source: str | os.PathLike | None = None) -> Record:
    """The typed record of ``data`` (its own ``kind`` when ``kind`` is None)."""
    if kind is None:
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in RECORD_TYPES:
            raise ResultError(f"{source or 'the record'} is not a run record (kind={kind!r}; expected one of "
                              f"{', '.join(RECORD_TYPES)})")
    return RECORD_TYPES[kind].from_dict(data, source)


def read_json_record(folder: str | os.PathLike, kind: str, path: str | os.PathLike | None = None) -> dict:
    """The JSON object of the record of ``kind`` in ``folder`` (or at ``path``), checked to be a record of that
    kind; raise :class:`ResultError` with a clear message. The engines use it (their own folders); readers of
    folders written by others go through :func:`erftools.results.store.read_record`, which confines the path."""
    folder = Path(folder)
    path = Path(path) if path is not None else folder / RECORD_FILES[kind]
    if not path.is_file():
        raise ResultError(f"{folder} is not a {kind} result folder: {RECORD_FILES[kind]} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path} is unreadable or not valid JSON ({exc}); re-run the measurement") from exc
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ResultError(f"{path} is not a {kind} record "
                          f"(kind={data.get('kind') if isinstance(data, dict) else None!r})")
    return data


def validate(record: dict, source: str | os.PathLike | None = None) -> dict:
    """Check a record dict (a writer's, before writing it); return it unchanged or raise :class:`ResultError`."""
    record_from_dict(record, source=source)
    return record


def base_record(kind: str, **fields: Any) -> dict:
    """A new record dict with the common fields; the writer adds its own and sets ``complete`` last."""
    import datetime as _dt

    from .._io import versions

    if kind not in RECORD_TYPES:
        raise ValueError(f"kind should be one of {', '.join(RECORD_TYPES)}, got {kind!r}")
    return {"kind": kind, "schema": SCHEMA, "complete": False,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
            **fields}


def new_record(kind: str, **fields: Any) -> Record:
    """A writer's typed record of ``kind`` with the common fields (:func:`base_record`) and ``fields`` (fields this
    version does not know go to ``extra``), validated; the writer writes it with :func:`write_record`."""
    return record_from_dict(base_record(kind, **fields))


def write_record(path: str | os.PathLike, record: Record | dict) -> dict:
    """The one way a record reaches the disk: serialise (NumPy and torch scalars become JSON numbers, NaN null),
    validate the serialised object (:class:`ResultError` naming the file and the wrong-typed field: nothing is
    written then), write it atomically. Returns the JSON object written."""
    from .._io import _json_safe, write_json

    data = _json_safe(record.to_dict() if isinstance(record, Record) else record)
    record_from_dict(data, source=path)
    write_json(path, data)
    return data

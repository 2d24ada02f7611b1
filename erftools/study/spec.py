"""A study file (TOML): what to compare, parsed and checked; every error names the file, the line and the key.

The format is described in ``docs/study.md``. :func:`load_study` takes a path or the name of a built-in study
(``data/studies/<name>.toml``); :func:`parse_study` takes the text. The result is a :class:`Study`: the models in
file order, the two measurements' settings, the tolerances, and for each model the paper's values (inline, or a
reference into the paper data erftools ships: ``table10:<row>`` in ``data/paper_table10.json``, ``fig5:<entry>`` in
``data/shapebias/published_fig5.json``).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._constants import CONV_BACKEND_CHOICES as CONV_BACKENDS  # one owner of each choice
from .._constants import DEVICES, ERF_PRECISIONS, SAMPLERS  # noqa: F401
from .._constants import SHAPE_BIAS_PRECISIONS as PRECISIONS
from .._io import ErftoolsError
from .._limits import bound_problem

MEASUREMENTS = ("erf", "shape_bias")
BUNDLED = "bundled"  # images = "bundled": the photographs shipped with erftools
UNPUBLISHED = "unpublished"  # weights = "unpublished": listed, never run
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = ["Study", "ModelSpec", "ErfSpec", "ShapeBiasSpec", "Tolerance", "StudyError", "load_study",
           "parse_study", "builtin_studies", "builtin_path", "MEASUREMENTS", "BUNDLED", "UNPUBLISHED"]


class StudyError(ErftoolsError):
    """A study file that cannot be used: the message names the file, the line and the key."""


@dataclass(frozen=True)
class Tolerance:
    """A measured value agrees with the paper when ``|ours - paper| <= max(abs, rel * |paper|)``."""
    abs: float = 0.0
    rel: float = 0.0

    def allows(self, diff: float, paper: float) -> bool:
        return abs(diff) <= max(self.abs, self.rel * abs(paper)) + 1e-12

    def text(self, unit: str = "") -> str:
        parts = [f"±{self.abs:g}{unit}" if self.abs else "", f"±{self.rel:.0%}" if self.rel else ""]
        return " or ".join(p for p in parts if p) or "exact"


@dataclass(frozen=True)
class ErfSpec:
    images: str | None = None  # a folder, "bundled", or None (the user must pass one)
    num_images: int = 50
    size: int = 1024
    samplers: tuple = ("random",)
    seed: int = 0
    thresholds: tuple = (0.2, 0.3, 0.5, 0.99)
    layers: Any = None  # None, "stages" or a list of module names
    batch_size: int | None = None
    conv_backend: str | None = None
    precision: str = "fp32"
    allow_low_precision: bool = False  # bf16 is refused at load without it (it moved a square: docs/erf.md)
    sizes: tuple = ()  # size = [224, 512, 1024]: an input-size sweep (``size`` is then the first); () for one size
    objective: str = "paper"  # erftools.erf.objectives.OBJECTIVES
    reduction: str = "relu"  # key ``reduce``: erftools.erf.objectives.REDUCTIONS

    @property
    def all_sizes(self) -> tuple:
        """Every input size of the study (one, or the sweep's)."""
        return self.sizes or (self.size,)


@dataclass(frozen=True)
class ShapeBiasSpec:
    stimuli: str | None = None  # None: the user cache filled by `erftools data fetch cue-conflict`
    allow_incomplete: bool = False
    batch_size: int = 32
    seed: int = 0
    bootstrap: int = 10_000
    precision: str = "fp32"


@dataclass(frozen=True)
class ModelSpec:
    id: str  # unique; the name of the model's folder in the results
    name: str  # registry or timm name
    label: str
    weights: str | None  # None: must be given by the user (see ``download``); "unpublished": never run
    seed: int | None = None  # overrides the measurements' seed (random weights, samplers, bootstrap)
    model_kwargs: dict = field(default_factory=dict)
    measure: tuple = MEASUREMENTS
    download: dict | None = None  # {"url", "file", "note"}: weights the user downloads by hand
    note: str = ""
    paper_erf: dict | None = None  # {threshold: area ratio in percent}
    paper_erf_source: str = ""
    paper_shape_bias: float | None = None
    paper_shape_bias_source: str = ""
    line: int | None = None

    @property
    def unpublished(self) -> bool:
        return self.weights == UNPUBLISHED

    @property
    def needs_file(self) -> bool:
        """Whether the user must supply the weights file (only a manual download exists)."""
        return self.weights is None and self.download is not None


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    description: str
    reference: str
    results: str | None
    device: str
    erf: ErfSpec | None
    shape_bias: ShapeBiasSpec | None
    tolerance: dict  # {"erf": Tolerance, "shape_bias": Tolerance}
    models: tuple
    source: str  # the file (or "<built-in NAME>")
    base_dir: Path | None  # relative input paths are relative to this folder (None for built-ins: the cwd)
    text: str
    builtin: bool = False

    def measurements(self, model: ModelSpec) -> list[str]:
        return [m for m in MEASUREMENTS if m in model.measure and getattr(self, m) is not None]

    def input_path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p


# ----------------------------------------------------------------------------------------------- locating keys
def _header(line: str):
    m = re.match(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
    if not m:
        return None
    return m.group(1) == "[[", tuple(p.strip().strip('"\'') for p in m.group(2).split("."))


def locate(text: str, path: tuple) -> int | None:
    """The 1-based line of ``path`` (keys and array indices, e.g. ``("model", 2, "weights")``) in a TOML text:
    the line that sets the key, else the header of its table, else None."""
    lines = text.splitlines()
    sections: list[tuple[int, tuple]] = [(0, ())]  # (first line index, table path with array indices)
    counters: dict[tuple, int] = {}
    for i, line in enumerate(lines):
        h = _header(line)
        if h is None:
            continue
        is_array, names = h
        resolved: list = []
        for k, name in enumerate(names):
            resolved.append(name)
            prefix = tuple(names[:k + 1])
            if k == len(names) - 1 and is_array:  # a new element restarts the counts of arrays inside the old one
                counters = {key: n for key, n in counters.items() if key == prefix or key[:k + 1] != prefix}
                counters[prefix] = counters.get(prefix, -1) + 1
                resolved.append(counters[prefix])
            elif prefix in counters:
                resolved.append(counters[prefix])
        sections.append((i, tuple(resolved)))
    bounds = [(start, sections[j + 1][0] if j + 1 < len(sections) else len(lines), table)
              for j, (start, table) in enumerate(sections)]
    fallback = None  # the header of the deepest table found, when the key itself is not written there
    for k in range(len(path), -1, -1):
        table, rest = tuple(path[:k]), [str(p) for p in path[k:] if not isinstance(p, int)]
        for start, end, t in bounds:
            if t != table:
                continue
            if fallback is None and table:
                fallback = start + 1
            if not rest:
                return start + 1 if table else None
            for cand in (".".join(rest), rest[0]):
                pat = re.compile(r"^\s*" + r"\s*\.\s*".join(re.escape(c) for c in cand.split(".")) + r"\s*=")
                quoted = re.compile(r"^\s*[\"']" + re.escape(cand) + r"[\"']\s*=")
                for i in range(start + (1 if table else 0), end):
                    if pat.match(lines[i]) or quoted.match(lines[i]):
                        return i + 1
    return fallback


def _key_text(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p + 1}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


class _Ctx:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def error(self, path: tuple, message: str) -> StudyError:
        line = locate(self.text, path)
        where = f"{self.source}, line {line}" if line else self.source
        return StudyError(f"{where}, key {_key_text(path)}: {message}")

    def check_keys(self, table: dict, allowed, path: tuple) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(path + (key,), f"unknown key{hint}; allowed here: {', '.join(allowed)}")

    def get(self, table: dict, key: str, path: tuple, kinds, default=None, required: bool = False,
            what: str = ""):
        if key not in table:
            if required:
                raise self.error(path + (key,), f"missing: {what or 'this key is required'}")
            return default
        value = table[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise self.error(path + (key,), f"expected {what or _kinds(kinds)}, got {value!r}")
        return value

    def choice(self, table: dict, key: str, path: tuple, choices, default):
        """A string key that must be one of ``choices`` (None, the default of some keys, passes)."""
        value = self.get(table, key, path, str, default)
        if value is not None and value not in choices:
            raise self.error(path + (key,), f"{value!r}; choose one of {', '.join(choices)}")
        return value


def _kinds(kinds) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# ------------------------------------------------------------------------------------------------- the parser
def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise StudyError("reading a study file needs Python 3.11 or later (tomllib), or the package tomli on "
                             "Python 3.10: pip install tomli") from None
    return tomllib


STUDY_KEYS = ("name", "title", "description", "reference", "results", "device")
ERF_KEYS = ("images", "num_images", "size", "samplers", "seed", "thresholds", "layers", "batch_size",
            "conv_backend", "precision", "allow_low_precision", "objective", "reduce")
SB_KEYS = ("stimuli", "allow_incomplete", "batch_size", "seed", "bootstrap", "precision")
MODEL_KEYS = ("id", "name", "label", "weights", "seed", "model_kwargs", "measure", "download", "note", "paper")
TOL_KEYS = ("erf", "shape_bias")


def parse_study(text: str, source: str = "<study>", base_dir: Path | None = None, builtin: bool = False) -> Study:
    """Parse and check a study file's text; raise :class:`StudyError` naming the line and key of a problem."""
    toml = _tomllib()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise StudyError(f"{source}: not valid TOML: {exc}. See docs/study.md for the format") from exc
    ctx = _Ctx(text, source)
    ctx.check_keys(data, ("study", "erf", "shape_bias", "tolerance", "model"), ())

    st = ctx.get(data, "study", (), dict, required=True, what="a [study] table with at least name = \"...\"")
    ctx.check_keys(st, STUDY_KEYS, ("study",))
    name = ctx.get(st, "name", ("study",), str, required=True, what="the study's name (a string)")
    if not _ID.match(name):
        raise ctx.error(("study", "name"), f"{name!r}: use letters, digits, '.', '_' and '-' only")
    device = ctx.choice(st, "device", ("study",), DEVICES, "auto")

    erf = _parse_erf(ctx, data) if "erf" in data else None
    sb = _parse_sb(ctx, data) if "shape_bias" in data else None
    if erf is None and sb is None:
        raise ctx.error(("study",), "the study measures nothing: add an [erf] and/or a [shape_bias] table")

    tolerance = {"erf": Tolerance(), "shape_bias": Tolerance()}
    tol = ctx.get(data, "tolerance", (), dict, {})
    ctx.check_keys(tol, TOL_KEYS, ("tolerance",))
    for key in TOL_KEYS:
        t = ctx.get(tol, key, ("tolerance",), dict, {})
        ctx.check_keys(t, ("abs", "rel"), ("tolerance", key))
        a = ctx.get(t, "abs", ("tolerance", key), (int, float), 0.0)
        r = ctx.get(t, "rel", ("tolerance", key), (int, float), 0.0)
        for k, v, hi, unit in (("abs", a, TOLERANCE_ABS_MAX[key], TOLERANCE_UNITS[key]),
                               ("rel", r, 1.0, "(a share of the paper's value)")):
            if not math.isfinite(v) or not 0 <= v <= hi:
                raise ctx.error(("tolerance", key, k), f"must be a finite number from 0 to {hi:g} {unit} (got {v})")
        tolerance[key] = Tolerance(float(a), float(r))

    models = ctx.get(data, "model", (), list, required=True, what="at least one [[model]] table")
    if not models:
        raise ctx.error(("model",), "the study lists no model: add [[model]] tables")
    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        spec = _parse_model(ctx, m, i, erf, sb)
        if spec.id in seen:
            raise ctx.error(("model", i, "id"), f"{spec.id!r} is already the id of model {seen[spec.id] + 1}; "
                                                "give each model its own id")
        seen[spec.id] = i
        specs.append(spec)
    return Study(name=name, title=ctx.get(st, "title", ("study",), str, name),
                 description=ctx.get(st, "description", ("study",), str, ""),
                 reference=ctx.get(st, "reference", ("study",), str, ""),
                 results=ctx.get(st, "results", ("study",), str, None), device=device, erf=erf, shape_bias=sb,
                 tolerance=tolerance, models=tuple(specs), source=source, base_dir=base_dir, text=text,
                 builtin=builtin)


#: the largest tolerance that still means something: the whole image (100 percentage points), the whole range of a
#: shape bias (1)
TOLERANCE_ABS_MAX = {"erf": 100.0, "shape_bias": 1.0}
TOLERANCE_UNITS = {"erf": "percentage points", "shape_bias": "of shape bias"}


def _bounded_int(ctx, table, key, path, default):
    """An integer key within the bounds of :mod:`erftools._limits` (the key names the quantity)."""
    v = ctx.get(table, key, path, int, default)
    problem = None if v is None else bound_problem(key, v)
    if problem:
        raise ctx.error(path + (key,), problem)
    return v


def _parse_erf(ctx: _Ctx, data: dict) -> ErfSpec:
    """The [erf] table; ``objective`` and ``reduce`` are the ERF variant keys (docs/erf.md, "Variants")."""
    from ..erf.objectives import OBJECTIVES, REDUCTIONS

    p = ("erf",)
    e = ctx.get(data, "erf", (), dict)
    ctx.check_keys(e, ERF_KEYS, p)
    samplers = ctx.get(e, "samplers", p, (list, str), ["random"])
    samplers = [samplers] if isinstance(samplers, str) else samplers
    if not samplers:
        raise ctx.error(p + ("samplers",), "name at least one sampler")
    for s in samplers:
        if s not in SAMPLERS:
            raise ctx.error(p + ("samplers",), f"unknown sampler {s!r}; choose from {', '.join(SAMPLERS)}")
    if len(set(samplers)) != len(samplers):
        raise ctx.error(p + ("samplers",), "a sampler is listed twice")
    thresholds = ctx.get(e, "thresholds", p, list, [0.2, 0.3, 0.5, 0.99])
    out = []
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < float(t) <= 1:
            raise ctx.error(p + ("thresholds",), f"{t!r}: a threshold is a fraction in (0, 1], e.g. 0.2")
        out.append(float(t))
    layers = ctx.get(e, "layers", p, (str, list), None)
    if isinstance(layers, list) and not all(isinstance(x, str) and x for x in layers):
        raise ctx.error(p + ("layers",), "a list of module names (strings), or \"stages\"")
    size, sizes = _sizes(ctx, e, p)
    backend = ctx.choice(e, "conv_backend", p, CONV_BACKENDS, None)
    images = ctx.get(e, "images", p, str, None)
    precision = ctx.choice(e, "precision", p, ERF_PRECISIONS, "fp32")
    allow_low = ctx.get(e, "allow_low_precision", p, bool, False)
    if precision == "bf16" and not allow_low:
        raise ctx.error(p + ("precision",), "'bf16' moved a high-contribution square in erftools' measurements "
                                            "against float64 (docs/erf.md, Precision); add allow_low_precision = "
                                            "true to [erf] to accept it (recorded in every run), or use \"fp32\"")
    return ErfSpec(precision=precision, allow_low_precision=allow_low, images=images or None,
                   num_images=_bounded_int(ctx, e, "num_images", p, 50), size=size, samplers=tuple(samplers),
                   seed=_bounded_int(ctx, e, "seed", p, 0), thresholds=tuple(out), layers=layers,
                   batch_size=_bounded_int(ctx, e, "batch_size", p, None), conv_backend=backend,
                   sizes=sizes, objective=ctx.choice(e, "objective", p, OBJECTIVES, OBJECTIVES[0]),
                   reduction=ctx.choice(e, "reduce", p, REDUCTIONS, REDUCTIONS[0]))


def _sizes(ctx: _Ctx, e: dict, p: tuple) -> tuple[int, tuple]:
    """``size = 1024`` -> (1024, ()); ``size = [224, 512, 1024]`` (an input-size sweep) -> (224, (224, 512, 1024))."""
    value = ctx.get(e, "size", p, (int, list), 1024)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ctx.error(p + ("size",), "name at least one size, e.g. 1024 or [224, 512, 1024]")
    for v in items:
        problem = bound_problem("size", v)
        if problem:
            raise ctx.error(p + ("size",), f"{v!r}: {problem}")
    if len(set(items)) != len(items):
        raise ctx.error(p + ("size",), "a size is listed twice")
    return items[0], (tuple(items) if isinstance(value, list) and len(items) > 1 else ())


def _parse_sb(ctx: _Ctx, data: dict) -> ShapeBiasSpec:
    p = ("shape_bias",)
    s = ctx.get(data, "shape_bias", (), dict)
    ctx.check_keys(s, SB_KEYS, p)
    precision = ctx.choice(s, "precision", p, PRECISIONS, "fp32")
    return ShapeBiasSpec(stimuli=ctx.get(s, "stimuli", p, str, None) or None,
                         allow_incomplete=ctx.get(s, "allow_incomplete", p, bool, False),
                         batch_size=_bounded_int(ctx, s, "batch_size", p, 32),
                         seed=_bounded_int(ctx, s, "seed", p, 0),
                         bootstrap=_bounded_int(ctx, s, "bootstrap", p, 10_000), precision=precision)


def _parse_model(ctx: _Ctx, m: Any, i: int, erf: ErfSpec | None, sb: ShapeBiasSpec | None) -> ModelSpec:
    p = ("model", i)
    if not isinstance(m, dict):
        raise ctx.error(("model",), "write each model as a [[model]] table")
    ctx.check_keys(m, MODEL_KEYS, p)
    name = ctx.get(m, "name", p, str, required=True, what="the model's registry or timm name, e.g. \"resnet-152\"")
    mid = ctx.get(m, "id", p, str, name)
    if not _ID.match(mid):
        raise ctx.error(p + ("id",), f"{mid!r}: use letters, digits, '.', '_' and '-' only (it names a folder)")
    weights = ctx.get(m, "weights", p, str, None)
    download = ctx.get(m, "download", p, dict, None)
    if download is not None:
        ctx.check_keys(download, ("url", "file", "note", "sha256"), p + ("download",))
        ctx.get(download, "url", p + ("download",), str, required=True, what="the download page of the weights")
        ctx.get(download, "file", p + ("download",), str, required=True,
                what="the file name the weights are saved under")
    if weights is None and download is None:
        weights = "pretrained"
    if weights == "":
        raise ctx.error(p + ("weights",), "empty; use pretrained, random, a tag, a file, a URL or \"unpublished\"")
    present = [x for x, spec in (("erf", erf), ("shape_bias", sb)) if spec is not None]
    measure = ctx.get(m, "measure", p, (list, str), present)
    measure = [measure] if isinstance(measure, str) else measure
    for x in measure:
        if x not in MEASUREMENTS:
            raise ctx.error(p + ("measure",), f"unknown measurement {x!r}; choose from {', '.join(MEASUREMENTS)}")
    for x in measure:
        if x == "erf" and erf is None or x == "shape_bias" and sb is None:
            raise ctx.error(p + ("measure",), f"{x!r} is measured, but the study has no [{x}] table")
    kwargs = ctx.get(m, "model_kwargs", p, dict, {})
    seed = _bounded_int(ctx, m, "seed", p, None)
    paper = ctx.get(m, "paper", p, dict, {})
    ctx.check_keys(paper, ("erf", "shape_bias"), p + ("paper",))
    perf, perf_src = _paper_erf(ctx, paper["erf"], p + ("paper", "erf")) if "erf" in paper else (None, "")
    psb, psb_src = (_paper_sb(ctx, paper["shape_bias"], p + ("paper", "shape_bias")) if "shape_bias" in paper
                    else (None, ""))
    return ModelSpec(id=mid, name=name, label=ctx.get(m, "label", p, str, mid), weights=weights, seed=seed,
                     model_kwargs=dict(kwargs), measure=tuple(measure), download=download,
                     note=ctx.get(m, "note", p, str, ""), paper_erf=perf, paper_erf_source=perf_src,
                     paper_shape_bias=psb, paper_shape_bias_source=psb_src, line=locate(ctx.text, p))


def _paper_erf(ctx: _Ctx, v: Any, p: tuple):
    if isinstance(v, str):
        kind, _, key = v.partition(":")
        if kind != "table10" or not key:
            raise ctx.error(p, f"{v!r}: write \"table10:<model>\" (a row of the paper's Table 10) or "
                                          "an inline table {\"0.2\" = 1.0, ...} of area ratios in percent")
        from ..erf.reference import table10 as paper_table10

        rows = paper_table10().get("models", [])
        row = next((r for r in rows if r.get("name") == key), None)
        if row is None:
            raise ctx.error(p, f"Table 10 has no row {key!r}; its rows: "
                                          + ", ".join(r.get("name", "?") for r in rows))
        values = {float(t): float(x) for t, x in row["area_ratio_percent"].items()}
        return values, f"paper Table 10, {key}"
    if isinstance(v, dict):
        values = {}
        for t, x in v.items():
            try:
                thr = float(t)
            except ValueError:
                thr = -1.0
            if (not 0 < thr <= 1 or isinstance(x, bool) or not isinstance(x, (int, float))
                    or not 0 <= x <= 100):
                raise ctx.error(p, f"{t!r} = {x!r}: keys are thresholds (\"0.2\"), values area ratios "
                                              "in percent (finite, 0 to 100)")
            values[thr] = float(x)
        return values, "study file"
    raise ctx.error(p, "expected \"table10:<model>\" or a table of area ratios in percent")


def _paper_sb(ctx: _Ctx, v: Any, p: tuple):
    if isinstance(v, str):
        kind, _, key = v.partition(":")
        if kind != "fig5" or not key:
            raise ctx.error(p, f"{v!r}: write \"fig5:<entry>\" (an entry of the paper's Fig. 5) "
                                                 "or a number")
        from ..shapebias.reference import load_published

        entries = load_published().get("entries", {})
        if key not in entries:
            raise ctx.error(p, f"Fig. 5 has no entry {key!r}; its entries: "
                                                 + ", ".join(entries))
        return float(entries[key]["shape_bias"]), f"paper Fig. 5, {entries[key].get('label', key)}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ctx.error(p, f"{v!r}: a shape bias is a number in [0, 1] or \"fig5:<entry>\"")
    return float(v), "study file"


# --------------------------------------------------------------------------------------------- finding studies
def _studies_dir() -> Path:
    from .._paths import data_dir

    return data_dir() / "studies"


def builtin_studies() -> list[str]:
    """The names of the built-in studies (``data/studies/*.toml``)."""
    d = _studies_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def builtin_path(name: str) -> Path | None:
    p = _studies_dir() / f"{name}.toml"
    return p if p.is_file() else None


def load_study(study: str | Path) -> Study:
    """A study from a file path, or a built-in study by name (``replknet-table10``)."""
    path = Path(study).expanduser()
    builtin = False
    if not path.is_file():
        b = builtin_path(str(study)) if re.match(r"^[A-Za-z0-9._-]+$", str(study)) else None
        if b is None and path.exists():
            raise StudyError(f"{path} is not a file; pass a study file (TOML) or a built-in study name")
        if b is None:
            raise StudyError(f"no study file {path} and no built-in study of that name; built-in studies: "
                             f"{', '.join(builtin_studies()) or 'none'}")
        path, builtin = b, True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path} cannot be read as a text file: {exc}") from exc
    source = f"built-in study {path.stem}" if builtin else str(path)
    return parse_study(text, source, None if builtin else path.resolve().parent, builtin)

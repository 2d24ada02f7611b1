"""Shape-bias analysis of per-trial decisions (model-vs-human's rules), with bootstrap confidence intervals.

Rules (identical to model-vs-human ``ShapeBias.analysis``, Geirhos et al. 2019):

* shape category = the ``category`` column; texture category = the last ``-`` word of the stimulus file name in
  ``imagename``, without digits.
* trials with shape == texture (80 per observer) have no cue conflict: they never count as shape or texture
  decisions, but they stay in the denominator of the two fractions (as in model-vs-human);
* ``fraction_correct_shape`` = #(response == shape) / #all trials, ``fraction_correct_texture`` likewise;
  ``na`` (no answer, humans) counts in the denominator only;
* ``shape_bias`` = #shape / (#shape + #texture): one pooled ratio over all trials (not a mean of categories);
* per category: the same analysis on the trials of one shape category.

Confidence interval: a percentile bootstrap over the cue-conflict *images* (each image's decisions, all observers
together, are resampled as one unit), ``n_boot`` resamples from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .._io import ErftoolsError
from ..results.records import HUMAN, HUMANS, NETWORK
from .categories import CATEGORIES
from .decisions import CSV_COLUMNS
from .stimuli import shape_category, stimulus_file, texture_category

log = logging.getLogger(__name__)

NO_ANSWER = "na"
DEFAULT_BOOTSTRAP = 10_000
DEFAULT_SEED = 0
CI_LEVEL = 0.95


# --------------------------------------------------------------------------------------------------- reading
def read_decisions(path: str | os.PathLike) -> list[dict]:
    """Read a per-trial CSV (model-vs-human schema; column names case-insensitive) and check every row.

    Each row gets ``_file`` (the path) and ``_line``. Raises :class:`ErftoolsError` naming the file, line and
    problem for a missing column, an unknown category or response, or an image name without a stimulus.
    """
    path = Path(path)
    if path.is_dir():
        raise ErftoolsError(f"{path} is a folder, not a decisions file; pass the CSV files inside it "
                            f"(e.g. {path}/*.csv)")
    if not path.exists():
        raise ErftoolsError(f"decisions file {path} does not exist")
    try:
        return _read_decisions(path)
    except UnicodeDecodeError as exc:
        raise ErftoolsError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8 "
                            "CSV (or pass the right file)") from None
    except OSError as exc:
        raise ErftoolsError(f"{path} cannot be read ({exc.strerror or exc})") from exc


def _read_decisions(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ErftoolsError(f"{path} is empty; expected the columns {','.join(CSV_COLUMNS)}") from None
        need = ("subj", "object_response", "category", "imagename")
        missing = [c for c in need if c not in header]
        if missing:
            raise ErftoolsError(f"{path} lacks the column(s) {', '.join(missing)}; a decisions file has the "
                                f"model-vs-human columns {','.join(CSV_COLUMNS)}")
        rows = []
        first_line: dict[tuple[str, str], int] = {}
        valid_resp = set(CATEGORIES) | {NO_ANSWER}
        for line, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise ErftoolsError(f"{path}, line {line}: {len(values)} fields, the header has {len(header)}")
            row = {k: v.strip() for k, v in zip(header, values)}
            cat, resp = row["category"], row["object_response"]
            if cat not in CATEGORIES:
                raise ErftoolsError(f"{path}, line {line}: unknown category {cat!r} (expected one of the 16: "
                                    f"{', '.join(CATEGORIES)})")
            if resp == "" or resp.lower() == "nan":
                resp = row["object_response"] = NO_ANSWER
            if resp not in valid_resp:
                raise ErftoolsError(f"{path}, line {line}: unknown object_response {resp!r} (one of the 16 "
                                    "categories, or 'na')")
            tex = texture_category(row["imagename"])
            if tex not in CATEGORIES or not re.search(r"-[a-z]+\d*\.\w+$", stimulus_file(row["imagename"])):
                raise ErftoolsError(f"{path}, line {line}: cannot read the texture category from the image name "
                                    f"{row['imagename']!r} (expected ..._<shape><i>-<texture><j>.png)")
            shp = shape_category(row["imagename"])
            if shp != cat:
                raise ErftoolsError(f"{path}, line {line}: the image {row['imagename']!r} shows a {shp!r} shape "
                                    f"but its category column says {cat!r}")
            row["_file"] = str(path)
            row["_line"] = line
            key = (row["subj"], row["imagename"])
            if key in first_line:
                raise ErftoolsError(f"{path}, lines {first_line[key]} and {line}: {row['subj']} decides on "
                                    f"{row['imagename']} twice; every observer sees each stimulus once, so remove "
                                    "the repeated rows")
            first_line[key] = line
            rows.append(row)
    if not rows:
        raise ErftoolsError(f"{path} has no trials")
    return rows


def image_key(row: dict) -> str:
    """The stimulus a trial shows, as ``<shape>/<file name>`` (a relpath in the cue-conflict folder)."""
    return f"{row['category']}/{stimulus_file(row['imagename'])}"


def is_human(subj: str) -> bool:
    """model-vs-human's convention: human observers are named ``subject-NN``."""
    return str(subj).startswith("subject-")


@dataclass
class DecisionMaker:
    """A set of trials analysed together: one model or observer, or several pooled (``members``)."""
    label: str
    rows: list[dict]
    kind: str = NETWORK  # NETWORK | HUMAN | HUMANS (pooled) | MODEL (erftools.results.records)
    members: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _group(rows: Iterable[dict], key: Callable[[dict], object]) -> dict:
    """``{key(row): [rows]}`` in order of first appearance."""
    out: dict = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def _by_category(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """The trials of each shape category that has any, in :data:`CATEGORIES` order."""
    by_cat = _group(rows, lambda r: r["category"])
    return {c: by_cat[c] for c in CATEGORIES if c in by_cat}


def group_decision_makers(rows: Sequence[dict], *, pool_humans: bool = True, keep_individuals: bool = False,
                          file_labels: dict[str, str] | None = None) -> list[DecisionMaker]:
    """Group trials by observer: one decision maker per (file, subj), in order of appearance.

    Human observers (``subject-NN``) are pooled into one ``humans`` decision maker (model-vs-human's average
    line; its record lists every subject) unless ``pool_humans`` is false; ``keep_individuals`` keeps each subject
    as its own decision maker as well. Two files with the same subj (e.g. AlexNet in Caffe and in torchvision) get
    labels that name their folders. ``file_labels`` (``{file: label}``) names the network of a known
    single-subject file (the reference files of texture-vs-shape).
    """
    file_labels = file_labels or {}
    groups = _group(rows, lambda r: (r.get("_file", ""), r["subj"]))
    files_of_subj = Counter(s for _, s in groups)
    subjs_of_file = Counter(f for f, _ in groups)
    singles = []
    for (f, s), rs in groups.items():
        label = s if files_of_subj[s] == 1 else f"{s} ({Path(f).parent.name or Path(f).stem})"
        if f in file_labels and not is_human(s) and subjs_of_file[f] == 1:
            label = file_labels[f]
        singles.append(DecisionMaker(label, rs, HUMAN if is_human(s) else NETWORK, [s], [f]))
    humans = [d for d in singles if d.kind == HUMAN]
    if not pool_humans or len(humans) < 2:
        return singles
    pooled = DecisionMaker("humans", [r for d in humans for r in d.rows], HUMANS,
                           [d.label for d in humans], sorted({f for d in humans for f in d.files}))
    out = [d for d in singles if d.kind != HUMAN or keep_individuals]
    first = next(i for i, d in enumerate(singles) if d.kind == HUMAN)
    out.insert(min(first, len(out)), pooled)
    return out


# --------------------------------------------------------------------------------------------------- analysis
def _counts(rows: Sequence[dict]) -> dict:
    """The trial counts, keyed as the record's fields (and ``n_no_conflict_correct``)."""
    c = dict.fromkeys(("n_shape", "n_texture", "n_conflict_trials", "n_no_conflict_trials", "n_no_answer",
                       "n_no_conflict_correct"), 0)
    for r in rows:
        shape, texture, resp = r["category"], texture_category(r["imagename"]), r["object_response"]
        c["n_no_answer"] += resp == NO_ANSWER
        if shape == texture:
            c["n_no_conflict_trials"] += 1
            c["n_no_conflict_correct"] += resp == shape
        else:
            c["n_conflict_trials"] += 1
            c["n_shape"] += resp == shape
            c["n_texture"] += resp == texture
    return dict(num_trials=len(rows), **c)


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def shape_bias(rows: Sequence[dict]) -> dict:
    """model-vs-human's three numbers for a set of trials (keys with hyphens, exactly as its ``analysis``)."""
    c = _counts(rows)
    if not c["num_trials"]:
        raise ErftoolsError("no trials to analyse")
    return {"fraction-correct-shape": c["n_shape"] / c["num_trials"],
            "fraction-correct-texture": c["n_texture"] / c["num_trials"],
            "shape-bias": _ratio(c["n_shape"], c["n_shape"] + c["n_texture"])}


def bootstrap_ci(rows: Sequence[dict], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED,
                 level: float = CI_LEVEL) -> list[float]:
    """Percentile bootstrap CI of the pooled shape bias, resampling cue-conflict images with replacement.

    All trials on one image (several observers when pooled) move together, so the interval reflects the choice
    of stimuli. Resamples where shape + texture == 0 are dropped. Returns ``[lo, hi]`` (NaN when undefined).
    """
    return _bootstrap(rows, n_boot=n_boot, rng=np.random.default_rng(seed), level=level)


def _bootstrap(rows: Sequence[dict], *, n_boot: int, rng: np.random.Generator, level: float) -> list[float]:
    shape_n: Counter = Counter()  # per cue-conflict image (sorted by image_key): shape and texture decisions
    tex_n: Counter = Counter()
    for r in rows:
        texture = texture_category(r["imagename"])
        if r["category"] != texture:
            shape_n[image_key(r)] += r["object_response"] == r["category"]
            tex_n[image_key(r)] += r["object_response"] == texture
    s = np.array([shape_n[k] for k in sorted(shape_n)], dtype=np.int64)
    t = np.array([tex_n[k] for k in sorted(shape_n)], dtype=np.int64)
    m = len(s)
    if m == 0 or n_boot <= 0 or s.sum() + t.sum() == 0:
        return [math.nan, math.nan]
    chunk = max(1, min(n_boot, 4_000_000 // m))
    stats = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n_boot - start), m))
        ss, tt = s[idx].sum(axis=1), t[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(ss / (ss + tt))
    values = np.concatenate(stats)
    values = values[np.isfinite(values)]
    if not len(values):
        return [math.nan, math.nan]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def analyse(rows: Sequence[dict], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED,
            level: float = CI_LEVEL) -> dict:
    """Everything erftools reports about a set of trials (the fields of a shape-bias record).

    Keys: ``shape_bias``, ``fraction_correct_shape``, ``fraction_correct_texture`` (model-vs-human's three),
    ``ci95``, ``accuracy_no_conflict`` (fraction of the no-conflict images classified as their category),
    ``num_trials``, ``n_shape``, ``n_texture``, ``n_conflict_trials``, ``n_no_answer``, ``n_no_conflict_trials``,
    ``fraction_cue_decisions`` (share of cue-conflict trials decided for either cue), ``per_category``
    (``{category: {shape_bias, fraction_shape, fraction_texture, n, n_shape, n_texture, ci95}}``), ``ci_method``.
    """
    if not rows:
        raise ErftoolsError("no trials to analyse")
    rng = np.random.default_rng(seed)
    c = _counts(rows)
    n, decided = c["num_trials"], c["n_shape"] + c["n_texture"]
    if decided == 0:
        raise UndefinedShapeBias(
            f"the shape bias is undefined for these {n} trials: none was decided for the shape or the texture "
            f"category ({c['n_conflict_trials']} with a cue conflict, {c['n_no_conflict_trials']} without, "
            f"{c['n_no_answer']} with no answer), and the shape bias is #shape / (#shape + #texture). Check that the "
            "decisions are the right file or that the model's outputs are meaningful")
    out = {"shape_bias": c["n_shape"] / decided, "fraction_correct_shape": c["n_shape"] / n,
           "fraction_correct_texture": c["n_texture"] / n,
           "ci95": _bootstrap(rows, n_boot=n_boot, rng=rng, level=level),
           "accuracy_no_conflict": _ratio(c["n_no_conflict_correct"], c["n_no_conflict_trials"])}
    out.update((k, c[k]) for k in ("num_trials", "n_shape", "n_texture", "n_conflict_trials", "n_no_conflict_trials",
                                   "n_no_answer"))
    out.update(fraction_cue_decisions=_ratio(decided, c["n_conflict_trials"]),
               num_images=len({image_key(r) for r in rows}), per_category={})
    for cat, rs in _by_category(rows).items():
        cc = _counts(rs)
        out["per_category"][cat] = {
            "shape_bias": _ratio(cc["n_shape"], cc["n_shape"] + cc["n_texture"]),
            "fraction_shape": cc["n_shape"] / cc["num_trials"], "fraction_texture": cc["n_texture"] / cc["num_trials"],
            "n": cc["num_trials"], "n_shape": cc["n_shape"], "n_texture": cc["n_texture"],
            "ci95": _bootstrap(rs, n_boot=n_boot, rng=rng, level=level)}
    out["ci_method"] = {"method": "percentile bootstrap over cue-conflict images (all trials of an image resampled "
                                  "together; per-category intervals resample that category's images)",
                        "n_boot": n_boot, "seed": seed, "level": level, "rng": "numpy.random.default_rng"}
    return out


class UndefinedShapeBias(ErftoolsError):
    """No trial was decided for either cue: #shape + #texture == 0."""


def analyse_decision_maker(dm: DecisionMaker, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> dict:
    """:func:`analyse` plus, for pooled humans, each subject's numbers and the mean over subjects (a subject whose
    shape bias is undefined is listed with ``shape_bias: None`` and left out of the mean)."""
    try:
        out = analyse(dm.rows, n_boot=n_boot, seed=seed)
    except UndefinedShapeBias as exc:
        raise UndefinedShapeBias(f"{dm.label}: {exc}") from None
    if dm.kind == HUMANS:
        subjects = out["subjects"] = {}
        for subj, rs in _group(dm.rows, lambda r: r["subj"]).items():
            try:
                a = analyse(rs, n_boot=n_boot, seed=seed)
            except UndefinedShapeBias:
                log.warning("%s: no trial decided for either cue; its shape bias is undefined and left out of the "
                            "mean over subjects", subj)
                subjects[subj] = {"shape_bias": None, "num_trials": len(rs), "per_category": {}}
                continue
            subjects[subj] = {k: a[k] for k in ("shape_bias", "fraction_correct_shape", "fraction_correct_texture",
                                                "ci95", "accuracy_no_conflict", "num_trials", "n_no_answer")}
            subjects[subj]["per_category"] = {c: v["shape_bias"] for c, v in a["per_category"].items()}
        vals = [v["shape_bias"] for v in subjects.values() if v["shape_bias"] is not None]
        out["shape_bias_mean_of_subjects"] = float(np.mean(vals))
        out["shape_bias_range_of_subjects"] = [float(min(vals)), float(max(vals))]
    return out


def mvh_per_category(rows: Iterable[dict]) -> dict[str, dict]:
    """model-vs-human's three numbers per shape category (hyphenated keys)."""
    return {c: shape_bias(rs) for c, rs in _by_category(rows).items()}

"""ERF against shape bias across the models of a study: each model's area ratio r(t) next to its shape bias, and
Spearman's rank correlation over models with a bootstrap interval.

Protocol:

* a model counts when it has a finished ERF run (per sampler: ``<id>/erf-<sampler>``) and a finished shape-bias
  run; at each threshold t, models whose ERF has no square holding the share t (area ratio None) are left out
  (and named);
* ``rho``, ``p``: :func:`scipy.stats.spearmanr` of (r(t), shape bias) over the models (average ranks for ties;
  the p-value is scipy's, a t-distribution approximation);
* 95% interval: a percentile bootstrap over models. ``n_boot`` resamples of n models drawn with replacement
  (``numpy.random.default_rng(seed)``, ``integers(0, n, (n_boot, n))``), Spearman's rho of each (the Pearson
  correlation of the average ranks), resamples in which either variable is constant (rho undefined) dropped and
  counted (``n_boot_valid``), then the 2.5% and 97.5% quantiles (``numpy.quantile``, linear interpolation);
* with fewer than :data:`MIN_MODELS` models, or when every model has the same value of one variable, the
  correlation is undefined and says why (never a number).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .records import ResultError

MIN_MODELS = 3
N_BOOT = 10_000
SEED = 0
LEVEL = 0.95


@dataclass
class ModelPoint:
    """One model of a study with both measurements: its shape bias and its area ratio per threshold (fractions)."""
    model: str  # the model's id
    label: str
    sampler: str
    shape_bias: float
    area_ratios: dict  # {threshold: fraction of the image, or None}


@dataclass
class Correlation:
    """Spearman's rank correlation of r(t) and shape bias over the models of one sampler at one threshold."""
    sampler: str
    threshold: float
    n: int
    rho: float | None = None
    p_value: float | None = None
    ci95: list | None = None
    n_boot: int = 0
    n_boot_valid: int = 0
    note: str = ""  # why it is undefined, and who was left out
    models: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _ranks_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of the average ranks (Spearman's rho); NaN where a row is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_ci(x, y, *, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> tuple[list | None, int]:
    """The percentile bootstrap interval of Spearman's rho over the pairs ``(x[i], y[i])`` (see the module text);
    returns ``(ci or None, number of valid resamples)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2 or n_boot <= 0:
        return None, 0
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rho = _ranks_pearson(x[idx], y[idx])
    rho = rho[np.isfinite(rho)]
    if not len(rho):
        return None, 0
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(rho, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)], int(len(rho))


def spearman(x, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """``{rho, p_value, ci95, n_boot, n_boot_valid, note}`` for paired values; undefined (None, with a note) for
    fewer than :data:`MIN_MODELS` pairs or a constant variable."""
    from scipy.stats import spearmanr

    n = len(x)
    out = {"rho": None, "p_value": None, "ci95": None, "n_boot": 0, "n_boot_valid": 0, "note": ""}
    if n < MIN_MODELS:
        out["note"] = (f"undefined: a rank correlation needs at least {MIN_MODELS} models with both measurements, "
                       f"this has {n}")
        return out
    constant = [which for which, v in (("area ratio", x), ("shape bias", y)) if len(set(map(float, v))) == 1]
    if constant:
        out["note"] = f"undefined: every model has the same {constant[0]}"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(x, y)
    out["rho"], out["p_value"] = float(res.statistic), float(res.pvalue)
    out["ci95"], out["n_boot_valid"] = bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    out["n_boot"] = n_boot
    return out


# ----------------------------------------------------------------------------------------------- a study
def study_points(study) -> tuple[dict[str, list[ModelPoint]], list[str]]:
    """The models of ``study`` (a :class:`~erftools.results.store.StudyResult`) with both measurements, per ERF
    sampler (``{sampler: [ModelPoint]}``), and the models left out with the reason."""
    points: dict[str, list[ModelPoint]] = {}
    left_out: list[str] = []
    for m in study.models:
        if m.unpublished:
            continue
        try:
            found = study.runs(m)
        except ResultError as exc:
            left_out.append(f"{m.label}: {exc}")
            continue
        sb = next((run for _, run, _ in found if run is not None and run.kind == "shape-bias"), None)
        erf = [(folder, run) for folder, run, _ in found if run is not None and run.kind == "erf"]
        if sb is None or not erf or sb.record.shape_bias is None or not math.isfinite(sb.record.shape_bias):
            what = [w for w, ok in (("ERF", bool(erf)), ("shape bias", sb is not None)) if not ok]
            left_out.append(f"{m.label}: no finished {' or '.join(what) or 'shape bias value'}")
            continue
        for folder, run in erf:
            sampler = folder.rsplit("/", 1)[-1].removeprefix("erf-")
            points.setdefault(sampler, []).append(
                ModelPoint(m.id, m.label, sampler, float(sb.record.shape_bias), run.record.area_ratio_map()))
    return points, left_out


def study_correlations(study, *, n_boot: int = N_BOOT, seed: int = SEED) -> list[Correlation]:
    """Spearman's rho of r(t) and shape bias per sampler and threshold of the study (see the module text)."""
    points, _ = study_points(study)
    thresholds = study.thresholds or sorted({t for ps in points.values() for p in ps for t in p.area_ratios})
    samplers = list(points) or list((study.measurements.get("erf") or {}).get("samplers") or ["random"])
    out = []
    for sampler in samplers:
        ps = points.get(sampler, [])
        for t in thresholds:
            key = round(float(t), 6)
            have = [p for p in ps if p.area_ratios.get(key) is not None]
            res = spearman([p.area_ratios[key] for p in have], [p.shape_bias for p in have], n_boot=n_boot,
                           seed=seed)
            gone = [p.label for p in ps if p.area_ratios.get(key) is None]
            note = res.pop("note")
            if gone:
                note = "; ".join(x for x in (note, f"left out (no square holds {t:.0%}): {', '.join(gone)}") if x)
            out.append(Correlation(sampler, float(t), len(have), note=note, models=[p.model for p in have], **res))
    return out


# --------------------------------------------------------------------------------------------------- text
def _pct(v) -> str:
    return "n/a" if v is None else f"{100.0 * v:.2f}"


def point_rows(study) -> list[dict[str, str]]:
    """One row per model and sampler: shape bias and r(t) in percent of the image (text cells)."""
    points, _ = study_points(study)
    return [{"model": p.label, "ERF sampler": sampler, "shape bias": f"{p.shape_bias:.3f}",
             **{f"r @ {t:.0%} (%)": _pct(p.area_ratios.get(round(float(t), 6)))
                for t in study.thresholds or sorted(p.area_ratios)}}
            for sampler, ps in points.items() for p in ps]


def correlation_rows(correlations: list[Correlation]) -> list[dict[str, str]]:
    """One row per sampler and threshold: the number of models, rho, its 95% bootstrap interval and p (text)."""
    return [{"ERF sampler": c.sampler, "threshold": f"{c.threshold:.0%}", "models": str(c.n),
             "Spearman rho": "undefined" if c.rho is None else f"{c.rho:+.3f}",
             "95% CI (bootstrap over models)": "" if c.ci95 is None else f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]",
             "p": "" if c.p_value is None else f"{c.p_value:.3g}", "note": c.note} for c in correlations]


def markdown(study, correlations: list[Correlation] | None = None, figure: str | None = None) -> str:
    """The section "ERF against shape bias" (Markdown; text from files escaped), empty when the study does not
    measure both."""
    from .text import md_text

    m = study.measurements or {}
    if not (m.get("erf") and m.get("shape_bias")):
        return ""
    correlations = study_correlations(study) if correlations is None else correlations
    _, left_out = study_points(study)

    def table(rows: list[dict[str, str]]) -> str:
        if not rows:
            return "No model has both measurements yet.\n"
        head = list(rows[0])
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(md_text(r[h]) for h in head) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    out = ["## ERF against shape bias\n",
           "Each model's ERF area ratio r(t) (percent of the image) and its shape bias; Spearman's rank correlation "
           f"over models (scipy) with a 95% percentile bootstrap interval ({N_BOOT} resamples of the models, seed "
           f"{SEED}; resamples with a constant variable dropped).\n"]
    if figure:
        out.append(f"![ERF area ratio against shape bias]({figure})\n")
    out.append(table(point_rows(study)))
    out.append(table(correlation_rows(correlations)))
    if left_out:
        out.append("Not in the correlation: " + md_text("; ".join(left_out)) + "\n")
    return "\n".join(out)

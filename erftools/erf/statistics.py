"""Statistics of an ERF matrix beyond the paper's area ratios, each with a closed-form meaning.

All work on the raw matrix (mean contribution scores, not log-scaled) with the paper's centre ``(H//2, W//2)``;
``x`` is the column and ``y`` the row (pointing down), in pixels of the input.

* :func:`gaussian_fit`: least-squares fit of ``A exp(-q/2)``, ``q = d^T S^-1 d``, ``d = (x - x0, y - y0)``: the
  centre, ``sigma_x`` / ``sigma_y`` (standard deviations along the columns / rows), ``sigma_major`` /
  ``sigma_minor`` (along the principal axes), ``orientation_deg`` (angle of the major axis from the x axis towards
  the y axis, in (-90, 90]; None for an isotropic fit) and ``r2`` (coefficient of determination of the fit on the matrix).
* :func:`contribution_radii`: the smallest radius (Euclidean distance from the centre) whose disc holds 50, 90
  and 99 % of the total contribution.
* :func:`centre_of_mass`: the contribution-weighted mean position and its offset from the centre.
* :func:`erf_statistics`: everything above, the area ratios, and (given the model) the theoretical receptive
  field with the ratio of effective to theoretical size, as one JSON-able dict.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np

from .analysis import DEFAULT_THRESHOLDS, EMPTY_MESSAGE, EmptyErfWarning, area_ratios, check_matrix

__all__ = ["gaussian_fit", "contribution_radii", "centre_of_mass", "erf_statistics", "DEFAULT_SHARES",
           "STATISTICS_SCHEMA"]

DEFAULT_SHARES = (0.5, 0.9, 0.99)
STATISTICS_SCHEMA = 1


def _raw(matrix) -> np.ndarray:
    return check_matrix(matrix).astype(np.float64)


def centre_of_mass(matrix) -> dict:
    """``{"x", "y"}``: the contribution-weighted mean column and row; ``offset_x`` / ``offset_y`` / ``offset``:
    from the centre ``(W//2, H//2)`` (pixels). All None for an all-zero matrix."""
    a = _raw(matrix)
    h, w = a.shape
    total = a.sum()
    if total <= 0:
        return {"x": None, "y": None, "offset_x": None, "offset_y": None, "offset": None}
    y = float((a.sum(1) * np.arange(h)).sum() / total)
    x = float((a.sum(0) * np.arange(w)).sum() / total)
    dx, dy = x - w // 2, y - h // 2
    return {"x": x, "y": y, "offset_x": dx, "offset_y": dy, "offset": math.hypot(dx, dy)}


def contribution_radii(matrix, shares: Iterable[float] = DEFAULT_SHARES) -> dict:
    """``{str(share): radius}``: the smallest Euclidean distance ``r`` from the centre ``(H//2, W//2)`` such that
    the pixels at distance ``<= r`` hold at least ``share`` of the total contribution (exact pixel distances, no
    binning). None for an all-zero matrix."""
    a = _raw(matrix)
    h, w = a.shape
    yy, xx = np.indices((h, w))
    dist = np.hypot(yy - h // 2, xx - w // 2).ravel()
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    cum = np.cumsum(a.ravel()[order])
    total = cum[-1]
    out = {}
    for s in shares:
        s = float(s)
        if not 0 < s <= 1:
            raise ValueError(f"shares are fractions of the total in (0, 1]; got {s}")
        if total <= 0:
            out[str(s)] = None
            continue
        # the first pixel at which the cumulative share reaches s; all pixels at that same distance are inside
        idx = int(np.searchsorted(cum, s * total * (1 - 1e-12), side="left"))
        out[str(s)] = float(d[min(idx, len(d) - 1)])
    return out


def _moments(a: np.ndarray, xx, yy):
    total = a.sum()
    x0 = (a * xx).sum() / total
    y0 = (a * yy).sum() / total
    cxx = (a * (xx - x0) ** 2).sum() / total
    cyy = (a * (yy - y0) ** 2).sum() / total
    cxy = (a * (xx - x0) * (yy - y0)).sum() / total
    return x0, y0, cxx, cyy, cxy


def gaussian_fit(matrix, *, max_side: int = 1024) -> dict:
    """Fit ``A exp(-(d^T P d) / 2)`` (``P`` the inverse covariance) to the raw matrix by least squares.

    Started from the matrix's moments; solved with ``scipy.optimize.least_squares`` and an exact Jacobian.
    Returns ``ok`` (False with ``reason`` when the matrix is empty or the fit fails), ``amplitude``, ``centre_x``,
    ``centre_y``, ``sigma_x``, ``sigma_y``, ``sigma_major``, ``sigma_minor``, ``orientation_deg`` and ``r2``
    (``1 - SS_res / SS_tot``). Matrices larger than ``max_side`` are sampled every ``k``-th pixel (a Gaussian
    sampled on a coarser grid is the same Gaussian; positions stay in input pixels).
    """
    from scipy.optimize import least_squares

    a = _raw(matrix)
    fail = dict.fromkeys(("amplitude", "centre_x", "centre_y", "sigma_x", "sigma_y", "sigma_major", "sigma_minor",
                          "orientation_deg", "r2"))
    if a.sum() <= 0:
        return {"ok": False, "reason": "the matrix is all zero", **fail}
    step = max(1, -(-max(a.shape) // max_side))
    h, w = a.shape
    yy, xx = np.mgrid[0:h:step, 0:w:step].astype(np.float64)
    z = a[::step, ::step]
    x0, y0, cxx, cyy, cxy = _moments(z, xx, yy)
    cov = np.array([[cxx, cxy], [cxy, cyy]]) + np.eye(2) * 0.25
    try:
        p = np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        p = np.eye(2)
    xf, yf, zf = xx.ravel(), yy.ravel(), z.ravel()
    scale = float(zf.max())
    zn = zf / scale

    def model(t):
        amp, mx, my, pa, pb, pc = t
        dx, dy = xf - mx, yf - my
        q = pa * dx * dx + 2 * pb * dx * dy + pc * dy * dy
        e = np.exp(-0.5 * np.minimum(q, 1400.0))
        return amp * e, e, dx, dy

    def resid(t):
        return model(t)[0] - zn

    def jac(t):
        amp, mx, my, pa, pb, pc = t
        g, e, dx, dy = model(t)
        return np.stack([e, g * (pa * dx + pb * dy), g * (pb * dx + pc * dy),
                         -0.5 * g * dx * dx, -g * dx * dy, -0.5 * g * dy * dy], axis=1)

    start = np.array([1.0, x0, y0, p[0, 0], p[0, 1], p[1, 1]])
    try:
        sol = least_squares(resid, start, jac=jac, method="lm", max_nfev=2000, xtol=1e-12, ftol=1e-12)
    except Exception as exc:  # pragma: no cover - scipy failure modes
        return {"ok": False, "reason": f"the fit failed: {exc}", **fail}
    amp, mx, my, pa, pb, pc = sol.x
    prec = np.array([[pa, pb], [pb, pc]])
    evals = np.linalg.eigvalsh(prec)
    if not sol.success or not np.all(np.isfinite(sol.x)) or evals.min() <= 0 or amp <= 0:
        return {"ok": False, "reason": "the fit did not converge to a Gaussian (no positive-definite spread)",
                **fail}
    c = np.linalg.inv(prec)
    var, vec = np.linalg.eigh(c)  # ascending: minor, major
    major = vec[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90:
        angle += 180
    elif angle > 90:
        angle -= 180
    if var[1] - var[0] <= 1e-6 * var[1]:  # isotropic (to fp precision): no direction stands out
        angle = None
    fitted = model(sol.x)[0] * scale
    ss_res = float(((a[::step, ::step].ravel() - fitted) ** 2).sum())
    ss_tot = float(((zf - zf.mean()) ** 2).sum())
    return {"ok": True, "reason": None, "amplitude": float(amp * scale), "centre_x": float(mx),
            "centre_y": float(my), "sigma_x": float(math.sqrt(c[0, 0])), "sigma_y": float(math.sqrt(c[1, 1])),
            "sigma_major": float(math.sqrt(var[1])), "sigma_minor": float(math.sqrt(var[0])),
            "orientation_deg": None if angle is None else float(angle), "r2": float(1 - ss_res / ss_tot) if ss_tot > 0 else None}


def erf_statistics(matrix, *, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, shares: Iterable[float] =
                   DEFAULT_SHARES, model=None, layer: str | None = None, theoretical: dict | None = None) -> dict:
    """Every statistic of ``matrix`` as a JSON-able dict (schema :data:`STATISTICS_SCHEMA`).

    ``model`` (and ``layer``, a module name; default the final feature map) adds the theoretical receptive field
    (:func:`erftools.erf.theoretical.theoretical_rf`), traced on the model; ``theoretical`` passes one already
    computed instead (a dict from ``TheoreticalRF.to_dict()``). An all-zero matrix gives a warning
    (:class:`EmptyErfWarning`) and is reported with ``"empty": true`` and None statistics.
    """
    a = check_matrix(matrix)
    h, w = a.shape
    empty = not bool(np.any(a > 0))
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyErfWarning)  # said once below
        ratios = area_ratios(a, thresholds)
    if empty:
        warnings.warn(EMPTY_MESSAGE, EmptyErfWarning, stacklevel=2)
        notes.append(EMPTY_MESSAGE)
    out = {"schema": STATISTICS_SCHEMA, "shape": [h, w], "centre": [h // 2, w // 2], "empty": empty,
           "area_ratios": [r.to_dict() for r in ratios], "gaussian": gaussian_fit(a),
           "radii": contribution_radii(a, shares), "centre_of_mass": centre_of_mass(a),
           "theoretical_rf": None, "effective_to_theoretical": None, "warnings": notes}
    if theoretical is None and model is not None:
        from .theoretical import theoretical_rf

        theoretical = theoretical_rf(model, layer, input_size=(h, w)).to_dict()
    if theoretical is not None:
        out["theoretical_rf"] = theoretical
        out["effective_to_theoretical"] = effective_to_theoretical(ratios, theoretical, (h, w))
    return out


def effective_to_theoretical(ratios, theoretical: dict, size: tuple[int, int]) -> dict | None:
    """``{str(threshold): side / theoretical side}`` for each high-contribution square, against the theoretical
    receptive field itself (the number printed beside it; when it is larger than the image the ratio is bounded by
    image side / theoretical side, which the record's sizes show); None without a theoretical receptive field.
    ``size`` is kept for the callers' signature."""
    side = theoretical.get("side")
    if not side:
        return None
    t = math.sqrt(side[0] * side[1])
    return {str(r.threshold): (None if r.side is None else r.side / t) for r in ratios}

"""Analysis of an aggregated contribution matrix: high-contribution area ratios (paper Table 10) and a radial profile.

The area ratio follows the paper's protocol (section 5.1): ``A = log10(matrix + 1)``, ``A = A / max(A)``; for a
threshold ``t`` the high-contribution square is the smallest centred square of odd side ``2i + 1``
(``i = 1 .. H//2 - 1``, centre at ``(H//2, W//2)``) whose sum of ``A`` exceeds ``t`` times the total of ``A``; its
area ratio is ``side / H * side / W``. The arithmetic is done in the matrix's own precision (float32 for the
``.npy`` files of the official script and of erftools) with the same sums, so side lengths agree exactly with the
official analysis even at a tie-breaking boundary. Where no square qualifies the result is ``None`` (the official
script crashes there). An all-zero matrix gives an :class:`EmptyErfWarning` (nothing depends on the input).

The further statistics (Gaussian fit, radii, centre of mass, theoretical receptive field, ``erf_statistics``) are in
:mod:`erftools.erf.statistics` and can be imported from here too.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

DEFAULT_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)

__all__ = ["DEFAULT_THRESHOLDS", "AreaRatio", "normalize", "area_ratios", "radial_profile",
           "format_table", "check_matrix", "EmptyErfWarning", "EMPTY_MESSAGE"]

EMPTY_MESSAGE = ("the ERF matrix is all zero: the target does not depend on the input around the centre (or its "
                 "centre activations are never positive), so there is no receptive field to measure")


class EmptyErfWarning(UserWarning):
    """An all-zero ERF matrix was analysed."""


@dataclass(frozen=True)
class AreaRatio:
    """The high-contribution square of one threshold: ``side`` pixels and ``area_ratio``, the fraction (0..1) of the
    image's area it covers, as the official ``get_rectangle`` returns and every record stores it (None: no square).
    Tables print it in percent (:attr:`percent`, :func:`percent_text`)."""
    threshold: float
    side: int | None
    area_ratio: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def percent(self) -> float | None:
        return None if self.area_ratio is None else 100.0 * self.area_ratio


def check_matrix(matrix) -> np.ndarray:
    """A 2-D finite, non-negative float array (float64 input is kept; anything else becomes float32)."""
    a = np.squeeze(np.asarray(matrix))
    if a.ndim != 2:
        raise ValueError(f"an ERF matrix must be 2-D (H, W); got shape {np.shape(matrix)}")
    if a.shape[0] < 3 or a.shape[1] < 3:
        raise ValueError(f"an ERF matrix must be at least 3x3; got {a.shape}")
    if a.dtype != np.float64:
        a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError("the ERF matrix contains NaN or infinite values")
    if a.min() < 0:
        raise ValueError("the ERF matrix has negative values; contribution scores are non-negative")
    return a


def normalize(matrix) -> np.ndarray:
    """``log10(matrix + 1) / max``: the log-normalised map of the paper's heatmaps (0 .. 1)."""
    a = check_matrix(matrix)
    a = np.log10(a + 1)
    m = np.max(a)
    return a / m if m > 0 else a


def area_ratios(matrix, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, *, normalized: bool = False
                ) -> list[AreaRatio]:
    """High-contribution square side and area ratio for each threshold (``None`` where no square qualifies).

    Args:
        matrix: the aggregated contribution matrix (H, W), e.g. ``ErfResult.matrix`` or an ``erf.npy``.
        thresholds: shares of the total in (0, 1].
        normalized: ``matrix`` is already ``log10(x + 1) / max`` (skip that step).
    """
    thresholds = [float(t) for t in thresholds]
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f"thresholds are shares of the total in (0, 1]; got {t}")
    data = check_matrix(matrix) if normalized else normalize(matrix)
    h, w = data.shape
    total = np.sum(data)
    if not np.any(data > 0):
        warnings.warn(EMPTY_MESSAGE, EmptyErfWarning, stacklevel=2)
    results = []
    # the same float comparisons as the official loop: share (array precision) > threshold
    shares: list = []
    for t in thresholds:
        side = ratio = None
        if total > 0:
            for i in range(1, h // 2):
                if i - 1 >= len(shares):
                    shares.append(np.sum(data[h // 2 - i:h // 2 + 1 + i, w // 2 - i:w // 2 + 1 + i]) / total)
                if shares[i - 1] > t:
                    side = 2 * i + 1
                    ratio = float(side / h * side / w)
                    break
        results.append(AreaRatio(t, side, ratio))
    return results


def radial_profile(matrix, max_points: int = 256) -> dict:
    """Cumulative share of the total contribution within a Euclidean distance of the centre ``(H//2, W//2)``.

    Uses the raw (not log-normalised) matrix. Returns ``{"radius": [...], "cumulative": [...]}`` (at most
    ``max_points`` points, radii in pixels, shares in 0 .. 1) plus ``"radius_for_share"``: the smallest radius
    holding 50 %, 90 % and 99 % of the total.
    """
    a = check_matrix(matrix).astype(np.float64)
    h, w = a.shape
    yy, xx = np.indices((h, w))
    dist = np.hypot(yy - h // 2, xx - w // 2)
    total = a.sum()
    rmax = float(dist.max())
    # fine bins (0.25 px) for the exact quantiles, then a short sampled curve for the record
    bins = np.floor(dist * 4).astype(np.int64)
    per_bin = np.bincount(bins.ravel(), weights=a.ravel())
    cum = np.cumsum(per_bin) / total if total > 0 else np.zeros_like(per_bin)
    edges = (np.arange(len(per_bin)) + 1) / 4.0  # upper edge of each bin
    n = int(min(max_points, np.ceil(rmax) + 1))
    radius = np.linspace(0.0, rmax, n)
    cumulative = np.interp(radius, np.concatenate([[0.0], edges]), np.concatenate([[0.0], cum]))
    if total > 0:
        cumulative[0] = a[h // 2, w // 2] / total
    share_radius = {}
    for s in (0.5, 0.9, 0.99):
        idx = int(np.searchsorted(cum, s)) if total > 0 else -1
        share_radius[str(s)] = float(edges[idx]) if 0 <= idx < len(edges) else None
    return {"radius": [round(float(r), 3) for r in radius], "cumulative": [round(float(c), 6) for c in cumulative],
            "radius_for_share": share_radius, "distance": "euclidean", "of": "matrix"}


def percent_text(fraction: float | None) -> str:
    """An area ratio (a fraction) as a percentage, the one formatter of every table: one decimal, three for the
    tiny squares of untrained ResNets (never ``0.0`` for a square that exists); ``none`` without a square."""
    if fraction is None:
        return "none"
    v = 100 * float(fraction)
    return f"{v:.1f}" if v >= 0.1 or v == 0 else f"{v:.3f}"


def radii_text(radii: dict | None, unit: str = "") -> str:
    """The contribution radii ``{"0.5": r, "0.9": r, "0.99": r}`` (:func:`contribution_radii`) as
    ``r50 / r90 / r99`` with one decimal, the one formatter of the CLI, the report and the dashboard."""
    if not radii:
        return ""
    return " / ".join("-" if radii.get(k) is None else f"{float(radii[k]):.1f}" for k in ("0.5", "0.9", "0.99")) + unit


def format_table(rows: Sequence[tuple[str, Sequence[AreaRatio]]], markdown: bool = True) -> str:
    """A table of area ratios: one row per (label, ratios); columns ``t=20%`` ... with ``r % (side px)``."""
    if not rows:
        return ""
    thresholds = [r.threshold for r in rows[0][1]]
    head = ["model"] + [f"t={t * 100:g}%" for t in thresholds]
    body = [[label] + ["none" if r.side is None else f"{percent_text(r.area_ratio)} ({r.side} px)" for r in ratios]
            for label, ratios in rows]
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def line(cells):
        padded = [c.ljust(wd) for c, wd in zip(cells, widths)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded)

    rule = ["|" + "|".join("-" * (wd + 2) for wd in widths) + "|"] if markdown else []
    return "\n".join([line(head)] + rule + [line(row) for row in body])


_STATISTICS = ("erf_statistics", "gaussian_fit", "contribution_radii", "centre_of_mass")


def __getattr__(name):  # the statistics live in statistics.py (which imports this module): re-exported lazily
    if name in _STATISTICS:
        from . import statistics

        return getattr(statistics, name)
    raise AttributeError(f"module 'erftools.erf.analysis' has no attribute {name!r}")

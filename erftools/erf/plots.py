"""Figures of ERF matrices in the paper's style: the log-normalised map (``log10(x + 1) / max``) on a 0-1 colour
scale (the upper, yellow-to-green half of ``RdYlGn``, as the official seaborn heatmap centred at 0 renders it) with
a colour bar on top, optionally with the high-contribution squares drawn; and a side-by-side comparison of several
models on one colour scale. Only stock matplotlib is used (``DejaVu`` fonts, no seaborn, no pyplot state), so the
functions are safe in scripts, servers and tests.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np

from .analysis import DEFAULT_THRESHOLDS, area_ratios, normalize

__all__ = ["erf_colormap", "plot_erf", "plot_comparison", "plot_radial_profiles", "draw_theoretical_rf",
           "plot_layer_growth", "plot_size_sweep", "theoretical_area_ratio"]

_SQUARE_COLOURS = ("#1f3bb3", "#7b2cbf", "#d00000", "#111111", "#ff8800", "#008b8b")
_SERIES_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")  # models told apart at a glance
_LINE_STYLES = ("-", "--", ":", "-.")  # one per threshold
_STYLE = {"font.family": "serif", "font.serif": ["DejaVu Serif"], "font.size": 11, "axes.titlesize": 13,
          "axes.unicode_minus": False}
_COLOURBAR_TICKS = [0, 0.2, 0.4, 0.6, 0.8, 1.0]


@contextmanager
def _figure(path, figsize, dpi: int):
    """A constrained-layout Figure in :data:`_STYLE`, saved atomically to ``path`` (when given) at the end."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_STYLE):
        fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        yield fig
        if path is not None:
            from .._io import save_figure

            save_figure(path, fig)


def erf_colormap():
    """Yellow (0) to dark green (1): the half of RdYlGn that the official heatmap shows for values in [0, 1]."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    base = matplotlib.colormaps["RdYlGn"]
    return ListedColormap(base(np.linspace(0.5, 1.0, 256)), name="erf_RdYlGn_upper")


def _draw(ax, data, thresholds, legend: bool, ratios=None):
    im = ax.imshow(data, cmap=erf_colormap(), vmin=0.0, vmax=1.0, interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    if thresholds:
        from matplotlib.patches import Rectangle

        h, w = data.shape
        ratios = ratios if ratios is not None else area_ratios(data, thresholds, normalized=True)
        handles = []
        for r, colour in zip(ratios, _SQUARE_COLOURS * 4):
            if r.side is None:
                continue
            half = r.side // 2
            handles.append(ax.add_patch(Rectangle((w // 2 - half - 0.5, h // 2 - half - 0.5), r.side, r.side,
                                                  fill=False, lw=1.3, ec=colour,
                                                  label=f"t={r.threshold * 100:g}%: {r.side} px ({r.percent:.1f}%)")))
        if legend and handles:
            ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85)
    return im


def _rf_side(theoretical) -> tuple[int, int] | None:
    """The (rows, cols) side of a theoretical receptive field given as an int, a pair, a ``TheoreticalRF`` or its
    dict; None when it has none."""
    if theoretical is None:
        return None
    side = theoretical.get("side") if isinstance(theoretical, dict) else getattr(theoretical, "side", theoretical)
    if side is None:
        return None
    if isinstance(side, (int, np.integer)):
        return int(side), int(side)
    return int(side[0]), int(side[1])


def draw_theoretical_rf(ax, theoretical, shape: tuple[int, int], colour: str = "#222222"):
    """Draw the theoretical receptive field as a dashed square centred at ``(H//2, W//2)`` of an axes showing a
    matrix of ``shape``; a field larger than the image is drawn along the image border (clipped) and its label says
    so. Returns the patch, or None when there is no field (a transformer, a global operation)."""
    from matplotlib.patches import Rectangle

    side = _rf_side(theoretical)
    if side is None:
        return None
    h, w = shape
    sh, sw = side
    top = max(h // 2 - sh // 2, 0) - 0.5
    left = max(w // 2 - sw // 2, 0) - 0.5
    bottom = min(h // 2 - sh // 2 + sh, h) - 0.5
    right = min(w // 2 - sw // 2 + sw, w) - 0.5
    label = f"theoretical RF: {sh} px" if sh == sw else f"theoretical RF: {sh}x{sw} px"
    if sh > h or sw > w:
        label += " (larger than the image)"
    return ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, lw=1.6, ls="--", ec=colour,
                                  label=label))


def plot_erf(matrix, *, title: str | None = None, thresholds: Iterable[float] | None = DEFAULT_THRESHOLDS,
             path=None, figsize=(6.0, 6.6), dpi: int = 100, theoretical=None):
    """The heatmap of one ERF matrix (raw mean contribution scores; log-normalised here). Returns the Figure
    (saved atomically to ``path`` when given). ``theoretical``: the theoretical receptive field (a side in
    pixels, a (rows, cols) pair, a ``TheoreticalRF`` or its dict), drawn as a dashed square."""
    data = normalize(matrix)
    with _figure(path, figsize, dpi) as fig:
        ax = fig.add_subplot()
        im = _draw(ax, data, list(thresholds) if thresholds else None, legend=theoretical is None)
        if theoretical is not None:
            draw_theoretical_rf(ax, theoretical, data.shape)
            handles = [p for p in ax.patches if not p.get_label().startswith("_")]
            if handles:
                ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85)
        fig.colorbar(im, ax=ax, location="top", fraction=0.05, pad=0.02).set_ticks(_COLOURBAR_TICKS)
        if title:
            ax.set_xlabel(title)
    return fig


def plot_comparison(matrices: Sequence, labels: Sequence[str], *, thresholds: Iterable[float] | None = None,
                    ncols: int | None = None, path=None, panel_size: float = 3.6, dpi: int = 100):
    """Several ERF matrices side by side on one 0-1 colour scale (one shared colour bar)."""
    if len(matrices) != len(labels):
        raise ValueError("one label per matrix")
    if not matrices:
        raise ValueError("nothing to compare")
    n = len(matrices)
    ncols = ncols or min(n, 4)
    nrows = -(-n // ncols)
    with _figure(path, (panel_size * ncols, panel_size * nrows + 0.8), dpi) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        im = None
        for ax, m, label in zip(axes, matrices, labels):
            im = _draw(ax, normalize(m), list(thresholds) if thresholds else None, legend=False)
            ax.set_xlabel(label)
        for ax in axes[n:]:
            ax.set_axis_off()
        fig.colorbar(im, ax=list(axes), location="top", fraction=0.04, pad=0.02, shrink=0.6).set_ticks(
            _COLOURBAR_TICKS)
    return fig


def plot_radial_profiles(profiles: Sequence[dict], labels: Sequence[str], *, path=None, figsize=(6.0, 4.2),
                         dpi: int = 100):
    """Cumulative share of contribution against distance from the centre (from ``radial_profile``)."""
    with _figure(path, figsize, dpi) as fig:
        ax = fig.add_subplot()
        for prof, label in zip(profiles, labels):
            ax.plot(prof["radius"], prof["cumulative"], label=label, lw=1.6)
        ax.set_xlabel("distance from the centre (px)")
        ax.set_ylabel("cumulative share of contribution")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return fig


def _plot_ratios(ax, points, wanted, key, label: str, colour: str) -> None:
    """One line per threshold (line style) of the area ratio (%) against x, from ``points`` ``[(x, area_ratios)]``
    (:class:`~erftools.erf.analysis.AreaRatio` or their dicts; no square: a gap); ``wanted`` (None: all) limits the
    thresholds, compared as ``key(threshold)``."""
    by_t: dict = {}
    for x, ratios in points:
        for r in ratios:
            d = r if isinstance(r, dict) else r.to_dict()
            t = key(d["threshold"])
            if wanted is None or t in wanted:
                ratio = d.get("area_ratio")
                by_t.setdefault(t, []).append((x, np.nan if ratio is None else 100 * ratio))
    for (t, pts), ls in zip(sorted(by_t.items()), _LINE_STYLES * 4):
        ax.plot([x for x, _ in pts], [y for _, y in pts], ls=ls, marker="o", ms=4, color=colour,
                label=f"{label}, t={t * 100:g}%")


def plot_layer_growth(series: dict, *, thresholds: Iterable[float] | None = None, path=None, figsize=(6.4, 4.4),
                      dpi: int = 100):
    """How the ERF grows with depth: the area ratio (%) at each threshold against the layer, one line per model
    and threshold (colour: model, line style: threshold).

    ``series``: ``{label: [(layer_name, area_ratios), ...]}`` in depth order, ``area_ratios`` a list of
    :class:`~erftools.erf.analysis.AreaRatio` or of their dicts (``threshold``, ``side``, ``area_ratio``); a missing
    square (``None``) leaves a gap. ``thresholds`` limits the thresholds drawn (default: all).
    """
    if not series:
        raise ValueError("nothing to plot: series is empty")
    wanted = None if thresholds is None else [float(t) for t in thresholds]
    with _figure(path, figsize, dpi) as fig:
        ax = fig.add_subplot()
        names = list(dict.fromkeys(layer for points in series.values() for layer, _ in points))
        for (label, points), colour in zip(series.items(), _SQUARE_COLOURS * 4):
            _plot_ratios(ax, [(names.index(layer), ratios) for layer, ratios in points], wanted, float, label, colour)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_xlabel("layer")
        ax.set_ylabel("high-contribution area ratio (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def theoretical_area_ratio(theoretical, size: int) -> float | None:
    """The share of a ``size`` x ``size`` image that the theoretical receptive field covers (clipped to the
    image): the largest area ratio any ERF square can reach; None when the target has no kernel-set field."""
    side = _rf_side(theoretical)
    if side is None:
        return None
    return min(side[0], size) * min(side[1], size) / float(size * size)


def plot_size_sweep(series: dict, *, thresholds: Iterable[float] | None = None, path=None, figsize=(6.8, 4.6),
                    dpi: int = 100):
    """How the ERF depends on the input size: the area ratio (%) at each threshold against the input side, one
    colour per model and one line style per threshold, on log axes; the theoretical receptive field's share of the
    image (clipped to it) as a thin dotted line of the model's colour with crosses.

    ``series``: ``{label: [{"size", "area_ratios", "theoretical_rf"}, ...]}`` (a sweep record's ``runs``);
    ``area_ratios`` lists of dicts or :class:`~erftools.erf.analysis.AreaRatio`; no square (``None``) leaves a
    gap. ``thresholds`` limits the thresholds drawn (default: all)."""
    if not series:
        raise ValueError("nothing to plot: series is empty")
    wanted = None if thresholds is None else [round(float(t), 6) for t in thresholds]
    sizes: set = set()
    with _figure(path, figsize, dpi) as fig:
        ax = fig.add_subplot()
        for (label, points), colour in zip(series.items(), _SERIES_COLOURS * 4):
            points = sorted(points, key=lambda p: int(p["size"]))
            sizes |= {int(p["size"]) for p in points}
            _plot_ratios(ax, [(int(p["size"]), p.get("area_ratios") or []) for p in points], wanted,
                         lambda t: round(float(t), 6), label, colour)
            theo = [(int(p["size"]), theoretical_area_ratio(p.get("theoretical_rf"), int(p["size"])))
                    for p in points]
            theo = [(x, 100 * y) for x, y in theo if y is not None]
            if theo:
                ax.plot([x for x, _ in theo], [y for _, y in theo], ls=":", lw=1.0, marker="x", ms=5,
                        color=colour, alpha=0.7, label=f"{label}, theoretical RF")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(sizes))
        ax.set_xticklabels([str(s) for s in sorted(sizes)])
        ax.minorticks_off()
        ax.set_xlabel("input size (px)")
        ax.set_ylabel("high-contribution area ratio (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2 if len(series) > 1 else 1)
    return fig

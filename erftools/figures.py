"""Figures shared by the dashboard and ``erftools report`` (they draw only through this module).

The shape-bias plots, the ERF comparison and the radial profiles are the engines' own (:mod:`erftools.shapebias.plots`,
:mod:`erftools.erf.plots`), fed from :mod:`erftools.results.views`; the ERF heatmap grid is drawn here because the
dashboard needs what the engine's comparison figure does not do: a live threshold with its numbers, and a linear
scale next to the paper's log scale. Every label from a result file goes through
:func:`erftools.results.text.plot_text` (never mathtext).
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .erf.plots import (draw_theoretical_rf, erf_colormap, plot_comparison, plot_erf, plot_layer_growth,
                        plot_radial_profiles, plot_size_sweep)
from .results.text import plot_text
from .results.views import THRESHOLDS, ShapeBiasRow, linear_normalise, log_normalise
from .shapebias.plots import plot_shape_bias, plot_shape_bias_bars

PAPER_CMAP = "paper (RdYlGn, upper half)"


@dataclass
class ErfPanel:
    title: str
    matrix: np.ndarray  # per-pixel mean contribution, possibly downsampled
    downsample: int = 1
    side: int | None = None  # high-contribution square side in full-resolution pixels (None: none / not drawn)
    theoretical: object = None  # the theoretical receptive field (its record dict or a side in px); None: not drawn


def _cmap(name: str):
    return erf_colormap() if name == PAPER_CMAP else name


def erf_heatmaps(panels: list[ErfPanel], scale: str = "log", threshold: float | None = None,
                 cmap: str = PAPER_CMAP, width: float = 3.4, zoom: int = 1) -> Figure:
    """The ERF maps side by side on one colour scale (0..1 after normalisation), with the threshold square.

    ``zoom`` > 1 shows only the central 1/zoom of each map (normalised over the whole map first), for the small
    ERFs of untrained or shallow networks.
    """
    n = max(len(panels), 1)
    fig = Figure(figsize=(width * n + 0.9, width + 0.5), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, p in zip(axes, panels):
        a = log_normalise(p.matrix) if scale == "log" else linear_normalise(p.matrix)
        h, w = p.matrix.shape[0] * p.downsample, p.matrix.shape[1] * p.downsample
        (r0, r1), (c0, c1) = (_window(n, zoom) for n in a.shape)
        extent = (c0 * p.downsample, c1 * p.downsample, r1 * p.downsample, r0 * p.downsample)
        image = ax.imshow(a[r0:r1, c0:c1], cmap=_cmap(cmap), vmin=0.0, vmax=1.0, extent=extent,
                          interpolation="nearest")
        ax.set_title(plot_text(p.title), fontsize=10)  # a label from a result file is never mathtext
        ax.set(xticks=[extent[0], w // 2, extent[1]], yticks=[extent[3], h // 2, extent[2]], xlim=extent[:2],
               ylim=extent[2:])
        ax.tick_params(labelsize=7)
        if p.side:  # the square is centred on pixel (H//2, W//2) and covers `side` pixels
            c_y, c_x = (h // 2) + 0.5, (w // 2) + 0.5
            ax.add_patch(Rectangle((c_x - p.side / 2, c_y - p.side / 2), p.side, p.side, fill=False,
                                   edgecolor="#1f3bb3", linewidth=1.4, linestyle="--"))
        if p.theoretical is not None:  # full-resolution pixel (i, i+1) spans; the engine draws on index coordinates
            rect = draw_theoretical_rf(ax, p.theoretical, (h, w), colour="#111111")
            if rect is not None:
                rect.set_xy((rect.get_x() + 0.5, rect.get_y() + 0.5))
                ax.text(0.02, 0.98, rect.get_label().replace(" (", "\n("), transform=ax.transAxes, fontsize=6.5,
                        va="top", bbox=dict(facecolor="white", alpha=0.85, linewidth=0))
        if threshold is not None:
            r = p.side * p.side / (h * w) if p.side else 0.0
            text = f"side {p.side} px, r={r:.{1 if r >= 0.001 else 3}%}" if p.side else "no square"
            ax.text(0.02, 0.02, f"t={threshold:.0%}: {text}", transform=ax.transAxes, fontsize=7,
                    bbox=dict(facecolor="white", alpha=0.85, linewidth=0))
    if not panels:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no ERF runs", ha="center", va="center")
    else:
        label = "log10(contribution + 1) / max" if scale == "log" else "contribution / max"
        fig.colorbar(image, ax=list(axes), shrink=0.85, label=label)
    return fig


def _window(n: int, zoom: int) -> tuple[int, int]:
    """Rows (or columns) [start, stop) of the central 1/zoom of n, centred on n // 2."""
    if zoom <= 1:
        return 0, n
    half = max(1, int(np.ceil(n / (2 * zoom))))
    return max(0, n // 2 - half), min(n, n // 2 + half + 1)


def erf_comparison(panels: list[ErfPanel], thresholds=THRESHOLDS, panel_size: float = 3.2):
    """The ERF engine's comparison figure (log-normalised maps on one scale, squares at ``thresholds``)."""
    return plot_comparison([p.matrix for p in panels], [plot_text(p.title) for p in panels],
                           thresholds=list(thresholds), panel_size=panel_size)


def radial_profiles(curves: list[tuple[str, np.ndarray, np.ndarray]]):
    """Cumulative contribution against distance from the centre, one line per model (the ERF engine's figure)."""
    return plot_radial_profiles([{"radius": r, "cumulative": c} for _, r, c in curves],
                                [plot_text(n) for n, _, _ in curves])


def layer_growth(series: dict, thresholds=None):
    """How the ERF grows with depth: the area ratio (%) at each threshold against the layer, several models
    overlaid (the ERF engine's :func:`erftools.erf.plots.plot_layer_growth`; ``series`` from
    :func:`erftools.results.views.growth_series`). Labels from result files are never mathtext."""
    safe = {plot_text(title): [(plot_text(layer), ratios) for layer, ratios in points]
            for title, points in series.items()}
    return plot_layer_growth(safe, thresholds=None if thresholds is None else list(thresholds))


def size_sweep(series: dict, thresholds=None):
    """How the ERF depends on the input size: the area ratio (%) at each threshold against the input side, several
    models overlaid, with each model's theoretical receptive field as a share of the image (the ERF engine's
    :func:`erftools.erf.plots.plot_size_sweep`; ``series`` from :func:`erftools.results.views.size_series`)."""
    safe = {plot_text(title): points for title, points in series.items()}
    return plot_size_sweep(safe, thresholds=None if thresholds is None else list(thresholds))


def erf_map(matrix: np.ndarray, title: str, thresholds=THRESHOLDS, theoretical=None):
    """One ERF heatmap with the squares at ``thresholds`` and the theoretical receptive field (a dashed square;
    the ERF engine's :func:`erftools.erf.plots.plot_erf`)."""
    return plot_erf(matrix, title=plot_text(title), thresholds=list(thresholds) if thresholds else None,
                    theoretical=theoretical, figsize=(4.2, 4.6))


def trained_untrained(trained: ErfPanel, untrained: ErfPanel, scale: str = "log", threshold: float | None = None,
                      cmap: str = PAPER_CMAP, zoom: int = 1) -> Figure:
    """A run's map and its untrained baseline's side by side on one colour scale (:func:`erf_heatmaps`)."""
    return erf_heatmaps([trained, untrained], scale=scale, threshold=threshold, cmap=cmap, zoom=zoom)


#: a decision maker drawn in the shape-bias plots (``kind``: one of :data:`erftools.results.records.MAKER_KINDS`)
ShapeBiasLine = ShapeBiasRow


def shape_bias_plot(lines: list[ShapeBiasLine]):
    """The category-by-category plot (Geirhos et al.; the paper's Fig. 5): the shape-bias engine's figure."""
    return plot_shape_bias(_entries(lines))


def _entries(lines: list[ShapeBiasLine]) -> list[dict]:
    return [{"label": plot_text(line.name), "shape_bias": line.shape_bias, "per_category": dict(line.per_category),
             "kind": line.kind, "ci95": list(line.ci95) if line.ci95 else None} for line in lines]


def shape_bias_bars(lines: list[ShapeBiasLine]):
    """Pooled shape bias per decision maker with its 95% interval (the shape-bias engine's bar chart)."""
    return plot_shape_bias_bars(_entries(lines))


def png_bytes(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a figure; a pyplot figure is closed afterwards (no leak in a long-running server)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    close(fig)
    return buf.getvalue()


def close(fig) -> None:
    if (plt := sys.modules.get("matplotlib.pyplot")) is not None:
        plt.close(fig)


# ------------------------------------------------------------------------------------------ error consistency
def error_consistency_matrix(labels: list[str], matrix: np.ndarray, humans: list[bool]) -> Figure:
    """The kappa matrix of decision makers and human observers (model-vs-human's error-consistency matrix):
    diverging colours centred on 0, at most 1; human observers' labels in red; undefined cells blank."""
    n = len(labels)
    side = min(14.0, 2.5 + 0.38 * n)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    lo = float(np.nanmin(matrix)) if np.isfinite(matrix).any() else -1.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=min(-0.2, lo), vmax=1.0,
                      norm=None, interpolation="nearest")
    ax.set_xticks(range(n), [plot_text(t) for t in labels], rotation=90, fontsize=8)
    ax.set_yticks(range(n), [plot_text(t) for t in labels], fontsize=8)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, human in zip(ticks, humans):
            tick.set_color("#c0392b" if human else "black")
    if n <= 24:  # the value in every defined cell off the diagonal
        for i, j in zip(*np.nonzero(np.isfinite(matrix) & ~np.eye(n, dtype=bool))):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, shrink=0.6, label="error consistency (Cohen's kappa)")
    ax.set_title("Error consistency (trial-by-trial, cue-conflict)", fontsize=10)
    return fig


def error_consistency_bars(names: list[str], means: list[float | None], ceiling: float | None,
                           observers: list[list[float]] | None = None) -> Figure:
    """Each decision maker's mean kappa against the human observers (a bar; dots: each observer), next to the
    human ceiling (the observers' mean kappa with each other, a red line)."""
    fig = Figure(figsize=(max(4.5, 0.55 * len(names) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, [np.nan if m is None else m for m in means], color="#4a7ab5")
    for i, vals in enumerate(observers or []):
        ax.plot([i] * len(vals), vals, "o", ms=3, color="black", alpha=0.5)
    if ceiling is not None:
        ax.axhline(ceiling, color="#c0392b", lw=1.5, label=f"humans (ceiling) {ceiling:.3f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(x, [plot_text(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("kappa with humans")
    ax.set_ylim(min(-0.2, *(m for m in means if m is not None), 0.0) if means else -0.2, 1.0)
    return fig


# ------------------------------------------------------------------------------------ ERF against shape bias
def erf_vs_shape_bias(points: dict, correlations: list, thresholds: list[float]) -> Figure:
    """One panel per threshold: each model's ERF area ratio r(t) (x, percent of the image) against its shape bias
    (y), one marker per ERF sampler, with Spearman's rho and its bootstrap interval in the title."""
    n = max(1, len(thresholds))
    fig = Figure(figsize=(4.0 * n, 4.0), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    markers = "os^Dv"
    for ax, t in zip(axes, thresholds):
        key = round(float(t), 6)
        for k, (sampler, ps) in enumerate(points.items()):
            have = [p for p in ps if p.area_ratios.get(key) is not None]
            xs = [100.0 * p.area_ratios[key] for p in have]
            ax.plot(xs, [p.shape_bias for p in have], markers[k % len(markers)], label=plot_text(sampler))
            for p, xv in zip(have, xs):
                ax.annotate(plot_text(p.label), (xv, p.shape_bias), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
        title = [f"r @ {t:.0%}"]
        for c in correlations:
            if abs(c.threshold - t) < 1e-9:
                title.append(f"{plot_text(c.sampler)}: " + ("rho undefined" if c.rho is None else
                             f"rho {c.rho:+.2f}" + (f" [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]" if c.ci95 else "")))
        ax.set_title("\n".join(title), fontsize=9)
        ax.set_xlabel("ERF area ratio r (% of the image)")
        ax.set_ylabel("shape bias")
        if len(points) > 1:
            ax.legend(fontsize=7)
    return fig

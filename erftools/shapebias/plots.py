"""Shape-bias figures: the per-category plot of Geirhos et al. / model-vs-human, and a bar chart with CIs.

Both take a list of *entries*, plain dicts with ``label``, ``shape_bias``, ``per_category`` (``{category: shape
bias}``), optionally ``ci95`` ([lo, hi]), ``kind`` (``humans``, ``human``, ``network``, ``model``, ``published``) and,
for pooled humans, ``subjects`` (``{subject: shape bias}``). Use :func:`entry_from_record` for a run record.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from .._io import save_figure
from ..results.records import HUMAN, HUMANS, MODEL, PUBLISHED
from .categories import CATEGORIES

HUMAN_COLOR = (165 / 255, 30 / 255, 55 / 255)  # model-vs-human's colour for humans
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f",
            "#393b79", "#637939", "#8c6d31"]
_MARKERS = ["o", "s", "^", "v", "P", "X", "*", "<", ">", "p", "h", "d"]


#: the smallest text of the shape-bias bars (the value labels), in points
BAR_LABEL_PT = 8

def entry_from_record(record: dict) -> dict:
    """A plot entry from a shape-bias run record (``summary.json``)."""
    e = {"label": record.get("label") or record.get("model", {}).get("name", "?"),
         "shape_bias": record.get("shape_bias"), "ci95": record.get("ci95"),
         "per_category": {c: v.get("shape_bias") for c, v in (record.get("per_category") or {}).items()},
         "kind": record.get("decision_maker_kind", MODEL)}
    if record.get("subjects"):
        e["subjects"] = {s: v["shape_bias"] for s, v in record["subjects"].items()}
    return e


def _styles(entries: Sequence[dict]) -> list[dict]:
    out, k = [], 0
    for e in entries:
        kind = e.get("kind", MODEL)
        if kind in (HUMANS, HUMAN) or e.get("label") in ("humans", "humans (paper)"):
            out.append({"color": HUMAN_COLOR, "marker": "D", "filled": kind != PUBLISHED})
        else:
            out.append({"color": _PALETTE[k % len(_PALETTE)], "marker": _MARKERS[k % len(_MARKERS)],
                        "filled": kind != PUBLISHED})
            k += 1
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def category_order(entries: Sequence[dict]) -> list[str]:
    """Categories ordered by the humans' per-category shape bias (highest first), as in model-vs-human's plot."""
    ref = next((e for e in entries if e.get("kind") == HUMANS), None) or next(
        (e for e in entries if e.get("label") in ("humans", "humans (paper)")), None)
    if ref is None:
        return list(CATEGORIES)
    pc = ref.get("per_category") or {}
    return sorted(CATEGORIES, key=lambda c: -(pc.get(c) if _finite(pc.get(c)) else -1.0))


def plot_shape_bias(entries: Sequence[dict], path: str | os.PathLike | None = None, *, title: str | None = None):
    """The standard plot: one row per shape category, x = fraction of shape decisions (top axis: texture).

    Each decision maker gets a marker per category and a vertical line at its overall (pooled) shape bias.
    Returns the figure (saved atomically to ``path`` when given).
    """
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"), force=False)
    import matplotlib.pyplot as plt

    cats = category_order(entries)
    n = len(cats)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * n + 2.6), dpi=150)
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.5, -0.5)  # first category at the top
    ax.set_yticks(range(n), cats, fontsize=10)
    ax.set_xlabel("Fraction of 'shape' decisions")
    top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("Fraction of 'texture' decisions")
    for axis in (ax, top):
        axis.set_xticks([i / 10 for i in range(11)])
    for i in range(n - 1):
        ax.axhline(i + 0.5, color="0.85", lw=0.6, ls=":", zorder=0)
    ax.set_ylabel("Shape category")
    for e, st in zip(entries, _styles(entries)):
        sb = e.get("shape_bias")
        if _finite(sb):
            ax.axvline(sb, color=st["color"], lw=1.4, ls="-" if st["filled"] else "--", alpha=0.85, zorder=1)
        pc = e.get("per_category") or {}
        pts = [(pc.get(c), i) for i, c in enumerate(cats) if _finite(pc.get(c))]
        label = f"{e['label']} ({sb:.3f})" if _finite(sb) else e["label"]
        if pts:
            ax.scatter(*zip(*pts), marker=st["marker"], s=55, zorder=3,
                       facecolors=st["color"] if st["filled"] else "none", edgecolors=st["color"], linewidths=1.2,
                       label=label, clip_on=False)
        else:
            ax.plot([], [], color=st["color"], label=label)
    ax.spines["right"].set_visible(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2 if len(entries) > 3 else 1, fontsize=8.5,
              frameon=False, title="decision maker (overall shape bias)", title_fontsize=8.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_figure(Path(path), fig, bbox_inches="tight")
    return fig


def plot_shape_bias_bars(entries: Sequence[dict], path: str | os.PathLike | None = None, *,
                         title: str | None = None):
    """Overall shape bias per decision maker as horizontal bars (sorted), with 95% bootstrap CIs where known.

    Individual human observers are drawn as dots on the pooled humans' bar. Published values (no CI) are hatched.
    """
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"), force=False)
    import matplotlib.pyplot as plt

    items = [(e, st) for e, st in zip(entries, _styles(entries)) if _finite(e.get("shape_bias"))]
    items.sort(key=lambda p: p[0]["shape_bias"], reverse=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(items) + 1.6), dpi=150)
    for i, (e, st) in enumerate(items):
        sb = e["shape_bias"]
        ci = e.get("ci95") or [None, None]
        has_ci = _finite(ci[0]) and _finite(ci[1])
        ax.barh(i, sb, color=st["color"], alpha=0.85 if st["filled"] else 0.35,
                hatch=None if st["filled"] else "//", edgecolor=st["color"], height=0.7)
        if has_ci:
            ax.errorbar(sb, i, xerr=[[max(0.0, sb - ci[0])], [max(0.0, ci[1] - sb)]], fmt="none", ecolor="black",
                        capsize=3, lw=1)
        vals = [v for v in (e.get("subjects") or {}).values() if _finite(v)]
        if vals:
            ax.scatter(vals, [i] * len(vals), s=12, color="white", edgecolors="black", linewidths=0.6, zorder=4)
        text = f"{sb:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if has_ci else "")
        right = max(sb, ci[1]) if has_ci else sb
        inside = right > 0.72
        ax.text(0.015 if inside else right + 0.015, i, text, va="center", fontsize=BAR_LABEL_PT,
                color="white" if inside and st["filled"] else "black")
    ax.set_yticks(range(len(items)), [e["label"] for e, _ in items], fontsize=9)
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("shape bias (fraction of shape decisions among shape + texture decisions); bars: 95% CI")
    ax.axvline(0.5, color="0.7", lw=0.8, ls=":")
    ax.spines[["right", "top"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_figure(Path(path), fig, bbox_inches="tight")
    return fig

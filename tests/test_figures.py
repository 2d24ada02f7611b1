"""erftools.figures: the figures the report and the dashboard share."""
from __future__ import annotations

import numpy as np
import pytest

from erftools import figures as F
from erftools.results import views as V

from .results.builders import CATEGORIES, erf_matrix

PNG = b"\x89PNG\r\n\x1a\n"


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in (ax.title, *ax.texts)]


def test_erf_heatmaps_one_panel_per_run_on_one_scale():
    panels = [F.ErfPanel("wide", erf_matrix(32, 8.0).astype(float), 1, 9),
              F.ErfPanel("coarse $x$", erf_matrix(16, 3.0).astype(float), 2, None)]
    fig = F.erf_heatmaps(panels, scale="log", threshold=0.2, zoom=2)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2 and len(fig.axes) == 3  # two maps and one shared colour bar
    assert all(ax.images[0].get_clim() == (0.0, 1.0) for ax in maps)
    texts = _texts(fig)
    assert r"coarse \$x\$" in texts  # a label is never parsed as mathtext
    assert any(t.startswith("t=20%: side 9 px") for t in texts) and "t=20%: no square" in texts
    assert len(maps[0].patches) == 1 and not maps[1].patches  # the square where there is one
    assert F.png_bytes(fig).startswith(PNG)


def test_erf_heatmaps_linear_scale_and_no_runs():
    m = erf_matrix(16, 3.0).astype(float)
    fig = F.erf_heatmaps([F.ErfPanel("a", m)], scale="linear", cmap="viridis")
    data = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(data, m / m.max())  # M / max, exact up to float64 rounding
    empty = F.erf_heatmaps([])
    assert "no ERF runs" in _texts(empty)


def test_erf_comparison_and_radial_profiles():
    panels = [F.ErfPanel("a", erf_matrix(32, 8.0).astype(float)), F.ErfPanel("b $", erf_matrix(32, 3.0).astype(float))]
    fig = F.erf_comparison(panels, thresholds=V.THRESHOLDS)
    assert sum(1 for ax in fig.axes if ax.images) == 2
    assert [ax.get_xlabel() for ax in fig.axes if ax.images] == ["a", r"b \$"]
    r = np.arange(10.0)
    fig = F.radial_profiles([("a", r, r / 10), ("b", r, r / 20)])
    assert len(fig.axes[0].lines) >= 2
    assert F.png_bytes(fig).startswith(PNG)


@pytest.mark.parametrize("draw", [F.shape_bias_plot, F.shape_bias_bars])
def test_shape_bias_figures_take_the_views_rows(draw):
    pc = {c: 0.1 + 0.05 * i for i, c in enumerate(CATEGORIES)}
    lines = [V.ShapeBiasRow("humans", "humans", 0.95, pc, (0.94, 0.96)),
             V.ShapeBiasRow("net $1$", "model", 0.3, {c: 1 - v for c, v in pc.items()}, (0.25, 0.35)),
             V.ShapeBiasRow("paper", "published", 0.29, pc)]
    assert F.ShapeBiasLine is V.ShapeBiasRow
    fig = draw(lines)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(r"net \$1\$" in t for t in labels + legend)
    assert F.png_bytes(fig).startswith(PNG)

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


def test_erf_heatmaps_draw_the_theoretical_receptive_field():
    m = erf_matrix(32, 3.0).astype(float)
    fig = F.erf_heatmaps([F.ErfPanel("small rf", m, 1, 5, {"side": [11, 11]}),
                          F.ErfPanel("huge rf", m, 2, None, 99), F.ErfPanel("none", m, 1, None, None)])
    maps = [ax for ax in fig.axes if ax.images]
    small = [p for p in maps[0].patches if p.get_label().startswith("theoretical RF")]
    assert len(small) == 1 and (small[0].get_width(), small[0].get_height()) == (11, 11)
    # centred on full-resolution pixel (16, 16), whose span is [16, 17): corners at 16.5 -/+ 5.5
    assert small[0].get_xy() == pytest.approx((11.0, 11.0))
    huge = [p for p in maps[1].patches if p.get_label().startswith("theoretical RF")]
    assert len(huge) == 1 and huge[0].get_width() == 64  # clipped to the 64-pixel image, and said so
    assert any("larger than the image" in t for t in _texts(fig))
    assert not maps[2].patches


def test_layer_growth_is_the_engines_figure_with_safe_labels():
    series = {"net $a$": [("stages.0", [{"threshold": 0.2, "side": 3, "area_ratio": 0.01},
                                        {"threshold": 0.5, "side": 5, "area_ratio": 0.03}]),
                          ("stages.1", [{"threshold": 0.2, "side": 7, "area_ratio": 0.05},
                                        {"threshold": 0.5, "side": None, "area_ratio": None}])],
              "other": [("layer1", [{"threshold": 0.2, "side": 3, "area_ratio": 0.02}])]}
    fig = F.layer_growth(series)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == [r"net \$a\$, t=20%", r"net \$a\$, t=50%", "other, t=20%"]  # never mathtext
    first = ax.lines[0].get_ydata()
    assert list(first) == pytest.approx([1.0, 5.0])  # area ratios in percent
    assert np.isnan(ax.lines[1].get_ydata()[1])  # no square: a gap
    only20 = F.layer_growth(series, thresholds=[0.2])
    assert len(only20.axes[0].lines) == 2
    assert F.png_bytes(fig).startswith(PNG)


def test_trained_untrained_side_by_side_on_one_scale():
    a, b = erf_matrix(32, 6.0).astype(float), erf_matrix(32, 2.0).astype(float)
    fig = F.trained_untrained(F.ErfPanel("trained", a), F.ErfPanel("untrained", b), threshold=0.3)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == ["trained", "untrained"]
    assert all(ax.images[0].get_clim() == (0.0, 1.0) for ax in maps)


def test_erf_map_with_theoretical_square():
    fig = F.erf_map(erf_matrix(32, 3.0).astype(float), "one $x$", theoretical={"side": [9, 9]})
    labels = [p.get_label() for p in fig.axes[0].patches]
    assert "theoretical RF: 9 px" in labels
    assert fig.axes[0].get_xlabel() == r"one \$x\$"

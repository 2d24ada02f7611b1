import numpy as np

from erftools.erf.analysis import AreaRatio
from erftools.erf.plots import draw_theoretical_rf, plot_erf, plot_layer_growth


def _rf_patches(fig):
    return [p for p in fig.axes[0].patches if p.get_label().startswith("theoretical RF")]


def test_theoretical_rf_square_on_the_heatmap(tmp_path):
    m = np.random.default_rng(0).random((65, 65)).astype(np.float32)
    fig = plot_erf(m, theoretical={"side": [21, 21], "stride": [4, 4], "target": "x", "reason": None},
                   path=tmp_path / "h.png")
    (rect,) = _rf_patches(fig)
    # centred on (32, 32): pixels 22 .. 42, whose outer edges are at 21.5 and 42.5
    assert rect.get_xy() == (21.5, 21.5) and rect.get_width() == 21 and rect.get_height() == 21
    assert rect.get_linestyle() == "--" and (tmp_path / "h.png").stat().st_size > 0
    big = plot_erf(m, theoretical=643)  # larger than the image: drawn along the border, and said so
    (rect,) = _rf_patches(big)
    assert rect.get_xy() == (-0.5, -0.5) and rect.get_width() == 65 and "larger than the image" in rect.get_label()
    none = plot_erf(m, theoretical={"side": None, "reason": "attention"})
    assert _rf_patches(none) == []


def test_draw_returns_none_without_a_field():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert draw_theoretical_rf(ax, None, (9, 9)) is None
    assert draw_theoretical_rf(ax, {"side": None}, (9, 9)) is None
    assert draw_theoretical_rf(ax, (3, 5), (9, 9)).get_width() == 5


def test_growth_with_depth_figure(tmp_path):
    a = [("stages.0", [AreaRatio(0.2, 7, 0.01), AreaRatio(0.5, 15, 0.05)]),
         ("stages.1", [AreaRatio(0.2, 11, 0.02), AreaRatio(0.5, None, None)])]
    b = [("stages.0", [{"threshold": 0.2, "side": 9, "area_ratio": 0.03}])]
    fig = plot_layer_growth({"trained": a, "random": b}, path=tmp_path / "g.png")
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["trained, t=20%", "trained, t=50%", "random, t=20%"]
    np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 2.0])  # percent
    assert np.isnan(lines[1].get_ydata()[1])  # no square: a gap
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["stages.0", "stages.1"]
    only = plot_layer_growth({"trained": a}, thresholds=[0.5])
    assert [ln.get_label() for ln in only.axes[0].get_lines()] == ["trained, t=50%"]
    assert (tmp_path / "g.png").stat().st_size > 0

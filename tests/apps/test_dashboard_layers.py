"""The ERF page for runs of `erftools erf --layers ... --baseline random`: the layer selector, the growth with depth,
the statistics and trained next to untrained (streamlit AppTest, folders built by tests/results/builders.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from erftools.results import views as V

from ..results.builders import LAYERS, make_erf_run, make_layered_run, reference_area_ratios
from .test_dashboard_app import block, images_in, start, texts, walk


@pytest.fixture
def layered(tmp_path):
    root = tmp_path / "results"
    make_layered_run(root / "a-rlk", "replknet-31B", weights={"tag": "in1k"}, baseline=True)
    make_layered_run(root / "b-r50", "resnet-50", layers=(("layer1", 2.0, 35), ("layer2", 3.0, 91)),
                     weights={"tag": "in1k"})
    make_erf_run(root / "c-plain", "swin-B", weights={"tag": "in1k"})
    return root


def frame_with(at, *columns: str, node=None):
    """The first table of the page (or of the block ``node``) holding all ``columns``."""
    frames = at.dataframe if node is None else [n for n in walk(node) if type(n).__name__ == "Dataframe"]
    for df in frames:
        if all(c in df.value.columns for c in columns):
            return df.value
    raise AssertionError(f"no table with the columns {columns}")


def test_models_leave_out_a_baseline_shown_beside_its_run(monkeypatch, layered):
    at = start(monkeypatch, layered)
    assert at.multiselect(key="erf_models").options == ["replknet-31B", "resnet-50", "swin-B"]
    heads = [h.value for h in at.subheader]
    for section in ("Layers", "Growth with depth", "ERF statistics", "Trained and untrained"):
        assert section in heads
    assert not at.error and not at.exception


def test_layer_selector(monkeypatch, layered):
    at = start(monkeypatch, layered)
    assert at.selectbox(key="layer_run").options == ["replknet-31B", "resnet-50"]  # the runs with layers
    layer = at.selectbox(key="erf_layer")
    assert layer.options == [name for name, _, _ in LAYERS] and layer.value == "stages.3"  # deepest first
    assert images_in(block(at, "erf-layer-heatmap")) == 1
    table = frame_with(at, "feature map")
    assert list(table["layer"]) == [name for name, _, _ in LAYERS]
    assert list(table["theoretical RF (px)"]) == [str(theo) for _, _, theo in LAYERS]
    for row, (name, _, _) in zip(table.to_dict("records"), LAYERS):  # the recorded squares of each layer
        want = reference_area_ratios(np.load(layered / "a-rlk" / "layers" / f"{name}.npy"), (0.5,))[0]
        assert row["t=50%"] == f"{V.pct(want['area_ratio'])} ({want['side']} px)"
    at.selectbox(key="erf_layer").set_value("stages.1").run()
    assert not at.exception
    stats = [df.value for df in at.dataframe if "sigma x / y (px)" in df.value.columns
             and list(df.value["model"]) == ["replknet-31B"]]
    assert list(stats[0]["layer"]) == ["stages.1"] and stats[0]["sigma x / y (px)"][0] == "4.0 / 4.0"
    assert "Statistics of stages.1" in texts(at.markdown)
    at.selectbox(key="layer_run").set_value("resnet-50").run()
    assert at.selectbox(key="erf_layer").options == ["layer1", "layer2"] and not at.exception


def test_a_threshold_the_run_did_not_record_is_recomputed_and_marked(monkeypatch, layered):
    at = start(monkeypatch, layered)
    at.slider(key="erf_threshold").set_value(0.4).run()
    table = frame_with(at, "feature map")
    want = reference_area_ratios(np.load(layered / "a-rlk" / "layers" / "stages.0.npy"), (0.4,))[0]
    assert table["t=40%"][0] == f"{V.pct(want['area_ratio'])} ({want['side']} px) *"
    assert not table["t=20%"][0].endswith("*")


def test_growth_with_depth(monkeypatch, layered):
    at = start(monkeypatch, layered)
    assert images_in(block(at, "erf-growth")) == 1
    table = frame_with(at, "model", "t=99%")
    assert list(zip(table["model"], table["layer"])) == [("replknet-31B", n) for n, _, _ in LAYERS] + \
        [("resnet-50", "layer1"), ("resnet-50", "layer2")]
    at.multiselect(key="growth_thresholds").set_value([0.2]).run()
    assert not at.exception and images_in(block(at, "erf-growth")) == 1
    growth = [df.value for df in at.dataframe if list(df.value.columns) == ["model", "layer", "t=20%"]]
    assert len(growth) == 1 and len(growth[0]) == len(LAYERS) + 2
    at.multiselect(key="growth_thresholds").set_value([]).run()
    assert block(at, "erf-growth") is None and "Choose one or more thresholds" in texts(at.info)
    at.multiselect(key="erf_models").set_value(["swin-B"]).run()  # no layered run chosen: no growth section
    assert "Growth with depth" not in [h.value for h in at.subheader] and not at.exception


def test_statistics_with_one_line_explanations(monkeypatch, layered):
    at = start(monkeypatch, layered)
    stats = frame_with(at, "effective / theoretical", node=block(at, "erf-statistics"))
    stats = stats[stats["model"] == "replknet-31B"]
    assert list(stats["layer"]) == [name for name, _, _ in LAYERS]
    # the builder's statistics: an isotropic Gaussian of sigma = spread, R^2 = 1
    assert list(stats["sigma x / y (px)"]) == [f"{s:.1f} / {s:.1f}" for _, s, _ in LAYERS]
    assert set(stats["R2"]) == {"1.000"}
    explained = texts(at.markdown)
    for column, line in V.STATISTICS_HELP.items():
        assert column in stats.columns and line in explained
    assert "swin-B" not in set(frame_with(at, "R2", node=block(at, "erf-statistics"))["model"])
    assert any("No statistics recorded" in c.value and c.value.endswith("swin-B") for c in at.caption)


def test_trained_and_untrained_side_by_side(monkeypatch, layered):
    at = start(monkeypatch, layered)
    assert images_in(block(at, "erf-baseline-0")) == 1
    table = frame_with(at, "run")
    assert list(table["run"]) == ["as run", "untrained baseline"] * len(LAYERS)
    assert list(table["weights"][:2]) == ["in1k", "random init, seed 0"]
    base = json.loads((layered / "a-rlk" / "baseline" / "erf.json").read_text())
    r = base["layers"][0]["area_ratios"][0]
    assert table["t=20%"][1] == f"{V.pct(r['area_ratio'])} ({r['side']} px)"
    assert table["sigma major / minor (px)"][1] == "3.0 / 3.0"  # the baseline was built 1.5 times as wide
    at.selectbox(key="baseline_layer_0").set_value("stages.0").run()
    assert not at.exception and images_in(block(at, "erf-baseline-0")) == 1


def test_a_missing_layer_matrix_or_baseline_is_a_message(monkeypatch, layered):
    (layered / "a-rlk" / "layers" / "stages.3.npy").unlink()
    shutil.rmtree(layered / "a-rlk" / "baseline")
    at = start(monkeypatch, layered)
    errors = texts(at.error)
    assert "stages.3.npy is missing" in errors.replace("\\", "")
    assert "baseline run baseline/ is missing" in errors.replace("\\", "")
    assert images_in(block(at, "erf-growth")) == 1  # the recorded numbers are still shown
    assert frame_with(at, "feature map") is not None

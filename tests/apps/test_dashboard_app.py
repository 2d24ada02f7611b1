"""Every page of the Streamlit dashboard, with good, empty and broken result folders (streamlit AppTest)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from erftools.dashboard import ENV_RESULTS, ENV_STIMULI

from ..results.builders import decision_rows, texture_of
from .conftest import REPO, make_sb_run, make_stimuli

APP = str(REPO / "apps" / "dashboard.py")


@pytest.fixture(autouse=True)
def _no_stimuli_override(monkeypatch):
    monkeypatch.delenv(ENV_STIMULI, raising=False)


def start(monkeypatch, root, page: str | None = None) -> AppTest:
    monkeypatch.setenv(ENV_RESULTS, str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def walk(node):
    children = getattr(node, "children", None)
    if isinstance(children, dict):
        for child in children.values():
            yield child
            yield from walk(child)


def block(at: AppTest, key: str):
    for node in walk(at.main):
        if getattr(node, "type", None) == "flex_container" and getattr(node, "key", None) == key:
            return node
    return None


def images_in(node) -> int:
    return sum(1 for n in walk(node) if getattr(n, "type", None) == "imgs" or type(n).__name__ == "Image")


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def frame(at: AppTest, i: int):
    return at.dataframe[i].value


# ------------------------------------------------------------------------------------------------------ ERF page
def test_erf_page_good(monkeypatch, good_results):
    at = start(monkeypatch, good_results)
    assert at.header[0].value == "Effective receptive fields"
    heat = block(at, "erf-heatmap")
    assert heat is not None and images_in(heat) == 1
    assert images_in(block(at, "erf-radial")) == 1
    assert not at.error
    ratios = frame(at, 0)
    assert list(ratios["model"]) == ["replknet-31B (random init)", "resnet-152 (random init)"]
    col = "area ratio at t=0.20 (%)"
    wide, narrow = (float(v) for v in ratios[col])
    assert wide > narrow > 0  # the broader synthetic map has the larger square
    assert "1/2 of 64x64" in ratios["computed on"][1]  # the downsampled run says so
    table10 = frame(at, 1)
    assert list(table10["paper t=20%"]) == ["15.0", "1.3"]  # RepLKNet-31 and ResNet-152 rows of Table 10
    assert list(table10["paper model"]) == ["RepLKNet-31", "ResNet-152"]
    assert all(v not in ("", "n/a") for v in table10["ours t=20%"])
    assert len(at.expander) == 2  # one metadata panel per model
    assert "random init" in texts(at.caption)


def test_erf_threshold_and_scale(monkeypatch, good_results):
    at = start(monkeypatch, good_results)
    before = [float(v) for v in frame(at, 0)["area ratio at t=0.20 (%)"]]
    at.slider(key="erf_threshold").set_value(0.6).run()
    assert not at.exception
    after = [float(v) for v in frame(at, 0)["area ratio at t=0.60 (%)"]]
    assert all(a > b for a, b in zip(after, before))  # a larger share needs a larger square
    at.radio(key="erf_scale").set_value("linear").run()
    at.selectbox(key="erf_cmap").set_value("viridis").run()
    at.select_slider(key="erf_zoom").set_value(8).run()
    assert not at.exception and images_in(block(at, "erf-heatmap")) == 1
    at.multiselect(key="erf_models").set_value(["resnet-152 (random init)"]).run()
    assert list(frame(at, 0)["model"]) == ["resnet-152 (random init)"]
    at.multiselect(key="erf_models").set_value([]).run()
    assert not at.exception and block(at, "erf-heatmap") is None
    assert "Choose one or more models" in texts(at.info)


# ----------------------------------------------------------------------------------------------- shape-bias page
def test_shape_bias_page_good(monkeypatch, good_results):
    at = start(monkeypatch, good_results, "Shape bias")
    assert images_in(block(at, "shape-bias-plot")) == 1
    assert not at.error
    # every run is chosen by default; the reference data adds what the runs do not already show
    assert at.multiselect(key="sb_models").value == ["humans", "replknet-31B", "resnet152"]  # humans first
    refs = at.multiselect(key="sb_refs").value
    assert "ResNet-50 (torchvision) (reference)" in refs
    assert "ResNet-152 (torchvision) (reference)" not in refs and "humans (reference)" not in refs
    table = frame(at, 0)
    row = table[table["decision maker"] == "replknet-31B"].iloc[0]
    assert row["paper Fig. 5"].startswith("0.299")  # RepLKNet-31B ImageNet-1K in the paper's Fig. 5
    assert row["95% CI"].startswith("[")
    assert table[table["decision maker"] == "humans"].iloc[0]["paper Fig. 5"].startswith("0.959")
    # without a stimuli folder the browser lists decisions and says how to see the images
    assert "stimuli folder is not known" in texts(at.info)


def test_stimuli_browser(monkeypatch, tmp_path):
    stim = make_stimuli(tmp_path / "cue-conflict")
    root = tmp_path / "results"
    make_sb_run(root / "a", "model-a", p_shape=0.5, stimuli_dir=str(stim), seed=4)
    make_sb_run(root / "b", "model-b", p_shape=0.2, seed=5)
    monkeypatch.setenv(ENV_STIMULI, str(stim))  # the operator's folder (`--stimuli`): a record's is never used
    at = start(monkeypatch, root, "Shape bias")
    assert images_in(at.main) == 2 + 2 + 12  # the plot, the bars, the error-consistency matrix and bars, 12 stimuli
    at.selectbox(key="stim_by").set_value("model-a").run()
    at.radio(key="stim_class").set_value("shape").run()
    assert not at.exception
    rows = decision_rows("model-a", 0.5, 4)  # the trials make_sb_run wrote, counted here
    shape = [r for r in rows if r["category"] != texture_of(r["imagename"]) and r["object_response"] == r["category"]]
    assert f"showing {len(shape)} stimuli" in texts(at.caption)
    shown = [m.value for m in at.markdown if "model-a:" in str(m.value)]
    assert shown and all("(shape)" in s.split("model-a:")[1].split("\n")[0] for s in shown)
    at.selectbox(key="stim_cat").set_value("cat").run()
    expect = sum(r["category"] == "cat" for r in shape)
    assert f"showing {expect} stimuli" in texts(at.caption)


def test_stimuli_override_from_operator(monkeypatch, good_results, tmp_path):
    stim = make_stimuli(tmp_path / "stim")
    monkeypatch.setenv(ENV_STIMULI, str(stim))
    at = start(monkeypatch, good_results, "Shape bias")
    assert "stimuli folder is not known" not in texts(at.info)
    assert images_in(at.main) == 2 + 2 + 12  # the plot, the bars, the error-consistency matrix and bars, 12 stimuli


# ----------------------------------------------------------------------------------------------------- runs page
def test_runs_page(monkeypatch, good_results):
    at = start(monkeypatch, good_results, "Runs")
    table = frame(at, 0)
    assert len(table) == 5 and set(table["kind"]) == {"erf", "shape-bias"}
    assert all(not f.startswith("/") for f in table["folder"])  # folders are shown relative to the root


# ------------------------------------------------------------------------------------------- empty / broken / bad
@pytest.mark.parametrize("page", ["ERF", "Shape bias", "Runs"])
def test_empty_results(monkeypatch, tmp_path, page):
    (tmp_path / "empty").mkdir()
    at = start(monkeypatch, tmp_path / "empty", page)
    if page == "Shape bias":  # the shipped reference data still gives a plot
        assert images_in(block(at, "shape-bias-plot")) == 1
    else:
        assert "No finished" in texts(at.info)
    assert not at.error


def test_broken_results_erf(monkeypatch, broken_results):
    at = start(monkeypatch, broken_results)
    warnings = texts(at.warning)
    assert "Skipped a malformed result folder" in warnings and "not valid JSON" in warnings
    assert "not a erf record" in warnings  # the wrong-kind record
    assert "Unfinished runs" in warnings and "erf/unfinished" in warnings
    at.multiselect(key="erf_models").set_value(list(at.multiselect(key="erf_models").options)).run()
    assert not at.exception
    errors = texts(at.error)
    assert "erf.npy is missing" in errors
    assert "unreadable" in errors
    assert "should be a 2-D numeric matrix" in errors
    assert images_in(block(at, "erf-heatmap")) == 1  # the good run still renders
    assert list(frame(at, 0)["model"]) == ["resnet-152 (random init)"]
    at.sidebar.checkbox(key="incomplete").check().run()
    assert not at.exception and "resnet-101 (random init) (incomplete)" in at.multiselect(key="erf_models").options


def test_broken_results_shape_bias(monkeypatch, broken_results):
    at = start(monkeypatch, broken_results, "Shape bias")
    at.multiselect(key="sb_models").set_value(["alexnet", "vgg16"]).run()
    assert not at.exception
    errors = texts(at.error)
    assert "weird" not in at.multiselect(key="sb_models").options  # its record is malformed: skipped, and said so
    shown = texts(at.warning).replace("\\", "")  # the message is shown escaped (plain text)
    assert "sb/weird/summary.json: field 'shape_bias' should be number, got str" in shown
    assert "alexnet decisions" in errors and "decisions.csv is missing" in errors
    assert images_in(block(at, "shape-bias-plot")) == 1
    assert "vgg16" in list(frame(at, 0)["decision maker"])


def test_interrupted_runs_are_named(monkeypatch, good_results):
    (good_results / "erf" / "cut" / ".erf_checkpoint").mkdir(parents=True)
    at = start(monkeypatch, good_results)
    warning = texts(at.warning)
    assert "Interrupted runs" in warning and "`erf/cut` (erf)" in warning
    assert images_in(block(at, "erf-heatmap")) == 1  # the finished runs are shown as before


def test_broken_results_runs_page(monkeypatch, broken_results):
    at = start(monkeypatch, broken_results, "Runs")
    assert "Skipped a malformed result folder" in texts(at.warning)
    assert len(frame(at, 0)) == 6  # the readable, finished, well-formed records


@pytest.mark.parametrize("sub", ["..", "../..", "/etc", "erf/../../.."])
def test_paths_outside_the_root_are_refused(monkeypatch, good_results, sub):
    at = start(monkeypatch, good_results)
    at.sidebar.text_input(key="subdir").input(sub).run()
    assert not at.exception
    assert "outside the results folder" in texts(at.error)
    assert block(at, "erf-heatmap") is None
    assert str(good_results.parent) not in texts(at.error)  # the server's paths are not shown


def test_subfolder_inside_the_root(monkeypatch, good_results):
    at = start(monkeypatch, good_results)
    at.sidebar.text_input(key="subdir").input("shape-bias").run()
    assert not at.exception and "No finished ERF run" in texts(at.info)
    at.sidebar.text_input(key="subdir").input("nope").run()
    assert "does not exist" in texts(at.error)


def test_missing_results_root(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_RESULTS, str(tmp_path / "missing"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "does not exist" in texts(at.error)


def test_page_from_query_parameter(monkeypatch, good_results):
    monkeypatch.setenv(ENV_RESULTS, str(good_results))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = "shape-bias"
    at.run()
    assert not at.exception
    assert at.header[0].value.startswith("Shape bias")


def test_opens_on_the_examples_by_default(monkeypatch):
    if not (REPO / "reports" / "examples").is_dir():
        pytest.skip("reports/examples is not there")
    monkeypatch.delenv(ENV_RESULTS, raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    assert images_in(block(at, "erf-heatmap")) == 1
    at.sidebar.radio(key="page").set_value("Shape bias").run()
    assert not at.exception and not at.error
    assert images_in(block(at, "shape-bias-plot")) == 1


def test_a_rerun_of_a_measurement_is_picked_up(monkeypatch, good_results):
    from .conftest import make_erf_run

    at = start(monkeypatch, good_results)
    before = frame(at, 0)["area ratio at t=0.20 (%)"][0]
    make_erf_run(good_results / "erf" / "replknet-31B", "replknet-31B", spread=3.0)  # the cached arrays are stale now
    at.run()
    assert not at.exception
    after = frame(at, 0)["area ratio at t=0.20 (%)"][0]
    assert float(after) < float(before)

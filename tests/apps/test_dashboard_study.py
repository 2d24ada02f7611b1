"""The dashboard's Study page (streamlit AppTest) on a study run by the real study code, on several studies, and on
crafted study.json files (run folders leading outside the results folder, Markdown/HTML payloads)."""
from __future__ import annotations

import pytest

from ..results.builders import HTML_PAYLOAD, IMAGE_PAYLOAD, SECRET, copy_study, make_outside, tiny_study
from .test_crafted_folders import UNSAFE, all_text, markdown_strings, start
from .test_dashboard_app import block, images_in


@pytest.fixture(scope="session")
def study_results(shared, tmp_path_factory):
    return tiny_study(shared, tmp_path_factory.mktemp("tiny-study"))


def test_study_page(monkeypatch, study_results):
    at = start(monkeypatch, study_results, "Study")
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == ["tiny: two random networks", "Comparison with the paper",
                                               "Effective receptive fields", "Shape bias", "ERF against shape bias",
                                               "The paper's values", "Models not run here"]
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "ERF area ratio ±0.5 pp; shape bias ±0.02" in text
    assert ":green[agrees] 1, :red[DIFFERS] 2, :gray[no paper value] 7, :violet[not run] 5" in text
    table = at.dataframe[0].value
    assert len(table) == 15 and list(table.columns)[-2:] == ["verdict", "note"]
    assert table["verdict"].tolist()[:5] == ["DIFFERS"] + ["no paper value"] * 3 + ["agrees"]
    styles = str(at.dataframe[0].proto.arrow_data.styler.styles)  # the verdicts are coloured
    assert "color: red" in styles and "color: green" in styles and "color: violet" in styles
    assert images_in(block(at, "study-heatmap")) == 1 and images_in(block(at, "study-shape-bias")) == 1
    erf = at.dataframe[1].value
    assert erf["model"].tolist() == ["ResNet-18 (random)", "narrow RepLKNet (random)"]
    assert erf["paper t=20%"].tolist() == ["99.0", ""]
    sb = at.dataframe[2].value
    assert sb["paper"].tolist() == ["0.000", "0.500"]
    points, correlation = at.dataframe[3].value, at.dataframe[4].value  # ERF against shape bias
    assert points["model"].tolist() == ["ResNet-18 (random)", "narrow RepLKNet (random)"]
    assert correlation["Spearman rho"].tolist() == ["undefined"] * 4  # 2 models: no rank correlation
    assert "at least 3 models" in correlation["note"].tolist()[0]
    assert images_in(block(at, "study-correlation")) == 1  # the scatter plot
    unpublished = at.dataframe[-1].value
    assert unpublished["model"].tolist() == ["replknet-3"] and unpublished["note"].tolist() == ["no public weights"]
    at.select_slider(key="study_threshold").set_value(0.5).run()  # another square, same maps
    assert not at.exception and images_in(block(at, "study-heatmap")) == 1
    assert any("square at t = 50%" in s for s in markdown_strings(at))  # the image caption


def test_several_studies_are_picked(monkeypatch, study_results, tmp_path):
    copy_study(study_results, tmp_path / "results" / "a")
    copy_study(study_results, tmp_path / "results" / "b", name="second", title="the copy")
    at = start(monkeypatch, tmp_path / "results", "Study")
    pick = at.selectbox(key="study_pick")
    assert pick.options == ["a: tiny", "b: second"]
    assert at.subheader[0].value == "tiny: two random networks"
    pick.set_value("b: second").run()
    assert not at.exception and at.subheader[0].value == "second: the copy"


def test_no_study(monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    at = start(monkeypatch, tmp_path / "empty", "Study")
    assert "No study below" in at.info[0].value and not at.dataframe


def test_study_leading_outside_is_refused(monkeypatch, study_results, tmp_path):
    make_outside(tmp_path / "outside")
    copy_study(study_results, tmp_path / "results" / "study",
               model_0={"runs": ["../../outside/erf-run"], "label": "victim"})
    at = start(monkeypatch, tmp_path / "results", "Study")
    errors = "\n".join(str(e.value) for e in at.error)
    assert "refusing to read" in errors and "study/" in errors and str(tmp_path) not in errors
    assert SECRET not in all_text(at) and not at.dataframe and "No study below" in at.info[0].value


def test_payloads_in_study_json_are_shown_as_text(monkeypatch, study_results, tmp_path):
    root = copy_study(study_results, tmp_path / "results",
                      title=f"title {IMAGE_PAYLOAD}", reference=f"[ref](http://127.0.0.1:9/r) {HTML_PAYLOAD}",
                      description=f"# big\n{IMAGE_PAYLOAD}",
                      model_0={"label": f"lab {HTML_PAYLOAD}"},
                      model_2={"label": f"un {IMAGE_PAYLOAD}", "note": HTML_PAYLOAD,
                               "download": {"url": "http://127.0.0.1:9/w.pth", "file": IMAGE_PAYLOAD}},
                      row_0={"label": IMAGE_PAYLOAD, "note": HTML_PAYLOAD})
    at = start(monkeypatch, root, "Study")
    assert not at.error, [e.value for e in at.error]
    unsafe = [s for s in markdown_strings(at) if UNSAFE.search(s)]
    assert not unsafe
    assert not at.table  # st.table renders its cells as Markdown
    shown = all_text(at)
    assert IMAGE_PAYLOAD in shown  # as plain text, in the table cells
    assert at.dataframe[0].value["note"].tolist()[0] == HTML_PAYLOAD
    assert at.dataframe[-1].value["note"].tolist() == [HTML_PAYLOAD]  # the models not run here: the last table
    assert r"title \!\[x\]" in at.subheader[0].value  # escaped, so shown as written
    assert "http://127.0.0.1:9/w.pth" in at.dataframe[-1].value["download"].tolist()

"""Crafted result folders: links leading outside the results root, a stimuli folder named by a record, and
Markdown/HTML in labels and decisions. The dashboard (data layer and page) reads nothing outside the results root
or the operator's stimuli folder, and shows text from result files as plain text."""
from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from erftools import results as R
from erftools.dashboard import ENV_RESULTS, ENV_STIMULI
from erftools.results import ResultError
from erftools.results import views as V

from .conftest import (IMAGE_PAYLOAD, REPO, SECRET, link, make_linked_results, make_outside,
                       make_payload_results, make_sb_run, make_stimuli)

APP = str(REPO / "apps" / "dashboard.py")
# Markdown that makes a browser fetch (an image) or follow (a link) a URL, or raw HTML, when not escaped
UNSAFE = re.compile(r"!\[|(?<!\\)\]\(|(?<!\\)<\s*img|(?<!\\)<\s*a\s", re.I)


@pytest.fixture(autouse=True)
def _no_stimuli_override(monkeypatch):
    monkeypatch.delenv(ENV_STIMULI, raising=False)


@pytest.fixture
def outside(tmp_path):
    return make_outside(tmp_path / "outside")


@pytest.fixture
def linked(tmp_path, outside):
    return make_linked_results(tmp_path / "results", outside)


def titles(listing: R.Listing) -> list[str]:
    return [V.run_title(r) for r in listing.erf + listing.shape_bias]


# ------------------------------------------------------------------------------------------------- data layer
def test_record_linked_outside_is_refused(linked):
    listing = R.list_runs(linked)
    assert not any(SECRET in t for t in titles(listing))
    problems = "\n".join(listing.problems)
    assert "erf/json-link/erf.json" in problems and "sb/json-link/summary.json" in problems
    assert problems.count("outside the results folder") >= 2
    assert "good" not in problems and {"resnet-152 (random init)", "vgg16"} <= set(titles(listing))


def test_linked_run_folder_is_skipped_and_named(linked):
    listing = R.list_runs(linked)
    assert not any(SECRET in t for t in titles(listing))
    problems = "\n".join(listing.problems)
    assert "erf/folder-link" in problems and "sb/folder-link" in problems  # the user learns why it is not shown
    assert str(linked.parent) not in problems  # no absolute path of the server


def test_matrix_linked_outside_is_refused(linked):
    run = next(r for r in R.list_runs(linked).erf if r.path.name == "npy-link")
    with pytest.raises(ResultError, match=r"npy-link.*erf\.npy.*outside the results folder"):
        R.load_erf_matrix(run)
    good = next(r for r in R.list_runs(linked).erf if r.path.name == "good")
    assert R.load_erf_matrix(good)[0].shape == (64, 64)


def test_decisions_linked_outside_are_refused(linked):
    runs = {r.path.name: r for r in R.list_runs(linked).shape_bias}
    with pytest.raises(ResultError, match=r"decisions\.csv.*outside the results folder"):
        R.load_decisions(runs["csv-link"])
    assert len(R.load_decisions(runs["good"])) == 64


def test_a_run_without_a_root_is_confined_to_its_folder(linked, outside):
    run = R.Run("erf", linked / "erf" / "npy-link", R.load_record(linked / "erf" / "npy-link", "erf"))
    with pytest.raises(ResultError, match="outside"):
        R.load_erf_matrix(run)


def test_stimuli_folder_comes_only_from_the_operator(tmp_path, outside):
    # the test session's cache (conftest) holds no stimuli, so without an override there is no folder at all
    assert R.stimuli_dir_for(None) is None
    assert R.stimuli_dir_for(outside / "stimuli") == (outside / "stimuli").resolve()


# ------------------------------------------------------------------------------------------------ the page
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


def markdown_strings(at: AppTest) -> list[str]:
    """Every string the page renders as Markdown: markdown, captions, alerts, expander labels, image captions,
    widget labels; st.table cells are Markdown too, so a table counts as a failure when it shows payloads."""
    out = []
    for root in (at.main, at.sidebar):
        for n in walk(root):
            t = getattr(n, "type", None)
            if t in ("markdown", "caption", "error", "warning", "info", "success"):
                out.append(str(n.value))
            elif t == "expander":
                out.append(n.label)
            elif t == "image" or type(n).__name__ == "Image":
                out.extend(getattr(n, "captions", []) or [])
            elif t == "table":
                out.append(str(n.value))
            elif hasattr(n, "label") and isinstance(getattr(n, "label", None), str):
                out.append(n.label)
    return out


def all_text(at: AppTest) -> str:
    """Markdown strings, plain texts, widget options and every table cell, for 'is it shown anywhere' checks."""
    parts = markdown_strings(at)
    parts += [str(t.value) for t in at.text]
    for w in list(at.multiselect) + list(at.selectbox):
        parts += [str(o) for o in w.options]
    for df in at.dataframe:
        parts.append(df.value.to_csv())
    return "\n".join(parts)


def select_all(at: AppTest, key: str) -> None:
    at.multiselect(key=key).set_value(list(at.multiselect(key=key).options)).run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", ["ERF", "Shape bias", "Runs"])
def test_page_shows_nothing_from_outside(monkeypatch, linked, page):
    at = start(monkeypatch, linked, page)
    if page != "Runs":
        select_all(at, "erf_models" if page == "ERF" else "sb_models")
    shown = all_text(at)
    assert SECRET not in shown
    assert "outside the results folder" in "\n".join(str(w.value) for w in at.warning)  # the linked records
    if page == "ERF":
        errors = "\n".join(str(e.value) for e in at.error)
        assert "npy-link" in errors and "outside the results folder" in errors
    if page == "Shape bias":
        errors = "\n".join(str(e.value) for e in at.error)
        assert "csv-link" in errors and "outside the results folder" in errors
        assert "vgg16" in at.multiselect(key="sb_models").options


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_stimuli_folder_named_by_a_record_is_not_opened(monkeypatch, tmp_path, outside, where):
    root = tmp_path / "results"
    stim = outside / "stimuli"
    recorded = str(stim) if where == "absolute" else "../../../outside/stimuli"  # relative to the run folder
    make_sb_run(root / "a" / "b", "model-a", stimuli_dir=recorded)
    at = start(monkeypatch, root, "Shape bias")
    # the plot and the bars, the error-consistency matrix and bars; no stimulus
    assert sum(1 for n in walk(at.main) if type(n).__name__ == "Image") == 4
    assert "stimuli folder is not known" in "\n".join(str(i.value) for i in at.info)


def test_stimuli_folder_from_the_operator_is_used(monkeypatch, tmp_path):
    stim = make_stimuli(tmp_path / "stim")
    root = tmp_path / "results"
    make_sb_run(root / "a", "model-a", stimuli_dir="/nonexistent/elsewhere")
    monkeypatch.setenv(ENV_STIMULI, str(stim))
    at = start(monkeypatch, root, "Shape bias")
    assert sum(1 for n in walk(at.main) if type(n).__name__ == "Image") == 2 + 2 + 12  # + error consistency


@pytest.mark.parametrize("page", ["ERF", "Shape bias", "Runs"])
def test_text_from_result_files_is_not_rendered(monkeypatch, tmp_path, page):
    root = make_payload_results(tmp_path / "results")
    stim = make_stimuli(tmp_path / "stim")
    monkeypatch.setenv(ENV_STIMULI, str(stim))  # the stimulus cards show the decisions too
    at = start(monkeypatch, root, page)
    if page != "Runs":
        select_all(at, "erf_models" if page == "ERF" else "sb_models")
    assert not at.error, [e.value for e in at.error]
    unsafe = [s for s in markdown_strings(at) if UNSAFE.search(s) or "$" in s.replace("\\$", "")]
    assert not unsafe
    assert not at.table  # st.table renders its cells as Markdown
    shown = all_text(at)
    assert IMAGE_PAYLOAD in shown  # the text itself is still shown, as plain text (a table cell or an option)
    if page == "Shape bias":  # the decision makers' names on the stimulus cards are escaped
        cards = [str(m.value) for m in at.markdown if "sb " in str(m.value)]
        assert cards and all(r"sb \!\[x\]" in c for c in cards)


def test_decisions_holding_payloads_are_refused_as_plain_text(monkeypatch, tmp_path):
    """A decisions.csv answering with Markdown/HTML is malformed: the decisions reader refuses it and the page
    shows the message, quoting the payload, as plain text."""
    root = make_payload_results(tmp_path / "results", payload_decisions=True)
    monkeypatch.setenv(ENV_STIMULI, str(make_stimuli(tmp_path / "stim")))
    at = start(monkeypatch, root, "Shape bias")
    select_all(at, "sb_models")
    errors = [str(e.value) for e in at.error]
    assert any("md-csv/decisions.csv, line 2: unknown object_response" in e.replace("\\", "") for e in errors), errors
    assert not any(UNSAFE.search(e) for e in errors)
    assert str(tmp_path) not in "\n".join(errors)  # the file is named by its run folder, not the server's path
    assert not [s for s in markdown_strings(at) if UNSAFE.search(s)]


def test_math_in_a_label_does_not_break_the_figures(monkeypatch, tmp_path):
    root = tmp_path / "results"
    from .conftest import make_erf_run

    make_erf_run(root / "erf" / "math", r"math $\notacommand{x}$")
    make_sb_run(root / "sb" / "math", r"sb $\notacommand$ net")
    at = start(monkeypatch, root)
    assert not at.error
    at = start(monkeypatch, root, "Shape bias")
    assert not at.error


def test_record_with_payload_kind_message_is_escaped(monkeypatch, tmp_path):
    root = tmp_path / "results"
    (root / "x").mkdir(parents=True)
    (root / "x" / "erf.json").write_text(json.dumps({"kind": IMAGE_PAYLOAD}), encoding="utf-8")
    at = start(monkeypatch, root)
    warnings = [str(w.value) for w in at.warning]
    assert any("not a erf record" in w for w in warnings)
    assert not any(UNSAFE.search(w) for w in warnings)


def test_stimulus_linked_out_of_the_operator_folder_is_refused(tmp_path, outside):
    # (already refused before this change; kept so that it stays so)
    stim = make_stimuli(tmp_path / "stim")
    target = stim / "cat" / "cat2-chair1.png"
    link(target, outside / "stimuli" / "cat" / "cat2-chair1.png")
    with pytest.raises(ResultError, match="outside"):
        R.stimulus_path(stim.resolve(), "cat", "cat2-chair1.png", {("cat", "cat2-chair1.png")})

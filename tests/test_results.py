"""The readers' guards in erftools.results: paths confined to the results folder, text shown as plain text."""
from __future__ import annotations

import json
import re

import pytest

from erftools import results as R
from erftools.results import ResultError, checked_path, md_code, md_text, plot_text, safe_path

from .apps.conftest import HTML_PAYLOAD, IMAGE_PAYLOAD, link, make_erf_run


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "results"
    (root / "run").mkdir(parents=True)
    (root / "run" / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    link(root / "run" / "out.txt", tmp_path / "secret.txt")
    link(root / "run" / "in.txt", root / "run" / "a.txt")
    link(root / "outdir", tmp_path)
    return root


def test_safe_path_inside(tree):
    assert safe_path(tree, "run/a.txt") == (tree / "run" / "a.txt").resolve()
    assert safe_path(tree, "run/in.txt") == (tree / "run" / "a.txt").resolve()  # a link staying inside is fine
    assert safe_path(tree, ".") == tree.resolve()
    assert safe_path(tree, "run/../run/a.txt").read_text() == "inside"


@pytest.mark.parametrize("relative", ["run/out.txt", "outdir/secret.txt", "outdir", "..", "../secret.txt",
                                      "run/../../secret.txt", "/etc/passwd"])
def test_safe_path_refuses_everything_leading_out(tree, relative):
    with pytest.raises(ResultError, match="outside the results folder") as err:
        safe_path(tree, relative)
    assert str(tree.parent) not in str(err.value)  # the message does not tell where the link leads


def test_checked_path_takes_joined_paths_and_a_linked_root(tree, tmp_path):
    alias = link(tmp_path / "alias", tree)  # the results folder itself reached through a link
    assert checked_path(alias, alias / "run" / "a.txt") == (tree / "run" / "a.txt").resolve()
    with pytest.raises(ResultError, match="refusing to read run/out.txt"):
        checked_path(alias, alias / "run" / "out.txt")


def test_run_files_are_confined(tree, tmp_path):
    run = R.Run("erf", tree / "run", {}, root=tree)
    assert run.file("a.txt").read_text() == "inside"
    with pytest.raises(ResultError, match="outside"):
        run.file("out.txt")
    with pytest.raises(ResultError, match="outside"):
        R.Run("erf", tree / "run", {}).file("../../secret.txt")  # without a root: the run folder


def test_read_record_with_a_root_refuses_a_linked_record(tmp_path):
    outside = make_erf_run(tmp_path / "outside", "secret")
    run = make_erf_run(tmp_path / "results" / "run", "mine")
    link(run / "erf.json", outside / "erf.json")
    with pytest.raises(ResultError, match="outside"):
        R.read_record(run, "erf", root=tmp_path / "results")
    assert R.read_record(run, "erf")["label"] == "secret"  # without a root: as before (the writers' own reads)


def test_scan_names_links_leading_out(tmp_path):
    outside = make_erf_run(tmp_path / "outside", "secret")
    root = tmp_path / "results"
    make_erf_run(root / "mine", "mine")
    link(root / "linked-run", outside)
    link(root / "inner-alias", root / "mine")  # a link inside the folder: skipped silently (no duplicate)
    runs, problems = R.scan(root)
    assert [r.record["label"] for r in runs] == ["mine"] and runs[0].root == root
    assert len(problems) == 1 and "linked-run" in problems[0] and "outside the results folder" in problems[0]


def _unescape(text: str) -> str:
    """What CommonMark shows for text with backslash escapes: an escaped ASCII punctuation character as itself."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


@pytest.mark.parametrize("payload", [IMAGE_PAYLOAD, HTML_PAYLOAD, "[link](http://x)", "<script>alert(1)</script>",
                                     "a *b* _c_ `d` ~~e~~ $x^2$ :red[f] :material/home: &amp; www.example.com "
                                     "user@example.com", "# heading", "- item", "1. item", "2) item", "+ x",
                                     "line\nbreak", "back\\slash"])
def test_md_text_shows_the_text_as_written(payload):
    text = md_text(payload)
    assert _unescape(text) == " ".join(payload.splitlines())  # a Markdown viewer shows exactly the text
    assert "\n" not in text
    # nothing left that Markdown, GitHub's HTML or Streamlit would interpret
    for ch in "![]<>`*_~$&:@#|":
        assert not re.search(rf"(?<!\\){re.escape(ch)}", text.replace("\\\\", "")), (ch, text)
    assert not re.search(r"(?i)www\.", text)
    assert not re.match(r"\s*([-+=]|\d+[.)])(\s|$)", text)  # no list item or heading underline at the start


def test_md_code_is_literal():
    assert md_code("a|b") == "`a|b`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x") == "`` `x ``"
    assert md_code("a\nb") == "`a b`"


def test_plot_text_is_never_mathtext():
    assert plot_text(r"net $\frac{1}{2}$") == r"net \$\frac{1}{2}\$"
    assert plot_text("no dollars") == "no dollars"


def test_record_text_round_trip(tmp_path):
    """A label from a record keeps its meaning for the reader: md_text is the only change on its way to Markdown."""
    folder = make_erf_run(tmp_path / "r", IMAGE_PAYLOAD)
    label = json.loads((folder / "erf.json").read_text())["label"]
    assert _unescape(md_text(label)) == IMAGE_PAYLOAD

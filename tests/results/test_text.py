"""erftools.results.text: text from result files shown as written (Markdown, matplotlib)."""
from __future__ import annotations

import re

import pytest

from erftools.results import md_code, md_text, plot_text

from .builders import HTML_PAYLOAD, IMAGE_PAYLOAD, erf_record


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


def test_record_text_round_trip():
    """A label from a record keeps its meaning for the reader: md_text is the only change on its way to Markdown."""
    label = erf_record(IMAGE_PAYLOAD).label
    assert _unescape(md_text(label)) == IMAGE_PAYLOAD

"""Showing text from result files safely: as plain Markdown text, as a code span, as a matplotlib label.

Standard library only; the report, the dashboard and the figures use it.
"""
from __future__ import annotations

import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&#:@!{}^])")
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)](\s|$)))")
_MD_WWW = re.compile(r"(www)\.", re.IGNORECASE)


def md_text(value: Any) -> str:
    """``value`` as text that Markdown (GitHub, Streamlit) shows exactly as written, on one line.

    Text from result files (labels, model names, decisions, file names, error messages quoting them) can hold
    Markdown or HTML, e.g. an image whose URL the viewer's browser would fetch. Every character that could start
    Markdown, HTML, math or a Streamlit directive is backslash-escaped (CommonMark shows an escaped ASCII
    punctuation character as itself), link-like ``www.`` is broken the same way, and line breaks become spaces.
    """
    text = " ".join(str(value).splitlines())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_WWW.sub(r"\1\\.", text)
    m = _MD_LINE_START.match(text)
    if m:  # a list item, a setext underline or an ordered list ("1." / "1)") at the start of a Markdown body
        at = m.end() - 1 if not m.group(2).isdigit() else m.end()
        text = text[:at] + "\\" + text[at:]
    return text


def md_code(value: Any) -> str:
    """``value`` as a Markdown code span (shown literally, in a monospace font), safe whatever it contains."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plot_text(value: Any) -> str:
    """``value`` for a matplotlib label: dollar signs escaped, so a label is never parsed as mathtext."""
    return str(value).replace("$", r"\$")

"""The erftools dashboard (Streamlit): :mod:`erftools.dashboard.app` is the page (``apps/dashboard.py`` and
``erftools dashboard`` run it).

It reads result folders only through :mod:`erftools.results` (records, store, views) and draws only through
:mod:`erftools.figures`; every failure becomes a :class:`erftools.results.ResultError` shown in the page. It never
imports the report, never runs a model, never downloads and never writes (making example folders is
:mod:`erftools.results.maintenance`).
"""
from __future__ import annotations

from pathlib import Path

from ..results.store import ENV_RESULTS  # noqa: F401  the results root the app serves (set by ``erftools dashboard``)

ENV_STIMULI = "ERFTOOLS_STIMULI"  # an operator-chosen cue-conflict stimuli folder for the image browser


def cache_stamp(path: Path) -> tuple[str, float, int]:
    """A cache key for a file: its path, mtime and size (a re-run invalidates what the pages cached from it)."""
    try:
        s = path.stat()
        return str(path), s.st_mtime, s.st_size
    except OSError:
        return str(path), 0.0, -1


def run_folders(run) -> tuple[str, str]:
    """A run's folder and its results folder (the folder itself when the run has none), as cache-key text."""
    return str(run.path), str(run.root if run.root is not None else run.path)

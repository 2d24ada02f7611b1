"""The erftools dashboard (Streamlit): :mod:`erftools.dashboard.app` is the page (``apps/dashboard.py`` and
``erftools dashboard`` run it).

It reads result folders only through :mod:`erftools.results` (records, store, views) and draws only through
:mod:`erftools.figures`; every failure becomes a :class:`erftools.results.ResultError` shown in the page. It never
imports the report, never runs a model, never downloads and never writes (making example folders is
:mod:`erftools.results.maintenance`).
"""
from __future__ import annotations

from ..results.store import ENV_RESULTS  # noqa: F401  the results root the app serves (set by ``erftools dashboard``)

ENV_STIMULI = "ERFTOOLS_STIMULI"  # an operator-chosen cue-conflict stimuli folder for the image browser

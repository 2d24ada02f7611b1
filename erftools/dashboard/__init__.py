"""The dashboard's logic, kept free of Streamlit so that it can be tested and reused by the report.

* :mod:`erftools.dashboard.data` reads result folders (through :mod:`erftools.results`), the paper's reference
  numbers, decisions and stimuli; every failure becomes a :class:`erftools.results.ResultError` with a clear message.
* :mod:`erftools.dashboard.figures` draws the matplotlib figures shared by the dashboard and ``erftools report``.
* :mod:`erftools.dashboard.app` is the Streamlit page (``apps/dashboard.py`` and ``erftools dashboard`` run it).

The dashboard only reads: it never runs a model and never downloads anything.
"""
from __future__ import annotations

ENV_RESULTS = "ERFTOOLS_RESULTS"  # the results root the app serves (set by ``erftools dashboard``)
ENV_STIMULI = "ERFTOOLS_STIMULI"  # an operator-chosen cue-conflict stimuli folder for the image browser

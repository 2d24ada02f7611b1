"""Studies: one TOML file describes a comparison (models, weights, both measurements, the paper's values and the
tolerances); :func:`run_study` runs every model through every measurement into one results folder and compares.

* :mod:`~erftools.study.spec`: the file format, parsed and checked (errors name the line and the key);
* :mod:`~erftools.study.jobs`: the runs of a study, their folders, shards, weights, torchrun commands;
* :mod:`~erftools.study.plan`: what will be downloaded and computed, with time estimates (``--dry-run``);
* :mod:`~erftools.study.runner`: the run, resumable, then the comparison and the report;
* :mod:`~erftools.study.compare`: our numbers next to the paper's, with verdicts.

The format is described in ``docs/study.md``; the built-in studies are in ``data/studies/``.
"""
from __future__ import annotations

from .compare import Row, compare, format_rows
from .plan import Plan, format_plan, make_plan
from .runner import StudyOutcome, run_study, write_outputs
from .spec import Study, StudyError, builtin_studies, load_study, parse_study

__all__ = ["Study", "StudyError", "load_study", "parse_study", "builtin_studies", "make_plan", "format_plan", "Plan",
           "run_study", "write_outputs", "StudyOutcome", "compare", "format_rows", "Row"]

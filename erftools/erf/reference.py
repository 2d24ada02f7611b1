"""The RepLKNet paper's Table 10 (area ratios of trained models at t = 20, 30, 50, 99 %), the ERF's paper facts.

One home beside the ERF engine, as the paper's Fig. 5 is beside the shape-bias engine
(:mod:`erftools.shapebias.reference`): the results views, the report, the dashboard and the studies read it here.
Standard library only (the results layer imports it without torch).
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterable

from .._io import ErftoolsError

TABLE10_FILE = "paper_table10.json"  # in data/

__all__ = ["TABLE10_FILE", "table10", "table10_entry", "norm_name"]


def norm_name(name: Any) -> str:
    """A name reduced to lower-case letters and digits, for matching runs to published rows."""
    return re.sub(r"[^a-z0-9]", "", str(name or "").lower())


@functools.lru_cache(maxsize=1)
def _load() -> str:
    from .._paths import data_dir

    return (data_dir() / TABLE10_FILE).read_text(encoding="utf-8")


def table10() -> dict:
    """The paper's Table 10 (``{"models": [{name, aliases, area_ratio_percent: {"0.2": ...}}], ...}``), shipped in
    ``data/``; :class:`ErftoolsError` when the file is missing or unreadable."""
    try:
        return json.loads(_load())
    except (OSError, ValueError) as exc:
        raise ErftoolsError(f"the paper's Table 10 ({TABLE10_FILE}) is missing or unreadable: {exc}") from exc


def table10_entry(names: Iterable[str], table: dict | None = None) -> dict | None:
    """The Table 10 row whose name or an alias matches one of ``names`` (already :func:`norm_name`-ed), or None."""
    keys = set(names)
    for row in (table or table10()).get("models", []):
        if keys & ({norm_name(row.get("name"))} | {norm_name(a) for a in row.get("aliases", [])}):
            return row
    return None

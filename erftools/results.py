"""The on-disk format of a run, shared by the CLI (writer), the report and the dashboard (readers).

A *run folder* holds the results of one measurement of one model:

ERF run (``erftools erf --out DIR``)
    ``erf.json``   the record (``"kind": "erf"``): model info, weights source and sha256, image list and its hash,
                   size, sampler, seed, counts, area ratios, radial profile, timings, versions
    ``erf.npy``    float32 (H, W) mean contribution matrix (``stored_downsample`` > 1 in the record when it was
                   block-summed for display, e.g. the committed examples)
    ``erf.png``    the heatmap

Shape-bias run (``erftools shape-bias --out DIR``)
    ``summary.json``   the record (``"kind": "shape-bias"``): shape bias, fractions, per category, ci95, ...
    ``decisions.csv``  per-trial decisions, model-vs-human schema
    ``*.png``          plots

Every record is written atomically and carries ``"schema": 1`` and ``"complete": true`` only once everything else
in the folder is written, so a reader can tell a finished run from an interrupted one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import ErftoolsError

SCHEMA = 1
ERF_RECORD = "erf.json"
ERF_MATRIX = "erf.npy"
ERF_FIGURE = "erf.png"
SB_RECORD = "summary.json"
SB_DECISIONS = "decisions.csv"
RECORD_FILES = {"erf": ERF_RECORD, "shape-bias": SB_RECORD}


class ResultError(ErftoolsError):
    """A result folder is missing, partial or malformed."""


@dataclass
class Run:
    kind: str  # "erf" or "shape-bias"
    path: Path  # the run folder
    record: dict

    @property
    def name(self) -> str:
        return self.record.get("label") or self.record.get("model", {}).get("name") or self.path.name

    @property
    def complete(self) -> bool:
        return bool(self.record.get("complete"))


def read_record(folder: str | os.PathLike, kind: str) -> dict:
    """Read and check the JSON record of a run folder; raise :class:`ResultError` with a clear message."""
    folder = Path(folder)
    path = folder / RECORD_FILES[kind]
    if not path.is_file():
        raise ResultError(f"{folder} is not a {kind} result folder: {path.name} is missing")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path} is unreadable or not valid JSON ({exc}); re-run the measurement") from exc
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise ResultError(f"{path} is not a {kind} record (kind={record.get('kind') if isinstance(record, dict) else None!r})")
    return record


def find_runs(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> list[Run]:
    """All run folders below ``root`` (sorted by path). Malformed records are skipped; use :func:`scan` to see them."""
    return [r for r in scan(root, kind, max_depth)[0]]


def scan(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> tuple[list[Run], list[str]]:
    """Like :func:`find_runs`, also returning a message for every folder whose record could not be read."""
    root = Path(root)
    runs: list[Run] = []
    problems: list[str] = []
    if not root.is_dir():
        raise ResultError(f"results folder {root} does not exist")
    kinds = [kind] if kind else list(RECORD_FILES)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
        for k in kinds:
            if RECORD_FILES[k] in filenames:
                try:
                    runs.append(Run(k, Path(dirpath), read_record(dirpath, k)))
                except ResultError as exc:
                    problems.append(str(exc))
    runs.sort(key=lambda r: str(r.path))
    return runs, problems


def safe_path(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, refusing any path that resolves outside ``root`` (``..``, absolute paths, symlinks)."""
    root_r = Path(root).resolve()
    target = (root_r / relative).resolve()
    if target != root_r and root_r not in target.parents:
        raise ResultError(f"refusing to read {relative}: it is outside the results folder {root_r}")
    return target


def base_record(kind: str, **fields: Any) -> dict:
    """A new record with the common fields; the writer adds its own and sets ``complete`` last."""
    import datetime as _dt

    from ._io import versions

    rec = {"kind": kind, "schema": SCHEMA, "complete": False,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions()}
    rec.update(fields)
    return rec

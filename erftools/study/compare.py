"""A study's numbers next to the paper's: one row per model, measurement and value, with the difference and a
verdict against the study's tolerance. Reads only the finished run folders (whatever machine or shard wrote them)."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .jobs import Job, jobs
from .plan import run_status
from .spec import Study

AGREES = "agrees"
DIFFERS = "DIFFERS"
NO_PAPER = "no paper value"
NOT_RUN = "not run"
MISSING = "missing"
FAILED = "failed"

__all__ = ["Row", "compare", "format_rows", "markdown_rows", "summary", "AGREES", "DIFFERS", "NO_PAPER", "NOT_RUN",
           "MISSING", "FAILED"]


@dataclass
class Row:
    model: str  # the model's id
    label: str
    measurement: str  # "ERF (sequential)", "shape bias"
    quantity: str  # "r @ 20%" (percent of the image), "shape bias"
    ours: float | None
    paper: float | None
    diff: float | None
    tolerance: str
    verdict: str
    folder: str | None = None
    note: str = ""


def _close(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) < 1e-9


def _verdict(ours, paper, tol) -> tuple[float | None, str]:
    if paper is None:
        return None, NO_PAPER
    if ours is None:
        return None, DIFFERS  # the paper has a square; ours has none
    diff = ours - paper
    return diff, AGREES if tol.allows(diff, paper) else DIFFERS


def _job_rows(study: Study, job: Job, record: dict) -> list[Row]:
    m = job.model
    if job.kind == "erf":
        tol = study.tolerance["erf"]
        ratios = record.get("area_ratios") or []
        out = []
        for t in study.erf.thresholds:
            hit = next((r for r in ratios if _close(r.get("threshold", -1), t)), None)
            ours = None if hit is None or hit.get("area_ratio") is None else 100.0 * hit["area_ratio"]
            paper = next((v for k, v in (m.paper_erf or {}).items() if _close(k, t)), None)
            diff, verdict = _verdict(ours, paper, tol)
            note = "no square holds this share" if hit is not None and ours is None else ""
            out.append(Row(m.id, m.label, job.name, f"r @ {t:.0%} (%)", ours, paper, diff,
                           tol.text(" pp") if paper is not None else "", verdict, job.folder, note))
        return out
    tol = study.tolerance["shape_bias"]
    ours = record.get("shape_bias")
    diff, verdict = _verdict(ours, m.paper_shape_bias, tol)
    return [Row(m.id, m.label, job.name, "shape bias", ours, m.paper_shape_bias, diff,
                tol.text() if m.paper_shape_bias is not None else "", verdict, job.folder)]


def _unfinished(study: Study, job: Job, verdict: str, note: str) -> list[Row]:
    """The rows of a run without a record: the paper's values only, with ``verdict`` and ``note``."""
    rows = _job_rows(study, job, {})
    for r in rows:
        r.tolerance, r.verdict, r.note = "", verdict, note
    return rows


def compare(study: Study, root: Path, failures: dict | None = None) -> list[Row]:
    """The rows of every model of the study (all shards), from the finished runs below ``root``. ``failures``:
    ``{job folder: message}`` of runs that failed in this session."""
    failures = failures or {}
    rows: list[Row] = []
    for m in study.models:
        if m.unpublished:
            for kind in study.measurements(m):
                job = Job(m, kind, study.erf.samplers[0] if kind == "erf" else None)
                for r in _unfinished(study, job, NOT_RUN, m.note or "no public weights"):
                    r.folder, r.measurement = None, ("ERF" if kind == "erf" else r.measurement)
                    rows.append(r)
            continue
        for job in jobs(study, [m]):
            folder = root / job.folder
            if job.folder in failures:
                rows += _unfinished(study, job, FAILED, failures[job.folder])
                continue
            status = run_status(folder, job.kind)
            if status != "done":
                note = ("interrupted: run the study again to continue it" if status == "interrupted"
                        else "not computed yet")
                rows += _unfinished(study, job, MISSING, note)
                continue
            record_file = folder / ("erf.json" if job.kind == "erf" else "summary.json")
            rows += _job_rows(study, job, json.loads(record_file.read_text(encoding="utf-8")))
    return rows


def summary(rows: list[Row]) -> dict:
    return dict(Counter(r.verdict for r in rows))


def _num(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cells(r: Row) -> list[str]:
    digits = 3 if r.quantity == "shape bias" else 2
    diff = "" if r.diff is None else f"{r.diff:+.{digits}f}"
    verdict = r.verdict + (f" ({r.note})" if r.note else "")
    return [r.label, r.measurement, r.quantity, _num(r.ours, digits), _num(r.paper, digits), diff, r.tolerance,
            verdict]


HEADER = ["model", "measurement", "value", "ours", "paper", "difference", "tolerance", "verdict"]


def format_rows(rows: list[Row]) -> str:
    """The comparison as a plain-text table."""
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)) + "  " + c[-1])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def markdown_rows(rows: list[Row]) -> str:
    """The comparison as a Markdown table; text from the study file is shown as written (escaped)."""
    from ..results import md_text

    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    out += ["| " + " | ".join(md_text(x) for x in _cells(r)) + " |" for r in rows]
    return "\n".join(out)


def rows_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]

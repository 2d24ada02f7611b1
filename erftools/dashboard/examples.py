"""Make result folders fit to commit: the example results in ``reports/examples``.

``python -m erftools.dashboard.examples reports/examples`` (after the ``erftools erf`` / ``erftools shape-bias``
commands listed in ``reports/examples/README.md``):

* block-sums every ``erf.npy`` to at most 256 x 256 (``stored_downsample`` records the factor; the area ratios and
  radial profile in ``erf.json`` stay the full-resolution ones) and redraws ``erf.png`` small;
* rewrites absolute paths of this machine inside the records as portable ones (relative to the repository, or
  from a well-known folder name such as ``reference-decisions/`` onwards), so no local path is committed;
* removes the shape-bias plots written by the CLI (per run and combined; the dashboard and ``erftools report``
  draw their own), to keep the repository light.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import results as R
from ..results import ResultError
from .._io import write_json
from ..report import shrink_erf_run
from .data import source_root

ANCHORS = ("reference-decisions/", "cue-conflict/", "data/images/")


def portable(value: str, repo: Path) -> str:
    """An absolute path made portable; anything else unchanged."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    p = Path(value)
    try:
        return p.resolve().relative_to(repo.resolve()).as_posix()
    except (ValueError, OSError):
        pass
    for anchor in ANCHORS:
        i = value.find(anchor)
        if i >= 0:
            return value[i:]
    return p.name


def _scrub(obj, repo: Path):
    if isinstance(obj, dict):
        return {k: _scrub(v, repo) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v, repo) for v in obj]
    if isinstance(obj, str):
        if obj.startswith("/"):
            return portable(obj, repo)
        if " /" in obj:  # a command line with absolute arguments
            return " ".join(portable(w, repo) for w in obj.split(" "))
    return obj


def _remove_plot(folder: Path, name) -> None:
    """Delete the plot ``name`` listed in a record, only when it is a plain file name of ``folder`` (a name
    written in a result file never reaches another folder)."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return
    (folder / name).unlink(missing_ok=True)


def finalize(root: str | os.PathLike, side: int = 256, drop_run_plots: bool = True) -> list[str]:
    """Shrink, scrub and lighten every run below ``root``; return what was done (one line each)."""
    root = Path(root)
    repo = source_root()
    runs, problems = R.scan(root)
    done = [f"skipped: {p}" for p in problems]
    for run in runs:
        if not run.complete:
            done.append(f"skipped unfinished {run.path}")
            continue
        try:
            if run.kind == "erf":
                f = shrink_erf_run(run.path, side=side, root=root)
                if f > 1:
                    done.append(f"{run.path.name}: erf.npy block-summed by {f}")
            record = R.read_record(run.path, run.kind, root=root)
        except ResultError as exc:  # e.g. a file linked from outside the folder: left as it is
            done.append(f"skipped {run.path.name}: {exc}")
            continue
        if run.kind == "shape-bias" and drop_run_plots:
            for name in record.get("plots") or []:
                _remove_plot(run.path, name)
            if record.get("plots"):
                record["plots_removed"] = "per-run plots removed to keep the examples small; see the folder's " \
                                          "combined plots"
                record["plots"] = []
        scrubbed = _scrub(record, repo)
        if scrubbed != record:
            done.append(f"{run.path.name}: {R.RECORD_FILES[run.kind]} made portable")
        write_json(run.path / R.RECORD_FILES[run.kind], scrubbed)
    for extra in root.rglob("*.json"):  # the combined files of `erftools shape-bias` with several decision makers
        if extra.name in R.RECORD_FILES.values():
            continue
        try:
            doc = json.loads(R.checked_path(root, extra).read_text(encoding="utf-8"))
        except (OSError, ValueError, ResultError):
            continue
        if drop_run_plots and isinstance(doc, dict) and doc.get("kind") == "shape-bias-combined" and doc.get("plots"):
            for name in doc["plots"]:
                _remove_plot(extra.parent, name)
            doc = dict(doc, plots=[], plots_removed="combined plots removed to keep the examples small; "
                                                    "`erftools report` and the dashboard draw them")
            done.append(f"{extra.name}: combined plots removed")
        scrubbed = _scrub(doc, repo)
        write_json(extra, scrubbed)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m erftools.dashboard.examples", description=__doc__.split("\n")[0])
    p.add_argument("root", help="the folder of example results (reports/examples)")
    p.add_argument("--side", type=int, default=256, help="largest side of a stored ERF matrix (default 256)")
    args = p.parse_args(argv)
    for line in finalize(args.root, side=args.side):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

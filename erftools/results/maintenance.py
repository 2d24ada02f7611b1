"""Changing result folders on purpose: shrinking ERF matrices and making portable example copies.

This is the only part of the results package that writes; the report and the dashboard only read.

``python -m erftools.results.maintenance reports/examples`` (after the ``erftools erf`` / ``erftools shape-bias``
commands listed in ``reports/examples/README.md``):

* block-sums every ``erf.npy`` to at most 256 x 256, and the layer matrices ``layers/<name>.npy`` of a layered run
  by the same factor (``stored_downsample`` records the factor; the area ratios, statistics and radial profiles in
  ``erf.json`` stay the full-resolution ones) and redraws ``erf.png`` and the layer figures small;
* rewrites absolute paths of this machine inside the records as portable ones (relative to the repository, or
  from a well-known folder name such as ``reference-decisions/`` onwards), so no local path is committed;
* removes the shape-bias plots written by the CLI (per run and combined) and the per-layer and growth figures of
  ``erftools erf --layers`` (the dashboard and ``erftools report`` draw their own), to keep the repository light.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from .._io import save_npy, write_json
from .records import COMBINED_KIND, ERF_FIGURE, ERF_MATRIX, ERF_RECORD, RECORD_FILES, ResultError
from .store import (Run, block_reduce, checked_path, layer_entries, layer_entry, layer_matrix_name, load_erf_matrix,
                    load_layer_matrix, load_record, read_record, scan, source_root)
from .text import plot_text
from .views import run_title

ANCHORS = ("reference-decisions/", "cue-conflict/", "data/images/")


def shrink_erf_run(folder: str | os.PathLike, side: int = 256, figure: bool = True,
                   root: str | os.PathLike | None = None) -> int:
    """Block-sum ``erf.npy`` of an ERF run folder to at most ``side`` pixels a side, in place; return the factor.
    The matrices of a layered run (``layers/<name>.npy``) are block-summed by the same factor.

    ``stored_downsample`` in ``erf.json`` is multiplied by the factor; the record's area ratios, statistics and
    radial profiles (computed at full resolution) are kept. With ``figure`` the run's ``erf.png`` and the layer
    figures are redrawn small from the result.
    The record and the matrix are read only from inside ``root`` (default: the run folder itself), so a link to a
    file elsewhere is refused rather than copied into the folder.
    """
    folder = Path(folder)
    root = folder if root is None else Path(root)
    record = load_record(folder, "erf", root=root)
    run = Run("erf", folder, record, root=root)
    layers = [e["layer"] for e in layer_entries(run)]
    arrays = {}
    for name in [ERF_MATRIX] + [layer_matrix_name(run, layer) for layer in layers]:
        try:
            arr = np.load(run.file(name), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ResultError(f"{folder}: {name} is missing or unreadable ({exc})") from exc
        if arr.ndim != 2:
            raise ResultError(f"{folder}: {name} is not a 2-D matrix")
        arrays[name] = arr
    arr = arrays[ERF_MATRIX]
    f = 1
    while max(arr.shape) // f > side and arr.shape[0] % (2 * f) == 0 and arr.shape[1] % (2 * f) == 0:
        f *= 2
    if f > 1:
        if any(a.shape != arr.shape for a in arrays.values()):
            raise ResultError(f"{folder}: the layer matrices and {ERF_MATRIX} differ in shape; not shrunk")
        record.stored_downsample = record.stored_downsample * f
        record.complete = False  # a reader never sees the new matrices with the old factor as complete
        write_json(folder / ERF_RECORD, record.to_dict())
        for name, a in arrays.items():
            save_npy(folder / name, block_reduce(a.astype(np.float64), f).astype(np.float32))
        record.complete = True
        write_json(folder / ERF_RECORD, record.to_dict())
    if figure:
        from ..erf.plots import plot_erf

        m, _ = load_erf_matrix(run)
        plot_erf(m, title=plot_text(run_title(run)), path=folder / ERF_FIGURE, figsize=(4.0, 4.4), dpi=80)
        for layer in layers:
            entry = layer_entry(run, layer)
            png = entry.get("figure")
            if not (isinstance(png, str) and png == layer_matrix_name(run, layer)[:-4] + ".png"):
                continue  # only the figure beside the layer's own matrix is redrawn
            m, _ = load_layer_matrix(run, layer)
            stats = entry.get("statistics") if isinstance(entry.get("statistics"), dict) else {}
            plot_erf(m, title=plot_text(f"{run_title(run)} - {layer}"), path=folder / png, figsize=(4.0, 4.4),
                     dpi=80, theoretical=stats.get("theoretical_rf"))
    return f


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


def _drop_layer_plots(folder: Path, record: dict) -> int:
    """Remove the figures ``erftools erf --layers`` wrote per layer and the growth figure (the dashboard and the
    report draw their own; their fields in the record become null); only a ``layers/<name>.png`` of the run folder
    or a plain file name is deleted. Returns how many were removed."""
    removed = 0
    for entry in record.get("layers") or []:
        name = entry.get("figure") if isinstance(entry, dict) else None
        if isinstance(name, str) and re.fullmatch(r"layers/[A-Za-z0-9][A-Za-z0-9._-]*\.png", name):
            (folder / name).unlink(missing_ok=True)
            entry["figure"] = None
            removed += 1
    if record.get("growth_figure"):
        _remove_plot(folder, record["growth_figure"])
        record["growth_figure"] = None
        removed += 1
    return removed


def finalize(root: str | os.PathLike, side: int = 256, drop_run_plots: bool = True) -> list[str]:
    """Shrink, scrub and lighten every run below ``root``; return what was done (one line each)."""
    root = Path(root)
    repo = source_root()
    runs, problems = scan(root)
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
            record = read_record(run.path, run.kind, root=root)
        except ResultError as exc:  # e.g. a file linked from outside the folder: left as it is
            done.append(f"skipped {run.path.name}: {exc}")
            continue
        if run.kind == "erf" and drop_run_plots and _drop_layer_plots(run.path, record):
            done.append(f"{run.path.name}: layer figures removed")
        if run.kind == "shape-bias" and drop_run_plots and record.get("plots"):
            for name in record["plots"]:
                _remove_plot(run.path, name)
            record["plots_removed"] = "per-run plots removed to keep the examples small; see the folder's " \
                                      "combined plots"
            record["plots"] = []
        scrubbed = _scrub(record, repo)
        if scrubbed != record:
            done.append(f"{run.path.name}: {RECORD_FILES[run.kind]} made portable")
        write_json(run.path / RECORD_FILES[run.kind], scrubbed)
    for extra in root.rglob("*.json"):  # the combined files of `erftools shape-bias` with several decision makers
        if extra.name in RECORD_FILES.values():
            continue
        try:
            doc = json.loads(checked_path(root, extra).read_text(encoding="utf-8"))
        except (OSError, ValueError, ResultError):
            continue
        if drop_run_plots and isinstance(doc, dict) and doc.get("kind") == COMBINED_KIND and doc.get("plots"):
            for name in doc["plots"]:
                _remove_plot(extra.parent, name)
            doc = dict(doc, plots=[], plots_removed="combined plots removed to keep the examples small; "
                                                    "`erftools report` and the dashboard draw them")
            done.append(f"{extra.name}: combined plots removed")
        write_json(extra, _scrub(doc, repo))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m erftools.results.maintenance",
                                description="Make result folders fit to commit (shrink, portable paths, no plots).")
    p.add_argument("root", help="the folder of example results (reports/examples)")
    p.add_argument("--side", type=int, default=256, help="largest side of a stored ERF matrix (default 256)")
    args = p.parse_args(argv)
    for line in finalize(args.root, side=args.side):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

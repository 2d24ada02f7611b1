"""Input-size sweeps: the ERF of one model at several input sizes, one ordinary run folder per size under a parent.

Layout of ``OUT/`` (``erftools erf --size 224,512,1024 --out OUT``)::

    OUT/sweep.json        the sweep: sizes, label, per size its folder and area ratios; "complete" set last
    OUT/erf_sizes.png     area ratio at each threshold against the input size, with the theoretical field's
    OUT/size-224/ ...     one complete run folder per size (erf.json, erf.npy, erf.png), made by run_erf

Why one folder per size (and not one run with several sizes): each size needs its own model (a patch-grid model is
rebuilt for the size: Swin's ``img_size``), its own preprocessing (the images are resized to the size) and gives a
matrix of its own shape; so each size is exactly a single run, with the single run's resume, lock and crash-safety
semantics unchanged: an interrupted sweep continues, by the same command, with the finished sizes returned as they
are, the interrupted size resumed from its checkpoint (at most one batch lost) and the others computed. Every size
folder is found by the results store as an ordinary run (``sweep`` in its record names the sweep), so analyze,
compare, the report and the dashboard read it like any other run. ``sweep.json`` is rewritten (atomically) after
each size and is only a summary: deleting it loses nothing.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from .._io import ErftoolsError, write_json
from .._limits import bound_problem

log = logging.getLogger(__name__)

SWEEP_RECORD = "sweep.json"
SWEEP_KIND = "erf_sweep"
SWEEP_FIGURE = "erf_sizes.png"

__all__ = ["parse_sizes", "size_folder", "run_size_sweep", "read_sweep", "is_sweep", "SWEEP_RECORD", "SWEEP_FIGURE"]


def parse_sizes(text: str | int | Sequence[int]) -> list[int]:
    """``"224,512,1024"`` (or an int, or a list) as distinct sizes within :mod:`erftools._limits`, in the order
    given."""
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, str):
        items = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = list(text)
    sizes = []
    for item in items:
        try:
            size = int(item)
        except (TypeError, ValueError):
            raise ErftoolsError(f"--size {text!r}: {item!r} is not a whole number of pixels; write e.g. 1024 or "
                                "224,512,1024") from None
        problem = bound_problem("size", size)
        if problem:
            raise ErftoolsError(f"--size {problem}")
        if size in sizes:
            raise ErftoolsError(f"--size {text!r} lists {size} twice; list each size once")
        sizes.append(size)
    if not sizes:
        raise ErftoolsError("--size is empty; write e.g. 1024 or 224,512,1024")
    return sizes


def size_folder(size: int) -> str:
    """The sub-folder of one size in a sweep."""
    return f"size-{int(size)}"


def is_sweep(folder: str | os.PathLike) -> bool:
    return (Path(folder) / SWEEP_RECORD).is_file()


def read_sweep(folder: str | os.PathLike) -> dict:
    """The ``sweep.json`` of a sweep folder, with a clear error when it is missing or damaged."""
    path = Path(folder) / SWEEP_RECORD
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ErftoolsError(f"{path} cannot be read ({exc}); run the sweep command again to rewrite it") from exc
    if not isinstance(rec, dict) or rec.get("kind") != SWEEP_KIND or not isinstance(rec.get("runs"), list):
        raise ErftoolsError(f"{path} is not an ERF size-sweep record; run the sweep command again to rewrite it")
    return rec


def _check_existing(out: Path, sizes: list[int], overwrite: bool) -> None:
    """Refuse a parent folder holding a sweep over other sizes (its size folders would be mixed up with ours)."""
    if overwrite or not is_sweep(out):
        return
    old = read_sweep(out).get("sizes")
    if old != sizes:
        raise ErftoolsError(f"{out} holds an ERF sweep over the sizes {old}, not {sizes}: run it with --size "
                            f"{','.join(map(str, old or []))} to continue it, choose another --out, or pass "
                            "--overwrite to start again")


def _entry(size: int, record: dict) -> dict:
    stats = record.get("statistics") or {}
    return {"size": size, "folder": size_folder(size), "label": record.get("label"),
            "area_ratios": record.get("area_ratios"), "theoretical_rf": stats.get("theoretical_rf"),
            "num_images": record.get("num_images")}


def run_size_sweep(sizes: Sequence[int], out_dir: str | os.PathLike,
                   build: Callable[[int], tuple], run: Callable[..., dict], *, label: str,
                   overwrite: bool = False, extra: dict | None = None, plot: bool = True,
                   rank: int = 0) -> dict:
    """Run one ERF per size into ``out_dir/size-<N>/`` and write the sweep's summary and figure.

    ``build(size) -> (model, images, run_kwargs)`` makes what one size needs (the model for that size, the images
    resized to it, and the keyword arguments of ``run``); ``run`` is :func:`erftools.erf.run.run_erf` (passed in so
    callers add what they need, e.g. a baseline). ``label``: the model's label, shown with each size
    (``"<label>, 224 px"``). Returns the sweep record (``sweep.json``); ``complete`` is true once every size is.
    """
    sizes = parse_sizes(list(sizes))
    out = Path(out_dir)
    _check_existing(out, sizes, overwrite)
    record = {"kind": SWEEP_KIND, "schema": 1, "complete": False, "label": label, "sizes": sizes, "runs": [],
              "figure": None, **(extra or {})}
    for size in sizes:
        model, images, kwargs = build(size)
        kwargs = dict(kwargs, overwrite=bool(overwrite or kwargs.get("overwrite")), label=f"{label}, {size} px")
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "sweep": {"size": size, "sizes": sizes, "label": label}}
        rec = run(model, images, out / size_folder(size), **kwargs)
        if rank == 0:
            record["runs"].append(_entry(size, rec))
            record.update({k: rec.get(k) for k in ("objective", "reduction", "thresholds")})
            record["model"] = (rec.get("model") or {}).get("name")
            write_json(out / SWEEP_RECORD, record)  # after every size: what is finished so far
        del model
    if rank != 0:
        return record
    if plot:
        from .plots import plot_size_sweep

        plot_size_sweep({label: record["runs"]}, thresholds=record.get("thresholds"), path=out / SWEEP_FIGURE)
        record["figure"] = SWEEP_FIGURE
    record["complete"] = True
    write_json(out / SWEEP_RECORD, record)
    return record

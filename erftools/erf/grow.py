"""Growing a finished ERF run with more images (the run-folder protocol's ``GROW``).

The same command with a larger ``--num-images`` (``num_images`` in Python) continues from the finished matrices
instead of starting again, when nothing but the number of images changed (the model, weights, size, normalisation,
target and numerics are the same: :data:`GROWABLE` are the only fingerprint keys that differ), every image the
finished run used or skipped is in the new sample, and those files are unchanged (the same size and modification
time). The sequential sampler always qualifies (a longer list starts with the shorter one); a seeded random sample
qualifies when the larger draw contains the smaller one, which :func:`can_grow` checks rather than assumes. Otherwise
the refusal names ``num_images`` and says why the run cannot be grown.

The finished run becomes the checkpoint's base: per target its mean matrix times its count in float64. The stored
matrix is float32, so the grown mean equals a run of all the images from scratch to about 1e-7 relative.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._runfolder import differences
from ..images import files_sha256
from ..results.records import ERF_MATRIX
from .compute import FINAL, ErfAccumulator

#: the fingerprint keys a grown run may differ in: the number of images, and the hashes that follow from the list
GROWABLE = frozenset({"num_images", "images_sha256", "images_files_sha256"})

__all__ = ["GROWABLE", "can_grow", "finished_sums"]


def can_grow(record: dict, *, fingerprint: dict, images, keys) -> bool | str:
    """True when the finished run ``record`` can be continued to the run of ``fingerprint`` over ``images``; False
    when more than the number of images changed; a sentence saying why not when only the images did."""
    saved = record.get("fingerprint") or {}
    diff = set(differences(saved, fingerprint, keys))
    if "num_images" not in diff or not diff <= GROWABLE:
        return False
    n_old, n_new = int(saved.get("num_images") or 0), int(fingerprint["num_images"])
    if n_new < n_old:
        return f"a finished run grows with more images, never fewer (it holds {n_old})"
    old = list((record.get("images") or {}).get("files") or [])
    if not old or not set(old) <= set(images.files):
        return (f"it cannot be grown: the {images.sampler} sample of {n_new} images does not contain the {n_old} it "
                "used (with --sampler sequential a larger --num-images always does)")
    if files_sha256(images.root, old) != saved.get("images_files_sha256"):
        return "it cannot be grown: some of its image files have changed since (size or modification time)"
    if any(int(e.get("num_images") or 0) != int(record.get("num_images") or 0) for e in record.get("layers") or []):
        return "it cannot be grown: its layers averaged different numbers of images (NaN maps were skipped)"
    return True


def finished_sums(out: Path, record: dict, targets: list) -> dict:
    """``{target: ErfAccumulator}`` of the finished run in ``out``: mean x count (float64), the images it used and
    skipped, and its computation time (NaN when the run began before that was kept)."""
    layers = {e.get("layer"): e for e in record.get("layers") or []}
    count = int(record["num_images"])
    seconds = (record.get("timings") or {}).get("run_compute_s")
    sums = {}
    for t in targets:
        matrix = np.load(out / (ERF_MATRIX if t == FINAL else layers[t]["matrix"]), allow_pickle=False)
        sums[t] = ErfAccumulator(matrix.astype(np.float64) * count, count, list(record.get("processed") or []),
                                 [dict(s) for s in record.get("skipped") or []],
                                 float(seconds) if seconds is not None else math.nan)
    return sums

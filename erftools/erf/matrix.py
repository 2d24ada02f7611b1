"""Reading ERF matrices: an ``.npy`` file (erftools' or the official script's), a one-array ``.npz``, or a run
folder (its record with it; a layer's matrix of a layer-wise run)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import ErftoolsError
from ..results.records import ERF_MATRIX, ERF_RECORD

__all__ = ["load_matrix", "read_run"]


def load_matrix(path: str | os.PathLike, layer: str | None = None) -> tuple[np.ndarray, dict | None]:
    """An ERF matrix from an ``.npy`` file (erftools or the official script), an ``.npz`` archive holding exactly one
    2-D array, or a run folder; with its record (None for a bare file). ``layer``: of a run folder made with
    ``layers``, that layer's matrix (default: ``erf.npy``, the deepest layer)."""
    from .._lock import lock_holder
    from ..results.records import checked_path, read_json_record as read_record

    path = Path(path)
    record = None
    if path.is_dir():
        holder = lock_holder(path)
        if holder is not None:
            raise ErftoolsError(f"{path} is being written right now by process {holder.get('pid', '?')} on host "
                                f"{holder.get('host', '?')}; wait until that run finishes")
        record = read_record(path, "erf")
        if not record.get("complete"):
            raise ErftoolsError(f"{path} holds an unfinished ERF run (run the same command again to continue it)")
        # checked_path: a run folder's matrices never lead out of it
        if layer is not None:
            entries = {e.get("layer"): e for e in record.get("layers") or []}
            if layer not in entries:
                raise ErftoolsError(f"{path} has no ERF of the layer {layer!r}; its layers: "
                                    f"{', '.join(map(str, entries)) or 'none (a final-feature-map run)'}")
            record = dict(record, area_ratios=entries[layer]["area_ratios"], target=dict(
                record.get("target") or {}, layer=layer), statistics=entries[layer].get("statistics"))
            path = checked_path(path, path / entries[layer]["matrix"])
        else:
            path = checked_path(path, path / ERF_MATRIX)
    elif path.name == ERF_MATRIX and (path.parent / ERF_RECORD).is_file():
        try:
            record = read_record(path.parent, "erf")
        except ErftoolsError:
            record = None
    if not path.exists():
        raise ErftoolsError(f"{path} does not exist")
    if not path.is_file():
        raise ErftoolsError(f"{path} is not a file; pass an erf.npy file or an ERF run folder")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ErftoolsError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    if head.startswith(b"PK\x03\x04"):
        m = _matrix_from_npz(path)
    elif head.startswith(b"\x93NUMPY"):
        try:
            m = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ErftoolsError(f"{path} is a damaged .npy file ({exc}); write it again") from exc
    else:
        kind = "a text file" if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head) else \
            ("empty" if not head else "not a NumPy file")
        raise ErftoolsError(f"{path} is {kind}, not an ERF matrix: pass a .npy file written by numpy.save (erftools' "
                            "erf.npy, or the official script's output), or an ERF run folder")
    if not np.issubdtype(m.dtype, np.number):
        raise ErftoolsError(f"{path} holds {m.dtype} values; an ERF matrix holds numbers")
    m = np.squeeze(m)
    if m.ndim != 2:
        raise ErftoolsError(f"{path} holds an array of shape {m.shape}; an ERF matrix is 2-D")
    if not np.isfinite(m).all():
        raise ErftoolsError(f"{path} holds {int((~np.isfinite(m)).sum())} NaN or infinite values; an ERF matrix "
                            "must be finite (recompute it)")
    return m, record


def _matrix_from_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise ErftoolsError(f"{path} is a damaged .npz archive ({exc})") from exc
    two_d = {k: a for k, a in arrays.items() if np.squeeze(a).ndim == 2}
    if len(two_d) == 1:
        return next(iter(two_d.values()))
    listing = ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items()) or "no arrays"
    raise ErftoolsError(f"{path} is an .npz archive with {listing}; an ERF matrix is one 2-D array: save it alone "
                        "with numpy.save(...) as a .npy file")


def read_run(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    m, rec = load_matrix(Path(folder))
    return m, rec or {}

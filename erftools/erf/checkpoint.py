"""The ERF engine's resume state: ``OUT/.erf_checkpoint/`` (the run-folder protocol's "interrupted run").

After every batch each process writes its running float64 sums and the names of the images it has processed (and
skipped) to ``rank<R>.npz`` (atomically), so an interruption loses at most the batch in flight. ``meta.json`` holds
the run's fingerprint and generation. On resume the saved sums are first consolidated into ``base.npz`` under a new
*generation* number; rank files of an older generation are ignored (they are already in the base), so a crash at
any moment never counts an image twice, and a run may be resumed with a different number of processes. Every file
is validated when read (readable, the run's targets, finite sums of the run's size, consistent counts).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._io import ErftoolsError, atomic_path, write_json
from .maps import ErfAccumulator

__all__ = ["save_state", "load_checkpoint", "saved_fingerprint", "start", "nothing_computed"]


def save_state(path: Path, accs: dict, generation: int) -> None:
    """One atomic file per process and batch with every target's running sum (so the targets never disagree)."""
    targets = list(accs)
    arrays = {f"total_{i}": (accs[t].total if accs[t].total is not None else np.zeros((0, 0)))
              for i, t in enumerate(targets)}
    names = json.dumps({"targets": targets, "processed": [accs[t].processed for t in targets],
                        "skipped": [accs[t].skipped for t in targets]})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, counts=np.array([accs[t].count for t in targets], dtype=np.int64),
                     compute_s=np.array([accs[t].compute_s for t in targets], dtype=np.float64),
                     generation=np.int64(generation), names=np.array(names), **arrays)


def _bad_checkpoint(path: Path, cause: str) -> ErftoolsError:
    return ErftoolsError(f"the checkpoint file {path} {cause}; it cannot be resumed. Start the run again with "
                         f"overwrite=True, or delete {path.parent}")


def _load_state(path: Path, size: tuple[int, int] | None = None,
                targets: list | None = None) -> tuple[dict, int]:
    """Read and validate one checkpoint file: readable, its targets the run's, every sum finite and of the run's
    size, counts consistent. Returns ``({target: ErfAccumulator}, generation)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = json.loads(str(z["names"]))
            saved_targets = list(names["targets"])
            counts = [int(c) for c in z["counts"]]
            seconds = [float(s) for s in z["compute_s"]] if "compute_s" in z else [float("nan")] * len(counts)
            generation = int(z["generation"])
            totals = [z[f"total_{i}"] for i in range(len(saved_targets))]
            processed = [list(p) for p in names["processed"]]
            skipped = [list(p) for p in names["skipped"]]
    except Exception as exc:
        raise _bad_checkpoint(path, f"is unreadable ({type(exc).__name__}: {exc})") from exc
    if targets is not None and saved_targets != list(targets):
        raise _bad_checkpoint(path, f"holds the targets {saved_targets}, not this run's {list(targets)}")
    out = {}
    for t, total, count, proc, skip, secs in zip(saved_targets, totals, counts, processed, skipped, seconds):
        if total.size:
            if total.ndim != 2 or (size is not None and tuple(total.shape) != tuple(size)):
                raise _bad_checkpoint(path, f"holds a sum of shape {tuple(total.shape)}, but this run's maps are "
                                            f"{tuple(size) if size else '2-D'}")
            if not np.isfinite(total).all():
                raise _bad_checkpoint(path, f"holds a sum with {int((~np.isfinite(total)).sum())} non-finite "
                                            f"values ({t})")
        if count != len(proc) or (count and not total.size) or count < 0:
            raise _bad_checkpoint(path, f"is inconsistent (count {count}, {len(proc)} image names, "
                                        f"sum {'present' if total.size else 'absent'})")
        out[t] = ErfAccumulator(total if total.size else None, count, proc, skip, secs)
    if len({tuple(sorted(set(a.processed) | {s["file"] for s in a.skipped})) for a in out.values()}) > 1:
        raise _bad_checkpoint(path, "is inconsistent (its targets cover different images)")
    return out, generation


def load_checkpoint(ckdir: Path, size: tuple[int, int] | None = None, targets: list | None = None,
                    files: list | None = None) -> tuple[dict, int]:
    """The consolidated state: base + every rank file of the base's generation, each validated; with ``files``
    (the run's image list) every image it names, processed or skipped, must be one of them."""
    accs, gen = {t: ErfAccumulator() for t in (targets or [])}, 0
    base = ckdir / "base.npz"
    if base.is_file():
        accs, gen = _load_state(base, size, targets)
        _check_names(base, accs, files)
        targets = list(accs)
    for f in sorted(ckdir.glob("rank*.npz")):
        part, g = _load_state(f, size, targets)
        if g == gen:
            _check_names(f, part, files)
            for t, a in part.items():
                accs.setdefault(t, ErfAccumulator()).merge(a)
    for t, acc in accs.items():
        seen = set()
        for name in acc.processed:
            if name in seen:
                raise _bad_checkpoint(ckdir / "base.npz", f"counts the image {name} twice")
            seen.add(name)
    return accs, gen


def _check_names(path: Path, accs: dict, files: list | None) -> None:
    """Every image a checkpoint file names (processed or skipped) is one of the run's ``files``."""
    if files is None:
        return
    known = set(files)
    for acc in accs.values():
        foreign = [n for n in [*acc.processed, *(s.get("file") for s in acc.skipped)] if n not in known]
        if foreign:
            raise _bad_checkpoint(path, f"names the image {foreign[0]!r}, which is not one of this run's "
                                        f"{len(known)} images" + (f" ({len(foreign)} such names)"
                                                                  if len(foreign) > 1 else ""))


def nothing_computed(ckdir: Path) -> bool:
    """Whether a checkpoint folder holds no processed image (a run that failed before its first batch)."""
    if not ckdir.is_dir():
        return False
    try:
        accs, _ = load_checkpoint(ckdir)
    except ErftoolsError:
        return False
    return all(a.count == 0 and not a.processed for a in accs.values())


def saved_fingerprint(ckdir: Path) -> dict | None:
    """The fingerprint the interrupted run in ``ckdir`` was written with (None: there is no interrupted run)."""
    if not ckdir.is_dir():
        return None
    meta = ckdir / "meta.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]
    except Exception as exc:
        raise ErftoolsError(f"{meta} is missing or unreadable, so the interrupted run in {ckdir.parent} cannot be "
                            "continued; start again with overwrite=True") from exc


def start(ckdir: Path, fingerprint: dict, base: dict, generation: int) -> None:
    """(Rank 0) the checkpoint of a starting or resumed run: ``meta.json``, the consolidated ``base.npz`` of the next
    generation (older rank files become stale and are removed)."""
    ckdir.mkdir(parents=True, exist_ok=True)
    write_json(ckdir / "meta.json", {"fingerprint": fingerprint, "generation": generation})
    save_state(ckdir / "base.npz", base, generation)
    for f in ckdir.glob("rank*.npz"):
        f.unlink(missing_ok=True)

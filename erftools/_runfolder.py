"""The run-folder protocol every measurement follows (``erftools erf``, ``erftools shape-bias``, any later one).

A run writes one folder. Given the folder, the measurement (:class:`RunKind`), the run's fingerprint (everything that
changes the result) and the flags, :meth:`RunFolder.decide` answers:

* ``FINISHED``: the folder holds the finished run of these settings: return it (the engine may re-analyse it);
* ``RESUME``: it holds an interrupted run of these settings: continue it;
* ``GROW``: it holds a finished run that the engine can extend to these settings (``grows``; the ERF: the same run
  with more images): continue from it;
* ``FRESH``: nothing to continue (or ``overwrite``): start again;
* and refuses, naming each difference, a finished or interrupted run of other settings (``overwrite=True`` /
  ``--overwrite`` discards it), a ``resume=True`` with nothing to resume, and ``resume`` with ``overwrite``.

While a run writes the folder rank 0 holds its lock (:func:`held`, :mod:`erftools._lock`); a failure before anything
was computed lets the engine clean up. The record is written last, through the one validating writer
(:func:`erftools.results.records.write_record`), with ``"complete": true``; the other ranks get it by broadcast
(:func:`share`). Each engine keeps its own state format (ERF: float64 sums in npz generations; shape bias:
CRC-checked CSV rows) and tells the protocol the fingerprint its state was written with.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ._io import ErftoolsError
from ._lock import run_lock
from .results.records import FAILURE_FILE, RECORD_FILES, Fingerprint

log = logging.getLogger(__name__)

FRESH, RESUME, FINISHED, GROW = "fresh", "resume", "finished", "grow"

__all__ = ["RunKind", "RunFolder", "FRESH", "RESUME", "FINISHED", "GROW", "held", "share", "differences", "short"]


def short(value) -> str:
    """``repr(value)``, cut to 80 characters (for messages)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(saved: dict, now: dict, keys=None) -> list[str]:
    """The fingerprint keys (``keys``, default: all of both) whose values differ between ``saved`` and ``now``."""
    return Fingerprint(saved).differences(now, keys)


#: fingerprint keys that follow from others (the hash of the image list follows from its number and sampling): not
#: named when those differ, so a message says "num_images: 2 -> 4" rather than two hashes
_DERIVED = {"images_sha256": ("num_images", "sampler", "sample_seed"),
            "images_files_sha256": ("num_images", "sampler", "sample_seed", "images_root")}


def _details(saved: dict, now: dict, keys, then: str) -> str:
    """The differing settings, ``key: <saved> -> <now>`` (``then``: what the saved side is, for the reader)."""
    diff = differences(saved, now, keys)
    diff = [k for k in diff if not (k in _DERIVED and any(d in diff and d in saved for d in _DERIVED[k]))]
    older = [k for k in diff if k not in saved]
    text = "; ".join(f"{k}: {short(saved.get(k))} -> {short(now.get(k))}" for k in diff if k in saved)
    if text:
        text = f"{then} -> now: " + text
    if older:
        text += ("; " if text else "") + "made by an older erftools, whose fingerprint lacks " + ", ".join(older)
    return text or "(unknown)"


@dataclass(frozen=True)
class RunKind:
    """What the protocol needs to know about a measurement."""
    kind: str  # the record kind ("erf", "shape-bias")
    title: str  # in messages: "ERF", "shape-bias"
    state: str  # what an interrupted run leaves, in messages: "an interrupted ERF run", "partial decisions"
    keys: tuple | None = None  # the fingerprint keys compared (None: all)
    who: Callable[[dict], str] | None = None  # " of <model>" for a finished record, in messages
    defaults: dict | None = None  # {key: value}: what a fingerprint written before ``key`` existed stands for


class RunFolder:
    """One run folder under the protocol: ``decide`` what it holds, then the engine computes and writes."""

    def __init__(self, out: str | os.PathLike, kind: RunKind, fingerprint: dict, *, resume: bool | None = None,
                 overwrite: bool = False, grows: Callable[[dict], "bool | str"] | None = None):
        """``grows(finished record)``: True when the engine can extend that finished run of other settings to these
        (``GROW``), else False, or a sentence saying why not (added to the refusal)."""
        if resume and overwrite:
            raise ErftoolsError("resume and overwrite contradict each other; choose one")
        self.out, self.kind, self.fingerprint = Path(out), kind, fingerprint
        self.resume, self.overwrite, self.grows = bool(resume), bool(overwrite), grows

    def existing(self) -> dict | None:
        """The folder's record as a JSON object of this kind (None: none, unreadable or foreign)."""
        try:
            data = json.loads((self.out / RECORD_FILES[self.kind.kind]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("kind", self.kind.kind) == self.kind.kind else None

    def decide(self, interrupted: dict | None) -> tuple[str, dict | None]:
        """``(FINISHED | RESUME | FRESH, the existing record or None)``. ``interrupted``: the fingerprint the
        engine's saved state was written with (None: the folder holds no state to continue)."""
        if self.overwrite:
            return FRESH, None
        record = self.existing()
        if record is not None and record.get("complete"):
            saved = {**(self.kind.defaults or {}), **(record.get("fingerprint") or {})}
            if differences(saved, self.fingerprint, self.kind.keys):
                grows = self.grows(record) if self.grows is not None else False
                if grows is True:
                    return GROW, record
                who = self.kind.who(record) if self.kind.who else ""
                raise ErftoolsError(
                    f"{self.out} already holds a finished {self.kind.title} run{who} with other settings "
                    f"({_details(saved, self.fingerprint, self.kind.keys, 'finished run')})"
                    + (f"; {grows}" if isinstance(grows, str) and grows else "")
                    + "; pass overwrite=True to replace it, or choose another output folder")
            return FINISHED, record
        if interrupted is not None:
            interrupted = {**(self.kind.defaults or {}), **interrupted}
            if differences(interrupted, self.fingerprint, self.kind.keys):
                raise ErftoolsError(
                    f"refusing to resume: {self.out} holds {self.kind.state} of another run with different "
                    f"settings ({_details(interrupted, self.fingerprint, self.kind.keys, 'then')}). Run with the same "
                    "model, weights, seed, inputs and settings, or choose another output folder, or pass "
                    "overwrite=True to discard it")
            return RESUME, record
        if self.resume:
            raise ErftoolsError(f"nothing to resume in {self.out}: it holds no {self.kind.state} of these settings")
        return FRESH, record


@contextlib.contextmanager
def held(out: str | os.PathLike, dist, device, what: str, on_failure: Callable[[], None] | None = None
         ) -> Iterator[None]:
    """The processes set up on ``device`` (:class:`erftools._dist.Dist`) and rank 0 holding the folder's lock while
    the block runs; ``on_failure`` (rank 0) runs when the block fails (clean-up of a run that computed nothing);
    the process group is closed afterwards."""
    dist.setup(device)
    try:
        with run_lock(out, what=what) if dist.rank == 0 else contextlib.nullcontext():
            marker = Path(out) / FAILURE_FILE
            if dist.rank == 0:
                marker.unlink(missing_ok=True)  # this attempt decides anew
            try:
                yield
            except BaseException as exc:
                if on_failure is not None and dist.rank == 0:
                    on_failure()
                if dist.rank == 0 and not isinstance(exc, (KeyboardInterrupt, SystemExit)) and Path(out).is_dir():
                    try:  # why it failed: readers show the folder as failed with this message, not as interrupted
                        marker.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}) + "\n",
                                          encoding="utf-8")
                    except OSError:
                        log.debug("could not write %s", marker)
                raise
    finally:
        dist.close()


def share(dist, record: dict | None) -> dict | None:
    """Every rank's return value: rank 0's record once it is written (the others pass None)."""
    dist.barrier()
    return dist.broadcast(record)

"""What each finished run of a study was made from, so that a rerun touches nothing it does not recompute.

After a run finishes, the study writes ``<run folder>/.study-inputs.json``: the run's inputs as the study sees them
(:func:`job_inputs`: the model and its arguments, the measurement's settings, the weights and their file's size
and time, the images drawn or the stimuli's hash) and the sha256 of the run's record. A rerun that finds the same
inputs and the same, finished record keeps the run as it is without calling the engine: no model is built, no
file of the run is rewritten (the shape-bias engine would otherwise re-analyse and rewrite a finished run). Any
difference (another file, a record rewritten by a single command, an interrupted run) hands the run to the engine,
which resumes, keeps or refuses it as always.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .._io import sha256_file, write_json
from .jobs import Job
from .spec import Study

LEDGER = ".study-inputs.json"

__all__ = ["LEDGER", "job_inputs", "is_kept", "remember"]


def _file_state(weights: str | None) -> dict | None:
    if not weights or not os.path.isfile(weights):
        return None
    st = os.stat(weights)
    return {"path": str(Path(weights).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _images_state(images) -> dict | None:
    if images is None:
        return None
    from ..images import files_sha256

    return {"root": str(images.root), "files": images.sha256, "stats": files_sha256(images.root, images.files)}


def job_inputs(study: Study, job: Job, weights: str | None, *, images=None, stimuli=None, stimuli_dir=None,
               allow_incomplete: bool = False) -> dict:
    """Everything the study puts into one run (see the module's docstring)."""
    m = job.model
    out = {"folder": job.folder, "kind": job.kind, "model": m.name, "label": job.label(study),
           "seed": job.seed(study), "model_kwargs": m.model_kwargs, "weights": weights,
           "weights_file": _file_state(weights)}
    if job.kind == "erf":
        spec = dataclasses.asdict(study.erf)
        spec.pop("samplers")
        out.update(erf=dict(spec, sampler=job.sampler), images=_images_state(images))
    else:
        spec = dataclasses.asdict(study.shape_bias)
        out.update(shape_bias=dict(spec, allow_incomplete=allow_incomplete),
                   stimuli=getattr(stimuli, "sha256", None) or str(stimuli_dir))
    return json.loads(json.dumps(out, default=str))


def _record(folder: Path, job: Job) -> Path:
    return folder / ("erf.json" if job.kind == "erf" else "summary.json")


def is_kept(folder: Path, job: Job, inputs: dict) -> bool:
    """Whether ``folder`` holds the finished run of exactly these inputs, unchanged since the study made it."""
    from .plan import run_status

    try:
        saved = json.loads((folder / LEDGER).read_text(encoding="utf-8"))
        return (isinstance(saved, dict) and saved.get("inputs") == inputs and run_status(folder, job.kind) == "done"
                and saved.get("record_sha256") == sha256_file(_record(folder, job)))
    except (OSError, ValueError):
        return False


def remember(folder: Path, job: Job, inputs: dict) -> None:
    """Record the inputs of the run just finished in ``folder``."""
    record = _record(folder, job)
    if record.is_file():
        write_json(folder / LEDGER, {"inputs": inputs, "record_sha256": sha256_file(record)})

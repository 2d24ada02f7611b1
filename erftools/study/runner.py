"""Run a study: every model of the study (or of one shard) through every measurement into one results folder,
then the comparison table (``study.json``, ``study.md``) and the report (``report.md``).

Resuming is the engines' own: a finished run with the same settings is returned as it is, an interrupted one is
continued (at most one batch is lost), a run with other settings in the same folder is refused with the
differences named. So running the same study again continues where it stopped, and a shard on another machine
that writes into the same (shared) folder adds its runs; the table and the report always read every finished run.

Folder layout (``<results>/``): ``study.toml`` (a copy of the study file), ``<model id>/erf-<sampler>/`` and
``<model id>/shape-bias/`` (ordinary run folders of ``erftools erf`` / ``erftools shape-bias``), ``study.json``
(the comparison rows), ``study.md`` and ``report.md`` with ``figures/``.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._io import ErftoolsError, write_json, write_text
from .compare import Row, compare, markdown_rows, rows_json, summary
from .jobs import (Job, check_weights_ids, erf_command, images_dir, jobs, parse_shard, resolve_weights, results_dir,
                   shape_bias_command, shard_models, stimuli_dir)
from .spec import Study, StudyError
from ..results.store import STUDY_RECORD  # one definition: the store reads it

log = logging.getLogger(__name__)

STUDY_COPY = "study.toml"
STUDY_TABLE = "study.md"
REPORT = "report.md"

__all__ = ["run_study", "write_outputs", "StudyOutcome", "STUDY_RECORD", "STUDY_TABLE", "REPORT"]


@dataclass
class StudyOutcome:
    results: Path
    rows: list[Row]
    ran: list[str] = field(default_factory=list)  # job folders computed or found finished in this session
    failures: dict = field(default_factory=dict)  # {job folder: message}
    skipped: dict = field(default_factory=dict)  # {model id: why} (missing weights with skip_missing)
    report: Path | None = None
    report_problem: str | None = None


def _check_copy(root: Path, study: Study) -> None:
    """Keep a copy of the study file in the results folder; refuse a folder that holds another study."""
    copy = root / STUDY_COPY
    if copy.is_file():
        from .spec import parse_study

        try:
            other = parse_study(copy.read_text(encoding="utf-8"), str(copy))
        except ErftoolsError:
            other = None
        if other is not None and other.name != study.name:
            raise StudyError(f"{root} holds the results of another study ({other.name!r}); choose another results "
                             "folder")
    write_text(copy, study.text)


def run_study(study: Study, *, results=None, images=None, stimuli=None, weights_files: dict | None = None,
              weights_dir=None, shard: str | tuple | None = None, nproc_per_node: int | None = None,
              device: str | None = None, skip_missing: bool = False, allow_incomplete: bool | None = None,
              progress: bool = True, report: bool = True, echo: Callable[[str], None] | None = None,
              on_batch: Callable | None = None, runner: Callable | None = None) -> StudyOutcome:
    """Run ``study`` (see :mod:`erftools.study.runner`) and return the comparison.

    ``images``: the ERF image folder (the ImageNet validation folder; overrides the study's ``images``);
    ``stimuli``: the cue-conflict folder; ``weights_files``: ``{model id: checkpoint path}``; ``weights_dir``: a
    folder holding manually downloaded weights under their expected names; ``shard``: ``"i/n"``, this machine's
    share of the models; ``nproc_per_node``: run each measurement under torchrun with that many processes;
    ``skip_missing``: run the models whose weights are available and list the others instead of refusing.
    ``on_batch`` is passed to the in-process ERF runs (tests use it to interrupt a study); ``runner`` replaces
    ``subprocess.run`` for the torchrun commands (tests).
    """
    echo = echo or (lambda s: None)
    root = results_dir(study, results)
    shard_t = parse_shard(shard) if isinstance(shard, (str, type(None))) else tuple(shard)
    if nproc_per_node is not None and int(nproc_per_node) < 1:
        raise StudyError(f"nproc_per_node must be at least 1 (got {nproc_per_node})")
    check_weights_ids(study, weights_files)
    models = shard_models(study, shard_t)
    todo = jobs(study, models)
    allow = study.shape_bias.allow_incomplete if study.shape_bias else False
    allow = allow if allow_incomplete is None else bool(allow_incomplete)
    dev = device or study.device

    # -- everything this shard needs, checked before anything is computed -----------------------------------------
    problems: list[str] = []
    img_dir = None
    if any(j.kind == "erf" for j in todo):
        img_dir, problem = images_dir(study, images)
        if problem:
            problems.append(problem)
    choices = {m.id: resolve_weights(study, m, weights_files, weights_dir) for m in models}
    missing = {mid: c.problem for mid, c in choices.items() if c.problem}
    if missing and not skip_missing:
        problems += [f"{mid}: {p}" for mid, p in missing.items()]
    if problems:
        raise StudyError("the study cannot start:\n  " + "\n  ".join(problems)
                         + ("\n(skip_missing=True runs the models whose weights are there)" if missing else ""))
    stimuli_report = None
    sdir = stimuli_dir(study, stimuli) if any(j.kind == "shape_bias" for j in todo) else None
    if sdir is not None and (nproc_per_node or 1) <= 1 and any(j.model.id not in missing for j in todo
                                                               if j.kind == "shape_bias"):
        from ..shapebias.stimuli import load_stimuli

        stimuli_report = load_stimuli(sdir, allow_incomplete=allow)

    root.mkdir(parents=True, exist_ok=True)
    _check_copy(root, study)
    outcome = StudyOutcome(root, [])
    outcome.skipped = dict(missing)
    for job in todo:
        if job.model.id in missing:
            continue
        weights = choices[job.model.id].weights
        out = root / job.folder
        echo(f"[{job.model.id}] {job.name} -> {out}")
        try:
            if nproc_per_node and int(nproc_per_node) > 1:
                if job.kind == "erf":
                    cmd = erf_command(study, job, out, weights, img_dir, dev, int(nproc_per_node))
                else:
                    cmd = shape_bias_command(study, job, out, weights, sdir, dev, int(nproc_per_node), allow)
                rc = (runner or _run)(cmd)
                if rc != 0:
                    raise ErftoolsError(f"the command exited with status {rc}: {shlex.join(cmd)}")
            elif job.kind == "erf":
                _erf_in_process(study, job, out, weights, img_dir, dev, progress, on_batch)
            else:
                _shape_bias_in_process(study, job, out, weights, stimuli_report, dev, progress)
            outcome.ran.append(job.folder)
        except ErftoolsError as exc:  # one failed run never costs the others
            outcome.failures[job.folder] = str(exc)
            echo(f"[{job.model.id}] {job.name} failed: {exc}")
    write_outputs(study, root, outcome, report=report)
    return outcome


def _run(cmd: list[str]) -> int:
    return subprocess.run(cmd, check=False).returncode


def _erf_in_process(study: Study, job: Job, out: Path, weights: str, img_dir: Path | None, device: str,
                    progress: bool, on_batch) -> dict:
    """As ``erftools erf`` builds and runs a model (so its folder resumes the same either way)."""
    import torch

    from ..erf import model_kwargs_for_size
    from ..erf.run import run_erf
    from ..images import select_images
    from ..models import create_model, get_model_info

    e = study.erf
    seed = job.seed(study)
    kwargs = dict(model_kwargs_for_size(job.model.name, e.size))
    kwargs.update(job.model.model_kwargs)
    torch.manual_seed(seed)
    model = create_model(job.model.name, weights, **kwargs)
    pre = get_model_info(model).preprocessing
    images = select_images(img_dir, e.num_images, job.sampler, seed, size=e.size, mean=pre.mean, std=pre.std)
    layers = e.layers if e.layers is None or isinstance(e.layers, str) else list(e.layers)
    return run_erf(model, images, out, batch_size=e.batch_size, device=device, conv_backend=e.conv_backend,
                   thresholds=e.thresholds, label=job.label(study), progress=progress, seed=seed,
                   model_kwargs=kwargs, layers=layers, on_batch=on_batch, precision=e.precision,
                   extra={"model_kwargs": kwargs, "study": {"name": study.name, "model": job.model.id,
                                                            "sampler": job.sampler}})


def _shape_bias_in_process(study: Study, job: Job, out: Path, weights: str, stimuli, device: str,
                           progress: bool) -> dict:
    import torch

    from ..models import create_model
    from ..shapebias.run import run_model

    s = study.shape_bias
    seed = job.seed(study)
    torch.manual_seed(seed)  # as run_model does for random weights
    model = create_model(job.model.name, weights, **job.model.model_kwargs)
    return run_model(job.model.name, weights=weights, out=out, stimuli=stimuli, label=job.label(study),
                     batch_size=s.batch_size, device=device, seed=seed, n_boot=s.bootstrap, progress=progress,
                     model=model, precision=s.precision)


def write_outputs(study: Study, root: Path, outcome: StudyOutcome | None = None, report: bool = True) -> list[Row]:
    """The comparison of every finished run below ``root`` (``study.json``, ``study.md``) and the report."""
    outcome = outcome or StudyOutcome(root, [])
    rows = compare(study, root, outcome.failures)
    outcome.rows = rows
    record = {"kind": "study", "schema": 1, "name": study.name, "title": study.title,
              "reference": study.reference, "description": study.description, "study_file": STUDY_COPY,
              "tolerance": {k: {"abs": t.abs, "rel": t.rel} for k, t in study.tolerance.items()},
              "measurements": {"erf": None if study.erf is None else {
                  "num_images": study.erf.num_images, "size": study.erf.size, "samplers": list(study.erf.samplers),
                  "thresholds": list(study.erf.thresholds), "precision": study.erf.precision},
                  "shape_bias": None if study.shape_bias is None else {
                      "precision": study.shape_bias.precision, "batch_size": study.shape_bias.batch_size}},
              "models": [{"id": m.id, "name": m.name, "label": m.label, "weights": m.weights,
                          "download": m.download, "note": m.note, "unpublished": m.unpublished,
                          "runs": [j.folder for j in jobs(study, [m])] if not m.unpublished else [],
                          "paper": {"erf": {f"{k:g}": v for k, v in (m.paper_erf or {}).items()} or None,
                                    "erf_source": m.paper_erf_source or None,
                                    "shape_bias": m.paper_shape_bias,
                                    "shape_bias_source": m.paper_shape_bias_source or None}}
                         for m in study.models],
              "rows": rows_json(rows), "verdicts": summary(rows)}
    write_json(root / STUDY_RECORD, record)
    from ..results import md_text

    head = [f"# Study {md_text(study.name)}: {md_text(study.title)}", ""]
    if study.reference:
        head += [f"Reference: {md_text(study.reference)}", ""]
    tol = "; ".join(f"{k.replace('_', ' ').replace('erf', 'ERF area ratio')} {t.text(' pp' if k == 'erf' else '')}"
                    for k, t in study.tolerance.items()
                    if (k == "erf" and study.erf) or (k == "shape_bias" and study.shape_bias))
    if study.description.strip():
        head += [md_text(study.description.strip()), ""]
    head += [f"Tolerances (|ours - paper| <= max(abs, rel x paper)): {tol}.", "",
             f"Figures and the provenance of every run: [{REPORT}]({REPORT}).", ""]
    write_text(root / STUDY_TABLE, "\n".join(head) + "\n" + markdown_rows(rows) + "\n")
    if report:
        from ..report import build_report
        from ..results import ResultError

        try:
            outcome.report = build_report(root, root / REPORT)
        except ResultError as exc:
            outcome.report_problem = str(exc)
    return rows


def parse_weights_files(items) -> dict:
    """``["ID=PATH", ...]`` as ``{id: path}``."""
    out = {}
    for item in items or []:
        mid, sep, path = str(item).partition("=")
        if not sep or not mid or not path:
            raise StudyError(f"{item!r}: write MODEL_ID=PATH, e.g. replknet-31=~/Downloads/RepLKNet-31.pth")
        out[mid.strip()] = os.path.expanduser(path.strip())
    return out

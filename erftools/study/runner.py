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

import json
import logging
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._io import ErftoolsError, _json_safe, write_text
from .checks import cannot_start, describe, preflight
from .compare import Row, compare, markdown_rows, rows_json, summary
from .folder import record_name, check_folder, results_folder, study_lock
from .jobs import Job, check_weights_ids, erf_command, jobs, parse_shard, shape_bias_command, shard_models
from .ledger import is_kept, job_inputs, remember
from .spec import Study, StudyError
from .terms import in_study_terms
from ..results.records import checked_path
from ..results.store import STUDY_RECORD, study_from_dict  # one definition and one check: the store's

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
    kept: list[str] = field(default_factory=list)  # ... of which finished earlier from the same inputs (untouched)
    failures: dict = field(default_factory=dict)  # {job folder: message}
    skipped: dict = field(default_factory=dict)  # {model id: why} (missing weights with skip_missing)
    report: Path | None = None
    report_problem: str | None = None


def run_study(study: Study, *, results=None, images=None, stimuli=None, weights_files: dict | None = None,
              weights_dir=None, shard: str | tuple | None = None, nproc_per_node: int | None = None,
              device: str | None = None, skip_missing: bool = False, allow_incomplete: bool | None = None,
              overwrite: bool = False, progress: bool = True, report: bool = True,
              echo: Callable[[str], None] | None = None, on_batch: Callable | None = None,
              runner: Callable | None = None) -> StudyOutcome:
    """Run ``study`` (see :mod:`erftools.study.runner`) and return the comparison. Everything is checked before
    the first model runs (:mod:`erftools.study.checks`); a run that fails for its own reason becomes a ``failed``
    row and the others go on.

    ``images``: the ERF image folder (the ImageNet validation folder; overrides the study's ``images``);
    ``stimuli``: the cue-conflict folder; ``weights_files``: ``{model id: checkpoint path}``; ``weights_dir``: a
    folder of manually downloaded weights under their expected names; ``shard``: ``"i/n"``, this machine's share
    of the models; ``nproc_per_node``: run each measurement under torchrun with that many processes;
    ``skip_missing``: run the models that pass the checks and list the others instead of refusing; ``overwrite``:
    accept a study file that differs from the results folder's, and compute every run (of this shard) again;
    ``results``: the results folder (where it may be: :mod:`erftools.study.folder`); ``on_batch``: passed to the
    in-process ERF runs (tests interrupt a study with it); ``runner``: replaces ``subprocess.run`` for the torchrun
    commands (tests).
    """
    echo = echo or (lambda s: None)
    root = results_folder(study, results)
    shard_t = parse_shard(shard) if isinstance(shard, (str, type(None))) else tuple(shard)
    if nproc_per_node is not None and int(nproc_per_node) < 1:
        raise StudyError(f"nproc_per_node must be at least 1 (got {nproc_per_node})")
    check_weights_ids(study, weights_files)
    models = shard_models(study, shard_t)
    allow = study.shape_bias.allow_incomplete if study.shape_bias else False
    allow = allow if allow_incomplete is None else bool(allow_incomplete)
    nproc = int(nproc_per_node or 1)
    pre = preflight(study, models, images=images, stimuli=stimuli, weights_files=weights_files,
                    weights_dir=weights_dir, allow_incomplete=allow, nproc_per_node=nproc)
    if refusal := cannot_start(pre, skip_missing):
        raise StudyError(refusal)
    check_folder(root, study, overwrite)  # before the lock: a refused folder gets nothing written into it
    ctx = _Context(study, root, pre, device or study.device, progress, on_batch, runner, overwrite, allow, nproc, echo)
    with study_lock(root, shard_t):
        check_folder(root, study, overwrite)
        outcome = StudyOutcome(root, [], skipped={mid: "; ".join(p) for mid, p in pre.model_problems.items()})
        if record_name(root) != study.name:
            write_outputs(study, root, outcome, report=False)  # the study record first: the folder is ours
        _write_if_changed(root / STUDY_COPY, study.text)  # a copy of the study file
        try:
            for job in jobs(study, models):
                if job.model.id not in pre.model_problems:
                    _run_job(ctx, job, outcome, nproc <= 1)
        except BaseException:
            write_outputs(study, root, outcome, report=False)  # the table of what is there; then stop
            raise
        write_outputs(study, root, outcome, report=report)
    return outcome


@dataclass
class _Context:
    """What every run of one study session shares."""
    study: Study
    root: Path
    pre: object  # the Preflight
    device: str
    progress: bool
    on_batch: Callable | None
    runner: Callable | None
    overwrite: bool
    allow_incomplete: bool
    nproc: int
    echo: Callable


def _run_job(ctx: _Context, job: Job, outcome: StudyOutcome, single: bool) -> None:
    """One run: kept when it finished earlier from the same inputs, else handed to its engine; its own failure
    is recorded (a ``failed`` row) and the study goes on."""
    study, pre = ctx.study, ctx.pre
    weights = pre.choices[job.model.id].weights
    out = ctx.root / job.folder
    inputs = job_inputs(study, job, weights, images=pre.images.get(job.sampler), stimuli=pre.stimuli,
                        stimuli_dir=pre.stimuli_dir, allow_incomplete=ctx.allow_incomplete)
    if not ctx.overwrite and is_kept(out, job, inputs):
        ctx.echo(f"[{job.model.id}] {job.name}: finished earlier from the same inputs, kept as it is ({out})")
        outcome.ran.append(job.folder)
        outcome.kept.append(job.folder)
        return
    ctx.echo(f"[{job.model.id}] {job.name} -> {out}")
    try:
        checked_path(ctx.root, out, job.folder)  # a run folder linked out of the study's folder is never written
        if not single:
            if job.kind == "erf":
                cmd = erf_command(study, job, out, weights, pre.img_dir, ctx.device, ctx.nproc)
            else:
                cmd = shape_bias_command(study, job, out, weights, pre.stimuli_dir, ctx.device, ctx.nproc,
                                         ctx.allow_incomplete)
            if ctx.overwrite:
                cmd.append("--overwrite")
            rc = ctx.runner(cmd) if ctx.runner else subprocess.run(cmd, check=False).returncode
            if rc != 0:
                raise ErftoolsError(f"the command exited with status {rc}: {shlex.join(cmd)}")
        elif job.kind == "erf":
            _erf_in_process(study, job, out, weights, pre.img_dir, ctx.device, ctx.progress, ctx.on_batch,
                            ctx.overwrite)
        else:
            _shape_bias_in_process(study, job, out, weights, pre.stimuli, ctx.device, ctx.progress, ctx.overwrite)
        remember(out, job, inputs)
        outcome.ran.append(job.folder)
    except Exception as exc:  # noqa: BLE001 - one failed run never costs the others
        log.debug("run %s failed", job.folder, exc_info=True)
        outcome.failures[job.folder] = in_study_terms(describe(exc), job.model.id)
        ctx.echo(f"[{job.model.id}] {job.name} failed: {outcome.failures[job.folder]}")


def _erf_in_process(study: Study, job: Job, out: Path, weights: str, img_dir: Path | None, device: str,
                    progress: bool, on_batch, overwrite: bool = False) -> dict:
    """As ``erftools erf`` builds and runs a model (so its folder resumes the same either way)."""
    import torch

    from ..erf import model_kwargs_for_size
    from ..erf.run import run_erf
    from ..images import select_images
    from ..models import create_model, get_model_info

    e = study.erf
    seed = job.seed(study)
    size = job.input_size(study)
    kwargs = {**model_kwargs_for_size(job.model.name, size), **job.model.model_kwargs}
    torch.manual_seed(seed)
    model = create_model(job.model.name, weights, **kwargs)
    pre = get_model_info(model).preprocessing
    images = select_images(img_dir, e.num_images, job.sampler, seed, size=size, mean=pre.mean, std=pre.std)
    layers = e.layers if e.layers is None or isinstance(e.layers, str) else list(e.layers)
    extra = {"model_kwargs": kwargs, "study": {"name": study.name, "model": job.model.id, "sampler": job.sampler}}
    if job.size:  # one size of a sweep, as `erftools erf --size A,B` records it
        extra["sweep"] = {"size": size, "sizes": list(e.sizes), "label": job.series_label(study)}
    return run_erf(model, images, out, batch_size=e.batch_size, device=device, conv_backend=e.conv_backend,
                   thresholds=e.thresholds, label=job.label(study), progress=progress, seed=seed,
                   model_kwargs=kwargs, layers=layers, on_batch=on_batch, precision=e.precision,
                   allow_low_precision=e.allow_low_precision, overwrite=overwrite, objective=e.objective,
                   reduction=e.reduction, extra=extra)


def _shape_bias_in_process(study: Study, job: Job, out: Path, weights: str, stimuli, device: str,
                           progress: bool, overwrite: bool = False) -> dict:
    import torch

    from ..models import create_model
    from ..shapebias.run import run_model

    s = study.shape_bias
    seed = job.seed(study)
    torch.manual_seed(seed)  # as run_model does for random weights
    model = create_model(job.model.name, weights, **job.model.model_kwargs)
    return run_model(job.model.name, weights=weights, out=out, stimuli=stimuli, label=job.label(study),
                     batch_size=s.batch_size, device=device, seed=seed, n_boot=s.bootstrap, progress=progress,
                     model=model, precision=s.precision, overwrite=overwrite)


def _study_record(study: Study, rows: list[Row]) -> dict:
    e, sb = study.erf, study.shape_bias
    return {"kind": "study", "schema": 1, "name": study.name, "title": study.title,
            "reference": study.reference, "description": study.description, "study_file": STUDY_COPY,
            "tolerance": {k: {"abs": t.abs, "rel": t.rel} for k, t in study.tolerance.items()},
            "measurements": {"erf": None if e is None else {
                "num_images": e.num_images, "size": e.size, "sizes": list(e.all_sizes), "objective": e.objective,
                "reduction": e.reduction, "samplers": list(e.samplers),
                "thresholds": list(e.thresholds), "precision": e.precision,
                "allow_low_precision": e.allow_low_precision},
                "shape_bias": None if sb is None else {"precision": sb.precision, "batch_size": sb.batch_size}},
            "models": [{"id": m.id, "name": m.name, "label": m.label, "weights": m.weights,
                        "download": m.download, "note": m.note, "unpublished": m.unpublished,
                        "runs": [j.folder for j in jobs(study, [m])] if not m.unpublished else [],
                        "paper": {"erf": {f"{k:g}": v for k, v in (m.paper_erf or {}).items()} or None,
                                  "erf_source": m.paper_erf_source or None,
                                  "shape_bias": m.paper_shape_bias,
                                  "shape_bias_source": m.paper_shape_bias_source or None}}
                       for m in study.models],
            "rows": rows_json(rows), "verdicts": summary(rows)}


def _study_table(study: Study, rows: list[Row]) -> str:
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
    return "\n".join(head) + "\n" + markdown_rows(rows) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` (atomically) unless ``path`` holds it already; whether it wrote."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return True


def write_outputs(study: Study, root: Path, outcome: StudyOutcome | None = None, report: bool = True,
                  force_report: bool = False) -> list[Row]:
    """The comparison of every finished run below ``root`` (``study.json``, ``study.md``) and the report.

    A file whose content would not change is not rewritten, and the report is rebuilt only when a run was
    computed in this session, the comparison changed or the report is missing (or ``force_report``): a rerun of a
    finished study touches nothing."""
    outcome = outcome or StudyOutcome(root, [])
    rows = compare(study, root, outcome.failures)
    outcome.rows = rows
    data = _json_safe(_study_record(study, rows))
    study_from_dict(data, root, root, f"{root.name}/{STUDY_RECORD} (about to be written)")  # the reader's check
    changed = _write_if_changed(root / STUDY_RECORD, json.dumps(data, indent=2, allow_nan=False) + "\n")
    extra, draw = correlation_section(root)
    changed |= _write_if_changed(root / STUDY_TABLE, _study_table(study, rows) + extra)
    draw(changed)
    computed = set(outcome.ran) - set(outcome.kept)
    if report and (force_report or changed or computed or not (root / REPORT).is_file()):
        from ..report import build_report
        from ..results import ResultError

        try:
            outcome.report = build_report(root, root / REPORT)
        except ResultError as exc:
            outcome.report_problem = str(exc)
    elif report:
        outcome.report = root / REPORT
    return rows


def correlation_section(root: Path):
    """The "ERF against shape bias" part of ``study.md`` for the study in ``root`` (one measuring both; read from
    its ``study.json``): the tables of :mod:`erftools.results.correlation`, and a function ``draw(changed)`` that
    draws the scatter plot into ``figures/`` when the text changed or the figure is missing. ``("", no-op)`` for
    a study without both measurements."""
    from ..results import correlation as CORR, read_study, slug

    study = read_study(root)
    if not ((study.measurements or {}).get("erf") and (study.measurements or {}).get("shape_bias")):
        return "", lambda changed: None
    correlations = CORR.study_correlations(study)
    points, _ = CORR.study_points(study)
    figure = f"figures/erf_vs_shape_bias_{slug(study.name)}.png" if points else None

    def draw(changed: bool) -> None:
        if figure is None or not (changed or not (root / figure).is_file()):
            return
        from .. import figures as F
        from .._io import save_figure

        fig = F.erf_vs_shape_bias(points, correlations, study.thresholds)
        save_figure(root / figure, fig, dpi=100)
        F.close(fig)

    return "\n" + CORR.markdown(study, correlations, figure), draw


def parse_weights_files(items) -> dict:
    """``["ID=PATH", ...]`` as ``{id: path}``."""
    out = {}
    for item in items or []:
        mid, sep, path = str(item).partition("=")
        if not sep or not mid or not path:
            raise StudyError(f"{item!r}: write MODEL_ID=PATH, e.g. replknet-31=~/Downloads/RepLKNet-31.pth")
        out[mid.strip()] = os.path.expanduser(path.strip())
    return out

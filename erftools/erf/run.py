"""A complete, resumable and distributable ERF run that writes a run folder (``erf.npy``, ``erf.json``, ``erf.png``).

The folder follows the run-folder protocol (:mod:`erftools._runfolder`, the same for ``erftools erf`` and
``erftools shape-bias``):

* no flag: an interrupted run with the same settings is continued; a finished run with the same settings is
  returned as it is; a run with other settings (interrupted or finished) is refused, naming the differences;
* ``overwrite=True`` (``--overwrite``): whatever the folder holds is discarded and the run starts again;
* ``resume=True`` (``--resume``): as without a flag, but there must be a run to continue.

The fingerprint (:func:`fingerprint`: the network's tensors, seed, model arguments, images, size, normalisation,
dtype, backend, layer, precision, objective, reduction) decides. The resume state is :mod:`erftools.erf.checkpoint` (float64 sums, so the
resumed result equals the uninterrupted one to float rounding of the last bit).

Several processes: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised (gloo on CPU, NCCL on
CUDA, one GPU per local rank), the remaining images are split by rank (``files[rank::world]``), and the sums and
counts are all-reduced at the end; only rank 0 writes the result. The matrix equals the single-process one.

:func:`run_erf` is a list of named steps: :func:`_plan`, :func:`_open_state`, :func:`_compute_share`,
:func:`_combine`, :func:`_write_matrices`, :func:`_record`. The finished folder is described in ``docs/erf.md``
(schema 1); ``"complete": true`` is written last.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .. import _runfolder
from .._dist import Dist
from .._io import save_npy
from ..images import files_sha256
from ..models.prepare import parameter_dtype, parameters_sha256  # noqa: F401  (parameters_sha256: re-exported)
from ..results.records import (ERF_CHECKPOINT, ERF_FIGURE, ERF_MATRIX, ERF_RECORD, ErfTimings, LayerEntry, new_record,
                               write_record)
from . import checkpoint
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, radial_profile
from .compute import FINAL, ErfAccumulator, ErfMeta, accumulate, resolve_device
from .grow import can_grow, finished_sums
from .matrix import load_matrix, read_run  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ERF_CHECKPOINT
FINGERPRINT_KEYS = ("model", "arch", "weights", "weights_sha256", "parameters_sha256", "seed", "model_kwargs",
                    "num_images", "sampler", "sample_seed", "images_sha256", "images_root",
                    "images_files_sha256", "size", "mean", "std", "dtype",
                    "conv_backend", "prepare", "layer", "precision", "objective", "reduction")
#: the value of a fingerprint key that records made before the key existed stand for (their runs used it): such a
#: run still resumes and is still found finished
FINGERPRINT_DEFAULTS = {"objective": "paper", "reduction": "relu"}
#: the ERF under the run-folder protocol
ERF_RUN = _runfolder.RunKind("erf", "ERF", "an interrupted ERF run", FINGERPRINT_KEYS, defaults=FINGERPRINT_DEFAULTS)

__all__ = ["run_erf", "run_erf_with_baseline", "load_matrix", "read_run", "CHECKPOINT_DIR", "fingerprint",
           "attach_baseline", "layer_file_stem"]


def fingerprint(info, images, *, model: torch.nn.Module | None = None, seed: int | None = None,
                model_kwargs: dict | None = None, conv_backend: str | None = None, prepare: bool = True,
                layer: str | list | None = None, precision: str = "fp32", objective: str = "paper",
                reduction: str = "relu") -> dict:
    """Everything that changes the matrix, which must not change between an interrupted run and its resumption.

    The network itself is identified by the hash of its tensors (``parameters_sha256``): it differs for another
    random seed, other model arguments or other weights even where the names agree. The images by their list,
    folder and file sizes/modification times; the preprocessing by size, mean and std; the numerics by the dtype
    of the parameters, the convolution backend and whether the model was prepared; the target by its layer.
    """
    from ..ops._dispatch import ENV_VAR

    return {"model": info.name, "arch": info.arch, "weights": info.weights, "weights_sha256": info.weights_sha256,
            "parameters_sha256": parameters_sha256(model) if model is not None else None,
            "seed": seed, "model_kwargs": dict(model_kwargs or {}),
            "num_images": len(images.files), "sampler": images.sampler, "sample_seed": images.seed,
            "images_sha256": images.sha256, "images_root": str(images.root),
            "images_files_sha256": files_sha256(images.root, images.files),
            "size": int(images.size), "mean": [float(v) for v in images.mean],
            "std": [float(v) for v in images.std],
            "dtype": parameter_dtype(model) if model is not None else None,
            "conv_backend": conv_backend or os.environ.get(ENV_VAR) or "auto", "prepare": bool(prepare),
            "layer": layer, "precision": precision, "objective": objective, "reduction": reduction}




LAYER_DIR = "layers"  # one matrix and figure per requested layer


GROWTH_FIGURE = "erf_growth.png"


def layer_file_stem(layer: str) -> str:
    """The file name (without suffix) of a layer's matrix: the module name with unsafe characters replaced."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", layer).strip("._") or "layer"
    return stem


def _theoretical(model: torch.nn.Module, targets: list) -> dict:
    """``{target: theoretical RF dict}`` traced once on the model as built; a failure costs only this statistic."""
    from .theoretical import theoretical_rfs

    names = [None if t == FINAL else t for t in targets]
    try:
        rfs = theoretical_rfs(model, names)
    except Exception as exc:  # noqa: BLE001 - a statistic must never cost the run
        log.warning("the theoretical receptive field could not be traced (%s: %s)", type(exc).__name__, exc)
        return {t: {"side": None, "stride": None, "target": t, "reason": f"not traced: {exc}"} for t in targets}
    return {t: rfs[n].to_dict() for t, n in zip(targets, names)}


def _statistics(matrix: np.ndarray, thresholds: list, theoretical: dict | None) -> dict:
    import warnings

    from .statistics import erf_statistics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty matrix is reported inside the statistics ("warnings")
        return erf_statistics(matrix, thresholds=thresholds, theoretical=theoretical)


def _device_info(dev: torch.device) -> dict:
    d = {"type": dev.type, "name": str(dev), "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(dev)
    else:
        d["cpu"] = platform.processor() or platform.machine()
        d["cpu_count"] = os.cpu_count()
    return d


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r) * (1 if platform.system() == "Darwin" else 1024)
    except Exception:  # pragma: no cover - Windows
        return None


BASELINE_DIR = "baseline"


def attach_baseline(out_dir: str | os.PathLike, baseline: dict, folder: str = BASELINE_DIR) -> dict:
    """Add a summary of the untrained-baseline run ``baseline`` (in ``out_dir/folder``) to the finished record of
    ``out_dir``: its weights and seed, area ratios and statistics (per layer when there are layers). Returns the
    updated record (written atomically; the record stays complete)."""
    from ..results.records import read_json_record as read_record

    out = Path(out_dir)
    record = read_record(out, "erf")
    summary = {"folder": folder, "weights": "random", "seed": (baseline.get("fingerprint") or {}).get("seed"),
               "label": baseline.get("label"), "area_ratios": baseline.get("area_ratios"),
               "statistics": baseline.get("statistics"), "num_images": baseline.get("num_images")}
    if baseline.get("layers"):
        summary["layers"] = [{"layer": e["layer"], "area_ratios": e["area_ratios"], "statistics": e["statistics"],
                              "matrix": f"{folder}/{e['matrix']}"} for e in baseline["layers"]]
    record["baseline"] = summary
    return write_record(out / ERF_RECORD, record)


# ---------------------------------------------------------------------------------------------------------------
# the run: one state object, named steps
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _ErfRun:
    """One ERF run: its settings, and what the steps find out (the checkpoint generation, the saved sums)."""
    model: torch.nn.Module
    images: object
    out: Path
    info: object
    targets: list
    layers: list | None
    fingerprint: dict
    dist: Dist
    device: torch.device
    options: dict  # batch_size, prepare, conv_backend, precision, allow_low_precision, progress, objective, reduction
    thresholds: list
    label: str
    plot: bool
    extra: dict | None
    on_batch: Callable | None
    t_start: float = field(default_factory=time.perf_counter)
    base: dict = field(default_factory=dict)  # {target: saved accumulator}
    generation: int = 0
    resumed: bool = False
    wrote_checkpoint: bool = False

    @property
    def ckdir(self) -> Path:
        return self.out / CHECKPOINT_DIR

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.size), int(self.images.size)


def _plan(model, images, out_dir, *, layers, precision, allow_low_precision, seed, model_kwargs, conv_backend,
          prepare, device, objective, reduction, **settings) -> _ErfRun:
    """Check the arguments (before anything is computed or written), expand the layers, take the fingerprint."""
    from ..images import ImageList
    from ..models import get_model_info
    from .objectives import check_objective, check_reduction, label_with_variant
    from .precision import check_allowed, check_precision

    info = get_model_info(model)
    if isinstance(images, ImageList):  # the model's normalisation unless the caller chose one
        images = images.for_model(info.preprocessing.mean, info.preprocessing.std)
    if layers is not None:
        from .layers import expand_layers

        layers = expand_layers(model, layers)
    check_precision(precision)
    check_objective(objective)
    check_reduction(reduction)
    check_allowed(precision, allow_low_precision)
    variant = {"objective": objective, "reduction": reduction}
    from .._limits import check_bound

    check_bound("size", int(images.size), "size")
    check_bound("num_images", len(images.files), "the number of images")
    check_bound("seed", seed, "seed")
    check_bound("batch_size", settings.get("batch_size"), "batch_size")
    fp = fingerprint(info, images, model=model, seed=seed, model_kwargs=model_kwargs, conv_backend=conv_backend,
                     prepare=prepare, layer=list(layers) if layers is not None else None, precision=precision,
                     **variant)
    options = dict(batch_size=settings.pop("batch_size"), prepare=prepare, conv_backend=conv_backend,
                   precision=precision, allow_low_precision=allow_low_precision, progress=settings.pop("progress"),
                   **variant)
    label = label_with_variant(settings.pop("label") or info.name, **variant)  # every figure names a non-paper one
    return _ErfRun(model, images, Path(out_dir), info, list(layers) if layers is not None else [FINAL], layers, fp,
                   Dist(), resolve_device(device), options, thresholds=list(settings.pop("thresholds")),
                   label=label, **settings)


def _open_state(run: _ErfRun, resume, overwrite) -> dict | None:
    """The protocol's answer for the folder: the finished record (returned as it is), or the saved sums to continue
    (``run.base``: an interrupted run's, or a finished run's that grows, :mod:`erftools.erf.grow`) and a new
    checkpoint generation written by rank 0 (then the old record removed)."""
    grows = functools.partial(can_grow, fingerprint=run.fingerprint, images=run.images, keys=FINGERPRINT_KEYS)
    folder = _runfolder.RunFolder(run.out, ERF_RUN, run.fingerprint, resume=resume, overwrite=overwrite, grows=grows)
    state, existing = folder.decide(None if overwrite else checkpoint.saved_fingerprint(run.ckdir))
    if state == _runfolder.FINISHED:
        log.warning("%s already holds the finished run of these settings; nothing to compute", run.out)
        return existing
    run.base, run.generation = {t: ErfAccumulator() for t in run.targets}, 0
    if state == _runfolder.RESUME:
        run.base, run.generation = checkpoint.load_checkpoint(run.ckdir, run.size, run.targets, run.images.files)
        run.resumed = True
    elif state == _runfolder.GROW:
        run.base, run.resumed = finished_sums(run.out, existing, run.targets), True
        if run.dist.rank == 0:
            log.info("growing the finished run of %d images in %s to %d images: the %d done are kept",
                     existing["num_images"], run.out, len(run.images.files), existing["num_images"])
    run.dist.barrier()  # everyone has read the checkpoint before rank 0 rewrites it
    if run.dist.rank == 0:
        if overwrite:
            shutil.rmtree(run.ckdir, ignore_errors=True)
            for name in (ERF_RECORD, ERF_MATRIX, ERF_FIGURE):
                (run.out / name).unlink(missing_ok=True)
            shutil.rmtree(run.out / LAYER_DIR, ignore_errors=True)
        checkpoint.start(run.ckdir, run.fingerprint, run.base, run.generation + 1)
        run.wrote_checkpoint = True
        if existing is not None:  # the sums to continue from are on disk; the old record must not describe new files
            (run.out / ERF_RECORD).unlink(missing_ok=True)
    run.generation += 1
    run.dist.barrier()
    return None


def _save_batch(run: _ErfRun, path: Path, accs: dict) -> None:
    """After every batch: this process's sums to its rank file; then the caller's ``on_batch``."""
    checkpoint.save_state(path, accs, run.generation)
    if run.on_batch is not None:
        run.on_batch(accs[run.targets[0]])


def _compute_share(run: _ErfRun) -> tuple[dict, ErfMeta]:
    """This process's share of the images not yet done, accumulated with a checkpoint after every batch."""
    rank, world = run.dist.rank, run.dist.world
    first = run.base[run.targets[0]]
    done = set(first.processed) | {s["file"] for s in first.skipped}
    remaining = [f for f in run.images.files if f not in done]
    if run.resumed and rank == 0:
        log.info("resuming: %d of %d images done, %d to go", len(run.images.files) - len(remaining),
                    len(run.images.files), len(remaining))
    opts = dict(run.options)
    return accumulate(run.model, run.images.subset(remaining[rank::world]), run.layers,
                      batch_size=opts.pop("batch_size"), device=run.device, progress=opts.pop("progress") and rank == 0,
                      on_batch=functools.partial(_save_batch, run, run.ckdir / f"rank{rank}.npz"),
                      progress_desc=f"ERF {run.info.name}" + (f" (rank 0 of {world})" if world > 1 else ""), **opts)


def _combine(run: _ErfRun, local: dict, meta: ErfMeta) -> tuple[dict, list] | None:
    """All-reduce the sums and gather the rest on rank 0: ``({target: accumulator with the saved part}, parts)``
    there, None on the other ranks."""
    from ..ops import backend_report

    totals = {t: run.dist.sum_array(local[t].total if local[t].total is not None else np.zeros(run.size))
              for t in run.targets}
    parts = run.dist.gather({"processed": {t: local[t].processed for t in run.targets},
                             "skipped": {t: local[t].skipped for t in run.targets},
                             "count": {t: local[t].count for t in run.targets},
                             "compute_s": {t: local[t].compute_s for t in run.targets},
                             "meta": meta, "rss": _peak_rss_bytes(), "converted": list(run.images.converted),
                             "backends": backend_report()})
    if run.dist.rank != 0:
        return None
    order = {f: i for i, f in enumerate(run.images.files)}
    accs = {}
    for t in run.targets:
        acc = ErfAccumulator(totals[t] if any(p["count"][t] for p in parts) else None, 0, [], [])
        for p in parts:
            acc.count += p["count"][t]
            acc.compute_s += p["compute_s"][t]
            acc.processed += p["processed"][t]
            acc.skipped += p["skipped"][t]
        acc.merge(run.base[t])
        acc.processed.sort(key=lambda f: order.get(f, len(order)))
        acc.skipped.sort(key=lambda s: order.get(s["file"], len(order)))
        accs[t] = acc
    return accs, parts


def _layer_entry(run: _ErfRun, t: str, acc: ErfAccumulator, m0: ErfMeta, theoretical: dict | None) -> LayerEntry:
    """One target's mean matrix written (with its figure) and its record entry."""
    from .._io import ErftoolsError

    if acc.total is None:
        raise ErftoolsError(f"no image gave a finite contribution map for {t}; nothing to average")
    matrix, size = acc.mean(), run.size
    fshape = m0.feature_shapes.get(t)
    stem = None if t == FINAL else layer_file_stem(t)
    matrix_file = ERF_MATRIX if t == FINAL else f"{LAYER_DIR}/{stem}.npy"
    figure = (ERF_FIGURE if t == FINAL else f"{LAYER_DIR}/{stem}.png") if run.plot else None
    entry = LayerEntry(
        layer=None if t == FINAL else t, target=m0.targets.get(t), feature_shape=list(fshape) if fshape else None,
        central_point=[fshape[2] // 2, fshape[3] // 2] if fshape and len(fshape) == 4 else None,
        num_images=acc.count, num_nan=acc.num_nan,
        area_ratios=[r.to_dict() for r in area_ratios(matrix, run.thresholds)],
        radial_profile=radial_profile(matrix), statistics=_statistics(matrix, run.thresholds, theoretical),
        matrix_stats={"max": float(matrix.max()), "min": float(matrix.min()),
                      "sum": float(matrix.sum(dtype=np.float64)), "centre": float(matrix[size[0] // 2, size[1] // 2])},
        matrix=matrix_file, figure=figure)
    save_npy(run.out / matrix_file, matrix)
    if run.plot:
        from .plots import plot_erf

        plot_erf(matrix, title=_figure_title(run) + ("" if t == FINAL else f" - {t}"), thresholds=run.thresholds,
                 path=run.out / figure, theoretical=theoretical)
    return entry


def _figure_title(run: _ErfRun) -> str:
    """The label, with ``(random init)`` for random weights unless the label already says so."""
    low = run.label.lower()
    if run.info.weights == "random" and "random" not in low and "untrained" not in low:
        return f"{run.label} (random init)"
    return run.label


def _write_matrices(run: _ErfRun, accs: dict, m0: ErfMeta, theoretical: dict) -> dict:
    """Every target's matrix, figure and entry; the deepest layer is also the run's ``erf.npy`` (what single-matrix
    tools read), and several layers get the growth figure."""
    per_target = {t: _layer_entry(run, t, accs[t], m0, theoretical.get(t)) for t in run.targets}
    main_t = run.targets[-1]
    if main_t != FINAL:
        shutil.copyfile(run.out / per_target[main_t].matrix, run.out / ERF_MATRIX)
        if run.plot:
            shutil.copyfile(run.out / per_target[main_t].figure, run.out / ERF_FIGURE)
        if run.plot and len(run.targets) > 1:
            from .plots import plot_layer_growth

            plot_layer_growth({run.label: [(t, [AreaRatio(**r) for r in per_target[t].area_ratios])
                                           for t in run.targets]}, thresholds=run.thresholds,
                              path=run.out / GROWTH_FIGURE)
    return per_target


def _timings(run: _ErfRun, metas: list, parts: list, acc: ErfAccumulator) -> ErfTimings:
    """The run's timings: this session's wall and compute time (the slowest process), loading, throughput; and the
    whole run's computation (every session and process: ``acc.compute_s``, unknown for older checkpoints)."""
    compute_s = max(m.timings["compute_s"] for m in metas)
    n_now = sum(m.timings["images_computed"] for m in metas)
    wall = time.perf_counter() - run.t_start
    rss = [p["rss"] for p in parts if p["rss"]]
    cuda_peaks = [m.timings.get("cuda_peak_bytes") for m in metas if m.timings.get("cuda_peak_bytes")]
    return ErfTimings(wall_s=round(wall, 3), compute_s=round(compute_s, 3),
                      prepare_s=max(m.timings["prepare_s"] for m in metas),
                      load_s=round(sum(m.timings["load_s"] for m in metas), 3), images_computed_this_session=n_now,
                      seconds_per_image=round(compute_s * run.dist.world / n_now, 4) if n_now else None,
                      images_per_second=round(n_now / wall, 4) if n_now and wall > 0 else None,
                      peak_rss_bytes=max(rss) if rss else None, cuda_peak_bytes=max(cuda_peaks) if cuda_peaks else None,
                      run_compute_s=round(acc.compute_s, 3) if math.isfinite(acc.compute_s) else None,
                      run_seconds_per_image=(round(acc.compute_s / acc.count, 4)
                                             if acc.count and math.isfinite(acc.compute_s) else None))


def _record(run: _ErfRun, accs: dict, per_target: dict, parts: list, m0: ErfMeta, timings: ErfTimings):
    """The typed record of the finished run (``erf.json``)."""
    main_t = run.targets[-1]
    main, acc = per_target[main_t], accs[main_t]
    order = {f: i for i, f in enumerate(run.images.files)}
    several = run.layers is not None
    return new_record(
        "erf", label=run.label, model=run.info.to_dict(), images=run.images.to_dict(), size=list(run.size),
        num_images=acc.count, num_skipped=len(acc.skipped), num_nan=acc.num_nan, skipped=acc.skipped,
        converted=sorted((c for p in parts for c in p["converted"]), key=lambda c: order.get(c["file"], len(order))),
        processed=acc.processed, thresholds=run.thresholds, area_ratios=main.area_ratios,
        radial_profile=main.radial_profile, statistics=main.statistics, stored_downsample=1,
        matrix_stats=main.matrix_stats,
        target={"adapter": main.target, "layer": main.layer,
                "description": m0.target_description if main_t == FINAL else f"output of {main_t}",
                "feature_shape": main.feature_shape, "central_point": main.central_point},
        layers=[per_target[t].to_dict() for t in run.targets] if several else None,
        growth_figure=GROWTH_FIGURE if several and len(run.targets) > 1 and run.plot else None,
        prepared=m0.prepared,
        conv_backends_report=[p["backends"] for p in parts],  # per process: what ran, first-use self-checks
        precision=m0.precision, precision_requested=m0.precision_requested, precision_note=m0.precision_note,
        objective=m0.objective, reduction=m0.reduction,
        batch_size=m0.batch_size, device=_device_info(run.device), world_size=run.dist.world, resumed=run.resumed,
        timings=timings.to_dict(), fingerprint=run.fingerprint,
        files={"matrix": ERF_MATRIX, "figure": ERF_FIGURE if run.plot else None}).update(run.extra or {})


def _finish(run: _ErfRun, record) -> dict:
    """Write the record (``complete: false`` until every file is in place, then true, last) and drop the
    checkpoint."""
    write_record(run.out / ERF_RECORD, record)
    record.complete = True
    data = write_record(run.out / ERF_RECORD, record)
    shutil.rmtree(run.ckdir, ignore_errors=True)
    return data


def _run_steps(run: _ErfRun, resume, overwrite) -> dict:
    """The run inside the folder's lock: decide, compute this share, combine, write (rank 0), share the record."""
    from ..ops import reset_backend_report

    reset_backend_report()
    finished = _open_state(run, resume, overwrite)
    if finished is not None:
        return finished
    # the theoretical receptive fields, traced on the model as built (before the preparation changes it), only
    # when there is something to compute
    theoretical = _theoretical(run.model, run.targets) if run.dist.rank == 0 else {}
    local, meta = _compute_share(run)
    combined = _combine(run, local, meta)
    if combined is None:
        return _runfolder.share(run.dist, None)
    accs, parts = combined
    metas = [p["meta"] for p in parts]
    m0 = next((m for m in metas if any(m.feature_shapes.values())), metas[0])
    per_target = _write_matrices(run, accs, m0, theoretical)
    record = _record(run, accs, per_target, parts, m0, _timings(run, metas, parts, accs[run.targets[0]]))
    return _runfolder.share(run.dist, _finish(run, record))


def _clean_up(run: _ErfRun) -> None:
    """After a failure: leave no 'interrupted run' that holds nothing (a run that failed before its first batch)."""
    if run.wrote_checkpoint and checkpoint.nothing_computed(run.ckdir):
        shutil.rmtree(run.ckdir, ignore_errors=True)


def run_erf(model: torch.nn.Module, images, out_dir: str | os.PathLike, *, batch_size: int | None = None,
            device: str | torch.device | None = None, resume: bool | None = None, overwrite: bool = False,
            prepare: bool = True, conv_backend: str | None = None,
            thresholds: Iterable[float] = DEFAULT_THRESHOLDS, label: str | None = None, extra: dict | None = None,
            progress: bool = True, plot: bool = True, seed: int | None = None, model_kwargs: dict | None = None,
            layers: str | Iterable[str] | None = None, precision: str = "fp32", allow_low_precision: bool = False,
            on_batch: Callable[[ErfAccumulator], None] | None = None, objective: str = "paper",
            reduction: str = "relu") -> dict:
    """Compute the ERF of ``model`` over ``images`` (an :class:`erftools.images.ImageList`) and write the run folder.

    Returns the record (``erf.json``) on every process. ``seed`` and ``model_kwargs`` (how the model was made) are
    part of the resume fingerprint. ``layers``: module names (or a family shortcut such as ``"stages"``, see
    :func:`erftools.erf.expand_layers`) whose outputs are the targets instead of the final feature map; all share one
    forward pass per batch, each gets its own matrix (``layers/<name>.npy``), statistics and figure, the deepest is
    also ``erf.npy``, and ``erf_growth.png`` shows the area ratios against depth. Every matrix gets
    :func:`erftools.erf.erf_statistics` (Gaussian fit, radii, centre of mass, theoretical receptive field) in the
    record. ``precision``: ``fp32`` (default, the paper's), ``tf32`` or ``bf16`` (see
    :func:`erftools.erf.compute.accumulate_erf` and docs/erf.md, "Precision"); part of the resume fingerprint, as
    are ``objective`` and ``reduction`` (:mod:`erftools.erf.objectives`; default: the paper's; recorded as the
    record's ``objective`` / ``reduction``; a non-paper variant is named in the label).
    While the run writes ``out_dir`` it holds the folder's lock
    (:mod:`erftools._lock`): a second run into the same folder is refused. ``on_batch`` is called after each
    checkpoint (tests use it to simulate an interruption).
    """
    run = _plan(model, images, out_dir, layers=layers, precision=precision, allow_low_precision=allow_low_precision,
                seed=seed, model_kwargs=model_kwargs, conv_backend=conv_backend, prepare=prepare, device=device,
                batch_size=batch_size, progress=progress, thresholds=thresholds, label=label, plot=plot,
                extra=extra, on_batch=on_batch, objective=objective, reduction=reduction)
    with _runfolder.held(run.out, run.dist, run.device, "ERF run", on_failure=functools.partial(_clean_up, run)):
        return _run_steps(run, resume, overwrite)


def run_erf_with_baseline(model: torch.nn.Module, images, out_dir: str | os.PathLike, *, seed: int = 0,
                          label: str | None = None, extra: dict | None = None, model_kwargs: dict | None = None,
                          **kwargs) -> dict:
    """:func:`run_erf`, then the untrained baseline: the same architecture with seeded random weights
    (:func:`erftools.erf.random_baseline`, ``seed``) on the same images, in ``out_dir/baseline`` (its record has
    ``baseline_of: ".."``), summarised in the main record (:func:`attach_baseline`, by rank 0). Returns the main
    record; the other arguments are :func:`run_erf`'s."""
    from ..models import get_model_info
    from .baseline import random_baseline

    record = run_erf(model, images, out_dir, label=label, extra=extra, seed=seed, model_kwargs=model_kwargs,
                     **kwargs)
    info = get_model_info(model)
    base_model = random_baseline(info.name, seed, **(model_kwargs or {}))
    base_rec = run_erf(base_model, images, Path(out_dir) / BASELINE_DIR,
                       label=f"{label or info.name} (untrained, seed {seed})",
                       extra=dict(extra or {}, baseline_of=".."), seed=seed, model_kwargs=model_kwargs, **kwargs)
    return attach_baseline(out_dir, base_rec) if Dist().rank == 0 else record

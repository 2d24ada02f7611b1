"""A complete, resumable and distributable ERF run that writes a run folder (``erf.npy``, ``erf.json``, ``erf.png``).

Checkpoints
    After every batch each process writes its running sum and the names of the images it has processed (and
    skipped) to ``OUT/.erf_checkpoint/rank<R>.npz`` (atomically). A run that is interrupted (Ctrl-C, a crash, a
    killed job) loses at most the batch in flight. Running the same command again loads the checkpoint and
    continues with the images not yet done; it refuses a checkpoint whose fingerprint (:func:`fingerprint`: the
    network's tensors, seed, model arguments, images, size, normalisation, dtype, backend, layer) differs.

Resume model (the same for ``erftools erf`` and ``erftools shape-bias``)
    * no flag: an interrupted run with the same settings is continued; a finished run with the same settings is
      returned as it is; a run with other settings (interrupted or finished) is refused, naming the differences;
    * ``overwrite=True`` (``--overwrite``): whatever the folder holds is discarded and the run starts again;
    * ``resume=True`` (``--resume``): as without a flag, but there must be a run to continue.
    The sums are float64, so the resumed result equals the uninterrupted one (to float rounding of the last bit).
    On resume the saved sums are first consolidated into ``base.npz`` under a new *generation* number; rank files
    of an older generation are ignored (they are already in the base), so a crash at any moment never counts an
    image twice, and a run may be resumed with a different number of processes.

Several processes
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised (gloo on CPU, NCCL on CUDA, one GPU per
    local rank), the remaining images are split by rank (``files[rank::world]``), and the sums and counts are
    all-reduced at the end; only rank 0 writes the result. The matrix equals the single-process one.

The finished folder is described in ``docs/erf.md`` (schema 1); ``"complete": true`` is written last.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .._dist import Dist
from .._io import ErftoolsError, atomic_path, save_npy, sha256_strings, write_json
from ..results.records import ERF_CHECKPOINT, ERF_FIGURE, ERF_MATRIX, ERF_RECORD, base_record
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, radial_profile
from .compute import ErfAccumulator, accumulate_erf, accumulate_erfs, resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ERF_CHECKPOINT
FINGERPRINT_KEYS = ("model", "arch", "weights", "weights_sha256", "parameters_sha256", "seed", "model_kwargs",
                    "images_sha256", "images_root", "images_files_sha256", "size", "mean", "std", "dtype",
                    "conv_backend", "prepare", "layer", "precision")

__all__ = ["run_erf", "load_matrix", "read_run", "CHECKPOINT_DIR", "fingerprint"]


# ---------------------------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)
# ---------------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------
def parameters_sha256(model: torch.nn.Module) -> str:
    """A hash of every tensor of the model's state dict (names, shapes, dtypes and values).

    It tells two networks apart whatever made them: another random seed, other constructor arguments, another
    checkpoint, a fine-tuned copy.
    """
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode("utf-8"))
        if t.numel():
            h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _param_dtype(model: torch.nn.Module) -> str | None:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).replace("torch.", "")
    return None


def fingerprint(info, images, *, model: torch.nn.Module | None = None, seed: int | None = None,
                model_kwargs: dict | None = None, conv_backend: str | None = None, prepare: bool = True,
                layer: str | list | None = None, precision: str = "fp32") -> dict:
    """Everything that changes the matrix, which must not change between an interrupted run and its resumption.

    The network itself is identified by the hash of its tensors (``parameters_sha256``): it differs for another
    random seed, other model arguments or other weights even where the names agree. The images by their list,
    folder and file sizes/modification times; the preprocessing by size, mean and std; the numerics by the dtype
    of the parameters, the convolution backend and whether the model was prepared; the target by its layer.
    """
    from ..ops._dispatch import ENV_VAR

    stats = []
    for f in images.files:
        try:
            st = (Path(images.root) / f).stat()
            stats.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            stats.append(f"{f}|missing")
    return {"model": info.name, "arch": info.arch, "weights": info.weights, "weights_sha256": info.weights_sha256,
            "parameters_sha256": parameters_sha256(model) if model is not None else None,
            "seed": seed, "model_kwargs": dict(model_kwargs or {}),
            "images_sha256": images.sha256, "images_root": str(images.root),
            "images_files_sha256": sha256_strings(stats),
            "size": int(images.size), "mean": [float(v) for v in images.mean],
            "std": [float(v) for v in images.std],
            "dtype": _param_dtype(model) if model is not None else None,
            "conv_backend": conv_backend or os.environ.get(ENV_VAR) or "auto", "prepare": bool(prepare),
            "layer": layer, "precision": precision}


FINAL = "final"  # the target name of the final feature map in checkpoints and records
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


def _save_state(path: Path, accs: dict, generation: int) -> None:
    """One atomic file per process and batch with every target's running sum (so the targets never disagree)."""
    targets = list(accs)
    arrays = {f"total_{i}": (accs[t].total if accs[t].total is not None else np.zeros((0, 0)))
              for i, t in enumerate(targets)}
    names = json.dumps({"targets": targets, "processed": [accs[t].processed for t in targets],
                        "skipped": [accs[t].skipped for t in targets]})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, counts=np.array([accs[t].count for t in targets], dtype=np.int64),
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
            generation = int(z["generation"])
            totals = [z[f"total_{i}"] for i in range(len(saved_targets))]
            processed = [list(p) for p in names["processed"]]
            skipped = [list(p) for p in names["skipped"]]
    except Exception as exc:
        raise _bad_checkpoint(path, f"is unreadable ({type(exc).__name__}: {exc})") from exc
    if targets is not None and saved_targets != list(targets):
        raise _bad_checkpoint(path, f"holds the targets {saved_targets}, not this run's {list(targets)}")
    out = {}
    for t, total, count, proc, skip in zip(saved_targets, totals, counts, processed, skipped):
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
        out[t] = ErfAccumulator(total if total.size else None, count, proc, skip)
    if len({tuple(sorted(set(a.processed) | {s["file"] for s in a.skipped})) for a in out.values()}) > 1:
        raise _bad_checkpoint(path, "is inconsistent (its targets cover different images)")
    return out, generation


def _load_checkpoint(ckdir: Path, size: tuple[int, int] | None = None,
                     targets: list | None = None) -> tuple[dict, int]:
    """The consolidated state: base + every rank file of the base's generation, each validated."""
    accs, gen = {t: ErfAccumulator() for t in (targets or [])}, 0
    base = ckdir / "base.npz"
    if base.is_file():
        accs, gen = _load_state(base, size, targets)
        targets = list(accs)
    for f in sorted(ckdir.glob("rank*.npz")):
        part, g = _load_state(f, size, targets)
        if g == gen:
            for t, a in part.items():
                accs.setdefault(t, ErfAccumulator()).merge(a)
    for t, acc in accs.items():
        seen = set()
        for name in acc.processed:
            if name in seen:
                raise _bad_checkpoint(ckdir / "base.npz", f"counts the image {name} twice")
            seen.add(name)
    return accs, gen


def _check_fingerprint(ckdir: Path, fp: dict) -> None:
    meta = ckdir / "meta.json"
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]
    except Exception as exc:
        raise ErftoolsError(f"{meta} is missing or unreadable, so the interrupted run in {ckdir.parent} cannot be "
                            "continued; start again with overwrite=True") \
            from exc
    diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != fp.get(k)]
    if diff:
        details = "; ".join(f"{k}: checkpoint {_short(saved.get(k))}, now {_short(fp.get(k))}" for k in diff)
        raise ErftoolsError(
            f"refusing to resume: the interrupted run in {ckdir.parent} used different settings ({details}). Run "
            "with the same model, weights, seed, images, size, dtype, backend and layer, or choose another output "
            "folder, or pass overwrite=True to discard the "
            "interrupted run")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------------------------
# reading results
# ---------------------------------------------------------------------------------------------------------------
def load_matrix(path: str | os.PathLike, layer: str | None = None) -> tuple[np.ndarray, dict | None]:
    """An ERF matrix from an ``.npy`` file (erftools or the official script), an ``.npz`` archive holding exactly one
    2-D array, or a run folder; with its record (None for a bare file). ``layer``: of a run folder made with
    ``layers``, that layer's matrix (default: ``erf.npy``, the deepest layer)."""
    from .._lock import lock_holder
    from ..results.records import read_json_record as read_record

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
        if layer is not None:
            entries = {e.get("layer"): e for e in record.get("layers") or []}
            if layer not in entries:
                raise ErftoolsError(f"{path} has no ERF of the layer {layer!r}; its layers: "
                                    f"{', '.join(map(str, entries)) or 'none (a final-feature-map run)'}")
            from ..results.records import checked_path

            record = dict(record, area_ratios=entries[layer]["area_ratios"], target=dict(
                record.get("target") or {}, layer=layer), statistics=entries[layer].get("statistics"))
            path = checked_path(path, path / entries[layer]["matrix"])
        else:
            path = path / ERF_MATRIX
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


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
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


def run_erf(model: torch.nn.Module, images, out_dir: str | os.PathLike, *, batch_size: int | None = None,
            device: str | torch.device | None = None, resume: bool | None = None, overwrite: bool = False,
            prepare: bool = True, conv_backend: str | None = None,
            thresholds: Iterable[float] = DEFAULT_THRESHOLDS, label: str | None = None, extra: dict | None = None,
            progress: bool = True, plot: bool = True, seed: int | None = None, model_kwargs: dict | None = None,
            layers: str | Iterable[str] | None = None, precision: str = "fp32", allow_low_precision: bool = False,
            on_batch: Callable[[ErfAccumulator], None] | None = None) -> dict:
    """Compute the ERF of ``model`` over ``images`` (an :class:`erftools.images.ImageList`) and write the run folder.

    Returns the record (``erf.json``) on every process. ``seed`` and ``model_kwargs`` (how the model was made) are
    part of the resume fingerprint. ``layers``: module names (or a family shortcut such as ``"stages"``, see
    :func:`erftools.erf.expand_layers`) whose outputs are the targets instead of the final feature map; all share one
    forward pass per batch, each gets its own matrix (``layers/<name>.npy``), statistics and figure, the deepest is
    also ``erf.npy``, and ``erf_growth.png`` shows the area ratios against depth. Every matrix gets
    :func:`erftools.erf.erf_statistics` (Gaussian fit, radii, centre of mass, theoretical receptive field) in the
    record. ``precision``: ``fp32`` (default, the paper's), ``tf32`` or ``bf16`` (see
    :func:`erftools.erf.compute.accumulate_erf` and docs/erf.md, "Precision"); part of the resume fingerprint.
    While the run writes ``out_dir`` it holds the folder's lock
    (:mod:`erftools._lock`): a second run into the same folder is refused. ``on_batch`` is called after each
    checkpoint (tests use it to simulate an interruption).
    """
    import contextlib

    from .._lock import run_lock
    from ..models import get_model_info

    t_start = time.perf_counter()
    out = Path(out_dir)
    ckdir = out / CHECKPOINT_DIR
    info = get_model_info(model)
    if layers is not None:
        from .layers import expand_layers

        layers = expand_layers(model, layers)
    targets = list(layers) if layers is not None else [FINAL]
    from .compute import _check_allowed, check_precision

    check_precision(precision)
    _check_allowed(precision, allow_low_precision)  # before anything is computed or written
    fp = fingerprint(info, images, model=model, seed=seed, model_kwargs=model_kwargs, conv_backend=conv_backend,
                     prepare=prepare, layer=list(layers) if layers is not None else None, precision=precision)
    dist = Dist()
    dev = resolve_device(device)
    dist.setup(dev)
    rank, world = dist.rank, dist.world
    wrote_checkpoint = []  # non-empty once this call has (re)written the checkpoint folder

    def body() -> dict:
        from ..ops import backend_report, reset_backend_report

        reset_backend_report()
        # -- what is already there ------------------------------------------------------------------------------
        record_path = out / ERF_RECORD
        existing = None
        if record_path.is_file():
            try:
                existing = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                existing = None
        if resume and overwrite:
            raise ErftoolsError("resume and overwrite contradict each other; choose one")
        if existing and existing.get("complete") and not overwrite and not ckdir.is_dir():
            saved = existing.get("fingerprint") or {}
            diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != fp.get(k)]
            if diff:
                older = [k for k in diff if k not in saved]
                details = "; ".join(f"{k}: finished run {_short(saved.get(k))}, now {_short(fp.get(k))}"
                                    for k in diff if k in saved)
                if older:
                    details += ("; " if details else "") + ("made by an older erftools, whose fingerprint lacks "
                                                            + ", ".join(older))
                raise ErftoolsError(f"{out} already holds a finished ERF run with other settings ({details}); pass "
                                    "overwrite=True to replace it, or choose another output folder")
            log.warning("%s already holds the finished run of these settings; nothing to compute", out)
            return existing
        size = (int(images.size), int(images.size))
        base = {t: ErfAccumulator() for t in targets}
        gen = 0
        resumed = False
        if ckdir.is_dir() and not overwrite:
            _check_fingerprint(ckdir, fp)
            base, gen = _load_checkpoint(ckdir, size, targets)
            resumed = True
        elif resume and not overwrite:
            raise ErftoolsError(f"nothing to resume in {out}: it holds no interrupted ERF run")
        dist.barrier()  # everyone has read the checkpoint before rank 0 rewrites it
        if rank == 0:
            if overwrite:
                if ckdir.is_dir():
                    shutil.rmtree(ckdir)
                for name in (ERF_RECORD, ERF_MATRIX, ERF_FIGURE):
                    (out / name).unlink(missing_ok=True)
                shutil.rmtree(out / LAYER_DIR, ignore_errors=True)
            elif existing is not None:
                record_path.unlink(missing_ok=True)  # an old partial record must not describe the new files
            ckdir.mkdir(parents=True, exist_ok=True)
            write_json(ckdir / "meta.json", {"fingerprint": fp, "generation": gen + 1})
            _save_state(ckdir / "base.npz", base, gen + 1)  # consolidate: older rank files become stale
            for f in ckdir.glob("rank*.npz"):
                f.unlink(missing_ok=True)
            wrote_checkpoint.append(True)
        gen += 1
        dist.barrier()
        # the theoretical receptive fields, traced on the model as built (before the preparation below changes it),
        # only when there is something to compute
        theoretical = _theoretical(model, targets) if rank == 0 else {}

        # -- this process's share ---------------------------------------------------------------------------------
        first = base[targets[0]]
        done = set(first.processed) | {s["file"] for s in first.skipped}
        remaining = [f for f in images.files if f not in done]
        shard = remaining[rank::world]
        if resumed and rank == 0:
            log.warning("resuming: %d of %d images done, %d to go", len(images.files) - len(remaining),
                        len(images.files), len(remaining))
        rank_file = ckdir / f"rank{rank}.npz"
        desc = f"ERF {info.name}" + (f" (rank 0 of {world})" if world > 1 else "")

        if layers is None:
            local = {FINAL: ErfAccumulator()}

            def checkpoint(acc: ErfAccumulator) -> None:
                _save_state(rank_file, local, gen)
                if on_batch is not None:
                    on_batch(acc)

            local[FINAL], meta = accumulate_erf(model, images.subset(shard), batch_size=batch_size, device=dev,
                                                prepare=prepare, conv_backend=conv_backend,
                                                progress=progress and rank == 0, state=local[FINAL],
                                                on_batch=checkpoint, progress_desc=desc, precision=precision,
                                                allow_low_precision=allow_low_precision)
            meta = dict(meta, feature_shapes={FINAL: meta["feature_shape"]},
                        targets={FINAL: meta["target"]})
        else:
            local = {t: ErfAccumulator() for t in targets}

            def checkpoint_all(accs: dict) -> None:
                _save_state(rank_file, accs, gen)
                if on_batch is not None:
                    on_batch(accs[targets[0]])

            local, meta = accumulate_erfs(model, images.subset(shard), targets, batch_size=batch_size, device=dev,
                                          prepare=prepare, conv_backend=conv_backend,
                                          progress=progress and rank == 0, states=local, on_batch=checkpoint_all,
                                          progress_desc=desc, precision=precision,
                                          allow_low_precision=allow_low_precision)

        # -- combine ----------------------------------------------------------------------------------------------
        totals = {}
        for t in targets:
            tot = local[t].total if local[t].total is not None else np.zeros(size, dtype=np.float64)
            totals[t] = dist.sum_array(tot)
        parts = dist.gather({"processed": {t: local[t].processed for t in targets},
                             "skipped": {t: local[t].skipped for t in targets},
                             "count": {t: local[t].count for t in targets},
                             "meta": meta, "rss": _peak_rss_bytes(), "converted": list(images.converted),
                             "backends": backend_report()})
        if rank != 0:
            dist.barrier()
            return dist.broadcast(None)
        order = {f: i for i, f in enumerate(images.files)}
        accs = {}
        for t in targets:
            acc = ErfAccumulator(totals[t] if any(p["count"][t] for p in parts) else None, 0, [], [])
            for p in parts:
                acc.count += p["count"][t]
                acc.processed += p["processed"][t]
                acc.skipped += p["skipped"][t]
            acc.merge(base[t])
            acc.processed.sort(key=lambda f: order.get(f, len(order)))
            acc.skipped.sort(key=lambda s: order.get(s["file"], len(order)))
            accs[t] = acc

        # -- write ------------------------------------------------------------------------------------------------
        thr = list(thresholds)
        metas = [p["meta"] for p in parts]
        m0 = next((m for m in metas if any(m.get("feature_shapes", {}).values())), metas[0])
        per_target = {}
        for t in targets:
            acc = accs[t]
            if acc.total is None:
                raise ErftoolsError(f"no image gave a finite contribution map for {t}; nothing to average")
            matrix = acc.mean()
            fshape = (m0.get("feature_shapes") or {}).get(t)
            entry = {
                "layer": None if t == FINAL else t,
                "target": (m0.get("targets") or {}).get(t),
                "feature_shape": list(fshape) if fshape else None,
                "central_point": [fshape[2] // 2, fshape[3] // 2] if fshape and len(fshape) == 4 else None,
                "num_images": acc.count, "num_nan": acc.num_nan,
                "area_ratios": [r.to_dict() for r in area_ratios(matrix, thr)],
                "radial_profile": radial_profile(matrix),
                "statistics": _statistics(matrix, thr, theoretical.get(t)),
                "matrix_stats": {"max": float(matrix.max()), "min": float(matrix.min()),
                                 "sum": float(matrix.sum(dtype=np.float64)),
                                 "centre": float(matrix[size[0] // 2, size[1] // 2])},
            }
            if t == FINAL:
                entry.update(matrix=ERF_MATRIX, figure=ERF_FIGURE if plot else None)
                save_npy(out / ERF_MATRIX, matrix)
            else:
                stem = layer_file_stem(t)
                entry.update(matrix=f"{LAYER_DIR}/{stem}.npy", figure=f"{LAYER_DIR}/{stem}.png" if plot else None)
                save_npy(out / entry["matrix"], matrix)
            if plot:
                from .plots import plot_erf

                title = (label or info.name) + ("" if t == FINAL else f" - {t}")
                plot_erf(matrix, title=title, thresholds=thr, path=out / entry["figure"],
                         theoretical=theoretical.get(t))
            per_target[t] = entry
        main_t = targets[-1]
        main = per_target[main_t]
        if main_t != FINAL:  # the deepest requested layer is also the run's erf.npy (what single-matrix tools read)
            shutil.copyfile(out / main["matrix"], out / ERF_MATRIX)
            if plot:
                shutil.copyfile(out / main["figure"], out / ERF_FIGURE)
            if plot and len(targets) > 1:
                from .plots import plot_layer_growth

                plot_layer_growth({label or info.name: [(t, [AreaRatio(**r) for r in per_target[t]["area_ratios"]])
                                                        for t in targets]},
                                  thresholds=thr, path=out / GROWTH_FIGURE)
        compute_s = max(m["timings"]["compute_s"] for m in metas)
        n_now = sum(m["timings"]["images_computed"] for m in metas)
        wall = time.perf_counter() - t_start
        rss = [p["rss"] for p in parts if p["rss"]]
        timings = {"wall_s": round(wall, 3), "compute_s": round(compute_s, 3),
                   "prepare_s": max(m["timings"]["prepare_s"] for m in metas),
                   "load_s": round(sum(m["timings"]["load_s"] for m in metas), 3),
                   "images_computed_this_session": n_now,
                   "seconds_per_image": round(compute_s * world / n_now, 4) if n_now else None,
                   "images_per_second": round(n_now / wall, 4) if n_now and wall > 0 else None}
        if rss:
            timings["peak_rss_bytes"] = max(rss)
        cuda_peaks = [m["timings"].get("cuda_peak_bytes") for m in metas if m["timings"].get("cuda_peak_bytes")]
        if cuda_peaks:
            timings["cuda_peak_bytes"] = max(cuda_peaks)
        acc = accs[main_t]
        record = base_record(
            "erf",
            label=label or info.name,
            model=info.to_dict(),
            images=images.to_dict(),
            size=list(size),
            num_images=acc.count,
            num_skipped=len(acc.skipped),
            num_nan=acc.num_nan,
            skipped=acc.skipped,
            converted=sorted((c for p in parts for c in p["converted"]),
                             key=lambda c: order.get(c["file"], len(order))),
            processed=acc.processed,
            thresholds=thr,
            area_ratios=main["area_ratios"],
            radial_profile=main["radial_profile"],
            statistics=main["statistics"],
            stored_downsample=1,
            matrix_stats=main["matrix_stats"],
            target={"adapter": main["target"], "layer": main["layer"],
                    "description": m0.get("target_description") if main_t == FINAL else f"output of {main_t}",
                    "feature_shape": main["feature_shape"], "central_point": main["central_point"]},
            layers=[per_target[t] for t in targets] if layers is not None else None,
            growth_figure=GROWTH_FIGURE if layers is not None and len(targets) > 1 and plot else None,
            prepared=m0["prepared"],
            conv_backends_report=[p["backends"] for p in parts],  # per process: what ran, first-use self-checks
            precision=m0.get("precision", precision),
            precision_requested=m0.get("precision_requested", precision),
            precision_note=m0.get("precision_note"),
            batch_size=m0["batch_size"],
            device=_device_info(dev),
            world_size=world,
            resumed=resumed,
            timings=timings,
            fingerprint=fp,
            files={"matrix": ERF_MATRIX, "figure": ERF_FIGURE if plot else None},
        )
        if extra:
            record.update(extra)
        write_json(record_path, record)  # complete: false until every file is in place
        record["complete"] = True
        write_json(record_path, record)
        shutil.rmtree(ckdir, ignore_errors=True)
        dist.barrier()
        return dist.broadcast(record)

    try:
        with contextlib.ExitStack() as stack:
            if rank == 0:
                stack.enter_context(run_lock(out, what="ERF run"))
            try:
                return body()
            except BaseException:
                if wrote_checkpoint and _nothing_computed(ckdir):
                    shutil.rmtree(ckdir, ignore_errors=True)  # leave no 'interrupted run' that holds nothing
                raise
    finally:
        dist.close()


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
    write_json(out / ERF_RECORD, record)
    return record


def _nothing_computed(ckdir: Path) -> bool:
    """Whether a checkpoint folder holds no processed image (a run that failed before its first batch)."""
    if not ckdir.is_dir():
        return False
    try:
        accs, _ = _load_checkpoint(ckdir)
    except ErftoolsError:
        return False
    return all(a.count == 0 and not a.processed for a in accs.values())

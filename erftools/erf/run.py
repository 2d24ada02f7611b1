"""A complete, resumable and distributable ERF run that writes a run folder (``erf.npy``, ``erf.json``, ``erf.png``).

Checkpoints
    After every batch each process writes its running sum and the names of the images it has processed (and
    skipped) to ``OUT/.erf_checkpoint/rank<R>.npz`` (atomically). A run that is interrupted (Ctrl-C, a crash, a
    killed job) loses at most the batch in flight; ``resume=True`` (``--resume``) loads the checkpoint, refuses it
    if the model, weights, image list, size or normalisation differ, and continues with the images not yet done.
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
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .._io import ErftoolsError, atomic_path, save_npy, write_json
from ..results import ERF_FIGURE, ERF_MATRIX, ERF_RECORD, base_record
from .analysis import DEFAULT_THRESHOLDS, area_ratios, radial_profile
from .compute import ErfAccumulator, accumulate_erf, resolve_device

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ".erf_checkpoint"
FINGERPRINT_KEYS = ("model", "arch", "weights", "weights_sha256", "images_sha256", "size", "mean", "std")

__all__ = ["run_erf", "load_matrix", "read_run", "CHECKPOINT_DIR", "fingerprint"]


# ---------------------------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)
# ---------------------------------------------------------------------------------------------------------------
class _Dist:
    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.created = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
            self.rank = int(os.environ.get("RANK", "0") or 0)
        self.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    def setup(self, device: torch.device) -> None:
        if not self.active:
            return
        if not self.dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            self.dist.init_process_group(backend=backend)
            self.created = True
            self.rank, self.world = self.dist.get_rank(), self.dist.get_world_size()
        self.device = device if self.dist.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        if not self.active:
            return a
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        self.dist.all_reduce(t)
        return t.cpu().numpy()

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if not self.active:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.created:
            self.dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------
def fingerprint(info, images) -> dict:
    """What must not change between an interrupted run and its resumption."""
    return {"model": info.name, "arch": info.arch, "weights": info.weights, "weights_sha256": info.weights_sha256,
            "images_sha256": images.sha256, "size": int(images.size), "mean": [float(v) for v in images.mean],
            "std": [float(v) for v in images.std]}


def _save_state(path: Path, acc: ErfAccumulator, generation: int) -> None:
    total = acc.total if acc.total is not None else np.zeros((0, 0))
    names = json.dumps({"processed": acc.processed, "skipped": acc.skipped})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, total=total, count=np.int64(acc.count), generation=np.int64(generation),
                     names=np.array(names))


def _load_state(path: Path) -> tuple[ErfAccumulator, int]:
    try:
        with np.load(path, allow_pickle=False) as z:
            total = z["total"]
            names = json.loads(str(z["names"]))
            acc = ErfAccumulator(total if total.size else None, int(z["count"]), list(names["processed"]),
                                 list(names["skipped"]))
            return acc, int(z["generation"])
    except Exception as exc:
        raise ErftoolsError(f"the checkpoint file {path} is unreadable ({exc}); delete {path.parent} and start "
                            "again without --resume") from exc


def _load_checkpoint(ckdir: Path) -> tuple[ErfAccumulator, int]:
    """The consolidated state: base + every rank file of the base's generation."""
    acc, gen = ErfAccumulator(), 0
    base = ckdir / "base.npz"
    if base.is_file():
        acc, gen = _load_state(base)
    for f in sorted(ckdir.glob("rank*.npz")):
        part, g = _load_state(f)
        if g == gen:
            acc.merge(part)
    return acc, gen


def _check_fingerprint(ckdir: Path, fp: dict) -> None:
    meta = ckdir / "meta.json"
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]
    except Exception as exc:
        raise ErftoolsError(f"{meta} is missing or unreadable; delete {ckdir} and start again without --resume") \
            from exc
    diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != fp.get(k)]
    if diff:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {fp.get(k)!r}" for k in diff)
        raise ErftoolsError(
            f"refusing to resume: the interrupted run in {ckdir.parent} used different settings ({details}). Run "
            "with the same --model/--weights/--images/--num-images/--sampler/--seed/--size, or choose another "
            "--out, or pass --overwrite to discard the interrupted run")


# ---------------------------------------------------------------------------------------------------------------
# reading results
# ---------------------------------------------------------------------------------------------------------------
def load_matrix(path: str | os.PathLike) -> tuple[np.ndarray, dict | None]:
    """An ERF matrix from an ``.npy`` file (erftools or the official script) or a run folder; with its record."""
    from ..results import read_record

    path = Path(path)
    record = None
    if path.is_dir():
        record = read_record(path, "erf")
        if not record.get("complete"):
            raise ErftoolsError(f"{path} holds an unfinished ERF run (resume it with --resume)")
        path = path / ERF_MATRIX
    elif path.name == ERF_MATRIX and (path.parent / ERF_RECORD).is_file():
        try:
            record = read_record(path.parent, "erf")
        except ErftoolsError:
            record = None
    if not path.is_file():
        raise ErftoolsError(f"{path} does not exist")
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ErftoolsError(f"{path} is not a readable .npy array ({exc})") from exc
    m = np.squeeze(m)
    if m.ndim != 2:
        raise ErftoolsError(f"{path} holds an array of shape {m.shape}; an ERF matrix is 2-D")
    return m, record


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
            device: str | torch.device | None = None, resume: bool = False, overwrite: bool = False,
            prepare: bool = True, conv_backend: str | None = None,
            thresholds: Iterable[float] = DEFAULT_THRESHOLDS, label: str | None = None, extra: dict | None = None,
            progress: bool = True, plot: bool = True,
            on_batch: Callable[[ErfAccumulator], None] | None = None) -> dict:
    """Compute the ERF of ``model`` over ``images`` (an :class:`erftools.images.ImageList`) and write the run folder.

    Returns the record (``erf.json``) on every process. ``on_batch`` is called after each checkpoint (tests use it
    to simulate an interruption).
    """
    from ..models import get_model_info

    t_start = time.perf_counter()
    out = Path(out_dir)
    ckdir = out / CHECKPOINT_DIR
    info = get_model_info(model)
    fp = fingerprint(info, images)
    dist = _Dist()
    dev = resolve_device(device)
    dist.setup(dev)
    rank, world = dist.rank, dist.world
    try:
        # -- what is already there ------------------------------------------------------------------------------
        record_path = out / ERF_RECORD
        existing = None
        if record_path.is_file():
            try:
                existing = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                existing = None
        if ckdir.is_dir() and not resume and not overwrite:
            raise ErftoolsError(f"{out} holds an interrupted ERF run: pass --resume to continue it, or --overwrite "
                                "to start again")
        if existing and existing.get("complete") and not overwrite and not ckdir.is_dir():
            if resume:
                saved = existing.get("fingerprint") or {}
                diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != fp.get(k)]
                if diff:
                    raise ErftoolsError(f"refusing to resume: {out} holds a finished run with different settings "
                                        f"({', '.join(diff)}); choose another --out or pass --overwrite")
                log.warning("%s is already complete; nothing to resume", out)
                return existing
            raise ErftoolsError(f"{out} already holds a finished ERF run; pass --overwrite to replace it or "
                                "choose another --out")
        base = ErfAccumulator()
        gen = 0
        resumed = False
        if resume and ckdir.is_dir():
            _check_fingerprint(ckdir, fp)
            base, gen = _load_checkpoint(ckdir)
            resumed = True
        dist.barrier()  # everyone has read the checkpoint before rank 0 rewrites it
        if rank == 0:
            if overwrite:
                if ckdir.is_dir():
                    shutil.rmtree(ckdir)
                for name in (ERF_RECORD, ERF_MATRIX, ERF_FIGURE):
                    (out / name).unlink(missing_ok=True)
            elif existing is not None:
                record_path.unlink(missing_ok=True)  # an old partial record must not describe the new files
            ckdir.mkdir(parents=True, exist_ok=True)
            write_json(ckdir / "meta.json", {"fingerprint": fp, "generation": gen + 1})
            _save_state(ckdir / "base.npz", base, gen + 1)  # consolidate: older rank files become stale
            for f in ckdir.glob("rank*.npz"):
                f.unlink(missing_ok=True)
        gen += 1
        dist.barrier()

        # -- this process's share ---------------------------------------------------------------------------------
        done = set(base.processed) | {s["file"] for s in base.skipped}
        remaining = [f for f in images.files if f not in done]
        shard = remaining[rank::world]
        if resumed and rank == 0:
            log.warning("resuming: %d of %d images done, %d to go", len(images.files) - len(remaining),
                        len(images.files), len(remaining))
        local = ErfAccumulator()
        rank_file = ckdir / f"rank{rank}.npz"

        def checkpoint(acc: ErfAccumulator) -> None:
            _save_state(rank_file, acc, gen)
            if on_batch is not None:
                on_batch(acc)

        local, meta = accumulate_erf(model, images.subset(shard), batch_size=batch_size, device=dev,
                                     prepare=prepare, conv_backend=conv_backend, progress=progress and rank == 0,
                                     state=local, on_batch=checkpoint,
                                     progress_desc=f"ERF {info.name}" + (f" (rank 0 of {world})" if world > 1 else ""))

        # -- combine ----------------------------------------------------------------------------------------------
        size = (int(images.size), int(images.size))
        total = local.total if local.total is not None else np.zeros(size, dtype=np.float64)
        total = dist.sum_array(total)
        parts = dist.gather({"processed": local.processed, "skipped": local.skipped, "count": local.count,
                             "meta": meta, "rss": _peak_rss_bytes(),
                             "converted": list(images.converted)})
        if rank != 0:
            dist.barrier()
            return dist.broadcast(None)
        acc = ErfAccumulator(total if any(p["count"] for p in parts) else None, 0, [], [])
        for p in parts:
            acc.count += p["count"]
            acc.processed += p["processed"]
            acc.skipped += p["skipped"]
        acc.merge(base)
        order = {f: i for i, f in enumerate(images.files)}
        acc.processed.sort(key=lambda f: order.get(f, len(order)))
        acc.skipped.sort(key=lambda s: order.get(s["file"], len(order)))
        matrix = acc.mean()

        # -- write ------------------------------------------------------------------------------------------------
        thresholds = list(thresholds)
        ratios = area_ratios(matrix, thresholds)
        prof = radial_profile(matrix)
        save_npy(out / ERF_MATRIX, matrix)
        if plot:
            from .plots import plot_erf

            plot_erf(matrix, title=label or info.name, thresholds=thresholds, path=out / ERF_FIGURE)
        metas = [p["meta"] for p in parts]
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
        m0 = metas[0]
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
            thresholds=thresholds,
            area_ratios=[r.to_dict() for r in ratios],
            radial_profile=prof,
            stored_downsample=1,
            matrix_stats={"max": float(matrix.max()), "min": float(matrix.min()),
                          "sum": float(matrix.sum(dtype=np.float64)),
                          "centre": float(matrix[size[0] // 2, size[1] // 2])},
            target={"adapter": m0["target"], "description": m0.get("target_description"),
                    "feature_shape": list(m0["feature_shape"]) if m0["feature_shape"] else None,
                    "central_point": ([m0["feature_shape"][2] // 2, m0["feature_shape"][3] // 2]
                                      if m0["feature_shape"] else None)},
            prepared=m0["prepared"],
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
    finally:
        dist.close()

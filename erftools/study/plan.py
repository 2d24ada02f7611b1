"""What a study will download and compute, and about how long it takes (``erftools study --dry-run``).

Nothing is downloaded or computed here. Time estimates come from the benchmarks committed in
``reports/benchmarks/`` of a source checkout: ``erf_bench.json`` and ``shape_bias.json`` (measured on a CPU) and
``gpu/gpu_check.json`` (a GPU, once measured). A model without a benchmark of its own is estimated from its family's
(RepLKNet from RepLKNet-31B, ResNets from ResNet-152, Swin from Swin-B); ERF times scale with the number of pixels.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .jobs import Job, check_weights_ids, images_dir, jobs, resolve_weights, results_dir, shard_models, stimuli_dir
from .spec import Study

__all__ = ["Plan", "PlannedRun", "make_plan", "format_plan", "run_status", "benchmark_rates"]

NUM_STIMULI = 1280


@dataclass
class PlannedRun:
    job: Job
    folder: Path
    status: str  # done | interrupted | to compute | blocked
    units: int  # images or stimuli
    estimate_s: float | None
    problem: str | None = None


@dataclass
class Plan:
    study: Study
    results: Path
    device: str
    benchmark_note: str
    inputs: list = field(default_factory=list)  # (what, text, ok)
    weights: list = field(default_factory=list)  # (model id, text, ok)
    runs: list = field(default_factory=list)
    not_run: list = field(default_factory=list)  # (model, reason): models without public weights

    @property
    def total_s(self) -> float | None:
        todo = [r for r in self.runs if r.status in ("to compute", "interrupted")]
        if any(r.estimate_s is None for r in todo):
            return None
        return sum(r.estimate_s for r in todo)

    @property
    def ready(self) -> bool:
        return all(ok for _, _, ok in self.inputs) and all(ok for _, _, ok in self.weights)


def shape_bias_ms_per_image(row: dict) -> float | None:
    """A shape-bias benchmark row's milliseconds per stimulus on erftools' default path: ``prepared`` when
    measured, else ``plain`` (rows of an older benchmark), else the old flat ``ms_per_image``."""
    for variant in ("prepared", "plain"):
        if isinstance(row.get(variant), dict) and row[variant].get("ms_per_image"):
            return float(row[variant]["ms_per_image"])
    return row.get("ms_per_image")


def run_status(folder: Path, kind: str) -> str:
    """done (a finished record), interrupted (a checkpoint to continue) or to compute."""
    from ..results import ERF_CHECKPOINT, ERF_RECORD, SB_PARTIAL, SB_RECORD

    record, partial = (ERF_RECORD, ERF_CHECKPOINT) if kind == "erf" else (SB_RECORD, SB_PARTIAL)
    if (folder / partial).exists():
        return "interrupted"
    try:
        if json.loads((folder / record).read_text(encoding="utf-8")).get("complete"):
            return "done"
    except (OSError, ValueError):
        pass
    return "to compute"


# ------------------------------------------------------------------------------------------------- benchmarks
def _benchmarks_dir() -> Path:
    from ..results import source_root

    return source_root() / "reports" / "benchmarks"


def _family_key(name: str) -> str:
    n = name.lower()
    if n.startswith("replknet"):
        return "replknet-31B"
    if "resnet" in n:
        return "resnet-152"
    if "swin" in n:
        return "swin-B"
    return n


def benchmark_rates(device: str) -> tuple[dict, dict, str]:
    """``({model: ERF seconds per image at 1024}, {model: shape-bias seconds per stimulus}, note)`` from the
    committed benchmarks for ``device`` ("cpu" or "cuda")."""
    d = _benchmarks_dir()
    erf, sb = {}, {}
    if device == "cuda":
        try:
            data = json.loads((d / "gpu" / "gpu_check.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, {}, ("no GPU benchmark is committed (reports/benchmarks/gpu/gpu_check.json), so there are no "
                            "time estimates for CUDA")
        parts = data.get("parts") or {}
        for rec in (parts.get("erf") or {}).get("records", []):
            ips = (rec.get("erftools") or {}).get("images_per_second")
            if rec.get("model") and ips:
                erf[rec["model"]] = (1.0 / ips) * (1024 / rec.get("size", 1024)) ** 2
        for rec in (parts.get("shapebias") or {}).get("records", []):
            ips = ((rec.get("precisions") or {}).get("fp32") or {}).get("images_per_second")
            if rec.get("model") and ips:
                sb[rec["model"]] = 1.0 / ips
        gpu = (data.get("env") or {}).get("gpu") or "a GPU"
        return erf, sb, f"estimates from reports/benchmarks/gpu/gpu_check.json (measured on {gpu})"
    note = []
    try:
        data = json.loads((d / "erf_bench.json").read_text(encoding="utf-8"))
        for r in data.get("results", []):
            if r.get("mode") == "erftools" and not r.get("options") and r.get("steady_seconds_per_image"):
                erf[r["model"]] = r["steady_seconds_per_image"] * (1024 / r.get("size", 1024)) ** 2
        meta = data.get("meta", {})
        note.append(f"ERF from erf_bench.json ({meta.get('cpu_count', '?')}-core CPU, {meta.get('threads', '?')} "
                    "threads)")
    except (OSError, ValueError):
        pass
    try:
        data = json.loads((d / "shape_bias.json").read_text(encoding="utf-8"))
        for r in data.get("results", []):
            ms = shape_bias_ms_per_image(r)
            if r.get("model") and ms:
                sb[r["model"]] = ms / 1000.0
        env = data.get("environment", {})
        note.append(f"shape bias from shape_bias.json ({env.get('logical_cpus', '?')}-core CPU)")
    except (OSError, ValueError):
        pass
    if not note:
        return {}, {}, "no committed benchmarks found (reports/benchmarks/ ships with a source checkout)"
    cores = os.cpu_count() or 1
    return erf, sb, "estimates: " + "; ".join(note) + f"; this machine has {cores} cores"


def _device(study: Study, device: str | None) -> str:
    dev = device or study.device
    if dev == "auto":
        try:
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # pragma: no cover
            dev = "cpu"
    return "cuda" if dev.startswith("cuda") else "cpu"


# ------------------------------------------------------------------------------------------------------- plan
def make_plan(study: Study, *, results=None, images=None, stimuli=None, weights_files=None, weights_dir=None,
              shard=None, device: str | None = None, nproc_per_node: int | None = None) -> Plan:
    """The plan of ``study`` on this machine: inputs, weights (and whether they are cached or must be supplied),
    every run with its folder, status and estimated time. Nothing is downloaded or computed."""
    from ..models import is_cached, resolve

    check_weights_ids(study, weights_files)
    root = results_dir(study, results)
    dev = _device(study, device)
    erf_rate, sb_rate, note = benchmark_rates(dev)
    nproc = max(1, int(nproc_per_node or 1))
    plan = Plan(study, root, dev + (f", {nproc} processes per model (torchrun)" if nproc > 1 else ""), note)
    models = shard_models(study, shard)
    runs = jobs(study, models)
    if any(j.kind == "erf" for j in runs):
        p, problem = images_dir(study, images)
        text = problem or (f"{p}" if p else "the bundled photographs (not ImageNet: not comparable to the paper)")
        plan.inputs.append(("ERF images", text, problem is None))
    n_stimuli = NUM_STIMULI
    if any(j.kind == "shape_bias" for j in runs):
        sdir = stimuli_dir(study, stimuli)
        if sdir.is_dir():
            n_stimuli = sum(1 for _ in sdir.rglob("*.png")) or NUM_STIMULI
            plan.inputs.append(("cue-conflict stimuli", f"{sdir} ({n_stimuli} images)", True))
        else:
            plan.inputs.append(("cue-conflict stimuli", f"not found at {sdir}: run `erftools data fetch "
                                                        "cue-conflict` or pass stimuli=DIR", False))
    for m in study.models:
        if m.unpublished:
            plan.not_run.append((m, m.note or "no public weights"))
    for m in models:
        choice = resolve_weights(study, m, weights_files, weights_dir)
        if choice.problem:
            plan.weights.append((m.id, choice.problem, False))
        else:
            text = choice.how
            try:
                entry, _ = resolve(m.name)
            except Exception as exc:  # noqa: BLE001 - an unknown name is reported, not raised, in a plan
                plan.weights.append((m.id, f"model {m.name!r}: {exc}", False))
                continue
            src = entry.weight_source(None if choice.weights == "pretrained" else choice.weights)
            if choice.weights == "random":
                text = "random (seeded), nothing to download"
            elif src is not None and src.downloadable:
                cached = is_cached(entry, src.tag)
                where = src.url or f"Hugging Face hub {src.hf_hub_id}"
                text = f"{src.tag}: {where}" + (" (cached)" if cached else " (will be downloaded)")
            elif src is not None and src.manual:
                plan.weights.append((m.id, f"{src.tag}: only on Google Drive ({src.manual}); download it and "
                                           f"pass weights_files={{'{m.id}': PATH}}", False))
                continue
            plan.weights.append((m.id, text, True))
    for j in runs:
        folder = root / j.folder
        status = run_status(folder, j.kind)
        if j.kind == "erf":
            units = study.erf.num_images
            rate = erf_rate.get(j.model.name) or erf_rate.get(_family_key(j.model.name))
            est = None if rate is None else rate * units * (study.erf.size / 1024) ** 2 / nproc
        else:
            units = n_stimuli
            rate = sb_rate.get(j.model.name) or sb_rate.get(_family_key(j.model.name))
            est = None if rate is None else rate * units / nproc
        plan.runs.append(PlannedRun(j, folder, status, units, est))
    return plan


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def format_plan(plan: Plan) -> str:
    st = plan.study
    out = [f"Study {st.name}: {st.title}", f"  from {st.source}" + (f"; {st.reference}" if st.reference else ""),
           f"  results: {plan.results}", f"  device: {plan.device}; {plan.benchmark_note}", ""]
    if plan.inputs:
        out.append("Inputs:")
        out += [f"  [{'ok' if ok else 'MISSING'}] {what}: {text}" for what, text, ok in plan.inputs]
        out.append("")
    out.append("Weights:")
    out += [f"  [{'ok' if ok else 'MISSING'}] {mid}: {text}" for mid, text, ok in plan.weights]
    out += [f"  [not run] {m.id}: {reason}" for m, reason in plan.not_run]
    out.append("")
    out.append("Runs:")
    w = max([len(r.job.model.id) for r in plan.runs] + [5])
    for r in plan.runs:
        unit = "images" if r.job.kind == "erf" else "stimuli"
        size = f" at {st.erf.size}" if r.job.kind == "erf" else ""
        est = "" if r.status == "done" else f", about {_duration(r.estimate_s)}"
        out.append(f"  {r.job.model.id:<{w}}  {r.job.name:<18} {r.units} {unit}{size}: {r.status}{est}  "
                   f"-> {r.job.folder}")
    total = plan.total_s
    out.append("")
    out.append(f"Estimated compute time: {_duration(total)}" + ("" if total is not None else
                                                                  " (no benchmark for some models)"))
    if not plan.ready:
        out.append("Not ready: supply what is marked MISSING above (the runs of the other models can go ahead with "
                   "skip_missing=True).")
    return "\n".join(out)

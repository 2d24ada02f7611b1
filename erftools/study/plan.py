"""What a study will download and compute, and about how long it takes (``erftools study --dry-run``).

Nothing is downloaded or computed here; the checks are the run's own (:mod:`erftools.study.checks`), so the dry
run refuses what the run would refuse, in the same words. Time estimates come from the benchmarks committed in
``reports/benchmarks/`` of a source checkout: ``erf_bench.json`` and ``shape_bias.json`` (measured on a CPU) and
``gpu/gpu_check.json`` (a GPU, once measured). A model without a benchmark of its own is estimated from its family's
(RepLKNet from RepLKNet-31B, ResNets from ResNet-152, Swin from Swin-B; any other from the median of the benchmarked
models) scaled by forward FLOPs at 224 x 224, counted on the meta device (no memory, about a second a model;
``PlannedRun.scaled_from`` says from which); ERF times scale with the number of pixels.
On a CPU the times are then scaled to this machine by its fp32 GEMM rate measured now (about a second,
:func:`erftools.study.machine.gemm_rate`) against the rate recorded with the benchmark (``shape_bias.json``;
for the ERF ``erf_lower_bound.json``, measured with erftools' RepLKNet-31B ERF on the benchmark's machine, since
``erf_bench.json`` records none). Downloads whose host does not answer within two seconds are marked "to download
(network needed)".
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from .checks import cannot_start, preflight
from .folder import check_folder
from .jobs import Job, check_weights_ids, jobs, results_dir, shard_models
from .machine import gemm_rate
from .spec import Study, StudyError

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
    scaled_from: str | None = None  # the benchmark the estimate was scaled from by FLOPs (None: its own)


@dataclass
class Plan:
    study: Study
    results: Path
    device: str
    benchmark_note: str
    inputs: list = field(default_factory=list)  # (what, text, ok)
    weights: list = field(default_factory=list)  # (model id, text, mark): mark "ok", "MISSING" or NETWORK
    runs: list = field(default_factory=list)
    not_run: list = field(default_factory=list)  # (model, reason): models without public weights
    refusal: str | None = None  # what `erftools study` would refuse to start with (None: it can start)
    scale_note: str = ""  # how the estimates were scaled to this machine

    @property
    def total_s(self) -> float | None:
        todo = [r.estimate_s for r in self.runs if r.status in ("to compute", "interrupted")]
        return None if None in todo else sum(todo)

    @property
    def ready(self) -> bool:
        return self.refusal is None


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


def _flops(name: str, kwargs: dict, cache: dict) -> float | None:
    """Forward FLOPs of ``name`` (with ``kwargs``) at 224 x 224, counted on the meta device (no memory, no weights);
    None when it cannot be built there, and for open_clip models (their text tower and tokenizer are not counted
    here, and a tokenizer may need the network)."""
    from ..models.openclip import is_openclip_name

    key = (name, json.dumps(kwargs, sort_keys=True, default=str))
    if key in cache or is_openclip_name(name):
        return cache.get(key)
    cache[key] = None
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from ..models import create_model

        with torch.device("meta"):
            model = create_model(name, weights="random", **kwargs).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, 3, 224, 224, device="meta"))
        cache[key] = float(counter.get_total_flops()) or None
    except Exception:  # noqa: BLE001 - no estimate rather than no plan
        pass
    return cache[key]


def _rate(name: str, kwargs: dict, table: dict, cache: dict) -> tuple[float | None, str | None]:
    """Seconds per image (stimulus) of ``name``: its own benchmark, else a benchmarked model's scaled by forward
    FLOPs (the family's when there is one, else the median over the benchmarked models), and from which."""
    if name in table and not kwargs:
        return table[name], None
    family = _family_key(name)
    refs = [family] if family in table else sorted(table)
    own = _flops(name, kwargs, cache)
    per_flop = [table[r] / f for r in refs if (f := _flops(r, {}, cache))]
    if own is None or not per_flop:
        return None, None
    return own * statistics.median(per_flop), (family if family in table else "the benchmarked models' median")


def _gemm(data) -> float | None:
    """``data["gemm"]["best_gflops"]``, the GEMM rate a benchmark recorded, when it is a positive number."""
    gemm = data.get("gemm") if isinstance(data, dict) else None
    rate = gemm.get("best_gflops") if isinstance(gemm, dict) else None
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def benchmark_rates(device: str) -> tuple[dict, dict, str, dict]:
    """``({model: ERF seconds per image at 1024}, {model: shape-bias seconds per stimulus}, note, {"erf": GFLOP/s,
    "shape_bias": GFLOP/s})`` from the committed benchmarks for ``device`` ("cpu" or "cuda"); the last are the fp32
    GEMM rates measured with the CPU benchmarks (empty for CUDA)."""
    d = _benchmarks_dir()
    erf, sb = {}, {}
    if device == "cuda":
        data = _load(d / "gpu" / "gpu_check.json")
        if data is None:
            return {}, {}, ("no GPU benchmark is committed (reports/benchmarks/gpu/gpu_check.json), so there are no "
                            "time estimates for CUDA"), {}
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
        return erf, sb, f"estimates from reports/benchmarks/gpu/gpu_check.json (measured on {gpu})", {}
    note, rates = [], {}
    data = _load(d / "erf_bench.json")
    if data is not None:
        for r in data.get("results", []):
            if r.get("mode") == "erftools" and not r.get("options") and r.get("steady_seconds_per_image"):
                erf[r["model"]] = r["steady_seconds_per_image"] * (1024 / r.get("size", 1024)) ** 2
        meta = data.get("meta", {})
        note.append(f"ERF from erf_bench.json ({meta.get('cpu_count', '?')}-core CPU, {meta.get('threads', '?')} "
                    "threads)")
        rates["erf"] = _gemm(meta) or _gemm(_load(d / "erf_lower_bound.json"))
    data = _load(d / "shape_bias.json")
    if data is not None:
        for r in data.get("results", []):
            ms = shape_bias_ms_per_image(r)
            if r.get("model") and ms:
                sb[r["model"]] = ms / 1000.0
        env = data.get("environment", {})
        note.append(f"shape bias from shape_bias.json ({env.get('logical_cpus', '?')}-core CPU)")
        rates["shape_bias"] = _gemm(env)
    if not note:
        return {}, {}, "no committed benchmarks found (reports/benchmarks/ ships with a source checkout)", {}
    rates = {k: v for k, v in rates.items() if v}
    return erf, sb, "estimates: " + "; ".join(note) + f"; this machine has {os.cpu_count() or 1} cores", rates


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
NETWORK = "to download (network needed)"


def _weights_line(m, choice, reach: dict) -> tuple[str, str]:
    """(text, mark) of one model's weights: where they come from, cached or to be downloaded."""
    from ..models import is_cached, resolve
    from ..models._weights import hub_checkpoint_path
    from .._download import REACH_TIMEOUT_S, host_of, hub_endpoint, reachable

    w = choice.weights
    if w == "random":
        return "random (seeded), nothing to download", "ok"
    entry, _ = resolve(m.name)
    src = None if w.startswith(("http://", "https://")) else entry.weight_source(None if w == "pretrained" else w)
    if w.startswith(("http://", "https://")):
        url, cached, text = w, hub_checkpoint_path(w).is_file(), w
    elif src is not None and src.downloadable:
        url = src.url or f"{hub_endpoint().rstrip('/')}/{src.hf_hub_id}"
        cached, text = is_cached(entry, src.tag), f"{src.tag}: {src.url or f'Hugging Face hub {src.hf_hub_id}'}"
    else:
        return choice.how, "ok"
    if cached:
        return text + " (cached)", "ok"
    host = host_of(url)
    if host not in reach:
        hub_offline = not (src is None or src.url) and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reach[host] = False if hub_offline else reachable(url)
    if reach[host]:
        return text + " (will be downloaded)", "ok"
    return (f"{text}: {host[0] if host else url} did not answer within {REACH_TIMEOUT_S:g} s; connect this machine "
            "to the network, or download the file elsewhere and pass weights_files={'" + m.id + "': PATH}"), NETWORK


def _scale(dev: str, rates: dict, machine_rate, needed: bool) -> tuple[dict, str]:
    """The factors that scale the benchmarks' times to this machine, and how they were found."""
    if dev != "cpu" or not rates or not needed:
        return {}, ""
    took = ""
    if machine_rate is None:
        t = time.perf_counter()
        machine_rate = gemm_rate()
        took = f", measured in {time.perf_counter() - t:.1f} s"
    factors = {k: v / machine_rate for k, v in rates.items()}
    parts = ", ".join(f"{k.replace('_', ' ').replace('erf', 'ERF')} x{f:.2f} (benchmark {rates[k]:.0f} GFLOP/s)"
                      for k, f in factors.items())
    return factors, (f"scaled to this machine by its fp32 GEMM rate now, {machine_rate:.0f} GFLOP/s{took}: {parts}; "
                     "the rate of a shared machine varies with its load, so the estimate does too")


def make_plan(study: Study, *, results=None, images=None, stimuli=None, weights_files=None, weights_dir=None,
              shard=None, device: str | None = None, nproc_per_node: int | None = None, overwrite: bool = False,
              skip_missing: bool = False, allow_incomplete: bool | None = None,
              machine_rate: float | None = None) -> Plan:
    """The plan of ``study`` on this machine: inputs, weights (cached, to be downloaded, or to be supplied), every
    run with its folder, status and estimated time, and what the run would refuse to start with (the same checks).
    ``machine_rate``: this machine's GEMM rate in GFLOP/s (default: measured now). Nothing is downloaded or
    computed."""
    check_weights_ids(study, weights_files)
    root = results_dir(study, results)
    dev = _device(study, device)
    nproc = max(1, int(nproc_per_node or 1))
    models = shard_models(study, shard)
    runs = jobs(study, models)
    allow = study.shape_bias.allow_incomplete if study.shape_bias else False
    allow = allow if allow_incomplete is None else bool(allow_incomplete)
    pre = preflight(study, models, images=images, stimuli=stimuli, weights_files=weights_files,
                    weights_dir=weights_dir, allow_incomplete=allow, nproc_per_node=nproc)
    statuses = [run_status(root / j.folder, j.kind) for j in runs]
    erf_rate, sb_rate, note, rates = benchmark_rates(dev)
    factors, scale_note = _scale(dev, rates, machine_rate, any(st != "done" for st in statuses))
    plan = Plan(study, root, dev + (f", {nproc} processes per model (torchrun)" if nproc > 1 else ""), note,
                scale_note=scale_note)
    try:
        check_folder(root, study, overwrite)
        plan.refusal = cannot_start(pre, skip_missing)
    except StudyError as exc:
        plan.refusal = str(exc)
    _inputs(plan, study, runs, pre)
    plan.not_run = [(m, m.note or "no public weights") for m in study.models if m.unpublished]
    reach, flops = {}, {}
    for m in models:
        if m.id in pre.model_problems:
            plan.weights += [(m.id, p, "MISSING") for p in pre.model_problems[m.id]]
        else:
            plan.weights.append((m.id, *_weights_line(m, pre.choices[m.id], reach)))
    n_stimuli = len(pre.stimuli.stimuli) if pre.stimuli is not None else NUM_STIMULI
    for j, status in zip(runs, statuses):
        if j.kind == "erf":
            units, table, size = study.erf.num_images, erf_rate, (j.input_size(study) / 1024) ** 2
        else:
            units, table, size = n_stimuli, sb_rate, 1.0
        rate, scaled_from = (None, None) if status == "done" else _rate(j.model.name, j.model.model_kwargs, table,
                                                                         flops)
        est = None if rate is None else rate * units * size / nproc * factors.get(j.kind, 1.0)
        plan.runs.append(PlannedRun(j, root / j.folder, status, units, est, scaled_from=scaled_from))
    return plan


def _inputs(plan: Plan, study: Study, runs, pre) -> None:
    if any(j.kind == "erf" for j in runs):
        bad = [p for p in pre.input_problems if p.startswith(("ERF images", "no image folder", "the image folder"))]
        text = bad[0] if bad else (f"{pre.img_dir}" if pre.img_dir else
                                   "the bundled photographs (not ImageNet: not comparable to the paper)")
        plan.inputs.append(("ERF images", text, not bad))
    if any(j.kind == "shape_bias" for j in runs):
        bad = [p for p in pre.input_problems if p.startswith("cue-conflict")]
        text = bad[0] if bad else f"{pre.stimuli_dir} ({len(pre.stimuli.stimuli)} images)"
        plan.inputs.append(("cue-conflict stimuli", text, not bad))


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
           f"  results: {plan.results}", f"  device: {plan.device}; {plan.benchmark_note}"]
    if plan.scale_note:
        out.append(f"  {plan.scale_note}")
    out.append("")
    if plan.inputs:
        out.append("Inputs:")
        out += [f"  [{'ok' if ok else 'MISSING'}] {what}: {text}" for what, text, ok in plan.inputs]
        out.append("")
    out.append("Weights:")
    out += [f"  [{mark}] {mid}: {text}" for mid, text, mark in plan.weights]
    out += [f"  [not run] {m.id}: {reason}" for m, reason in plan.not_run]
    out += ["", "Runs:"]
    w = max([len(r.job.model.id) for r in plan.runs] + [5])
    for r in plan.runs:
        unit = "images" if r.job.kind == "erf" else "stimuli"
        size = f" at {r.job.input_size(st)}" if r.job.kind == "erf" else ""
        est = "" if r.status == "done" else f", about {_duration(r.estimate_s)}" + (
            f" (by FLOPs from {r.scaled_from})" if r.scaled_from and r.estimate_s is not None else "")
        out.append(f"  {r.job.model.id:<{w}}  {r.job.name:<18} {r.units} {unit}{size}: {r.status}{est}  "
                   f"-> {r.job.folder}")
    total = plan.total_s
    out += ["", f"Estimated compute time: {_duration(total)}" + ("" if total is not None else
                                                               " (no benchmark for some models)")]
    if any(mark == NETWORK for _, _, mark in plan.weights):
        out.append(f"Downloads marked [{NETWORK}] fail on this machine as it is now.")
    if plan.refusal:
        out.append("Not ready: " + plan.refusal)
    return "\n".join(out)

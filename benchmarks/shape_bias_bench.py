"""Time the shape-bias evaluation: the 1280 cue-conflict images through replknet-31B, resnet-152 and swin-B.

Random weights (the timing does not depend on them), the full erftools pipeline (PNG decoding, normalisation,
forward pass, softmax, 16-class aggregation) under ``torch.inference_mode``, side by side in one process for each
model: ``plain`` (the model as built, decoding in a thread: erftools 0.1) and ``prepared`` (erftools' default:
re-parameterised, every BN folded, channels-last weights, decoding in a worker process). For each model the lower
bound of this CPU is its dense work (every multiply-add of the forward pass, counted by ``FlopCounterMode``) at this
CPU's fastest fp32 GEMM rate, measured before and after the timings (``best_gemm_rate``). Writes
``reports/benchmarks/shape_bias.json`` and ``reports/benchmarks/shape_bias.md``.

    python benchmarks/shape_bias_bench.py [--stimuli DIR] [--models replknet-31B resnet-152 swin-B]
                                          [--batch-size 16] [--device cpu] [--limit N]
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["replknet-31B", "resnet-152", "swin-B"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    import torch

    from erftools.models import create_model, get_model_info
    from erftools.shapebias import evaluate, load_stimuli

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_stimuli = os.environ.get("ERFTOOLS_SHARED", str(REPO.parent / "shared")) + "/data/cue-conflict"
    p.add_argument("--stimuli", default=default_stimuli)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None, help="time only the first N images (for a quick check)")
    p.add_argument("--out", default=str(REPO / "reports" / "benchmarks"))
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from erf_lower_bound import gemm_rate

    from erftools.shapebias.decisions import prepare_for_inference

    report = load_stimuli(args.stimuli, allow_incomplete=args.limit is not None)
    stimuli = report.stimuli[: args.limit] if args.limit else report.stimuli
    gemm = best_gemm_rate([gemm_rate()], "before")
    print(f"fp32 GEMM rate before: {gemm['best_gflops']:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.models:
        row = {"model": name, "images": len(stimuli), "total_images": report.n_images if hasattr(report, "n_images")
               else 1280}
        for variant in ("plain", "prepared"):
            torch.manual_seed(0)
            model = create_model(name, weights="random")
            info = get_model_info(model)
            row.setdefault("arch", info.arch)
            row.setdefault("parameters", info.num_parameters)
            if "gflop_per_image" not in row:
                row["gflop_per_image"] = _gflop(model)
            kw = {"prepare": variant == "prepared", "workers": None if variant == "prepared" else 0}
            if variant == "prepared":
                row["prepared"] = prepare_for_inference(model, args.device)
                kw["prepare"] = False
            # warm-up (allocator, oneDNN primitive selection), not timed
            evaluate(model, stimuli[: args.batch_size], report.root, batch_size=args.batch_size, device=args.device,
                     progress=False, **kw)
            t0 = time.perf_counter()
            evaluate(model, stimuli, report.root, batch_size=args.batch_size, device=args.device, progress=False,
                     **kw)
            sec = time.perf_counter() - t0
            row[variant] = {"seconds": round(sec, 2), "images_per_second": round(len(stimuli) / sec, 2),
                            "ms_per_image": round(1000 * sec / len(stimuli), 1),
                            "seconds_for_1280": round(sec * 1280 / len(stimuli), 1)}
            print(f"{name} {variant}: {sec:.1f} s for {len(stimuli)} images ({len(stimuli) / sec:.2f} img/s)",
                  flush=True)
            del model
            gc.collect()
        row["speedup_prepared_vs_plain"] = round(row["plain"]["seconds"] / row["prepared"]["seconds"], 2)
        rows.append(row)
        out = _write(args, _with_bounds(rows, gemm), gemm)  # after every model: an interrupted run keeps its rows
    gemm = best_gemm_rate([gemm, gemm_rate()], "after")
    print(f"fp32 GEMM rate after: {gemm['rates_gflops']['after']:.1f} GFLOP/s; the bound uses the best, "
          f"{gemm['best_gflops']:.1f}", flush=True)
    out = _write(args, _with_bounds(rows, gemm), gemm)

    print(f"wrote {out / 'shape_bias.json'} and {out / 'shape_bias.md'}")
    return 0


def best_gemm_rate(measurements: list[dict], when: str) -> dict:
    """The fastest rate the machine reached: a bound must not be computed from a rate measured while other jobs
    slowed the CPU, so the rate is measured before and after the timings (each the best of several calls of
    ``torch.mm`` and a channels-last 1x1 convolution, :func:`erf_lower_bound.gemm_rate`) and the best is used."""
    new = measurements[-1]
    rates = dict(measurements[0].get("rates_gflops", {})) if len(measurements) > 1 else {}
    rates[when] = new["best_gflops"]
    per_shape = {**measurements[0].get("per_shape_gflops", {})}
    for k, v in new["per_shape_gflops"].items():
        per_shape[k] = max(v, per_shape.get(k, 0.0))
    return {"per_shape_gflops": per_shape, "rates_gflops": rates, "best_gflops": max(rates.values())}


def _with_bounds(rows: list[dict], gemm: dict) -> list[dict]:
    """Each row's bound (its forward FLOPs at the best GEMM rate) and the prepared time over it."""
    for row in rows:
        bound = row["gflop_per_image"] * 1280 / gemm["best_gflops"]
        row["bound_seconds_for_1280"] = round(bound, 1)
        row["prepared_over_bound"] = round(row["prepared"]["seconds_for_1280"] / bound, 2)
    return rows


def _gflop(model) -> float:
    """Forward GFLOP (2 x multiply-adds) of one 224x224 image, counted by PyTorch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    return round(counter.get_total_flops() / 1e9, 3)


def _write(args, rows, gemm):
    import torch

    from erftools._io import versions, write_json, write_text

    env = {"device": args.device, "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "weights": "random",
           "dtype": "float32", "mode": "torch.inference_mode", "versions": versions(), "gemm": gemm,
           "images_timed": rows[0]["images"] if rows else None,
           "note": "wall time of erftools.shapebias.evaluate (PNG decode + forward + softmax + 16-class mapping); "
                   "one warm-up batch not timed; plain and prepared measured one after the other in one process; "
                   "the machine's 2 cores were shared with other jobs"}
    out = Path(args.out)
    write_json(out / "shape_bias.json", {"benchmark": "shape-bias cue-conflict evaluation", "environment": env,
                                         "results": rows})
    n = rows[0]["images"] if rows else 0
    lines = ["# Shape-bias evaluation speed (1280 cue-conflict images)", "",
             f"CPU: {env['cpu']} ({env['logical_cpus']} logical CPUs, torch threads {env['torch_threads']}), "
             f"device {args.device}, batch {args.batch_size}, float32, random weights, torch "
             f"{env['versions'].get('torch')}, timm {env['versions'].get('timm')}; fp32 GEMM rate (best of "
             f"`torch.mm` and a channels-last 1x1 convolution, several calls each) "
             + ", ".join(f"{k} the timings {v:.1f}" for k, v in gemm.get("rates_gflops", {}).items())
             + f" GFLOP/s; the bound uses the best, {gemm['best_gflops']:.1f} GFLOP/s.",
             "",
             f"Timed on {n} of the 1280 stimuli and scaled to 1280 (the cost per image is constant)." if n != 1280
             else "Timed on all 1280 stimuli.", "",
             "| model | parameters | GFLOP/image | plain (s, 1280) | prepared (s, 1280) | speed-up | bound (s) | "
             "prepared / bound |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['gflop_per_image']:.1f} | "
                     f"{r['plain']['seconds_for_1280']:.1f} | {r['prepared']['seconds_for_1280']:.1f} | "
                     f"{r['speedup_prepared_vs_plain']:.2f}x | {r['bound_seconds_for_1280']:.1f} | "
                     f"{r['prepared_over_bound']:.2f} |")
    lines += ["", "plain: the model as built, images decoded in a thread (erftools 0.1). prepared: erftools' default "
              "(`prepare_for_inference`: re-parameterised, BatchNorms folded, channels-last weights; decoding in a "
              "worker process). bound: the forward pass's FLOPs at the fastest GEMM rate measured in the run.", "",
              "Produced by `python benchmarks/shape_bias_bench.py`; the measurement shares the machine with other "
              "jobs, so treat the numbers as indicative; the ratios are measured side by side.", ""]
    write_text(out / "shape_bias.md", "\n".join(lines))
    return out


if __name__ == "__main__":
    sys.exit(main())

"""Time the shape-bias evaluation: the 1280 cue-conflict images through replknet-31B, resnet-152 and swin-B.

Random weights (the timing does not depend on them), the full erftools pipeline (PNG decoding, normalisation,
forward pass, softmax, 16-class aggregation) under ``torch.inference_mode``. Writes
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

    report = load_stimuli(args.stimuli, allow_incomplete=args.limit is not None)
    stimuli = report.stimuli[: args.limit] if args.limit else report.stimuli
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, weights="random")
        info = get_model_info(model)
        # warm-up (allocator, oneDNN primitive selection), not timed
        evaluate(model, stimuli[: args.batch_size], report.root, batch_size=args.batch_size, device=args.device,
                 progress=False)
        t0 = time.perf_counter()
        evaluate(model, stimuli, report.root, batch_size=args.batch_size, device=args.device, progress=True)
        sec = time.perf_counter() - t0
        rows.append({"model": name, "arch": info.arch, "parameters": info.num_parameters, "images": len(stimuli),
                     "seconds": round(sec, 2), "images_per_second": round(len(stimuli) / sec, 2),
                     "ms_per_image": round(1000 * sec / len(stimuli), 1)})
        print(f"{name}: {sec:.1f} s for {len(stimuli)} images ({len(stimuli) / sec:.2f} img/s)", flush=True)
        del model
        gc.collect()
        out = _write(args, rows)  # after every model, so an interrupted benchmark keeps what it measured

    print(f"wrote {out / 'shape_bias.json'} and {out / 'shape_bias.md'}")
    return 0


def _write(args, rows):
    import torch

    from erftools._io import versions, write_json, write_text

    env = {"device": args.device, "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "weights": "random",
           "dtype": "float32", "mode": "torch.inference_mode", "versions": versions(),
           "note": "wall time of erftools.shapebias.evaluate (PNG decode + forward + softmax + 16-class mapping); "
                   "one warm-up batch not timed; the machine's 2 cores were shared with other jobs"}
    out = Path(args.out)
    write_json(out / "shape_bias.json", {"benchmark": "shape-bias cue-conflict evaluation", "environment": env,
                                         "results": rows})
    lines = ["# Shape-bias evaluation speed (1280 cue-conflict images)", "",
             f"CPU: {env['cpu']} ({env['logical_cpus']} logical CPUs, torch threads {env['torch_threads']}), "
             f"device {args.device}, batch {args.batch_size}, float32, random weights, torch "
             f"{env['versions'].get('torch')}, timm {env['versions'].get('timm')}.", "",
             "| model | parameters | images | seconds | images/s | ms/image |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['images']} | {r['seconds']:.1f} | "
                     f"{r['images_per_second']:.2f} | {r['ms_per_image']:.1f} |")
    lines += ["", "Produced by `python benchmarks/shape_bias_bench.py`; the measurement shares the machine with other "
              "jobs, so treat the numbers as indicative.", ""]
    write_text(out / "shape_bias.md", "\n".join(lines))
    return out


if __name__ == "__main__":
    sys.exit(main())

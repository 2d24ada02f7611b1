"""How far each ERF precision (``compute_erf(..., precision=)``) is from float64, measured on CPU.

For every model the same images go through erftools' ERF procedure (``compute_erf`` with its defaults: the model
prepared, batch 1) once per precision, and once with the model in float64 (``model.double()``: the images are cast
to float64, every operation runs in float64; the reference). PyTorch's CPU depthwise convolution has no fast float64
kernel (0.09 GMAC/s at K=31), so the reference runs RepLKNet's large kernels through erftools.ops' FFT convolution,
in float64 as well (``conv_backend="fft"``; the same convolution to ~1e-14); the tiny fixture's uses the native one. Each run is compared with the reference by

* the max-relative error of the matrix: ``max |a - b| / max |b|`` (``b`` the float64 matrix, both the float64
  means of the per-image maps);
* the high-contribution square sides of ``erftools.erf.analysis.area_ratios`` at 0.2/0.3/0.5/0.99, computed on
  the float32 matrices that erftools returns (the reference's rounded to float32), and whether any of them moved.

Precisions: ``fp32`` (the paper's, erftools' default), ``bf16`` (the forward pass under bfloat16 autocast, input
gradients in float32, maps summed in float64), ``tf32`` (on CPU erftools runs plain fp32: the row says so), and
``tf32 (emulated)``: the fp32 run with the operands of every dense convolution and linear layer (input, weight, and
in the backward pass the incoming gradient) rounded to TF32's 10-bit mantissa, what a GPU's tensor cores do with
``allow_tf32``; depthwise convolutions, which cuDNN does not run on tensor cores, stay fp32. An estimate of the
CUDA tf32 error made on CPU, not a GPU measurement.

Models (random weights, ``torch.manual_seed(0)`` before building): RepLKNet-31B and ResNet-152 at ``--size``
(default 1024) on ``--images`` (default 2) bundled photographs (``select_images(None, n, "sequential")``), and the
tiny RepLKNet fixture of the shared test data with its three 128 px inputs (``../shared/fixtures``, or
``$ERFTOOLS_SHARED``). ``--size-for replknet-31B=512`` measures one model at another size.

Each (model, precision) runs in its own child process (peak memory clean, nothing shared) and is stored in
``--cache`` (default ``$TMPDIR/erftools-erf-precision``; a run already there is not repeated). ``--only
MODEL:PRECISION`` computes runs into the cache without writing the report (for long runs in the background).

Usage::

    .venv/bin/python benchmarks/erf_precision.py                       # everything, writes the report
    .venv/bin/python benchmarks/erf_precision.py --only replknet-31B:fp64   # one run into the cache
    .venv/bin/python benchmarks/erf_precision.py --models tiny --size 256   # quick check

Writes ``reports/benchmarks/erf_precision.json`` and ``.md`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("replknet-31B", "resnet-152", "tiny")
PRECISIONS = ("fp32", "tf32", "tf32-emulated", "bf16")
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def _shared() -> Path:
    return Path(os.environ.get("ERFTOOLS_SHARED") or ROOT.parent / "shared")


def _build(model_name: str, size: int):
    """(model, images, image description) for one model; the same every time (seeded)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    if model_name == "tiny":
        from erftools.models import RepLKNet

        ck = torch.load(_shared() / "fixtures" / "replknet_tiny.pt", weights_only=True)
        model = RepLKNet(**ck["config"])
        model.load_state_dict(ck["state_dict"])
        data = np.load(_shared() / "fixtures" / "erf_tiny.npz")
        x = torch.from_numpy(data["inputs"])
        return model.eval(), x, f"the fixture's {x.shape[0]} inputs ({x.shape[-1]} px)"
    from erftools.models import create_model

    model = create_model(model_name, "random")
    return model.eval(), None, f"bundled photographs at {size} px"


def _round_tf32(t):
    """``t`` (float32) with its values rounded to TF32 (10-bit mantissa; to nearest, ties to even); the gradient
    passes straight through."""
    import torch

    i = t.detach().view(torch.int32)
    r = ((i + 0xFFF + ((i >> 13) & 1)) & -8192).view(torch.float32)
    return t + (r - t).detach() if t.requires_grad else r


class _RoundGradTF32:
    """Identity in the forward pass (a copy, so that an in-place operation after it is allowed); rounds the
    gradient to TF32 in the backward pass."""
    fn = None

    @classmethod
    def apply(cls, x):
        import torch

        if cls.fn is None:
            class Fn(torch.autograd.Function):
                @staticmethod
                def forward(ctx, v):
                    return v.clone()

                @staticmethod
                def backward(ctx, g):
                    return _round_tf32(g)

            cls.fn = Fn
        return cls.fn.apply(x)


def _emulate_tf32(model) -> int:
    """Hooks that round the operands of every dense Conv2d / Linear to TF32 (forward: input and weight; backward:
    the gradient arriving at the output). Returns the number of modules hooked."""
    import torch
    import torch.nn as nn

    n = 0
    for m in model.modules():
        dense = isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
        if not dense:
            continue

        def pre(mod, args):
            if not getattr(mod, "_tf32_weight", False):
                with torch.no_grad():
                    mod.weight.copy_(_round_tf32(mod.weight.detach()))
                mod._tf32_weight = True
            return (_round_tf32(args[0]),) + tuple(args[1:])

        def post(mod, args, out):
            return _RoundGradTF32.apply(out) if out.requires_grad else out

        m.register_forward_pre_hook(pre)
        m.register_forward_hook(post)
        n += 1
    return n


def child(model_name: str, precision: str, size: int, n_images: int, cache: Path) -> None:
    """One run: the ERF of one model at one precision, stored as an .npz in ``cache``."""
    import numpy as np
    import torch

    from erftools.erf import compute_erf
    from erftools.images import select_images

    model, x, what = _build(model_name, size)
    images = x if x is not None else select_images(None, n_images, "sequential", size=size)
    hooked = 0
    backend = None
    if precision == "fp64":
        model = model.double()
        prec = "fp32"
        if model_name != "tiny":
            # PyTorch has no fast float64 depthwise kernel on CPU (0.09 GMAC/s at K=31: hours for RepLKNet-31B at
            # 1024); erftools.ops' FFT convolution computes the same convolution in float64 (error ~1e-14)
            backend = "fft"
    elif precision == "tf32-emulated":
        from erftools.erf.compute import prepare_model

        prepare_model(model, "cpu")
        hooked = _emulate_tf32(model)
        prec = "fp32"
    else:
        prec = precision
    t = time.perf_counter()
    r = compute_erf(model, images, device="cpu", batch_size=1, precision=prec, conv_backend=backend,
                    allow_low_precision=True)
    seconds = time.perf_counter() - t
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    mean64 = r.total / r.num_images
    info = {"model": model_name, "precision": precision, "ran": r.precision, "note": r.precision_note,
            "size": int(r.matrix.shape[-1]), "images": r.num_images, "image_source": what, "seconds": round(seconds, 1),
            "per_image_s": r.timings.get("per_image_s"), "peak_rss_gib": round(peak / 2**30, 2),
            "tf32_emulated_modules": hooked, "conv_backend": r.prepared.get("conv_backend"), "torch": torch.__version__}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / _key(model_name, precision, size), mean64=mean64, matrix=r.matrix,
             info=json.dumps(info))
    print(json.dumps(info))


def _key(model_name: str, precision: str, size: int) -> str:
    return f"{model_name}_{size}_{precision}.npz"


def compare(cache: Path, model_name: str, size: int, precisions) -> dict:
    """The comparison rows of one model against its float64 run."""
    import numpy as np

    from erftools.erf.analysis import area_ratios

    ref = np.load(cache / _key(model_name, "fp64", size))
    b = ref["mean64"]
    ref_sides = [a.side for a in area_ratios(b.astype(np.float32), THRESHOLDS)]
    out = {"model": model_name, "size": size, "reference": json.loads(str(ref["info"])), "reference_sides": ref_sides,
           "rows": []}
    for p in precisions:
        f = cache / _key(model_name, p, size)
        if not f.is_file():
            continue
        run = np.load(f)
        a = run["mean64"]
        sides = [s.side for s in area_ratios(run["matrix"], THRESHOLDS)]
        err = float(np.abs(a - b).max() / np.abs(b).max())
        out["rows"].append({"precision": p, "info": json.loads(str(run["info"])), "max_relative_error": err,
                            "sides": sides, "sides_changed": sides != ref_sides,
                            "side_changes": {str(t): [r, s] for t, r, s in zip(THRESHOLDS, ref_sides, sides)
                                             if r != s}})
    return out


def _markdown(results: list[dict], meta: dict) -> str:
    lines = ["# ERF precision against float64, CPU", "",
             f"{meta['cpu']} ({meta['cpu_count']} cores), torch {meta['torch']}, {meta['date']}. Random weights "
             "(seed 0), erftools' default procedure (prepared model, batch 1); the reference is the same procedure "
             "on `model.double()`. Max-relative error = max |a - b| / max |b| of the matrices (float64 means); "
             f"sides = high-contribution square sides at thresholds {', '.join(map(str, THRESHOLDS))} "
             "(`area_ratios` on the float32 matrices). `tf32` runs plain fp32 on a CPU; `tf32-emulated` rounds the "
             "operands of every dense convolution / linear layer to TF32 (an estimate of a GPU's TF32 error, "
             "depthwise convolutions left fp32). Produced by `benchmarks/erf_precision.py`.", "",
             "| model | size | images | precision | ran as | max-relative error | sides (ref: float64) | sides moved | "
             "s / image |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        ref = res["reference"]
        lines.append(f"| {res['model']} | {res['size']} | {ref['images']} | fp64 (reference) | fp64 | 0 | "
                     f"{res['reference_sides']} | - | {ref['per_image_s']} |")
        for row in res["rows"]:
            moved = "no" if not row["sides_changed"] else "**yes**: " + ", ".join(
                f"{t}: {r} -> {s}" for t, (r, s) in row["side_changes"].items())
            lines.append(f"| {res['model']} | {res['size']} | {row['info']['images']} | {row['precision']} | "
                         f"{row['info']['ran']} | {row['max_relative_error']:.2e} | {row['sides']} | {moved} | "
                         f"{row['info']['per_image_s']} |")
    notes = meta.get("notes") or []
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"of {', '.join(MODELS)} (default: all)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--size", type=int, default=1024, help="image size of the big models (default 1024)")
    p.add_argument("--size-for", nargs="*", default=[], metavar="MODEL=SIZE", help="another size for one model")
    p.add_argument("--images", type=int, default=2, help="images per big model (default 2)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "erftools-erf-precision")
    p.add_argument("--only", nargs="*", default=None, metavar="MODEL:PRECISION",
                   help="compute these runs (precision fp64 = the reference) into the cache; no report")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "erf_precision")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = {m: args.size for m in args.models}
    for item in args.size_for:
        m, _, s = item.partition("=")
        sizes[m] = int(s)
    sizes["tiny"] = 128

    def size_of(m):
        return sizes.get(m, 128 if m == "tiny" else args.size)

    if args.child:
        child(args.child[0], args.child[1], size_of(args.child[0]), args.images, args.cache)
        return 0
    runs = ([tuple(o.split(":", 1)) for o in args.only] if args.only is not None else
            [(m, pr) for m in args.models for pr in ("fp64", *args.precisions)])
    for m, pr in runs:
        if (args.cache / _key(m, pr, size_of(m))).is_file():
            continue
        cmd = [sys.executable, __file__, "--child", m, pr, "--images", str(args.images), "--size", str(size_of(m)),
               "--cache", str(args.cache)]
        print(f"{m} {pr} at {size_of(m)} px ...", flush=True)
        proc = subprocess.run(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            print(f"{m} {pr}: failed (exit {proc.returncode})", file=sys.stderr)
    if args.only is not None:
        return 0
    import torch

    results = [compare(args.cache, m, size_of(m), args.precisions) for m in args.models
               if (args.cache / _key(m, "fp64", size_of(m))).is_file()]
    meta = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "thresholds": list(THRESHOLDS), "notes": args.note}
    summary = {}
    for p_ in args.precisions:
        rows = [row for res in results for row in res["rows"] if row["precision"] == p_]
        if rows:
            summary[p_] = {"max_relative_error": max(r["max_relative_error"] for r in rows),
                           "sides_changed": any(r["sides_changed"] for r in rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "results": results},
                                                        indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(results, meta))
    print(_markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())

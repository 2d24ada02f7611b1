"""One prepared GPU check: every convolution backend, the ERF engine and shape bias on one GPU, side by side.

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR            # on a GPU: under 8 minutes on an H100/H200
    PYTHONPATH=. python benchmarks/gpu_check.py --smoke --out DIR    # toy sizes on CPU (Triton's interpreter)

Needs torch, triton, timm, numpy, pillow and this checkout; no network, nothing to install.

Parts (each runs in its own child process, one after the other -- erf, shapebias, then kernels, which takes all the
time the others leave -- so that a crash, a CUDA error or a time-out in one is recorded in the JSON and the others
still run; every child appends its results line by line, so a killed part keeps what it measured):

``kernels``   (a) correctness and (b) timings of the depthwise convolution backends -- native NCHW (PyTorch's own
              CUDA kernel for K > 5), native channels-last (cuDNN), ``fft`` and ``triton`` -- in fp32 and bf16, K in
              {3, 7, 13, 27, 29, 31}, on the paper's Table 1 shapes (batch 64, 384 channels, 16/32/64 px) and the
              batch-1 layer shapes of RepLKNet-31B's ERF at 1024 (128 ch at 256 px, 256 at 128, 512 at 64, 1024 at
              32). Correctness: forward, input gradient and weight gradient against float64 ``F.conv2d`` from the
              same rounded inputs, on the first 8 channels (the op is per channel, so this is exact), as
              max|err| / max|ref|. Timings: CUDA events, 2 warm-up calls, median of 10 (3 when one call takes over
              0.5 s, flagged), per pass, with useful TFLOP/s (in-bounds taps only), the fraction of the GPU's peak
              (fp32: CUDA-core rate, bf16: dense tensor-core rate; datasheet where the GPU is known, else a measured
              matrix product) and the speed-up against native NCHW and cuDNN channels-last. The backends are called
              directly (no dispatcher, no self-check). Most important cases first (RepLKNet's own layer/kernel pairs),
              so a short budget still measures them.
``erf``       (c) RepLKNet-31B at 1024 on 10 seeded images, random weights: the official procedure (training-time
              model, batch 1, parameters requiring grad, NCHW, fp32, native convolution) against erftools' default
              ``compute_erf``; matrices compared (max-relative error, the high-contribution square sides of
              ``erftools.erf.area_ratios``), images/s and peak GPU memory of each; ResNet-152 and Swin-B at 1024 with
              ``compute_erf``. erftools is timed on a second call (the first, on one image, prepares the model
              and warms up).
``shapebias`` (d) ``erftools.shapebias.evaluate`` over the 1280 cue-conflict stimuli (``--stimuli``, default
              ``$ERFTOOLS_SHARED/data/cue-conflict`` or ``../shared/data/cue-conflict``; 1280 random 224 px PNGs when
              absent) for RepLKNet-31B, ResNet-152, Swin-B and the zero-shot open_clip ViT-B-32 (random weights; its
              80-template text classifier timed as ``text_classifier_s``; needs open-clip-torch, else the row holds
              the error) in fp32 and bf16 (``torch.autocast`` around ``evaluate``), images/s and the number of
              decisions that change between the two.

Outputs in DIR: ``gpu_check.json`` (everything), ``gpu_check.md`` (tables), ``cuda_table.json`` (the measured
CUDA table in the format ``erftools/ops/_cuda_table.py`` reads: copy it to ``erftools/ops/cuda_table.json`` and
commit it to let ``auto`` use what won), ``parts/*.jsonl`` (raw lines). ``--budget-s`` (default 420) bounds the whole
run: each part gets a share of what is left and stops starting new cases at its deadline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("kernels", "erf", "shapebias")
#: run order: the two bounded model parts first, so that the time they leave goes to the kernels part, whose
#: Triton autotuning (a few seconds per new kernel size and plane) decides how many cases fit
RUN_ORDER = ("erf", "shapebias", "kernels")
SHARES = {"kernels": 0.5, "erf": 0.28, "shapebias": 0.22}
BACKENDS = ("native_nchw", "native_cl", "fft", "triton")
PASSES = ("fwd", "dgrad", "wgrad")
MODE_PASSES = {"forward": ("fwd",), "input_grad": ("fwd", "dgrad"), "weight_grad": ("fwd", "dgrad", "wgrad")}
#: correctness gates (max|err| / max|ref| against float64 from the same rounded inputs). fp32: fp32 accumulation of
#: <= 961 products is ~1e-7 and the FFT ~1e-6, so 1e-5 passes exact fp32 and fails TF32 (~3e-4); the weight gradient
#: sums N*H*W = 262k products per tap (~1e-5 in fp32), hence 1e-4. bf16: one output rounding (2^-9 of the value)
#: plus the gradient's rounding, ~2 ulp, hence 1e-2 (2e-2 for the weight gradient, rounded after a long sum).
TOL = {"fp32": {"fwd": 1e-5, "dgrad": 1e-5, "wgrad": 1e-4}, "bf16": {"fwd": 1e-2, "dgrad": 1e-2, "wgrad": 2e-2}}
#: a backend or layout replaces native NCHW in the table only when it is at least this much faster on every shape
MARGIN = 1.1
REF_CHANNELS = 8
#: datasheet dense rates (TFLOP/s: fp32 on CUDA cores, bf16 on tensor cores), most specific name first
DATASHEET = [("H200", 67.0, 989.0), ("H100 PCIe", 51.0, 756.0), ("H100", 67.0, 989.0), ("A100", 19.5, 312.0),
             ("L40S", 91.6, 362.0), ("L4", 30.3, 121.0), ("RTX 4090", 82.6, 165.0), ("A10", 31.2, 125.0)]

FULL = {
    "ks": [3, 7, 13, 27, 29, 31],
    "shapes": [("table1-16px", 64, 384, 16), ("table1-32px", 64, 384, 32), ("table1-64px", 64, 384, 64),
               ("erf1024-stage1", 1, 128, 256), ("erf1024-stage2", 1, 256, 128), ("erf1024-stage3", 1, 512, 64),
               ("erf1024-stage4", 1, 1024, 32),
               # UniRepLKNet-S's 13x13 Dilated-Reparam kernels at 1024 px (stages 2-4; stage 1 is 3x3)
               ("unireplknet-s-1024-stage2", 1, 192, 128), ("unireplknet-s-1024-stage3", 1, 384, 64),
               ("unireplknet-s-1024-stage4", 1, 768, 32)],
    # RepLKNet-31B's own (shape, K) pairs and the paper's K=31 first
    "priority": [("erf1024-stage1", 31), ("erf1024-stage2", 29), ("erf1024-stage3", 27), ("erf1024-stage4", 13),
                 ("table1-64px", 31), ("table1-32px", 31), ("table1-16px", 31),
                 ("unireplknet-s-1024-stage2", 13), ("unireplknet-s-1024-stage3", 13), ("unireplknet-s-1024-stage4", 13)],
    "warmup": 2, "reps": 10, "slow_ms": 500.0,
    "erf_size": 1024, "erf_images": 10, "sb_images": 1280, "sb_batch": 64,
    "models": {"replknet-31B": {}, "resnet-152": {}, "swin-B": {}, "unireplknet-S": {}},
    # the zero-shot path (issue 20): open_clip's ViT-B-32, its 80-template text classifier, arg-max over the 16
    "sb_models": {"openclip:ViT-B-32": {}},
}
SMOKE = {
    "ks": [3, 7],
    "shapes": [("toy-batch", 2, 4, 8), ("toy-plane", 1, 3, 12)],
    "priority": [("toy-plane", 7), ("toy-batch", 3)],
    "only_priority": True,  # two (shape, K) pairs: every code path, a quarter of the interpreter's time
    "warmup": 0, "reps": 2, "slow_ms": 500.0,
    "erf_size": 64, "erf_images": 2, "sb_images": 4, "sb_batch": 2,
    # toy versions of the three architectures (same code paths, a fraction of the layers and channels)
    "models": {"replknet-31B": {"channels": [8, 8, 8, 8], "layers": [1, 1, 1, 1]},
               "resnet-152": {"layers": (1, 1, 1, 1)},
               "swin-B": {"depths": (1, 1, 1, 1), "embed_dim": 16, "num_heads": (1, 1, 1, 1)},
               # kernels 3 and 13 (a Dilated Reparam Block: its merge and the large-kernel backends)
               "unireplknet-S": {"depths": (1, 1, 1, 1), "dims": (8, 8, 8, 8),
                                 "kernel_sizes": ((3,), (13,), (13,), (3,))}},
    # a toy open_clip config (open_clip's model_kwargs replace the towers' configs): the same zero-shot code path
    "sb_models": {"openclip:ViT-B-32": {"embed_dim": 16,
                                        "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                                                       "head_width": 16},
                                        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16,
                                                     "heads": 1, "layers": 1}}},
}


# ================================================================================================== small helpers
#: fault injection for the test suite (comma-separated): "erf:<model>" fails that model's ERF, "<part>:crash" kills
#: the part's process right after its first record (as a CUDA fault or an out-of-memory kill would),
#: "<part>:crash-once" does so only in the first attempt
INJECT_ENV = "ERFTOOLS_GPU_CHECK_INJECT"


def _injected(part: str, what: str) -> bool:
    return f"{part}:{what}" in os.environ.get(INJECT_ENV, "").split(",")


def _now() -> float:
    return time.time()


def _emit(path: Path, rec: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
        fh.flush()
    if _injected(path.stem, "crash") or (_injected(path.stem, "crash-once") and len(_read_jsonl(path)) == 1):
        os._exit(3)


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut short by a kill
    return out


def _fatal_cuda(exc: BaseException) -> bool:
    s = str(exc).lower()
    return any(t in s for t in ("illegal memory access", "device-side assert", "unspecified launch failure",
                                "cuda error: an illegal", "misaligned address"))


def taps(h: int, k: int) -> int:
    """In-bounds (output, tap) pairs along one axis of a 'same' convolution: sum over offsets d of max(0, h - |d|)."""
    p = k // 2
    return sum(max(0, h - abs(d)) for d in range(-p, p + 1))


def useful_flops(n: int, c: int, h: int, w: int, k: int) -> int:
    return 2 * n * c * taps(h, k) * taps(w, k)


def datasheet_peaks(name: str | None) -> dict | None:
    for key, fp32, bf16 in DATASHEET:
        if name and key.lower() in name.lower():
            return {"fp32": fp32, "bf16": bf16, "matched": key}
    return None


# ================================================================================================== environment
def environment(smoke: bool) -> dict:
    import importlib.metadata as md

    import torch

    def ver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
           else None, "triton": ver("triton"), "timm": ver("timm"), "numpy": ver("numpy"), "pillow": ver("pillow"),
           "smoke": smoke, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
           "gpu": None, "capability": None, "arch": "sm_cpu" if smoke else None, "driver": None}
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        env["commit"] = head.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    if not smoke and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=f"{cap[0]}.{cap[1]}", arch=f"sm_{cap[0]}{cap[1]}",
                   multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.SubprocessError, IndexError):
            env["driver"] = None
    env["datasheet_tflops"] = datasheet_peaks(env["gpu"])
    return env


# ================================================================================================== part a + b
def _sync(dev):
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timer(dev):
    import torch

    if dev.type == "cuda":
        def once(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
    else:
        def once(fn):
            t = time.perf_counter()
            fn()
            return 1000 * (time.perf_counter() - t)
    return once


def _measure(fn, dev, cfg) -> tuple[float, int, bool]:
    """(median ms, repetitions, few_reps) after warm-up."""
    once = _timer(dev)
    for _ in range(cfg["warmup"]):
        fn()
    _sync(dev)
    first = once(fn)
    reps = cfg["reps"] if first <= cfg["slow_ms"] else min(cfg["reps"], 3)
    times = [first] + [once(fn) for _ in range(reps - 1)]
    return statistics.median(times), len(times), reps < cfg["reps"]


def _backend_fns():
    import torch.nn.functional as F

    from erftools.ops._fft import fft_dwconv2d
    from erftools.ops._triton import triton_dwconv2d

    def native(x, w):
        return F.conv2d(x, w, padding=w.shape[-1] // 2, groups=x.shape[1])

    return {"native_nchw": native, "native_cl": native, "fft": fft_dwconv2d, "triton": triton_dwconv2d}


def _rel(a, ref) -> float:
    err = float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    return err if err == err else float("inf")


def matmul_ceilings(dev, smoke: bool) -> dict:
    """Measured dense matrix-product rates (TFLOP/s): bf16, and fp32 with TF32 off."""
    import torch

    n = 256 if smoke else 8192
    out = {}
    for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            a = torch.randn(n, n, device=dev).to(dt)
            b = torch.randn(n, n, device=dev).to(dt)
            ms, _, _ = _measure(lambda: a @ b, dev, {"warmup": 2, "reps": 5, "slow_ms": 1e9})
            out[name] = round(2 * n ** 3 / (ms * 1e-3) / 1e12, 2)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    return out


def part_kernels(args, cfg, dev, out_path: Path, deadline: float) -> None:
    import torch

    from erftools.ops import _triton

    fns = _backend_fns()
    interp = _triton.interpreting()
    skip = {b for b in (args.skip_backends or "").split(",") if b}
    prior = _read_jsonl(out_path)  # a restarted attempt continues where the last one died
    finished = {_key(r) for r in prior if r.get("kind") == "case" and not r.get("fatal")}
    started = {_key(r) for r in prior if r.get("kind") == "start"}
    died_in = started - {_key(r) for r in prior if r.get("kind") == "case"}
    for key in sorted(died_in):
        _emit(out_path, {"kind": "case", "shape": key[0], "k": key[1], "dtype": key[2], "backends": {},
                         "error": "the process died during this case (a crash, not a Python error); skipped"})
    if not any(r.get("kind") == "ceilings" for r in prior):
        try:
            ceil = matmul_ceilings(dev, args.smoke)
        except Exception as exc:  # noqa: BLE001
            ceil = {"error": f"{type(exc).__name__}: {exc}"}
        _emit(out_path, {"kind": "ceilings", "matmul_tflops": ceil})
    shapes = {s[0]: s for s in cfg["shapes"]}
    order = list(cfg["priority"])
    if not cfg.get("only_priority"):
        order += [(s[0], k) for k in sorted(cfg["ks"], reverse=True) for s in cfg["shapes"]
                  if (s[0], k) not in cfg["priority"]]
    if args.ks:
        only = {int(k) for k in args.ks.split(",")}
        order = [(sn, k) for sn, k in order if k in only]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for case_i, (sname, k) in enumerate(order):
        _, n, c, h = shapes[sname]
        for dname, dt in dtypes.items():
            rec = {"kind": "case", "shape": sname, "n": n, "c": c, "h": h, "w": h, "k": k, "dtype": dname,
                   "flops": useful_flops(n, c, h, h, k), "backends": {}, "convert_ms": None}
            if (sname, k, dname) in finished | died_in:
                continue
            if _now() > deadline:
                rec["skipped"] = "time budget spent"
                _emit(out_path, rec)
                continue
            _emit(out_path, {"kind": "start", "shape": sname, "k": k, "dtype": dname})
            try:
                _kernel_case(rec, fns, dev, dt, cfg, deadline, interp, seed=1000 * case_i + (dname == "bf16"),
                             skip=skip)
            except Exception as exc:  # noqa: BLE001 - recorded, and the next case runs
                rec["error"] = f"{type(exc).__name__}: {exc}"[:800]
                if _fatal_cuda(exc):
                    rec["fatal"] = True
                    _emit(out_path, rec)
                    raise
            _emit(out_path, rec)
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def _key(rec) -> tuple:
    return (rec.get("shape"), rec.get("k"), rec.get("dtype"))


def kernel_cases(records: list[dict]) -> list[dict]:
    """The case records of a kernels part, the last one of each (shape, K, dtype) (a restart re-measures a case)."""
    last = {}
    for r in records:
        if r.get("kind") == "case":
            last.pop(_key(r), None)
            last[_key(r)] = r
    return list(last.values())


def _kernel_case(rec, fns, dev, dt, cfg, deadline, interp, seed, skip=()):
    import torch
    import torch.nn.functional as F

    n, c, h, k = rec["n"], rec["c"], rec["h"], rec["k"]
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(n, c, h, h, device=dev, generator=g).to(dt)
    w = (torch.randn(c, 1, k, k, device=dev, generator=g) / k).to(dt)
    gy = torch.randn(n, c, h, h, device=dev, generator=g).to(dt)
    cs = min(c, REF_CHANNELS)
    # float64 reference on the first channels, from the same rounded inputs
    x64 = x[:, :cs].double().requires_grad_()
    w64 = w[:cs].double().requires_grad_()
    y64 = F.conv2d(x64, w64, padding=k // 2, groups=cs)
    y64.backward(gy[:, :cs].double())
    ref = {"fwd": y64.detach(), "dgrad": x64.grad, "wgrad": w64.grad}
    del x64, w64, y64
    cl = torch.channels_last
    x_cl, gy_cl = x.contiguous(memory_format=cl), gy.contiguous(memory_format=cl)
    rec["convert_ms"], _, _ = _measure(lambda: (x.contiguous(memory_format=cl), x_cl.contiguous()), dev,
                                       {"warmup": 1, "reps": 5, "slow_ms": 1e9})
    tol = TOL[rec["dtype"]]
    for b in BACKENDS:
        r = {"errors": {}, "correct": {}, "ms": {}, "reps": {}, "few_reps": False, "error": None, "skipped": None}
        rec["backends"][b] = r
        if b == "triton" and interp and dt == torch.bfloat16:
            r["skipped"] = "Triton's CPU interpreter has no bf16 arithmetic (checked on a GPU only)"
            continue
        if b in skip:
            r["skipped"] = "not run after a fatal CUDA error of this backend in an earlier attempt"
            continue
        if _now() > deadline:
            r["skipped"] = "time budget spent"
            continue
        fn = fns[b]
        xb, gyb = (x_cl, gy_cl) if b == "native_cl" else (x, gy)
        try:
            xs = xb.detach().clone().requires_grad_()
            ws = w.detach().clone().requires_grad_()
            y = fn(xs, ws)
            y.backward(gyb)
            got = {"fwd": y.detach()[:, :cs], "dgrad": xs.grad[:, :cs], "wgrad": ws.grad[:cs]}
            for p in PASSES:
                r["errors"][p] = _rel(got[p], ref[p])
                r["correct"][p] = r["errors"][p] <= tol[p] and got[p].dtype == dt
            del xs, ws, y, got
            # timings, one pass at a time (autograd.grad on a retained graph runs only the backward asked for)
            with torch.no_grad():
                r["ms"]["fwd"], r["reps"]["fwd"], few = _measure(lambda: fn(xb, w), dev, cfg)
            r["few_reps"] |= few
            xg = xb.detach().requires_grad_()
            yd = fn(xg, w)
            r["ms"]["dgrad"], r["reps"]["dgrad"], few = _measure(
                lambda yd=yd, xg=xg: torch.autograd.grad(yd, xg, gyb, retain_graph=True), dev, cfg)
            r["few_reps"] |= few
            del yd, xg
            if _now() <= deadline:
                wg = w.detach().requires_grad_()
                yw = fn(xb, wg)
                r["ms"]["wgrad"], r["reps"]["wgrad"], few = _measure(
                    lambda yw=yw, wg=wg: torch.autograd.grad(yw, wg, gyb, retain_graph=True), dev, cfg)
                r["few_reps"] |= few
                del yw, wg
        except Exception as exc:  # noqa: BLE001
            r["error"] = f"{type(exc).__name__}: {exc}"[:800]
            if _fatal_cuda(exc):
                rec["fatal_backend"] = b
                raise
    _derive_rates(rec)


def _sig(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}")


def _derive_rates(rec, peaks=None):
    """TFLOP/s, fraction of peak and speed-ups of one case (peaks filled in later by the parent)."""
    base = rec["backends"].get("native_nchw", {}).get("ms", {})
    base_cl = rec["backends"].get("native_cl", {}).get("ms", {})
    for r in rec["backends"].values():
        r["tflops"] = {p: _sig(rec["flops"] / (ms * 1e-3) / 1e12) for p, ms in r.get("ms", {}).items() if ms}
        r["speedup_vs_native_nchw"] = {p: _sig(base[p] / ms) for p, ms in r.get("ms", {}).items()
                                       if ms and base.get(p)}
        r["speedup_vs_native_cl"] = {p: _sig(base_cl[p] / ms) for p, ms in r.get("ms", {}).items()
                                     if ms and base_cl.get(p)}
        if peaks:
            pk = peaks.get(rec["dtype"])
            r["fraction_of_peak"] = {p: _sig(t / pk) for p, t in r["tflops"].items()} if pk else {}


# ================================================================================================== part c
def _build(name, cfg, size=None):
    import torch

    from erftools.erf import model_kwargs_for_size
    from erftools.models import create_model

    kw = dict(cfg["models"].get(name, cfg.get("sb_models", {}).get(name, {})))
    if size is not None:
        kw.update(model_kwargs_for_size(name, size))
    torch.manual_seed(0)
    return create_model(name, "random", **kw)


def _peak_reset(dev):
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev):
    import torch
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None


def _official_erf(model, xs, dev):
    """The official visualize_erf procedure: training-time model, batch 1, parameters requiring grad, NCHW, fp32."""
    import numpy as np
    import torch

    model.set_conv_backend("native")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.to(dev)
    _peak_reset(dev)
    total, times = None, []
    for x in xs:
        t = time.perf_counter()
        sample = x.to(dev).requires_grad_(True)
        out = model.forward_features(sample)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        hh, ww = out.shape[-2:]
        centre = torch.relu(out[:, :, hh // 2, ww // 2]).sum()
        (grad,) = torch.autograd.grad(centre, sample)
        m = torch.relu(grad).sum((0, 1)).double().cpu().numpy()
        _sync(dev)
        times.append(time.perf_counter() - t)
        total = m if total is None else total + m
        del out, centre, grad, sample
    steady = statistics.median(times[1:] or times)
    return np.asarray(total / len(xs)), {"seconds_per_image": [round(t, 4) for t in times],
                                        "images_per_second": round(1 / steady, 3), "peak_bytes": _peak(dev)}


def _erftools_erf(model, xs, dev):
    """erftools' default compute_erf: a first call on one image prepares the model in place (fuses, freezes, moves
    it) and warms up; the second, timed, call finds it prepared (preparing again changes nothing)."""
    import torch

    from erftools.erf import compute_erf

    batch = torch.cat(xs)
    compute_erf(model, batch[:1], device=dev)
    _peak_reset(dev)
    t = time.perf_counter()
    res = compute_erf(model, batch, device=dev)
    _sync(dev)
    sec = time.perf_counter() - t
    return res.matrix, {"seconds": round(sec, 3), "images_per_second": round(len(xs) / sec, 3),
                        "peak_bytes": _peak(dev), "batch_size": res.batch_size, "timings": res.timings,
                        "prepared": res.prepared}


def _sides(matrix):
    from erftools.erf import area_ratios
    return [a.side for a in area_ratios(matrix)]


def part_erf(args, cfg, dev, out_path: Path, deadline: float) -> None:
    import copy

    import numpy as np
    import torch

    from erftools.ops import backend_report, reset_backend_report

    size, nimg = cfg["erf_size"], cfg["erf_images"]
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(1, 3, size, size, generator=gen) for _ in range(nimg)]
    # with the official procedure beside it: the two large-kernel families (UniRepLKNet's as-built training structure)
    jobs = [("replknet-31B", True), ("resnet-152", False), ("swin-B", False), ("unireplknet-S", True)]
    for name, with_official in jobs:
        rec = {"kind": "erf", "model": name, "size": size, "images": nimg}
        if _now() > deadline:
            rec["skipped"] = "time budget spent"
            _emit(out_path, rec)
            continue
        try:
            if _injected("erf", name):
                raise RuntimeError("injected failure (test of the error path)")
            model = _build(name, cfg, size)
            official = None
            if with_official:
                ref_model = copy.deepcopy(model)
                reset_backend_report()
                official, rec["official"] = _official_erf(ref_model, xs, dev)
                rec["official"]["backends"] = backend_report()["runs"]
                rec["official"]["sides"] = _sides(official)
                del ref_model
                _peak_reset(dev)
            reset_backend_report()
            mat, rec["erftools"] = _erftools_erf(model, xs, dev)
            rec["erftools"]["backends"] = backend_report()
            rec["erftools"]["sides"] = _sides(mat)
            if official is not None:
                a, b = np.asarray(mat, np.float64), np.asarray(official, np.float64)
                rec["max_relative_error_vs_official"] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
                rec["sides_equal"] = rec["erftools"]["sides"] == rec["official"]["sides"]
                rec["speedup_vs_official"] = round(rec["erftools"]["images_per_second"]
                                                   / rec["official"]["images_per_second"], 3)
                if rec["official"]["peak_bytes"]:
                    rec["memory_ratio_vs_official"] = round(rec["erftools"]["peak_bytes"]
                                                            / rec["official"]["peak_bytes"], 3)
            del model
        except Exception as exc:  # noqa: BLE001
            rec["error"] = f"{type(exc).__name__}: {exc}"[:800]
            rec["traceback"] = traceback.format_exc()[-2000:]
            if _fatal_cuda(exc):
                _emit(out_path, rec)
                raise
        _emit(out_path, rec)
        _peak_reset(dev)


# ================================================================================================== part d
def _stimuli(args, cfg, tmp: Path):
    """(stimuli, root, source): the cue-conflict set when present, else random 224 px PNGs."""
    import numpy as np
    from PIL import Image

    from erftools.shapebias import CATEGORIES, load_stimuli, parse_stimulus

    want = cfg["sb_images"]
    root = Path(args.stimuli) if args.stimuli else None
    if root is not None and root.is_dir():
        try:
            rep = load_stimuli(root, allow_incomplete=True, verify=False)
            if rep.stimuli:
                return rep.stimuli[:want], rep.root, f"cue-conflict ({min(want, len(rep.stimuli))} images)"
        except Exception as exc:  # noqa: BLE001 - fall back to random images, and say so
            print(f"  stimuli at {root} unusable ({exc}); using random images", flush=True)
    rng = np.random.default_rng(0)
    out = []
    for idx in range(want):
        shape = CATEGORIES[idx % len(CATEGORIES)]
        j = idx // len(CATEGORIES)
        texture = CATEGORIES[j % len(CATEGORIES)]
        rel = f"{shape}/{shape}{j // len(CATEGORIES) + 1}-{texture}1.png"
        (tmp / shape).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(tmp / rel, compress_level=1)
        out.append(parse_stimulus(rel))
    return out, tmp, f"random 224 px PNGs ({want}; no cue-conflict folder)"


def part_shapebias(args, cfg, dev, out_path: Path, deadline: float) -> None:
    import contextlib

    import numpy as np
    import torch

    from erftools.ops import backend_report, reset_backend_report
    from erftools.shapebias import evaluate

    with tempfile.TemporaryDirectory(prefix="gpu_check_stimuli_") as tmpd:
        t = time.perf_counter()
        stimuli, root, source = _stimuli(args, cfg, Path(tmpd))
        _emit(out_path, {"kind": "stimuli", "source": source, "images": len(stimuli),
                         "prepare_s": round(time.perf_counter() - t, 2)})
        bs = cfg["sb_batch"]
        for name in [*cfg["models"], *cfg.get("sb_models", {})]:
            rec = {"kind": "shapebias", "model": name, "images": len(stimuli), "batch_size": bs, "precisions": {}}
            if _now() > deadline:
                rec["skipped"] = "time budget spent"
                _emit(out_path, rec)
                continue
            try:
                model = _build(name, cfg)
                if name.startswith("openclip:"):  # the text classifier, built (not read from a cache) and timed
                    from erftools.shapebias.zeroshot import zero_shot_classifier

                    t = time.perf_counter()
                    model = zero_shot_classifier(model, device=str(dev), cache=False)
                    _sync(dev)
                    rec["text_classifier_s"] = round(time.perf_counter() - t, 3)
                decisions = {}
                for prec in ("fp32", "bf16"):
                    if _now() > deadline:
                        rec["precisions"][prec] = {"skipped": "time budget spent"}
                        continue
                    ctx = (contextlib.nullcontext() if prec == "fp32"
                           else torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
                    reset_backend_report()
                    with ctx:  # autocast is thread-local: evaluate runs the model in this thread
                        evaluate(model, stimuli[:bs], root, batch_size=bs, device=str(dev), progress=False)
                        _peak_reset(dev)
                        t = time.perf_counter()
                        decisions[prec] = evaluate(model, stimuli, root, batch_size=bs, device=str(dev),
                                                   progress=False)
                        _sync(dev)
                    sec = time.perf_counter() - t
                    rec["precisions"][prec] = {"seconds": round(sec, 3),
                                               "images_per_second": round(len(stimuli) / sec, 2),
                                               "peak_bytes": _peak(dev), "backends": backend_report()["runs"]}
                if len(decisions) == 2:
                    a, b = decisions["fp32"], decisions["bf16"]
                    rec["changed_decisions"] = int(sum(x.response != y.response for x, y in zip(a, b)))
                    rec["max_probability_difference"] = float(max(np.abs(x.probabilities - y.probabilities).max()
                                                                  for x, y in zip(a, b)))
                del model
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"[:800]
                rec["traceback"] = traceback.format_exc()[-2000:]
                if _fatal_cuda(exc):
                    _emit(out_path, rec)
                    raise
            _emit(out_path, rec)
            _peak_reset(dev)


# ================================================================================================== the table
def derive_table(cases: list[dict], env: dict) -> dict:
    """The CUDA table (``erftools/ops/_cuda_table.py`` format) from the kernel cases: per (dtype, K, plane class,
    mode), the backend/layout with the best worst-case speed-up over native NCHW across the class's shapes, if it
    passed every correctness gate and is at least ``MARGIN`` faster on each shape; else native as is."""
    from erftools.ops._cuda_table import FORMAT, plane_class

    groups: dict = {}
    for rec in cases:
        if rec.get("kind") == "case" and rec.get("backends"):
            groups.setdefault((rec["dtype"], rec["k"], plane_class(rec["h"], rec["w"])), []).append(rec)
    entries = []
    for (dname, k, plane), recs in sorted(groups.items()):
        for mode, passes in MODE_PASSES.items():
            def total(rec, b):
                r = rec["backends"].get(b) or {}
                if r.get("error") or r.get("skipped") or not all(r.get("correct", {}).get(p) for p in passes) \
                        or not all(r.get("ms", {}).get(p) for p in passes):
                    return None
                t = sum(r["ms"][p] for p in passes)
                if b == "native_cl":
                    t += len(passes) * (rec.get("convert_ms") or 0.0)  # NCHW in, converted and back
                return t

            if any(total(rec, "native_nchw") is None for rec in recs):
                continue  # no baseline measured for some shape: nothing to compare with
            best, best_speedup = None, 0.0
            for b in ("native_cl", "fft", "triton"):
                ts = [total(rec, b) for rec in recs]
                if any(t is None for t in ts):
                    continue
                s = min(total(rec, "native_nchw") / t for rec, t in zip(recs, ts))
                if s > best_speedup:
                    best, best_speedup = b, s
            e = {"arch": env.get("arch"), "dtype": dname, "kernel_size": k, "plane": plane, "mode": mode,
                 "gpu": env.get("gpu") or "cpu (smoke run)", "measured": env["date"][:10],
                 "shapes": [f"{r['n']}x{r['c']}x{r['h']}x{r['w']}" for r in recs], "baseline": "native/nchw",
                 "versions": {"torch": env.get("torch"), "triton": env.get("triton"), "cuda": env.get("cuda")}}
            if best is not None and best_speedup >= MARGIN:
                e.update(backend="native" if best == "native_cl" else best,
                         layout="channels_last" if best == "native_cl" else None, speedup=round(best_speedup, 3))
            else:
                e.update(backend="native", layout=None, speedup=1.0)
            entries.append(e)
    return {"format": FORMAT, "note": f"measured by benchmarks/gpu_check.py on {env.get('gpu') or 'CPU (smoke)'}",
            "entries": entries}


# ================================================================================================== parent
def run_part(part: str, args, deadline: float, parts_dir: Path, grace: float) -> dict:
    """Run a part's child process; a kernels process that dies (CUDA fault, crash) is restarted up to twice while
    time is left, continuing after the cases it finished, without a backend that raised a fatal CUDA error and
    without the case it died in."""
    out_path = parts_dir / f"{part}.jsonl"
    if out_path.exists():
        out_path.unlink()
    skip: set = set()
    status = run_child(part, args, deadline, out_path, grace, skip)
    attempts = [{k: status.get(k) for k in ("status", "returncode", "seconds", "stderr_tail")}]
    while part == "kernels" and status["status"] == "failed" and len(attempts) < 3 and _now() < deadline - 10:
        skip |= {r["fatal_backend"] for r in status["records"] if r.get("fatal_backend")}
        status = run_child(part, args, deadline, out_path, grace, skip)
        attempts.append({k: status.get(k) for k in ("status", "returncode", "seconds", "stderr_tail")})
    status["attempts"] = attempts
    status["seconds"] = round(sum(a["seconds"] or 0 for a in attempts), 1)
    return status


def run_child(part: str, args, deadline: float, out_path: Path, grace: float, skip=()) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--out", str(args.out),
           "--deadline", repr(deadline)]
    if skip:
        cmd += ["--skip-backends", ",".join(sorted(skip))]
    if args.ks:
        cmd += ["--ks", args.ks]
    if args.smoke:
        cmd.append("--smoke")
    if args.stimuli:
        cmd += ["--stimuli", args.stimuli]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if args.smoke:
        # one thread: toy tensors gain nothing from more, and a shared CPU makes thread spinning costly
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    t = time.perf_counter()
    status = {"part": part}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=max(5.0, deadline - _now() + grace))
        status.update(returncode=proc.returncode, stderr_tail=proc.stderr[-3000:])
        status["status"] = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        status.update(status="killed at the time budget", returncode=None,
                      stderr_tail=(exc.stderr or b"")[-3000:].decode(errors="replace")
                      if isinstance(exc.stderr, bytes) else (exc.stderr or "")[-3000:])
    status["seconds"] = round(time.perf_counter() - t, 1)
    status["records"] = _read_jsonl(out_path)
    return status


def child_main(args) -> int:
    import torch

    cfg = SMOKE if args.smoke else FULL
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    out_path = Path(args.out) / "parts" / f"{args.child}.jsonl"
    fn = {"kernels": part_kernels, "erf": part_erf, "shapebias": part_shapebias}[args.child]
    fn(args, cfg, dev, out_path, float(args.deadline))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--smoke", action="store_true", help="toy sizes on CPU, Triton through its interpreter")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the whole run in seconds "
                   "(default 420; smoke 180)")
    p.add_argument("--parts", default=",".join(RUN_ORDER), help=f"comma-separated subset of {','.join(PARTS)}, "
                   "run in this order")
    default_stimuli = Path(os.environ.get("ERFTOOLS_SHARED", str(ROOT.parent / "shared"))) / "data" / "cue-conflict"
    p.add_argument("--stimuli", default=str(default_stimuli), help="cue-conflict folder (random images if absent)")
    p.add_argument("--ks", default=None, help="only these kernel sizes in the kernels part (e.g. 31,29,27,13)")
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--skip-backends", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)

    t_start = _now()
    # smoke: 180 s since UniRepLKNet joined (its toy ERF with the official procedure and its shape bias: ~25 s more
    # on a loaded 2-core CPU, where the smoke run took 102 s of 120 s without them)
    budget = args.budget_s if args.budget_s is not None else (180.0 if args.smoke else 420.0)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    out = Path(args.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    env = environment(args.smoke)
    if not args.smoke and env["gpu"] is None:
        print("gpu_check: no CUDA device is visible; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    print(f"gpu_check: {env['gpu'] or 'CPU smoke run'} | torch {env['torch']} | CUDA {env['cuda']} | "
          f"Triton {env['triton']} | budget {budget:.0f} s", flush=True)
    results = {"env": env, "budget_s": budget, "parts": {}}
    grace = 20.0
    for i, part in enumerate(parts):
        left = t_start + budget - _now()
        share = SHARES[part] / sum(SHARES[q] for q in parts[i:])
        deadline = _now() + max(0.0, left) * share
        print(f"[{time.strftime('%H:%M:%S')}] {part}: up to {max(0.0, left) * share:.0f} s", flush=True)
        try:
            results["parts"][part] = run_part(part, args, deadline, out / "parts", grace)
        except Exception as exc:  # noqa: BLE001 - the parent itself must finish and write what it has
            results["parts"][part] = {"part": part, "status": f"could not run: {exc}", "records": []}
        print(f"    {results['parts'][part]['status']} in {results['parts'][part].get('seconds', 0)} s", flush=True)
    finish(results, out)
    results["wall_s"] = round(_now() - t_start, 1)
    _write(results, out)
    print(summary(results), flush=True)
    print(f"wrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'}, {out / 'cuda_table.json'}", flush=True)
    return 0


def finish(results: dict, out: Path) -> None:
    """Derived numbers: rates against the peaks, the CUDA table (validated through the dispatcher's loader)."""
    env = results["env"]
    kern = results["parts"].get("kernels", {}).get("records", [])
    ceil = next((r["matmul_tflops"] for r in kern if r.get("kind") == "ceilings"), {})
    peaks = env.get("datasheet_tflops") or ({"fp32": ceil.get("fp32"), "bf16": ceil.get("bf16")}
                                            if isinstance(ceil, dict) and "error" not in ceil else None)
    results["peaks_tflops"] = {"used": peaks, "measured_matmul": ceil,
                               "source": "datasheet" if env.get("datasheet_tflops") else "measured matrix product"}
    cases = kernel_cases(kern)
    for rec in cases:
        _derive_rates(rec, peaks)
    table = derive_table(cases, env)
    try:
        from erftools.ops._cuda_table import validate_table
        validate_table(table, "the derived table")
        results["cuda_table_valid"] = True
    except ValueError as exc:
        results["cuda_table_valid"] = str(exc)
    results["cuda_table"] = table
    (out / "cuda_table.json").write_text(json.dumps(table, indent=1) + "\n")


def _write(results: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(results))


def _fmt(v, spec=".3g"):
    return "" if v is None else format(v, spec)


def markdown(res: dict) -> str:
    env = res["env"]
    L = [f"# GPU check: {env.get('gpu') or 'CPU smoke run'}", "",
         f"GPU {env.get('gpu')} (compute capability {env.get('capability')}, {env.get('arch')}), driver "
         f"{env.get('driver')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, torch {env.get('torch')}, Triton "
         f"{env.get('triton')}, timm {env.get('timm')}, numpy {env.get('numpy')}, pillow {env.get('pillow')}; "
         f"commit {env.get('commit')}; {env.get('date')}. cuDNN TF32 allowed: {env.get('cudnn_allow_tf32')}. "
         f"Budget {res.get('budget_s')} s, wall {res.get('wall_s')} s. Produced by `benchmarks/gpu_check.py`"
         + (" --smoke (toy sizes on CPU: numbers are not GPU numbers)." if env.get("smoke") else "."), "",
         "| part | status | seconds |", "|---|---|---|"]
    for name, st in res["parts"].items():
        L.append(f"| {name} | {st.get('status')} | {st.get('seconds')} |")
    pk = res.get("peaks_tflops", {})
    L += ["", f"Peaks used for the fraction of peak ({pk.get('source')}): {pk.get('used')}; measured matrix "
          f"products: {pk.get('measured_matmul')}.", ""]
    kern = kernel_cases(res["parts"].get("kernels", {}).get("records", []))
    L += ["## a. Correctness against float64 (max|err| / max|ref|, first 8 channels)", "",
          "| shape (NxCxHxW) | K | dtype | backend | forward | input grad | weight grad | pass |",
          "|---|---|---|---|---|---|---|---|"]
    for rec in kern:
        tag = f"{rec['shape']} ({rec.get('n')}x{rec.get('c')}x{rec.get('h')}x{rec.get('w')})"
        if rec.get("skipped") or rec.get("error"):
            L.append(f"| {tag} | {rec['k']} | {rec['dtype']} | all | {rec.get('skipped') or rec.get('error')} | | | |")
            continue
        for b, r in rec["backends"].items():
            if r.get("skipped") or r.get("error"):
                L.append(f"| {tag} | {rec['k']} | {rec['dtype']} | {b} | {r.get('skipped') or r.get('error')} | | | |")
                continue
            e, ok = r["errors"], r["correct"]
            L.append(f"| {tag} | {rec['k']} | {rec['dtype']} | {b} | {_fmt(e.get('fwd'))} | {_fmt(e.get('dgrad'))} | "
                     f"{_fmt(e.get('wgrad'))} | {'yes' if ok and all(ok.values()) else 'NO'} |")
    L += ["", "## b. Timings (median ms; useful TFLOP/s; fraction of peak; speed-up vs native NCHW / cuDNN "
          "channels-last)", "",
          "| shape | K | dtype | backend | fwd ms | dgrad ms | wgrad ms | fwd TFLOP/s | fwd % peak | fwd x NCHW | "
          "fwd x CL | dgrad x NCHW | wgrad x NCHW |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in kern:
        for b, r in rec.get("backends", {}).items():
            ms = r.get("ms") or {}
            if not ms:
                continue
            fp = (r.get("fraction_of_peak") or {}).get("fwd")
            s, sc = r.get("speedup_vs_native_nchw", {}), r.get("speedup_vs_native_cl", {})
            L.append(f"| {rec['shape']} | {rec['k']} | {rec['dtype']} | {b}{' (few reps)' if r.get('few_reps') else ''}"
                     f" | {_fmt(ms.get('fwd'))} | {_fmt(ms.get('dgrad'))} | {_fmt(ms.get('wgrad'))} | "
                     f"{_fmt(r.get('tflops', {}).get('fwd'))} | {_fmt(None if fp is None else 100 * fp)} | "
                     f"{_fmt(s.get('fwd'))} | {_fmt(sc.get('fwd'))} | {_fmt(s.get('dgrad'))} | "
                     f"{_fmt(s.get('wgrad'))} |")
    L += ["", "## c. ERF at {} px".format(next((r["size"] for r in res["parts"].get("erf", {}).get("records", [])
                                                if "size" in r), "?")), "",
          "| model | procedure | images/s | peak GPU GiB | square sides (0.2/0.3/0.5/0.99) | max-rel vs official | "
          "sides equal | backends |", "|---|---|---|---|---|---|---|---|"]
    for r in res["parts"].get("erf", {}).get("records", []):
        if r.get("skipped") or r.get("error"):
            L.append(f"| {r['model']} | {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        for proc in ("official", "erftools"):
            d = r.get(proc)
            if not d:
                continue
            gib = None if d.get("peak_bytes") is None else d["peak_bytes"] / 2**30
            runs = d["backends"]["runs"] if isinstance(d.get("backends"), dict) else d.get("backends", [])
            used = sorted({f"{x['backend']}/K{x['kernel_size']}" for x in runs})
            L.append(f"| {r['model']} | {proc} | {_fmt(d.get('images_per_second'))} | {_fmt(gib)} | {d.get('sides')} | "
                     f"{_fmt(r.get('max_relative_error_vs_official')) if proc == 'erftools' else ''} | "
                     f"{r.get('sides_equal', '') if proc == 'erftools' else ''} | {', '.join(used)} |")
    sb = res["parts"].get("shapebias", {}).get("records", [])
    src = next((r for r in sb if r.get("kind") == "stimuli"), {})
    L += ["", f"## d. Shape bias: {src.get('source', '?')}", "",
          "| model | fp32 images/s | bf16 images/s | changed decisions (bf16 vs fp32) | max probability difference |",
          "|---|---|---|---|---|"]
    for r in sb:
        if r.get("kind") != "shapebias":
            continue
        if r.get("skipped") or r.get("error"):
            L.append(f"| {r['model']} | {r.get('skipped') or r.get('error')} | | | |")
            continue
        pr = r["precisions"]
        L.append(f"| {r['model']} | {_fmt(pr.get('fp32', {}).get('images_per_second'))} | "
                 f"{_fmt(pr.get('bf16', {}).get('images_per_second'))} | {r.get('changed_decisions')} of "
                 f"{r['images']} | {_fmt(r.get('max_probability_difference'))} |")
    table = res.get("cuda_table", {})
    L += ["", "## The measured CUDA table", "",
          f"Valid for the dispatcher: {res.get('cuda_table_valid')}. Entries that leave PyTorch's convolution: "
          f"{sum(1 for e in table.get('entries', []) if e['backend'] != 'native' or e.get('layout'))} of "
          f"{len(table.get('entries', []))}. To use it: copy `cuda_table.json` to `erftools/ops/cuda_table.json` and "
          "commit it (docs/ops.md).", "",
          "| dtype | K | plane | mode | backend | layout | speed-up vs native NCHW |", "|---|---|---|---|---|---|---|"]
    for e in table.get("entries", []):
        L.append(f"| {e['dtype']} | {e['kernel_size']} | {e['plane']} | {e['mode']} | {e['backend']} | "
                 f"{e.get('layout') or ''} | {e['speedup']} |")
    L += ["", "```json", json.dumps(table, indent=1), "```", ""]
    return "\n".join(L)


def summary(res: dict) -> str:
    L = ["", "== gpu_check summary =="]
    for name, st in res["parts"].items():
        L.append(f"{name}: {st.get('status')} ({st.get('seconds')} s, {len(st.get('records', []))} records)")
        if st.get("status") != "ok" and st.get("stderr_tail"):
            L.append("  " + st["stderr_tail"].strip().splitlines()[-1][:300] if st["stderr_tail"].strip() else "")
    kern = kernel_cases(res["parts"].get("kernels", {}).get("records", []))
    done = [r for r in kern if r.get("backends") and not r.get("skipped")]
    bad = [(r["shape"], r["k"], r["dtype"], b) for r in done for b, x in r["backends"].items()
           if x.get("correct") and not all(x["correct"].values())]
    errs = [(r["shape"], r["k"], r["dtype"], b, x["error"][:80]) for r in done for b, x in r["backends"].items()
            if x.get("error")]
    L.append(f"kernels: {len(done)} of {len(kern)} cases measured; correctness failures: {len(bad)} {bad[:6]}; "
             f"errors: {len(errs)} {errs[:3]}")
    for r in done:
        if r["k"] >= 27 or r["shape"].startswith("toy"):
            best = {b: x.get("speedup_vs_native_nchw", {}).get("fwd") for b, x in r["backends"].items()}
            L.append(f"  {r['shape']} K={r['k']} {r['dtype']}: fwd speed-up vs native NCHW "
                     + ", ".join(f"{b} {v:.2f}x" for b, v in best.items() if v))
    for r in res["parts"].get("erf", {}).get("records", []):
        if r.get("erftools"):
            L.append(f"erf {r['model']}: erftools {r['erftools']['images_per_second']} img/s"
                     + (f", official {r['official']['images_per_second']} img/s, max-rel "
                        f"{r['max_relative_error_vs_official']:.2e}, sides equal {r['sides_equal']}"
                        if r.get("official") else ""))
        elif r.get("error") or r.get("skipped"):
            L.append(f"erf {r['model']}: {r.get('error') or r.get('skipped')}")
    for r in res["parts"].get("shapebias", {}).get("records", []):
        if r.get("kind") == "shapebias":
            pr = r.get("precisions", {})
            L.append(f"shape bias {r['model']}: " + (r.get("error") or r.get("skipped") or
                     f"fp32 {pr.get('fp32', {}).get('images_per_second')} img/s, bf16 "
                     f"{pr.get('bf16', {}).get('images_per_second')} img/s, changed decisions "
                     f"{r.get('changed_decisions')}"))
    t = res.get("cuda_table", {})
    L.append(f"CUDA table: {len(t.get('entries', []))} entries, "
             f"{sum(1 for e in t.get('entries', []) if e['backend'] != 'native' or e.get('layout'))} leave native "
             f"NCHW; valid: {res.get('cuda_table_valid')}")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())

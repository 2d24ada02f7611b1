#!/usr/bin/env python
"""Benchmark the large-kernel depthwise convolution backends of ``erftools.ops.dwconv2d``.

For every large-kernel layer shape of RepLKNet-31B at 224x224 (batch 64) and 1024x1024 (batch 1 and 8), times the
forward, the input gradient (dgrad) and the weight gradient (wgrad) of each available backend:

  native     F.conv2d, NCHW                     (the reference; PyTorch's own kernels)
  native_cl  F.conv2d, channels_last            (oneDNN on CPU, cuDNN on GPU)
  fft        erftools FFT backend               (CPU and CUDA)
  triton     erftools Triton kernels            (CUDA only; fp32 direct kernel, fp16/bf16 Toeplitz tl.dot)

and reports useful TFLOP/s (2 FLOP per in-bounds tap: padding taps are not counted), the speed-up over native
NCHW and over native channels_last, and on GPUs the fraction of the device's peak. Writes JSON and markdown
(``reports/benchmarks/dwconv_bench.{json,md}`` by default) with the device name.

Timing: on CUDA ``triton.testing.do_bench`` (CUDA events, L2 flushed, warm-up) when Triton is installed, else CUDA
events; on CPU wall-clock ``time.perf_counter`` with one warm-up call, repeated until ``--min-time`` seconds or
``--repeats`` runs, reporting the minimum (the least disturbed run on a shared machine) and the median.

Heavy CPU cases: a (backend, pass) whose estimated time for one call exceeds ``--max-call-s`` (estimated from the
same layer at a smaller batch) is skipped and recorded as skipped with the estimate.

Examples::

    python benchmarks/dwconv_bench.py                   # everything that fits the budget
    python benchmarks/dwconv_bench.py --quick           # 1024 batch 1 only, forward + dgrad
    python benchmarks/dwconv_bench.py --shapes 1024x1 --backends native,fft --passes fwd
    python benchmarks/dwconv_bench.py --dtypes fp32,bf16    # GPU: add the tensor-core path
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from erftools.ops import available_backends, dwconv2d  # noqa: E402
from erftools.ops import _dispatch  # noqa: E402

# RepLKNet-31B large-kernel layers: (stage, channels, kernel, count, stride to the stage's map)
STAGES = [(1, 128, 31, 2, 4), (2, 256, 29, 2, 8), (3, 512, 27, 18, 16), (4, 1024, 13, 2, 32)]
SETS = {"1024x1": (1024, 1), "1024x8": (1024, 8), "224x64": (224, 64)}  # run in this order
PASSES = ("fwd", "dgrad", "wgrad")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# dense peak TFLOP/s (fp32 CUDA cores, 16-bit tensor cores) by device-name substring
PEAKS = [("H200", 66.9, 989.0), ("H100", 66.9, 989.0), ("A100", 19.5, 312.0), ("L40S", 91.6, 362.0),
         ("RTX 4090", 82.6, 165.0), ("A10", 31.2, 125.0), ("V100", 15.7, 125.0), ("T4", 8.1, 65.0),
         ("2080 Ti", 13.4, 53.8)]


def useful_flops(n, c, h, w, k):
    """2 FLOP per multiply-add whose input tap lies inside the image ('same' padding, stride 1)."""
    p = k // 2

    def taps(length):
        return sum(min(length - 1, i + p) - max(0, i - p) + 1 for i in range(length))

    return 2 * n * c * taps(h) * taps(w)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def peak_tflops(dev: torch.device, dtype: torch.dtype, override: float | None):
    if override:
        return override
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    for key, fp32, half in PEAKS:
        if key in name:
            return fp32 if dtype == torch.float32 else half
    return None


class Timer:
    def __init__(self, dev, min_time, repeats):
        self.dev, self.min_time, self.repeats = dev, min_time, repeats
        self.do_bench = None
        if dev.type == "cuda":
            try:
                from triton.testing import do_bench
                self.do_bench = do_bench
            except ImportError:
                pass

    def many(self, cases: dict, errors: dict) -> dict:
        """Time several backends of one case side by side. On CPU the runs are interleaved round-robin (so load from
        other processes hits every backend alike) and each backend's first call is a warm-up; a backend whose
        warm-up already took more than 2 s is not repeated (its warm-up is its measurement). Returns
        {backend: (best_s, median_s, runs)}; failures are written into ``errors``."""
        out, times, first = {}, {}, {}
        for b, fn in list(cases.items()):
            try:
                if self.dev.type == "cuda":
                    out[b] = self(fn)
                    continue
                t0 = time.perf_counter()
                fn()
                first[b] = time.perf_counter() - t0
                times[b] = []
            except Exception as e:  # noqa: BLE001
                errors[b] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"  error {b}: {e}", flush=True)
        if self.dev.type == "cuda" or not times:
            return out
        slow = {b for b, t in first.items() if t > 2.0}
        for b in slow:
            times[b].append(first[b])
        fast = [b for b in times if b not in slow]
        if fast:
            per_round = sum(first[b] for b in fast)
            rounds = min(self.repeats, max(2, int(self.min_time / max(per_round, 1e-9)) + 1))
            for _ in range(rounds):
                for b in fast:
                    t0 = time.perf_counter()
                    cases[b]()
                    times[b].append(time.perf_counter() - t0)
        for b, ts in times.items():
            out[b] = (min(ts), statistics.median(ts), len(ts))
        return out

    def __call__(self, fn):
        """Returns (best_s, median_s, runs)."""
        if self.dev.type == "cuda":
            if self.do_bench is not None:
                ms = self.do_bench(fn, warmup=25, rep=100, return_mode="all")
                return min(ms) / 1e3, statistics.median(ms) / 1e3, len(ms)
            fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(max(3, self.repeats)):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            return min(times), statistics.median(times), len(times)
        fn()  # warm-up (also fills the FFT weight-spectrum cache, as in an ERF loop)
        times, total = [], 0.0
        while len(times) < self.repeats and (total < self.min_time or len(times) < 1):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times.append(dt)
            total += dt
        return min(times), statistics.median(times), len(times)


def make_case(backend, pass_, n, c, h, w, k, dtype, dev):
    """A zero-argument callable running one pass of one backend, and the tensors it keeps alive."""
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, c, h, w, device=dev, dtype=torch.float32, generator=g).to(dtype)
    wt = (torch.randn(c, 1, k, k, device=dev, generator=g) / k).to(dtype)
    gy = torch.randn(n, c, h, w, device=dev, generator=g).to(dtype)
    name = backend
    if backend == "native_cl":
        x = x.contiguous(memory_format=torch.channels_last)
        gy = gy.contiguous(memory_format=torch.channels_last)
        name = "native"
    if pass_ == "fwd":
        def fn():
            with torch.no_grad():
                return dwconv2d(x, wt, backend=name)
        return fn
    if pass_ == "dgrad":
        xr = x.clone().requires_grad_()
        y = dwconv2d(xr, wt, backend=name)  # weight frozen: only the input gradient is computed

        def fn():
            return torch.autograd.grad(y, xr, gy, retain_graph=True)
        return fn
    wr = wt.clone().requires_grad_()
    y = dwconv2d(x, wr, backend=name)  # input frozen: only the weight gradient is computed

    def fn():
        return torch.autograd.grad(y, wr, gy, retain_graph=True)
    return fn


def probe_rate(backend, pass_, c, h, w, k, dtype, dev):
    """Seconds per useful FLOP of one call on a reduced proxy (same C and K, map at most 48x48, batch 1): lets the
    CPU run skip a measurement that would take minutes before paying for it."""
    ph, pw = min(h, 48), min(w, 48)
    fn = make_case(backend, pass_, 1, c, ph, pw, k, dtype, dev)
    fn()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / useful_flops(1, c, ph, pw, k)


def crossover(dev, timer, ks=(9, 11, 13, 15, 17, 21, 27, 31), shapes=((1, 128, 64, 64), (1, 512, 32, 32))):
    """Forward time of native NCHW vs fft over kernel sizes: where the FFT starts to win (the ``auto`` threshold)."""
    rows = []
    for (n, c, h, w) in shapes:
        for k in ks:
            row = {"shape": [n, c, h, w], "k": k}
            cases = {b: make_case(b, "fwd", n, c, h, w, k, torch.float32, dev) for b in ("native", "native_cl", "fft")}
            for b, (best, _, _) in timer.many(cases, {}).items():
                row[b] = best
            rows.append(row)
            print(f"  crossover {n}x{c}x{h}x{w} K={k}: native {row['native']*1e3:.2f} ms, "
                  f"native_cl {row['native_cl']*1e3:.2f} ms, fft {row['fft']*1e3:.2f} ms", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    ap.add_argument("--stages", default="1,2,3,4")
    ap.add_argument("--backends", default=None, help="comma list (default: all available + native_cl)")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--quick", action="store_true", help="1024x1 only, fwd+dgrad, no crossover sweep")
    ap.add_argument("--no-crossover", action="store_true")
    ap.add_argument("--min-time", type=float, default=0.5, help="CPU: keep repeating until this many seconds")
    ap.add_argument("--repeats", type=int, default=5, help="CPU: at most this many timed runs")
    ap.add_argument("--max-call-s", type=float, default=10.0,
                    help="CPU: skip a measurement whose estimated single call exceeds this (recorded as skipped)")
    ap.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device peak (TFLOP/s)")
    ap.add_argument("--out", default=str(REPO / "reports" / "benchmarks" / "dwconv_bench"))
    args = ap.parse_args(argv)

    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.shapes, args.passes, args.no_crossover = "1024x1", "fwd,dgrad", True
    backends = (args.backends.split(",") if args.backends else
                ["native", "native_cl"] + [b for b in available_backends(dev) if b != "native"])
    timer = Timer(dev, args.min_time, args.repeats)
    stages = [s for s in STAGES if str(s[0]) in args.stages.split(",")]
    results, skipped = [], []
    per_image = {}  # (stage, backend, pass, dtype) -> seconds per useful FLOP, to estimate heavier cases

    print(f"device: {device_name(dev)}; backends: {backends}", flush=True)
    for set_name in args.shapes.split(","):
        res, batch = SETS[set_name]
        for (stage, c, k, count, stride) in stages:
            h = w = res // stride
            for dt_name in args.dtypes.split(","):
                dtype = DTYPES[dt_name]
                flops = useful_flops(batch, c, h, w, k)
                peak = peak_tflops(dev, dtype, args.peak_tflops)
                for pass_ in args.passes.split(","):
                    row = {"set": set_name, "resolution": res, "batch": batch, "stage": stage, "layers": count,
                           "shape": [batch, c, h, w], "k": k, "dtype": dt_name, "pass": pass_,
                           "useful_gflop": flops / 1e9, "peak_tflops": peak, "times": {}}
                    cases = {}
                    for b in backends:
                        if b == "triton" and dev.type == "cpu":
                            continue
                        key = (stage, b, pass_, dt_name)
                        if dev.type == "cpu" and key not in per_image:
                            per_image[key] = probe_rate(b, pass_, c, h, w, k, dtype, dev)
                        est = per_image.get(key, 0.0) * flops
                        if dev.type == "cpu" and est > args.max_call_s:
                            reason = (f"estimated {est:.1f} s per call (from a smaller run of this layer) > --max-call-s "
                                      f"{args.max_call_s:g}")
                            skipped.append({"set": set_name, "stage": stage, "backend": b, "pass": pass_,
                                            "dtype": dt_name, "reason": reason, "estimated_s": est})
                            row["times"][b] = {"skipped": reason, "estimated_s": est}
                            print(f"  skip {set_name} stage{stage} {b} {pass_}: {reason}", flush=True)
                            continue
                        try:
                            cases[b] = make_case(b, pass_, batch, c, h, w, k, dtype, dev)
                        except Exception as e:  # noqa: BLE001 - a backend failing must not stop the run
                            row["times"][b] = {"error": f"{type(e).__name__}: {e}"[:300]}
                    for b, (best, med, runs) in timer.many(cases, row["times"]).items():
                        per_image[(stage, b, pass_, dt_name)] = best / flops
                        entry = {"best_s": best, "median_s": med, "runs": runs, "tflops": flops / best / 1e12}
                        if peak:
                            entry["peak_fraction"] = entry["tflops"] / peak
                        row["times"][b] = entry
                        print(f"  {set_name} stage{stage} C{c} {h}x{w} K{k} {dt_name} {pass_:5s} {b:9s} "
                              f"{best*1e3:9.2f} ms  {entry['tflops']*1e3:8.1f} GFLOP/s  ({runs} runs)", flush=True)
                    del cases
                    for b, e in row["times"].items():
                        if "best_s" not in e:
                            continue
                        for base in ("native", "native_cl"):
                            be = row["times"].get(base, {})
                            if "best_s" in be:
                                e[f"speedup_vs_{base}"] = be["best_s"] / e["best_s"]
                    results.append(row)

    cross = [] if args.no_crossover or dev.type != "cpu" else crossover(dev, timer)
    meta = {"device": device_name(dev), "device_type": dev.type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv[1:], "auto_policy": {"SMALL_K": _dispatch.SMALL_K, "FFT_MIN_K_CPU": _dispatch.FFT_MIN_K_CPU,
                                                 "TRITON_MIN_K_CUDA": _dispatch.TRITON_MIN_K_CUDA},
            "timing": "triton.testing.do_bench" if (dev.type == "cuda" and timer.do_bench) else
                      ("CUDA events" if dev.type == "cuda" else "perf_counter, min over runs"),
            "flops": "useful: 2 per in-bounds tap"}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    out = {"meta": meta, "results": results, "skipped": skipped, "crossover": cross,
           "totals": totals(results, backends)}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    path.with_suffix(".md").write_text(markdown(out, backends))
    print(f"wrote {path.with_suffix('.json')} and {path.with_suffix('.md')}")


def totals(results, backends):
    """All large-kernel layers of the network (each shape times its layer count), per set, dtype and pass."""
    out = {}
    for r in results:
        key = f"{r['set']} {r['dtype']} {r['pass']}"
        d = out.setdefault(key, {b: 0.0 for b in backends})
        for b in backends:
            e = r["times"].get(b)
            if d.get(b) is None:
                continue
            if not e or "best_s" not in e:
                if b in r["times"] or b != "triton":
                    d[b] = None
                continue
            d[b] += e["best_s"] * r["layers"]
    return {k: {b: v for b, v in d.items() if v != 0.0} for k, d in out.items()}


def _fmt_t(e):
    if e is None:
        return "-"
    if "best_s" in e:
        s = e["best_s"]
        return f"{s*1e3:.1f} ms" if s < 10 else f"{s:.1f} s"
    if "skipped" in e:
        return f"skipped (~{e['estimated_s']:.0f} s)"
    return "error"


def markdown(out, backends):
    m = out["meta"]
    lines = ["# dwconv2d benchmark", "",
             f"- device: **{m['device']}** ({m['device_type']}), torch {m['torch']}, triton {m['triton']}, "
             f"{m['threads']} threads, {m['date']}",
             f"- timing: {m['timing']}; FLOPs: {m['flops']}; speed-up = native time / backend time "
             "(> 1: faster than native)",
             f"- arguments: `{' '.join(m['argv']) or '(defaults)'}`", ""]
    fast = [b for b in backends if b not in ("native",)]
    head = ["set", "stage", "shape (N,C,H,W)", "K", "dtype", "pass"] + [f"{b}" for b in backends] + \
        [f"{b} GFLOP/s" for b in backends] + [f"{b} vs native" for b in fast if b != "native_cl"] + \
        [f"{b} vs native_cl" for b in fast if b != "native_cl"]
    if any(r.get("peak_tflops") for r in out["results"]):
        head += [f"{b} % peak" for b in backends]
    lines += ["## Per layer", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in out["results"]:
        t = r["times"]
        cells = [r["set"], str(r["stage"]), "x".join(map(str, r["shape"])), str(r["k"]), r["dtype"], r["pass"]]
        cells += [_fmt_t(t.get(b)) for b in backends]
        cells += [f"{t[b]['tflops']*1e3:.1f}" if "best_s" in t.get(b, {}) else "-" for b in backends]
        for base in ("native", "native_cl"):
            for b in fast:
                if b == "native_cl":
                    continue
                v = t.get(b, {}).get(f"speedup_vs_{base}")
                cells.append(f"{v:.2f}x" if v else "-")
        if "% peak" in head[-1]:
            cells += [f"{100*t[b]['peak_fraction']:.1f}%" if "peak_fraction" in t.get(b, {}) else "-"
                      for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## All large-kernel layers of RepLKNet-31B (shape time x layer count: 2, 2, 18, 2)", "",
              "| set dtype pass | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    for k, d in out["totals"].items():
        lines.append(f"| {k} | " + " | ".join(("-" if d.get(b) is None else
                                                (f"{d[b]*1e3:.1f} ms" if d[b] < 10 else f"{d[b]:.1f} s"))
                                               for b in backends) + " |")
    if out["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['set']} stage {s['stage']} {s['backend']} {s['pass']} ({s['dtype']}): {s['reason']}"
                  for s in out["skipped"]]
    if out["crossover"]:
        lines += ["", "## Forward crossover native vs fft (CPU; sets `auto`'s FFT_MIN_K_CPU)", "",
                  "| shape | K | native | native_cl | fft |", "|---|---|---|---|---|"]
        for r in out["crossover"]:
            lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['k']} | {r['native']*1e3:.2f} ms | "
                         f"{r['native_cl']*1e3:.2f} ms | {r['fft']*1e3:.2f} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

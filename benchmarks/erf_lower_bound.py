"""How far is the ERF of RepLKNet-31B at 1024x1024 from this CPU's lower bound?

Lower bound per image = (dense convolution work, forward + input gradient) / (this CPU's measured GEMM rate)
                      + (large-kernel depthwise work, forward + input gradient, with the backend erftools uses).
Dense work is every convolution but the large-kernel ones (the 1x1 convolutions, the stem and transitions), counted
as multiply-adds of the re-parameterised, BN-fused model that erftools runs. Elementwise layers (ReLU, GELU, residual
adds) are left out, so the bound is optimistic. The erftools ERF itself is timed in the same run, so the ratio is
measured side by side.

    python benchmarks/erf_lower_bound.py [--size 1024] [--images 2]

Writes reports/benchmarks/erf_lower_bound.json and .md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def gemm_rate(repeats: int = 5) -> dict:
    """fp32 GEMM GFLOP/s on shapes like RepLKNet's 1x1 convolutions at 1024 px (pixels x C_in @ C_in x C_out)."""
    import torch.nn.functional as F

    rates = {}
    for m, k, n in [(65536, 128, 512), (16384, 256, 1024), (4096, 512, 2048), (1024, 1024, 4096)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
        rates[f"mm {m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
        # the same product as a channels-last 1x1 convolution (what the model runs, through oneDNN)
        side = int(m ** 0.5)
        x = torch.randn(1, k, side, side).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, k, 1, 1)
        F.conv2d(x, w)
        best = min(_timed(lambda: F.conv2d(x, w)) for _ in range(repeats))
        rates[f"conv1x1 {k}->{n} at {side}x{side}"] = 2 * m * k * n / best / 1e9
    return {"per_shape_gflops": rates, "best_gflops": max(rates.values())}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def count_work(model, size: int) -> tuple[int, list]:
    """Dense multiply-adds (all convs except the large depthwise ones) and the large-kernel layer shapes."""
    from erftools.ops import DepthwiseConv2d

    dense, large, hooks = [0], [], []

    def hook(mod, inp, out):
        n, c_out, h, w = out.shape
        if isinstance(mod, DepthwiseConv2d) and mod.kernel_size[0] > 7:
            large.append((tuple(inp[0].shape), mod.kernel_size[0]))
        else:
            k = mod.kernel_size[0] * mod.kernel_size[1]
            dense[0] += n * c_out * h * w * k * (mod.in_channels // mod.groups)

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model.forward_features(torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    return dense[0], large


def large_kernel_time(shapes, repeats: int = 2) -> float:
    """Forward + input gradient of every large-kernel layer, as erftools runs them (channels-last, auto backend)."""
    from erftools.ops import dwconv2d

    total = 0.0
    cache = {}
    for shape, k in shapes:
        key = (shape, k)
        if key not in cache:
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(True)
            w = torch.randn(shape[1], 1, k, k)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                y = dwconv2d(x, w)
                torch.autograd.grad(y, x, torch.ones_like(y))
                times.append(time.perf_counter() - t)
            cache[key] = min(times)
        total += cache[key]
    return total


def erf_time(size: int, images: int) -> list[float]:
    from erftools.erf import compute_erf
    from erftools.models import create_model

    torch.manual_seed(0)
    model = create_model("replknet-31B", weights="random")
    times = []
    for i in range(images + 1):  # the first image is a warm-up
        x = torch.randn(1, 3, size, size)
        t = time.perf_counter()
        compute_erf(model, x)
        times.append(time.perf_counter() - t)
    return times[1:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks"))
    args = p.parse_args(argv)

    from erftools.models import create_model

    model = create_model("replknet-31B", weights="random").eval().fuse_bn()
    model.to(memory_format=torch.channels_last)
    dense_macs, large = count_work(model, args.size)
    del model
    gemm = gemm_rate()
    dense_s = 2 * (2 * dense_macs) / (gemm["best_gflops"] * 1e9)  # forward + input gradient
    large_s = large_kernel_time(large)
    measured = erf_time(args.size, args.images)
    per_image = statistics.median(measured)
    bound = dense_s + large_s
    rec = {
        "size": args.size, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "dense_gmac_forward": dense_macs / 1e9,
        "large_kernel_layers": len(large), "gemm": gemm, "dense_seconds_fwd_dgrad": dense_s,
        "large_kernel_seconds_fwd_dgrad": large_s, "lower_bound_seconds": bound,
        "erftools_seconds_per_image": per_image, "erftools_all_images": measured,
        "erftools_over_bound": per_image / bound,
        "command": "python benchmarks/erf_lower_bound.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "erf_lower_bound.json").write_text(json.dumps(rec, indent=2) + "\n")
    md = f"""# ERF of RepLKNet-31B at {args.size}x{args.size}: distance to this CPU's lower bound

{torch.get_num_threads()} torch threads, torch {torch.__version__}; produced by `{rec['command'].strip()}` (one run: the
bound's rates and the ERF time were measured side by side).

| quantity | value |
|---|---|
| dense convolution work (1x1, stem, transitions), forward | {dense_macs / 1e9:.1f} GMAC |
| measured fp32 GEMM rate (best of RepLKNet-like shapes, `torch.mm` and channels-last 1x1 conv) | {gemm['best_gflops']:.1f} GFLOP/s |
| dense work, forward + input gradient, at that rate | {dense_s:.2f} s |
| {len(large)} large-kernel layers, forward + input gradient (erftools' backend, channels-last) | {large_s:.2f} s |
| **lower bound per image** | **{bound:.2f} s** |
| erftools ERF per image (median of {len(measured)}) | {per_image:.2f} s |
| **erftools / lower bound** | **{per_image / bound:.2f}x** |

The bound leaves out elementwise work (ReLU, GELU, residual adds, the per-image ReLU and sums of the ERF itself) and
memory traffic, so a ratio near 1 is out of reach; what remains above it is that work plus oneDNN's overheads.
"""
    (out / "erf_lower_bound.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

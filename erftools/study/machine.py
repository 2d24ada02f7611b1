"""The machine at hand, measured in seconds for ``--dry-run``: its fp32 GEMM rate now (so the committed benchmarks'
times can be scaled to it); whether the download hosts can be reached is :func:`erftools._download.reachable`.

* :func:`gemm_rate`: the best GFLOP/s of ``torch.mm`` and of the same product as a channels-last 1x1 convolution
  (what the models run, through oneDNN), best of several calls each, on two shapes of RepLKNet's 1x1 convolutions
  (the shapes of ``benchmarks/erf_lower_bound.py``); about a second on a 2-core CPU. The benchmarks record the same
  rate beside their timings (``gemm.best_gflops``), so a time scales by ``benchmark rate / rate now``.
"""
from __future__ import annotations

import time

#: (m, k, n) of the products timed: pixels x C_in @ C_in x C_out of two of RepLKNet-31B's 1x1 convolutions at 1024
SHAPES = ((4096, 512, 2048), (1024, 1024, 4096))

__all__ = ["gemm_rate"]


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rate(repeats: int = 3) -> float:
    """This machine's fp32 GEMM rate now, in GFLOP/s (see the module's docstring)."""
    import torch
    import torch.nn.functional as F

    best = 0.0
    with torch.inference_mode():
        for m, k, n in SHAPES:
            flop = 2 * m * k * n
            a, b = torch.randn(m, k), torch.randn(k, n)
            best = max(best, flop / _best(lambda: torch.mm(a, b), repeats) / 1e9)
            side = int(m ** 0.5)
            x = torch.randn(1, k, side, side).contiguous(memory_format=torch.channels_last)
            w = torch.randn(n, k, 1, 1)
            best = max(best, flop / _best(lambda: F.conv2d(x, w), repeats) / 1e9)
    return best

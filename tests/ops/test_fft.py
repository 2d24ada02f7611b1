"""The FFT backend against native: forward and the three gradients, float64 gradcheck, reduced precision, the
weight-spectrum cache and the no-weight-gradient path.

Tolerances (max|err| / max|ref|): fp32 forward and gradients 1e-5. The FFT's error is about eps * log2(L^2) times
a small constant relative to the output's scale (measured ~1e-6 at K=31, 256x256), native's is about eps * sqrt(K^2);
1e-5 is 10x above both, yet any wrong tap, offset or wrap-around gives an O(1) error.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erftools.ops import dwconv2d
from erftools.ops import _fft
from erftools.ops._fft import cache_info, clear_cache, fft_dwconv2d, fft_size


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _grads(fn, x, w, b, gy):
    xs = x.clone().requires_grad_()
    ws = w.clone().requires_grad_()
    bs = b.clone().requires_grad_() if b is not None else None
    y = fn(xs, ws, bs)
    y.backward(gy)
    return y.detach(), xs.grad, ws.grad, (bs.grad if bs is not None else None)


SHAPES = [  # (N, C, H, W, K)
    (1, 3, 8, 8, 3), (2, 5, 13, 7, 5), (1, 4, 16, 16, 9), (3, 7, 11, 20, 13), (4, 2, 9, 9, 15),
    (1, 6, 17, 12, 17), (2, 3, 10, 31, 21), (1, 2, 32, 24, 27), (2, 3, 5, 6, 29), (1, 17, 31, 33, 31),
    (1, 1, 1, 1, 31), (2, 9, 56, 56, 31),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_bias", [True, False])
def test_fft_matches_native_fp32(shape, with_bias):
    n, c, h, w, k = shape
    g = torch.Generator().manual_seed(n * 1000 + c * 100 + h + w + k)
    x = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(c, 1, k, k, generator=g) / k
    b = torch.randn(c, generator=g) if with_bias else None
    gy = torch.randn(n, c, h, w, generator=g)
    got = _grads(lambda a, bw, bb: dwconv2d(a, bw, bb, backend="fft"), x, wt, b, gy)
    ref = _grads(lambda a, bw, bb: F.conv2d(a, bw, bb, padding=k // 2, groups=c), x, wt, b, gy)
    for name, a, r in zip(("fwd", "dgrad", "wgrad", "bgrad"), got, ref):
        if r is None:
            assert a is None
            continue
        assert a.shape == r.shape and a.dtype == r.dtype
        assert rel(a, r) <= 1e-5, name


@pytest.mark.parametrize("shape", [(1, 2, 5, 4, 3), (2, 2, 4, 6, 5), (1, 1, 3, 3, 7)])
def test_gradcheck_float64(shape):
    n, c, h, w, k = shape
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(c, 1, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, bw, bb: fft_dwconv2d(a, bw, bb, cache=False), (x, wt, b))


def test_float64_is_exact_to_float64_rounding():
    x = torch.randn(2, 3, 19, 14, dtype=torch.float64)
    wt = torch.randn(3, 1, 31, 31, dtype=torch.float64)
    y = fft_dwconv2d(x, wt)
    assert y.dtype == torch.float64
    assert rel(y, F.conv2d(x, wt, padding=15, groups=3)) <= 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_reduced_precision(dtype, tol):
    """fp16/bf16 are computed in fp32 and rounded once: the error vs a float64 reference of the same rounded inputs is
    the output rounding, half an ulp (2^-11 fp16, 2^-8 bf16) of the value, below 2e-3 / 1e-2 of the maximum."""
    x = torch.randn(2, 3, 12, 9).to(dtype)
    wt = (torch.randn(3, 1, 13, 13) / 13).to(dtype)
    gy = torch.randn(2, 3, 12, 9).to(dtype)
    y, gx, gw, _ = _grads(lambda a, bw, bb: fft_dwconv2d(a, bw, bb), x, wt, None, gy)
    r = _grads(lambda a, bw, bb: F.conv2d(a, bw, bb, padding=6, groups=3), x.double(), wt.double(), None,
               gy.double())
    assert y.dtype == gx.dtype == gw.dtype == dtype
    for a, b in zip((y, gx, gw), r[:3]):
        assert rel(a, b) <= tol


def test_channels_last_and_noncontiguous_inputs():
    x = torch.randn(2, 4, 15, 12).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(4, 1, 17, 17) / 17
    y = fft_dwconv2d(x, wt)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel(y, F.conv2d(x, wt, padding=8, groups=4)) <= 1e-5
    xt = torch.randn(2, 4, 12, 15).transpose(2, 3)  # non-contiguous view
    assert rel(fft_dwconv2d(xt, wt), F.conv2d(xt, wt, padding=8, groups=4)) <= 1e-5


@pytest.mark.parametrize("n,k,expected", [(256, 31, 288), (128, 29, 144), (64, 27, 80), (32, 13, 40),
                                          (56, 31, 72), (1, 31, 16), (7, 3, 8)])
def test_fft_size_is_smooth_and_large_enough(n, k, expected):
    size = fft_size(n, k)
    assert size == expected and size >= n + k // 2
    m = size
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    assert m == 1


def test_weight_spectrum_cache_hits_and_invalidates():
    clear_cache()
    conv = torch.nn.Conv2d(3, 3, 9, padding=4, groups=3, bias=False).requires_grad_(False)
    x = torch.randn(1, 3, 10, 10)
    y1 = fft_dwconv2d(x, conv.weight)
    y2 = fft_dwconv2d(x, conv.weight)
    info = cache_info()
    assert info["misses"] == 1 and info["hits"] == 1 and torch.equal(y1, y2)
    conv.weight.data.mul_(2.0)  # through .data: the version counter does not see this
    y3 = fft_dwconv2d(x, conv.weight)
    assert rel(y3, 2 * y1) <= 1e-6
    assert cache_info()["misses"] == 2
    del conv
    import gc
    gc.collect()
    assert cache_info()["entries"] == 0  # entry dropped with its weight


def test_cache_disabled_by_env(monkeypatch):
    clear_cache()
    monkeypatch.setenv("ERFTOOLS_FFT_CACHE_MB", "0")
    w = torch.randn(2, 1, 7, 7)
    fft_dwconv2d(torch.randn(1, 2, 8, 8), w)
    assert cache_info()["entries"] == 0


def test_no_weight_gradient_when_weight_frozen(monkeypatch):
    """The ERF case: only the input needs a gradient; the weight-gradient transforms must not run."""
    calls = []
    real = _fft.torch.einsum

    def spy(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(_fft.torch, "einsum", spy)
    x = torch.randn(1, 2, 12, 12, requires_grad=True)
    w = torch.randn(2, 1, 9, 9)  # requires_grad False
    fft_dwconv2d(x, w).sum().backward()
    assert x.grad is not None and calls == []
    w.requires_grad_(True)
    fft_dwconv2d(x, w).sum().backward()
    assert calls and w.grad is not None


def test_weight_grad_only():
    x = torch.randn(2, 3, 9, 9)
    w = torch.randn(3, 1, 5, 5, requires_grad=True)
    fft_dwconv2d(x, w).square().sum().backward()
    w2 = w.detach().clone().requires_grad_()
    F.conv2d(x, w2, padding=2, groups=3).square().sum().backward()
    assert rel(w.grad, w2.grad) <= 1e-5


@pytest.mark.parametrize("shape", [(1, 8, 64, 64, 31), (2, 4, 32, 48, 13), (1, 16, 16, 16, 27)])
def test_fft_layer_error_not_above_native(shape):
    """Per layer, against float64: the FFT's fp32 forward and input-gradient errors (all an ERF map needs) are no larger
    than native's direct summation, with no slack. The weight gradient of a small map is a short reduction (H*W terms
    per tap) that native sums very accurately, so there the FFT's normwise error may be up to 2x native's (both a few
    1e-7)."""
    n, c, h, w, k = shape
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(c, 1, k, k, generator=g) / k
    gy = torch.randn(n, c, h, w, generator=g)
    ref = _grads(lambda a, bw, bb: F.conv2d(a, bw, bb, padding=k // 2, groups=c), x.double(), wt.double(), None,
                 gy.double())
    nat = _grads(lambda a, bw, bb: F.conv2d(a, bw, bb, padding=k // 2, groups=c), x, wt, None, gy)
    fft = _grads(lambda a, bw, bb: fft_dwconv2d(a, bw, bb), x, wt, None, gy)
    for i in range(2):  # forward, input gradient
        assert rel(fft[i], ref[i]) <= rel(nat[i], ref[i]), i
    assert rel(fft[2], ref[2]) <= 2 * rel(nat[2], ref[2])

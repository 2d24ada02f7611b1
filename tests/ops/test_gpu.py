"""CUDA checks (skipped without a GPU): Triton fp32/fp16/bf16 and the FFT on CUDA against float64 references at the
RepLKNet-31B large-kernel layer shapes (reduced batch/size), and the auto policy on CUDA.

Tolerances (max|err| / max|ref|, same rounded inputs): fp32 2e-6 for the direct kernel (fp32 FMA accumulation) and
1e-5 for the FFT (cuFFT fp32); fp16 2e-3 and bf16 1e-2 (fp32 accumulation, one output rounding: half an ulp,
2^-11 / 2^-8 of the value, plus the rounding of the incoming gradient for the backward kernels).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erftools.ops import available_backends, dwconv2d, resolve_backend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

LAYERS = [(2, 128, 64, 64, 31), (1, 256, 32, 40, 29), (3, 100, 17, 23, 27), (2, 1024, 32, 32, 13), (1, 7, 9, 11, 5)]
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def rel(a, b):
    return float((a.double() - b).abs().max() / b.abs().max())


def _run(backend, x, w, b, gy):
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    y = dwconv2d(xs, ws, bs, backend=backend)
    y.backward(gy)
    return y.detach(), xs.grad, ws.grad, bs.grad


def _ref(x, w, b, gy):
    xs, ws, bs = (t.double().requires_grad_() for t in (x, w, b))
    k = w.shape[-1]
    y = F.conv2d(xs, ws, bs, padding=k // 2, groups=x.shape[1])
    y.backward(gy.double())
    return y.detach(), xs.grad, ws.grad, bs.grad


@pytest.mark.parametrize("shape", LAYERS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend,dtype", [("triton", torch.float32), ("triton", torch.float16),
                                           ("triton", torch.bfloat16), ("fft", torch.float32)])
def test_cuda_backends_match_float64(shape, backend, dtype):
    if backend == "triton" and "triton" not in available_backends("cuda"):
        pytest.skip("triton not installed")
    n, c, h, w, k = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, c, h, w, device="cuda", generator=g).to(dtype)
    wt = (torch.randn(c, 1, k, k, device="cuda", generator=g) / k).to(dtype)
    b = torch.randn(c, device="cuda", generator=g).to(dtype)
    gy = torch.randn(n, c, h, w, device="cuda", generator=g).to(dtype)
    got = _run(backend, x, wt, b, gy)
    ref = _ref(x, wt, b, gy)
    tol = 1e-5 if backend == "fft" else TOL[dtype]
    for name, a, r in zip(("fwd", "dgrad", "wgrad", "bgrad"), got, ref):
        assert a.dtype == dtype
        assert rel(a, r) <= (tol if name != "wgrad" or dtype == torch.float32 else 2 * tol), name


def test_triton_channels_last_and_toeplitz_fp32_on_cuda():
    if "triton" not in available_backends("cuda"):
        pytest.skip("triton not installed")
    from erftools.ops._triton import triton_dwconv2d
    x = torch.randn(2, 64, 40, 33, device="cuda").contiguous(memory_format=torch.channels_last)
    wt = torch.randn(64, 1, 31, 31, device="cuda") / 31
    ref = F.conv2d(x.double(), wt.double(), padding=15, groups=64)
    for path in ("direct", "toeplitz"):
        y = triton_dwconv2d(x, wt, path=path)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert rel(y, ref) <= 2e-6, path


def test_auto_on_cuda_follows_the_measurement_table():
    from erftools.ops import _cuda_table, _dispatch
    x = torch.randn(1, 4, 8, 8, device="cuda")
    assert resolve_backend("auto", x, 5) == "native"
    arch = _dispatch._cuda_arch(x.device)
    if not any(e["arch"] == arch for e in _cuda_table.load_table()["entries"]):
        for k in (13, 27, 31):  # nothing measured on this architecture: PyTorch's convolution, never a guess
            assert resolve_backend("auto", x, k) == "native"
            assert resolve_backend("auto", x.bfloat16(), k, weight_grad=False) == "native"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selfcheck_passes_on_cuda(dtype):
    from erftools.ops import backend_report, reset_backend_report
    reset_backend_report(self_checks=True)
    x = torch.randn(2, 8, 40, 40, device="cuda", dtype=dtype)
    w = torch.randn(8, 1, 31, 31, device="cuda", dtype=dtype) / 31
    for b in available_backends("cuda")[1:]:
        dwconv2d(x, w, backend=b)
    rep = backend_report()
    assert rep["disabled"] == [], rep
    assert {c["backend"] for c in rep["self_checks"] if c["ok"]} == set(available_backends("cuda")[1:])
    reset_backend_report(self_checks=True)


def test_replknet31b_cuda_backends_equal_native():
    from erftools.models import create_model
    torch.manual_seed(0)
    m = create_model("replknet-31B", weights="random").eval().requires_grad_(False).cuda()
    x = torch.randn(2, 3, 128, 128, device="cuda")
    with torch.no_grad():
        torch.backends.cudnn.allow_tf32 = False
        ref = m.set_conv_backend("native").forward_features(x)
        for b in available_backends("cuda")[1:]:
            y = m.set_conv_backend(b).forward_features(x)
            assert rel(y, ref.double()) <= 1e-4, b

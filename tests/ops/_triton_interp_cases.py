"""Run the Triton kernels through the CPU interpreter and print one JSON line per case (used by
test_triton_interpreter.py in a subprocess, because TRITON_INTERPRET=1 must be set before Triton compiles anything).

Each case reports the error of forward, input gradient, weight gradient and bias gradient against a float64
``F.conv2d`` reference computed from the *same rounded inputs*, as max|a - ref| / max|ref| (the bias gradient, a
sum of output gradients of both signs, against the largest sum of their magnitudes). Inputs are seeded by the case
name (crc32), the same in every process.
"""
from __future__ import annotations

import json
import os
import sys
import zlib

if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from erftools.ops import dwconv2d, available_backends, resolve_backend  # noqa: E402
from erftools.ops._triton import triton_dwconv2d  # noqa: E402

DT = {"fp32": torch.float32, "fp16": torch.float16}

# (name, N, C, H, W, K, dtype, path, bias, channels_last, weight_grad)
CASES = [
    ("direct-k3-multi-tile", 1, 3, 17, 33, 3, "fp32", "direct", True, False, True),
    ("direct-k13-batch2", 2, 2, 9, 8, 13, "fp32", "direct", True, False, True),
    ("direct-k31-kernel-larger-than-map", 1, 1, 5, 6, 31, "fp32", "direct", False, False, True),
    ("direct-k5-batch4-odd-channels", 4, 5, 6, 5, 5, "fp32", "direct", True, False, True),
    ("direct-k9-channels-last", 2, 3, 10, 7, 9, "fp32", "direct", True, True, True),
    ("direct-k7-no-weight-grad", 1, 2, 12, 11, 7, "fp32", "direct", False, False, False),
    ("direct-k11-fp16", 1, 2, 9, 19, 11, "fp16", "direct", True, False, True),
    ("toeplitz-k9-multi-tile-fp32", 1, 2, 20, 35, 9, "fp32", "toeplitz", True, False, True),
    ("toeplitz-k5-batch3-fp32", 3, 3, 7, 10, 5, "fp32", "toeplitz", True, False, True),
    ("toeplitz-k31-fp32", 1, 1, 17, 20, 31, "fp32", "toeplitz", False, False, True),
    ("toeplitz-k13-fp16", 2, 2, 9, 19, 13, "fp16", "toeplitz", True, False, True),
    ("toeplitz-k27-fp16", 1, 3, 18, 16, 27, "fp16", "toeplitz", False, False, True),
]


def rel(a, ref):
    if a is None:
        return None
    return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def run_case(name, n, c, h, w, k, dt, path, use_bias, cl, wgrad):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))  # str hash() differs per process: not a seed
    dtype = DT[dt]
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    wt = (torch.randn(c, 1, k, k, generator=g) / k).to(dtype)
    b = torch.randn(c, generator=g).to(dtype) if use_bias else None
    gy = torch.randn(n, c, h, w, generator=g).to(dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    xs = x.clone().requires_grad_()
    ws = wt.clone().requires_grad_(wgrad)
    bs = b.clone().requires_grad_() if b is not None else None
    y = triton_dwconv2d(xs, ws, bs, path=path)
    y.backward(gy)
    x64 = x.double().requires_grad_()
    w64 = wt.double().requires_grad_()
    b64 = b.double().requires_grad_() if b is not None else None
    y64 = F.conv2d(x64, w64, b64, padding=k // 2, groups=c)
    y64.backward(gy.double())
    out = {"case": name, "dtype": dt, "shape_ok": tuple(y.shape) == (n, c, h, w), "dtype_ok": y.dtype == dtype,
           "fwd": rel(y.detach(), y64.detach()), "dgrad": rel(xs.grad, x64.grad),
           "wgrad": rel(ws.grad, w64.grad) if wgrad else None, "wgrad_is_none": ws.grad is None,
           # the bias gradient is a sum over N*H*W output gradients of both signs: its rounding error scales with
           # the sum of their magnitudes, not with the (cancelling) sum itself
           "bgrad": (float((bs.grad.double() - b64.grad).abs().max() / gy.double().abs().sum((0, 2, 3)).max())
                     if b is not None else None),
           "channels_last_kept": (y.is_contiguous(memory_format=torch.channels_last) if cl else True)}
    return out


def dispatch_checks():
    x = torch.randn(1, 2, 8, 8)
    wt = torch.randn(2, 1, 9, 9)
    y = dwconv2d(x, wt, backend="triton")
    ref = F.conv2d(x.double(), wt.double(), padding=4, groups=2)
    return {"case": "dispatch", "available": available_backends("cpu"),
            "resolved": resolve_backend("triton", x, 9), "fwd": rel(y, ref)}


def tiny_model_checks():
    """A tiny RepLKNet, every DepthwiseConv2d on Triton, against native, both against float64."""
    from erftools.models.replknet import RepLKNet
    torch.manual_seed(0)
    m = RepLKNet(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 1, 1], channels=[4, 8, 8, 8], small_kernel=5,
                 num_classes=None, out_indices=[3]).eval()
    x = torch.randn(1, 3, 32, 32)
    m64 = RepLKNet(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 1, 1], channels=[4, 8, 8, 8], small_kernel=5,
                   num_classes=None, out_indices=[3]).eval()
    m64.load_state_dict(m.state_dict())
    m64 = m64.double().set_conv_backend("native")
    with torch.no_grad():
        ref = m64.forward_features(x.double())[0]
        y_nat = m.set_conv_backend("native").forward_features(x)[0]
        y_tri = m.set_conv_backend("triton").forward_features(x)[0]
    return {"case": "tiny-model", "err_native": rel(y_nat, ref), "err_triton": rel(y_tri, ref),
            "triton_vs_native": rel(y_tri, y_nat.double())}


def selfcheck_checks():
    """The first-use self-check through the interpreter: the real kernels pass (fp32, fp16); a broken launcher is
    caught, disabled, and native runs instead."""
    from erftools.ops import _triton, backend_report, reset_backend_report

    reset_backend_report(self_checks=True)
    out = {"case": "selfcheck"}
    for dt, k in (("fp32", 7), ("fp16", 5)):
        x = torch.randn(1, 2, 9, 10).to(DT[dt])
        wt = (torch.randn(2, 1, k, k) / k).to(DT[dt])
        dwconv2d(x, wt, backend="triton")
    rep = backend_report()
    out["checks"] = rep["self_checks"]
    out["runs"] = rep["runs"]
    reset_backend_report(self_checks=True)
    real_conv = _triton._conv

    def broken(x, w2, bias, path):  # a tile-offset style bug: the right values, one row down
        return torch.roll(real_conv(x, w2, bias, path), 1, dims=-2)

    _triton._conv = broken
    try:
        x = torch.randn(1, 2, 9, 10)
        wt = torch.randn(2, 1, 7, 7) / 7
        y = dwconv2d(x, wt, backend="triton")
        ref = F.conv2d(x.double(), wt.double(), padding=3, groups=2)
        rep = backend_report()
        out["broken_checks"] = rep["self_checks"]
        out["broken_disabled"] = rep["disabled"]
        out["broken_runs"] = rep["runs"]
        out["broken_output_error"] = rel(y, ref)
        out["broken_resolved"] = resolve_backend("triton", x, 7)
    finally:
        _triton._conv = real_conv
        reset_backend_report(self_checks=True)
    return out


def main():
    only = set(sys.argv[1:])
    for case in CASES:
        if only and case[0] not in only:
            continue
        print(json.dumps(run_case(*case)), flush=True)
    if not only or "dispatch" in only:
        print(json.dumps(dispatch_checks()), flush=True)
    if not only or "tiny-model" in only:
        print(json.dumps(tiny_model_checks()), flush=True)
    if not only or "selfcheck" in only:
        print(json.dumps(selfcheck_checks()), flush=True)


if __name__ == "__main__":
    main()

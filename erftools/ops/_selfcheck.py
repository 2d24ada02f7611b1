"""First-use self-check of the non-native backends (``fft``, ``triton``).

The first time a backend runs on a device for a (dtype, kernel size) in this process, it computes a small random
case -- forward and input gradient -- that is compared with PyTorch's convolution in float64 on the same device,
from the same rounded inputs. An error above the dtype's tolerance, a NaN, or an exception logs one warning (logger
``erftools.ops``) naming the backend, the device and the error, and disables the backend on that device for the rest
of the process: every later call runs ``native``. ``ERFTOOLS_CONV_SELFCHECK=0`` turns the check off.

Tolerances (max|err| / max|ref|; same rounded inputs, so only the backend's own arithmetic counts):
  fp32 1e-4: fp32 accumulation of at most K^2 products is ~1e-7 here, the FFT ~1e-6; one wrong tap of a random
       31x31 kernel moves the output by ~1/31 of its scale, so a wrong kernel is caught with a wide margin;
  fp16 5e-3, bf16 2e-2: fp32 accumulation and one rounding of the output (half an ulp: 2.4e-4 / 2e-3 of the value),
       plus the rounding of the incoming gradient for the input gradient: about 2 ulp, with 2.5x margin;
  fp64 1e-10.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import torch
import torch.nn.functional as F

log = logging.getLogger("erftools.ops")

ENV_VAR = "ERFTOOLS_CONV_SELFCHECK"
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}

_lock = threading.RLock()
_results: dict = {}    # (backend, device, dtype, K) -> result dict
_disabled: dict = {}   # (backend, device) -> reason


def _dev(device) -> str:
    return str(torch.device(device))


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def disabled_reason(backend: str, device) -> str | None:
    return _disabled.get((backend, _dev(device)))


def _backend_fn(backend: str):
    if backend == "fft":
        from ._fft import fft_dwconv2d
        return fft_dwconv2d
    if backend == "triton":
        from ._triton import triton_dwconv2d
        return triton_dwconv2d
    raise ValueError(f"no self-check for backend {backend!r}")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    err = float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    return err if err == err else float("inf")  # NaN never passes


def check(backend: str, device, dtype: torch.dtype, kernel_size: int) -> dict:
    """Run the check now (not cached) and return its result dict."""
    dev = torch.device(device)
    k = int(kernel_size)
    tol = TOLERANCE.get(dtype, 1e-4)
    res = {"backend": backend, "device": _dev(dev), "dtype": str(dtype).replace("torch.", ""), "kernel_size": k,
           "ok": False, "forward_error": None, "input_grad_error": None, "tolerance": tol, "error": None,
           "seconds": None}
    t0 = time.perf_counter()
    try:
        fn = _backend_fn(backend)
        n, c, h, w = 2, 3, k + 6, 2 * k + 3  # borders and an interior, non-square, several tiles at K >= 31
        # the caller may be under inference_mode / no_grad / autocast: the check needs none of them
        with torch.inference_mode(False), torch.enable_grad(), _no_autocast(dev):
            g = torch.Generator().manual_seed(20261130 + k)
            x = torch.randn(n, c, h, w, generator=g).to(dtype)
            wt = (torch.randn(c, 1, k, k, generator=g) / k).to(dtype)
            gy = torch.randn(n, c, h, w, generator=g).to(dtype)
            xs = x.to(dev).requires_grad_()
            y = fn(xs, wt.to(dev))
            (gx,) = torch.autograd.grad(y, xs, gy.to(dev))
            x64 = x.to(dev, torch.float64).requires_grad_()
            y64 = F.conv2d(x64, wt.to(dev, torch.float64), padding=k // 2, groups=c)
            (gx64,) = torch.autograd.grad(y64, x64, gy.to(dev, torch.float64))
        if tuple(y.shape) != (n, c, h, w) or y.dtype != dtype or gx.dtype != dtype:
            raise RuntimeError(f"wrong output: shape {tuple(y.shape)}, dtype {y.dtype}, gradient dtype {gx.dtype}")
        res["forward_error"] = _rel(y.detach(), y64.detach())
        res["input_grad_error"] = _rel(gx, gx64)
        res["ok"] = res["forward_error"] <= tol and res["input_grad_error"] <= tol
    except Exception as exc:  # noqa: BLE001 - any failure of the backend disables it
        res["error"] = f"{type(exc).__name__}: {exc}"[:500]
    res["seconds"] = round(time.perf_counter() - t0, 4)
    return res


class _no_autocast:
    def __init__(self, dev: torch.device):
        self.ctx = None
        if dev.type in ("cuda", "cpu"):
            try:
                self.ctx = torch.autocast(device_type=dev.type, enabled=False)
            except Exception:  # noqa: BLE001 - old PyTorch without this device type
                self.ctx = None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


def passes(backend: str, device, dtype: torch.dtype, kernel_size: int) -> bool:
    """True when ``backend`` may run this call: its check for (device, dtype, K) passed, or checks are off.

    Runs the check on first use; on failure warns once and disables the backend on that device."""
    dev = _dev(device)
    if (backend, dev) in _disabled:
        return False
    if not enabled():
        return True
    key = (backend, dev, dtype, int(kernel_size))
    r = _results.get(key)
    if r is not None:
        return r["ok"]
    with _lock:
        r = _results.get(key)
        if r is None:
            r = check(backend, device, dtype, kernel_size)
            _results[key] = r
            if not r["ok"]:
                why = r["error"] or (f"max relative error forward {r['forward_error']:.3g}, input gradient "
                                     f"{r['input_grad_error']:.3g} > tolerance {r['tolerance']:.1g} "
                                     f"({r['dtype']}, K={r['kernel_size']})")
                _disabled[(backend, dev)] = why
                log.warning("dwconv2d: backend %r failed its self-check on %s against PyTorch's convolution: %s; "
                            "it is disabled for this process and 'native' runs instead", backend, dev, why)
    return r["ok"]


def results() -> list[dict]:
    with _lock:
        return [dict(r) for r in _results.values()]


def disabled() -> list[dict]:
    with _lock:
        return [{"backend": b, "device": d, "reason": why} for (b, d), why in _disabled.items()]


def reset() -> None:
    with _lock:
        _results.clear()
        _disabled.clear()

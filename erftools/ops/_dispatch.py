"""Backend selection for :func:`dwconv2d` (depthwise, stride 1, 'same', odd square kernel).

Backends
  ``native``  ``torch.nn.functional.conv2d`` -- the reference;
  ``fft``     ``torch.fft`` on CPU or CUDA, forward and both gradients, exact to fp32 rounding (see ``_fft.py``);
  ``triton``  Triton kernels on CUDA: exact fp32 direct kernel, fp16/bf16 Toeplitz ``tl.dot`` on tensor cores
              (see ``_triton_kernels.py``); also runs CPU tensors under ``TRITON_INTERPRET=1`` (tests only).

``auto`` (the default) is resolved per call from the device, dtype and kernel size -- see :func:`auto_backend`;
``ERFTOOLS_CONV_BACKEND`` replaces ``auto`` by a fixed backend. A backend that cannot run the call (no CUDA, no
Triton, unsupported dtype, even or non-square kernel) falls back to ``native`` and says so once through
``logging`` (logger ``erftools.ops``); nothing is imported or checked at import time.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from . import _triton

__all__ = ["BACKENDS", "ENV_VAR", "FFT_MIN_K_CPU", "SMALL_K", "available_backends", "resolve_backend",
           "auto_backend", "dwconv2d"]

log = logging.getLogger("erftools.ops")

BACKENDS = ("native", "fft", "triton")
ENV_VAR = "ERFTOOLS_CONV_BACKEND"

#: kernels up to this size always stay native (PyTorch/oneDNN/cuDNN are fast there; RepLKNet's 5x5 branch)
SMALL_K = 7
#: on CPU, native NCHW depthwise runs through oneDNN up to K=13 (~100+ GMAC/s) and falls to a ~3 GMAC/s loop from
#: K=15/17 on, while the FFT's cost does not depend on K: measured crossover on this machine (docs/ops.md).
FFT_MIN_K_CPU = 15
#: on CUDA, the Triton kernels replace PyTorch's one-thread-per-output NCHW kernel from this size on
TRITON_MIN_K_CUDA = 9
#: on CUDA without Triton, the FFT replaces the naive kernel from this size on
FFT_MIN_K_CUDA = 17

_warned: set = set()


def _warn_once(key, msg: str, level=logging.WARNING) -> None:
    if key not in _warned:
        _warned.add(key)
        log.log(level, msg)


def _device_of(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.Tensor):
        return device.device
    return torch.device(device)


def _triton_runs_on(device: torch.device) -> str | None:
    """None when Triton can run tensors on ``device``, else the reason why not."""
    if not _triton.triton_importable():
        return "Triton is not installed"
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu" and _triton.interpreting():
        return None
    return f"Triton needs a CUDA device (or TRITON_INTERPRET=1 for CPU tensors), got {device.type}"


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: CUDA if available, else CPU)."""
    dev = _device_of(device)
    out = ["native", "fft"]
    if _triton_runs_on(dev) is None:
        out.append("triton")
    return out


def _check_name(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown convolution backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    return name


def auto_backend(device: torch.device, dtype: torch.dtype, kernel_size: int, *, weight_grad: bool = True) -> str:
    """The backend ``auto`` picks for one call (fastest exact backend measured for that device and kernel size).

    On CPU the choice depends on whether the weight gradient is needed (``weight_grad``): the FFT's weight gradient
    is ~100x faster than PyTorch's at K >= 15, but for inference and input gradients only (ERF maps, shape bias)
    PyTorch's channels-last (oneDNN) depthwise kernel is as fast as the FFT or faster at every RepLKNet layer shape
    (reports/benchmarks/dwconv_bench.md), so ``native`` wins and :func:`dwconv2d` runs it channels-last.
    """
    k = int(kernel_size)
    if k <= SMALL_K or k % 2 == 0:
        return "native"
    if device.type == "cuda":
        if _triton.supports_dtype(dtype) and k >= TRITON_MIN_K_CUDA and _triton_runs_on(device) is None:
            return "triton"
        return "fft" if k >= FFT_MIN_K_CUDA else "native"
    if device.type == "cpu":
        return "fft" if k >= FFT_MIN_K_CPU and weight_grad else "native"
    return "native"


def _unsupported(backend: str, x: torch.Tensor, kernel_size: int) -> str | None:
    if kernel_size % 2 == 0:
        return f"even kernel size {kernel_size} ('same' padding needs an odd kernel)"
    if backend == "fft":
        if not (x.is_floating_point() and x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)):
            return f"dtype {x.dtype}"
        if x.device.type not in ("cpu", "cuda"):
            return f"device {x.device.type}"
        return None
    if backend == "triton":
        why = _triton_runs_on(x.device)
        if why:
            return why
        if not _triton.supports_dtype(x.dtype):
            return f"dtype {x.dtype} (Triton kernels take float32, float16, bfloat16)"
    return None


def _requested(backend: str) -> str:
    name = _check_name(backend)
    return _check_name(os.environ.get(ENV_VAR, "auto")) if name == "auto" else name


def resolve_backend(backend: str, x: torch.Tensor, kernel_size: int, *, weight_grad: bool = True) -> str:
    """The backend that will actually run ``dwconv2d(x, weight of size kernel_size, backend=backend)``.

    Raises ValueError for an unknown name (also in ``ERFTOOLS_CONV_BACKEND``); returns ``native`` with a one-time
    log message when the requested backend cannot run this call.
    """
    name = _check_name(backend)
    if name == "auto":
        name = _check_name(os.environ.get(ENV_VAR, "auto"))
    if name == "auto":
        return auto_backend(x.device, x.dtype, kernel_size, weight_grad=weight_grad)
    if name == "native":
        return name
    why = _unsupported(name, x, int(kernel_size))
    if why:
        _warn_once((name, why), f"dwconv2d: backend {name!r} is not available here ({why}); using 'native'")
        return "native"
    return name


def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
             backend: str = "auto") -> torch.Tensor:
    """Depthwise 2-D convolution, stride 1, zero 'same' padding (K//2): ``F.conv2d(x, weight, bias, padding=K//2,
    groups=C)`` for ``x`` (N, C, H, W) and ``weight`` (C, 1, K, K), differentiable in all three arguments.

    ``backend``: ``auto`` (default), ``native``, ``fft`` or ``triton``; see the module docstring.
    """
    if x.dim() != 4:
        raise ValueError(f"dwconv2d expects an (N, C, H, W) input, got shape {tuple(x.shape)}")
    c = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != c or weight.shape[1] != 1:
        raise ValueError(f"dwconv2d expects a ({c}, 1, K, K) weight for {c} channels, got {tuple(weight.shape)}")
    kh, kw = weight.shape[-2:]
    if bias is not None and bias.shape != (c,):
        raise ValueError(f"dwconv2d expects a ({c},) bias, got {tuple(bias.shape)}")
    if kh != kw:
        name = "native"
        _check_name(backend)
    else:
        name = resolve_backend(backend, x, kh, weight_grad=torch.is_grad_enabled() and weight.requires_grad)
    if name == "fft":
        from ._fft import fft_dwconv2d
        return fft_dwconv2d(x, weight, bias)
    if name == "triton":
        return _triton.triton_dwconv2d(x, weight, bias)
    if (x.device.type == "cpu" and kh >= FFT_MIN_K_CPU and kh == kw and _requested(backend) == "auto"
            and not x.is_contiguous(memory_format=torch.channels_last)):
        # PyTorch's NCHW depthwise kernel on CPU is a ~3 GMAC/s loop for large kernels; the channels-last one
        # (oneDNN) is >10x faster, so convert in and back out (two cheap copies)
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, stride=1,
                     padding=(kh // 2, kw // 2), groups=c)
        return y.contiguous()
    return F.conv2d(x, weight, bias, stride=1, padding=(kh // 2, kw // 2), groups=c)

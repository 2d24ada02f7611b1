"""Backend selection for :func:`dwconv2d` (depthwise, stride 1, 'same', odd square kernel).

Backends
  ``native``  ``torch.nn.functional.conv2d`` -- the reference;
  ``fft``     ``torch.fft`` on CPU or CUDA, forward and both gradients, exact to fp32 rounding (see ``_fft.py``);
  ``triton``  Triton kernels on CUDA: exact fp32 direct kernel, fp16/bf16 Toeplitz ``tl.dot`` on tensor cores
              (see ``_triton_kernels.py``); also runs CPU tensors under ``TRITON_INTERPRET=1`` (tests only).

``auto`` (the default) is resolved per call from the device, dtype, kernel size, plane size and what autograd needs
-- see :func:`auto_backend`: on CPU from the measured constants below, on CUDA from the measurement table of
``_cuda_table.py`` (empty until ``benchmarks/gpu_check.py`` has run on that GPU architecture: PyTorch's own
convolution meanwhile). ``ERFTOOLS_CONV_BACKEND`` replaces ``auto`` by a fixed backend. A backend that cannot run the
call (no CUDA, no Triton, unsupported dtype, even or non-square kernel) falls back to ``native`` and says so once
through ``logging`` (logger ``erftools.ops``); nothing is imported or checked at import time.

First-use self-check: the first time ``fft`` or ``triton`` runs on a device for a (dtype, kernel size) in this
process, it is compared with PyTorch's convolution in float64 on a small random case (forward and input gradient,
see :mod:`erftools.ops._selfcheck`); a mismatch beyond the dtype's tolerance (or an exception) logs one warning and
disables that backend on that device for the rest of the process (``native`` runs instead).
:func:`backend_report` says which backends actually ran and what the checks found.
"""
from __future__ import annotations

import logging
import os
import threading

import torch
import torch.nn.functional as F

from .._constants import CONV_BACKENDS
from . import _cuda_table, _triton

__all__ = ["BACKENDS", "ENV_VAR", "FFT_MIN_K_CPU", "SMALL_K", "available_backends", "resolve_backend",
           "auto_backend", "dwconv2d", "backend_report", "reset_backend_report", "call_mode",
           "record_native_run", "cuda_native_layout"]

log = logging.getLogger("erftools.ops")

BACKENDS = CONV_BACKENDS  # one owner: erftools._constants
ENV_VAR = "ERFTOOLS_CONV_BACKEND"

#: kernels up to this size always stay native (PyTorch/oneDNN/cuDNN are fast there; RepLKNet's 5x5 branch)
SMALL_K = 7
#: on CPU, native NCHW depthwise runs through oneDNN up to K=13 (~100+ GMAC/s) and falls to a ~3 GMAC/s loop from
#: K=15/17 on, while the FFT's cost does not depend on K: measured crossover on this machine (docs/ops.md).
FFT_MIN_K_CPU = 15

_warned: set = set()
_lock = threading.Lock()
#: (backend, layout, device, dtype, K) -> number of dwconv2d calls that ran it
_runs: dict = {}
_capabilities: dict = {}


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


def call_mode(x: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> str:
    """What autograd will need from a call now: ``forward``, ``input_grad`` (frozen weight) or ``weight_grad``."""
    if not torch.is_grad_enabled():
        return "forward"
    if weight is not None and weight.requires_grad:
        return "weight_grad"
    if x is not None and x.requires_grad:
        return "input_grad"
    return "forward"


def _cuda_arch(device: torch.device) -> str:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _capabilities:
        _capabilities[idx] = _cuda_table.arch_name(torch.cuda.get_device_capability(idx))
    return _capabilities[idx]


def _cuda_entry(device: torch.device, dtype: torch.dtype, k: int, plane, mode: str) -> dict | None:
    """The measurement-table entry for a CUDA call, or None (nothing measured: PyTorch's convolution, as is)."""
    if plane is None:
        return None
    try:
        arch = _cuda_arch(device)
    except Exception:  # noqa: BLE001 - no usable CUDA runtime: nothing measured applies
        return None
    return _cuda_table.lookup(_cuda_table.load_table(), arch, dtype, k, _cuda_table.plane_class(*plane), mode)


def auto_backend(device: torch.device, dtype: torch.dtype, kernel_size: int, *, weight_grad: bool = True,
                 plane: tuple[int, int] | None = None, mode: str | None = None) -> str:
    """The backend ``auto`` picks for one call.

    CPU (constants above): the choice depends on whether the weight gradient is needed (``weight_grad``): the FFT's
    weight gradient is ~100x faster than PyTorch's at K >= 15, but for inference and input gradients only (ERF maps,
    shape bias) PyTorch's channels-last (oneDNN) depthwise kernel is as fast as the FFT or faster at every RepLKNet
    layer shape (reports/benchmarks/dwconv_bench.md), so ``native`` wins and :func:`dwconv2d` runs it channels-last.

    CUDA: the entry of the measurement table (``_cuda_table.py``) for this GPU architecture, dtype, kernel size,
    plane-size class (``plane`` = (H, W)) and ``mode`` (``forward``/``input_grad``/``weight_grad``; default from
    ``weight_grad``); ``native`` where there is none, or where the table's backend cannot run here or was disabled by
    its self-check.
    """
    k = int(kernel_size)
    if device.type == "cuda":
        mode = mode or ("weight_grad" if weight_grad else "input_grad")
        entry = _cuda_entry(device, dtype, k, plane, mode)
        name = entry["backend"] if entry else "native"
        if name == "triton" and (_triton_runs_on(device) is not None or not _triton.supports_dtype(dtype)):
            name = "native"
        if name != "native" and _selfcheck.disabled_reason(name, device) is not None:
            name = "native"
        return name
    if k <= SMALL_K or k % 2 == 0:
        return "native"
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
    elif backend == "triton":
        why = _triton_runs_on(x.device)
        if why:
            return why
        if not _triton.supports_dtype(x.dtype):
            return f"dtype {x.dtype} (Triton kernels take float32, float16, bfloat16)"
    return None


def _requested(backend: str) -> str:
    name = _check_name(backend)
    return _check_name(os.environ.get(ENV_VAR, "auto")) if name == "auto" else name


def resolve_backend(backend: str, x: torch.Tensor, kernel_size: int, *, weight_grad: bool = True,
                    mode: str | None = None) -> str:
    """The backend that will actually run ``dwconv2d(x, weight of size kernel_size, backend=backend)``.

    ``weight_grad``/``mode`` say what autograd needs (see :func:`auto_backend`). Raises ValueError for an unknown
    name (also in ``ERFTOOLS_CONV_BACKEND``); returns ``native`` with a one-time log message when the requested
    backend cannot run this call (or was disabled by its self-check).
    """
    name = _requested(backend)
    if name == "auto":
        return auto_backend(x.device, x.dtype, kernel_size, weight_grad=weight_grad, plane=tuple(x.shape[-2:]),
                            mode=mode)
    if name == "native":
        return name
    if _selfcheck.disabled_reason(name, x.device) is not None:
        # the self-check failed and already warned once; stay quiet on every later call
        _warn_once((name, str(x.device), "disabled"), f"dwconv2d: backend {name!r} was disabled on {x.device} by "
                   "its self-check; using 'native'", level=logging.DEBUG)
        return "native"
    why = _unsupported(name, x, int(kernel_size))
    if why:
        _warn_once((name, why), f"dwconv2d: backend {name!r} is not available here ({why}); using 'native'")
        return "native"
    return name


def _native_layout(x: torch.Tensor, k: int, requested: str, mode: str) -> str | None:
    """The memory format native should run in (None: as the input is)."""
    if requested != "auto":
        return None
    if x.device.type == "cpu":
        # PyTorch's NCHW depthwise kernel on CPU is a ~3 GMAC/s loop for large kernels; the channels-last one
        # (oneDNN) is >10x faster in fp32, so convert in and back out (two cheap copies). Not for bf16/fp16:
        # unmeasured, and oneDNN's channels-last bf16 depthwise kernel at K=31 did not finish in a minute on this
        # project's CPU (AMD EPYC, torch 2.14) where NCHW bf16 takes 0.08 s
        if (k >= FFT_MIN_K_CPU and x.dtype in (torch.float32, torch.float64)
                and not x.is_contiguous(memory_format=torch.channels_last)):
            return "channels_last"
        return None
    if x.device.type == "cuda":
        return cuda_native_layout(x.device, x.dtype, k, tuple(x.shape[-2:]), mode)
    return None


def cuda_native_layout(device: torch.device, dtype: torch.dtype, kernel_size: int, plane: tuple[int, int],
                       mode: str) -> str | None:
    """The memory format the measurement table says native runs fastest in on this GPU (None: leave it alone)."""
    entry = _cuda_entry(device, dtype, int(kernel_size), plane, mode)
    if entry and entry["backend"] == "native":
        return entry.get("layout")
    return None


def _record(name: str, layout: str | None, x: torch.Tensor, k: int) -> None:
    key = (name, layout, str(x.device), str(x.dtype).replace("torch.", ""), int(k))
    with _lock:
        _runs[key] = _runs.get(key, 0) + 1


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
    mode = call_mode(x, weight)
    if kh != kw:
        name = "native"
        _check_name(backend)
    else:
        name = resolve_backend(backend, x, kh, weight_grad=mode == "weight_grad", mode=mode)
    if name != "native" and not _selfcheck.passes(name, x.device, x.dtype, kh):
        name = "native"  # the check failed just now: warned once, disabled for the process
    if name == "fft":
        from ._fft import fft_dwconv2d
        _record(name, None, x, kh)
        return fft_dwconv2d(x, weight, bias)
    if name == "triton":
        _record(name, None, x, kh)
        return _triton.triton_dwconv2d(x, weight, bias)
    layout = _native_layout(x, kh, _requested(backend), mode) if kh == kw else None
    pad = (kh // 2, kw // 2)
    if layout == "channels_last" and not x.is_contiguous(memory_format=torch.channels_last):
        _record(name, layout, x, kh)
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, stride=1, padding=pad, groups=c)
        return y.contiguous()
    if layout == "nchw" and not x.is_contiguous():
        _record(name, layout, x, kh)
        y = F.conv2d(x.contiguous(), weight, bias, stride=1, padding=pad, groups=c)
        return y.contiguous(memory_format=torch.channels_last)
    _record(name, None, x, kh)
    return F.conv2d(x, weight, bias, stride=1, padding=pad, groups=c)


def record_native_run(x: torch.Tensor, kernel_size: int, layout: str | None = None) -> None:
    """Count a native depthwise convolution that a caller ran itself with ``F.conv2d`` (bypassing :func:`dwconv2d`,
    e.g. an input-gradient-only layer), so that :func:`backend_report` still lists it."""
    _record("native", layout, x, kernel_size)


def backend_report() -> dict:
    """What the convolution backends did in this process, as a JSON-able dict (for run records).

    ``runs``: one row per (backend, layout, device, dtype, kernel_size) with the number of ``dwconv2d`` calls that
    actually ran it (``layout``: ``channels_last``/``nchw`` when native converted the input, else null);
    ``self_checks``: every first-use check (backend, device, dtype, kernel_size, ok, forward_error,
    input_grad_error, tolerance, error, seconds); ``disabled``: backends switched off by a failed check;
    ``cuda_table``: the table in use (source and number of entries); ``env``: the overriding variables.
    """
    with _lock:
        runs = [{"backend": b, "layout": lay, "device": d, "dtype": dt, "kernel_size": k, "calls": n}
                for (b, lay, d, dt, k), n in sorted(_runs.items(), key=lambda kv: tuple(map(str, kv[0])))]
    try:
        table = _cuda_table.load_table()
        tinfo = {"source": os.environ.get(_cuda_table.TABLE_ENV) or "erftools/ops/cuda_table.json",
                 "entries": len(table.get("entries", []))}
    except ValueError as exc:
        tinfo = {"source": os.environ.get(_cuda_table.TABLE_ENV) or "erftools/ops/cuda_table.json",
                 "error": str(exc)}
    return {"format": "erftools-backend-report/1", "runs": runs, "self_checks": _selfcheck.results(),
            "disabled": _selfcheck.disabled(), "cuda_table": tinfo,
            "env": {k: os.environ.get(k) for k in (ENV_VAR, _selfcheck.ENV_VAR, _cuda_table.TABLE_ENV)}}


def reset_backend_report(*, self_checks: bool = False) -> None:
    """Forget the run counts (start of a run); ``self_checks=True`` also forgets checks and re-enables backends."""
    with _lock:
        _runs.clear()
    if self_checks:
        _selfcheck.reset()


from . import _selfcheck  # noqa: E402  (uses nothing from this module at import time)

"""The ERF's precision policy: which arithmetic a run uses, what it measured to cost, and the global switches.

``fp32`` is the paper's procedure and the default; ``tf32`` (CUDA tensor cores) and ``bf16`` (autocast of the
forward pass) are faster and measured against float64 (:data:`MEASURED_ERRORS`, ``benchmarks/erf_precision.py``);
``bf16`` moved high-contribution squares and is refused without ``allow_low_precision``. The memory layout follows
the precision (:func:`default_channels_last`).
"""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn as nn

from .._constants import ERF_PRECISIONS
from .._io import ErftoolsError

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "MEASURED_ERRORS", "check_precision", "check_allowed", "resolve_precision",
           "precision_context", "autocast", "warn_precision", "default_channels_last", "model_dtype"]


PRECISIONS = ERF_PRECISIONS  # one owner: erftools._constants


#: each precision's error against float64, measured on CPU by benchmarks/erf_precision.py (random weights; RepLKNet-31B
#: and ResNet-152 at 1024 px on 2 images, the tiny fixture; reports/benchmarks/erf_precision.md): the largest
#: max-relative error of the matrix, and whether a high-contribution square side moved (with an example). tf32 is
#: the CPU emulation (operands of every dense convolution / linear layer rounded to TF32), not a GPU measurement.
MEASURED_ERRORS = {
    "fp32": {"max_relative_error": 1.2e-3, "sides_changed": False, "example": None},
    "tf32": {"max_relative_error": 7.5e-2, "sides_changed": False, "example": None},
    "bf16": {"max_relative_error": 3.0e-1, "sides_changed": True,
             "example": "ResNet-152 at 1024 px: the 0.5 square grew from 7 to 9 px"},
}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; otherwise a clear error."""
    if precision not in PRECISIONS:
        raise ErftoolsError(f"unknown precision {precision!r}: use one of {', '.join(map(repr, PRECISIONS))} "
                            "('fp32' is the paper's and the default)")
    return precision


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 when it has none): the images are cast to it."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def resolve_precision(precision: str, dev: torch.device, dtype: torch.dtype) -> dict:
    """What will actually run: ``{"precision", "precision_requested", "precision_note"}``."""
    check_precision(precision)
    if dtype != torch.float32:
        if precision != "fp32":
            raise ErftoolsError(f"precision={precision!r} needs a float32 model; this one is {dtype} (call "
                                "model.float(), or keep precision='fp32' to compute in the model's own dtype)")
        name = {torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
        return {"precision": name, "precision_requested": precision,
                "precision_note": f"the model is {str(dtype).replace('torch.', '')}: the images are cast to it"}
    if precision == "tf32" and dev.type != "cuda":
        return {"precision": "fp32", "precision_requested": "tf32",
                "precision_note": f"TF32 is a CUDA tensor-core format; on {dev.type} the run is plain fp32"}
    note = None
    if precision == "bf16":
        note = ("forward pass under torch.autocast(bfloat16); input gradients in float32, maps summed in float64")
    elif precision == "fp32" and dev.type == "cuda":
        note = "TF32 disabled for the run (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False)"
    return {"precision": precision, "precision_requested": precision, "precision_note": note}


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """The global switches of ``precision`` for a run, restored afterwards: on CUDA, TF32 on for ``tf32`` and
    explicitly off for ``fp32`` and ``bf16`` (PyTorch's defaults differ between the matmul and the cuDNN flag)."""
    check_precision(precision)
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def autocast(precision: str, device: torch.device):
    """The autocast context of the forward pass (bf16 only; the backward pass runs outside it, as PyTorch asks)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _measured(precision: str) -> str:
    m, ref = MEASURED_ERRORS[precision], MEASURED_ERRORS["fp32"]
    moved = f"high-contribution squares moved ({m['example']})" if m["sides_changed"] else \
        "no high-contribution square moved"
    return (f"measured on CPU with random weights, its contribution matrix was up to {m['max_relative_error']:.1e} "
            f"(max-relative) away from float64, against {ref['max_relative_error']:.1e} for fp32, and {moved} "
            "(reports/benchmarks/erf_precision.md)")


def check_allowed(precision: str, allow_low_precision: bool) -> None:
    """Refuse a precision whose squares moved in the measurements, unless ``allow_low_precision``."""
    if MEASURED_ERRORS[precision]["sides_changed"] and not allow_low_precision:
        raise ErftoolsError(f"precision={precision!r} changes the ERF's area ratios: {_measured(precision)}. "
                            "Use precision='fp32' (the default, the paper's), or pass allow_low_precision=True to "
                            "accept the error")


def warn_precision(precision: str) -> None:
    """Log once per run what the measurements say about a precision that is not the paper's."""
    if precision in ("bf16", "tf32"):
        log.warning("precision=%r is not the paper's procedure (fp32): %s", precision, _measured(precision))


def default_channels_last(device: torch.device, precision: str = "fp32") -> bool:
    """The model-wide memory layout of an ERF run.

    CPU: channels-last for every precision (oneDNN's channels-last depthwise kernels are >10x faster than the NCHW
    loop, in bfloat16 too: 0.6 s against 13 s for a K=31, 128-channel, 256 px forward pass on this project's CPU).
    CUDA: channels-last for ``bf16``, whose cuDNN tensor-core kernels work in NHWC (an NCHW tensor is transposed on
    every call); NCHW for ``fp32``/``tf32``, where no GPU measurement says otherwise: the large depthwise
    convolutions are converted per call where the CUDA table of :mod:`erftools.ops` (written by
    ``benchmarks/gpu_check.py``) measured channels-last to be faster, and left alone where it has no entry.
    """
    check_precision(precision)
    if device.type == "cpu":
        return True
    return device.type == "cuda" and precision == "bf16"

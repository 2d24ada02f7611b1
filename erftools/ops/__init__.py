"""Large-kernel depthwise convolution: one op, several backends.

``dwconv2d(x, weight, bias=None, *, backend="auto")`` computes a depthwise, stride-1, 'same' convolution.
``DepthwiseConv2d`` is the nn.Conv2d drop-in that RepLKNet's large-kernel branch uses; it keeps nn.Conv2d's
attributes and state-dict keys, so re-parameterisation and official checkpoints work with every backend.
``backend_report()`` says which backends actually ran (per device, dtype and kernel size) and what their first-use
self-checks found, for run records.
"""
from ._dispatch import (auto_backend, available_backends, backend_report, dwconv2d, record_native_run,  # noqa: F401
                        reset_backend_report, resolve_backend)
from .module import DepthwiseConv2d  # noqa: F401

__all__ = ["dwconv2d", "available_backends", "resolve_backend", "auto_backend", "backend_report",
           "reset_backend_report", "record_native_run", "DepthwiseConv2d"]

"""Large-kernel depthwise convolution: one op, several backends.

``dwconv2d(x, weight, bias=None, *, backend="auto")`` computes a depthwise, stride-1, 'same' convolution.
``DepthwiseConv2d`` is the nn.Conv2d drop-in that RepLKNet's large-kernel branch uses; it keeps nn.Conv2d's
attributes and state-dict keys, so re-parameterisation and official checkpoints work with every backend.
"""
from ._dispatch import dwconv2d, available_backends, resolve_backend  # noqa: F401
from .module import DepthwiseConv2d  # noqa: F401

__all__ = ["dwconv2d", "available_backends", "resolve_backend", "DepthwiseConv2d"]

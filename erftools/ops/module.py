"""``DepthwiseConv2d``: the replaceable module behind RepLKNet's large depthwise convolutions."""
from __future__ import annotations

import torch
import torch.nn as nn

from ._dispatch import dwconv2d


class DepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same attributes, same state-dict keys) that routes depthwise, stride-1, 'same'
    convolutions through :func:`erftools.ops.dwconv2d`, so the backend can be swapped without touching weights.

    ``backend`` is an attribute (``"auto"`` by default) and may be changed at any time; any other configuration
    (stride, dilation, non-depthwise groups, even kernels) runs through ``nn.Conv2d`` itself.
    """

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def _fast_path_ok(self) -> bool:
        kh, kw = self.kernel_size
        return (kh == kw and kh % 2 == 1 and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.padding == (kh // 2, kw // 2) and self.groups == self.in_channels == self.out_channels
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_path_ok():
            return dwconv2d(x, self.weight, self.bias, backend=self.backend)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

"""RepLKNet ("Scaling Up Your Kernels to 31x31", Ding et al., CVPR 2022), written for erftools.

The module names and the state-dict layout follow the official implementation exactly, in the training-time form
(``large_kernel.lkb_origin`` + ``large_kernel.small_conv``) and the re-parameterised form
(``large_kernel.lkb_reparam``), so official, OpenMMLab and re-parameterised checkpoints load with ``strict=True``.

Differences from the official code, none of which changes a number:
- no module-level state: SyncBatchNorm is a constructor argument (``use_sync_bn``), not a global switch;
- the large depthwise convolutions are :class:`erftools.ops.DepthwiseConv2d`, whose backend can be swapped;
- :meth:`RepLKNet.fuse_bn` folds every eval-mode BatchNorm into its neighbouring convolution for fast inference.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..ops import DepthwiseConv2d

__all__ = ["RepLKNet", "ReparamLargeKernelConv", "RepLKBlock", "ConvFFN", "RepLKNetStage", "CONFIGS",
           "fuse_conv_bn"]


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def _bn(channels: int, sync: bool) -> nn.Module:
    return nn.SyncBatchNorm(channels) if sync else nn.BatchNorm2d(channels)


def _conv(cin, cout, k, stride, padding, groups, bias=False, large=False) -> nn.Conv2d:
    cls = DepthwiseConv2d if large else nn.Conv2d
    return cls(cin, cout, kernel_size=k, stride=stride, padding=padding, dilation=1, groups=groups, bias=bias)


def conv_bn(cin, cout, k, stride, padding, groups, *, sync=False, large=False) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", _conv(cin, cout, k, stride, padding, groups, large=large))
    seq.add_module("bn", _bn(cout, sync))
    return seq


def conv_bn_relu(cin, cout, k, stride, padding, groups, *, sync=False) -> nn.Sequential:
    seq = conv_bn(cin, cout, k, stride, padding, groups, sync=sync)
    seq.add_module("nonlinear", nn.ReLU())
    return seq


def fuse_conv_bn(kernel: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm):
    """The kernel and bias of ``bn(conv(x))`` for a bias-free conv with ``kernel`` (eval-mode BN statistics)."""
    std = (bn.running_var + bn.eps).sqrt()
    t = (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel * t, bn.bias - bn.running_mean * bn.weight / std


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or with p = 0)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class ReparamLargeKernelConv(nn.Module):
    """A depthwise KxK conv + BN, plus (optionally) a parallel small-kernel depthwise conv + BN; summed.

    After :meth:`merge_kernel` a single biased KxK conv (``lkb_reparam``) replaces both branches.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, groups, small_kernel,
                 small_kernel_merged=False, *, use_sync_bn=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        padding = kernel_size // 2
        if small_kernel_merged:
            self.lkb_reparam = _conv(in_channels, out_channels, kernel_size, stride, padding, groups, bias=True,
                                     large=True)
        else:
            self.lkb_origin = conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups,
                                      sync=use_sync_bn, large=True)
            if small_kernel is not None:
                if small_kernel > kernel_size:
                    raise ValueError(f"small_kernel ({small_kernel}) must not exceed the large kernel ({kernel_size})")
                self.small_conv = conv_bn(in_channels, out_channels, small_kernel, stride, small_kernel // 2, groups,
                                          sync=use_sync_bn, large=True)

    def forward(self, x):
        if hasattr(self, "lkb_reparam"):
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if hasattr(self, "small_conv"):
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def get_equivalent_kernel_bias(self):
        k, b = fuse_conv_bn(self.lkb_origin.conv.weight, self.lkb_origin.bn)
        if hasattr(self, "small_conv"):
            sk, sb = fuse_conv_bn(self.small_conv.conv.weight, self.small_conv.bn)
            b = b + sb
            p = (self.kernel_size - self.small_kernel) // 2
            k = k + F.pad(sk, [p, p, p, p])
        return k, b

    @torch.no_grad()
    def merge_kernel(self):
        """Replace both branches by one biased KxK conv (exact in eval mode). No-op when already merged."""
        if hasattr(self, "lkb_reparam"):
            return
        k, b = self.get_equivalent_kernel_bias()
        src = self.lkb_origin.conv
        merged = DepthwiseConv2d(src.in_channels, src.out_channels, kernel_size=src.kernel_size, stride=src.stride,
                                 padding=src.padding, dilation=src.dilation, groups=src.groups, bias=True,
                                 backend=getattr(src, "backend", "auto"))
        merged = merged.to(device=k.device, dtype=k.dtype)
        merged.weight.data.copy_(k)
        merged.bias.data.copy_(b)
        self.lkb_reparam = merged
        del self.lkb_origin
        if hasattr(self, "small_conv"):
            del self.small_conv


class ConvFFN(nn.Module):
    """BN -> 1x1 conv (+BN) -> GELU -> 1x1 conv (+BN) -> drop-path -> + identity."""

    def __init__(self, in_channels, internal_channels, out_channels, drop_path, *, use_sync_bn=False):
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.preffn_bn = _bn(in_channels, use_sync_bn)
        self.pw1 = conv_bn(in_channels, internal_channels, 1, 1, 0, 1, sync=use_sync_bn)
        self.pw2 = conv_bn(internal_channels, out_channels, 1, 1, 0, 1, sync=use_sync_bn)
        self.nonlinear = nn.GELU()

    def forward(self, x):
        out = self.preffn_bn(x)
        out = self.pw1(out)
        out = self.nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKBlock(nn.Module):
    """BN -> 1x1 conv (+BN, ReLU) -> large depthwise conv (+ small branch) -> ReLU -> 1x1 conv (+BN) -> + identity."""

    def __init__(self, in_channels, dw_channels, block_lk_size, small_kernel, drop_path, small_kernel_merged=False,
                 *, use_sync_bn=False):
        super().__init__()
        self.pw1 = conv_bn_relu(in_channels, dw_channels, 1, 1, 0, 1, sync=use_sync_bn)
        self.pw2 = conv_bn(dw_channels, in_channels, 1, 1, 0, 1, sync=use_sync_bn)
        self.large_kernel = ReparamLargeKernelConv(dw_channels, dw_channels, block_lk_size, 1, dw_channels,
                                                   small_kernel, small_kernel_merged, use_sync_bn=use_sync_bn)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = _bn(in_channels, use_sync_bn)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x):
        out = self.prelkb_bn(x)
        out = self.pw1(out)
        out = self.large_kernel(out)
        out = self.lk_nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKNetStage(nn.Module):
    def __init__(self, channels, num_blocks, stage_lk_size, drop_path, small_kernel, dw_ratio=1, ffn_ratio=4,
                 use_checkpoint=False, small_kernel_merged=False, norm_intermediate_features=False,
                 *, use_sync_bn=False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        blocks = []
        for i in range(num_blocks):
            dp = drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), stage_lk_size, small_kernel, dp,
                                     small_kernel_merged, use_sync_bn=use_sync_bn))
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), channels, dp, use_sync_bn=use_sync_bn))
        self.blocks = nn.ModuleList(blocks)
        self.norm = _bn(channels, use_sync_bn) if norm_intermediate_features else nn.Identity()

    def forward(self, x):
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


# ----------------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------------
class RepLKNet(nn.Module):
    """RepLKNet with the official constructor arguments and module layout.

    ``forward_features(x)`` returns the last feature map (end of stage 4, before the head's BN), or, with
    ``out_indices``, the list of the selected stage outputs (each through its stage norm) for dense tasks.
    """

    def __init__(self, large_kernel_sizes: Sequence[int], layers: Sequence[int], channels: Sequence[int],
                 small_kernel: int | None, dw_ratio: float = 1, ffn_ratio: float = 4, num_classes: int | None = 1000,
                 drop_path_rate: float = 0.0, in_channels: int = 3, out_indices: Iterable[int] | None = None,
                 use_checkpoint: bool = False, small_kernel_merged: bool = False, use_sync_bn: bool = False,
                 norm_intermediate_features: bool = False):
        super().__init__()
        if not (len(large_kernel_sizes) == len(layers) == len(channels)):
            raise ValueError("large_kernel_sizes, layers and channels must have one entry per stage")
        if num_classes is None and out_indices is None:
            raise ValueError("num_classes=None needs out_indices (a backbone for dense tasks)")
        self.large_kernel_sizes = list(large_kernel_sizes)
        self.layers = list(layers)
        self.channels = list(channels)
        self.small_kernel = small_kernel
        self.num_stages = len(layers)
        self.out_indices = list(out_indices) if out_indices is not None else None
        self.use_checkpoint = use_checkpoint
        self.num_classes = num_classes
        self.num_features = channels[-1]
        base = channels[0]
        sync = use_sync_bn
        self.stem = nn.ModuleList([
            conv_bn_relu(in_channels, base, 3, 2, 1, 1, sync=sync),
            conv_bn_relu(base, base, 3, 1, 1, base, sync=sync),
            conv_bn_relu(base, base, 1, 1, 0, 1, sync=sync),
            conv_bn_relu(base, base, 3, 2, 1, base, sync=sync),
        ])
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(layers), device="cpu")]
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in range(self.num_stages):
            start, stop = sum(layers[:i]), sum(layers[:i + 1])
            self.stages.append(RepLKNetStage(channels[i], layers[i], large_kernel_sizes[i], dpr[start:stop],
                                             small_kernel, dw_ratio, ffn_ratio, use_checkpoint, small_kernel_merged,
                                             norm_intermediate_features, use_sync_bn=sync))
            if i < self.num_stages - 1:
                self.transitions.append(nn.Sequential(
                    conv_bn_relu(channels[i], channels[i + 1], 1, 1, 0, 1, sync=sync),
                    conv_bn_relu(channels[i + 1], channels[i + 1], 3, 2, 1, channels[i + 1], sync=sync)))
        if num_classes is not None:
            self.norm = _bn(channels[-1], sync)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(channels[-1], num_classes)

    # -- forward ---------------------------------------------------------------------------------------------------
    def _run(self, module, x):
        if self.use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward_features(self, x):
        x = self.stem[0](x)
        for layer in self.stem[1:]:
            x = self._run(layer, x)
        outs = []
        for i in range(self.num_stages):
            x = self.stages[i](x)
            if self.out_indices is not None and i in self.out_indices:
                outs.append(self.stages[i].norm(x))
            if i < self.num_stages - 1:
                x = self.transitions[i](x)
        return outs if self.out_indices is not None else x

    def forward_head(self, x):
        x = self.norm(x)
        x = self.avgpool(x)
        return self.head(torch.flatten(x, 1))

    def forward(self, x):
        x = self.forward_features(x)
        if self.out_indices is not None:
            return x
        return self.forward_head(x)

    # -- re-parameterisation and inference fusion ----------------------------------------------------------------
    def structural_reparam(self) -> "RepLKNet":
        """Merge every small-kernel branch and its BNs into the large kernel, in place (exact in eval mode)."""
        for m in self.modules():
            if isinstance(m, ReparamLargeKernelConv):
                m.merge_kernel()
        return self

    @property
    def is_reparameterized(self) -> bool:
        return all(hasattr(m, "lkb_reparam") for m in self.modules() if isinstance(m, ReparamLargeKernelConv))

    @torch.no_grad()
    def fuse_bn(self) -> "RepLKNet":
        """Fold every eval-mode BatchNorm into its neighbouring convolution, in place (implies re-parameterisation).

        Post-conv BNs fold into their conv (which gains a bias); the pre-block BNs (``prelkb_bn``, ``preffn_bn``)
        fold into the following 1x1 convolution, which is exact because a 1x1 conv has no padding. The head's
        final BN is kept. The model computes the same function in eval mode, faster, but its state dict no longer
        has the official layout: use it for inference and ERF maps only.
        """
        if self.training:
            raise RuntimeError("fuse_bn() folds eval-mode statistics: call model.eval() first")
        self.structural_reparam()
        for m in list(self.modules()):
            if isinstance(m, nn.Sequential) and hasattr(m, "conv") and hasattr(m, "bn") and \
                    isinstance(m.bn, nn.modules.batchnorm._BatchNorm):
                _fold_post_bn(m.conv, m.bn)
                m.bn = nn.Identity()
        for m in self.modules():
            if isinstance(m, (RepLKBlock, ConvFFN)):
                name = "prelkb_bn" if isinstance(m, RepLKBlock) else "preffn_bn"
                bn = getattr(m, name)
                if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    _fold_pre_bn(bn, m.pw1.conv)
                    setattr(m, name, nn.Identity())
        return self

    def set_conv_backend(self, backend: str) -> "RepLKNet":
        for m in self.modules():
            if isinstance(m, DepthwiseConv2d):
                m.backend = backend
        return self


def _fold_post_bn(conv: nn.Conv2d, bn) -> None:
    k, b = fuse_conv_bn(conv.weight, bn)
    if conv.bias is not None:
        b = b + conv.bias * bn.weight / (bn.running_var + bn.eps).sqrt()
    conv.weight.data.copy_(k)
    if conv.bias is None:
        conv.bias = nn.Parameter(b.detach().clone())
    else:
        conv.bias.data.copy_(b)


def _fold_pre_bn(bn, conv: nn.Conv2d) -> None:
    """conv(bn(x)) == conv'(x) for a 1x1 conv: W' = W * s (per input channel), b' = b + W @ t."""
    assert conv.kernel_size == (1, 1) and conv.groups == 1
    s = bn.weight / (bn.running_var + bn.eps).sqrt()
    t = bn.bias - bn.running_mean * s
    w = conv.weight
    shift = (w[:, :, 0, 0] @ t)
    conv.weight.data.copy_(w * s.reshape(1, -1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.detach().clone())
    else:
        conv.bias.data.add_(shift)


# ----------------------------------------------------------------------------------------------------------------
# named configurations (paper Table / official create_* functions)
# ----------------------------------------------------------------------------------------------------------------
_B = dict(layers=[2, 2, 18, 2], channels=[128, 256, 512, 1024], dw_ratio=1, ffn_ratio=4)
CONFIGS: dict[str, dict] = {
    "replknet-31B": dict(large_kernel_sizes=[31, 29, 27, 13], small_kernel=5, drop_path_rate=0.3, **_B),
    "replknet-31L": dict(large_kernel_sizes=[31, 29, 27, 13], layers=[2, 2, 18, 2], channels=[192, 384, 768, 1536],
                         small_kernel=5, dw_ratio=1, ffn_ratio=4, drop_path_rate=0.3),
    "replknet-XL": dict(large_kernel_sizes=[27, 27, 27, 13], layers=[2, 2, 18, 2], channels=[256, 512, 1024, 2048],
                        small_kernel=None, dw_ratio=1.5, ffn_ratio=4, drop_path_rate=0.3),
    "replknet-3": dict(large_kernel_sizes=[3, 3, 3, 3], small_kernel=None, drop_path_rate=0.3, **_B),
    "replknet-7": dict(large_kernel_sizes=[7, 7, 7, 7], small_kernel=5, drop_path_rate=0.3, **_B),
    "replknet-13": dict(large_kernel_sizes=[13, 13, 13, 13], small_kernel=5, drop_path_rate=0.3, **_B),
    "replknet-25": dict(large_kernel_sizes=[25, 25, 25, 13], small_kernel=5, drop_path_rate=0.3, **_B),
    "replknet-31": dict(large_kernel_sizes=[31, 29, 27, 13], small_kernel=5, drop_path_rate=0.3, **_B),
}


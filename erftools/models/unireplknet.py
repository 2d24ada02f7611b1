"""UniRepLKNet ("UniRepLKNet: A Universal Perception Large-Kernel ConvNet ...", Ding et al., CVPR 2024), for erftools.

Written from the paper and the official repository's documented behaviour (AILab-CVC/UniRepLKNet); the constructor
keyword arguments, module names and state-dict layout are the official ones, in the training structure (what the
published checkpoints hold) and the deploy structure (``deploy=True``, or after :meth:`UniRepLKNet.structural_reparam`,
alias of the official ``reparameterize_unireplknet``), so every published file loads with ``strict=True``.

A block is ``x + drop_path(gamma * BN(Linear2(GRN(GELU(Linear1(SE(BN(dwconv(x)))))))))`` with the two linears in
NHWC. ``dwconv`` depends on the block's kernel size K: 0 an identity (no BN), 3 or 5 a plain depthwise conv, 7..17 a
Dilated Reparam Block: a KxK depthwise conv + BN beside depthwise dilated convs + BN whose (kernel, dilation) pairs are
the official table :data:`DILATED_BRANCHES`. Re-parameterisation (exact in eval mode) merges each dilated kernel into
the large one (a dilated k x k kernel is the non-dilated ``r(k-1)+1`` kernel with zeros between its taps), folds every
BN into its conv, and folds GRN's bias (projected through the last linear), the last BN and the layer scale into the
last linear; the GRN then has no bias.

Differences from the official code, none of which changes a number: no printing; the large kernels are
:class:`erftools.ops.DepthwiseConv2d` (swappable backend); the timm model API (``in_chans``, ``global_pool``,
``drop_rate``, ``forward_head(pre_logits=)``, ``reset_classifier``, ``forward_intermediates``,
``prune_intermediate_layers``, ``set_grad_checkpointing``, ``feature_info``), TorchScript and FX. Gradient checkpointing
(``with_cp``) wraps every block whenever gradients are enabled (the official code: when the input requires grad);
the results are the same. ``num_classes=None`` alone selects the downstream mode (the official code: ``init_cfg``).
"""

import contextlib
import itertools
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import is_scriptable, trunc_normal_
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from ..ops import DepthwiseConv2d
from .replknet import DropPath, ScriptableDepthwiseConv2d, scriptable_copy

__all__ = ["UniRepLKNet", "UniRepLKNetBlock", "DilatedReparamBlock", "GRNwithNHWC", "SEBlock", "LayerNorm",
           "CONFIGS", "DILATED_BRANCHES", "default_kernel_sizes", "merge_dilated_into_large_kernel"]

#: the official (kernel sizes, dilations) of the dilated branches of a Dilated Reparam Block with large kernel K
DILATED_BRANCHES: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


def _large_conv_cls() -> type:
    return ScriptableDepthwiseConv2d if is_scriptable() else DepthwiseConv2d


def _bn(dim: int, sync: bool) -> nn.Module:
    return nn.SyncBatchNorm(dim) if sync else nn.BatchNorm2d(dim)


def _bn_scale_shift(bn) -> Tuple[torch.Tensor, torch.Tensor]:
    """``bn(x) == x * scale + shift`` per channel, with the eval-mode statistics."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return scale, bn.bias - bn.running_mean * scale


def _fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn) -> Tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of ``bn(conv(x))`` (``bias`` None: the conv has none)."""
    scale, shift = _bn_scale_shift(bn)
    b = shift if bias is None else shift + bias * scale
    return weight * scale.reshape(-1, 1, 1, 1), b


def dilated_to_dense(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """A depthwise kernel (C, 1, k, k) with dilation r as the equivalent dense kernel (C, 1, r(k-1)+1, r(k-1)+1)."""
    if dilation == 1:
        return kernel
    c, g, k, _ = kernel.shape
    size = dilation * (k - 1) + 1
    dense = kernel.new_zeros(c, g, size, size)
    dense[:, :, ::dilation, ::dilation] = kernel
    return dense


def merge_dilated_into_large_kernel(large: torch.Tensor, dilated: torch.Tensor, dilation: int) -> torch.Tensor:
    """``large`` plus the dilated kernel made dense and zero-padded to the large kernel's size (centres aligned)."""
    dense = dilated_to_dense(dilated, dilation)
    pad = large.shape[-1] // 2 - dense.shape[-1] // 2
    if pad < 0:
        raise ValueError(f"a dilated branch spanning {dense.shape[-1]} pixels does not fit the {large.shape[-1]} "
                         "kernel")
    return large + F.pad(dense, [pad] * 4)


# ----------------------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------------------
class GRNwithNHWC(nn.Module):
    """Global Response Normalisation (ConvNeXt V2) on NHWC input: ``(gamma * N(x) + 1) * x (+ beta)`` where N is the
    spatial L2 norm of each channel divided by its mean over channels (+1e-6)."""

    def __init__(self, dim: int, use_bias: bool = True):
        super().__init__()
        self.use_bias = use_bias
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        if use_bias:
            self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, 2.0, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        out = (self.gamma * nx + 1) * x
        if hasattr(self, "beta"):
            out = out + self.beta
        return out


class NCHWtoNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: global mean, 1x1 conv ``down`` (C -> C/4), ReLU, 1x1 conv ``up``, sigmoid, rescale."""

    def __init__(self, input_channels: int, internal_neurons: int):
        super().__init__()
        self.down = nn.Conv2d(input_channels, internal_neurons, kernel_size=1, bias=True)
        self.up = nn.Conv2d(internal_neurons, input_channels, kernel_size=1, bias=True)
        self.input_channels = input_channels
        self.nonlinear = nn.ReLU(inplace=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.mean((2, 3), keepdim=True)
        x = torch.sigmoid(self.up(self.nonlinear(self.down(x))))
        return inputs * x.view(-1, self.input_channels, 1, 1)


class LayerNorm(nn.Module):
    """LayerNorm over the channels of NCHW (``channels_first``) or NHWC (``channels_last``) input, eps 1e-6."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last"):
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class DilatedReparamBlock(nn.Module):
    """A KxK depthwise conv (``lk_origin``) + BN (``origin_bn``) beside the dilated depthwise branches
    ``dil_conv_k{k}_{r}`` + ``dil_bn_k{k}_{r}`` of :data:`DILATED_BRANCHES`; deploy: ``lk_origin`` alone, biased."""

    def __init__(self, channels: int, kernel_size: int, deploy: bool = False, use_sync_bn: bool = False,
                 attempt_use_lk_impl: bool = True):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(f"a Dilated Reparam Block has kernel sizes {sorted(DILATED_BRANCHES)}, got {kernel_size}")
        self.kernel_size = kernel_size
        self.attempt_use_lk_impl = attempt_use_lk_impl  # official argument; erftools' backend choice replaces it
        self.kernel_sizes, self.dilates = (list(v) for v in DILATED_BRANCHES[kernel_size])
        self.lk_origin = _large_conv_cls()(channels, channels, kernel_size, padding=kernel_size // 2,
                                           groups=channels, bias=deploy)
        if not deploy:
            self.origin_bn = _bn(channels, use_sync_bn)
            for k, r in zip(self.kernel_sizes, self.dilates):
                self.add_module(f"dil_conv_k{k}_{r}", nn.Conv2d(channels, channels, k, padding=(r * (k - 1) + 1) // 2,
                                                                dilation=r, groups=channels, bias=False))
                self.add_module(f"dil_bn_k{k}_{r}", _bn(channels, use_sync_bn))

    def branches(self) -> List[Tuple[int, nn.Conv2d, nn.Module]]:
        """(dilation, conv, bn) of every dilated branch (none once merged)."""
        if not hasattr(self, "origin_bn"):
            return []
        return [(r, getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}"))
                for k, r in zip(self.kernel_sizes, self.dilates)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "origin_bn"):
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for _, conv, bn in self.branches():
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def merge_dilated_branches(self) -> None:
        """Replace the branches by one biased KxK depthwise conv (exact in eval mode); no-op when merged."""
        if not hasattr(self, "origin_bn"):
            return
        kernel, bias = _fold_bn(self.lk_origin.weight, self.lk_origin.bias, self.origin_bn)
        for r, conv, bn in self.branches():
            k, b = _fold_bn(conv.weight, None, bn)
            kernel = merge_dilated_into_large_kernel(kernel, k, r)
            bias = bias + b
        src = self.lk_origin
        merged = type(src)(src.in_channels, src.out_channels, src.kernel_size, padding=src.padding,
                           groups=src.groups, bias=True, backend=getattr(src, "backend", "auto"))
        merged = merged.to(device=kernel.device, dtype=kernel.dtype)
        merged.weight.copy_(kernel)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        for k, r in zip(self.kernel_sizes, self.dilates):
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        del self.origin_bn


class _ScriptableDilatedReparamBlock(nn.Module):
    """What TorchScript compiles for a training-structure :class:`DilatedReparamBlock` (same parameters, the branches
    in lists; see :meth:`UniRepLKNet.__prepare_scriptable__`)."""

    def __init__(self, block: DilatedReparamBlock):
        super().__init__()
        self.lk_origin = block.lk_origin
        self.origin_bn = block.origin_bn
        self.convs = nn.ModuleList([c for _, c, _ in block.branches()])
        self.bns = nn.ModuleList([b for _, _, b in block.branches()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.origin_bn(self.lk_origin(x))
        for conv, bn in zip(self.convs, self.bns):
            out = out + bn(conv(x))
        return out


class _DeployDilatedReparamBlock(nn.Module):
    """What TorchScript compiles for a merged :class:`DilatedReparamBlock`."""

    def __init__(self, block: DilatedReparamBlock):
        super().__init__()
        self.lk_origin = block.lk_origin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lk_origin(x)


class UniRepLKNetBlock(nn.Module):
    """One block (see the module docstring); ``kernel_size`` 0, 3, 5 or 7..17 (odd)."""

    def __init__(self, dim: int, kernel_size: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 deploy: bool = False, attempt_use_lk_impl: bool = True, with_cp: bool = False,
                 use_sync_bn: bool = False, ffn_factor: float = 4):
        super().__init__()
        self.with_cp = with_cp
        if kernel_size == 0:
            self.dwconv = nn.Identity()
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, use_sync_bn=use_sync_bn,
                                              attempt_use_lk_impl=attempt_use_lk_impl)
        elif kernel_size in (3, 5):
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
        else:
            raise ValueError(f"UniRepLKNet block kernel sizes are 0 (identity), 3, 5 or {sorted(DILATED_BRANCHES)[1:]}"
                             f", got {kernel_size}")
        self.norm = nn.Identity() if deploy or kernel_size == 0 else _bn(dim, use_sync_bn)
        self.se = SEBlock(dim, dim // 4)
        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(NCHWtoNHWC(), nn.Linear(dim, ffn_dim))
        self.act = nn.Sequential(nn.GELU(), GRNwithNHWC(ffn_dim, use_bias=not deploy))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim), NHWCtoNCHW())
        else:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim, bias=False), NHWCtoNCHW(), _bn(dim, use_sync_bn))
        use_gamma = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_gamma else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def compute_residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma.view(1, -1, 1, 1) * y
        return self.drop_path(y)

    def _residual_added(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.compute_residual(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint(self._residual_added, x, use_reentrant=False)
        return self._residual_added(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """The deploy structure, in place (exact in eval mode); no-op when already there."""
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.merge_dilated_branches()
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            self._fold_norm_into_dwconv()
        if len(self.pwconv2) == 3:
            self._fold_into_last_linear()

    def _fold_norm_into_dwconv(self) -> None:
        conv = self.dwconv.lk_origin if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
        weight, bias = _fold_bn(conv.weight, conv.bias, self.norm)
        if conv.bias is None:
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                            groups=conv.groups, bias=True).to(device=weight.device, dtype=weight.dtype)
            new.weight.copy_(weight)
            new.bias.copy_(bias)
            self.dwconv = new
        else:
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        self.norm = nn.Identity()

    def _fold_into_last_linear(self) -> None:
        """GRN bias beta -> W @ beta; then BN and the layer scale gamma -> the linear's weight and bias."""
        linear, bn = self.pwconv2[0], self.pwconv2[2]
        grn = self.act[1]
        bias = torch.zeros_like(bn.running_mean) if linear.bias is None else linear.bias.clone()
        if hasattr(grn, "beta"):
            bias = bias + linear.weight @ grn.beta.reshape(-1)
            del grn.beta
            grn.use_bias = False
        scale, shift = _bn_scale_shift(bn)
        gamma = self.gamma if self.gamma is not None else torch.ones_like(scale)
        new = nn.Linear(linear.in_features, linear.out_features, bias=True).to(device=linear.weight.device,
                                                                              dtype=linear.weight.dtype)
        new.weight.copy_(linear.weight * (scale * gamma).reshape(-1, 1))
        new.bias.copy_((bias * scale + shift) * gamma)
        self.pwconv2 = nn.Sequential(new, self.pwconv2[1])
        self.gamma = None


# ----------------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------------
#: the official default kernel sizes per block, by depths
DEFAULT_KERNEL_SIZES: Dict[Tuple[int, ...], Tuple[Tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3,) * 2, (13,) * 2, (13,) * 6, (13,) * 2),
    (2, 2, 8, 2): ((3,) * 2, (13,) * 2, (13,) * 8, (13,) * 2),
    (3, 3, 18, 3): ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),
    (3, 3, 27, 3): ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3),
}


def default_kernel_sizes(depths: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    """The official kernel sizes of every block for ``depths`` (A/F/P, N, T, S/B/L/XL)."""
    key = tuple(int(d) for d in depths)
    if key not in DEFAULT_KERNEL_SIZES:
        raise ValueError(f"no default kernel sizes for depths {key} (defaults exist for "
                         f"{', '.join(map(str, DEFAULT_KERNEL_SIZES))}); pass kernel_sizes, one tuple per stage with "
                         "one kernel size per block, e.g. ((3, 3), (13, 13), (13,) * 6, (13, 13))")
    return DEFAULT_KERNEL_SIZES[key]


def _scriptable_blocks(model: nn.Module) -> None:
    """The Dilated Reparam Blocks of ``model`` (a copy) in their TorchScript forms: branches in lists (training
    structure) or the merged kernel alone (deploy)."""
    for m in model.modules():
        if isinstance(m, UniRepLKNetBlock) and isinstance(m.dwconv, DilatedReparamBlock):
            m.dwconv = (_ScriptableDilatedReparamBlock(m.dwconv) if hasattr(m.dwconv, "origin_bn")
                        else _DeployDilatedReparamBlock(m.dwconv))


class UniRepLKNet(nn.Module):
    """UniRepLKNet with the official constructor arguments and module layout, and the timm model API.

    Classification (``num_classes`` an int): ``forward`` = stem and stages, mean over H and W, ``norm`` (LayerNorm),
    ``head`` (linear). ``forward_features(x)`` is the output of the last stage (the ERF target). Downstream
    (``num_classes=None`` or ``init_cfg`` given, the OpenMMLab backbone layout): ``forward`` returns the four stage
    outputs, each through ``norm0`` .. ``norm3`` (channels-first LayerNorms).
    """

    __jit_unused_properties__ = ["is_reparameterized"]

    def __init__(self, in_chans: int = 3, num_classes: Optional[int] = 1000, depths: Sequence[int] = (3, 3, 27, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, head_init_scale: float = 1.0,
                 kernel_sizes: Optional[Sequence[Sequence[int]]] = None, deploy: bool = False, with_cp: bool = False,
                 init_cfg: Optional[dict] = None, attempt_use_lk_impl: bool = True, use_sync_bn: bool = False,
                 *, global_pool: str = "avg", drop_rate: float = 0.0, device=None, dtype=None, **kwargs):
        super().__init__()
        self._check_args(depths, dims, kernel_sizes, num_classes, init_cfg, global_pool, kwargs)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self._build(in_chans, num_classes, depths, dims, drop_path_rate, layer_scale_init_value, head_init_scale,
                        kernel_sizes, deploy, with_cp, init_cfg, attempt_use_lk_impl, use_sync_bn, global_pool,
                        drop_rate)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, in_chans, num_classes, depths, dims, drop_path_rate, layer_scale_init_value, head_init_scale,
               kernel_sizes, deploy, with_cp, init_cfg, attempt_use_lk_impl, use_sync_bn, global_pool,
               drop_rate) -> None:
        depths = tuple(int(d) for d in depths)
        kernel_sizes = default_kernel_sizes(depths) if kernel_sizes is None else kernel_sizes
        self.depths, self.dims = list(depths), list(dims)
        self.kernel_sizes = [list(k) for k in kernel_sizes]
        self.with_cp = with_cp
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = dims[-1]
        self.init_cfg = init_cfg
        self.for_downstream = num_classes is None
        # the downstream mode's stage indices; None in classification (TorchScript then drops the downstream branch)
        self.out_indices: Optional[List[int]] = [0, 1, 2, 3] if self.for_downstream else None
        self.output_mode = "features" if self.for_downstream else "logits"
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1),
            LayerNorm(dims[0] // 2, eps=1e-6, data_format="channels_first"), nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
            LayerNorm(dims[0], eps=1e-6, data_format="channels_first"))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1),
                LayerNorm(dims[i + 1], eps=1e-6, data_format="channels_first")))
        rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]  # also on meta
        self.stages = nn.ModuleList()
        self.feature_info = []
        for i in range(4):
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*[UniRepLKNetBlock(
                dims[i], kernel_sizes[i][j], rates[first + j], layer_scale_init_value, deploy, attempt_use_lk_impl,
                with_cp, use_sync_bn) for j in range(depths[i])]))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"stages.{i}"))
        if self.for_downstream:
            for i in range(4):
                self.add_module(f"norm{i}", LayerNorm(dims[i], eps=1e-6, data_format="channels_first"))
        else:
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
            self.apply(self._init_weights)
            if isinstance(self.head, nn.Linear):
                self.head.weight.data.mul_(head_init_scale)
                self.head.bias.data.mul_(head_init_scale)
        if init_cfg is not None and init_cfg.get("checkpoint"):
            self._load_init_checkpoint(init_cfg["checkpoint"])

    @staticmethod
    def _check_args(depths, dims, kernel_sizes, num_classes, init_cfg, global_pool, kwargs) -> None:
        if kwargs:
            raise TypeError(f"UniRepLKNet got unexpected keyword arguments {sorted(kwargs)}")
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"UniRepLKNet has 4 stages: depths and dims need 4 entries, got {list(depths)}, "
                             f"{list(dims)}")
        if kernel_sizes is not None and (len(kernel_sizes) != 4 or any(
                len(k) != d for k, d in zip(kernel_sizes, depths))):
            raise ValueError(f"kernel_sizes must give one kernel size per block of each stage (depths "
                             f"{list(depths)}), got {kernel_sizes}")
        if init_cfg is not None and num_classes is not None:
            raise ValueError("init_cfg selects the downstream mode (OpenMMLab backbone): pass num_classes=None")
        if num_classes is not None and num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier) or None (downstream), got {num_classes}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"UniRepLKNet's global_pool is 'avg' (the mean) or '' (none), got {global_pool!r}")

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def _load_init_checkpoint(self, path) -> None:
        """The official downstream init: a backbone checkpoint (bare, ``model`` or ``state_dict``, ``backbone.``
        prefixed), loaded strictly apart from keys the backbone does not have (the classification head)."""
        from ._weights import read_checkpoint
        from .unireplknet_weights import convert_unireplknet_keys

        sd = convert_unireplknet_keys(read_checkpoint(path))
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last stage (NCHW); the head pools it."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x

    @torch.jit.unused
    def _forward_downstream(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs: List[torch.Tensor] = []
        norms = [self.norm0, self.norm1, self.norm2, self.norm3]
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(down(x))
            outs.append(norms[i](x))
        return outs

    def _head_norm(self, x: torch.Tensor, pooled: bool) -> torch.Tensor:
        if pooled:
            return self.norm(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # every position's channels (global_pool='')

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over H and W, LayerNorm, (dropout), linear; with ``global_pool=''`` the norm and the linear act on
        every position's channels (NCHW in, NCHW out)."""
        if self.global_pool == "avg":
            x = self.head_drop(self.norm(x.mean([-2, -1])))
            return x if pre_logits else self.head(x)
        x = self.head_drop(self.norm(x.permute(0, 2, 3, 1)))
        x = x if pre_logits else self.head(x)
        return x.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor):
        if self.out_indices is not None:
            return self._forward_downstream(x)
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The stage outputs (through ``norm0..3`` in the downstream mode) and the final features.

        ``indices``: the last n stages if an int, all if None, else the listed ones; ``norm``: the head's LayerNorm
        on the last stage's output when returned (classification mode); ``stop_early``: stop after the last stage
        asked for. Returns the list, or ``(final features, list)``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW' for UniRepLKNet, got '" + output_fmt + "'")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stop = max_index if stop_early else len(self.stages) - 1
        intermediates: List[torch.Tensor] = []
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            if i > stop:
                break
            x = stage(down(x))
            if i in take_indices:
                intermediates.append(self._tap(i, x, norm))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def _tap(self, i: int, x: torch.Tensor, norm: bool) -> torch.Tensor:
        if self.for_downstream:
            return [self.norm0, self.norm1, self.norm2, self.norm3][i](x)
        if norm and i == len(self.stages) - 1 and isinstance(self.norm, nn.LayerNorm):
            return self._head_norm(x, False)
        return x

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last one in ``indices`` (and the head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.downsample_layers = self.downsample_layers[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.dims[max_index]
        if not self.for_downstream:
            if prune_norm or prune_end:
                self.norm = nn.Identity()
            if prune_head or prune_end:
                self.reset_classifier(0, "")
        return take_indices

    # -- timm model API --------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool=''`` also removes the pooling (the head's
        LayerNorm then normalises every position). A downstream backbone gets the classification head."""
        if global_pool is not None:
            self._check_args(self.depths, self.dims, None, num_classes, None, global_pool, {})
            self.global_pool = global_pool
        ref = next(itertools.chain(self.parameters(), self.buffers()))
        dd = {"device": ref.device, "dtype": ref.dtype if ref.is_floating_point() else None}
        if self.for_downstream:
            self.for_downstream, self.output_mode, self.out_indices = False, "logits", None
            self.norm = nn.LayerNorm(self.num_features, eps=1e-6, **dd).train(self.training)
            self.head_drop = nn.Dropout(self.drop_rate)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head = head.train(self.training)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.with_cp = enable
        for m in self.modules():
            if isinstance(m, UniRepLKNetBlock):
                m.with_cp = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay: stem, then stages (blocks in order), then head."""
        if coarse:
            return dict(stem=r"^downsample_layers\.0", blocks=[(r"^(?:downsample_layers|stages)\.(\d+)", None)])
        return dict(stem=r"^downsample_layers\.0",
                    blocks=[(r"^downsample_layers\.(\d+)", (0,)), (r"^stages\.(\d+)\.(\d+)", None)])

    def __prepare_scriptable__(self) -> "UniRepLKNet":
        """For ``torch.jit.script``: a copy sharing every tensor, whose Dilated Reparam Blocks keep their branches
        in lists and whose large kernels run PyTorch's own convolution; the eager model is left as it is."""
        return scriptable_copy(self, _scriptable_blocks)

    # -- re-parameterisation -----------------------------------------------------------------------------------------
    def reparameterize_unireplknet(self) -> "UniRepLKNet":
        """The official name of :meth:`structural_reparam`."""
        for m in self.modules():
            if isinstance(m, UniRepLKNetBlock):
                m.reparameterize()
        return self

    def structural_reparam(self) -> "UniRepLKNet":
        """The deploy structure, in place (exact in eval mode): its state dict loads into ``deploy=True``."""
        return self.reparameterize_unireplknet()

    @property
    def is_reparameterized(self) -> bool:
        return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.stages.modules())

    def fuse_bn(self) -> "UniRepLKNet":
        """Fold every BatchNorm for inference: the re-parameterisation does it all (the LayerNorms stay)."""
        if self.training:
            raise RuntimeError("fuse_bn() folds eval-mode statistics: call model.eval() first")
        return self.structural_reparam()

    def set_conv_backend(self, backend: str) -> "UniRepLKNet":
        for m in self.modules():
            if isinstance(m, DepthwiseConv2d):
                m.backend = backend
        return self


# ----------------------------------------------------------------------------------------------------------------
# the published variants (official unireplknet_* constructors)
# ----------------------------------------------------------------------------------------------------------------
_AFP, _N, _T, _SBLXL = (2, 2, 6, 2), (2, 2, 8, 2), (3, 3, 18, 3), (3, 3, 27, 3)
CONFIGS: Dict[str, dict] = {
    "unireplknet-A": dict(depths=_AFP, dims=(40, 80, 160, 320)),
    "unireplknet-F": dict(depths=_AFP, dims=(48, 96, 192, 384)),
    "unireplknet-P": dict(depths=_AFP, dims=(64, 128, 256, 512)),
    "unireplknet-N": dict(depths=_N, dims=(80, 160, 320, 640)),
    "unireplknet-T": dict(depths=_T, dims=(80, 160, 320, 640)),
    "unireplknet-S": dict(depths=_SBLXL, dims=(96, 192, 384, 768)),
    "unireplknet-B": dict(depths=_SBLXL, dims=(128, 256, 512, 1024)),
    "unireplknet-L": dict(depths=_SBLXL, dims=(192, 384, 768, 1536)),
    "unireplknet-XL": dict(depths=_SBLXL, dims=(256, 512, 1024, 2048)),
}


def create_unireplknet(arch: str, sd: Optional[Dict[str, torch.Tensor]], where: str, num_classes: Optional[int],
                       **kwargs) -> UniRepLKNet:
    """A registered variant (``CONFIGS[arch]`` + ``kwargs``), with the state dict ``sd`` (any layout, see
    :mod:`erftools.models.unireplknet_weights`) loaded strictly: the structure (deploy or training), the mode
    (classification or downstream) and the number of classes follow the checkpoint unless given."""
    from ._weights import load_into
    from .unireplknet_weights import convert_unireplknet_keys, is_deploy_state_dict, is_downstream_state_dict

    if sd is not None:
        sd = convert_unireplknet_keys(sd)
        kwargs.setdefault("deploy", is_deploy_state_dict(sd))
        if is_downstream_state_dict(sd):
            num_classes = None
        elif num_classes is None and "head.weight" in sd:
            num_classes = int(sd["head.weight"].shape[0])
        elif num_classes is None:
            num_classes = 0 if "norm.weight" in sd else 1000
    elif num_classes is None:
        num_classes = 1000
    model = UniRepLKNet(**dict(CONFIGS[arch], num_classes=num_classes, **kwargs))
    if sd is not None:
        load_into(model, sd, where, arch)
    return model

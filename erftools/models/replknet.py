"""RepLKNet ("Scaling Up Your Kernels to 31x31", Ding et al., CVPR 2022), written for erftools.

The module names and the state-dict layout follow the official implementation exactly, in the training-time form
(``large_kernel.lkb_origin`` + ``large_kernel.small_conv``) and the re-parameterised form
(``large_kernel.lkb_reparam``), so official, OpenMMLab and re-parameterised checkpoints load with ``strict=True``.

Differences from the official code, none of which changes a number:
- no module-level state: SyncBatchNorm is a constructor argument (``use_sync_bn``), not a global switch;
- the large depthwise convolutions are :class:`erftools.ops.DepthwiseConv2d`, whose backend can be swapped;
- :meth:`RepLKNet.fuse_bn` folds every eval-mode BatchNorm into its neighbouring convolution for fast inference;
- the timm model API (``in_chans``, ``global_pool``, ``drop_rate``, ``device``/``dtype``, ``forward_head(pre_logits=)``,
  ``reset_classifier``, ``forward_intermediates``, ``prune_intermediate_layers``, ``set_grad_checkpointing``,
  ``feature_info``), TorchScript and FX support in the training-time and the re-parameterised form. None of these adds a
  parameter or a buffer: the state dict keeps the official layout.
"""

import copy
import itertools
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d, is_scriptable
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from ..ops import DepthwiseConv2d

__all__ = ["RepLKNet", "ReparamLargeKernelConv", "RepLKBlock", "ConvFFN", "RepLKNetStage", "CONFIGS",
           "ScriptableDepthwiseConv2d", "scriptable_copy", "fuse_conv_bn"]


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
class ScriptableDepthwiseConv2d(DepthwiseConv2d):
    """A :class:`~erftools.ops.DepthwiseConv2d` that TorchScript can compile.

    In eager mode (and under FX, where it is a leaf module) it is a ``DepthwiseConv2d``, backend dispatch included;
    compiled by TorchScript it runs PyTorch's own convolution (the ``native`` backend). RepLKNet uses it when built
    under ``timm.layers.set_scriptable(True)``, and ``torch.jit.script(model)`` swaps it in on a copy of the model
    (see :meth:`RepLKNet.__prepare_scriptable__`), so the eager model is never changed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._dispatch(x)

    @torch.jit.unused
    def _dispatch(self, x: torch.Tensor) -> torch.Tensor:
        return DepthwiseConv2d.forward(self, x)


def scriptable_copy(model: nn.Module, swap=None) -> nn.Module:
    """A copy of ``model`` sharing every parameter and buffer (``torch.jit.script`` compiles it; the eager model is
    left as it is), with ``swap(copy)`` applied first and every :class:`~erftools.ops.DepthwiseConv2d` made a
    :class:`ScriptableDepthwiseConv2d`."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, shared)
    if swap is not None:
        swap(clone)
    for m in clone.modules():
        if type(m) is DepthwiseConv2d:
            m.__class__ = ScriptableDepthwiseConv2d
    return clone


def _large_conv_cls() -> type:
    return ScriptableDepthwiseConv2d if is_scriptable() else DepthwiseConv2d


def _bn(channels: int, sync: bool, dd: Optional[dict] = None) -> nn.Module:
    dd = dd or {}
    return nn.SyncBatchNorm(channels, **dd) if sync else nn.BatchNorm2d(channels, **dd)


def _conv(cin, cout, k, stride, padding, groups, bias=False, large=False, dd=None) -> nn.Conv2d:
    cls = _large_conv_cls() if large else nn.Conv2d
    return cls(cin, cout, kernel_size=k, stride=stride, padding=padding, dilation=1, groups=groups, bias=bias,
               **(dd or {}))


def conv_bn(cin, cout, k, stride, padding, groups, *, sync=False, large=False, dd=None) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", _conv(cin, cout, k, stride, padding, groups, large=large, dd=dd))
    seq.add_module("bn", _bn(cout, sync, dd))
    return seq


def conv_bn_relu(cin, cout, k, stride, padding, groups, *, sync=False, dd=None) -> nn.Sequential:
    seq = conv_bn(cin, cout, k, stride, padding, groups, sync=sync, dd=dd)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = [x.shape[0]] + [1] * (x.dim() - 1)  # a list, not a tuple: TorchScript needs a fixed tuple length
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class ReparamLargeKernelConv(nn.Module):
    """A depthwise KxK conv + BN, plus (optionally) a parallel small-kernel depthwise conv + BN; summed.

    After :meth:`merge_kernel` a single biased KxK conv (``lkb_reparam``) replaces both branches.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, groups, small_kernel,
                 small_kernel_merged=False, *, use_sync_bn=False, dd=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        padding = kernel_size // 2
        if small_kernel_merged:
            self.lkb_reparam = _conv(in_channels, out_channels, kernel_size, stride, padding, groups, bias=True,
                                     large=True, dd=dd)
        else:
            self.lkb_origin = conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups,
                                      sync=use_sync_bn, large=True, dd=dd)
            if small_kernel is not None:
                if small_kernel > kernel_size:
                    raise ValueError(f"small_kernel ({small_kernel}) must not exceed the large kernel ({kernel_size})")
                self.small_conv = conv_bn(in_channels, out_channels, small_kernel, stride, small_kernel // 2, groups,
                                          sync=use_sync_bn, large=True, dd=dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # hasattr on a module is resolved statically by TorchScript and is plain Python under FX
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
        cls = type(src) if isinstance(src, DepthwiseConv2d) else DepthwiseConv2d
        merged = cls(src.in_channels, src.out_channels, kernel_size=src.kernel_size, stride=src.stride,
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

    def __init__(self, in_channels, internal_channels, out_channels, drop_path, *, use_sync_bn=False, dd=None):
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.preffn_bn = _bn(in_channels, use_sync_bn, dd)
        self.pw1 = conv_bn(in_channels, internal_channels, 1, 1, 0, 1, sync=use_sync_bn, dd=dd)
        self.pw2 = conv_bn(internal_channels, out_channels, 1, 1, 0, 1, sync=use_sync_bn, dd=dd)
        self.nonlinear = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.preffn_bn(x)
        out = self.pw1(out)
        out = self.nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKBlock(nn.Module):
    """BN -> 1x1 conv (+BN, ReLU) -> large depthwise conv (+ small branch) -> ReLU -> 1x1 conv (+BN) -> + identity."""

    def __init__(self, in_channels, dw_channels, block_lk_size, small_kernel, drop_path, small_kernel_merged=False,
                 *, use_sync_bn=False, dd=None):
        super().__init__()
        self.pw1 = conv_bn_relu(in_channels, dw_channels, 1, 1, 0, 1, sync=use_sync_bn, dd=dd)
        self.pw2 = conv_bn(dw_channels, in_channels, 1, 1, 0, 1, sync=use_sync_bn, dd=dd)
        self.large_kernel = ReparamLargeKernelConv(dw_channels, dw_channels, block_lk_size, 1, dw_channels,
                                                   small_kernel, small_kernel_merged, use_sync_bn=use_sync_bn, dd=dd)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = _bn(in_channels, use_sync_bn, dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelkb_bn(x)
        out = self.pw1(out)
        out = self.large_kernel(out)
        out = self.lk_nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKNetStage(nn.Module):
    """The blocks of one stage; ``norm`` (identity unless ``norm_intermediate_features``) is applied by the caller to
    the stage output that is handed out as a feature map, never inside the chain."""

    def __init__(self, channels, num_blocks, stage_lk_size, drop_path, small_kernel, dw_ratio=1, ffn_ratio=4,
                 use_checkpoint=False, small_kernel_merged=False, norm_intermediate_features=False,
                 *, use_sync_bn=False, dd=None):
        super().__init__()
        self.grad_checkpointing = bool(use_checkpoint)
        blocks = []
        for i in range(num_blocks):
            dp = drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), stage_lk_size, small_kernel, dp,
                                     small_kernel_merged, use_sync_bn=use_sync_bn, dd=dd))
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), channels, dp, use_sync_bn=use_sync_bn, dd=dd))
        self.blocks = nn.ModuleList(blocks)
        self.norm = _bn(channels, use_sync_bn, dd) if norm_intermediate_features else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for blk in self.blocks:
                x = checkpoint(blk, x, use_reentrant=False)
        else:
            for blk in self.blocks:
                x = blk(x)
        return x


# ----------------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------------
class RepLKNet(nn.Module):
    """RepLKNet with the official constructor arguments and module layout, and the timm model API.

    ``forward_features(x)`` returns the last feature map (end of stage 4, before the head's BN), or, with
    ``out_indices`` (the official dense-task mode), the list of the selected stage outputs (each through its stage
    norm). ``forward_intermediates`` / ``timm.create_model(..., features_only=True)`` give the same stage outputs.

    ``num_classes=None`` (official) builds a backbone without ``norm``/``head`` (needs ``out_indices``);
    ``num_classes=0`` (timm) keeps the head's BN and pooling and replaces the classifier by an identity.
    """

    # TorchScript compiles properties unless listed here
    __jit_unused_properties__ = ["is_reparameterized", "use_checkpoint"]

    def __init__(self, large_kernel_sizes: Sequence[int], layers: Sequence[int], channels: Sequence[int],
                 small_kernel: int | None, dw_ratio: float = 1, ffn_ratio: float = 4, num_classes: int | None = 1000,
                 drop_path_rate: float = 0.0, in_channels: int = 3, out_indices: Iterable[int] | None = None,
                 use_checkpoint: bool = False, small_kernel_merged: bool = False, use_sync_bn: bool = False,
                 norm_intermediate_features: bool = False, *, in_chans: int | None = None, global_pool: str = "avg",
                 drop_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        if not (len(large_kernel_sizes) == len(layers) == len(channels)):
            raise ValueError("large_kernel_sizes, layers and channels must have one entry per stage")
        if num_classes is None and out_indices is None:
            raise ValueError("num_classes=None needs out_indices (a backbone for dense tasks)")
        if num_classes is not None and num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier) or None, got {num_classes}")
        dd = {"device": device, "dtype": dtype}
        in_channels = in_channels if in_chans is None else in_chans  # timm's name for the same argument
        self.large_kernel_sizes = list(large_kernel_sizes)
        self.layers = list(layers)
        self.channels = list(channels)
        self.small_kernel = small_kernel
        self.num_stages = len(layers)
        self.out_indices = list(out_indices) if out_indices is not None else None
        self.grad_checkpointing = bool(use_checkpoint)
        self.num_classes = num_classes
        self.in_chans = in_channels
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = channels[-1]
        base = channels[0]
        sync = use_sync_bn
        self.stem = nn.ModuleList([
            conv_bn_relu(in_channels, base, 3, 2, 1, 1, sync=sync, dd=dd),
            conv_bn_relu(base, base, 3, 1, 1, base, sync=sync, dd=dd),
            conv_bn_relu(base, base, 1, 1, 0, 1, sync=sync, dd=dd),
            conv_bn_relu(base, base, 3, 2, 1, base, sync=sync, dd=dd),
        ])
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(layers), device="cpu")]
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.feature_info = []
        for i in range(self.num_stages):
            start, stop = sum(layers[:i]), sum(layers[:i + 1])
            self.stages.append(RepLKNetStage(channels[i], layers[i], large_kernel_sizes[i], dpr[start:stop],
                                             small_kernel, dw_ratio, ffn_ratio, use_checkpoint, small_kernel_merged,
                                             norm_intermediate_features, use_sync_bn=sync, dd=dd))
            self.feature_info.append(dict(num_chs=channels[i], reduction=4 * 2 ** i, module=f"stages.{i}"))
            if i < self.num_stages - 1:
                self.transitions.append(nn.Sequential(
                    conv_bn_relu(channels[i], channels[i + 1], 1, 1, 0, 1, sync=sync, dd=dd),
                    conv_bn_relu(channels[i + 1], channels[i + 1], 3, 2, 1, channels[i + 1], sync=sync, dd=dd)))
        if num_classes is not None:
            self.norm = _bn(channels[-1], sync, dd)
            self.avgpool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(channels[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()

    # -- forward ---------------------------------------------------------------------------------------------------
    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_stem_checkpointed(x)
        for layer in self.stem:
            x = layer(x)
        return x

    @torch.jit.unused
    def _forward_stem_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem[0](x)  # as the official code: the input image itself needs no recomputation
        for layer in self.stem[1:]:
            x = checkpoint(layer, x, use_reentrant=False)
        return x

    def forward_features(self, x: torch.Tensor):
        x = self._forward_stem(x)
        if self.out_indices is not None:  # official dense mode (TorchScript drops this branch when it is None)
            return self._forward_dense(x)
        for stage, transition in zip(self.stages, self.transitions):
            x = transition(stage(x))
        return self.stages[-1](x)

    @torch.jit.unused
    def _forward_dense(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(stage.norm(x))
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return outs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x)
        x = self.avgpool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        x = self.forward_features(x)
        if self.out_indices is not None:
            return x
        return self.forward_head(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The stage outputs (each through its stage norm, as in the dense mode) and the final features.

        Args:
            x: input images.
            indices: the stages to return: the last n if an int, all if None, else the listed ones (negative counts
                from the end).
            norm: apply the final norm (the head's BatchNorm) to the last stage's output when it is returned.
            stop_early: stop after the last stage that is asked for.
            output_fmt: only ``NCHW``.
            intermediates_only: return the list of stage outputs only.

        Returns:
            The list of stage outputs, or ``(final features, list of stage outputs)``; the final features equal
            ``forward_features(x)`` when every stage runs.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW' for RepLKNet, got '" + output_fmt + "'")
        intermediates: List[torch.Tensor] = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        stop = max_index if stop_early else last_idx
        x = self._forward_stem(x)
        feat_idx = 0
        for stage, transition in zip(self.stages, self.transitions):
            if feat_idx <= stop:
                x = stage(x)
                if feat_idx in take_indices:
                    intermediates.append(stage.norm(x))
                if feat_idx < stop:
                    x = transition(x)
            feat_idx += 1
        if stop == last_idx:
            x = self.stages[-1](x)
            if last_idx in take_indices:
                feat = self.stages[-1].norm(x)
                if norm:
                    feat = self._final_norm(feat)
                intermediates.append(feat)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "norm"):
            return self.norm(x)
        return x

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last one in ``indices`` (and the head); returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.transitions = self.transitions[:max_index]
        self.num_stages = len(self.stages)
        if (prune_norm or prune_end) and hasattr(self, "norm"):
            self.norm = nn.Identity()  # the head's BN is sized for, and only applied to, the last stage
        if prune_end:
            self.num_features = self.head_hidden_size = self.channels[max_index]
        if (prune_head or prune_end) and hasattr(self, "head"):
            self.reset_classifier(0, "")
        return take_indices

    # -- timm model API --------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool`` ``''`` also removes the pooling."""
        ref = next(itertools.chain(self.parameters(), self.buffers()), None)
        dd = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        if ref is not None and not ref.is_floating_point():
            dd.pop("dtype")
        self.num_classes = num_classes
        if not hasattr(self, "norm"):  # an official dense backbone (num_classes=None) gets the official head BN
            self.norm = _bn(self.num_features, False, dd).train(self.training)
        if global_pool is not None or not hasattr(self, "avgpool"):
            self.global_pool = self.global_pool if global_pool is None else global_pool
            self.avgpool = SelectAdaptivePool2d(pool_type=self.global_pool, flatten=bool(self.global_pool)).train(self.training)
        if not hasattr(self, "head_drop"):
            self.head_drop = nn.Dropout(self.drop_rate).train(self.training)
        head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head = head.train(self.training)
        self.out_indices = None

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @property
    def use_checkpoint(self) -> bool:
        return self.grad_checkpointing

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay: stem, blocks in order (each transition right after
        the stage it follows), then the head."""
        if coarse:
            blocks = [(r"^stages\.(\d+)", None), (r"^transitions\.(\d+)", (99999,))]
        else:
            blocks = [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.norm", (99998,)),
                      (r"^transitions\.(\d+)", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    def __prepare_scriptable__(self) -> "RepLKNet":
        """Called by ``torch.jit.script``: a copy sharing every parameter and buffer, with the large-kernel
        convolutions as :class:`ScriptableDepthwiseConv2d`; the eager model itself is left as it is."""
        if not any(type(m) is DepthwiseConv2d for m in self.modules()):
            return self
        return scriptable_copy(self)

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


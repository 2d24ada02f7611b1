"""Input-gradient-only layers: the memory half of the ERF fast path.

PyTorch's autograd keeps every convolution's (and linear layer's) *input* alive until the backward pass, because it
might need it for the weight gradient. An ERF only needs the gradient with respect to the image, and the gradient of
a convolution or a linear layer with respect to its input depends on the weight alone. :func:`freeze_convolutions`
therefore makes every ``nn.Conv2d`` and ``nn.Linear`` of a model whose weights are frozen run through
:class:`_InputGradConv` / :class:`_InputGradLinear`, which keep nothing but the input's shape: on RepLKNet this
halves the activations held for the backward pass. What remains is what the activations' own gradients need: the
ReLU outputs and the GELU inputs. (Keeping a 1-byte mask instead of a ReLU's output would save another ~0.4 GB at
1024 px on RepLKNet-31B, but PyTorch's ``where`` is 2.5x slower than ReLU's own backward: ~5 % more time.)

For convolutions and linears the numbers are unchanged: the forward is the module's own, and the backward is
PyTorch's own ``convolution_backward`` (or ``grad @ weight``) with only the input gradient requested. (The
UniRepLKNet rewrites below order the float arithmetic differently: against autograd through the modules they agree
to 1e-10 relative in float64, tests/models/test_unireplknet_erf.py.) Under autocast (the ERF's
``precision="bf16"``) the forward runs in the autocast dtype and the backward casts the weight to the gradient's
dtype, as autocast did in the forward pass.

UniRepLKNet's Global Response Normalisation (:class:`erftools.models.unireplknet.GRNwithNHWC`) runs through
:class:`_InputGradGRN` in float32/float64: the forward of the prepared model's fast path
(:mod:`erftools.models._unireplknet_fast`: the spatial L2 norm as the square root of a stepped sum of squares), and
the input gradient in closed form (below) in three passes over the tensor where autograd takes five. In a
deploy-structure block the GRN and the linear layer after it run as one (:class:`_InputGradGRNLinear`: the GRN's
per-channel scale goes into each image's copy of the linear's weight, so the scaled tensor, four times the block's
width, is never written forward or backward); the squeeze-and-excitation gate's input gradient is closed-form too
(:class:`_InputGradSE`); the channels-first LayerNorms are the preparation's fused ``layer_norm`` already. Each
falls back to the module's own operations in training, under autocast or a low precision, and where a forward hook
waits on a submodule it would skip (a layer target of ``--layers``).
Together they took UniRepLKNet-S at 1024 px from 1.82x to 2.0-2.5x the official procedure's speed
(``reports/benchmarks/erf_bench_unireplknet.md``, ``benchmarks/erf_bench.py --mode unireplknet --rounds 4``).

Large-kernel ``DepthwiseConv2d`` modules keep their own path when their backend is not ``native`` (the FFT and Triton
backends have their own backward passes). (The BatchNorm folding is the model's preparation,
:mod:`erftools.models.prepare`.)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models._unireplknet_fast import (full_precision, fused_block_forward, fusable_block, grn_linear, grn_scale,
                                         hooked, patch_forwards, spatial_sum)
from ..ops import DepthwiseConv2d, record_native_run, resolve_backend
from ..ops._dispatch import cuda_native_layout

__all__ = ["freeze_convolutions"]


class _InputGradConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.shape = x.shape
        ctx.channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        ctx.weight = weight  # a frozen parameter, not an activation: keeping a reference costs nothing
        ctx.conf = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        stride, padding, dilation, groups = ctx.conf
        # convolution_backward reads only the input's shape and layout when no weight gradient is asked for; an
        # uninitialised buffer (never touched) is cheaper than an expanded one, which oneDNN would materialise
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        grad = grad.contiguous(memory_format=fmt)
        dummy = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        # under autocast the forward ran in the autocast dtype (the gradient's): the weight is cast the same way
        weight = ctx.weight if ctx.weight.dtype == grad.dtype else ctx.weight.to(grad.dtype)
        gx = torch.ops.aten.convolution_backward(grad, dummy, weight, None, stride, padding, dilation, False,
                                                 [0, 0], groups, [True, False, False])[0]
        return gx, None, None, None, None, None, None


class _InputGradLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.weight = weight
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.weight if ctx.weight.dtype == grad.dtype else ctx.weight.to(grad.dtype)  # autocast, as above
        return grad.matmul(weight), None, None


def _grn_t(r: torch.Tensor, gamma: torch.Tensor, norm: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The GRN's ``t`` of ``dx = g s + x t`` from ``r = sum_p g x`` (see :class:`_InputGradGRN`)."""
    q = (r * gamma * norm).sum(-1, keepdim=True)
    t = (r * gamma / mean - q / (mean * mean * norm.shape[-1])) / norm
    return torch.where(norm > 0, t, torch.zeros_like(t))


class _InputGradGRN(torch.autograd.Function):
    """``out = x * s + beta`` on NHWC ``x`` with ``s_c = gamma_c * n_c / m + 1``, ``n_c = ||x_c||_2`` over the spatial
    positions and ``m = mean_k n_k + 1e-6``; only the gradient with respect to ``x``. With ``r_c = sum_p g_c x_c``
    and ``q = sum_k r_k gamma_k n_k``, the chain rule through ``n`` and ``m`` gives
    ``dx_c = g_c s_c + x_c t_c``, ``t_c = (r_c gamma_c / m - q / (C m^2)) / n_c`` (0 for a channel that is all zero,
    the subgradient PyTorch's norm uses)."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        norm, mean, scale = grn_scale(x, gamma)
        ctx.save_for_backward(x, norm, mean, scale)
        ctx.gamma = gamma  # a frozen parameter, as in _InputGradConv
        out = x * scale
        return out if beta is None else out.add_(beta)

    @staticmethod
    def backward(ctx, grad):
        x, norm, mean, scale = ctx.saved_tensors
        t = _grn_t(spatial_sum(grad, x), ctx.gamma, norm, mean)
        return torch.addcmul(grad * scale, x, t), None, None


class _InputGradGRNLinear(torch.autograd.Function):
    """The GRN (no ``beta``: the deploy structure projects it into the bias) and the linear layer after it as one:
    ``y = (x s) W^T + b = x (W diag(s))^T + b`` with each image's ``s``, so the scaled tensor (4x the block's width)
    is never written. Backward: ``g W diag(s)`` is :class:`_InputGradGRN`'s ``g s`` from the one matrix product,
    and its ``r = sum_p g x`` is ``sum_p (g s) x / s`` (a channel with ``s = 0`` takes the unscaled product)."""

    @staticmethod
    def forward(ctx, x, gamma, weight, bias):
        out, (norm, mean, scale, w) = grn_linear(x, gamma, weight, bias)
        ctx.save_for_backward(x, norm, mean, scale, w)
        ctx.gamma, ctx.weight = gamma, weight  # frozen parameters, as in _InputGradConv
        return out

    @staticmethod
    def backward(ctx, grad):
        x, norm, mean, scale, w = ctx.saved_tensors
        b = x.shape[0]
        gs = torch.bmm(grad.reshape(b, -1, grad.shape[-1]), w).view(x.shape)  # = g s, g the GRN's output gradient
        if bool((scale == 0).any()):
            r = spatial_sum(torch.matmul(grad, ctx.weight), x)
        else:
            r = spatial_sum(gs, x) / scale
        return torch.addcmul(gs, x, _grn_t(r, ctx.gamma, norm, mean)), None, None, None


def _patched_grn(module: nn.Module, original, x):
    if (not torch.is_grad_enabled() or not x.requires_grad or module.gamma.requires_grad
            or not full_precision(x) or module.gamma.dtype != x.dtype):
        return original(x)  # training, or a low precision whose rounding the module's own ops define
    return _InputGradGRN.apply(x, module.gamma, getattr(module, "beta", None))


class _InputGradSE(torch.autograd.Function):
    """UniRepLKNet's squeeze-and-excitation ``out = x * a``, ``a = sigmoid(up(relu(down(mean_p x))))``, forward as the
    module computes it; only the gradient with respect to ``x``: ``dx = g a + (J^T v) / P`` with ``v = sum_p g x``
    (per image and channel), ``J = da / d mean`` through the two 1x1 convolutions, and ``P`` the spatial positions.
    Autograd adds the broadcast mean gradient to ``g a`` as a separate, layout-mixing accumulation (a fifth of the
    SE's backward time at 1024 px); here it is one pass."""

    @staticmethod
    def forward(ctx, x, down_w, down_b, up_w, up_b):
        u = F.conv2d(x.mean((2, 3), keepdim=True), down_w, down_b)
        a = torch.sigmoid(F.conv2d(torch.relu(u), up_w, up_b))
        ctx.save_for_backward(x, a, u > 0)
        ctx.weights = (down_w, up_w)  # frozen parameters, as in _InputGradConv
        return x * a.view(-1, x.shape[1], 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x, a, active = ctx.saved_tensors
        down_w, up_w = ctx.weights
        v = (grad * x).sum((2, 3))  # (B, C)
        w = (v * (a * (1 - a)).flatten(1)) @ up_w.flatten(1)  # d/d relu(u): (B, C/4)
        w = (w * active.flatten(1)) @ down_w.flatten(1)  # d/d mean: (B, C)
        dx = torch.mul(grad, a, out=torch.empty_like(grad))  # in the gradient's own layout
        return dx.add_((w / (x.shape[2] * x.shape[3]))[:, :, None, None]), None, None, None, None


def _patched_se(module: nn.Module, original, x):
    if (not torch.is_grad_enabled() or not x.requires_grad or module.down.weight.requires_grad
            or module.up.weight.requires_grad or not full_precision(x)
            or hooked(module.down, module.up, module.nonlinear)):
        return original(x)  # training, a low precision, or hooks that want the children called
    return _InputGradSE.apply(x, module.down.weight, module.down.bias, module.up.weight, module.up.bias)


def _patched_block(block: nn.Module, original, x):
    """A deploy-structure UniRepLKNet block whose GRN and second linear run as :class:`_InputGradGRNLinear`."""
    if (not torch.is_grad_enabled() or not x.requires_grad or not fusable_block(block, x)
            or block.act[1].gamma.requires_grad or block.pwconv2[0].weight.requires_grad):
        return original(x)
    return fused_block_forward(block, x, _InputGradGRNLinear.apply)


def _patched_linear(module: nn.Linear, original, x):
    if not torch.is_grad_enabled() or not x.requires_grad or module.weight.requires_grad:
        return original(x)
    return _InputGradLinear.apply(x, module.weight, module.bias)


def _patched_forward(module: nn.Conv2d, original, x):
    if not torch.is_grad_enabled() or not x.requires_grad or module.weight.requires_grad:
        return original(x)
    if isinstance(module, DepthwiseConv2d) and module._fast_path_ok():
        k = module.kernel_size[0]
        # only the input gradient is needed here: the backend choice (and on CUDA the measured layout) for that
        if resolve_backend(module.backend, x, k, weight_grad=False, mode="input_grad") != "native":
            return original(x)
        if x.is_cuda and cuda_native_layout(x.device, x.dtype, k, tuple(x.shape[-2:]), "input_grad"):
            return original(x)  # dwconv2d applies the table's layout
        record_native_run(x, k)  # so that backend_report() lists the native layers run here
    return _InputGradConv.apply(x, module.weight, module.bias, module.stride, module.padding, module.dilation,
                                module.groups)


def _patcher(m: nn.Module, unireplknet) -> Callable | None:
    """The input-gradient-only forward for ``m``'s kind, None when it has none."""
    if isinstance(m, unireplknet.UniRepLKNetBlock):
        return _patched_block
    if isinstance(m, unireplknet.GRNwithNHWC):
        return _patched_grn
    if isinstance(m, unireplknet.SEBlock):
        return _patched_se
    if type(m) is nn.Linear:
        return _patched_linear
    if type(m) is nn.Conv2d or (isinstance(m, nn.Conv2d) and type(m).__name__ in ("DepthwiseConv2d",
                                                                               "ScriptableDepthwiseConv2d")):
        return _patched_forward if m.padding_mode == "zeros" and not isinstance(m.padding, str) else None
    return None


def freeze_convolutions(model: nn.Module) -> int:
    """Route the frozen ``nn.Conv2d`` (zero, numeric padding), ``nn.Linear`` and UniRepLKNet modules (block, GRN,
    SE) of ``model`` through the input-gradient-only path, in place. Returns how many were
    patched. Idempotent."""
    from ..models import unireplknet

    return patch_forwards(model, lambda m: _patcher(m, unireplknet), "_erftools_input_grad_only")

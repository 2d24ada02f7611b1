"""Input-gradient-only layers: the memory half of the ERF fast path.

PyTorch's autograd keeps every convolution's (and linear layer's) *input* alive until the backward pass, because it
might need it for the weight gradient. An ERF only needs the gradient with respect to the image, and the gradient of
a convolution or a linear layer with respect to its input depends on the weight alone. :func:`freeze_convolutions`
therefore makes every ``nn.Conv2d`` and ``nn.Linear`` of a model whose weights are frozen run through
:class:`_InputGradConv` / :class:`_InputGradLinear`, which keep nothing but the input's shape: on RepLKNet this
halves the activations held for the backward pass. What remains is what the activations' own gradients need: the
ReLU outputs and the GELU inputs. (Keeping a 1-byte mask instead of a ReLU's output would save another ~0.4 GB at
1024 px on RepLKNet-31B, but PyTorch's ``where`` is 2.5x slower than ReLU's own backward: ~5 % more time.)

The numbers are unchanged: the forward is the module's own, and the backward is PyTorch's own
``convolution_backward`` (or ``grad @ weight``) with only the input gradient requested. Under autocast (the ERF's
``precision="bf16"``) the forward runs in the autocast dtype and the backward casts the weight to the gradient's
dtype, as autocast did in the forward pass.

UniRepLKNet's Global Response Normalisation (:class:`erftools.models.unireplknet.GRNwithNHWC`) runs through
:class:`_InputGradGRN` in float32/float64: the same function, its spatial L2 norm as the square root of a sum of
squares (PyTorch's ``vector_norm`` over the two spatial dimensions of an NHWC tensor was 3-5x slower here and,
against float64, 1e-5 relative off where the sum of squares is 1e-7), and the input gradient in closed form (below)
in three passes over the tensor where autograd takes five. On UniRepLKNet-S at 1024 px the GRN was a quarter of the
ERF's time (``benchmarks/erf_bench.py --mode unireplknet``).

Large-kernel ``DepthwiseConv2d`` modules keep their own path when their backend is not ``native`` (the FFT and Triton
backends have their own backward passes). (The BatchNorm folding is the model's preparation,
:mod:`erftools.models.prepare`.)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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


class _InputGradGRN(torch.autograd.Function):
    """``out = x * s + beta`` on NHWC ``x`` with ``s_c = gamma_c * n_c / m + 1``, ``n_c = ||x_c||_2`` over the spatial
    positions and ``m = mean_k n_k + 1e-6``; only the gradient with respect to ``x``. With ``r_c = sum_p g_c x_c``
    and ``q = sum_k r_k gamma_k n_k``, the chain rule through ``n`` and ``m`` gives
    ``dx_c = g_c s_c + x_c t_c``, ``t_c = (r_c gamma_c / m - q / (C m^2)) / n_c`` (0 for a channel that is all zero,
    the subgradient PyTorch's norm uses)."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        norm = x.square().sum((1, 2), keepdim=True).sqrt()  # (B, 1, 1, C)
        mean = norm.mean(-1, keepdim=True) + 1e-6  # (B, 1, 1, 1)
        scale = gamma * (norm / mean) + 1
        ctx.save_for_backward(x, norm, mean, scale)
        ctx.gamma = gamma  # a frozen parameter, as in _InputGradConv
        out = x * scale
        return out if beta is None else out.add_(beta)

    @staticmethod
    def backward(ctx, grad):
        x, norm, mean, scale = ctx.saved_tensors
        gamma = ctx.gamma
        r = (grad * x).sum((1, 2), keepdim=True)
        q = (r * gamma * norm).sum(-1, keepdim=True)
        t = (r * gamma / mean - q / (mean * mean * norm.shape[-1])) / norm
        t = torch.where(norm > 0, t, torch.zeros_like(t))
        return torch.addcmul(grad * scale, x, t), None, None


def _patched_grn(module: nn.Module, original):
    def forward(x):
        if (not torch.is_grad_enabled() or not x.requires_grad or module.gamma.requires_grad
                or x.dtype not in (torch.float32, torch.float64) or module.gamma.dtype != x.dtype):
            return original(x)  # training, or a low precision whose rounding the module's own ops define
        return _InputGradGRN.apply(x, module.gamma, getattr(module, "beta", None))

    return forward


def _patched_linear(module: nn.Linear, original):
    def forward(x):
        if not torch.is_grad_enabled() or not x.requires_grad or module.weight.requires_grad:
            return original(x)
        return _InputGradLinear.apply(x, module.weight, module.bias)

    return forward


def _patched_forward(module: nn.Conv2d, original):
    from ..ops import DepthwiseConv2d, record_native_run, resolve_backend
    from ..ops._dispatch import cuda_native_layout

    def forward(x):
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

    return forward


def _patcher(m: nn.Module, grn_class: type):
    """The input-gradient-only forward for ``m``'s kind, None when it has none."""
    if isinstance(m, grn_class):
        return _patched_grn
    if type(m) is nn.Linear:
        return _patched_linear
    if type(m) is nn.Conv2d or (isinstance(m, nn.Conv2d) and type(m).__name__ in ("DepthwiseConv2d",
                                                                               "ScriptableDepthwiseConv2d")):
        return _patched_forward if m.padding_mode == "zeros" and not isinstance(m.padding, str) else None
    return None


def freeze_convolutions(model: nn.Module) -> int:
    """Route the frozen ``nn.Conv2d`` (zero, numeric padding), ``nn.Linear`` and UniRepLKNet GRN modules of ``model``
    through the input-gradient-only path, in place. Returns how many were patched. Idempotent."""
    from ..models.unireplknet import GRNwithNHWC

    n = 0
    for m in model.modules():
        patch = _patcher(m, GRNwithNHWC)
        if patch is None:
            continue
        if not getattr(m, "_erftools_input_grad_only", False):
            m.forward = patch(m, m.forward)
            m._erftools_input_grad_only = True
        n += 1
    return n

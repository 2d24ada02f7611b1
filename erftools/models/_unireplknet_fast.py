"""UniRepLKNet's fast forwards for a prepared model (:func:`erftools.models.prepare.prepare_for_inference`).

The same functions as the modules' own, with fewer passes over the block's widest tensor (four times its width):

- the GRN's spatial L2 norm as the square root of a sum of squares taken a few rows at a time
  (:func:`spatial_sum`; PyTorch's ``vector_norm`` over the two spatial axes of an NHWC tensor was 3-5x slower here
  and, against float64, 1e-5 relative off where the sum of squares is 1e-7);
- in a deploy-structure block the GRN and the linear after it as one product: the GRN's per-channel scale goes into
  each image's copy of the weight (:func:`grn_linear`), so the scaled tensor is never written (on small maps, where
  per-image products are slow, the scale is applied in place instead: :data:`PER_IMAGE_WEIGHT_MIN_POSITIONS`);
- the channels-first LayerNorm of the stem and the downsampling layers as PyTorch's fused ``layer_norm`` over the
  channels of the channels-last tensor (one pass where the module's own formula takes eight).

The GRN and the block take these paths only without autograd (the ERF's input-gradient versions in
:mod:`erftools.erf._frozen` build on the same helpers); all three only in float32/float64 outside autocast (a low
precision's rounding is the modules' own ops'), and the block only where no hook waits on a submodule it would skip.
Measured on UniRepLKNet-S, 32 cue-conflict images at 224 px on 2 cores: see ``reports/benchmarks/shape_bias.md``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["speed_up_unireplknet", "patch_forwards"]

#: rows of an NHWC tensor per step of :func:`spatial_sum`: about this many bytes, so that the product's temporary
#: stays in cache and the allocator reuses it. One GRN's two reductions at UniRepLKNet-S's first stage (256x256x384,
#: 1024 px input) took 143 + 166 CPU ms as whole-tensor ``(a * b).sum`` and 51 + 63 ms in steps of ~3 MB (2 cores).
SUM_STEP_BYTES = 2 * 2**20


def spatial_sum(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_p a b`` (``a * a`` without ``b``) over the spatial axes 1 and 2 of NHWC tensors, keepdim: (B, 1, 1, C),
    in steps of a few rows (:data:`SUM_STEP_BYTES`) instead of one product the size of the tensor. (The steps are
    for a CPU's cache; on another device each would be a kernel launch, so it takes one.)"""
    rows = (max(1, SUM_STEP_BYTES // max(1, a[:, :1].numel() * a.element_size()))  # a row of every image
            if a.device.type == "cpu" else a.shape[1])
    total = None
    for i in range(0, a.shape[1], rows):
        part = a[:, i:i + rows]
        part = (part.square() if b is None else part * b[:, i:i + rows]).sum((1, 2), keepdim=True)
        total = part if total is None else total.add_(part)
    return total


def grn_scale(x: torch.Tensor, gamma: torch.Tensor):
    """The GRN's per-image channel norms ``n`` (B, 1, 1, C), mean ``m`` (B, 1, 1, 1) and scale
    ``s = gamma n / m + 1``."""
    norm = spatial_sum(x).sqrt()
    mean = norm.mean(-1, keepdim=True) + 1e-6
    return norm, mean, gamma * (norm / mean) + 1


def grn_linear(x: torch.Tensor, gamma: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``linear(GRN(x))`` for a GRN without ``beta``: ``x (W diag(s))^T + b`` with each image's scale ``s``.
    Returns the output and ``(norm, mean, scale, per-image weight)`` for a backward pass."""
    norm, mean, scale = grn_scale(x, gamma)
    b, c = x.shape[0], x.shape[-1]
    w = weight * scale.view(b, 1, c)  # (B, C_out, C): one weight per image
    flat = x.reshape(b, -1, c)
    out = (torch.bmm(flat, w.transpose(1, 2)) if bias is None
           else torch.baddbmm(bias.view(1, 1, -1), flat, w.transpose(1, 2)))
    return out.view(*x.shape[:-1], weight.shape[0]), (norm, mean, scale, w)


def full_precision(x: torch.Tensor) -> bool:
    """float32/float64 outside autocast: where the closed forms keep the rounding the modules' own ops define."""
    return x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)


def hooked(*modules: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def fusable_block(block: nn.Module, x: torch.Tensor) -> bool:
    """A deploy-structure block (GELU + GRN without beta, then a plain linear) whose GRN and second linear can run as
    :func:`grn_linear` on ``x``: full precision, the GRN's dtype, no hook on a submodule that would be skipped."""
    from .unireplknet import GRNwithNHWC, NHWCtoNCHW

    act, pw2 = block.act, block.pwconv2
    return (not block.with_cp and block.gamma is None and full_precision(x)
            and len(act) == 2 and isinstance(act[1], GRNwithNHWC) and not hasattr(act[1], "beta")
            and len(pw2) == 2 and type(pw2[0]) is nn.Linear and isinstance(pw2[1], NHWCtoNCHW)
            and act[1].gamma.dtype == x.dtype and not hooked(act, act[1], pw2, pw2[0], pw2[1]))


def fused_block_forward(block: nn.Module, x: torch.Tensor, grn_then_linear) -> torch.Tensor:
    """``x + drop_path(NCHW(grn_then_linear(GELU(Linear1(SE(dwconv(x)))))))``, the block's own order, with
    ``grn_then_linear(y, gamma, weight, bias)`` in place of the GRN and the second linear."""
    y = block.act[0](block.pwconv1(block.se(block.norm(block.dwconv(x)))))
    linear = block.pwconv2[0]
    y = grn_then_linear(y, block.act[1].gamma, linear.weight, linear.bias).permute(0, 3, 1, 2)
    return x + block.drop_path(y)


#: positions per image from which the GRN goes into each image's weight (one matrix product per image); below it
#: the GRN scales its input in place and one product serves the batch. 32 images at 224 px, 2 cores (CPU ms, the
#: GRN and the second linear): 56x56x384 141 per-image vs 161 in place; 28x28x768 114 vs 127; 14x14x1536 185 vs 100;
#: 7x7x3072 431 vs 102 (the per-image products have too few rows there).
PER_IMAGE_WEIGHT_MIN_POSITIONS = 512


def _grn_then_linear_inference(y, gamma, weight, bias):
    """:func:`grn_linear` where each image has enough positions, else the scale applied to ``y`` in place (the
    block's own temporary, no hook holds it) and one product."""
    if y.shape[1] * y.shape[2] >= PER_IMAGE_WEIGHT_MIN_POSITIONS:
        return grn_linear(y, gamma, weight, bias)[0]
    return F.linear(y.mul_(grn_scale(y, gamma)[2]), weight, bias)


def _block(block: nn.Module, original, x):
    if torch.is_grad_enabled() or not fusable_block(block, x) or hooked(block.act[0]):
        return original(x)
    return fused_block_forward(block, x, _grn_then_linear_inference)


def _grn(module: nn.Module, original, x):
    if torch.is_grad_enabled() or not full_precision(x) or module.gamma.dtype != x.dtype:
        return original(x)  # autograd keeps the module's own ops (the ERF's have their own backward)
    scale = grn_scale(x, module.gamma)[2]
    return x * scale if not hasattr(module, "beta") else torch.addcmul(module.beta, x, scale)


def _layer_norm(module: nn.Module, original, x):
    if (module.data_format != "channels_first" or x.dim() != 4 or not full_precision(x)
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return original(x)  # another layout, or a low precision whose rounding the module's own ops define
    return F.layer_norm(x.permute(0, 2, 3, 1), module.normalized_shape, module.weight, module.bias,
                        module.eps).permute(0, 3, 1, 2)


def patch_forwards(model: nn.Module, pick, marker: str) -> int:
    """Give each module ``m`` of ``model`` for which ``pick(m)`` returns a forward ``f(module, original, x)`` that
    forward, in place, as a partial bound to ``m`` (not a closure: a copy of the model rebinds it to the copy's
    modules), once: ``marker`` marks it. Returns how many modules have one. Shared with the ERF's
    :func:`erftools.erf._frozen.freeze_convolutions`."""
    n = 0
    for m in model.modules():
        patch = pick(m)
        if patch is None:
            continue
        if not getattr(m, marker, False):
            m.forward = functools.partial(patch, m, m.forward)
            setattr(m, marker, True)
        n += 1
    return n


def speed_up_unireplknet(model: nn.Module) -> int:
    """Give the UniRepLKNet blocks, GRNs and LayerNorms in ``model`` the fast forwards above, in place (each falls
    back to the module's own when its conditions do not hold). Returns how many modules have one. Idempotent."""
    from . import unireplknet as u

    def pick(m):
        return (_block if isinstance(m, u.UniRepLKNetBlock) else _grn if isinstance(m, u.GRNwithNHWC)
                else _layer_norm if isinstance(m, u.LayerNorm) else None)

    return patch_forwards(model, pick, "_erftools_fast_forward")

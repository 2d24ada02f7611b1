"""Triton backend: autograd wrapper and launchers around :mod:`erftools.ops._triton_kernels`.

The kernel module is imported on first use, so importing erftools never imports Triton, and ``TRITON_INTERPRET=1``
(the CPU interpreter used by the tests) can be set any time before the first call.

Paths (``path=``):
  ``direct``    exact fp32 accumulation on CUDA cores (default for fp32);
  ``toeplitz``  Toeplitz-matrix ``tl.dot`` on tensor cores (default for fp16/bf16; for fp32 it runs the dot with
                ``input_precision="ieee"``, exact but slower, useful for testing);
The weight gradient always accumulates in fp32 (``_dw_wgrad``) and is summed over row splits in a fixed order.
"""
from __future__ import annotations

import importlib
import os

import torch

__all__ = ["triton_dwconv2d", "triton_importable", "interpreting"]

_kernels = None
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def triton_importable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _k():
    global _kernels
    if _kernels is None:
        from . import _triton_kernels as mod
        _kernels = mod
    return _kernels


def supports_dtype(dtype: torch.dtype) -> bool:
    return dtype in _SUPPORTED


def _grid3(nc, h, w, bh_key, bw_key):
    import triton
    return lambda meta: (nc, triton.cdiv(h, meta[bh_key]), triton.cdiv(w, meta[bw_key]))


def _conv(x: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor | None, path: str) -> torch.Tensor:
    """Launch the forward-type kernel on contiguous NCHW ``x`` with ``w2`` (C, K*K) contiguous."""
    k = _k()
    n, c, h, w_ = x.shape
    ksz = int(round(w2.shape[1] ** 0.5))
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    b = bias if bias is not None else w2  # dummy pointer when HAS_BIAS is False
    if path == "direct":
        if k.INTERPRET:
            import triton
            bh, bw = 8, 16
            k._dw_direct[(n * c, triton.cdiv(h, bh), triton.cdiv(w_, bw))](
                x, w2, b, y, c, h, w_, K=ksz, HAS_BIAS=bias is not None, BLOCK_H=bh, BLOCK_W=bw)
        else:
            k._dw_direct[_grid3(n * c, h, w_, "BLOCK_H", "BLOCK_W")](
                x, w2, b, y, c, h, w_, K=ksz, HAS_BIAS=bias is not None)
    elif path == "toeplitz":
        ieee = x.dtype == torch.float32
        if k.INTERPRET:
            import triton
            bm, bn, bt = 16, 16, 16
            k._dw_toeplitz[(n * c, triton.cdiv(h, bm), triton.cdiv(w_, bn))](
                x, w2, b, y, c, h, w_, K=ksz, HAS_BIAS=bias is not None, IEEE=ieee,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_T=bt)
        else:
            k._dw_toeplitz[_grid3(n * c, h, w_, "BLOCK_M", "BLOCK_N")](
                x, w2, b, y, c, h, w_, K=ksz, HAS_BIAS=bias is not None, IEEE=ieee)
    else:
        raise ValueError(f"unknown triton path {path!r}; choose 'direct' or 'toeplitz'")
    return y


def _wgrad(x: torch.Tensor, gy: torch.Tensor, ksz: int) -> torch.Tensor:
    """fp32 weight gradient (C, 1, K, K) of a 'same' depthwise conv; ``x`` and ``gy`` contiguous NCHW."""
    k = _k()
    n, c, h, w_ = x.shape
    total = n * h
    # enough programs to fill a GPU even for few channels; never more splits than rows
    target = 1024 if not k.INTERPRET else 1
    splits = max(1, min(total, -(-target // (c * ksz))))
    rows = -(-total // splits)
    splits = -(-total // rows)
    part = torch.empty((splits, c, ksz, ksz), device=x.device, dtype=torch.float32)
    kw_pad = 1 << max(0, (ksz - 1).bit_length())
    if k.INTERPRET:
        k._dw_wgrad[(c, ksz, splits)](x, gy, part, c, h, w_, total, rows, K=ksz, KW_PAD=kw_pad, BLOCK_W=16)
    else:
        k._dw_wgrad[(c, ksz, splits)](x, gy, part, c, h, w_, total, rows, K=ksz, KW_PAD=kw_pad)
    return part.sum(dim=0).unsqueeze(1)


def _default_path(dtype: torch.dtype) -> str:
    return "direct" if dtype == torch.float32 else "toeplitz"


class _TritonDWConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, path):
        c = x.shape[1]
        ksz = weight.shape[-1]
        path = path or _default_path(x.dtype)
        fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
               else torch.contiguous_format)
        xc = x.detach().contiguous()
        w2 = weight.detach().to(x.dtype).reshape(c, ksz * ksz).contiguous()
        b = bias.detach().contiguous() if bias is not None else None
        y = _conv(xc, w2, b, path)
        ctx.save_for_backward(xc if ctx.needs_input_grad[1] else None, weight.detach())
        ctx.path, ctx.fmt, ctx.has_bias = path, fmt, bias is not None
        return y.contiguous(memory_format=fmt) if fmt is torch.channels_last else y

    @staticmethod
    def backward(ctx, gy):
        xc, weight = ctx.saved_tensors
        c, ksz = weight.shape[0], weight.shape[-1]
        gx = gw = gb = None
        gyc = gy.contiguous()
        if ctx.needs_input_grad[0]:
            wr = weight.flip(-1, -2).to(gy.dtype).reshape(c, ksz * ksz).contiguous()  # 180-degree rotation
            gx = _conv(gyc, wr, None, ctx.path)
            if ctx.fmt is torch.channels_last:
                gx = gx.contiguous(memory_format=torch.channels_last)
        if ctx.needs_input_grad[1]:
            gw = _wgrad(xc, gyc.to(xc.dtype), ksz).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(dim=(0, 2, 3), dtype=torch.float32).to(gy.dtype)
        return gx, gw, gb, None


def triton_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                    path: str | None = None) -> torch.Tensor:
    """Depthwise 'same' convolution (odd square kernel, stride 1) through Triton kernels (CUDA, or CPU tensors under
    ``TRITON_INTERPRET=1``). ``path``: ``None`` (by dtype), ``"direct"`` or ``"toeplitz"``."""
    if x.dtype not in _SUPPORTED:
        raise TypeError(f"triton dwconv2d supports float32/float16/bfloat16, got {x.dtype}")
    return _TritonDWConv.apply(x, weight, bias, path)

"""FFT backend for the depthwise 'same' convolution: forward, input gradient and weight gradient via ``torch.fft``.

Formulation (odd K = 2P+1, one (n, c) plane of size H x W, cross-correlation as ``F.conv2d`` computes it)::

    y[i, j] = sum_{a, b} w[a, b] * x[i + a - P, j + b - P]

is a *circular* convolution ``y = x (*) g`` over an L_h x L_w torus, with the kernel placed so that its centre tap sits
at index 0: ``g[(P - a) mod L_h, (P - b) mod L_w] = w[a, b]``. The zero-padded input wraps into the output only if
``L < H + P``, so ``L_h >= H + P`` (not the ``H + K - 1`` of a full linear convolution) is enough, and the output is
simply ``irfft2(X * G)[:H, :W]`` -- no shift, no crop offset. L is rounded up to a 5-smooth size, which pocketfft and
cuFFT transform fastest.

Gradients use the same torus and the same L:

* input gradient: a correlation with g, i.e. ``irfft2(GY * conj(G))[:H, :W]`` (the 180-degree-rotated kernel);
* weight gradient: ``dL/dg = irfft2(sum_n GY_n * conj(X_n))`` read at the K x K tap positions;
* bias gradient: ``gy.sum((0, 2, 3))``.

The weight's spectrum ``G`` is computed once per call and shared by forward and backward; when the weight does not
require a gradient (inference, ERF maps) it is also cached across calls, keyed by the weight object and verified
against a stored copy of its values (so in-place edits such as BN folding through ``.data`` can never hit a stale
entry). The cache is bounded (``ERFTOOLS_FFT_CACHE_MB``, default 1024; 0 disables it).

Everything is computed in float32 (float64 for float64 inputs); fp16/bf16 inputs are upcast and the results cast back.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import torch

__all__ = ["fft_dwconv2d", "fft_size", "clear_cache", "cache_info"]


def _next_smooth(n: int) -> int:
    """The smallest 5-smooth integer (2^a 3^b 5^c) >= n."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_size(n: int, k: int) -> int:
    """FFT length for a 'same' convolution of a length-``n`` signal with an odd length-``k`` kernel."""
    return _next_smooth(n + k // 2)


# ------------------------------------------------------------------------------------------------ weight spectra
class _SpectrumCache:
    def __init__(self):
        self._lock = threading.RLock()
        self._entries: "OrderedDict[tuple, tuple]" = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def limit_bytes() -> int:
        try:
            return int(float(os.environ.get("ERFTOOLS_FFT_CACHE_MB", "1024")) * 2**20)
        except ValueError:
            return 1024 * 2**20

    def get(self, weight: torch.Tensor, shape: tuple, cdtype: torch.dtype):
        key = (id(weight), shape, cdtype, weight.device)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None, key
            ref, copy, spec = entry
            if ref() is not weight or copy.shape != weight.shape or not torch.equal(copy, weight.detach()):
                self._drop(key)
                self.misses += 1
                return None, key
            self._entries.move_to_end(key)
            self.hits += 1
            return spec, key

    def put(self, key, weight: torch.Tensor, spec: torch.Tensor) -> None:
        limit = self.limit_bytes()
        nbytes = spec.numel() * spec.element_size() + weight.numel() * weight.element_size()
        if nbytes > limit:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            ref = weakref.ref(weight, lambda _r, key=key: self._discard(key, _r))
            self._entries[key] = (ref, weight.detach().clone(), spec)
            self._bytes += nbytes
            while self._bytes > limit and self._entries:
                self._drop(next(iter(self._entries)))

    def _discard(self, key, ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                self._drop(key)

    def _drop(self, key) -> None:
        _, copy, spec = self._entries.pop(key)
        self._bytes -= spec.numel() * spec.element_size() + copy.numel() * copy.element_size()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def info(self) -> dict:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "hits": self.hits, "misses": self.misses,
                    "limit_bytes": self.limit_bytes()}


_CACHE = _SpectrumCache()


def clear_cache() -> None:
    """Forget every cached weight spectrum."""
    _CACHE.clear()


def cache_info() -> dict:
    """Entries, bytes, hits and misses of the weight-spectrum cache."""
    return _CACHE.info()


def _tap_index(k: int, length: int, device) -> torch.Tensor:
    """Torus index of kernel tap a (0..k-1) is (P - a) mod L; returned in tap order."""
    p = k // 2
    return (p - torch.arange(k, device=device)) % length


def _weight_spectrum(w: torch.Tensor, lh: int, lw: int) -> torch.Tensor:
    """rfft2 of the kernel placed on the L_h x L_w torus (centre tap at the origin). ``w``: (C, K, K) real."""
    c, k, _ = w.shape
    g = w.new_zeros((c, lh, lw))
    ih = _tap_index(k, lh, w.device)
    iw = _tap_index(k, lw, w.device)
    g[:, ih[:, None], iw[None, :]] = w
    return torch.fft.rfft2(g)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _spectrum_for(weight: torch.Tensor, lh: int, lw: int, cdt: torch.dtype, use_cache: bool) -> torch.Tensor:
    w = weight.detach()
    if not use_cache:
        return _weight_spectrum(w[:, 0].to(cdt), lh, lw)
    spec, key = _CACHE.get(weight, (lh, lw), cdt)
    if spec is None:
        spec = _weight_spectrum(w[:, 0].to(cdt), lh, lw)
        _CACHE.put(key, weight, spec)
    return spec


def _out_format(x: torch.Tensor):
    return torch.channels_last if (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                                   and not x.is_contiguous()) else torch.contiguous_format


class _FFTDWConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, use_cache):
        n, c, h, w_ = x.shape
        k = weight.shape[-1]
        lh, lw = fft_size(h, k), fft_size(w_, k)
        cdt = _compute_dtype(x.dtype)
        spec = _spectrum_for(weight, lh, lw, cdt, use_cache and not ctx.needs_input_grad[1])
        xs = torch.fft.rfft2(x.detach().to(cdt), s=(lh, lw))
        xs.mul_(spec)
        y = torch.fft.irfft2(xs, s=(lh, lw))[..., :h, :w_]
        del xs
        if bias is not None:
            y = y + bias.detach().to(cdt).view(1, c, 1, 1)
        y = y.to(dtype=x.dtype, memory_format=_out_format(x))
        ctx.geom = (h, w_, k, lh, lw, cdt)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, spec)
        ctx.x_dtype = x.dtype
        ctx.x_format = _out_format(x)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, spec = ctx.saved_tensors
        h, w_, k, lh, lw, cdt = ctx.geom
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_b and ctx.has_bias:
            gb = gy.sum(dim=(0, 2, 3)).to(gy.dtype)
        if need_x or need_w:
            gys = torch.fft.rfft2(gy.to(cdt), s=(lh, lw))
            if need_w:
                xs = torch.fft.rfft2(x.to(cdt), s=(lh, lw))
                # sum over the batch of GY * conj(X): (C, lh, lw//2+1)
                cross = torch.einsum("nchw,nchw->chw", gys, xs.conj())
                del xs
                gg = torch.fft.irfft2(cross, s=(lh, lw))
                ih = _tap_index(k, lh, gg.device)
                iw = _tap_index(k, lw, gg.device)
                gw = gg[:, ih[:, None], iw[None, :]].unsqueeze(1).to(x.dtype)
            if need_x:
                gys.mul_(spec.conj())
                gx = torch.fft.irfft2(gys, s=(lh, lw))[..., :h, :w_]
                gx = gx.to(dtype=ctx.x_dtype, memory_format=ctx.x_format)
        return gx, gw, gb, None


def fft_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                 cache: bool = True) -> torch.Tensor:
    """Depthwise 'same' convolution (odd square kernel, stride 1) through ``torch.fft``; see the module docstring."""
    return _FFTDWConv.apply(x, weight, bias, cache)

"""Triton kernels for the depthwise 'same' convolution (imported lazily: importing this module imports Triton).

Three kernels, all on contiguous NCHW tensors, one (image, channel) plane per program row of the grid:

``_dw_direct``     exact fp32 accumulation on CUDA cores. Each program owns a BLOCK_H x BLOCK_W output tile and
                   accumulates ``w[kh, kw] * x[tile shifted by (kh - P, kw - P)]``. The kernel-row and kernel-column
                   loops are clipped to the taps that touch the image for this tile, so border tiles skip padding work
                   and interior tiles run unmasked-equivalent loads (masks are all-true there). Used for fp32 forward
                   and input gradient (with the kernel rotated by 180 degrees).
``_dw_toeplitz``   tensor cores for fp16/bf16 (fp32 with an explicit dot precision): for each kernel row kh the output
                   tile Y[rows, cols] += X[rows + kh - P, span] @ T_kh[span, cols], where T_kh[t, n] = w[kh, t - n]
                   is the Toeplitz (banded) matrix of kernel row kh, built on the fly from the K weights. The GEMM's M
                   dimension is output rows of one plane, not the batch, so batch 1 launches as many programs as
                   batch 64 does per image. The span (BLOCK_N + K - 1 input columns) is walked in BLOCK_T chunks.
``_dw_wgrad``      weight gradient: program (c, kh, split) reduces ``gy[n, c, i, :] * x[n, c, i + kh - P, : + kw - P]``
                   over its share of the (n, i) rows into a KW_PAD vector in fp32 and writes a partial buffer
                   ``part[split, c, kh, :]``; the caller sums the splits in a fixed order (deterministic, no atomics).

Block sizes are autotuned on GPUs (keyed by the plane size and K); under ``TRITON_INTERPRET=1`` a single small
configuration is used so the CPU interpreter stays fast.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def _autotune(configs, key):
    if INTERPRET:
        return lambda fn: fn
    return triton.autotune(configs=configs, key=key)


# ------------------------------------------------------------------------------------------------ direct (fp32)
_DIRECT_CONFIGS = [
    triton.Config({"BLOCK_H": bh, "BLOCK_W": bw}, num_warps=nw, num_stages=ns)
    for (bh, bw, nw) in [(8, 64, 4), (16, 64, 4), (8, 128, 4), (16, 128, 8), (32, 64, 8), (4, 128, 4), (32, 32, 4)]
    for ns in (1, 2)
]


@_autotune(_DIRECT_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _dw_direct(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W,
               K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    P: tl.constexpr = K // 2
    pid_nc = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_w = tl.program_id(2)
    c = pid_nc % C
    base = pid_nc.to(tl.int64) * H * W
    r0 = pid_h * BLOCK_H
    c0 = pid_w * BLOCK_W
    rows = r0 + tl.arange(0, BLOCK_H)
    cols = c0 + tl.arange(0, BLOCK_W)
    # taps that reach inside the image for at least one output of this tile
    kh_lo = tl.maximum(P - r0 - BLOCK_H + 1, 0)
    kh_hi = tl.minimum(H + P - r0, K)
    kw_lo = tl.maximum(P - c0 - BLOCK_W + 1, 0)
    kw_hi = tl.minimum(W + P - c0, K)
    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    w_row = w_ptr + c * (K * K)
    for kh in range(kh_lo, kh_hi):
        ir = rows + (kh - P)
        rmask = (ir >= 0) & (ir < H)
        x_row = x_ptr + base + ir[:, None] * W
        for kw in range(kw_lo, kw_hi):
            ic = cols + (kw - P)
            m = rmask[:, None] & ((ic >= 0) & (ic < W))[None, :]
            xv = tl.load(x_row + ic[None, :], mask=m, other=0.0).to(tl.float32)
            wv = tl.load(w_row + kh * K + kw).to(tl.float32)
            acc += xv * wv
    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(tl.float32)
    om = (rows < H)[:, None] & (cols < W)[None, :]
    tl.store(y_ptr + base + rows[:, None] * W + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=om)


# ------------------------------------------------------------------------------------------------ Toeplitz (tensor cores)
_TOEPLITZ_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_T": bt}, num_warps=nw, num_stages=ns)
    for (bm, bn, bt, nw) in [(64, 64, 32, 4), (128, 64, 32, 8), (64, 128, 32, 8), (32, 64, 32, 4), (64, 32, 16, 4),
                              (128, 128, 32, 8), (32, 32, 16, 4)]
    for ns in (2, 3)
]


@_autotune(_TOEPLITZ_CONFIGS, key=["H", "W", "K"])
@triton.jit
def _dw_toeplitz(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W,
                 K: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    P: tl.constexpr = K // 2
    SPAN: tl.constexpr = BLOCK_N + K - 1
    pid_nc = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_w = tl.program_id(2)
    c = pid_nc % C
    base = pid_nc.to(tl.int64) * H * W
    r0 = pid_h * BLOCK_M
    c0 = pid_w * BLOCK_N
    rows = r0 + tl.arange(0, BLOCK_M)
    n = tl.arange(0, BLOCK_N)
    tt = tl.arange(0, BLOCK_T)
    kh_lo = tl.maximum(P - r0 - BLOCK_M + 1, 0)
    kh_hi = tl.minimum(H + P - r0, K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    w_row = w_ptr + c * (K * K)
    for kh in range(kh_lo, kh_hi):
        ir = rows + (kh - P)
        rmask = (ir >= 0) & (ir < H)
        x_row = x_ptr + base + ir[:, None] * W
        for t0 in range(0, SPAN, BLOCK_T):
            t = t0 + tt
            ic = c0 - P + t
            a = tl.load(x_row + ic[None, :], mask=rmask[:, None] & ((ic >= 0) & (ic < W))[None, :], other=0.0)
            d = t[:, None] - n[None, :]  # kernel column of T[t, n]
            bmat = tl.load(w_row + kh * K + d, mask=(d >= 0) & (d < K), other=0.0)
            if IEEE:
                acc = tl.dot(a, bmat, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, bmat, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(tl.float32)
    cols = c0 + n
    om = (rows < H)[:, None] & (cols < W)[None, :]
    tl.store(y_ptr + base + rows[:, None] * W + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=om)


# ------------------------------------------------------------------------------------------------ weight gradient
_WGRAD_CONFIGS = [
    triton.Config({"BLOCK_W": bw}, num_warps=nw, num_stages=ns)
    for (bw, nw) in [(32, 4), (64, 4), (128, 4), (128, 8), (256, 8)]
    for ns in (1, 2)
]


@_autotune(_WGRAD_CONFIGS, key=["H", "W", "K", "ROWS"])
@triton.jit
def _dw_wgrad(x_ptr, g_ptr, part_ptr, C, H, W, TOTAL_ROWS, ROWS,
              K: tl.constexpr, KW_PAD: tl.constexpr, BLOCK_W: tl.constexpr):
    P: tl.constexpr = K // 2
    c = tl.program_id(0)
    kh = tl.program_id(1)
    s = tl.program_id(2)
    kw = tl.arange(0, KW_PAD)
    jj = tl.arange(0, BLOCK_W)
    kw_ok = kw < K
    acc = tl.zeros([KW_PAD, BLOCK_W], dtype=tl.float32)
    g_lo = s * ROWS
    g_hi = tl.minimum(g_lo + ROWS, TOTAL_ROWS)
    for g in range(g_lo, g_hi):
        img = g // H
        i = g - img * H
        ir = i + kh - P
        if (ir >= 0) & (ir < H):
            plane = (img.to(tl.int64) * C + c) * H * W
            g_row = g_ptr + plane + i * W
            x_row = x_ptr + plane + ir * W
            for j0 in range(0, W, BLOCK_W):
                j = j0 + jj
                gv = tl.load(g_row + j, mask=j < W, other=0.0).to(tl.float32)
                ic = j[None, :] + kw[:, None] - P
                xv = tl.load(x_row + ic, mask=kw_ok[:, None] & (ic >= 0) & (ic < W), other=0.0).to(tl.float32)
                acc += xv * gv[None, :]
    out = tl.sum(acc, axis=1)
    tl.store(part_ptr + ((s * C + c) * K + kh) * K + kw, out, mask=kw_ok)

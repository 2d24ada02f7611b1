"""Backend selection for dwconv2d (placeholder: native only; the fast backends plug in here)."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

BACKENDS = ("native",)


def available_backends(device: torch.device | str | None = None) -> list[str]:
    return ["native"]


def resolve_backend(backend: str, x: torch.Tensor, kernel_size: int) -> str:
    backend = (backend or "auto").lower()
    if backend == "auto":
        backend = os.environ.get("ERFTOOLS_CONV_BACKEND", "auto").lower()
    if backend == "auto":
        return "native"
    if backend not in BACKENDS:
        raise ValueError(f"unknown convolution backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return backend


def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, backend: str = "auto"):
    k = weight.shape[-1]
    resolve_backend(backend, x, k)
    return F.conv2d(x, weight, bias, stride=1, padding=k // 2, groups=x.shape[1])

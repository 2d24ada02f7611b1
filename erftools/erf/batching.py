"""Batching of an ERF run: the batch size (user's, automatic on CUDA, default), the batches of any kind of image
input, and ONE out-of-memory rule (:func:`in_chunks`: a batch that does not fit is split in halves, and the later
batches keep the smaller size that worked).

Batching changes nothing in the result: in eval mode the images of a batch do not interact, so the gradient of the
batch sum is each image's own gradient.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .._io import ErftoolsError
from .precision import autocast, model_dtype

log = logging.getLogger(__name__)

__all__ = ["default_batch_size", "auto_batch_size", "batch_size_for_memory", "activation_bytes_per_image",
           "choose_batch_size", "batches", "count_images", "in_chunks", "MAX_AUTO_BATCH", "MEMORY_SHARE"]


def default_batch_size(device: torch.device) -> int:
    """1 on CPU (larger batches do not run faster there and cost memory); 4 on CUDA when the image size is not known
    in advance (otherwise :func:`auto_batch_size`); halved on out-of-memory."""
    return 4 if device.type == "cuda" else 1


#: at most this many images per batch (beyond it a GPU is saturated and a lost batch costs more)
MAX_AUTO_BATCH = 32


#: the share of the free device memory the batch may use (the allocator's fragmentation and cuDNN workspaces)
MEMORY_SHARE = 0.8


def activation_bytes_per_image(forward: Callable[[torch.Tensor], object], model: nn.Module,
                               image_hw: tuple[int, int], device: torch.device, *, dtype: torch.dtype = torch.float32,
                               precision: str = "fp32", channels_last: bool = False) -> int:
    """An upper estimate of the memory one image needs in an ERF pass, from the activation sizes of ``model`` at
    ``image_hw``: one no-grad forward pass of a single image (``forward(x)``) in which every leaf module's output is
    measured. Every output counts as kept for the backward pass (the real graph keeps fewer: ReLU outputs, GELU
    inputs), plus two of the largest for the gradients alive at once, plus the image, its gradient and the map."""
    sizes: list[int] = []

    def hook(_m, _inp, out):
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    x = torch.zeros(1, 3, int(image_hw[0]), int(image_hw[1]), device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad(), autocast(precision, device):
            forward(x)
    finally:
        for h in handles:
            h.remove()
    image = x.numel() * x.element_size()
    return int(sum(sizes) + 2 * max(sizes, default=0) + 3 * image)


def batch_size_for_memory(bytes_per_image: int, free_bytes: int, *, share: float = MEMORY_SHARE,
                          limit: int = MAX_AUTO_BATCH) -> int:
    """How many images of ``bytes_per_image`` fit in ``share`` of ``free_bytes`` (1 .. ``limit``)."""
    if bytes_per_image <= 0:
        return limit
    return int(max(1, min(limit, (share * free_bytes) // bytes_per_image)))


def auto_batch_size(forward: Callable[[torch.Tensor], object], model: nn.Module, image_hw: tuple[int, int],
                    device: torch.device, *, precision: str = "fp32", channels_last: bool = False) -> dict:
    """The batch size for a CUDA run: :func:`activation_bytes_per_image` against the device's free memory
    (``torch.cuda.mem_get_info``). Returns ``{"batch_size", "bytes_per_image", "free_bytes"}``; out-of-memory
    halving still catches an underestimate."""
    per_image = activation_bytes_per_image(forward, model, image_hw, device, dtype=model_dtype(model),
                                           precision=precision, channels_last=channels_last)
    free, _total = torch.cuda.mem_get_info(device)
    return {"batch_size": batch_size_for_memory(per_image, int(free)), "bytes_per_image": per_image,
            "free_bytes": int(free)}


def _image_hw(images) -> tuple[int, int] | None:
    """The (H, W) of the images when known without loading them (a tensor; an ImageList of square crops)."""
    from ..images import ImageList

    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim in (3, 4):
        return int(images.shape[-2]), int(images.shape[-1])
    if isinstance(images, ImageList):
        return int(images.size), int(images.size)
    return None


def choose_batch_size(batch_size, dev: torch.device, images, forward, model, precision: str,
                       channels_last: bool) -> tuple[int, dict | None]:
    """The user's batch size; else on CUDA :func:`auto_batch_size` when the image size is known; else the default."""
    if batch_size is not None:
        bs = int(batch_size)
        if bs < 1:
            raise ErftoolsError(f"batch_size must be at least 1 (got {batch_size})")
        return bs, None
    hw = _image_hw(images) if dev.type == "cuda" else None
    if hw is None:
        return default_batch_size(dev), None
    est = auto_batch_size(forward, model, hw, dev, precision=precision, channels_last=channels_last)
    log.info("automatic batch size %d (%.2f GiB per image, %.2f GiB free on %s)", est["batch_size"],
             est["bytes_per_image"] / 2**30, est["free_bytes"] / 2**30, dev)
    return est["batch_size"], est


def _tensor_batches(x: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[tuple[list, torch.Tensor, list]]:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ErftoolsError(f"images must be a (N, 3, H, W) tensor; got shape {tuple(x.shape)}")
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i:i + batch_size]
        yield [f"#{start + i + j}" for j in range(chunk.shape[0])], chunk, []


def batches(images, batch_size: int) -> Iterator[tuple[list, torch.Tensor | None, list]]:
    """Yield (names, batch or None, skipped [(name, reason)]) from any supported kind of ``images``."""
    from ..images import ImageError, ImageList

    if isinstance(images, torch.Tensor):
        yield from _tensor_batches(images, batch_size)
        return
    if isinstance(images, np.ndarray):
        yield from _tensor_batches(torch.from_numpy(images), batch_size)
        return
    if isinstance(images, ImageList):
        names, tensors, skipped = [], [], []
        for rel in images.files:
            try:
                tensors.append(images.load(rel))
                names.append(rel)
            except ImageError as exc:
                log.warning("skipped %s: %s", rel, exc)
                skipped.append((rel, str(exc)))
            if len(tensors) == batch_size:
                yield names, torch.stack(tensors), skipped
                names, tensors, skipped = [], [], []
        if tensors or skipped:
            yield names, (torch.stack(tensors) if tensors else None), skipped
        return
    if isinstance(images, (str, os.PathLike)):
        raise ErftoolsError("pass a folder of images as erftools.images.select_images(folder, ...)")
    start = 0
    for item in images:  # an iterable of batches (e.g. a DataLoader yielding tensors or (tensor, label))
        if isinstance(item, (tuple, list)):
            item = item[0]
        item = torch.as_tensor(item)
        n = 1 if item.ndim == 3 else item.shape[0]
        yield from _tensor_batches(item, batch_size, start)
        start += n


def count_images(images) -> int | None:
    from ..images import ImageList

    if isinstance(images, (torch.Tensor, np.ndarray)):
        return 1 if images.ndim == 3 else int(images.shape[0])
    if isinstance(images, ImageList):
        return len(images)
    try:
        return len(images)  # type: ignore[arg-type]
    except TypeError:
        return None


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _oom_or_raise(exc: RuntimeError, batch: torch.Tensor) -> None:
    """Return when ``exc`` is an out-of-memory error that a smaller batch may avoid; raise otherwise (with advice
    when even one image does not fit)."""
    if not is_oom(exc):
        raise exc
    if batch.shape[0] == 1:
        advice = "use smaller images" + (" or device='cpu'" if batch.device.type == "cuda" else "")
        raise ErftoolsError(f"out of memory computing one image of {tuple(batch.shape[-2:])} px on "
                            f"{batch.device}; {advice}") from exc
    if batch.device.type == "cuda":
        torch.cuda.empty_cache()
    log.warning("out of memory on %s with batch size %d; retrying with %d", batch.device, batch.shape[0],
                math.ceil(batch.shape[0] / 2))


def in_chunks(compute: Callable[[torch.Tensor], dict], batch: torch.Tensor, bs: int) -> tuple[dict, int]:
    """``compute(chunk) -> {key: maps}`` over chunks of at most ``bs`` images of ``batch``, maps concatenated per key.
    A chunk that runs out of memory is split in halves (recursively, down to one image); returns the maps and the
    smallest chunk size that worked, which the later batches use from the start instead of failing again."""
    if batch.shape[0] <= bs:
        try:
            return compute(batch), bs
        except RuntimeError as exc:
            _oom_or_raise(exc, batch)
        bs = max(1, math.ceil(batch.shape[0] / 2))
    parts: dict = {}
    i = 0
    while i < batch.shape[0]:
        chunk = batch[i:i + bs]
        maps, bs = in_chunks(compute, chunk, bs)
        i += chunk.shape[0]
        for k, v in maps.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}, bs

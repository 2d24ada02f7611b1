"""Aggregated contribution maps: the paper's effective-receptive-field procedure (section 5.1), batched.

For every image ``x``: ``y = features(x)`` (the last feature map, NCHW), ``s = sum_c ReLU(y[:, c, h//2, w//2])``,
``g = ds/dx``, ``map = sum over the colour channels of ReLU(g)``. An image whose map is not finite (NaN) is skipped
and counted. The result is the mean of the per-image maps.

Batching changes nothing: in eval mode the images of a batch do not interact, so the gradient of the batch sum is
each image's own gradient; the ReLU, the channel sum and the NaN check are done per image before adding.

Before the first batch the model is prepared (``prepare=True``, in place, no copy): eval mode; parameters frozen
(only the input needs a gradient); for RepLKNet the structural re-parameterisation and the folding of every BN into
its convolution (``fuse_bn``), which compute the same function in eval mode with fewer layers; and on CPU the
channels-last memory layout, for which PyTorch's CPU depthwise convolution is an order of magnitude faster. What
was done is recorded in ``ErfResult.prepared``. ``prepare=False`` uses the model exactly as given (eval mode only).

:func:`compute_erfs` measures the ERF of several layers (module names) with one shared forward pass per batch and
one backward pass per layer; ``compute_erf(..., layer=NAME)`` does one (see :mod:`erftools.erf.layers`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._device import resolve_device  # noqa: F401  (re-exported: erftools.erf.resolve_device)
from .._io import ErftoolsError
from ._frozen import fold_batchnorm_pairs, freeze_convolutions
from .adapters import FeatureAdapter, _timm_class, feature_map, model_name, to_nchw
from .layers import LayerCapture, expand_layers, preparation_changes
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, radial_profile

log = logging.getLogger(__name__)

__all__ = ["ErfResult", "ErfAccumulator", "compute_erf", "compute_erfs", "accumulate_erf", "accumulate_erfs",
           "contribution_maps", "layer_maps", "prepare_model", "rewrite_model", "resolve_device",
           "default_batch_size", "auto_batch_size", "batch_size_for_memory", "activation_bytes_per_image",
           "PRECISIONS", "MEASURED_ERRORS", "check_precision", "precision_context", "default_channels_last"]


# ---------------------------------------------------------------------------------------------------------------
# device, batch size, model preparation
# ---------------------------------------------------------------------------------------------------------------
def default_batch_size(device: torch.device) -> int:
    """1 on CPU (larger batches do not run faster there and cost memory); 4 on CUDA when the image size is not known
    in advance (otherwise :func:`auto_batch_size`); halved on out-of-memory."""
    return 4 if device.type == "cuda" else 1


#: the ERF's arithmetic: ``fp32`` (the paper's, the default), ``tf32`` (CUDA tensor cores' 10-bit-mantissa inputs
#: for convolutions and matrix products), ``bf16`` (autocast of the forward pass to bfloat16). See docs/erf.md,
#: "Precision", for each one's measured error against float64.
PRECISIONS = ("fp32", "tf32", "bf16")

#: each precision's error against float64, measured on CPU by benchmarks/erf_precision.py (random weights; RepLKNet-31B
#: and ResNet-152 at 1024 px on 2 images, the tiny fixture; reports/benchmarks/erf_precision.md): the largest
#: max-relative error of the matrix, and whether a high-contribution square side moved (with an example). tf32 is
#: the CPU emulation (operands of every dense convolution / linear layer rounded to TF32), not a GPU measurement.
MEASURED_ERRORS = {
    "fp32": {"max_relative_error": 1.2e-3, "sides_changed": False, "example": None},
    "tf32": {"max_relative_error": 7.5e-2, "sides_changed": False, "example": None},
    "bf16": {"max_relative_error": 3.0e-1, "sides_changed": True,
             "example": "ResNet-152 at 1024 px: the 0.5 square grew from 7 to 9 px"},
}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; otherwise a clear error."""
    if precision not in PRECISIONS:
        raise ErftoolsError(f"unknown precision {precision!r}: use one of {', '.join(map(repr, PRECISIONS))} "
                            "('fp32' is the paper's and the default)")
    return precision


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 when it has none): the images are cast to it."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _resolve_precision(precision: str, dev: torch.device, dtype: torch.dtype) -> dict:
    """What will actually run: ``{"precision", "precision_requested", "precision_note"}``."""
    check_precision(precision)
    if dtype != torch.float32:
        if precision != "fp32":
            raise ErftoolsError(f"precision={precision!r} needs a float32 model; this one is {dtype} (call "
                                "model.float(), or keep precision='fp32' to compute in the model's own dtype)")
        name = {torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
        return {"precision": name, "precision_requested": precision,
                "precision_note": f"the model is {str(dtype).replace('torch.', '')}: the images are cast to it"}
    if precision == "tf32" and dev.type != "cuda":
        return {"precision": "fp32", "precision_requested": "tf32",
                "precision_note": f"TF32 is a CUDA tensor-core format; on {dev.type} the run is plain fp32"}
    note = None
    if precision == "bf16":
        note = ("forward pass under torch.autocast(bfloat16); input gradients in float32, maps summed in float64")
    elif precision == "fp32" and dev.type == "cuda":
        note = "TF32 disabled for the run (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False)"
    return {"precision": precision, "precision_requested": precision, "precision_note": note}


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """The global switches of ``precision`` for a run, restored afterwards: on CUDA, TF32 on for ``tf32`` and
    explicitly off for ``fp32`` and ``bf16`` (PyTorch's defaults differ between the matmul and the cuDNN flag)."""
    check_precision(precision)
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _autocast(precision: str, device: torch.device):
    """The autocast context of the forward pass (bf16 only; the backward pass runs outside it, as PyTorch asks)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _measured(precision: str) -> str:
    m, ref = MEASURED_ERRORS[precision], MEASURED_ERRORS["fp32"]
    moved = f"high-contribution squares moved ({m['example']})" if m["sides_changed"] else \
        "no high-contribution square moved"
    return (f"measured on CPU with random weights, its contribution matrix was up to {m['max_relative_error']:.1e} "
            f"(max-relative) away from float64, against {ref['max_relative_error']:.1e} for fp32, and {moved} "
            "(reports/benchmarks/erf_precision.md)")


def _check_allowed(precision: str, allow_low_precision: bool) -> None:
    """Refuse a precision whose squares moved in the measurements, unless ``allow_low_precision``."""
    if MEASURED_ERRORS[precision]["sides_changed"] and not allow_low_precision:
        raise ErftoolsError(f"precision={precision!r} changes the ERF's area ratios: {_measured(precision)}. "
                            "Use precision='fp32' (the default, the paper's), or pass allow_low_precision=True to "
                            "accept the error")


def _warn_precision(precision: str) -> None:
    """Log once per run what the measurements say about a precision that is not the paper's."""
    if precision in ("bf16", "tf32"):
        log.warning("precision=%r is not the paper's procedure (fp32): %s", precision, _measured(precision))


# ---------------------------------------------------------------------------------------------------------------
# automatic batch size (CUDA)
# ---------------------------------------------------------------------------------------------------------------
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
        with torch.no_grad(), _autocast(precision, device):
            forward(x)
    except _StopEstimate:
        pass
    finally:
        for h in handles:
            h.remove()
    image = x.numel() * x.element_size()
    return int(sum(sizes) + 2 * max(sizes, default=0) + 3 * image)


class _StopEstimate(Exception):
    pass


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
    per_image = activation_bytes_per_image(forward, model, image_hw, device, dtype=_model_dtype(model),
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


def _choose_batch_size(batch_size, dev: torch.device, images, forward, model, precision: str,
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


def default_channels_last(device: torch.device, precision: str = "fp32") -> bool:
    """The model-wide memory layout of an ERF run.

    CPU: channels-last for every precision (oneDNN's channels-last depthwise kernels are >10x faster than the NCHW
    loop, in bfloat16 too: 0.6 s against 13 s for a K=31, 128-channel, 256 px forward pass on this project's CPU).
    CUDA: channels-last for ``bf16``, whose cuDNN tensor-core kernels work in NHWC (an NCHW tensor is transposed on
    every call); NCHW for ``fp32``/``tf32``, where no GPU measurement says otherwise: the large depthwise
    convolutions are converted per call where the CUDA table of :mod:`erftools.ops` (written by
    ``benchmarks/gpu_check.py``) measured channels-last to be faster, and left alone where it has no entry.
    """
    check_precision(precision)
    if device.type == "cpu":
        return True
    return device.type == "cuda" and precision == "bf16"


def prepare_model(model: nn.Module, device: torch.device | str | None = None, *, fuse: bool = True,
                  channels_last: bool | None = None, conv_backend: str | None = None,
                  precision: str = "fp32") -> dict:
    """Make ``model`` ready for ERF maps, in place; returns what was done (stored in the run record).

    eval mode; parameters frozen; RepLKNet: ``fuse_bn()`` (structural re-parameterisation + every BN folded);
    timm ResNets: every BN folded into the convolution before it;
    channels-last layout (default: :func:`default_channels_last` for ``precision``); ``conv_backend`` for
    RepLKNet's large-kernel convolutions (default on CPU with channels-last: ``native``, oneDNN's channels-last
    depthwise kernel); every convolution keeps only what the input gradient needs
    (:func:`erftools.erf._frozen.freeze_convolutions`). The model is changed in place and is meant for ERF maps
    afterwards (its parameters no longer require grad).
    """
    from ..models import RepLKNet

    dev = resolve_device(device)
    model.eval()
    done = {"eval": True, "frozen_parameters": True, "structural_reparam": False, "fuse_bn": False,
            "channels_last": False, "conv_backend": None, "input_grad_only_layers": 0}
    if channels_last is None:
        channels_last = default_channels_last(dev, precision)
    if fuse:
        done.update(rewrite_model(model))
    if isinstance(model, RepLKNet):
        if not fuse and model.is_reparameterized:
            done["structural_reparam"] = True
        if not conv_backend and not os.environ.get("ERFTOOLS_CONV_BACKEND") and channels_last and dev.type == "cpu":
            # PyTorch's channels-last depthwise convolution on CPU (oneDNN) is faster than the FFT at every RepLKNet
            # kernel size; "auto" would pick the FFT, which is the fastest choice for NCHW tensors only
            conv_backend = "native"
        if conv_backend:
            model.set_conv_backend(conv_backend)
        done["conv_backend"] = conv_backend or os.environ.get("ERFTOOLS_CONV_BACKEND") or "auto"
    for p in model.parameters():  # after fusion, which creates new parameters
        p.requires_grad_(False)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    done["input_grad_only_layers"] = freeze_convolutions(model)
    model._erftools_prepared = {**done, "rewritten": bool(fuse)}  # rewriting again would change nothing
    return done


def rewrite_model(model: nn.Module) -> dict:
    """The structural part of :func:`prepare_model`, in place: RepLKNet ``fuse_bn()`` (re-parameterisation and BN
    folding); timm ResNets: every BN folded into the convolution before it. Returns what was done. The other
    preparation steps (freezing, layout, input-gradient-only convolutions) change no module's output."""
    from ..models import RepLKNet

    done = {}
    if isinstance(model, RepLKNet):
        model.fuse_bn()  # implies structural_reparam()
        done["structural_reparam"] = done["fuse_bn"] = True
    elif _timm_class(model, "resnet", "ResNet"):
        done["fuse_bn"] = fold_batchnorm_pairs(model) > 0
    return done


# ---------------------------------------------------------------------------------------------------------------
# the per-batch computation
# ---------------------------------------------------------------------------------------------------------------
def contribution_maps(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      info: dict | None = None, *, precision: str = "fp32") -> torch.Tensor:
    """Per-image contribution maps (B, H, W) of a batch ``x`` (B, 3, H, W): ReLU(d centre / d x) summed over colour.

    ``features(x)`` must return the NCHW target feature map. The graph is freed before returning. ``info``, when
    given, receives ``feature_shape`` (the target's shape for one image). ``precision="bf16"`` runs the forward
    pass under autocast (the gradient with respect to ``x`` keeps ``x``'s dtype); the TF32 switches are set by the
    caller (:func:`precision_context`).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with _autocast(precision, x.device):
            y = features(x)
        return _centre_maps(y, x, info, retain_graph=False, what="the feature map")


def _centre_maps(y, x: torch.Tensor, info: dict | None, *, retain_graph: bool, what: str) -> torch.Tensor:
    """The paper's map of one target ``y`` (B, C, h, w) of ``x``: ReLU(d sum_c ReLU(y[:, c, h//2, w//2]) / dx),
    summed over the colour channels, per image."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise ErftoolsError(f"{what} must be a (B, C, h, w) tensor; got "
                            f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    h, w = y.shape[-2:]
    if info is not None:
        info["feature_shape"] = (1,) + tuple(y.shape[1:])
    if not y.requires_grad:  # the output does not depend on the input at all
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
    # d/dy of sum_c ReLU(y[:, c, h//2, w//2]) is 1[y > 0] at the centre and 0 elsewhere (ReLU'(0) = 0, as in
    # PyTorch). Seeding the backward pass with it directly, in y's own memory layout, keeps a channels-last
    # network channels-last all the way back (indexing would seed it with a contiguous NCHW tensor).
    seed = torch.zeros_like(y)
    centre = y[:, :, h // 2, w // 2].detach()
    seed[:, :, h // 2, w // 2] = (centre > 0).to(y.dtype)
    (grad,) = torch.autograd.grad(y, x, grad_outputs=seed, retain_graph=retain_graph, allow_unused=True)
    del seed
    if grad is None:  # y depends on parameters only through the graph, not on x
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
    return torch.relu(grad).sum(1)


def layer_maps(model: nn.Module, capture: LayerCapture, x: torch.Tensor, infos: dict | None = None, *,
               check: bool = False, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Per-image contribution maps of a batch ``x`` for every layer of ``capture``, from ONE forward pass
    (stopped after the last layer) and one backward pass per layer (the graph is kept until the last one).
    ``check``: run the whole forward pass and refuse a module that runs more than once (do it on the first batch).
    ``infos[name]`` receives each layer's ``feature_shape``. ``precision``: as for :func:`contribution_maps`."""
    modules = dict(model.named_modules())
    x = x.detach().requires_grad_(True)
    maps = {}
    with torch.enable_grad():
        with _autocast(precision, x.device):
            outs = capture.run(x, stop_early=not check, check_single_call=check)
            targets = {n: to_nchw(outs[n], model, x, n, modules.get(n)) for n in capture.layers}
        del outs
        names = list(targets)
        for i, n in enumerate(names):
            later = any(isinstance(targets[m], torch.Tensor) and targets[m].requires_grad for m in names[i + 1:])
            info = infos.setdefault(n, {}) if infos is not None else None
            maps[n] = _centre_maps(targets[n], x, info, retain_graph=later, what=f"the output of layer {n!r}")
            targets[n] = None
    return maps


@dataclass
class ErfAccumulator:
    """Running sum of the per-image maps (float64), the images used and the images skipped (with reasons)."""
    total: np.ndarray | None = None
    count: int = 0
    processed: list = field(default_factory=list)  # names of the images in the sum
    skipped: list = field(default_factory=list)  # {"file", "reason"}

    def add(self, maps: torch.Tensor, names: Sequence[str]) -> int:
        """Add a batch of maps (B, H, W); non-finite maps are skipped (the official NaN check). Returns # added."""
        m = maps.detach().to(torch.float64)
        finite = torch.isfinite(m).flatten(1).all(1)
        ok = finite.cpu().tolist()
        if any(ok):
            s = m[finite].sum(0).cpu().numpy()
            if self.total is None:
                self.total = np.zeros_like(s)
            elif self.total.shape != s.shape:
                raise ErftoolsError(f"image size changed within a run: {s.shape} after {self.total.shape}")
            self.total += s
        for name, good in zip(names, ok):
            if good:
                self.processed.append(name)
                self.count += 1
            else:
                self.skipped.append({"file": name, "reason": "NaN in the contribution map"})
                log.warning("%s: NaN in the contribution map, skipped", name)
        return sum(ok)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def merge(self, other: "ErfAccumulator") -> "ErfAccumulator":
        if other.total is not None:
            if self.total is None:
                self.total = other.total.copy()
            else:
                self.total = self.total + other.total
        self.count += other.count
        self.processed += list(other.processed)
        self.skipped += list(other.skipped)
        return self

    @property
    def num_nan(self) -> int:
        return sum(1 for s in self.skipped if s["reason"].startswith("NaN"))

    def mean(self) -> np.ndarray:
        if self.total is None or self.count == 0:
            raise ErftoolsError("no image gave a usable contribution map (all were skipped); nothing to average")
        return (self.total / self.count).astype(np.float32)


@dataclass
class ErfResult:
    """The aggregated contribution matrix of a model and how it was made."""
    matrix: np.ndarray  # float32 (H, W): the mean of the per-image maps
    num_images: int  # images in the mean
    num_skipped: int  # images left out (NaN maps, unreadable files)
    skipped: list = field(default_factory=list)  # {"file", "reason"}
    images: list = field(default_factory=list)  # names of the images in the mean
    feature_shape: tuple | None = None  # (1, C, h, w) of the target feature map
    target: str = ""  # adapter id, e.g. "replknet.forward_features"
    prepared: dict = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 1
    timings: dict = field(default_factory=dict)
    total: np.ndarray | None = None  # float64 running sum (for merging / checkpoints)
    layer: str | None = None  # the module name of the target (None: the family's final feature map)
    precision: str = "fp32"  # the precision that actually ran (see compute_erf's precision argument)
    precision_note: str | None = None  # why it differs from the one asked for, or what it means

    @property
    def num_nan(self) -> int:
        return sum(1 for s in self.skipped if s["reason"].startswith("NaN"))

    def area_ratios(self, thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> list[AreaRatio]:
        return area_ratios(self.matrix, thresholds)

    def radial_profile(self, max_points: int = 256) -> dict:
        return radial_profile(self.matrix, max_points)

    def statistics(self, model: nn.Module | None = None, thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> dict:
        """:func:`erftools.erf.statistics.erf_statistics` of the matrix; with ``model``, the theoretical receptive
        field of this result's layer (or final feature map) too."""
        from .statistics import erf_statistics

        return erf_statistics(self.matrix, thresholds=thresholds, model=model, layer=self.layer)


# ---------------------------------------------------------------------------------------------------------------
# input handling: tensors, iterables of tensors, image lists
# ---------------------------------------------------------------------------------------------------------------
def _tensor_batches(x: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[tuple[list, torch.Tensor, list]]:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ErftoolsError(f"images must be a (N, 3, H, W) tensor; got shape {tuple(x.shape)}")
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i:i + batch_size]
        yield [f"#{start + i + j}" for j in range(chunk.shape[0])], chunk, []


def _batches(images, batch_size: int) -> Iterator[tuple[list, torch.Tensor | None, list]]:
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


def _count(images) -> int | None:
    from ..images import ImageList

    if isinstance(images, (torch.Tensor, np.ndarray)):
        return 1 if images.ndim == 3 else int(images.shape[0])
    if isinstance(images, ImageList):
        return len(images)
    try:
        return len(images)  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ---------------------------------------------------------------------------------------------------------------
# the public entry point
# ---------------------------------------------------------------------------------------------------------------
def compute_erf(model: nn.Module, images, *, batch_size: int | None = None, device: str | torch.device | None = None,
                prepare: bool = True, conv_backend: str | None = None, channels_last: bool | None = None,
                feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: bool = False,
                state: ErfAccumulator | None = None,
                on_batch: Callable[[ErfAccumulator], None] | None = None, layer: str | None = None,
                precision: str = "fp32", allow_low_precision: bool = False) -> ErfResult:
    """The aggregated contribution matrix (effective receptive field) of ``model`` over ``images``.

    Args:
        model: a RepLKNet, any timm model, or any module when ``feature_fn`` is given.
        images: a preprocessed float tensor (N, 3, H, W) (or one image (3, H, W)); an iterable of such batches;
            or an :class:`erftools.images.ImageList` (a sampled folder of image files, loaded and preprocessed
            here; unreadable files are skipped and reported).
        batch_size: images per forward/backward pass (default: 1 on CPU; on CUDA sized from the model's activation
            sizes and the free device memory, see :func:`auto_batch_size`; halved on out-of-memory).
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or a ``torch.device``; the model is moved there.
        prepare: prepare the model in place for speed (see :func:`prepare_model`); ``False`` uses it as given
            (only ``eval()`` is called).
        conv_backend: large-kernel convolution backend of a RepLKNet (``auto``, ``native``, ``fft``, ``triton``).
        channels_last: channels-last layout (default with ``prepare``: :func:`default_channels_last`).
        feature_fn: ``callable(x) -> (B, C, h, w)`` target feature map, instead of the family adapter.
        progress: show a progress bar with an ETA.
        state: an accumulator to continue (resume); the result then covers its images too.
        on_batch: called with the accumulator after every batch (checkpointing).
        layer: a module name from ``model.named_modules()`` whose output is the target instead of the final
            feature map (see :func:`compute_erfs`).
        precision: ``"fp32"`` (default, the paper's; on CUDA TF32 is switched off for the run), ``"tf32"`` (CUDA
            TF32 convolutions and matrix products, with a warning naming its measured error; plain fp32
            elsewhere) or ``"bf16"`` (the forward pass under bfloat16 autocast, the maps summed in float64). What
            ran is ``ErfResult.precision`` (``precision_note`` says why it differs). A float64 model computes in
            float64 (``precision="fp32"`` only). See :data:`MEASURED_ERRORS` and docs/erf.md, "Precision".
        allow_low_precision: accept a precision whose high-contribution squares moved in erftools' measurements
            (``bf16``: refused without it; with it, a warning names the measured error).

    Raises :class:`ErftoolsError` when no image gave a usable map, for an unknown ``precision``, or for ``bf16``
    without ``allow_low_precision``.
    """
    _check_arguments(batch_size, precision, allow_low_precision)
    if layer is not None:
        if feature_fn is not None:
            raise ErftoolsError("give either layer= or feature_fn=, not both")
        layers = expand_layers(model, layer)
        if len(layers) != 1:
            raise ErftoolsError(f"layer={layer!r} names {len(layers)} layers; compute_erf takes one, use "
                                "compute_erfs(model, images, layers=...) for several")
        return compute_erfs(model, images, layers=layers, batch_size=batch_size, device=device, prepare=prepare,
                            conv_backend=conv_backend, channels_last=channels_last, progress=progress,
                            states=None if state is None else {layers[0]: state},
                            on_batch=None if on_batch is None else (lambda accs: on_batch(accs[layers[0]])),
                            precision=precision, allow_low_precision=allow_low_precision)[layers[0]]
    acc, meta = accumulate_erf(model, images, batch_size=batch_size, device=device, prepare=prepare,
                               conv_backend=conv_backend, channels_last=channels_last, feature_fn=feature_fn,
                               progress=progress, state=state, on_batch=on_batch, precision=precision,
                               allow_low_precision=allow_low_precision)
    return ErfResult(acc.mean(), acc.count, len(acc.skipped), list(acc.skipped), list(acc.processed),
                     meta["feature_shape"], meta["target"], meta["prepared"], meta["device"], meta["batch_size"],
                     meta["timings"], acc.total, precision=meta["precision"], precision_note=meta["precision_note"])


def compute_erfs(model: nn.Module, images, layers: str | Iterable[str], *, batch_size: int | None = None,
                 device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
                 channels_last: bool | None = None, progress: bool = False,
                 states: dict[str, ErfAccumulator] | None = None,
                 on_batch: Callable[[dict[str, ErfAccumulator]], None] | None = None,
                 precision: str = "fp32", allow_low_precision: bool = False) -> dict[str, ErfResult]:
    """The ERF of several layers of ``model`` at once: ``{layer: ErfResult}``, in the order asked.

    Each layer is a module name from ``model.named_modules()`` (or ``"stages"``: every stage of a known family, see
    :func:`erftools.erf.layers.expand_layers`); its output, made NCHW like the final feature map (NHWC and token
    outputs are converted, see :func:`erftools.erf.adapters.to_nchw`), is the target of the paper's procedure,
    unchanged. Per batch there is ONE forward pass, ended after the deepest requested layer, and one backward pass
    per layer. An image whose map is not finite is skipped for that layer only.

    With ``prepare=True`` the model is prepared as for :func:`compute_erf`; a layer whose module the preparation
    would remove or rewrite (RepLKNet's ``large_kernel.lkb_origin``, a BN folded into its convolution, the
    convolution that absorbs it) is refused before anything is changed, naming it: pass ``prepare=False`` or
    choose an enclosing module (a block, a ``conv_bn`` sequence, a stage). The other arguments are those of
    :func:`compute_erf`; ``states`` and ``on_batch`` work per layer (dicts keyed by layer).
    """
    accs, meta = accumulate_erfs(model, images, layers, batch_size=batch_size, device=device, prepare=prepare,
                                 conv_backend=conv_backend, channels_last=channels_last, progress=progress,
                                 states=states, on_batch=on_batch, precision=precision,
                                 allow_low_precision=allow_low_precision)
    results = {}
    for name, acc in accs.items():
        results[name] = ErfResult(acc.mean(), acc.count, len(acc.skipped), list(acc.skipped), list(acc.processed),
                                  meta["feature_shapes"].get(name), meta["targets"][name], meta["prepared"],
                                  meta["device"], meta["batch_size"], meta["timings"], acc.total, layer=name,
                                  precision=meta["precision"], precision_note=meta["precision_note"])
    return results


def _setup(model: nn.Module, device, prepare: bool, channels_last, conv_backend,
           precision: str = "fp32") -> tuple[torch.device, dict]:
    dev = resolve_device(device)
    if prepare:
        prepared = prepare_model(model, dev, channels_last=channels_last, conv_backend=conv_backend,
                                 precision=precision)
    else:
        model.eval()
        model.to(dev)
        prepared = {"eval": True, "frozen_parameters": False, "structural_reparam": False, "fuse_bn": False,
                    "channels_last": bool(channels_last), "conv_backend": conv_backend}
        if conv_backend and hasattr(model, "set_conv_backend"):
            model.set_conv_backend(conv_backend)
        if channels_last:
            model.to(memory_format=torch.channels_last)
    return dev, prepared


def _check_arguments(batch_size, precision: str, allow_low_precision: bool = False) -> None:
    """Refuse bad arguments before the model is touched."""
    check_precision(precision)
    _check_allowed(precision, allow_low_precision)
    if batch_size is not None and int(batch_size) < 1:
        raise ErftoolsError(f"batch_size must be at least 1 (got {batch_size})")


def _sync(dev: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the work (CUDA is asynchronous)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _compute_in_chunks(compute, batch: torch.Tensor, bs: int) -> tuple[dict, int]:
    """``compute(chunk, bs)`` over chunks of at most ``bs`` images (after an out-of-memory halving, the later
    batches are split in advance instead of failing again); maps concatenated per key."""
    if batch.shape[0] <= bs:
        return compute(batch, bs)
    parts: dict = {}
    i = 0
    while i < batch.shape[0]:
        chunk = batch[i:i + bs]
        maps, got = compute(chunk, bs)
        i, bs = i + chunk.shape[0], min(bs, got)
        for k, v in maps.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}, bs


def _loop(images, bs: int, dev: torch.device, use_cl: bool, compute, accs: dict, on_batch, bar,
          dtype: torch.dtype = torch.float32) -> tuple[dict, int]:
    """Batches of ``images`` (cast to ``dtype``, the model's) through ``compute(batch, bs) -> ({key: maps}, bs)``
    into ``accs`` ({key: acc}); returns the timings (device-synchronised) and the batch size finally used."""
    t_load = t_compute = 0.0
    n_computed = 0
    it = _batches(images, bs)
    while True:
        tl = time.perf_counter()
        try:
            names, batch, skipped = next(it)
        except StopIteration:
            break
        t_load += time.perf_counter() - tl
        for name, reason in skipped:
            for acc in accs.values():
                acc.skip(name, reason)
        if batch is not None:
            tc = time.perf_counter()
            batch = batch.to(dev, dtype, non_blocking=True)
            if use_cl:
                batch = batch.contiguous(memory_format=torch.channels_last)
            maps, bs = _compute_in_chunks(compute, batch, bs)
            for key, acc in accs.items():
                acc.add(maps[key], names)
            del maps, batch
            _sync(dev)
            t_compute += time.perf_counter() - tc
            n_computed += len(names)
        if bar is not None:
            bar.update(len(names) + len(skipped))
        if on_batch is not None:
            on_batch()
    return {"load_s": t_load, "compute_s": t_compute, "images_computed": n_computed}, bs


def _timings(t0: float, t_prepare: float, loop: dict, dev: torch.device) -> dict:
    n = loop["images_computed"]
    _sync(dev)
    timings = {"total_s": round(time.perf_counter() - t0, 3), "prepare_s": round(t_prepare, 3),
               "load_s": round(loop["load_s"], 3), "compute_s": round(loop["compute_s"], 3),
               "per_image_s": round(loop["compute_s"] / n, 4) if n else None, "images_computed": n}
    if dev.type == "cuda":
        timings["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
    return timings


def _progress_bar(progress: bool, images, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=_count(images), unit="img", desc=desc, dynamic_ncols=True)


def _meta(prec: dict, estimate: dict | None, allow_low_precision: bool) -> dict:
    """The precision and batch-size entries shared by both accumulators' metadata."""
    return {**prec, "allow_low_precision": bool(allow_low_precision), "batch_size_estimate": estimate}


def accumulate_erf(model: nn.Module, images, *, batch_size: int | None = None,
                   device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
                   channels_last: bool | None = None, feature_fn: Callable | None = None, progress: bool = False,
                   state: ErfAccumulator | None = None, on_batch: Callable[[ErfAccumulator], None] | None = None,
                   progress_desc: str | None = None, precision: str = "fp32",
                   allow_low_precision: bool = False) -> tuple[ErfAccumulator, dict]:
    """The work of :func:`compute_erf` without the final mean: returns the accumulator and a dict of metadata
    (``feature_shape``, ``target``, ``prepared``, ``device``, ``batch_size``, ``timings``, ``precision`` (what
    ran), ``precision_requested``, ``precision_note``, ``allow_low_precision``, ``batch_size_estimate`` (None,
    or the automatic CUDA estimate: ``batch_size``, ``bytes_per_image``, ``free_bytes``)). Used by the resumable
    and distributed runner, whose processes may have nothing left to do."""
    t0 = time.perf_counter()
    _check_arguments(batch_size, precision, allow_low_precision)
    dev, prepared = _setup(model, device, prepare, channels_last, conv_backend, precision)
    dtype = _model_dtype(model)
    prec = _resolve_precision(precision, dev, dtype)
    use_cl = prepared["channels_last"]
    if feature_fn is not None:
        adapter = FeatureAdapter(feature_fn, "custom", "user-supplied feature_fn")
    else:
        adapter = feature_map(model)
    _warn_precision(prec["precision"])
    acc = state if state is not None else ErfAccumulator()
    info: dict = {}
    with precision_context(prec["precision_requested"], dev):
        bs, estimate = _choose_batch_size(batch_size, dev, images, adapter, model, prec["precision"], use_cl)
        _sync(dev)
        t_prepare = time.perf_counter() - t0
        bar = _progress_bar(progress, images, progress_desc or f"ERF {model_name(model)}")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

        def compute(batch, size):
            maps, size = _maps_with_retry(adapter, batch, size, info, prec["precision"])
            return {None: maps}, size

        try:
            loop, bs = _loop(images, bs, dev, use_cl, compute, {None: acc}, on_batch and (lambda: on_batch(acc)),
                             bar, dtype)
        finally:
            if bar is not None:
                bar.close()
    meta = {"feature_shape": info.get("feature_shape"), "target": adapter.name,
            "target_description": adapter.description, "prepared": prepared, "device": str(dev), "batch_size": bs,
            "timings": _timings(t0, t_prepare, loop, dev), **_meta(prec, estimate, allow_low_precision)}
    return acc, meta


def check_prepare_keeps_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Refuse, before the model is changed, layers whose module :func:`prepare_model` would remove or rewrite."""
    changes = preparation_changes(model, lambda m: rewrite_model(m.eval()), layers)
    if changes:
        what = "; ".join(f"{n!r} is {why}" for n, why in sorted(changes.items()))
        raise ErftoolsError(
            f"preparing {model_name(model)} for speed (re-parameterisation / BatchNorm folding) changes the output of "
            f"the requested layer(s): {what}. Pass prepare=False to measure them on the model as given, or choose an "
            "enclosing module (its block, its conv+BN sequence or its stage), whose output preparation keeps")


def accumulate_erfs(model: nn.Module, images, layers: str | Iterable[str], *, batch_size: int | None = None,
                    device: str | torch.device | None = None, prepare: bool = True,
                    conv_backend: str | None = None, channels_last: bool | None = None, progress: bool = False,
                    states: dict[str, ErfAccumulator] | None = None,
                    on_batch: Callable[[dict[str, ErfAccumulator]], None] | None = None,
                    progress_desc: str | None = None, precision: str = "fp32",
                    allow_low_precision: bool = False) -> tuple[dict[str, ErfAccumulator], dict]:
    """The work of :func:`compute_erfs` without the final means: ``({layer: accumulator}, meta)``; ``meta`` has
    ``feature_shapes`` and ``targets`` (dicts by layer), ``layers``, ``prepared``, ``device``, ``batch_size``,
    ``timings`` and the precision and batch-size entries of :func:`accumulate_erf`."""
    t0 = time.perf_counter()
    _check_arguments(batch_size, precision, allow_low_precision)
    names = expand_layers(model, layers)
    if states is not None and set(states) != set(names):
        raise ErftoolsError(f"states has the layers {sorted(states)}, but {names} were asked for")
    if prepare and not (getattr(model, "_erftools_prepared", None) or {}).get("rewritten"):
        check_prepare_keeps_layers(model, names)
    dev, prepared = _setup(model, device, prepare, channels_last, conv_backend, precision)
    dtype = _model_dtype(model)
    prec = _resolve_precision(precision, dev, dtype)
    _warn_precision(prec["precision"])
    accs = {n: (states[n] if states is not None else ErfAccumulator()) for n in names}
    infos: dict = {}
    first = [True]
    bar = None
    try:
        with precision_context(prec["precision_requested"], dev), LayerCapture(model, names) as capture:
            bs, estimate = _choose_batch_size(batch_size, dev, images, lambda x: capture.run(x, stop_early=True),
                                              model, prec["precision"], prepared["channels_last"])
            _sync(dev)
            t_prepare = time.perf_counter() - t0
            bar = _progress_bar(progress, images, progress_desc or f"ERF {model_name(model)} ({len(names)} layers)")
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)

            def compute(batch, size):
                maps, size = _layer_maps_with_retry(model, capture, batch, size, infos, first[0], prec["precision"])
                first[0] = False
                return maps, size

            loop, bs = _loop(images, bs, dev, prepared["channels_last"], compute, accs,
                             on_batch and (lambda: on_batch(accs)), bar, dtype)
    finally:
        if bar is not None:
            bar.close()
    meta = {"layers": names, "feature_shapes": {n: infos.get(n, {}).get("feature_shape") for n in names},
            "targets": {n: f"module:{n}" for n in names}, "prepared": prepared, "device": str(dev),
            "batch_size": bs, "timings": _timings(t0, t_prepare, loop, dev),
            **_meta(prec, estimate, allow_low_precision)}
    return accs, meta


def _oom_or_raise(exc: RuntimeError, batch: torch.Tensor) -> None:
    """Return when ``exc`` is an out-of-memory error that a smaller batch may avoid; raise otherwise (with advice
    when even one image does not fit)."""
    if not _is_oom(exc):
        raise exc
    if batch.shape[0] == 1:
        advice = "use smaller images" + (" or device='cpu'" if batch.device.type == "cuda" else "")
        raise ErftoolsError(f"out of memory computing one image of {tuple(batch.shape[-2:])} px on "
                            f"{batch.device}; {advice}") from exc
    if batch.device.type == "cuda":
        torch.cuda.empty_cache()
    log.warning("out of memory on %s with batch size %d; retrying with %d", batch.device, batch.shape[0],
                math.ceil(batch.shape[0] / 2))


def _layer_maps_with_retry(model, capture, batch: torch.Tensor, bs: int, infos: dict, check: bool,
                           precision: str = "fp32"):
    """:func:`layer_maps` of ``batch``; on out-of-memory, split the batch in halves (and keep the smaller size)."""
    try:
        return layer_maps(model, capture, batch, infos, check=check, precision=precision), bs
    except RuntimeError as exc:
        _oom_or_raise(exc, batch)
    size = max(1, math.ceil(batch.shape[0] / 2))
    parts: dict = {}
    i = 0
    while i < batch.shape[0]:  # chunks of the smallest size that has worked so far
        chunk = batch[i:i + size]
        m, got = _layer_maps_with_retry(model, capture, chunk, size, infos, check, precision)
        i, size = i + chunk.shape[0], min(size, got)
        for k, v in m.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}, min(bs, size)


def _maps_with_retry(adapter, batch: torch.Tensor, bs: int, info: dict,
                     precision: str = "fp32") -> tuple[torch.Tensor, int]:
    """Contribution maps of ``batch``; on out-of-memory, split the batch in halves (and keep the smaller size)."""
    try:
        return contribution_maps(adapter, batch, info, precision=precision), bs
    except RuntimeError as exc:
        _oom_or_raise(exc, batch)
    size = max(1, math.ceil(batch.shape[0] / 2))
    parts = []
    i = 0
    while i < batch.shape[0]:  # chunks of the smallest size that has worked so far
        chunk = batch[i:i + size]
        m, got = _maps_with_retry(adapter, chunk, size, info, precision)
        i, size = i + chunk.shape[0], min(size, got)
        parts.append(m)
    return torch.cat(parts), min(bs, size)

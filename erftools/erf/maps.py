"""The ERF's per-batch math (the paper's procedure, section 5.1) and the running sum of the maps.

For every image ``x`` and target ``y`` (an NCHW feature map): ``s = sum_c ReLU(y[:, c, h//2, w//2])``,
``g = ds/dx``, ``map = sum over the colour channels of ReLU(g)``. :func:`target_maps` runs ONE forward pass for any
number of targets and one backward pass per target (the graph kept until the last); the final feature map
(:func:`contribution_maps`) is its one-target case, a list of layers (:func:`layer_maps`) its many-target case. An
image whose map is not finite (NaN) is skipped and counted by :class:`ErfAccumulator`, which sums in float64.
``objective=`` and ``reduction=`` choose another ``s`` or another map of ``g`` (:mod:`erftools.erf.objectives`:
Luo et al.'s unit gradient; ``|g|``, the L2 norm over RGB); the defaults are the paper's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._io import ErftoolsError
from .adapters import to_nchw
from .layers import LayerCapture
from .objectives import DEFAULT_OBJECTIVE, DEFAULT_REDUCTION, output_seed, reduce_gradient
from .precision import autocast

log = logging.getLogger(__name__)

__all__ = ["target_maps", "contribution_maps", "layer_maps", "ErfAccumulator"]


def target_maps(targets: Callable[[torch.Tensor], dict], x: torch.Tensor, infos: dict | None = None, *,
                precision: str = "fp32", what: Callable[[object], str] = lambda k: f"the output of layer {k!r}",
                objective: str = DEFAULT_OBJECTIVE, reduction: str = DEFAULT_REDUCTION) -> dict:
    """Per-image contribution maps ``{key: (B, H, W)}`` of a batch ``x`` (B, 3, H, W) for every target of
    ``targets(x) -> {key: NCHW tensor}``: one forward pass (under bf16 autocast for ``precision="bf16"``; the TF32
    switches are the caller's, :func:`erftools.erf.precision.precision_context`), one backward pass per target.
    ``infos[key]``, when given, receives the target's ``feature_shape`` (for one image). ``objective`` /
    ``reduction``: the variant (:mod:`erftools.erf.objectives`; default: the paper's)."""
    x = x.detach().requires_grad_(True)
    maps = {}
    with torch.enable_grad():
        with autocast(precision, x.device):
            outs = targets(x)
        keys = list(outs)
        for i, k in enumerate(keys):
            later = any(isinstance(outs[m], torch.Tensor) and outs[m].requires_grad for m in keys[i + 1:])
            info = infos.setdefault(k, {}) if infos is not None else None
            maps[k] = _centre_maps(outs[k], x, info, retain_graph=later, what=what(k), objective=objective,
                                   reduction=reduction)
            outs[k] = None
    return maps


def contribution_maps(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      info: dict | None = None, *, precision: str = "fp32", objective: str = DEFAULT_OBJECTIVE,
                      reduction: str = DEFAULT_REDUCTION) -> torch.Tensor:
    """Per-image contribution maps (B, H, W) of a batch ``x`` (B, 3, H, W): ReLU(d centre / d x) summed over colour.

    ``features(x)`` must return the NCHW target feature map. The graph is freed before returning. ``info``, when
    given, receives ``feature_shape`` (the target's shape for one image). ``precision``, ``objective``,
    ``reduction``: as for :func:`target_maps`.
    """
    infos = {} if info is not None else None
    maps = target_maps(lambda t: {None: features(t)}, x, infos, precision=precision, what=lambda _k: "the feature map",
                       objective=objective, reduction=reduction)
    if info is not None:
        info.update(infos.get(None, {}))
    return maps[None]


def capture_targets(model: nn.Module, capture: LayerCapture, x: torch.Tensor, *, check: bool = False) -> dict:
    """``{layer: NCHW output}`` of the layers of ``capture`` from one forward pass of ``x``, stopped after the last
    one; ``check``: run the whole pass and refuse a module that runs more than once (do it on the first batch)."""
    modules = dict(model.named_modules())
    outs = capture.run(x, stop_early=not check, check_single_call=check)
    return {n: to_nchw(outs[n], model, x, n, modules.get(n)) for n in capture.layers}


def layer_maps(model: nn.Module, capture: LayerCapture, x: torch.Tensor, infos: dict | None = None, *,
               check: bool = False, precision: str = "fp32", objective: str = DEFAULT_OBJECTIVE,
               reduction: str = DEFAULT_REDUCTION) -> dict[str, torch.Tensor]:
    """Per-image contribution maps of a batch ``x`` for every layer of ``capture``, from ONE forward pass
    (:func:`capture_targets`) and one backward pass per layer. ``infos[name]`` receives each layer's
    ``feature_shape``. ``precision``, ``objective``, ``reduction``: as for :func:`target_maps`."""
    return target_maps(lambda t: capture_targets(model, capture, t, check=check), x, infos, precision=precision,
                       objective=objective, reduction=reduction)


def _centre_maps(y, x: torch.Tensor, info: dict | None, *, retain_graph: bool, what: str,
                 objective: str = DEFAULT_OBJECTIVE, reduction: str = DEFAULT_REDUCTION) -> torch.Tensor:
    """The map of one target ``y`` (B, C, h, w) of ``x``, per image: by default the paper's
    ReLU(d sum_c ReLU(y[:, c, h//2, w//2]) / dx) summed over the colour channels; ``objective`` and ``reduction``
    choose another variant (:mod:`erftools.erf.objectives`)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise ErftoolsError(f"{what} must be a (B, C, h, w) tensor; got "
                            f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if info is not None:
        info["feature_shape"] = (1,) + tuple(y.shape[1:])
    grad = None
    if y.requires_grad:  # else the output does not depend on the input at all
        # the backward pass is seeded with d objective / dy directly, in y's own memory layout, which keeps a
        # channels-last network channels-last all the way back (indexing would seed it with a contiguous NCHW tensor)
        (grad,) = torch.autograd.grad(y, x, grad_outputs=output_seed(y, objective), retain_graph=retain_graph,
                                      allow_unused=True)
    if grad is None:  # None too when y depends on parameters only through the graph, not on x
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
    return reduce_gradient(grad, reduction)


@dataclass
class ErfAccumulator:
    """Running sum of the per-image maps (float64), the images used and the images skipped (with reasons)."""
    total: np.ndarray | None = None
    count: int = 0
    processed: list = field(default_factory=list)  # names of the images in the sum
    skipped: list = field(default_factory=list)  # {"file", "reason"}
    #: device-synchronised seconds of the computation behind the sum, over every session and process (NaN: a
    #: checkpoint written before this was kept)
    compute_s: float = 0.0

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
            self.total = other.total.copy() if self.total is None else self.total + other.total
        self.count += other.count
        self.compute_s += other.compute_s
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

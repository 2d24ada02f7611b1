"""Aggregated contribution maps: the paper's effective-receptive-field procedure (section 5.1), batched.

The public entry points (:func:`compute_erf`, :func:`compute_erfs`, and the resumable runner's
:func:`accumulate_erf` / :func:`accumulate_erfs`) are ONE accumulation (:func:`accumulate`) over a set of targets:
the final feature map of the family adapter (the one-target case, key :data:`FINAL`) or the outputs of several
layers (module names), which share one forward pass per batch. The pieces live by concern:

* :mod:`erftools.erf.precision`: fp32 / tf32 / bf16, their measured errors, the global switches, the layout;
* :mod:`erftools.erf.batching`: batch sizes, the batches of any image input, the one out-of-memory halving rule;
* :mod:`erftools.erf.maps`: the per-batch math and the float64 running sum;
* :mod:`erftools.erf.objectives`: the variants of that math (``objective=``: the paper's or Luo et al.'s unit
  gradient; ``reduction=``: ReLU, absolute value or L2 norm over RGB), the paper's by default;
* :mod:`erftools.models.prepare`: the model's preparation for inference (re-parameterisation, BN folding,
  channels-last, the convolution backend), which :func:`prepare_model` completes with what only the input
  gradient needs (:func:`erftools.erf._frozen.freeze_convolutions`).

Before the first batch the model is prepared (``prepare=True``, in place, no copy); what was done is recorded in
``ErfResult.prepared``. ``prepare=False`` uses the model exactly as given (eval mode only).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._device import resolve_device  # noqa: F401  (re-exported: erftools.erf.resolve_device)
from .._io import ErftoolsError
from ..models.prepare import prepare_for_inference, rewrite_model
from ._frozen import freeze_convolutions
from .adapters import FeatureAdapter, feature_map, model_name
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, radial_profile
from .batching import (MAX_AUTO_BATCH, MEMORY_SHARE, activation_bytes_per_image, auto_batch_size,  # noqa: F401
                       batch_size_for_memory, batches, choose_batch_size, count_images, default_batch_size,
                       in_chunks)
from .layers import LayerCapture, expand_layers, preparation_changes
from .maps import ErfAccumulator, capture_targets, contribution_maps, layer_maps, target_maps  # noqa: F401
from .objectives import DEFAULT_OBJECTIVE, DEFAULT_REDUCTION, check_objective, check_reduction
from .precision import (MEASURED_ERRORS, PRECISIONS, check_allowed, check_precision,  # noqa: F401
                        default_channels_last, model_dtype, precision_context, resolve_precision, warn_precision)

log = logging.getLogger(__name__)

__all__ = ["ErfResult", "ErfAccumulator", "ErfMeta", "compute_erf", "compute_erfs", "accumulate", "accumulate_erf",
           "accumulate_erfs", "contribution_maps", "layer_maps", "prepare_model", "rewrite_model", "resolve_device",
           "default_batch_size", "auto_batch_size", "batch_size_for_memory", "activation_bytes_per_image",
           "PRECISIONS", "MEASURED_ERRORS", "check_precision", "precision_context", "default_channels_last", "FINAL"]

#: the key of the final feature map among the targets (checkpoints and records use it too)
FINAL = "final"


# ---------------------------------------------------------------------------------------------------------------
# model preparation (the ERF's part: what only the input gradient adds)
# ---------------------------------------------------------------------------------------------------------------
def prepare_model(model: nn.Module, device: torch.device | str | None = None, *, fuse: bool = True,
                  channels_last: bool | None = None, conv_backend: str | None = None,
                  precision: str = "fp32") -> dict:
    """Make ``model`` ready for ERF maps, in place; returns what was done (stored in the run record).

    :func:`erftools.models.prepare.prepare_for_inference` (eval mode; parameters frozen; RepLKNet ``fuse_bn()``;
    timm ResNets' BNs folded; the convolution backend by its one rule), with the channels-last layout of
    :func:`default_channels_last` for ``precision`` unless given; then every convolution keeps only what the input
    gradient needs (:func:`erftools.erf._frozen.freeze_convolutions`). The model is meant for ERF maps afterwards
    (its parameters no longer require grad).
    """
    dev = resolve_device(device)
    if channels_last is None:
        channels_last = default_channels_last(dev, precision)
    done = prepare_for_inference(model, dev, fuse=fuse, channels_last=channels_last, conv_backend=conv_backend)
    done["input_grad_only_layers"] = freeze_convolutions(model)
    model._erftools_prepared = {**done, "rewritten": bool(fuse)}  # rewriting again would change nothing
    return done


def check_prepare_keeps_layers(model: nn.Module, layers: Sequence[str]) -> None:
    changes = preparation_changes(model, lambda m: rewrite_model(m.eval()), layers)
    if changes:
        what = "; ".join(f"{n!r} is {why}" for n, why in sorted(changes.items()))
        raise ErftoolsError(
            f"preparing {model_name(model)} for speed (re-parameterisation / BatchNorm folding) changes the output of "
            f"the requested layer(s): {what}. Pass prepare=False to measure them on the model as given, or choose an "
            "enclosing module (its block, its conv+BN sequence or its stage), whose output preparation keeps")



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
    objective: str = DEFAULT_OBJECTIVE  # what was differentiated (erftools.erf.objectives)
    reduction: str = DEFAULT_REDUCTION  # how the input gradient became a map

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
# what an accumulation measures and what it ran with
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ErfMeta:
    """How an accumulation ran (typed; the run record copies it): per target key its target id and feature shape,
    the preparation, device, batch size, timings, the precision that ran, and the automatic batch-size estimate."""
    targets: dict  # {key: target id}: the adapter's ("replknet.forward_features") or "module:<layer>"
    feature_shapes: dict  # {key: (1, C, h, w) of the target, None when no image reached it}
    prepared: dict
    device: str
    batch_size: int
    timings: dict  # total_s, prepare_s, load_s, compute_s, per_image_s, images_computed (, cuda_peak_bytes)
    precision: str  # what ran
    precision_requested: str
    precision_note: str | None = None
    allow_low_precision: bool = False
    batch_size_estimate: dict | None = None  # the automatic CUDA estimate: batch_size, bytes_per_image, free_bytes
    target_description: str | None = None  # the adapter's (final feature map only)
    layers: list | None = None  # the requested layers (None: the final feature map)
    objective: str = DEFAULT_OBJECTIVE  # what was differentiated (erftools.erf.objectives)
    reduction: str = DEFAULT_REDUCTION  # how the input gradient became a map

    @property
    def feature_shape(self) -> tuple | None:
        """The feature shape of the first (for the final feature map: the only) target."""
        return next(iter(self.feature_shapes.values()), None)

    @property
    def target(self) -> str:
        """The target id of the first (for the final feature map: the only) target."""
        return next(iter(self.targets.values()))


class _FinalTarget:
    """The final feature map of the family adapter (or of a user's ``feature_fn``): the one-target case."""

    def __init__(self, adapter: FeatureAdapter):
        self.adapter, self.keys = adapter, [FINAL]
        self.ids, self.description = {FINAL: adapter.name}, adapter.description

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def probe(self, x: torch.Tensor):
        """One forward pass of ``x`` (the batch-size estimate measures it)."""
        return self.adapter(x)

    def __call__(self, x: torch.Tensor) -> dict:
        return {FINAL: self.adapter(x)}

    @staticmethod
    def what(_key) -> str:
        return "the feature map"


class _LayerTargets:
    """The outputs of several layers, from one forward pass per batch (the first batch checks that no module runs
    twice)."""

    def __init__(self, model: nn.Module, names: list):
        self.model, self.keys, self.first = model, list(names), True
        self.ids, self.description = {n: f"module:{n}" for n in names}, None
        self.capture = LayerCapture(model, names)

    def __enter__(self):
        self.capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.capture.__exit__(*exc)

    def probe(self, x: torch.Tensor):
        return self.capture.run(x, stop_early=True)

    def __call__(self, x: torch.Tensor) -> dict:
        out = capture_targets(self.model, self.capture, x, check=self.first)
        self.first = False
        return out

    @staticmethod
    def what(key) -> str:
        return f"the output of layer {key!r}"


# ---------------------------------------------------------------------------------------------------------------
# the accumulation: named steps
# ---------------------------------------------------------------------------------------------------------------
def _check_arguments(batch_size, precision: str, allow_low_precision: bool = False,
                     objective: str = DEFAULT_OBJECTIVE, reduction: str = DEFAULT_REDUCTION) -> None:
    """Refuse bad arguments before the model is touched."""
    check_objective(objective)
    check_reduction(reduction)
    check_precision(precision)
    check_allowed(precision, allow_low_precision)
    if batch_size is not None and int(batch_size) < 1:
        raise ErftoolsError(f"batch_size must be at least 1 (got {batch_size})")


def _setup(model: nn.Module, device, prepare: bool, channels_last, conv_backend,
           precision: str = "fp32") -> tuple[torch.device, dict]:
    """Move (and with ``prepare``, prepare) the model; return the device and what was done."""
    dev = resolve_device(device)
    if prepare:
        return dev, prepare_model(model, dev, channels_last=channels_last, conv_backend=conv_backend,
                                  precision=precision)
    model.eval()
    model.to(dev)
    if conv_backend and hasattr(model, "set_conv_backend"):
        model.set_conv_backend(conv_backend)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return dev, {"eval": True, "frozen_parameters": False, "structural_reparam": False, "fuse_bn": False,
                 "channels_last": bool(channels_last), "conv_backend": conv_backend}


def _targets_of(model: nn.Module, layers, feature_fn, prepare: bool):
    """The targets of an accumulation; refuses layers that the preparation would change (before it runs)."""
    if layers is None:
        return None, (FeatureAdapter(feature_fn, "custom", "user-supplied feature_fn") if feature_fn is not None
                      else None)
    names = expand_layers(model, layers)
    if prepare and not (getattr(model, "_erftools_prepared", None) or {}).get("rewritten"):
        check_prepare_keeps_layers(model, names)
    return names, None


def _loop(images, bs: int, dev: torch.device, use_cl: bool, targets, accs: dict, on_batch, bar,
          dtype: torch.dtype, precision: str, variant: dict) -> tuple[dict, int, dict]:
    """Batches of ``images`` (cast to ``dtype``, the model's) through :func:`erftools.erf.maps.target_maps` of
    ``targets`` (in chunks, :func:`erftools.erf.batching.in_chunks`) into ``accs``; returns the timings
    (device-synchronised), the batch size finally used and the targets' ``{key: {"feature_shape"}}``. ``variant``:
    the ``objective`` / ``reduction`` keywords of :func:`~erftools.erf.maps.target_maps`."""
    t_load = t_compute = 0.0
    n_computed, infos = 0, {}
    compute = functools.partial(target_maps, targets, infos=infos, precision=precision, what=targets.what,
                                **variant)
    it = batches(images, bs)
    while True:
        tl = time.perf_counter()
        names, batch, skipped = next(it, (None, None, None))
        if names is None:
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
            maps, bs = in_chunks(compute, batch, bs)
            for key, acc in accs.items():
                acc.add(maps[key], names)
            del maps, batch
            _sync(dev)
            dt = time.perf_counter() - tc
            t_compute += dt
            for acc in accs.values():
                acc.compute_s += dt
            n_computed += len(names)
        if bar is not None:
            bar.update(len(names) + len(skipped))
        if on_batch is not None:
            on_batch(accs)
    return {"load_s": t_load, "compute_s": t_compute, "images_computed": n_computed}, bs, infos


def accumulate(model: nn.Module, images, layers: str | Iterable[str] | None = None, *, batch_size: int | None = None,
               device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
               channels_last: bool | None = None, feature_fn: Callable | None = None, progress: bool = False,
               states: dict[str, ErfAccumulator] | None = None,
               on_batch: Callable[[dict[str, ErfAccumulator]], None] | None = None,
               progress_desc: str | None = None, precision: str = "fp32",
               allow_low_precision: bool = False, objective: str = DEFAULT_OBJECTIVE,
               reduction: str = DEFAULT_REDUCTION) -> tuple[dict[str, ErfAccumulator], ErfMeta]:
    """The one accumulation behind every entry point: ``({key: accumulator}, ErfMeta)``, the keys the ``layers``
    (or :data:`FINAL` for the final feature map: the family adapter, or ``feature_fn``). Used directly by the
    resumable and distributed runner, whose processes may have nothing left to do. ``objective`` / ``reduction``:
    the variant of the per-batch math (:mod:`erftools.erf.objectives`; default: the paper's)."""
    t0 = time.perf_counter()
    _check_arguments(batch_size, precision, allow_low_precision, objective, reduction)
    variant = {"objective": objective, "reduction": reduction}
    images = _with_model_preprocessing(images, model)
    names, adapter = _targets_of(model, layers, feature_fn, prepare)
    if states is not None and names is not None and set(states) != set(names):
        raise ErftoolsError(f"states has the layers {sorted(states)}, but {names} were asked for")
    dev, prepared = _setup(model, device, prepare, channels_last, conv_backend, precision)
    dtype = model_dtype(model)
    prec = resolve_precision(precision, dev, dtype)
    warn_precision(prec["precision"])
    targets = _LayerTargets(model, names) if names is not None else _FinalTarget(adapter or feature_map(model))
    accs = {k: (states[k] if states is not None else ErfAccumulator()) for k in targets.keys}
    default_desc = f"ERF {model_name(model)}" + (f" ({len(names)} layers)" if names is not None else "")
    with precision_context(prec["precision_requested"], dev), targets, _progress_bar(
            progress, images, progress_desc or default_desc) as bar:
        bs, estimate = choose_batch_size(batch_size, dev, images, targets.probe, model, prec["precision"],
                                         prepared["channels_last"])
        _sync(dev)
        t_prepare = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        loop, bs, infos = _loop(images, bs, dev, prepared["channels_last"], targets, accs, on_batch, bar, dtype,
                                prec["precision"], variant)
    return accs, ErfMeta(targets=targets.ids, feature_shapes={k: infos.get(k, {}).get("feature_shape")
                                                              for k in targets.keys},
                         prepared=prepared, device=str(dev), batch_size=bs, timings=_timings(t0, t_prepare, loop, dev),
                         allow_low_precision=bool(allow_low_precision), batch_size_estimate=estimate,
                         target_description=targets.description, layers=names, **variant, **prec)


def _with_model_preprocessing(images, model: nn.Module):
    """An :class:`~erftools.images.ImageList` without a chosen mean/std gets the model's (as the CLI does)."""
    from ..images import ImageList
    from ..models import get_model_info

    if isinstance(images, ImageList) and (images.mean is None or images.std is None):
        pre = get_model_info(model).preprocessing
        return images.for_model(pre.mean, pre.std)
    return images


def accumulate_erf(model: nn.Module, images, *, state: ErfAccumulator | None = None,
                   on_batch: Callable[[ErfAccumulator], None] | None = None, **kwargs) -> tuple[ErfAccumulator,
                                                                                                ErfMeta]:
    """The work of :func:`compute_erf` without the final mean: the accumulator of the final feature map and the
    :class:`ErfMeta`. The other arguments are :func:`accumulate`'s."""
    accs, meta = accumulate(model, images, None, states=None if state is None else {FINAL: state},
                            on_batch=None if on_batch is None else (lambda a: on_batch(a[FINAL])), **kwargs)
    return accs[FINAL], meta


def accumulate_erfs(model: nn.Module, images, layers: str | Iterable[str], **kwargs
                    ) -> tuple[dict[str, ErfAccumulator], ErfMeta]:
    """The work of :func:`compute_erfs` without the final means: ``({layer: accumulator}, ErfMeta)``; the arguments
    are :func:`accumulate`'s."""
    return accumulate(model, images, layers, **kwargs)


def _results(accs: dict, meta: ErfMeta, layers: bool) -> dict[str, ErfResult]:
    """``{key: ErfResult}``: each accumulator's mean and how it was made."""
    return {k: ErfResult(acc.mean(), acc.count, len(acc.skipped), list(acc.skipped), list(acc.processed),
                         meta.feature_shapes.get(k), meta.targets[k], meta.prepared, meta.device, meta.batch_size,
                         meta.timings, acc.total, layer=k if layers else None, precision=meta.precision,
                         precision_note=meta.precision_note, objective=meta.objective, reduction=meta.reduction)
            for k, acc in accs.items()}


# ---------------------------------------------------------------------------------------------------------------
# the public entry points
# ---------------------------------------------------------------------------------------------------------------
def compute_erf(model: nn.Module, images, *, batch_size: int | None = None, device: str | torch.device | None = None,
                prepare: bool = True, conv_backend: str | None = None, channels_last: bool | None = None,
                feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: bool = False,
                state: ErfAccumulator | None = None,
                on_batch: Callable[[ErfAccumulator], None] | None = None, layer: str | None = None,
                precision: str = "fp32", allow_low_precision: bool = False, objective: str = DEFAULT_OBJECTIVE,
                reduction: str = DEFAULT_REDUCTION) -> ErfResult:
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
        objective: what is differentiated: ``"paper"`` (default, ``sum_c ReLU(y_c)`` at the centre, RepLKNet) or
            ``"unit"`` (``sum_c y_c`` at the centre, a unit output gradient: Luo et al. 2016).
        reduction: how the input gradient becomes a map: ``"relu"`` (default, ReLU summed over RGB, RepLKNet),
            ``"abs"`` (absolute value summed) or ``"l2"`` (L2 norm over RGB). See :mod:`erftools.erf.objectives`.

    Raises :class:`ErftoolsError` when no image gave a usable map, for an unknown ``precision``, ``objective`` or
    ``reduction``, or for ``bf16`` without ``allow_low_precision``.
    """
    _check_arguments(batch_size, precision, allow_low_precision, objective, reduction)
    variant = {"objective": objective, "reduction": reduction}
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
                            precision=precision, allow_low_precision=allow_low_precision, **variant)[layers[0]]
    accs, meta = accumulate(model, images, None, feature_fn=feature_fn, batch_size=batch_size, device=device, prepare=prepare,
                            conv_backend=conv_backend, channels_last=channels_last, progress=progress,
                            states=None if state is None else {FINAL: state},
                            on_batch=None if on_batch is None else (lambda a: on_batch(a[FINAL])),
                            precision=precision, allow_low_precision=allow_low_precision, **variant)
    return _results(accs, meta, layers=False)[FINAL]


def compute_erfs(model: nn.Module, images, layers: str | Iterable[str], *, batch_size: int | None = None,
                 device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
                 channels_last: bool | None = None, progress: bool = False,
                 states: dict[str, ErfAccumulator] | None = None,
                 on_batch: Callable[[dict[str, ErfAccumulator]], None] | None = None,
                 precision: str = "fp32", allow_low_precision: bool = False, objective: str = DEFAULT_OBJECTIVE,
                 reduction: str = DEFAULT_REDUCTION) -> dict[str, ErfResult]:
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
                                 allow_low_precision=allow_low_precision, objective=objective, reduction=reduction)
    return _results(accs, meta, layers=True)


def _sync(dev: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the work (CUDA is asynchronous)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


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
    """A closing progress bar (a no-op context holding None without ``progress``)."""
    if not progress:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=count_images(images), unit="img", desc=desc, dynamic_ncols=True)

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

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._io import ErftoolsError
from ._frozen import fold_batchnorm_pairs, freeze_convolutions
from .adapters import FeatureAdapter, _timm_class, feature_map, model_name, to_nchw
from .layers import LayerCapture, expand_layers, preparation_changes
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, radial_profile

log = logging.getLogger(__name__)

__all__ = ["ErfResult", "ErfAccumulator", "compute_erf", "compute_erfs", "accumulate_erf", "accumulate_erfs",
           "contribution_maps", "layer_maps", "prepare_model", "rewrite_model", "resolve_device",
           "default_batch_size"]


# ---------------------------------------------------------------------------------------------------------------
# device, batch size, model preparation
# ---------------------------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    if isinstance(device, torch.device):
        dev = device
    else:
        name = (device or "auto").lower()
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ErftoolsError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ErftoolsError("--device cuda was asked for but PyTorch sees no CUDA device; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return dev


def default_batch_size(device: torch.device) -> int:
    """1 on CPU (larger batches do not run faster there and cost memory); 4 on CUDA (halved on out-of-memory)."""
    return 4 if device.type == "cuda" else 1


def prepare_model(model: nn.Module, device: torch.device | str | None = None, *, fuse: bool = True,
                  channels_last: bool | None = None, conv_backend: str | None = None) -> dict:
    """Make ``model`` ready for ERF maps, in place; returns what was done (stored in the run record).

    eval mode; parameters frozen; RepLKNet: ``fuse_bn()`` (structural re-parameterisation + every BN folded);
    timm ResNets: every BN folded into the convolution before it;
    channels-last layout (default: on CPU); ``conv_backend`` for RepLKNet's large-kernel convolutions (default on
    CPU with channels-last: ``native``, oneDNN's channels-last depthwise kernel); every convolution keeps only what
    the input gradient needs (:func:`erftools.erf._frozen.freeze_convolutions`). The model is changed in place and
    is meant for ERF maps afterwards (its parameters no longer require grad).
    """
    from ..models import RepLKNet

    dev = resolve_device(device)
    model.eval()
    done = {"eval": True, "frozen_parameters": True, "structural_reparam": False, "fuse_bn": False,
            "channels_last": False, "conv_backend": None, "input_grad_only_layers": 0}
    if channels_last is None:
        channels_last = dev.type == "cpu"
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
                      info: dict | None = None) -> torch.Tensor:
    """Per-image contribution maps (B, H, W) of a batch ``x`` (B, 3, H, W): ReLU(d centre / d x) summed over colour.

    ``features(x)`` must return the NCHW target feature map. The graph is freed before returning. ``info``, when
    given, receives ``feature_shape`` (the target's shape for one image).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
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
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
    # d/dy of sum_c ReLU(y[:, c, h//2, w//2]) is 1[y > 0] at the centre and 0 elsewhere (ReLU'(0) = 0, as in
    # PyTorch). Seeding the backward pass with it directly, in y's own memory layout, keeps a channels-last
    # network channels-last all the way back (indexing would seed it with a contiguous NCHW tensor).
    seed = torch.zeros_like(y)
    centre = y[:, :, h // 2, w // 2].detach()
    seed[:, :, h // 2, w // 2] = (centre > 0).to(y.dtype)
    (grad,) = torch.autograd.grad(y, x, grad_outputs=seed, retain_graph=retain_graph, allow_unused=True)
    del seed
    if grad is None:  # y depends on parameters only through the graph, not on x
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
    return torch.relu(grad).sum(1)


def layer_maps(model: nn.Module, capture: LayerCapture, x: torch.Tensor, infos: dict | None = None, *,
               check: bool = False) -> dict[str, torch.Tensor]:
    """Per-image contribution maps of a batch ``x`` for every layer of ``capture``, from ONE forward pass
    (stopped after the last layer) and one backward pass per layer (the graph is kept until the last one).
    ``check``: run the whole forward pass and refuse a module that runs more than once (do it on the first batch).
    ``infos[name]`` receives each layer's ``feature_shape``."""
    modules = dict(model.named_modules())
    x = x.detach().requires_grad_(True)
    maps = {}
    with torch.enable_grad():
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
                on_batch: Callable[[ErfAccumulator], None] | None = None, layer: str | None = None) -> ErfResult:
    """The aggregated contribution matrix (effective receptive field) of ``model`` over ``images``.

    Args:
        model: a RepLKNet, any timm model, or any module when ``feature_fn`` is given.
        images: a preprocessed float tensor (N, 3, H, W) (or one image (3, H, W)); an iterable of such batches;
            or an :class:`erftools.images.ImageList` (a sampled folder of image files, loaded and preprocessed
            here; unreadable files are skipped and reported).
        batch_size: images per forward/backward pass (default 1 on CPU, 4 on CUDA, halved on CUDA out-of-memory).
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or a ``torch.device``; the model is moved there.
        prepare: prepare the model in place for speed (see :func:`prepare_model`); ``False`` uses it as given
            (only ``eval()`` is called).
        conv_backend: large-kernel convolution backend of a RepLKNet (``auto``, ``native``, ``fft``, ``triton``).
        channels_last: channels-last layout (default: on CPU when ``prepare``).
        feature_fn: ``callable(x) -> (B, C, h, w)`` target feature map, instead of the family adapter.
        progress: show a progress bar with an ETA.
        state: an accumulator to continue (resume); the result then covers its images too.
        on_batch: called with the accumulator after every batch (checkpointing).
        layer: a module name from ``model.named_modules()`` whose output is the target instead of the final
            feature map (see :func:`compute_erfs`).

    Raises :class:`ErftoolsError` when no image gave a usable map.
    """
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
                            on_batch=None if on_batch is None else (lambda accs: on_batch(accs[layers[0]])))[layers[0]]
    acc, meta = accumulate_erf(model, images, batch_size=batch_size, device=device, prepare=prepare,
                               conv_backend=conv_backend, channels_last=channels_last, feature_fn=feature_fn,
                               progress=progress, state=state, on_batch=on_batch)
    return ErfResult(acc.mean(), acc.count, len(acc.skipped), list(acc.skipped), list(acc.processed),
                     meta["feature_shape"], meta["target"], meta["prepared"], meta["device"], meta["batch_size"],
                     meta["timings"], acc.total)


def compute_erfs(model: nn.Module, images, layers: str | Iterable[str], *, batch_size: int | None = None,
                 device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
                 channels_last: bool | None = None, progress: bool = False,
                 states: dict[str, ErfAccumulator] | None = None,
                 on_batch: Callable[[dict[str, ErfAccumulator]], None] | None = None) -> dict[str, ErfResult]:
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
                                 states=states, on_batch=on_batch)
    results = {}
    for name, acc in accs.items():
        results[name] = ErfResult(acc.mean(), acc.count, len(acc.skipped), list(acc.skipped), list(acc.processed),
                                  meta["feature_shapes"].get(name), meta["targets"][name], meta["prepared"],
                                  meta["device"], meta["batch_size"], meta["timings"], acc.total, layer=name)
    return results


def _setup(model: nn.Module, device, prepare: bool, channels_last, conv_backend) -> tuple[torch.device, dict]:
    dev = resolve_device(device)
    if prepare:
        prepared = prepare_model(model, dev, channels_last=channels_last, conv_backend=conv_backend)
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


def _loop(images, bs: int, dev: torch.device, use_cl: bool, compute, accs: dict, on_batch, bar) -> tuple[dict, int]:
    """Batches of ``images`` through ``compute(batch, bs) -> ({key: maps}, bs)`` into ``accs`` ({key: acc});
    returns the timings and the batch size finally used."""
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
            batch = batch.to(dev, torch.float32, non_blocking=True)
            if use_cl:
                batch = batch.contiguous(memory_format=torch.channels_last)
            maps, bs = compute(batch, bs)
            for key, acc in accs.items():
                acc.add(maps[key], names)
            del maps, batch
            t_compute += time.perf_counter() - tc
            n_computed += len(names)
        if bar is not None:
            bar.update(len(names) + len(skipped))
        if on_batch is not None:
            on_batch()
    return {"load_s": t_load, "compute_s": t_compute, "images_computed": n_computed}, bs


def _timings(t0: float, t_prepare: float, loop: dict, dev: torch.device) -> dict:
    n = loop["images_computed"]
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


def accumulate_erf(model: nn.Module, images, *, batch_size: int | None = None,
                   device: str | torch.device | None = None, prepare: bool = True, conv_backend: str | None = None,
                   channels_last: bool | None = None, feature_fn: Callable | None = None, progress: bool = False,
                   state: ErfAccumulator | None = None, on_batch: Callable[[ErfAccumulator], None] | None = None,
                   progress_desc: str | None = None) -> tuple[ErfAccumulator, dict]:
    """The work of :func:`compute_erf` without the final mean: returns the accumulator and a dict of metadata
    (``feature_shape``, ``target``, ``prepared``, ``device``, ``batch_size``, ``timings``). Used by the resumable
    and distributed runner, whose processes may have nothing left to do."""
    t0 = time.perf_counter()
    dev, prepared = _setup(model, device, prepare, channels_last, conv_backend)
    use_cl = prepared["channels_last"]
    if feature_fn is not None:
        adapter = FeatureAdapter(feature_fn, "custom", "user-supplied feature_fn")
    else:
        adapter = feature_map(model)
    bs = int(batch_size or default_batch_size(dev))
    if bs < 1:
        raise ErftoolsError(f"batch size must be at least 1 (got {batch_size})")
    acc = state if state is not None else ErfAccumulator()
    t_prepare = time.perf_counter() - t0
    bar = _progress_bar(progress, images, progress_desc or f"ERF {model_name(model)}")
    info: dict = {}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def compute(batch, size):
        maps, size = _maps_with_retry(adapter, batch, size, info)
        return {None: maps}, size

    try:
        loop, bs = _loop(images, bs, dev, use_cl, compute, {None: acc}, on_batch and (lambda: on_batch(acc)), bar)
    finally:
        if bar is not None:
            bar.close()
    meta = {"feature_shape": info.get("feature_shape"), "target": adapter.name,
            "target_description": adapter.description, "prepared": prepared, "device": str(dev), "batch_size": bs,
            "timings": _timings(t0, t_prepare, loop, dev)}
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
                    progress_desc: str | None = None) -> tuple[dict[str, ErfAccumulator], dict]:
    """The work of :func:`compute_erfs` without the final means: ``({layer: accumulator}, meta)``; ``meta`` has
    ``feature_shapes`` and ``targets`` (dicts by layer), ``layers``, ``prepared``, ``device``, ``batch_size``,
    ``timings``."""
    t0 = time.perf_counter()
    names = expand_layers(model, layers)
    if states is not None and set(states) != set(names):
        raise ErftoolsError(f"states has the layers {sorted(states)}, but {names} were asked for")
    if prepare and not (getattr(model, "_erftools_prepared", None) or {}).get("rewritten"):
        check_prepare_keeps_layers(model, names)
    dev, prepared = _setup(model, device, prepare, channels_last, conv_backend)
    bs = int(batch_size or default_batch_size(dev))
    if bs < 1:
        raise ErftoolsError(f"batch size must be at least 1 (got {batch_size})")
    accs = {n: (states[n] if states is not None else ErfAccumulator()) for n in names}
    t_prepare = time.perf_counter() - t0
    bar = _progress_bar(progress, images, progress_desc or f"ERF {model_name(model)} ({len(names)} layers)")
    infos: dict = {}
    first = [True]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        with LayerCapture(model, names) as capture:
            def compute(batch, size):
                maps, size = _layer_maps_with_retry(model, capture, batch, size, infos, first[0])
                first[0] = False
                return maps, size

            loop, bs = _loop(images, bs, dev, prepared["channels_last"], compute, accs,
                             on_batch and (lambda: on_batch(accs)), bar)
    finally:
        if bar is not None:
            bar.close()
    meta = {"layers": names, "feature_shapes": {n: infos.get(n, {}).get("feature_shape") for n in names},
            "targets": {n: f"module:{n}" for n in names}, "prepared": prepared, "device": str(dev),
            "batch_size": bs, "timings": _timings(t0, t_prepare, loop, dev)}
    return accs, meta


def _layer_maps_with_retry(model, capture, batch: torch.Tensor, bs: int, infos: dict, check: bool):
    """:func:`layer_maps` of ``batch``; on CUDA out-of-memory, split the batch in halves (and keep the smaller size)."""
    try:
        return layer_maps(model, capture, batch, infos, check=check), bs
    except RuntimeError as exc:
        if batch.device.type != "cuda" or not _is_oom(exc) or batch.shape[0] == 1:
            if _is_oom(exc):
                raise ErftoolsError(f"out of memory computing one image of {tuple(batch.shape[-2:])} px on "
                                    f"{batch.device}; use a smaller --size or --device cpu") from exc
            raise
    torch.cuda.empty_cache()
    half = max(1, math.ceil(batch.shape[0] / 2))
    log.warning("CUDA out of memory with batch size %d; retrying with %d", batch.shape[0], half)
    parts: dict = {}
    for i in range(0, batch.shape[0], half):
        m, _ = _layer_maps_with_retry(model, capture, batch[i:i + half], half, infos, check)
        for k, v in m.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}, min(bs, half)


def _maps_with_retry(adapter, batch: torch.Tensor, bs: int, info: dict) -> tuple[torch.Tensor, int]:
    """Contribution maps of ``batch``; on CUDA out-of-memory, split the batch in halves (and keep the smaller size)."""
    try:
        return contribution_maps(adapter, batch, info), bs
    except RuntimeError as exc:
        if batch.device.type != "cuda" or not _is_oom(exc) or batch.shape[0] == 1:
            if _is_oom(exc):
                raise ErftoolsError(f"out of memory computing one image of {tuple(batch.shape[-2:])} px on "
                                    f"{batch.device}; use a smaller --size or --device cpu") from exc
            raise
    torch.cuda.empty_cache()
    half = max(1, math.ceil(batch.shape[0] / 2))
    log.warning("CUDA out of memory with batch size %d; retrying with %d", batch.shape[0], half)
    parts = []
    for i in range(0, batch.shape[0], half):
        m, _ = _maps_with_retry(adapter, batch[i:i + half], half, info)
        parts.append(m)
    return torch.cat(parts), min(bs, half)

"""ERF targets at any layer: module names, family shortcuts, and the forward hooks that capture their outputs.

A *layer* is a module name from ``model.named_modules()`` (``"stages.2"``, ``"layer3"``, ``"layers.1"``); its
output is the ERF target, converted to NCHW the way the final feature map is (:func:`erftools.erf.adapters.to_nchw`).
:func:`expand_layers` turns the shortcut ``"stages"`` into every stage of a known family. :class:`LayerCapture`
records the outputs of several modules during ONE forward pass and stops that pass once the last of them has run.

Preparing a model for speed (:func:`erftools.erf.compute.prepare_model`) rewrites some modules: RepLKNet's
re-parameterisation removes ``large_kernel.lkb_origin`` and ``large_kernel.small_conv``; BN folding turns BNs into
``nn.Identity`` and changes the convolutions that absorb them. :func:`preparation_changes` finds, before anything is
changed, which module names would then denote another tensor (or none), so that a request for one of them is
refused with a clear error instead of silently measuring something else.
"""
from __future__ import annotations

import copy
import itertools
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .._io import ErftoolsError
from .adapters import _is_replknet, _timm_class, model_name

__all__ = ["STAGE_SHORTCUT", "stage_layers", "expand_layers", "check_layers", "preparation_changes", "LayerCapture"]

#: the shortcut for "every stage of the model"
STAGE_SHORTCUT = "stages"


def stage_layers(model: nn.Module) -> list[str]:
    """The module names of the stages of a known family, shallow to deep.

    RepLKNet ``stages.0 .. stages.3``; timm ResNet ``layer1 .. layer4``; timm Swin (v1, v2) ``layers.0 .. layers.3``;
    timm ConvNeXt ``stages.0 .. stages.3``; any other model with a ``stages`` ``ModuleList``/``Sequential``: its
    children. Raises :class:`ErftoolsError` for any other model.
    """
    name = model_name(model)
    if _is_replknet(model):
        return [f"stages.{i}" for i in range(len(model.stages))]
    if _timm_class(model, "resnet", "ResNet"):
        return [n for n in ("layer1", "layer2", "layer3", "layer4") if isinstance(getattr(model, n, None), nn.Module)]
    if _timm_class(model, "swin_transformer", "SwinTransformer") or \
            _timm_class(model, "swin_transformer_v2", "SwinTransformerV2"):
        return [f"layers.{i}" for i in range(len(model.layers))]
    if _timm_class(model, "convnext", "ConvNeXt"):
        return [f"stages.{i}" for i in range(len(model.stages))]
    stages = getattr(model, "stages", None)
    if isinstance(stages, (nn.ModuleList, nn.Sequential)) and len(stages) > 0:  # the common layout of other models
        return [f"stages.{k}" for k, _ in stages.named_children()]
    raise ErftoolsError(
        f"erftools does not know the stages of {name} ({type(model).__name__}); the shortcut {STAGE_SHORTCUT!r} "
        "works for RepLKNet, timm ResNet, Swin and ConvNeXt. Pass module names from model.named_modules() instead, "
        f"e.g. {_examples(model)}")


def _examples(model: nn.Module, n: int = 4) -> str:
    names = [k for k, _ in model.named_children()][:n]
    return ", ".join(repr(k) for k in names) or "(the model has no submodules)"


def expand_layers(model: nn.Module, layers: str | Iterable[str]) -> list[str]:
    """Module names from ``layers``: a name, a comma-separated string or a list; ``"stages"`` expands to
    :func:`stage_layers`.
    Duplicates are dropped, the order is kept. The names are checked with :func:`check_layers`."""
    if isinstance(layers, str):
        items = [s.strip() for s in layers.split(",")]
    else:
        items = [str(s).strip() for s in layers]
    if not items or any(not s for s in items):
        raise ErftoolsError(f"layers must be module names (from model.named_modules()); got {layers!r}")
    out: list[str] = []
    for item in items:
        names = stage_layers(model) if item == STAGE_SHORTCUT else [item]
        for n in names:
            if n not in out:
                out.append(n)
    check_layers(model, out)
    return out


def check_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Every name must be a module of ``model`` (not the model itself)."""
    modules = dict(model.named_modules())
    for name in layers:
        if name == "" or name not in modules:
            hint = ""
            if getattr(model, "_erftools_prepared", None) and \
                    model._erftools_prepared.get("structural_reparam"):
                hint = (" The model was prepared for ERF maps by an earlier call (re-parameterised, BNs folded), which "
                        "removes some modules; if the layer was one of them, build the model again and pass "
                        "prepare=False.")
            parent = name
            while "." in parent and parent not in modules:
                parent = parent.rsplit(".", 1)[0]
            if parent in modules and parent != name:
                similar = [f"{parent}.{k}" for k, _ in modules[parent].named_children()][:6]
            else:
                similar = [k for k, _ in model.named_children()][:6]
            raise ErftoolsError(f"{model_name(model)} has no module named {name!r} (layer names come from "
                                f"model.named_modules()); e.g. {', '.join(map(repr, similar)) or _examples(model)}."
                                + hint)


# -------------------------------------------------------------------------------------------------------------
# what preparation changes
# -------------------------------------------------------------------------------------------------------------
def _fingerprint(module: nn.Module) -> tuple:
    own = itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
    fp = []
    for name, t in own:
        if t is None:
            continue
        d = t.detach().double()
        fp.append((name, tuple(t.shape), float(d.sum()), float((d * d).sum())))
    return tuple(sorted(fp))


def _snapshot(model: nn.Module) -> dict:
    return {name: (type(m), id(m), _fingerprint(m)) for name, m in model.named_modules()}


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every parameter and buffer on the CPU (the original is not touched)."""
    memo: dict = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        c = t.detach().to("cpu", copy=True)
        memo[id(t)] = nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else c
    return copy.deepcopy(model, memo)


def _rehearse(shadow: nn.Module, rewrite) -> tuple[dict, dict]:
    before = _snapshot(shadow)
    with torch.no_grad():
        rewrite(shadow)
    return before, _snapshot(shadow)


def preparation_changes(model: nn.Module, rewrite, names: Iterable[str] | None = None) -> dict[str, str]:
    """Which module names ``rewrite(model)`` (the structural part of model preparation) would make denote another
    tensor, or none, with the reason; found on a CPU copy, so ``model`` is not changed.

    A module counts as changed when it disappears, is replaced (another object or type: a BN turned into
    ``nn.Identity``) or its own weights change (a convolution that absorbs a folded BN). A container whose children
    were rewritten keeps its output (re-parameterisation and BN folding are exact for the block as a whole).
    ``names`` limits the answer to those names (all modules by default).
    """
    try:
        before, after = _rehearse(_cpu_copy(model), rewrite)
    except Exception:  # something on the model's own device that the CPU copy cannot use: copy it as it is
        try:
            before, after = _rehearse(copy.deepcopy(model), rewrite)
        except Exception as exc:
            raise ErftoolsError(f"erftools could not check which layers of {model_name(model)} preparing it would "
                                f"change ({exc}); pass prepare=False to measure the layers on the model as given"
                                ) from exc
    wanted = set(before) if names is None else set(names)
    changes = {}
    for name in wanted:
        if name not in before:
            continue
        t0, i0, f0 = before[name]
        if name not in after:
            changes[name] = "removed"
        else:
            t1, i1, f1 = after[name]
            if t1 is not t0 or i1 != i0:
                changes[name] = f"replaced ({t0.__name__} -> {t1.__name__})"
            elif f1 != f0:
                changes[name] = "its weights are rewritten (a BatchNorm is folded into it)"
    return changes


# -------------------------------------------------------------------------------------------------------------
# capturing layer outputs
# -------------------------------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised by the hook of the last requested layer to end the forward pass early."""


class LayerCapture:
    """Forward hooks that record the outputs of ``layers`` (module names) of ``model``.

    ``run(x)`` calls ``model(x)`` and returns ``{name: output}``. With ``stop_early`` the forward pass is ended
    (by an exception that ``run`` catches) as soon as every requested module has produced its output, so nothing
    after the deepest layer is computed. Each output is recorded as a clone (its gradient is the output's own), so
    an in-place operation that follows (an ``inplace=True`` ReLU, ``x += shortcut``) cannot change the captured
    tensor or its autograd history; the model goes on with its own output. ``check_single_call`` (use it on the first batch, with ``stop_early=False``)
    refuses a module that runs more than once in a forward pass (a shared module has no single output).
    Use as a context manager (the hooks are removed on exit).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = list(layers)
        modules = dict(model.named_modules())
        self._handles = []
        self._outputs: dict = {}
        self._calls: dict = {}
        self._stop = False
        for name in self.layers:
            if name not in modules:
                check_layers(model, [name])
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, output):
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] > 1:
                return None
            # a clone: an in-place change of the output later on (which the model goes on using) does not reach it
            self._outputs[name] = output.clone() if isinstance(output, torch.Tensor) else output
            if self._stop and len(self._outputs) == len(self.layers):
                raise _StopForward
            return None
        return hook

    def run(self, x: torch.Tensor, *, stop_early: bool = True, check_single_call: bool = False) -> dict:
        self._outputs, self._calls = {}, {}
        self._stop = stop_early and not check_single_call
        try:
            self.model(x)
        except _StopForward:
            pass
        missing = [n for n in self.layers if n not in self._outputs]
        if missing:
            raise ErftoolsError(f"{model_name(self.model)}: module(s) {', '.join(map(repr, missing))} did not run "
                                "in the forward pass model(x); choose modules that compute the features")
        if check_single_call:
            many = {n: c for n, c in self._calls.items() if c > 1}
            if many:
                n, c = next(iter(many.items()))
                raise ErftoolsError(f"{model_name(self.model)}: module {n!r} runs {c} times in one forward pass (a "
                                    "shared module), so it has no single output; choose a module that runs once")
        out, self._outputs = self._outputs, {}
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "LayerCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

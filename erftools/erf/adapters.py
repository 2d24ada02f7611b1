"""Per-family adapters: which feature map is the ERF's "output", returned as an NCHW tensor.

The paper measures the contribution of every input pixel to the centre of the *last feature map before pooling*:

* RepLKNet (``erftools.models.RepLKNet``): ``forward_features`` (end of stage 4, before the head's BN);
* UniRepLKNet (``erftools.models.unireplknet.UniRepLKNet``): ``forward_features``, the output of the last stage (the
  head mean-pools it and then applies its LayerNorm: there is no pre-pool norm to skip);
* timm ResNet: the output of ``layer4`` (what timm's ``forward_features`` returns);
* timm Swin (v1 and v2): the output of the last stage, ``layers[-1]``, before timm's final LayerNorm, converted from
  NHWC to NCHW (the same place in the network as RepLKNet's: the end of the last stage, before the head's norm);
* any other timm model: ``forward_features``, with the layout handled explicitly: NCHW as is; NHWC (the model says
  ``output_fmt == "NHWC"``) permuted; token sequences (B, N, C) with the model's ``num_prefix_tokens`` dropped and
  the rest reshaped to the patch grid. A pooled (B, C) output, or tokens that do not form a grid, raise an error
  that names the model.

``model_kwargs_for_size(name, size)`` gives the constructor keyword arguments a timm model needs to take a
``size x size`` input (``img_size`` for Swin / ViT-style models; nothing for convolutional networks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .._io import ErftoolsError
from ..models.prepare import timm_class

__all__ = ["FeatureAdapter", "feature_map", "model_kwargs_for_size", "model_name", "to_nchw", "tokens_to_nchw"]


def model_name(model: nn.Module) -> str:
    info = getattr(model, "erftools_info", None)
    if info is not None:
        return info.name
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


@dataclass
class FeatureAdapter:
    """``adapter(x)`` returns the target feature map (B, C, h, w) of ``x`` (B, 3, H, W)."""
    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str  # short id stored in the run record, e.g. "replknet.forward_features"
    description: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _is_replknet(model) -> bool:
    from ..models import RepLKNet

    return isinstance(model, RepLKNet)


def _is_unireplknet(model) -> bool:
    from ..models.unireplknet import UniRepLKNet

    return isinstance(model, UniRepLKNet)


_timm_class = timm_class  # one definition (erftools.models.prepare)


def _swin_stage_output(model):
    """Swin: patch_embed -> layers, skipping the final norm (cheaper than a hook, identical output)."""
    def fn(x):
        return model.layers(model.patch_embed(x)).permute(0, 3, 1, 2)
    return fn


def tokens_to_nchw(y: torch.Tensor, model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """Tokens (B, N, C) -> (B, C, gh, gw): the model's ``num_prefix_tokens`` dropped, the rest reshaped row-major to
    the patch grid (from the patch size and the input size, the embedding's grid, or a square)."""
    name = model_name(model)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    n = y.shape[1] - prefix
    grid = None
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "grid_size", None) is not None:
        gh, gw = embed.grid_size
        sh, sw = (getattr(embed, "patch_size", None) or (None, None))
        if sh and x.shape[-2] // sh * (x.shape[-1] // sw) == n:
            grid = (x.shape[-2] // sh, x.shape[-1] // sw)
        elif gh * gw == n:
            grid = (gh, gw)
    if grid is None:
        r = math.isqrt(n) if n > 0 else 0
        if r * r == n and n > 0:
            grid = (r, r)
    if grid is None:
        raise ErftoolsError(
            f"{name}: {what} returns {y.shape[1]} tokens ({prefix} prefix tokens), which do not "
            "form a patch grid; erftools cannot locate the centre of the feature map of this model")
    tokens = y[:, prefix:]
    return tokens.reshape(y.shape[0], grid[0], grid[1], y.shape[2]).permute(0, 3, 1, 2)


_NCHW_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def to_nchw(y, model: nn.Module, x: torch.Tensor, layer: str, module: nn.Module | None = None) -> torch.Tensor:
    """The output ``y`` of module ``layer`` as an NCHW tensor, with the rules of the final feature map: a 4-D output
    is NCHW, or NHWC when the model says ``output_fmt == "NHWC"`` (timm Swin's stages) unless the module is a
    convolution, BN or pooling layer (always NCHW); tokens (B, N, C) are reshaped to the patch grid
    (:func:`tokens_to_nchw`). Anything else raises an error naming the layer."""
    name = model_name(model)
    if not isinstance(y, torch.Tensor):
        raise ErftoolsError(f"{name}: layer {layer!r} returns {type(y).__name__}, not a tensor; choose a module "
                            "whose output is one feature map (NCHW, NHWC or tokens)")
    if y.ndim == 4:
        fmt = str(getattr(model, "output_fmt", "") or "").upper()
        if fmt == "NHWC" and not isinstance(module, _NCHW_MODULES):
            return y.permute(0, 3, 1, 2)
        return y
    if y.ndim == 3:
        return tokens_to_nchw(y, model, x, f"layer {layer!r}")
    raise ErftoolsError(f"{name}: layer {layer!r} returns a tensor of shape {tuple(y.shape)} (no spatial layout); "
                        "the ERF needs a spatial feature map (NCHW, NHWC or patch tokens)")


def _generic_timm(model) -> Callable:
    name = model_name(model)
    fmt = str(getattr(model, "output_fmt", "") or "").upper()
    num_features = getattr(model, "num_features", None)

    def fn(x):
        y = model.forward_features(x)
        if isinstance(y, (list, tuple)):
            raise ErftoolsError(f"{name}: forward_features returns a list; erftools needs one feature map")
        if y.ndim == 4:
            if fmt == "NHWC" or (fmt != "NCHW" and num_features and y.shape[1] != num_features
                                 and y.shape[-1] == num_features):
                return y.permute(0, 3, 1, 2)
            return y
        if y.ndim == 3:  # tokens (B, N, C)
            return tokens_to_nchw(y, model, x, "forward_features")
        raise ErftoolsError(
            f"{name}: forward_features returns a tensor of shape {tuple(y.shape)} (no spatial layout); the ERF needs "
            "a spatial feature map (NCHW, NHWC or patch tokens)")

    return fn


def feature_map(model: nn.Module) -> FeatureAdapter:
    """The adapter of ``model``: a callable giving the ERF target feature map (NCHW).

    Raises :class:`ErftoolsError` naming the model when it has no usable spatial feature map.
    """
    name = model_name(model)
    if _is_replknet(model):
        if getattr(model, "out_indices", None) is not None:
            raise ErftoolsError(f"{name} was built with out_indices (a dense-task backbone); build it with "
                                "out_indices=None for the ERF")
        return FeatureAdapter(model.forward_features, "replknet.forward_features",
                              "RepLKNet forward_features: end of stage 4, before the head's BN")
    if _is_unireplknet(model):
        return FeatureAdapter(model.forward_features, "unireplknet.forward_features",
                              "UniRepLKNet forward_features: output of the last stage (the head mean-pools it, then "
                              "applies its LayerNorm)")
    if _timm_class(model, "resnet", "ResNet"):
        return FeatureAdapter(model.forward_features, "timm.resnet.layer4",
                              "ResNet: output of layer4 (timm forward_features)")
    if _timm_class(model, "swin_transformer", "SwinTransformer") or \
            _timm_class(model, "swin_transformer_v2", "SwinTransformerV2"):
        if hasattr(model, "patch_embed") and hasattr(model, "layers"):
            return FeatureAdapter(_swin_stage_output(model), "timm.swin.layers[-1]",
                                  "Swin: output of the last stage (before the final norm), NHWC -> NCHW")
    if type(model).__module__.startswith("timm.") or hasattr(model, "forward_features"):
        if not hasattr(model, "forward_features"):
            raise ErftoolsError(f"{name} has no forward_features; pass feature_fn= to compute_erf")
        return FeatureAdapter(_generic_timm(model), "timm.forward_features",
                              "forward_features with its layout made NCHW (NHWC permuted, prefix tokens dropped)")
    raise ErftoolsError(
        f"erftools does not know which feature map of {name} ({type(model).__name__}) to use: it has no "
        "forward_features. Pass feature_fn=callable(x) -> NCHW tensor to compute_erf")


def model_kwargs_for_size(name: str, size: int) -> dict:
    """Constructor keyword arguments that let model ``name`` take a ``size x size`` input.

    RepLKNet and plain CNNs take any size; timm models with a fixed patch grid (Swin, ViT, ...) are rebuilt with
    ``img_size=size`` (timm pads Swin's windows when the grid is not a multiple of the window, e.g. 32 / 7 at 1024,
    and resamples a ViT's position embedding when it loads pretrained weights).
    """
    from ..models import resolve

    entry, tag = resolve(name)
    if entry.family != "timm":
        return {}
    import timm

    arch = entry.arch
    try:
        with torch.device("meta"):
            timm.create_model(arch, pretrained=False, img_size=size)
    except TypeError:
        return {}
    except Exception:  # pragma: no cover - architecture that cannot be built on meta: try the real thing later
        return {"img_size": size}
    return {"img_size": size}

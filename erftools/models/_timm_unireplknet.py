"""UniRepLKNet as a timm model: ``timm.create_model('unireplknet_s.in22k_ft_in1k_384')`` after ``import erftools``.

Every variant of the registry is registered as ``unireplknet_<variant>`` (``unireplknet_a`` .. ``unireplknet_xl``),
built by ``timm.models.build_model_with_cfg`` as RepLKNet is (:mod:`erftools.models._timm`): ``features_only``,
``out_indices``, ``pretrained_cfg_overlay``, ``num_classes``, ``in_chans``, ``global_pool``, TorchScript and FX follow
timm's conventions. Each published file is a pretrained tag (``in1k``, ``in22k``, ``in22k_ft_in1k_384``); the
preprocessing is the official evaluation transform (bicubic, crop_pct 0.875 below 384 px, a plain resize at 384).

``pretrained=True`` downloads the Hugging Face file through erftools' downloader (cached, resumable, SHA-256 checked
against the hub's LFS hash; an unpinned file warns). A ``file`` in ``pretrained_cfg_overlay`` is read offline in every
layout erftools reads (bare or ``model``-wrapped, ``module.``, OpenMMLab ``backbone.``, training or deploy structure).
"""
from __future__ import annotations

import warnings

from timm.models import build_model_with_cfg, generate_default_cfgs, resolve_pretrained_cfg

from .._io import ErftoolsError
from ._registry import REGISTRY, ModelEntry, WeightSource
from ._timm import register_entrypoints, require_same_keys, timm_name, timm_tag, use_downloaded
from ._weights import unwrap_state_dict
from .unireplknet import CONFIGS, UniRepLKNet
from .unireplknet_weights import (CROP_PCT_BELOW_384, LICENSE, convert_unireplknet_keys, is_deploy_state_dict,
                                  num_classes_of)

__all__ = ["default_cfgs", "checkpoint_filter_fn"]

PAPER_NAME = ("UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series "
              "and Image Recognition")
PAPER_IDS = "arXiv:2311.15599"
ORIGIN_URL = "https://github.com/AILab-CVC/UniRepLKNet"

def _pretrained_cfg(entry: ModelEntry, source: WeightSource | None) -> dict:
    size = (source.input_size if source is not None and source.input_size else None) or entry.preprocessing.input_size
    classes = num_classes_of(entry.name, source.tag) if source is not None else None
    notes = (source.description, f"Hugging Face hub file, sha256 {source.sha256 or 'not pinned'}") if source else ()
    pre = entry.preprocessing
    return dict(url=source.url if source is not None else "", num_classes=classes or 1000,
                input_size=(3, size, size), pool_size=(size // 32, size // 32),
                crop_pct=CROP_PCT_BELOW_384 if size < 384 else 1.0, interpolation=pre.interpolation,
                mean=tuple(pre.mean), std=tuple(pre.std), first_conv="downsample_layers.0.0", classifier="head",
                license=LICENSE, paper_name=PAPER_NAME, paper_ids=PAPER_IDS, origin_url=ORIGIN_URL,
                description=entry.description, notes=notes or None)


_VARIANTS = {timm_name(e.name): e for e in REGISTRY.values() if e.family == "unireplknet"}
_SOURCES: dict[tuple[str, str], WeightSource] = {}
_cfgs: dict[str, dict] = {}
for _variant, _entry in _VARIANTS.items():
    for _src in sorted(_entry.weights, key=lambda w: w.tag != _entry.default_weights):  # the default first
        _SOURCES[(_variant, timm_tag(_src.tag))] = _src
        _cfgs[f"{_variant}.{timm_tag(_src.tag)}"] = _pretrained_cfg(_entry, _src)
default_cfgs = generate_default_cfgs(_cfgs)


def checkpoint_filter_fn(state_dict: dict, model: UniRepLKNet) -> dict:
    """Any layout erftools reads -> the keys of ``model`` (timm's ``pretrained_filter_fn``); a deploy-structure file
    re-parameterises a training-structure ``model`` first, so that it loads exactly."""
    sd = convert_unireplknet_keys(unwrap_state_dict(state_dict, "the pretrained checkpoint"))
    if is_deploy_state_dict(sd) and not model.is_reparameterized:
        model.eval().structural_reparam()
    elif not is_deploy_state_dict(sd) and model.is_reparameterized:
        raise ErftoolsError("the checkpoint is in the training structure but the model was built with deploy=True; "
                            "build it without deploy and call model.structural_reparam() after loading")
    return require_same_keys(model, sd)


def _resolve_weights_file(variant: str, kwargs: dict) -> None:
    """``pretrained=True`` from a URL: download with erftools' hash check and hand timm the local file."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if cfg.file or cfg.state_dict or cfg.hf_hub_id:
        return
    if not cfg.url:
        raise ErftoolsError(f"{variant} has no published weights under that tag; use pretrained=False, or pass a "
                            "checkpoint with pretrained_cfg_overlay=dict(file=PATH)")
    src = _SOURCES.get((variant, cfg.tag or ""))
    sha = src.sha256 if src is not None and src.url == cfg.url else None
    if sha is None:
        warnings.warn(f"{variant}.{cfg.tag}: no published SHA-256 is pinned for {cfg.url}; downloaded unverified",
                      stacklevel=3)
    use_downloaded(str(cfg.url), sha, kwargs)


def _create(variant: str, pretrained: bool = False, **kwargs) -> UniRepLKNet:
    if pretrained:
        _resolve_weights_file(variant, kwargs)
    return build_model_with_cfg(UniRepLKNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
                                **dict(CONFIGS[_VARIANTS[variant].arch], **kwargs))


register_entrypoints(_create, _VARIANTS, globals())

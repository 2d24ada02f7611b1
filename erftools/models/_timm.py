"""RepLKNet as a timm model: ``timm.create_model('replknet_31b.in1k')`` works after ``import erftools``.

Every variant of erftools' registry is registered with timm as ``replknet_<variant>`` (``replknet_31b``,
``replknet_xl`` ...), built by ``timm.models.build_model_with_cfg`` like timm's own models, so ``features_only``,
``out_indices``, ``pretrained_cfg_overlay``, ``num_classes``, ``in_chans``, ``global_pool``, ``device``/``dtype`` and
TorchScript / FX all follow timm's conventions. Each weight source of the registry is a pretrained tag
(``in1k``, ``in22k_ft_in1k_384`` ...; the registry's ``-`` becomes ``_``).

``pretrained=True`` downloads the OpenMMLab mirror file through erftools' downloader, which checks the file's sha256
(the 8 hex digits in the file name, as torch hub names files); a ``file`` in ``pretrained_cfg_overlay`` is loaded
offline in any layout erftools reads (official, OpenMMLab, wrapped, ``module.``-prefixed, safetensors, training-time
or re-parameterised).
"""
from __future__ import annotations


from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from .._io import ErftoolsError
from ._registry import REGISTRY, ModelEntry, WeightSource
from ._weights import convert_replknet_keys, describe_mismatch, fetch_url, is_reparameterized, unwrap_state_dict
from .replknet import CONFIGS, DepthwiseConv2d, RepLKNet, ScriptableDepthwiseConv2d

__all__ = ["default_cfgs", "checkpoint_filter_fn", "timm_name", "timm_tag"]

PAPER_NAME = "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs"
PAPER_IDS = "arXiv:2203.06717"
ORIGIN_URL = "https://github.com/DingXiaoH/RepLKNet-pytorch"
MIRROR_URL = "https://github.com/open-mmlab/mmpretrain/tree/main/configs/replknet"
LICENSE = "mit"  # the official code and weights

# FX: trace around the large depthwise convolutions (their backend dispatch is not symbolic), as timm does for its
# own custom layers; torchvision's feature extraction and timm's FX helpers then keep them as leaf modules.
register_notrace_module(DepthwiseConv2d)
register_notrace_module(ScriptableDepthwiseConv2d)


def timm_name(name: str) -> str:
    """The timm model name of a registry name: ``replknet-31B`` -> ``replknet_31b``."""
    return name.lower().replace("-", "_")


def timm_tag(tag: str) -> str:
    """The timm pretrained tag of a registry weight tag: ``in22k-ft-in1k-384`` -> ``in22k_ft_in1k_384``."""
    return tag.lower().replace("-", "_")


def _pretrained_cfg(entry: ModelEntry, source: WeightSource | None) -> dict:
    pre = entry.preprocessing
    size = (source.input_size if source is not None and source.input_size else None) or pre.input_size
    notes = []
    if source is not None:
        notes.append(source.description)
        if source.url:
            notes.append(f"OpenMMLab mirror of the official weights ({MIRROR_URL}), sha256 {source.sha256}... "
                         "(checked on download)")
        if source.manual:
            notes.append(f"not downloadable automatically: download {source.manual} and pass "
                         "pretrained_cfg_overlay=dict(file=PATH)")
    return dict(
        url=source.url if source is not None and source.url else "",
        num_classes=1000, input_size=(3, size, size), pool_size=(size // 32, size // 32),
        # OpenMMLab's test pipelines: short side to 256 then a 224 centre crop; the 320/384 models resize only
        crop_pct=0.875 if size <= 224 else 1.0, interpolation=pre.interpolation, mean=tuple(pre.mean),
        std=tuple(pre.std), first_conv="stem.0.conv", classifier="head", license=LICENSE,
        paper_name=PAPER_NAME, paper_ids=PAPER_IDS, origin_url=ORIGIN_URL,
        description=entry.description, notes=tuple(notes) or None)


def _variants() -> dict[str, ModelEntry]:
    return {timm_name(e.name): e for e in REGISTRY.values() if e.family == "replknet"}


_VARIANTS = _variants()
_SOURCES: dict[tuple[str, str], WeightSource] = {}
_cfgs: dict[str, dict] = {}
for _variant, _entry in _VARIANTS.items():
    # the registry's default weights first: generate_default_cfgs makes the first tag with weights the default
    _ordered = sorted(_entry.weights, key=lambda w: w.tag != _entry.default_weights)
    for _src in _ordered:
        _SOURCES[(_variant, timm_tag(_src.tag))] = _src
        _cfgs[f"{_variant}.{timm_tag(_src.tag)}"] = _pretrained_cfg(_entry, _src)
    if not _ordered:
        _cfgs[_variant] = _pretrained_cfg(_entry, None)
default_cfgs = generate_default_cfgs(_cfgs)


def checkpoint_filter_fn(state_dict: dict, model: RepLKNet) -> dict:
    """Any checkpoint layout erftools reads -> the official keys of ``model`` (timm's ``pretrained_filter_fn``).

    A re-parameterised checkpoint re-parameterises a training-time ``model`` first, so that it loads exactly.
    """
    sd = convert_replknet_keys(unwrap_state_dict(state_dict, "the pretrained checkpoint"))
    if is_reparameterized(sd) and not model.is_reparameterized:
        model.structural_reparam()
    elif not is_reparameterized(sd) and any(".lkb_origin." in k for k in sd) and model.is_reparameterized:
        raise ErftoolsError("the checkpoint holds training-time (lkb_origin/small_conv) weights but the model was "
                            "built with small_kernel_merged=True; build it without small_kernel_merged and call "
                            "model.structural_reparam() after loading")
    return require_same_keys(model, sd)


def require_same_keys(model, sd: dict) -> dict:
    """``sd`` when it holds ``model``'s keys, else an error naming the missing and unexpected ones. The classifier
    is not compared: timm drops or replaces it when ``num_classes`` differs from the checkpoint's."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith("head.")]
    unexpected = [k for k in sd if k not in own and not k.startswith("head.")]
    if missing or unexpected:
        raise ErftoolsError(f"the pretrained checkpoint does not match {type(model).__name__} "
                            f"({getattr(model, 'pretrained_cfg', {}).get('architecture', '?')}): "
                            f"{describe_mismatch(missing, unexpected)}. Check the variant and its keyword arguments.")
    return sd


def use_downloaded(url: str, sha256: str | None, kwargs: dict) -> None:
    """Download ``url`` through erftools (cached, resumable, hash-checked) and hand timm the local file."""
    path = fetch_url(url, sha256, cache_dir=kwargs.get("cache_dir"),
                     offline_hint="Offline, pass a local file: timm.create_model(name, pretrained=True, "
                                  "pretrained_cfg_overlay=dict(file=PATH)).")
    kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(path))


def register_entrypoints(create, variants: dict, namespace: dict) -> None:
    """One timm entry point per variant, ``create(variant, pretrained, **kwargs)``, defined in and exported from the
    module whose globals are ``namespace``, and registered with timm."""
    for variant, entry in variants.items():
        fn = _entrypoint(create, variant, entry, namespace["__name__"])
        namespace[variant] = fn
        namespace["__all__"].append(variant)
        register_model(fn)


def _entrypoint(create, variant: str, entry: ModelEntry, module: str):
    def entrypoint(pretrained: bool = False, **kwargs):
        return create(variant, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = module
    entrypoint.__doc__ = f"{entry.description} (erftools)"
    return entrypoint


def _resolve_weights_file(variant: str, kwargs: dict) -> None:
    """For ``pretrained=True`` from a URL: download it with erftools' hash check and hand timm the local file."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if cfg.file or cfg.state_dict or cfg.hf_hub_id:
        return
    src = _SOURCES.get((variant, cfg.tag or ""))
    if cfg.url:
        sha = src.sha256 if src is not None and src.url == cfg.url else None  # else: from the file name
        use_downloaded(str(cfg.url), sha, kwargs)
    elif src is not None and src.manual:
        raise ErftoolsError(f"the {src.description} weights of {variant} are only on Google Drive/Baidu "
                            f"({src.manual}) and cannot be fetched automatically: download the file and pass "
                            "pretrained_cfg_overlay=dict(file=PATH)")
    else:
        raise ErftoolsError(f"{variant} has no published pretrained weights; use pretrained=False, or pass a "
                            "checkpoint with pretrained_cfg_overlay=dict(file=PATH)")


def _create_replknet(variant: str, pretrained: bool = False, **kwargs) -> RepLKNet:
    entry = _VARIANTS[variant]
    if "in_channels" in kwargs:  # the official argument name; timm's is in_chans
        kwargs.setdefault("in_chans", kwargs.pop("in_channels"))
    if pretrained:
        _resolve_weights_file(variant, kwargs)
    model_args = dict(CONFIGS[entry.arch], **kwargs)
    return build_model_with_cfg(
        RepLKNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **model_args)


register_entrypoints(_create_replknet, _VARIANTS, globals())

"""Registration of the RepLKNet variants with timm: ``timm.create_model('replknet_31b')`` works after
``import erftools``. ``pretrained=True`` goes through erftools' weight sources (with their hash checks)."""
from __future__ import annotations

from timm.models import register_model

from ._registry import REGISTRY

default_cfgs: dict[str, dict] = {}
__all__: list[str] = []


def _timm_name(name: str) -> str:
    return name.lower().replace("-", "_")


def _make_entrypoint(entry):
    def entrypoint(pretrained: bool = False, **kwargs):
        from . import create_model

        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        kwargs.pop("cache_dir", None)
        model = create_model(entry.name, weights="pretrained" if pretrained else None, **kwargs)
        model.pretrained_cfg = dict(default_cfgs[_timm_name(entry.name)])
        model.default_cfg = model.pretrained_cfg
        return model

    entrypoint.__name__ = _timm_name(entry.name)
    entrypoint.__qualname__ = entrypoint.__name__
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{entry.description} (erftools)"
    return entrypoint


for _entry in {e.name: e for e in REGISTRY.values() if e.family == "replknet"}.values():
    _pre = _entry.preprocessing
    _src = _entry.weight_source()
    default_cfgs[_timm_name(_entry.name)] = dict(
        url=(_src.url if _src is not None and _src.url else ""), num_classes=1000,
        input_size=(3, _pre.input_size, _pre.input_size), pool_size=(_pre.input_size // 32,) * 2,
        crop_pct=1.0 if _pre.input_size > 224 else 0.875, interpolation=_pre.interpolation,
        mean=tuple(_pre.mean), std=tuple(_pre.std), first_conv="stem.0.conv", classifier="head",
        architecture=_timm_name(_entry.name))
    _fn = _make_entrypoint(_entry)
    globals()[_fn.__name__] = _fn
    register_model(_fn)

"""Models: the RepLKNet family and any timm model, behind one ``create_model``.

``create_model(name, weights=None, **kwargs)`` returns an ``nn.Module`` in eval mode with an ``erftools_info``
attribute (:class:`ModelInfo`: name, family, preprocessing, weights source and sha256). ``weights`` is one of
``None``/``"random"`` (random initialisation), ``"pretrained"`` (the registry's default source), a weight tag of the
registry entry (``"in22k-ft-in1k"``), a local file path, or an ``http(s)://`` URL.
"""
from __future__ import annotations

import logging

from ._registry import ModelEntry, Preprocessing, list_models, registry_entries, resolve
from ._weights import hub_checkpoint_path
from .create import create_model, resolve_weights
from .info import ModelInfo, count_parameters, get_model_info
from .replknet import RepLKNet

log = logging.getLogger(__name__)

__all__ = ["create_model", "list_models", "get_model_info", "ModelInfo", "Preprocessing", "RepLKNet", "resolve",
           "registry_entries", "is_cached", "count_parameters", "resolve_weights"]


def is_cached(entry: ModelEntry, tag: str | None = None) -> bool | None:
    """Whether the entry's (default) downloadable weights are already in the local cache (None: not downloadable)."""
    src = entry.weight_source(tag)
    if src is None or not src.downloadable:
        return None
    if src.url:
        return hub_checkpoint_path(src.url).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(src.hf_hub_id, fname)
            if isinstance(hit, str):
                return True
    except Exception:  # pragma: no cover
        return None
    return False


def _register_with_timm() -> None:
    """Make ``timm.create_model('replknet_31b')``, ``timm.create_model('unireplknet_s')`` (and the other variants)
    work."""
    from . import _timm, _timm_unireplknet  # noqa: F401  (registration happens at import)


try:
    _register_with_timm()
except Exception as _exc:  # pragma: no cover - timm API drift must not break erftools
    log.debug("could not register RepLKNet with timm: %s", _exc)

"""Building a model: :func:`create_model` and where its weights come from (:func:`resolve_weights`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .._io import ErftoolsError
from ._registry import ModelEntry, Preprocessing, WeightSource, replace_preprocessing, resolve
from ._weights import convert_replknet_keys, fetch_url, file_digest, is_reparameterized, load_into, read_checkpoint
from .info import ModelInfo, count_parameters
from .replknet import CONFIGS, RepLKNet

__all__ = ["create_model", "resolve_weights"]


def _offline_hint(entry: ModelEntry) -> str:
    return (f"Pass a local checkpoint with weights=PATH (--weights PATH), or weights='random' for an untrained "
            f"{entry.name}.")


def create_model(name: str, weights: str | os.PathLike | None = None, *, reparam: bool = False,
                 num_classes: int | None = None, conv_backend: str | None = None, **kwargs) -> torch.nn.Module:
    """Build a registered model (or any timm model) and load its weights.

    Args:
        name: a registry name (``replknet-31B``, ``resnet-152``, ``swin-B``, ...; case-insensitive), any timm name, or
            ``openclip:ARCH`` (an open_clip model, :mod:`erftools.models.openclip`; needs ``erftools[clip]``).
        weights: ``None``/``"random"``, ``"pretrained"``, a registry weight tag, a local file or a URL (for
            ``openclip:`` models: an open_clip pretrained tag, a local file or ``"random"``).
        reparam: for RepLKNet, merge the small-kernel branches after loading (``structural_reparam()``).
        num_classes: override the number of classes (default: the checkpoint's, else 1000).
        conv_backend: for RepLKNet, the large-kernel convolution backend (``auto``, ``native``, ``fft``, ``triton``).
        **kwargs: passed to the architecture's constructor (RepLKNet keyword arguments, or timm's ``img_size`` ...).
    """
    if isinstance(name, str) and name.strip().lower().startswith("openclip:"):
        from .openclip import create_openclip

        return create_openclip(name, weights, **kwargs)
    entry, name_tag = resolve(name)
    source, path, label = resolve_weights(entry, weights, name_tag)
    if entry.family in ("replknet", "unireplknet"):
        model = _create_replknet(entry, path, num_classes, **kwargs)
        if reparam:
            model.eval()
            model.structural_reparam()
        if conv_backend:
            model.set_conv_backend(conv_backend)
    else:
        model = _create_timm(entry, source, path, num_classes, name_tag, **kwargs)
    pre = replace_preprocessing(entry, source)
    if entry.family == "timm" and getattr(model, "pretrained_cfg", None):
        cfg = model.pretrained_cfg
        pre = Preprocessing(tuple(cfg.get("mean", pre.mean)), tuple(cfg.get("std", pre.std)),
                            cfg.get("interpolation", pre.interpolation) or "bicubic",
                            int((cfg.get("input_size") or (3, pre.input_size, pre.input_size))[-1]))
    digest = file_digest(path) if path is not None else None
    model.erftools_info = ModelInfo(entry.name, entry.family, entry.arch, pre, label, digest, count_parameters(model))
    return model.eval()


def resolve_weights(entry: ModelEntry, weights: str | os.PathLike | None, name_tag: str | None = None
                    ) -> tuple[WeightSource | None, Path | None, str]:
    """Where ``weights`` come from, for the registry entry ``entry``: ``(registry source or None, local file or None,
    the label recorded)``. ``None``/``"random"``: none; ``"pretrained"`` or a weight tag: the registry's source
    (downloaded and verified when it has a URL; the hub's are fetched by timm); a URL: downloaded; else a local file.
    The one weight-resolution path (the timm integration downloads through the same :func:`fetch_url`)."""
    weights = "random" if weights is None else weights
    weights = str(weights) if isinstance(weights, Path) else weights
    source: WeightSource | None = None
    path: Path | None = None
    label = weights
    if weights == "pretrained" or (isinstance(weights, str) and entry.weight_source(weights) is not None
                                   and not os.path.exists(weights)):
        tag = name_tag if weights == "pretrained" else weights
        source = entry.weight_source(tag)
        if source is None and weights == "pretrained" and not name_tag:
            source = next((w for w in entry.weights if w.manual), None)
        if source is None:
            raise ErftoolsError(f"{entry.name} has no published pretrained weights in erftools' registry. "
                                + _offline_hint(entry))
        label = f"pretrained:{source.tag}"
        if source.manual and not source.downloadable:
            raise ErftoolsError(
                f"the {source.description} weights of {entry.name} are only on Google Drive/Baidu ({source.manual}) "
                "and cannot be fetched automatically: download the file and pass its path with --weights PATH.")
        if source.url and not source.sha256:
            import warnings

            warnings.warn(f"{entry.name} {source.tag}: no published SHA-256 is pinned for {source.url}; the file is "
                          "downloaded unverified (its own digest is recorded with the results)", stacklevel=2)
        if source.url:
            path = fetch_url(source.url, source.sha256)
    elif isinstance(weights, str) and weights.startswith(("http://", "https://")):
        path = fetch_url(weights)
        label = weights
    elif weights != "random":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ErftoolsError(f"weights {weights!r} are neither 'random', 'pretrained', a weight tag of "
                                f"{entry.name} ({', '.join(w.tag for w in entry.weights) or 'none'}), a URL, nor an "
                                "existing file")
        label = str(path)
    return source, path, label


def _create_replknet(entry: ModelEntry, path: Path | None, num_classes: int | None, **kwargs) -> RepLKNet:
    if entry.family == "unireplknet":
        from .unireplknet import create_unireplknet

        sd = read_checkpoint(path) if path is not None else None
        return create_unireplknet(entry.arch, sd, str(path), num_classes, **kwargs)
    sd = None
    if path is not None:
        sd = convert_replknet_keys(read_checkpoint(path))
        if is_reparameterized(sd):
            kwargs.setdefault("small_kernel_merged", True)
        if num_classes is None and "head.weight" in sd:
            num_classes = int(sd["head.weight"].shape[0])
    cfg = dict(CONFIGS[entry.arch])
    cfg.update(kwargs)
    cfg["num_classes"] = 1000 if num_classes is None else num_classes
    model = RepLKNet(**cfg)
    if sd is not None:
        load_into(model, sd, str(path), entry.name)
    return model


def _refuse_unreachable_hub(entry: ModelEntry, source: WeightSource, tagged: str) -> None:
    """Fail in seconds, not after huggingface_hub's minute of retries, when the file is not cached and the hub cannot
    be reached (:func:`erftools._download.hub_unreachable_reason`)."""
    from . import is_cached
    from .._download import hub_unreachable_reason

    if is_cached(entry, source.tag) is False and (why := hub_unreachable_reason()):
        raise ErftoolsError(f"could not get the pretrained weights {tagged} from the Hugging Face hub ({why}) and "
                            f"they are not in the cache. Connect this machine to the network, or "
                            + _offline_hint(entry)[0].lower() + _offline_hint(entry)[1:])


def _create_timm(entry: ModelEntry, source: WeightSource | None, path: Path | None, num_classes: int | None,
                 name_tag: str | None, **kwargs) -> torch.nn.Module:
    import timm

    arch = entry.arch
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if source is not None and source.hf_hub_id:  # pretrained through timm / the HF hub
        tagged = f"{arch}.{source.tag}" if source.tag else arch
        _refuse_unreachable_hub(entry, source, tagged)
        try:
            return timm.create_model(tagged, pretrained=True, **kwargs)
        except Exception as exc:
            raise ErftoolsError(
                f"could not get the pretrained weights {tagged} from the Hugging Face hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Offline, with nothing cached, "
                + _offline_hint(entry)) from exc
    model = timm.create_model(f"{arch}.{name_tag}" if name_tag else arch, pretrained=False, **kwargs)
    if path is not None:
        sd = read_checkpoint(path)
        try:
            load_into(model, sd, str(path), entry.name)
        except ErftoolsError:
            filt = getattr(__import__(type(model).__module__, fromlist=["_"]), "checkpoint_filter_fn", None)
            if filt is None:
                raise
            try:
                converted = filt(sd, model)
            except Exception:
                raise ErftoolsError(f"the checkpoint {path} does not match {entry.name}") from None
            load_into(model, converted, str(path), entry.name)
    return model

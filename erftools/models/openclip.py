"""open_clip vision-language models behind erftools' model interface: ``openclip:ARCH`` names.

``create_openclip("openclip:ViT-B-32", weights)`` builds the open_clip model ``ViT-B-32`` (any name of
``open_clip.list_models()``, registered configs included) and returns an :class:`OpenClipModel`: both towers, the
tokenizer open_clip pairs with the architecture, and open_clip's own inference transform for those weights.
``weights`` is an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...; see
``open_clip.list_pretrained_tags_by_model``), a local checkpoint (loaded by open_clip with
``torch.load(weights_only=True)``, or safetensors) or ``random``. A tag trained with QuickGELU (the OpenAI weights)
gets a QuickGELU model, as open_clip's ``-quickgelu`` configs do: a plain config with those weights computes other
features.

open_clip is optional (``pip install 'erftools[clip]'``); it is imported only when an ``openclip:`` model is built.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .._io import ErftoolsError
from ._registry import ModelEntry, Preprocessing

PREFIX = "openclip:"
INSTALL_HINT = "pip install 'erftools[clip]'"


def is_openclip_name(name) -> bool:
    return isinstance(name, str) and name.strip().lower().startswith(PREFIX)


def require_open_clip():
    """The ``open_clip`` module, or an error saying how to install it."""
    try:
        import open_clip
    except ImportError as exc:
        raise ErftoolsError(f"openclip: models need the open-clip-torch package, which is not installed "
                            f"({exc}). Install it with: {INSTALL_HINT}") from exc
    return open_clip


def openclip_arch(name: str) -> str:
    """``openclip:ViT-B-32`` -> ``ViT-B-32``, checked against open_clip's model configs (with close matches)."""
    arch = name.strip()[len(PREFIX):].strip()
    open_clip = require_open_clip()
    known = open_clip.list_models()
    if arch in known:
        return arch
    import difflib

    close = difflib.get_close_matches(arch, known, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
    raise ErftoolsError(f"unknown open_clip architecture {arch!r}.{hint} open_clip.list_models() lists them "
                        "(a custom config is registered with open_clip.add_model_config)")


def openclip_entry(name: str) -> ModelEntry:
    """The registry-style entry of an ``openclip:ARCH`` name (for folder names and listings)."""
    arch = openclip_arch(name)
    return ModelEntry(PREFIX + arch, "openclip", arch, description=f"open_clip {arch} (zero-shot)")


class OpenClipModel(torch.nn.Module):
    """An open_clip model: ``forward(x)`` is the L2-normalised image embedding of normalised images ``x``.

    ``encode_text(tokens)`` the L2-normalised text embeddings, ``tokenize(texts)`` open_clip's tokenizer,
    ``image_transform`` open_clip's inference transform without its Normalize (PIL image -> [0, 1] tensor; the mean/std
    are in ``erftools_info.preprocessing``), ``logit_scale`` the learned temperature (``exp`` applied).
    """

    def __init__(self, clip: torch.nn.Module, tokenizer, image_transform):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_transform = image_transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x, normalize=True)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=True)

    def tokenize(self, texts) -> torch.Tensor:
        return self.tokenizer(list(texts))

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.detach().exp().reshape(-1)[0])


def _resolve_weights(open_clip, arch: str, weights) -> tuple[str | None, str | None, Path | None]:
    """(what open_clip's ``pretrained`` gets, the tag, the local file) for erftools' ``weights`` value."""
    weights = "random" if weights is None else str(weights)
    if weights.startswith("pretrained:"):  # the label a record gives the weights
        weights = weights[len("pretrained:"):]
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights == "random":
        return None, None, None
    if weights in tags and not os.path.exists(weights):
        return weights, weights, None
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path), None, path
    listed = ", ".join(tags) if tags else "none (this architecture has no published weights in open_clip)"
    raise ErftoolsError(f"weights {weights!r} for {PREFIX}{arch} are neither an open_clip pretrained tag, an "
                        f"existing checkpoint file, nor 'random'. Tags of {arch}: {listed}")


def _refuse_unreachable_hub(cfg_tag: dict, cache_dir, arch: str, tag: str | None) -> None:
    """Fail in seconds, not after huggingface_hub's minute of retries, when a tag's file is on the Hugging Face hub,
    not in the cache, and the hub cannot be reached (:func:`erftools._download.hub_unreachable_reason`)."""
    hub = cfg_tag.get("hf_hub")
    if not hub:
        return  # a URL (open_clip's own download fails at once offline)
    from .._download import hub_unreachable_reason

    if hub.endswith("/"):  # a repository: open_clip's default file names
        model_id, names = hub.rstrip("/"), ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    else:
        model_id, filename = os.path.split(hub)
        names = [filename]
    try:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(model_id, n, cache_dir=cache_dir), str) for n in names):
            return
    except Exception:  # noqa: BLE001 - no cache to look in: let open_clip try
        return
    why = hub_unreachable_reason()
    if why:
        raise ErftoolsError(f"could not get the open_clip weights {tag!r} of {PREFIX}{arch} from the Hugging Face hub "
                            f"({why}) and they are not in the cache. Connect this machine to the network, or pass a "
                            "local checkpoint with --weights PATH, or --weights random")


def _without_normalize(transform):
    """open_clip's inference Compose without its Normalize step (erftools normalises on the device)."""
    from torchvision.transforms import Compose, Normalize

    steps = [t for t in getattr(transform, "transforms", [transform]) if not isinstance(t, Normalize)]
    return Compose(steps)


def create_openclip(name: str, weights=None, *, cache_dir: str | None = None, **kwargs) -> OpenClipModel:
    """Build ``openclip:ARCH`` with ``weights`` (tag, file or ``random``); ``kwargs`` go to open_clip's
    ``create_model_and_transforms`` (e.g. ``embed_dim``, ``vision_cfg``, ``text_cfg`` to override the config)."""
    from .info import ModelInfo, count_parameters
    from ._weights import file_digest

    open_clip = require_open_clip()
    arch = openclip_arch(name)
    pretrained, tag, path = _resolve_weights(open_clip, arch, weights)
    cfg_tag = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    _refuse_unreachable_hub(cfg_tag, cache_dir, arch, tag)
    quick_gelu = bool(cfg_tag.get("quick_gelu")) or bool((open_clip.get_model_config(arch) or {}).get("quick_gelu"))
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, weights_only=True, force_quick_gelu=quick_gelu, cache_dir=cache_dir,
            **kwargs)
    except ErftoolsError:
        raise
    except Exception as exc:
        what = f"the pretrained weights {tag!r}" if tag else (f"the checkpoint {path}" if path else "the model")
        raise ErftoolsError(f"open_clip could not build {PREFIX}{arch} with {what} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}). Offline, a tag needs its "
                            "weights in the Hugging Face cache; pass a local checkpoint with --weights PATH, or "
                            "--weights random") from exc
    try:
        tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except Exception as exc:
        raise ErftoolsError(f"open_clip could not build the tokenizer of {arch} ({type(exc).__name__}: "
                            f"{str(exc)[:300]}); tokenizers other than open_clip's bundled BPE need the Hugging Face "
                            "hub once") from exc
    pp = dict(clip.visual.preprocess_cfg)
    size = pp["size"] if isinstance(pp["size"], int) else int(max(pp["size"]))
    pre = Preprocessing(tuple(float(v) for v in pp["mean"]), tuple(float(v) for v in pp["std"]),
                        str(pp["interpolation"]), int(size))
    if tag:
        label = f"pretrained:{tag}"
        digest = _tag_digest(open_clip, cfg_tag, cache_dir, file_digest)
    else:
        label = "random" if path is None else str(path)
        digest = file_digest(path) if path is not None else None
    model = OpenClipModel(clip.eval(), tokenizer, _without_normalize(preprocess))
    transform_steps = [repr(t).replace("\n", " ") for t in model.image_transform.transforms]
    model.erftools_info = ModelInfo(
        PREFIX + arch, "openclip", arch, pre, label, digest, count_parameters(model),
        extra={"open_clip": open_clip.__version__, "pretrained_tag": tag, "quick_gelu": quick_gelu,
               "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in pp.items()},
               "transform": transform_steps + [f"Normalize(mean={list(pre.mean)}, std={list(pre.std)})"],
               "tokenizer": type(tokenizer).__name__,
               "context_length": int(getattr(tokenizer, "context_length", 0) or 0) or None})
    return model.eval()


def _tag_digest(open_clip, cfg_tag: dict, cache_dir, file_digest) -> str | None:
    """The sha256 of the file open_clip downloaded for a tag (already in its cache), when it can be found."""
    try:
        found = open_clip.download_pretrained(cfg_tag, cache_dir=cache_dir)
    except Exception:  # pragma: no cover - the model was just built from this file
        return None
    return file_digest(found) if found and Path(found).is_file() else None

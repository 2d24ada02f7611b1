"""Zero-shot decisions of vision-language models (open_clip) on the cue-conflict stimuli (Gavrikov et al., ICLR 2025).

The protocol (that of ``paulgavrikov/vlm_shapebias``, ``code/eval_clip.py``, with CLIP's prompt ensembling):

1. **Text classifier.** For each of the 16 categories ``c`` (text: the category's name as the stimuli spell it,
   :data:`CLASS_NAMES`) and each template ``t`` of the prompt set (default: the 80 ImageNet templates of CLIP,
   :data:`CLIP_IMAGENET_TEMPLATES`; ``t`` holds ``{}`` where the name goes), the text embedding
   ``e_ct = g(tokenize(t.replace("{}", c)))`` is L2-normalised; the category's weight is the mean over the templates,
   normalised again: ``w_c = mean_t(e_ct / |e_ct|) / |mean_t(e_ct / |e_ct|)|``. Computed in fp32 once per model,
   weights and prompt set, and cached in the user cache (``<cache>/zero-shot/<key>.npz``).
2. **Image.** open_clip's own inference transform for the model and weights (resize, centre crop, ToTensor,
   Normalize with its mean/std), then ``v = f(x) / |f(x)|``.
3. **Decision.** ``logits_c = s * <v, w_c>`` with the model's learned temperature ``s = exp(logit_scale)``;
   probabilities ``softmax(logits)`` over the 16 categories; the decision is the arg-max over the 16 (no
   1000-class ImageNet mapping; the first category in sorted order on a tie). ``s`` changes the probabilities, never
   the decision.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
import torch

from .._io import ErftoolsError, atomic_path, cache_dir
from .categories import CATEGORIES

log = logging.getLogger(__name__)

#: The 80 ImageNet prompt templates of CLIP (Radford et al. 2021, the "Prompt_Engineering_for_ImageNet" notebook;
#: the same list, in the same order, as open_clip's OPENAI_IMAGENET_TEMPLATES and vlm_shapebias' eval_clip.py).
CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.', 'a photo of the hard to see {}.',
    'a low resolution photo of the {}.', 'a rendering of a {}.', 'graffiti of a {}.', 'a bad photo of the {}.',
    'a cropped photo of the {}.', 'a tattoo of a {}.', 'the embroidered {}.', 'a photo of a hard to see {}.',
    'a bright photo of a {}.', 'a photo of a clean {}.', 'a photo of a dirty {}.', 'a dark photo of the {}.',
    'a drawing of a {}.', 'a photo of my {}.', 'the plastic {}.', 'a photo of the cool {}.',
    'a close-up photo of a {}.', 'a black and white photo of the {}.', 'a painting of the {}.',
    'a painting of a {}.', 'a pixelated photo of the {}.', 'a sculpture of the {}.', 'a bright photo of the {}.',
    'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.', 'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.', 'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.',
    'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.', 'a close-up photo of the {}.',
    'a photo of a {}.', 'the origami {}.', 'the {} in a video game.', 'a sketch of a {}.', 'a doodle of the {}.',
    'a origami {}.', 'a low resolution photo of a {}.', 'the toy {}.', 'a rendition of the {}.',
    'a photo of the clean {}.', 'a photo of a large {}.', 'a rendition of a {}.', 'a photo of a nice {}.',
    'a photo of a weird {}.', 'a blurry photo of a {}.', 'a cartoon {}.', 'art of a {}.', 'a sketch of the {}.',
    'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.', 'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.', 'a plushie {}.', 'a photo of the nice {}.', 'a photo of the small {}.',
    'a photo of the weird {}.', 'the cartoon {}.', 'art of the {}.', 'a drawing of the {}.',
    'a photo of the large {}.', 'a black and white photo of a {}.', 'the plushie {}.', 'a dark photo of a {}.',
    'itap of a {}.', 'graffiti of the {}.', 'a toy {}.', 'itap of my {}.', 'a photo of a cool {}.',
    'a photo of a small {}.', 'a tattoo of the {}.',
)
PROMPT_SET_NAME = "clip-imagenet-80"
#: The text of each category: its name as the stimuli spell it (the 16 names vlm_shapebias' IN16_CLASSES uses).
CLASS_NAMES: dict[str, str] = {c: c for c in CATEGORIES}
CACHE_KIND = "zero-shot"
#: a note for the record's preprocessing
PREPROCESSING_NOTE = ("open_clip's inference transform of the model and weights: resize the shorter side to the "
                      "model's input size (a copy at 224 px, where the stimuli already are), centre crop, ToTensor, "
                      "(x - mean) / std with open_clip's mean/std; logits = exp(logit_scale) * cosine(image, w_c) "
                      "over the 16 categories (w_c: the text classifier); decision = arg-max")


def resolve_templates(prompts=None) -> tuple[str, ...]:
    """The prompt templates: ``None`` -> the 80 CLIP ImageNet templates; else each must hold ``{}`` exactly once."""
    if prompts is None:
        return CLIP_IMAGENET_TEMPLATES
    out = (prompts,) if isinstance(prompts, str) else tuple(str(p) for p in prompts)
    if not out:
        raise ErftoolsError("no prompt template given; pass one like --prompt 'a photo of a {}.' or leave it out "
                            "for the 80 CLIP ImageNet templates")
    for p in out:
        if p.count("{}") != 1:
            raise ErftoolsError(f"prompt template {p!r} must contain '{{}}' exactly once (where the category name "
                                "goes), e.g. 'a photo of a {}.'")
    return out


def prompts_record(templates) -> dict:
    """What the record says about the prompts: the set's name, count, sha256 and the templates themselves."""
    templates = tuple(templates)
    return {"set": PROMPT_SET_NAME if templates == CLIP_IMAGENET_TEMPLATES else "custom", "n": len(templates),
            "sha256": hashlib.sha256(json.dumps(list(templates)).encode("utf-8")).hexdigest(),
            "templates": list(templates)}


def is_zero_shot_model(model) -> bool:
    """An open_clip model (``openclip:`` names) that is not yet a classifier."""
    info = getattr(model, "erftools_info", None)
    return getattr(info, "family", None) == "openclip" and not getattr(model, "decides_categories", False)


def encode_text_classifier(model, templates, device=None):
    """The ``(16, D)`` fp32 text classifier of an :class:`~erftools.models.openclip.OpenClipModel` (rows in
    :data:`CATEGORIES` order): per category the mean of the L2-normalised template embeddings, normalised again."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for c in CATEGORIES:
            tokens = model.tokenize([t.replace("{}", CLASS_NAMES[c]) for t in templates]).to(dev)
            e = model.encode_text(tokens).float()
            e = e / e.norm(dim=-1, keepdim=True)  # encode_text normalises; again in fp32
            m = e.mean(dim=0)
            rows.append(m / m.norm())
    return torch.stack(rows)


def classifier_key(identity: str, templates, model) -> str:
    """The cache key: the network's tensors (``identity``), tokenizer, class names and templates."""
    info = model.erftools_info
    spec = {"identity": identity, "arch": info.arch, "tokenizer": info.extra.get("tokenizer"),
            "context_length": info.extra.get("context_length"), "class_names": [CLASS_NAMES[c] for c in CATEGORIES],
            "templates": list(templates)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()


def cached_text_classifier(model, templates, key: str, *, device=None, cache: bool = True) -> tuple[np.ndarray, dict]:
    """The text classifier from the cache (verified: key, shape, finite), else computed and stored.

    Returns ``(weights (16, D) float32, {"key", "cache", "reused", "sha256", "shape"})``."""
    path = cache_dir(CACHE_KIND) / f"{key}.npz"
    weights = _read_cached(path, key) if cache else None
    reused, t0 = weights is not None, time.perf_counter()
    if not reused:
        weights = encode_text_classifier(model, templates, device).cpu().numpy().astype(np.float32)
        if not np.isfinite(weights).all():
            raise ErftoolsError(f"the text classifier of {model.erftools_info.name} (weights "
                                f"{model.erftools_info.weights}) is not finite: the text tower produces NaN or "
                                "infinity. Check the checkpoint for NaN/inf values")
        if cache:
            _write_cached(path, key, weights)
    info = {"key": key, "cache": str(path) if cache else None, "reused": reused, "shape": list(weights.shape),
            "seconds": round(time.perf_counter() - t0, 3),
            "sha256": hashlib.sha256(np.ascontiguousarray(weights).tobytes()).hexdigest()}
    return weights, info


def _read_cached(path, key: str):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                raise ValueError("key")
            w = np.asarray(data["weights"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring the damaged text-classifier cache %s (%s); it is computed again", path, exc)
        return None
    if w.ndim != 2 or w.shape[0] != len(CATEGORIES) or not np.isfinite(w).all():
        log.warning("ignoring the text-classifier cache %s (shape %s or values wrong); it is computed again",
                    path, w.shape)
        return None
    return w


def _write_cached(path, key: str, weights: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), weights=weights)
    except OSError as exc:  # a read-only cache costs time, not results
        log.warning("could not cache the text classifier in %s (%s)", path, exc.strerror or exc)


def zero_shot_classifier(model, prompts=None, *, device=None, identity: str | None = None, cache: bool = True):
    """Wrap an open_clip model (from ``create_model("openclip:ARCH", ...)``) into a 16-category classifier.

    ``prompts``: templates (default the 80 CLIP ImageNet templates); ``identity``: a hash of the network's tensors
    (computed when not given) that keys the cached text classifier; ``device``: where the text is encoded."""
    if getattr(model, "decides_categories", False):
        return model
    if not is_zero_shot_model(model):
        raise ErftoolsError("zero-shot prompts apply to openclip: models only (create_model('openclip:ARCH', ...))")
    templates = resolve_templates(prompts)
    if identity is None:
        from ..models.prepare import parameters_sha256

        identity = parameters_sha256(model)
    if device is not None:
        model.to(device)
    key = classifier_key(identity, templates, model)
    weights, cinfo = cached_text_classifier(model, templates, key, device=device, cache=cache)
    return ZeroShotClassifier(model, weights, templates, cinfo)


class ZeroShotClassifier(torch.nn.Module):
    """An open_clip model with its text classifier: ``forward(x)`` -> ``(N, 16)`` logits
    ``exp(logit_scale) * <f(x)/|f(x)|, w_c>`` in :data:`CATEGORIES` order (``decides_categories``: no 1000-class
    mapping). ``image_transform`` and ``erftools_info`` are the open_clip model's; ``zero_shot`` is the record's
    description of the classifier."""

    decides_categories = True
    num_classes = len(CATEGORIES)

    def __init__(self, model, weights: np.ndarray, templates, classifier_info: dict):
        super().__init__()
        self.model = model
        dev = next(model.parameters()).device
        self.register_buffer("text_classifier", torch.as_tensor(weights, dtype=torch.float32, device=dev))
        self.erftools_info = model.erftools_info
        self.image_transform = model.image_transform
        self.templates = tuple(templates)
        self.scale = model.logit_scale
        self.zero_shot = {"protocol": "open_clip zero-shot: per category the mean of the L2-normalised text "
                                      "embeddings over the templates, normalised again; logits = exp(logit_scale) "
                                      "* cosine similarity; decision = arg-max over the 16 categories",
                          "class_names": dict(CLASS_NAMES), "prompts": prompts_record(templates),
                          "logit_scale": self.scale, "text_classifier": classifier_info,
                          "tokenizer": model.erftools_info.extra.get("tokenizer"),
                          "context_length": model.erftools_info.extra.get("context_length")}

    def forward(self, x):
        v = self.model(x)
        return self.scale * (v @ self.text_classifier.to(v.dtype).T)


def run_fingerprint(model) -> dict:
    """What a resume must match beyond the common fingerprint: prompts, class names, open_clip's preprocessing."""
    zs = model.zero_shot
    return {"prompts_sha256": zs["prompts"]["sha256"], "n_prompts": zs["prompts"]["n"],
            "class_names": [CLASS_NAMES[c] for c in CATEGORIES], "text_classifier_key": zs["text_classifier"]["key"],
            "preprocess_cfg": model.erftools_info.extra.get("preprocess_cfg")}


def record_fields(model) -> dict:
    """The record's ``zero_shot`` section and its preprocessing (open_clip's transform); ``{}`` for other models."""
    if not getattr(model, "decides_categories", False):
        return {}
    info = model.erftools_info
    pp = info.extra.get("preprocess_cfg") or {}
    size = info.preprocessing.input_size
    return {"zero_shot": dict(model.zero_shot),
            "preprocessing": dict(info.preprocessing.to_dict(), source="open_clip",
                                  resize=f"{pp.get('resize_mode', 'shortest')} side to {size} px "
                                         f"({info.preprocessing.interpolation})",
                                  crop=f"center {size}x{size}", transform=info.extra.get("transform"),
                                  preprocess_cfg=pp, note=PREPROCESSING_NOTE)}


def prepare_zero_shot(model, prompts, device, identity: str) -> tuple:
    """For a shape-bias run: ``(classifier, fingerprint part)`` for an open_clip model (its text classifier built or
    read from the cache), ``(model, None)`` for any other model; prompts for a model that is not open_clip are
    refused."""
    if getattr(model, "decides_categories", False):
        if prompts is not None and tuple(resolve_templates(prompts)) != tuple(model.templates):
            raise ErftoolsError("the zero-shot classifier passed as model= was built with other prompts; build it "
                                "with these prompts or leave prompts out")
        return model, run_fingerprint(model)
    if not is_zero_shot_model(model):
        if prompts is not None:
            name = getattr(getattr(model, "erftools_info", None), "name", type(model).__name__)
            raise ErftoolsError(f"--prompt applies to zero-shot openclip:ARCH models only, not to {name} (an "
                                "ImageNet classifier decides through its 1000 classes)")
        return model, None
    clf = zero_shot_classifier(model, prompts, device=device, identity=identity)
    return clf, run_fingerprint(clf)

"""The model registry: name -> architecture, preprocessing and known weight sources.

Each entry carries its preprocessing next to its weights (as torchvision's weights API does), so the mean/std and
resolution used for a model can never drift from the weights it was trained with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
MMCLS = "https://download.openmmlab.com/mmclassification/v0/replknet/"
GDRIVE = "https://drive.google.com/file/d/{}/view"


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model: ToTensor, then ``(x - mean) / std``."""
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bicubic"
    input_size: int = 224

    def normalize(self, x):
        """Normalise a float tensor in [0, 1] of shape (..., 3, H, W)."""
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "input_size": self.input_size}


@dataclass(frozen=True)
class WeightSource:
    """One known set of weights. ``url`` downloads over HTTPS (``sha256`` may be a prefix); ``hf_hub_id`` goes
    through timm / the Hugging Face hub; ``manual`` sources (Google Drive, Baidu) must be downloaded by the user."""
    tag: str
    description: str
    url: str | None = None
    sha256: str | None = None
    hf_hub_id: str | None = None
    manual: str | None = None
    input_size: int | None = None  # resolution the weights were fine-tuned at, when not the entry's default
    layout: str = "official"  # official | mmpretrain | timm

    @property
    def downloadable(self) -> bool:
        return bool(self.url or self.hf_hub_id)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # "replknet", "unireplknet" or "timm"
    arch: str  # RepLKNet config name, or timm model name
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: tuple = ()
    default_weights: str | None = None
    description: str = ""
    aliases: tuple = ()

    def weight_source(self, tag: str | None = None) -> WeightSource | None:
        tag = tag or self.default_weights
        for w in self.weights:
            if w.tag == tag:
                return w
        return None

    @property
    def kernel_sizes(self) -> list[int] | None:
        if self.family == "replknet":
            from .replknet import CONFIGS

            return list(CONFIGS[self.arch]["large_kernel_sizes"])
        if self.family == "unireplknet":  # the largest kernel of each stage
            from .unireplknet_weights import stage_kernel_sizes

            return stage_kernel_sizes(self.arch)
        return None


def _mm(tag, fname, desc, size=None):
    sha = fname.rsplit("-", 1)[1].split(".")[0]
    return WeightSource(tag, desc, url=MMCLS + fname, sha256=sha, input_size=size, layout="mmpretrain")


_ENTRIES = [
    ModelEntry("replknet-31B", "replknet", "replknet-31B",
               weights=(
                   _mm("in1k", "replknet-31B_3rdparty_in1k_20221118-fd08e268.pth", "ImageNet-1K, 224px (OpenMMLab)"),
                   _mm("in1k-384", "replknet-31B_3rdparty_in1k-384px_20221118-03a170ce.pth",
                       "ImageNet-1K, 384px (OpenMMLab)", 384),
                   _mm("in22k-ft-in1k", "replknet-31B_in21k-pre_3rdparty_in1k_20221118-54ed5c46.pth",
                       "ImageNet-22K pre-trained, 1K fine-tuned, 224px (OpenMMLab)"),
                   _mm("in22k-ft-in1k-384", "replknet-31B_in21k-pre_3rdparty_in1k-384px_20221118-76c92b24.pth",
                       "ImageNet-22K pre-trained, 1K fine-tuned, 384px (OpenMMLab)", 384),
                   WeightSource("official-in1k", "official RepLKNet-31B_ImageNet-1K_224.pth",
                                manual=GDRIVE.format("1azQUiCxK9feYVkkrPqwVPBtNsTzDrX7S")),
               ), default_weights="in1k", description="RepLKNet-31B (kernels 31,29,27,13; 79.9M params)"),
    ModelEntry("replknet-31L", "replknet", "replknet-31L", preprocessing=Preprocessing(input_size=384),
               weights=(_mm("in22k-ft-in1k-384", "replknet-31L_in21k-pre_3rdparty_in1k-384px_20221118-dc3fc07c.pth",
                            "ImageNet-22K pre-trained, 1K fine-tuned, 384px (OpenMMLab)", 384),),
               default_weights="in22k-ft-in1k-384", description="RepLKNet-31L (kernels 31,29,27,13; 172.7M params)"),
    ModelEntry("replknet-XL", "replknet", "replknet-XL", preprocessing=Preprocessing(HALF, HALF, input_size=320),
               weights=(_mm("meg73m-ft-in1k-320", "replknet-XL_meg73m-pre_3rdparty_in1k-320px_20221118-88259b1d.pth",
                            "MegData-73M pre-trained, 1K fine-tuned, 320px (OpenMMLab)", 320),),
               default_weights="meg73m-ft-in1k-320", description="RepLKNet-XL (kernels 27,27,27,13; 335.4M params)"),
    ModelEntry("replknet-3", "replknet", "replknet-3", description="RepLKNet with 3x3 kernels (paper ablation)"),
    ModelEntry("replknet-7", "replknet", "replknet-7", description="RepLKNet with 7x7 kernels (paper ablation)"),
    ModelEntry("replknet-13", "replknet", "replknet-13",
               weights=(WeightSource("erf-120ep", "official ERF model RepLKNet-13 (120 epochs)",
                                     manual=GDRIVE.format("15gohkZof_Qi4__jluUXacB_0Gvbuf5GI")),),
               description="RepLKNet-13 (kernels 13 in every stage; the paper's ERF model)"),
    ModelEntry("replknet-25", "replknet", "replknet-25", description="RepLKNet-25 (kernels 25,25,25,13)"),
    ModelEntry("replknet-31", "replknet", "replknet-31",
               weights=(WeightSource("erf-120ep", "official ERF model RepLKNet-31 (120 epochs)",
                                     manual=GDRIVE.format("1aQQiGfCoiBYSw2Ms506-ZFpnC9V6891s")),),
               description="RepLKNet-31 (kernels 31,29,27,13; the paper's ERF model)"),
    ModelEntry("resnet-101", "timm", "resnet101",
               weights=(WeightSource("tv_in1k", "torchvision ImageNet-1K weights (as in the paper)",
                                     hf_hub_id="timm/resnet101.tv_in1k", layout="timm"),),
               default_weights="tv_in1k", aliases=("resnet101",), description="ResNet-101 (timm)"),
    ModelEntry("resnet-152", "timm", "resnet152",
               weights=(WeightSource("tv_in1k", "torchvision ImageNet-1K weights (as in the paper)",
                                     hf_hub_id="timm/resnet152.tv_in1k", layout="timm"),),
               default_weights="tv_in1k", aliases=("resnet152",), description="ResNet-152 (timm)"),
    ModelEntry("swin-B", "timm", "swin_base_patch4_window7_224",
               weights=(WeightSource("ms_in1k", "Microsoft ImageNet-1K weights",
                                     hf_hub_id="timm/swin_base_patch4_window7_224.ms_in1k", layout="timm"),
                        WeightSource("ms_in22k_ft_in1k", "Microsoft ImageNet-22K pre-trained, 1K fine-tuned",
                                     hf_hub_id="timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k", layout="timm")),
               default_weights="ms_in1k", aliases=("swin_base_patch4_window7_224",),
               description="Swin-B, window 7 (timm)"),
]

def _add_family_entries() -> None:
    """Entries of families that keep their registry table in their own module (UniRepLKNet)."""
    from .unireplknet_weights import unireplknet_entries

    _ENTRIES.extend(unireplknet_entries())


_add_family_entries()
REGISTRY: dict[str, ModelEntry] = {}
for _e in _ENTRIES:
    for _n in (_e.name,) + _e.aliases:
        REGISTRY[_n.lower()] = _e


def list_models(include_timm: bool = False) -> list[str]:
    """The registry's model names (and, with ``include_timm``, every timm architecture name too)."""
    names = [e.name for e in _ENTRIES]
    if include_timm:
        import timm

        names += [n for n in timm.list_models() if n.lower() not in REGISTRY]
    return names


def registry_entries() -> list[ModelEntry]:
    return list(_ENTRIES)


def resolve(name: str) -> tuple[ModelEntry, str | None]:
    """Find the entry of a model name (case-insensitive; any timm name, optionally with a ``.tag``).

    Returns the entry and the weight tag named in the name (``resnet152.a1h_in1k`` -> tag ``a1h_in1k``), if any.
    """
    from .._io import ErftoolsError

    key = name.strip().lower()
    if key.startswith("openclip:"):  # zero-shot vision-language models (optional open_clip)
        from .openclip import openclip_entry

        return openclip_entry(name), None
    if key in REGISTRY:
        return REGISTRY[key], None
    import timm

    arch, _, tag = name.strip().partition(".")
    if timm.is_model(arch):
        return _timm_entry(arch, tag or None), tag or None
    import difflib

    names = {n.lower(): n for n in list_models()}
    close = [names[n] for n in difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)]
    close += [n for n in timm.list_models(f"*{arch.lower()}*")[:3] if n not in close]
    hint = f" Did you mean {', '.join(close[:5])}?" if close else ""
    raise ErftoolsError(f"unknown model {name!r}.{hint} Run `erftools models` for the registry; any timm model "
                        "name (see timm.list_models()) works too.")


def _timm_entry(arch: str, tag: str | None) -> ModelEntry:
    import timm

    try:
        cfg = timm.get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    except Exception:
        cfg = None
    pre = Preprocessing()
    weights = ()
    default = None
    if cfg is not None:
        size = cfg.input_size[-1] if getattr(cfg, "input_size", None) else 224
        pre = Preprocessing(tuple(cfg.mean), tuple(cfg.std), cfg.interpolation or "bicubic", int(size))
        default = cfg.tag or tag
        hub = getattr(cfg, "hf_hub_id", None)
        weights = (WeightSource(default or "default", f"timm pretrained weights {arch}.{default}",
                                hf_hub_id=hub, layout="timm"),) if default else ()
    return ModelEntry(arch, "timm", arch, pre, weights, default, description=f"timm {arch}")


def replace_preprocessing(entry: ModelEntry, source: WeightSource | None) -> Preprocessing:
    """The preprocessing of ``entry`` with the input size of ``source`` when the weights were trained at another."""
    pre = entry.preprocessing
    if source is not None and source.input_size:
        pre = dataclasses.replace(pre, input_size=source.input_size)
    return pre

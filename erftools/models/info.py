"""What a result records about the model that produced it (:class:`ModelInfo`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ._registry import Preprocessing

__all__ = ["ModelInfo", "count_parameters", "get_model_info"]


@dataclass
class ModelInfo:
    """What a result needs to record about the model that produced it."""
    name: str
    family: str
    arch: str
    preprocessing: Preprocessing
    weights: str  # "random", "pretrained:<tag>", a file path or a URL
    weights_sha256: str | None = None
    num_parameters: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_model_info(model: torch.nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of a model made by :func:`create_model`, or a best guess for any other module."""
    info = getattr(model, "erftools_info", None)
    if info is not None:
        return info
    cfg = getattr(model, "pretrained_cfg", None) or {}
    pre = Preprocessing(tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                        cfg.get("interpolation", "bicubic"), int((cfg.get("input_size") or (3, 224, 224))[-1]))
    name = cfg.get("architecture", type(model).__name__)
    return ModelInfo(name, "custom", name, pre, "unknown", None, count_parameters(model))

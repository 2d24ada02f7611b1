"""The untrained baseline: the same architecture with seeded random initialisation.

How much of an ERF is the architecture and how much is training? Compare the trained model with
``random_baseline(model, seed)``: built again by :func:`erftools.create_model` with ``weights="random"`` (each
family's own initialisation, as its constructor does it) after ``torch.manual_seed(seed)``, without touching the
caller's random state.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._io import ErftoolsError

__all__ = ["random_baseline"]


def random_baseline(model: str | nn.Module, seed: int = 0, **model_kwargs) -> nn.Module:
    """The architecture of ``model`` (a model made by :func:`erftools.create_model`, or its registry / timm name)
    with random weights drawn after ``torch.manual_seed(seed)``; the same seed gives the same weights.

    ``model_kwargs`` go to the constructor; from a model, ``num_classes`` and a patch-embedding ``img_size`` (Swin,
    ViT) are carried over unless given. The returned model has ``erftools_info.weights == "random"`` and
    ``erftools_seed == seed``. The global random state is left as it was.
    """
    from ..models import create_model

    if isinstance(model, str):
        name = model
    else:
        info = getattr(model, "erftools_info", None)
        if info is None:
            raise ErftoolsError(f"{type(model).__name__} was not made by erftools.create_model, so erftools cannot "
                                "build it again: pass its registry or timm name to random_baseline instead")
        name = info.name
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, int) and num_classes > 0:
            model_kwargs.setdefault("num_classes", num_classes)
        img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if img_size is not None:
            model_kwargs.setdefault("img_size", tuple(img_size) if isinstance(img_size, (list, tuple)) else img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        baseline = create_model(name, weights="random", **model_kwargs)
    baseline.erftools_seed = int(seed)
    return baseline

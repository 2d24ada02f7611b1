"""The 16 entry-level categories of the cue-conflict stimuli and their ImageNet-1k classes.

The mapping ships as ``data/shapebias/imagenet_16class.json`` (checked in the tests against the mapping of the
official model-vs-human code). A category's probability is the *mean* softmax probability of its ImageNet classes.
"""
from __future__ import annotations

import functools
import json

from .._paths import data_file

#: The 16 categories, sorted; every (N, 16) array in erftools uses this column order.
CATEGORIES: tuple[str, ...] = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair",
                               "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck")
NUM_IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _mapping() -> dict:
    with open(data_file("shapebias", "imagenet_16class.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    if tuple(data["categories"]) != CATEGORIES:  # pragma: no cover - corrupted install
        raise RuntimeError("data/shapebias/imagenet_16class.json lists other categories; reinstall erftools")
    return data


def imagenet_indices() -> dict[str, list[int]]:
    """``{category: [ImageNet-1k class indices]}`` (207 classes in all; the other 793 belong to no category)."""
    return {c: list(v) for c, v in _mapping()["indices"].items()}


def imagenet_to_category() -> list[str | None]:
    """For each of the 1000 ImageNet classes, its category or ``None``."""
    out: list[str | None] = [None] * NUM_IMAGENET_CLASSES
    for cat, idx in imagenet_indices().items():
        for i in idx:
            out[i] = cat
    return out

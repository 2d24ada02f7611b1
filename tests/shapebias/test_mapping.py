"""The 16-class decision mapping against the official model-vs-human mapping (golden fixtures)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from erftools._io import ErftoolsError
from erftools.shapebias import CATEGORIES, aggregate_16class, decide, imagenet_indices, imagenet_to_category
from erftools.shapebias.decisions import check_imagenet_head


def test_shipped_mapping_equals_fixture(fixtures_dir):
    ref = json.loads((fixtures_dir / "imagenet_16class.json").read_text())
    assert list(CATEGORIES) == ref["categories"] == sorted(CATEGORIES)
    assert imagenet_indices() == ref["indices"]
    assert sum(len(v) for v in imagenet_indices().values()) == ref["num_indices_total"] == 207
    assert imagenet_to_category() == ref["index_to_category"]


def test_aggregate_16class_reproduces_model_vs_human(fixtures_dir):
    z = np.load(fixtures_dir / "shape_bias_mapping.npz")
    assert list(z["categories"]) == list(CATEGORIES)
    agg = aggregate_16class(z["probabilities"])
    assert agg.shape == (len(z["probabilities"]), 16) and agg.dtype == np.float64
    np.testing.assert_allclose(agg, z["aggregated_probabilities"], rtol=1e-12, atol=1e-15)
    assert decide(agg) == list(z["top1_name"])
    ranking = np.argsort(-agg, axis=1, kind="stable")
    np.testing.assert_array_equal(ranking, z["ranking_indices"])
    m = np.array([CATEGORIES.index(c) if c else -1 for c in imagenet_to_category()])
    np.testing.assert_array_equal(m, z["imagenet_to_category"])


def test_aggregate_16class_torch_and_float32_softmax(fixtures_dir):
    z = np.load(fixtures_dir / "shape_bias_mapping.npz")
    logits = torch.from_numpy(z["logits"])
    agg64 = aggregate_16class(torch.softmax(logits.double(), dim=-1))
    assert isinstance(agg64, torch.Tensor) and agg64.shape == (len(logits), 16)
    np.testing.assert_allclose(agg64.numpy(), z["aggregated_probabilities"], rtol=1e-12, atol=1e-15)
    agg32 = aggregate_16class(torch.softmax(logits, dim=-1))  # the float32 softmax gives the same decisions
    assert decide(agg32.numpy()) == list(z["top1_name"])


def test_aggregate_rejects_wrong_width():
    with pytest.raises(ErftoolsError, match="1000"):
        aggregate_16class(np.ones((2, 21843)) / 21843)


def test_non_imagenet_head_is_a_clear_error():
    from erftools.models import create_model

    model = create_model("resnet18", weights="random", num_classes=10)
    with pytest.raises(ErftoolsError, match="ImageNet-1k head"):
        check_imagenet_head(model)

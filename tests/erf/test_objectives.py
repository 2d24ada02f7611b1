"""The ERF variants (objective x reduction) against a plain independent implementation (`_erf_helpers.reference_matrix`).

The reference: the UNPREPARED model (as built, eval mode, no re-parameterisation, no BN folding, NCHW), batch 1,
``torch.autograd.grad`` of the objective written out from its definition, the reduction done in NumPy, the mean in
float64. It uses no erftools compute code. It is itself checked against the official script's golden data for the
paper's variant (``erf_tiny.npz``), so the same code with the other objectives and reductions is a reference too.
"""
import copy

import numpy as np
import pytest
import torch

from erftools import ErftoolsError
from erftools.erf import compute_erf, compute_erfs
from erftools.erf.objectives import OBJECTIVES, REDUCTIONS, label_with_variant, variant_text

from ._erf_helpers import fixture_data, fixture_model, reference_matrix, tiny_resnet

VARIANTS = [(o, r) for o in OBJECTIVES for r in REDUCTIONS]


def _close(a, ref, rel=1e-5):
    np.testing.assert_allclose(a, ref, rtol=rel, atol=rel * float(np.abs(ref).max()))


def test_reference_reproduces_the_official_golden_data(fixtures_dir):
    """The independent implementation, paper variant, equals the official script's per-image maps and matrix."""
    d = fixture_data(fixtures_dir)
    model = fixture_model(fixtures_dir)
    x = torch.from_numpy(d["inputs"])
    _close(reference_matrix(model.forward_features, x, "paper", "relu"), d["matrix"])
    _close(reference_matrix(model.forward_features, x[:1], "paper", "relu"), d["per_image_maps"][0])


@pytest.mark.parametrize("objective,reduction", VARIANTS)
@pytest.mark.parametrize("inputs", ["fixture", "unseen"])
def test_replknet_tiny_every_variant(fixtures_dir, objective, reduction, inputs):
    """erftools' fast path (re-parameterised, BN folded, channels-last, batched) against the reference on the
    unprepared tiny RepLKNet: on the fixture inputs, and on new inputs of another size and seed."""
    model = fixture_model(fixtures_dir)
    if inputs == "fixture":
        x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"])
    else:
        x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(11))
    ref = reference_matrix(model.forward_features, x, objective, reduction)
    got = compute_erf(copy.deepcopy(model), x, device="cpu", batch_size=2, objective=objective, reduction=reduction)
    assert got.objective == objective and got.reduction == reduction
    assert got.prepared["fuse_bn"]
    _close(got.matrix, ref)
    plain = compute_erf(copy.deepcopy(model), x, device="cpu", prepare=False, objective=objective,
                        reduction=reduction)
    _close(plain.matrix, ref)


@pytest.mark.parametrize("objective,reduction", VARIANTS)
def test_timm_resnet18_every_variant(objective, reduction):
    """A random timm ResNet-18 (BN folded on the fast path) at 64 px on unseen random inputs."""
    model = tiny_resnet(seed=3)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ref = reference_matrix(model.forward_features, x, objective, reduction)
    got = compute_erf(copy.deepcopy(model), x, device="cpu", batch_size=2, objective=objective, reduction=reduction)
    _close(got.matrix, ref)


@pytest.mark.parametrize("objective,reduction", [("unit", "relu"), ("paper", "abs"), ("unit", "l2")])
def test_layer_targets_every_variant(fixtures_dir, objective, reduction):
    """A layer's output as the target (one fixtures_dir forward pass for two layers) against the reference with a
    forward hook on the unprepared model."""
    model = fixture_model(fixtures_dir)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    refs = {}
    for name in ("stages.0", "stages.1"):
        module = dict(model.named_modules())[name]

        def features(inp, module=module):
            out = {}
            handle = module.register_forward_hook(lambda _m, _i, o: out.setdefault("y", o))
            try:
                model.forward_features(inp)
            finally:
                handle.remove()
            return out["y"]

        refs[name] = reference_matrix(features, x, objective, reduction)
    got = compute_erfs(copy.deepcopy(model), x, ["stages.0", "stages.1"], device="cpu", objective=objective,
                       reduction=reduction)
    for name, ref in refs.items():
        _close(got[name].matrix, ref)
        assert got[name].objective == objective and got[name].reduction == reduction


def test_variants_differ_from_the_paper(fixtures_dir):
    """The options change the map (so a test of a variant cannot pass by computing the default)."""
    model = fixture_model(fixtures_dir)
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"])
    paper = reference_matrix(model.forward_features, x, "paper", "relu")
    for objective, reduction in VARIANTS[1:]:
        other = reference_matrix(model.forward_features, x, objective, reduction)
        assert np.abs(other - paper).max() > 1e-3 * np.abs(paper).max(), (objective, reduction)


def test_unknown_choices_are_refused_before_the_model_is_touched():
    model = tiny_resnet()
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ErftoolsError, match="unknown ERF objective 'luo'.*'paper'"):
        compute_erf(model, x, objective="luo")
    with pytest.raises(ErftoolsError, match="unknown gradient reduction 'sum'.*'relu', 'abs', 'l2'"):
        compute_erf(model, x, reduction="sum")
    assert any(p.requires_grad for p in model.parameters())  # not prepared


def test_labels_name_a_variant():
    assert variant_text("paper", "relu") == "" and variant_text(None, None) == ""
    assert variant_text("unit", "l2") == "unit objective, l2 reduction"
    assert label_with_variant("ResNet", "unit", "relu") == "ResNet (unit objective)"
    assert label_with_variant("ResNet (unit objective)", "unit", "relu") == "ResNet (unit objective)"
    assert label_with_variant("ResNet", "paper", "relu") == "ResNet"

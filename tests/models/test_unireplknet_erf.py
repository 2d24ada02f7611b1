"""UniRepLKNet in both measurements: the ERF preparation (re-parameterisation, channels-last, backend) keeps the
official outputs, the target is the last stage, ``stages`` expands, and the theoretical receptive field traces the
dilated branches (the same field before and after merging them)."""
import pytest
import torch

from erftools.erf.adapters import feature_map
from erftools.erf.layers import stage_layers
from erftools.erf.theoretical import theoretical_rf
from erftools.models.prepare import prepare_for_inference
from erftools.models.unireplknet import UniRepLKNet
from erftools.ops import DepthwiseConv2d

from ..conftest import golden_file


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(golden_file(fixtures_dir, "unireplknet_tiny.pt"), map_location="cpu", weights_only=True)


def test_preparation_reparameterises_and_keeps_the_official_last_stage(tiny):
    model = UniRepLKNet(**tiny["config"])
    model.load_state_dict(tiny["state_dict"])
    done = prepare_for_inference(model, "cpu", channels_last=True)
    assert done["structural_reparam"] and done["fuse_bn"] and done["conv_backend"] == "native"
    assert all(m.backend == "native" for m in model.modules() if isinstance(m, DepthwiseConv2d))
    assert not any(p.requires_grad for p in model.parameters())
    adapter = feature_map(model)
    assert adapter.name == "unireplknet.forward_features"
    with torch.no_grad():
        out = adapter(tiny["input"].contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, tiny["reparam_stages"][3], atol=1e-5, rtol=0)
    assert stage_layers(model) == ["stages.0", "stages.1", "stages.2", "stages.3"]


def _rf_by_hand(kernels_per_stage):
    """Stem: two 3x3 stride-2 convs; each stage's blocks at jump 4 * 2**i; a 3x3 stride-2 conv before stages 1-3."""
    r, j = 1 + 2 * 1, 2
    r, j = r + 2 * j, j * 2
    for i, ks in enumerate(kernels_per_stage):
        if i:
            r, j = r + 2 * j, j * 2
        for k in ks:
            r += (k - 1) * j if k else 0  # kernel 0: an identity
    return r


@pytest.mark.parametrize("kernels", [((3,), (13,), (13, 5), (7,)), ((0, 17), (15,), (11, 9), (5,))])
def test_theoretical_rf_traces_the_dilated_branches(kernels):
    model = UniRepLKNet(depths=tuple(len(k) for k in kernels), dims=(8, 16, 24, 32), kernel_sizes=kernels,
                        num_classes=3).eval()
    rf = theoretical_rf(model)
    side = _rf_by_hand(kernels)
    assert rf.side == (side, side) and rf.stride == (32, 32)
    assert "channel gates" in rf.reason  # SE and GRN: global per-channel scales, said, not counted
    model.structural_reparam()
    assert theoretical_rf(model).side == (side, side)


@pytest.mark.parametrize("with_beta", [True, False])
def test_input_grad_only_grn_equals_autograd_of_the_module(with_beta):
    """The ERF's closed-form GRN input gradient against autograd through the module's own forward, in float64, with
    non-zero gammas, unequal channel norms and one all-zero channel (the norm's subgradient there is 0)."""
    from erftools.erf._frozen import freeze_convolutions
    from erftools.models.unireplknet import GRNwithNHWC

    g = torch.Generator().manual_seed(3)
    grn = GRNwithNHWC(6, use_bias=with_beta).double()
    with torch.no_grad():
        grn.gamma.copy_(torch.randn(grn.gamma.shape, generator=g, dtype=torch.float64))
        if with_beta:
            grn.beta.copy_(torch.randn(grn.beta.shape, generator=g, dtype=torch.float64))
    grn.requires_grad_(False)
    x = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 6, dtype=torch.float64)
    x[1, :, :, 2] = 0
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    ref_out = grn(x)
    (ref,) = torch.autograd.grad((ref_out * upstream).sum(), x)
    assert freeze_convolutions(grn) == 1
    out = grn(x)
    assert "InputGradGRN" in type(out.grad_fn).__name__
    (got,) = torch.autograd.grad((out * upstream).sum(), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(got).all()
    grn.gamma.requires_grad_(True)  # training: the module's own ops, so that gamma gets its gradient
    assert "InputGradGRN" not in type(grn(x).grad_fn).__name__


def test_prepared_erf_equals_the_plain_one_on_the_official_tiny_model(tiny):
    """compute_erf's fast path (deploy structure, channels-last, input-gradient-only convolutions, linears and GRNs)
    against autograd on the official training structure (the fixture's non-zero GRN gammas and betas), batch 1."""
    import numpy as np

    from erftools.erf import compute_erf

    from ..erf._erf_helpers import reference_matrix

    model = UniRepLKNet(**tiny["config"])
    model.load_state_dict(tiny["state_dict"])
    model.eval()
    x = torch.cat([tiny["input"], torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))])
    ref = reference_matrix(model.forward_features, x, "paper", "relu")
    got = compute_erf(model, x, device="cpu", batch_size=3)
    assert got.prepared["structural_reparam"] and got.prepared["input_grad_only_layers"] > 0
    np.testing.assert_allclose(got.matrix, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))

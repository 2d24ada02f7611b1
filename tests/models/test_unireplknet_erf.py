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
